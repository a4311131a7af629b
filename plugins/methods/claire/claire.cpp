// CLAIRE (Yan et al., Bioinformatics 2023): MoCo with a symmetric loss whose positive pairs join
// cells of different batches (docs/method-spec.md §9). Before training: PCA of the training
// cells, the kNN graph within every batch and the mutual nearest neighbours (MNN) between
// batches, as the `mnn` augmentation builds them. Every step, for each anchor cell (a cell with
// at least one partner):
//   view 0 = lambda * x + (1 - lambda) * x_nn               (a same-batch neighbour)
//   view 1 = lambda' * x_partner + (1 - lambda') * x_p_nn   (an MNN partner and its neighbour)
// with lambda ~ U(alpha, 1) (CLAIRE) or lambda = alpha (scSSL-Bench). At the start of epoch
// `refine_epoch` the pairs are scored by the cosine similarity of their current embeddings and the
// pairs outside the majority component of a two-component Gaussian mixture are dropped.
// The views are built here, not by the host's augmentation pipeline (docs/methods/claire.md).

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "claire_pairs.hpp"
#include "scssl/nn.hpp"
#include "scssl/training.hpp"

namespace {

namespace F = torch::nn::functional;

// CLAIRE's encoder (block_level 1): G -> G/4 -> G/8 -> latent, ReLU after every layer and
// dropout after the first two; the output is L2-normalised by the caller.
torch::nn::Sequential claire_encoder(int64_t genes, int64_t latent, double dropout) {
  const int64_t wide = std::max<int64_t>(1, genes / 4), narrow = std::max<int64_t>(1, genes / 8);
  return torch::nn::Sequential(torch::nn::Linear(genes, wide), torch::nn::ReLU(),
                               torch::nn::Dropout(dropout), torch::nn::Linear(wide, narrow),
                               torch::nn::ReLU(), torch::nn::Dropout(dropout),
                               torch::nn::Linear(narrow, latent), torch::nn::ReLU());
}

torch::Tensor l2_normalized(const torch::Tensor& x) {
  return F::normalize(x, F::NormalizeFuncOptions().dim(1));
}

class Claire final : public scssl::IMethod {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_BATCH; }
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("latent_dim", SCSSL_PARAM_INT, "128", "embedding size (CLAIRE's lat_dim)")
            .at_least(1),
        ParamSpec("encoder_dropout", SCSSL_PARAM_FLOAT, "0.3",
                  "dropout after the encoder's first two layers")
            .at_least(0)
            .below(1),
        ParamSpec("temperature", SCSSL_PARAM_FLOAT, "0.07", "InfoNCE temperature (CLAIRE's moco_t)")
            .above(0),
        ParamSpec("bank_size", SCSSL_PARAM_INT, "2048", "negative keys kept in the queue (moco_k)")
            .at_least(1),
        ParamSpec("momentum", SCSSL_PARAM_FLOAT, "0.999",
                  "key encoder EMA per step, constant (moco_m)")
            .at_least(0)
            .at_most(1),
        ParamSpec("knn", SCSSL_PARAM_INT, "10",
                  "same-batch neighbours per cell for the interpolation")
            .at_least(1),
        ParamSpec("k_anchor", SCSSL_PARAM_INT, "5",
                  "neighbours searched in the other batch for mutual nearest neighbours")
            .at_least(1),
        ParamSpec("n_pcs", SCSSL_PARAM_INT, "50",
                  "principal components the neighbours are found in")
            .at_least(1),
        ParamSpec("alpha", SCSSL_PARAM_FLOAT, "0.5",
                  "interpolation weight of the cell (lower bound)")
            .at_least(0)
            .at_most(1),
        ParamSpec("lambda_mode", SCSSL_PARAM_STRING, "uniform",
                  "\"uniform\": weight ~ U(alpha, 1) per cell and view (CLAIRE); \"fixed\": "
                  "weight = alpha (scSSL-Bench's mnn augmentation)")
            .one_of({"uniform", "fixed"}),
        ParamSpec("refine_epoch", SCSSL_PARAM_INT, "4",
                  "drop suspected false MNN pairs at the start of this epoch (0-based; after this "
                  "many warm-up epochs); 0 = never (CLAIRE's anchor_schedule)")
            .at_least(0),
        ParamSpec("refine_threshold", SCSSL_PARAM_FLOAT, "0.5",
                  "keep a pair when its probability of the majority mixture component is at least "
                  "this (CLAIRE's yita)")
            .at_least(0)
            .at_most(1),
    };
  }

  Claire(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        latent_dim_(p.get_int("latent_dim")),
        dropout_(p.get_float("encoder_dropout")),
        temperature_(p.get_float("temperature")),
        bank_size_(p.get_int("bank_size")),
        momentum_(p.get_float("momentum")),
        knn_(p.get_int("knn")),
        k_anchor_(p.get_int("k_anchor")),
        n_pcs_(p.get_int("n_pcs")),
        alpha_(p.get_float("alpha")),
        uniform_(p.get_string("lambda_mode") == "uniform"),
        refine_epoch_(p.get_int("refine_epoch")),
        refine_threshold_(p.get_float("refine_threshold")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    // No [[augmentation]] reaches it: claire does not declare SCSSL_USES_AUGMENTATIONS, so the
    // host refuses those sections.
    const scssl::BatchIndex batches = scssl::batch_index(train, "claire");
    x_ = &train.modalities.at(0).X;
    const torch::Tensor pcs = scssl::pca_scores(*x_, n_pcs_);
    within_ = scssl::batch_knn(pcs, batches, knn_, /*own_batch_only=*/true);
    pairs_ = claire::unique_pairs(scssl::mutual_nearest_neighbors(pcs, batches, k_anchor_));
    if (pairs_.size(0) == 0)
      throw scssl::BadData(
          "claire found no mutual nearest neighbours between the " +
          std::to_string(batches.n_nonempty()) +
          " training batches; it needs at least two batches that share cell types");
    const int64_t anchors = torch::zeros({x_->rows}, torch::kBool)
                                .index_fill_(0, pairs_.flatten(), true)
                                .sum()
                                .item<int64_t>();
    host_.info("claire: " + std::to_string(pairs_.size(0)) + " MNN pairs across " +
               std::to_string(batches.n_nonempty()) + " batches; " + std::to_string(anchors) +
               " of " + std::to_string(x_->rows) + " training cells have a partner");
    seed_ = options.seed;
    scssl::Trainer trainer(host_, options, {0});
    device_ = trainer.device();
    build_model(x_->cols);
    kept_ = model_->register_buffer("pair_kept", torch::ones({pairs_.size(0)}, torch::kBool));
    refined_ = model_->register_buffer("refined", torch::zeros({1}, torch::kInt64));
    partners_current_ = false;
    scssl::TrainCallbacks callbacks;
    callbacks.loss = [this](const scssl::TrainBatch& b) { return step_loss(b); };
    callbacks.after_step = [this](const scssl::TrainBatch&) {
      if (last_keys_.defined()) bank_->enqueue(last_keys_);
    };
    trainer.fit(train, *model_, callbacks);
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!query_) throw scssl::InvalidArgument("claire: embed() called before fit() or load()");
    return encode(data.modalities.at(0).X);
  }

  void save(const std::string& directory) const override {
    if (!query_)
      throw scssl::InvalidArgument("claire: nothing to save, the method has not been trained");
    std::filesystem::create_directories(directory);
    torch::serialize::OutputArchive archive, weights;
    query_->save(weights);
    archive.write("query", weights);
    archive.write("genes", torch::tensor(genes_));
    archive.save_to(directory + "/model.pt");
  }

  void load(const std::string& directory) override {
    const std::string file = directory + "/model.pt";
    if (!std::filesystem::exists(file))
      throw scssl::IoError("claire: no saved model at '" + file + "'");
    torch::serialize::InputArchive archive, weights;
    archive.load_from(file);
    torch::Tensor genes;
    archive.read("genes", genes);
    build_model(genes.item<int64_t>());
    archive.read("query", weights);
    query_->load(weights);
  }

 private:
  void build_model(int64_t genes) {
    genes_ = genes;
    model_ = std::make_shared<torch::nn::Module>("claire");
    query_ = model_->register_module("query", claire_encoder(genes, latent_dim_, dropout_));
    key_ = model_->register_module("key", claire_encoder(genes, latent_dim_, dropout_));
    scssl::nn::copy_weights(*key_, *query_);
    for (auto& p : key_->parameters()) p.set_requires_grad(false);
    bank_ = model_->register_module("bank", scssl::losses::MemoryBank(bank_size_, latent_dim_));
  }

  // The L2-normalised query embedding of every row, in evaluation mode (no dropout).
  torch::Tensor encode(const scssl::Matrix& x) {
    torch::NoGradGuard no_grad;
    const bool was_training = query_->is_training();
    query_->eval();
    std::vector<torch::Tensor> blocks;
    constexpr int64_t kBlock = 256;
    for (int64_t begin = 0; begin < x.rows; begin += kBlock)
      blocks.push_back(
          l2_normalized(
              query_->forward(x.slice_dense(begin, std::min(x.rows, begin + kBlock)).to(device_)))
              .cpu());
    query_->train(was_training);
    return torch::cat(blocks, 0);
  }

  // The partner graph of the pairs still kept, and which cells have a partner.
  void rebuild_partners() {
    const torch::Tensor kept = kept_.cpu();
    partners_ = claire::graph_of_pairs(pairs_, kept, x_->rows);
    has_partner_ = (partners_.offsets.slice(0, 1) - partners_.offsets.slice(0, 0, -1)) > 0;
    partners_current_ = true;
  }

  void refine(int64_t epoch) {
    const torch::Tensor emb = encode(*x_);
    const torch::Tensor similarity =
        (emb.index_select(0, pairs_.select(1, 0)) * emb.index_select(0, pairs_.select(1, 1)))
            .sum(1);
    const torch::Tensor keep = claire::gmm_majority_mask(similarity, refine_threshold_);
    kept_.copy_(keep.to(kept_.device()));
    refined_.fill_(1);
    rebuild_partners();
    host_.info("claire: refinement at epoch " + std::to_string(epoch + 1) + " kept " +
               std::to_string(keep.sum().item<int64_t>()) + " of " +
               std::to_string(pairs_.size(0)) + " MNN pairs; " +
               std::to_string(has_partner_.sum().item<int64_t>()) + " cells keep a partner");
  }

  torch::Tensor step_loss(const scssl::TrainBatch& b) {
    if (refine_epoch_ > 0 && b.epoch >= refine_epoch_ && refined_.item<int64_t>() == 0)
      refine(b.epoch);
    if (!partners_current_) rebuild_partners();  // first step, also after resuming a checkpoint
    if (b.epoch != recorded_epoch_) {
      host_.record("mnn_pairs", b.epoch, static_cast<double>(partners_.n_edges() / 2));
      recorded_epoch_ = b.epoch;
    }
    scssl::nn::momentum_update(*key_, *query_, momentum_);
    // Only cells with a partner are anchors (CLAIRE leaves the others out of its data set).
    const torch::Tensor anchors =
        b.cell_ids.index_select(0, has_partner_.index_select(0, b.cell_ids).nonzero().flatten());
    last_keys_ = torch::Tensor();
    if (anchors.numel() == 0) return torch::zeros({}, torch::requires_grad());
    auto rng =
        at::make_generator<at::CPUGeneratorImpl>(scssl::mix_seed(seed_, b.step, kViewStream));
    const claire::PairViews v =
        claire::make_pair_views(*x_, anchors, within_, partners_, alpha_, uniform_, rng);
    const torch::Tensor v0 = v.view0.to(device_), v1 = v.view1.to(device_);
    const torch::Tensor q0 = l2_normalized(query_->forward(v0)),
                        q1 = l2_normalized(query_->forward(v1));
    torch::Tensor k0, k1;
    {
      torch::NoGradGuard no_grad;
      k0 = l2_normalized(key_->forward(v0));
      k1 = l2_normalized(key_->forward(v1));
    }
    last_keys_ = torch::cat({k0, k1}, 0);
    return claire::symmetric_moco_loss(q0, q1, k0, k1, bank_->vectors(), temperature_);
  }

  static constexpr uint64_t kViewStream = 0xc1a1e;

  int64_t latent_dim_;
  double dropout_, temperature_;
  int64_t bank_size_;
  double momentum_;
  int64_t knn_, k_anchor_, n_pcs_;
  double alpha_;
  bool uniform_;
  int64_t refine_epoch_;
  double refine_threshold_;

  uint64_t seed_ = 0;
  torch::Device device_{torch::kCPU};
  int64_t genes_ = 0;
  const scssl::Matrix* x_ = nullptr;
  scssl::NeighborGraph within_, partners_;
  torch::Tensor pairs_, has_partner_;
  bool partners_current_ = false;
  int64_t recorded_epoch_ = -1;

  std::shared_ptr<torch::nn::Module> model_;
  torch::nn::Sequential query_{nullptr}, key_{nullptr};
  scssl::losses::MemoryBank bank_{nullptr};
  torch::Tensor kept_, refined_;  // buffers of model_, so checkpoints carry the refinement
  torch::Tensor last_keys_;
};

}  // namespace

SCSSL_PLUGIN(Claire, "claire", "1.0.0",
             "CLAIRE: symmetric MoCo with kNN/MNN positive pairs across batches (needs batches)")
