// crossover: every cell takes the values of int(fraction * G) random genes from one other,
// randomly chosen cell of the training data (docs/method-spec.md §0.6). Only the augmented view
// changes; CLEAR's code also wrote the cell's values back into the donor, which a view cannot do.

#include "scssl/graphs.hpp"
#include "scssl/plugin.hpp"

namespace {

class CrossOver final : public scssl::IAugmentation {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("fraction", SCSSL_PARAM_FLOAT, "0.25",
                             "share of genes copied from the other cell; int(fraction * genes)")
                .at_least(0)
                .at_most(1)};
  }

  CrossOver(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host), fraction_(params.get_float("fraction")) {}

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
    // Uniform over the n - 1 other cells: draw from 0..n-2 and step over the cell itself.
    torch::Tensor donor = torch::randint(0, x_->rows - 1, {cells}, rng, torch::kInt64);
    donor += (donor >= ids).to(torch::kInt64);
    const int64_t count = static_cast<int64_t>(fraction_ * static_cast<double>(genes));
    torch::Tensor picked = scssl::random_subsets(cells, genes, count, rng);
    batch.scatter_(1, picked, x_->rows_dense(donor).gather(1, picked));
  }

 private:
  double fraction_;
  const scssl::Matrix* x_ = nullptr;
};

}  // namespace

SCSSL_PLUGIN(CrossOver, "crossover", "1.0.0",
             "Copy int(fraction*G) random genes from another random training cell")
