// bbknn: mixes every cell with a random batch-balanced neighbour (docs/method-spec.md §0.6).
// prepare() finds, in the PCA of the training cells, the `neighbors_within_batch` nearest cells of
// EACH batch (Euclidean, the cell itself excluded). apply() draws one of them per cell and either
// interpolates, a * x + (1 - a) * x_n, or switches gene-wise, keeping x with probability alpha and
// taking x_n otherwise. The bench drew neighbours from bbknn's trimmed, symmetrised connectivity
// graph; these are the plain per-batch lists that graph starts from.

#include "scssl/graphs.hpp"
#include "scssl/plugin.hpp"

namespace {

class Bbknn final : public scssl::IAugmentation {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {ParamSpec("neighbors_within_batch", SCSSL_PARAM_INT, "3",
                      "nearest cells taken from each batch")
                .at_least(1),
            ParamSpec("mode", SCSSL_PARAM_STRING, "switch",
                      "\"switch\": gene-wise Bernoulli(alpha) choice of the cell's value over the "
                      "neighbour's (scSSL-Bench pipelines); \"interpolate\": alpha*x + "
                      "(1-alpha)*x_n; \"either\": one of the two per cell, at random")
                .one_of({"switch", "interpolate", "either"}),
            ParamSpec("alpha", SCSSL_PARAM_FLOAT, "0.5", "weight of the cell itself")
                .at_least(0)
                .at_most(1),
            ParamSpec("n_pcs", SCSSL_PARAM_INT, "50",
                      "principal components the neighbours are found in")
                .at_least(1),
            ParamSpec("index_bug", SCSSL_PARAM_BOOL, "false",
                      "reproduce scSSL-Bench's bug: the position drawn in a cell's neighbour "
                      "list is used as a row, so every cell mixes with one of the first rows")};
  }

  Bbknn(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host),
        k_(params.get_int("neighbors_within_batch")),
        alpha_(params.get_float("alpha")),
        n_pcs_(params.get_int("n_pcs")),
        index_bug_(params.get_bool("index_bug")) {
    // The host has checked the bounds and choices against parameters().
    const std::string& mode = params.get_string("mode");
    mode_ = mode == "interpolate" ? Mode::Interpolate
            : mode == "either"    ? Mode::Either
                                  : Mode::Switch;
  }

  void prepare(const scssl::CellData& train, int modality) override {
    scssl::BatchIndex batches = scssl::batch_index(train, "bbknn");
    x_ = &train.modalities.at(modality).X;
    neighbors_ = scssl::batch_knn(scssl::pca_scores(*x_, n_pcs_), batches, k_,
                                  /*own_batch_only=*/false);
    host_.info("bbknn: " + std::to_string(neighbors_.n_edges()) + " neighbours over " +
               std::to_string(batches.n_nonempty()) + " batches");
  }

  void apply(torch::Tensor& batch, const torch::Tensor& cell_ids, int,
             torch::Generator& rng) override {
    if (!x_) throw scssl::InvalidArgument("bbknn: apply() was called before prepare()");
    if (batch.dim() != 2 || batch.size(1) != x_->cols)
      throw scssl::BadData("bbknn: the batch must be a [cells, " + std::to_string(x_->cols) +
                           "] matrix, like the training data");
    const int64_t cells = batch.size(0), genes = batch.size(1);
    if (cells == 0) return;
    torch::Tensor ids = cell_ids.to(torch::kInt64).flatten();
    if (ids.size(0) != cells) throw scssl::BadData("bbknn: one cell id per batch row is needed");
    torch::Tensor x_n = x_->rows_dense(neighbors_.sample(ids, rng, "bbknn", index_bug_));
    if (mode_ == Mode::Interpolate) {
      batch.copy_(alpha_ * batch + (1.0 - alpha_) * x_n);
      return;
    }
    // u < alpha has probability alpha exactly, including alpha = 0 and 1.
    torch::Tensor keep = torch::rand({cells, genes}, rng) < alpha_;
    torch::Tensor switched = torch::where(keep, batch, x_n);
    if (mode_ == Mode::Switch) {
      batch.copy_(switched);
      return;
    }
    torch::Tensor use_switch = (torch::rand({cells, 1}, rng) < 0.5);
    batch.copy_(torch::where(use_switch, switched, alpha_ * batch + (1.0 - alpha_) * x_n));
  }

 private:
  enum class Mode { Interpolate, Switch, Either };
  int64_t k_;
  double alpha_;
  int64_t n_pcs_;
  bool index_bug_;
  Mode mode_ = Mode::Switch;
  const scssl::Matrix* x_ = nullptr;
  scssl::NeighborGraph neighbors_;
};

}  // namespace

SCSSL_PLUGIN(Bbknn, "bbknn", "1.0.0",
             "Mix each cell with a random batch-balanced kNN neighbour (switch or interpolate)")
