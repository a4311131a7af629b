// mnn: CLAIRE's neighbour-based positive pairs as an augmentation
// (docs/method-spec.md §0.6 and §9).
//
// prepare(): PCA of the training cells, then per batch the `knn` nearest cells of the same batch
// (Euclidean), and for every pair of batches the mutual nearest neighbours with `k_anchor` on
// cosine distance (CLAIRE uses Seurat's CCA anchors; mutual kNN on PCA is the simpler route the
// method notes suggest). apply():
//   view 0:  a * x + (1 - a) * x_nn              x_nn: random same-batch neighbour of the cell
//   view 1:  a * x_anc + (1 - a) * x_anc_nn      x_anc: random MNN partner (the cell itself when
//                                                it has none), x_anc_nn: its same-batch neighbour
// with a = alpha ("fixed", scSSL-Bench) or a ~ U(alpha, 1) per cell ("uniform", CLAIRE).
// shared_coin: one coin per cell decides both views, as scSSL-Bench does (docs/augmentations.md,
// "mnn (CLAIRE)"). The host's per-view coin is then off (probability = 1): view 0 draws the coins
// with pair_probability and keeps them, and view 1 of the same cells reuses them.

#include "scssl/graphs.hpp"
#include "scssl/plugin.hpp"

namespace {

class Mnn final : public scssl::IAugmentation {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("knn", SCSSL_PARAM_INT, "3", "same-batch neighbours per cell (itself excluded)")
            .at_least(1),
        ParamSpec("k_anchor", SCSSL_PARAM_INT, "5",
                  "neighbours searched in the other batch for mutual nearest neighbours")
            .at_least(1),
        ParamSpec("alpha", SCSSL_PARAM_FLOAT, "0.5", "interpolation weight of the cell")
            .at_least(0)
            .at_most(1),
        ParamSpec("lambda_mode", SCSSL_PARAM_STRING, "fixed",
                  "\"fixed\": weight = alpha (scSSL-Bench); \"uniform\": weight ~ U(alpha, 1) "
                  "per cell (CLAIRE)")
            .one_of({"fixed", "uniform"}),
        ParamSpec("n_pcs", SCSSL_PARAM_INT, "50",
                  "principal components the neighbours are found in")
            .at_least(1),
        ParamSpec("index_bug", SCSSL_PARAM_BOOL, "false",
                  "reproduce scSSL-Bench's bug: the position drawn in a cell's neighbour list is "
                  "used as a row, so view 0 mixes every cell with one of the first knn rows"),
        ParamSpec("shared_coin", SCSSL_PARAM_BOOL, "false",
                  "one coin per cell decides both views (scSSL-Bench): mixed in both or in "
                  "neither; needs probability = 1 in the section, the chance is pair_probability"),
        ParamSpec("pair_probability", SCSSL_PARAM_FLOAT, "0.5",
                  "with shared_coin: chance that a cell's two views are mixed")
            .at_least(0)
            .at_most(1)};
  }

  Mnn(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host),
        knn_(params.get_int("knn")),
        k_anchor_(params.get_int("k_anchor")),
        alpha_(params.get_float("alpha")),
        n_pcs_(params.get_int("n_pcs")),
        uniform_(params.get_string("lambda_mode") == "uniform"),
        index_bug_(params.get_bool("index_bug")),
        shared_coin_(params.get_bool("shared_coin")),
        pair_probability_(params.get_float("pair_probability")) {}

  void prepare(const scssl::CellData& train, int modality) override {
    scssl::BatchIndex batches = scssl::batch_index(train, "mnn");
    x_ = &train.modalities.at(modality).X;
    torch::Tensor pcs = scssl::pca_scores(*x_, n_pcs_);
    within_ = scssl::batch_knn(pcs, batches, knn_, /*own_batch_only=*/true);
    partners_ = scssl::mutual_nearest_neighbors(pcs, batches, k_anchor_);
    const int64_t with_partner =
        (partners_.offsets.slice(0, 1) - partners_.offsets.slice(0, 0, -1) > 0)
            .sum()
            .item<int64_t>();
    host_.info("mnn: " + std::to_string(partners_.n_edges() / 2) + " MNN pairs across " +
               std::to_string(batches.n_nonempty()) + " batches; " + std::to_string(with_partner) +
               " of " + std::to_string(train.n_cells()) + " cells have a partner");
    if (batches.n_nonempty() < 2)
      host_.warn(
          "mnn: the training data has a single batch, so no cell has an MNN partner and "
          "view 1 interpolates the cell with its own neighbour");
  }

  void apply(torch::Tensor& batch, const torch::Tensor& cell_ids, int view,
             torch::Generator& rng) override {
    if (!x_) throw scssl::InvalidArgument("mnn: apply() was called before prepare()");
    if (batch.dim() != 2 || batch.size(1) != x_->cols)
      throw scssl::BadData("mnn: the batch must be a [cells, " + std::to_string(x_->cols) +
                           "] matrix, like the training data");
    const int64_t cells = batch.size(0);
    if (cells == 0) return;
    torch::Tensor ids = cell_ids.to(torch::kInt64).flatten();
    if (ids.size(0) != cells) throw scssl::BadData("mnn: one cell id per batch row is needed");
    if (!shared_coin_) {
      mix(batch, ids, view, rng);
      return;
    }
    torch::Tensor heads = pair_coins(ids, view, rng).nonzero().flatten();
    if (heads.numel() == 0) return;
    torch::Tensor rows = batch.index_select(0, heads);
    mix(rows, ids.index_select(0, heads), view, rng);
    batch.index_copy_(0, heads, rows);
  }

 private:
  void mix(torch::Tensor& batch, const torch::Tensor& ids, int view, torch::Generator& rng) const {
    const int64_t cells = batch.size(0);
    torch::Tensor a = uniform_ ? alpha_ + (1.0 - alpha_) * torch::rand({cells, 1}, rng)
                               : torch::full({cells, 1}, alpha_, torch::kFloat32);
    if (view == 0) {
      torch::Tensor nn = within_.sample(ids, rng, "mnn", index_bug_);
      batch.copy_(a * batch + (1 - a) * x_->rows_dense(nn));
      return;
    }
    torch::Tensor anchor = partners_.sample(ids, rng, "mnn");
    torch::Tensor anchor_nn = within_.sample(anchor, rng, "mnn");
    // Partners are always in another batch, so anchor == id means "no partner": the cell stands
    // for itself and keeps what earlier augmentations of the chain did to it.
    torch::Tensor alone = (anchor == ids).unsqueeze(1);
    torch::Tensor x_anchor = torch::where(alone, batch, x_->rows_dense(anchor));
    batch.copy_(a * x_anchor + (1 - a) * x_->rows_dense(anchor_nn));
  }

  // Whether each cell's pair of views is mixed (shared_coin). The training core makes view 0 of a
  // mini-batch just before its view 1 (docs/augmentations.md, "How the host applies them"), so
  // view 0 draws the coins and view 1 of the same cells reuses them. Other cells in view 1 mean
  // that the host drew per view: the section's probability is not 1.
  torch::Tensor pair_coins(const torch::Tensor& ids, int view, torch::Generator& rng) {
    if (view == 0) {
      coin_cells_ = ids.clone();
      coins_ = torch::rand({ids.size(0)}, rng) < pair_probability_;
    } else if (!coin_cells_.defined() || !torch::equal(coin_cells_, ids)) {
      throw scssl::InvalidArgument(
          "mnn: with shared_coin = true, view " + std::to_string(view) +
          " must get the same cells as view 0 before it; set probability = 1 in the "
          "[[augmentation]] section and the chance of a mixed pair with pair_probability");
    }
    return coins_;
  }

  int64_t knn_;
  int64_t k_anchor_;
  double alpha_;
  int64_t n_pcs_;
  bool uniform_;
  bool index_bug_;
  bool shared_coin_;
  double pair_probability_;
  const scssl::Matrix* x_ = nullptr;
  scssl::NeighborGraph within_;
  scssl::NeighborGraph partners_;
  torch::Tensor coin_cells_;  // shared_coin: the cells of the last view 0 and their coins
  torch::Tensor coins_;
};

}  // namespace

SCSSL_PLUGIN(Mnn, "mnn", "1.0.0",
             "CLAIRE MNN mixing: view 0 with a same-batch neighbour, view 1 from an MNN partner")
