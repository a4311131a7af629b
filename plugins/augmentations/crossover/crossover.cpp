// crossover: every cell takes the values of int(fraction * G) random genes from one other,
// randomly chosen cell of the training data (docs/method-spec.md §0.6), or with donors = "many"
// each of those genes from a cell of its own (CLEAR's "crossover with many",
// docs/augmentations.md, "crossover"). Only the augmented view changes; CLEAR's code also wrote
// the cell's values back into the donor, which a view cannot do.

#include <vector>

#include "scssl/graphs.hpp"
#include "scssl/plugin.hpp"

namespace {

// x[rows[k], cols[k]] for every k (int64 [n] each), float32 [n]. A CSR row is spread into a
// scratch row once for all the entries asked of it, so the cost is that of the distinct rows.
torch::Tensor elements(const scssl::Matrix& x, const torch::Tensor& rows,
                       const torch::Tensor& cols) {
  if (!x.is_csr()) return x.dense.index({rows, cols});
  const auto [sorted, order] = torch::sort(rows);
  const torch::Tensor c = cols.contiguous();
  const int64_t n = rows.size(0);
  torch::Tensor out = torch::empty({n}, torch::kFloat32);
  float* o = out.data_ptr<float>();
  const int64_t* row_of = sorted.data_ptr<int64_t>();
  const int64_t* entry = order.data_ptr<int64_t>();
  const int64_t* col = c.data_ptr<int64_t>();
  const int64_t* p = x.indptr.data_ptr<int64_t>();
  const int32_t* idx = x.indices.data_ptr<int32_t>();
  const float* v = x.values.data_ptr<float>();
  std::vector<float> scratch(static_cast<size_t>(x.cols), 0.0f);
  for (int64_t k = 0; k < n;) {
    const int64_t r = row_of[k];
    for (int64_t j = p[r]; j < p[r + 1]; ++j) scratch[idx[j]] += v[j];  // as rows_dense
    for (; k < n && row_of[k] == r; ++k) o[entry[k]] = scratch[col[entry[k]]];
    for (int64_t j = p[r]; j < p[r + 1]; ++j) scratch[idx[j]] = 0.0f;
  }
  return out;
}

class CrossOver final : public scssl::IAugmentation {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("fraction", SCSSL_PARAM_FLOAT, "0.25",
                             "share of genes copied from the other cell; int(fraction * genes)")
                .at_least(0)
                .at_most(1),
            scssl::ParamSpec("donors", SCSSL_PARAM_STRING, "one",
                             "one: all copied genes from one other cell; many: each from its own "
                             "random other cell (CLEAR's crossover with many)")
                .one_of({"one", "many"})};
  }

  CrossOver(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host),
        fraction_(params.get_float("fraction")),
        many_(params.get_string("donors") == "many") {}

  void prepare(const scssl::CellData& train, int modality) override {
    x_ = &train.modalities.at(modality).X;
    if (x_->rows < 2)
      throw scssl::BadData("crossover needs at least 2 training cells, got " +
                           std::to_string(x_->rows));
  }

  void apply(torch::Tensor& batch, const torch::Tensor& cell_ids, int,
             torch::Generator& rng) override {
    if (!x_) throw scssl::InvalidArgument("crossover: apply() was called before prepare()");
    if (batch.dim() != 2 || batch.size(1) != x_->cols)
      throw scssl::BadData("crossover: the batch must be a [cells, " + std::to_string(x_->cols) +
                           "] matrix, like the training data");
    const int64_t cells = batch.size(0), genes = batch.size(1);
    if (cells == 0) return;
    torch::Tensor ids = cell_ids.to(torch::kInt64).flatten();
    if (ids.size(0) != cells)
      throw scssl::BadData("crossover: one cell id per batch row is needed");
    if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= x_->rows)
      throw scssl::BadData("crossover: a cell id is not a row of the training data");
    const int64_t count = static_cast<int64_t>(fraction_ * static_cast<double>(genes));
    // Uniform over the n - 1 other cells: draw from 0..n-2 and step over the cell itself. One
    // donor per cell, or one per copied gene.
    torch::Tensor donor =
        torch::randint(0, x_->rows - 1, {cells, many_ ? count : 1}, rng, torch::kInt64);
    donor += (donor >= ids.unsqueeze(1)).to(torch::kInt64);
    torch::Tensor picked = scssl::random_subsets(cells, genes, count, rng);
    batch.scatter_(1, picked,
                   many_ ? elements(*x_, donor.flatten(), picked.flatten()).view({cells, count})
                         : x_->rows_dense(donor.flatten()).gather(1, picked));
  }

 private:
  double fraction_;
  bool many_;
  const scssl::Matrix* x_ = nullptr;
};

}  // namespace

SCSSL_PLUGIN(CrossOver, "crossover", "1.1.0",
             "Copy int(fraction*G) random genes from another random training cell")
