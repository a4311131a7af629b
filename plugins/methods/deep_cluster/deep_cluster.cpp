// deep_cluster: a single-cell deep-clustering autoencoder in the design of scDeepCluster (Tian et
// al., Nature Machine Intelligence 2019), shipped as the stand-in for the study's "SCDC" baseline,
// which could not be identified (docs/method-spec.md §19, docs/methods/deep_cluster.md).
//
// A denoising autoencoder reads standardised log-normalised expression with Gaussian noise and
// models the raw counts with a zero-inflated negative binomial (stage "pretrain"); then DEC pulls
// the clean latent codes towards cluster centres, with the ZINB term kept (stage "cluster"). The
// embedding is the clean 32-d latent code.
#include <cmath>
#include <filesystem>

#include "clustering.hpp"
#include "scssl/count_likelihoods.hpp"
#include "scssl/loss_trainer.hpp"
#include "scssl/plugin.hpp"
#include "scssl/training.hpp"

namespace {

constexpr const char* kName = "deep_cluster";

// scDeepCluster's layer sizes: encoder G-256-64, decoder 64-256.
constexpr int64_t kHidden1 = 256, kHidden2 = 64;

struct ZinbParameters {
  torch::Tensor mean;           // per gene, before the size factor
  torch::Tensor dispersion;     // theta, the inverse dispersion
  torch::Tensor dropout_logit;  // logit of the zero-inflation probability
};

class AutoencoderImpl : public torch::nn::Module {
 public:
  AutoencoderImpl(int64_t genes, int64_t latent_dim)
      : encoder(register_module(
            "encoder",
            torch::nn::Sequential(torch::nn::Linear(genes, kHidden1), torch::nn::ReLU(),
                                  torch::nn::Linear(kHidden1, kHidden2), torch::nn::ReLU()))),
        latent(register_module("latent", torch::nn::Linear(kHidden2, latent_dim))),
        decoder(register_module(
            "decoder",
            torch::nn::Sequential(torch::nn::Linear(latent_dim, kHidden2), torch::nn::ReLU(),
                                  torch::nn::Linear(kHidden2, kHidden1), torch::nn::ReLU()))),
        mean_head(register_module("mean", torch::nn::Linear(kHidden1, genes))),
        dispersion_head(register_module("dispersion", torch::nn::Linear(kHidden1, genes))),
        dropout_head(register_module("dropout", torch::nn::Linear(kHidden1, genes))),
        // The input standardisation, fitted on the training cells (identity without it).
        input_mean(register_buffer("input_mean", torch::zeros({genes}))),
        input_sd(register_buffer("input_sd", torch::ones({genes}))) {}

  torch::Tensor standardized(const torch::Tensor& x) { return (x - input_mean) / input_sd; }
  torch::Tensor encode(const torch::Tensor& standardized_x) {
    return latent->forward(encoder->forward(standardized_x));
  }
  // scDeepCluster's heads: mean = clamp(exp(.), 1e-5, 1e6), written as exp of the clamped value
  // (the same numbers and gradients, without overflow); dispersion = clamp(softplus(.), 1e-4,
  // 1e4); the dropout probability sigmoid(.) is kept as its logit for the likelihood.
  ZinbParameters decode(const torch::Tensor& z) {
    const torch::Tensor h = decoder->forward(z);
    return {torch::exp(torch::clamp(mean_head->forward(h), std::log(1e-5), std::log(1e6))),
            torch::clamp(torch::softplus(dispersion_head->forward(h)), 1e-4, 1e4),
            dropout_head->forward(h)};
  }

  torch::nn::Sequential encoder;
  torch::nn::Linear latent;
  torch::nn::Sequential decoder;
  torch::nn::Linear mean_head, dispersion_head, dropout_head;
  torch::Tensor input_mean, input_sd;
};
TORCH_MODULE(Autoencoder);

// What the clustering stage trains and checkpoints: the autoencoder, the cluster centres and the
// assignments of the last target refresh (the stopping rule compares against them).
class ClusterModelImpl : public torch::nn::Module {
 public:
  ClusterModelImpl(Autoencoder net, const torch::Tensor& initial_centres,
                   const torch::Tensor& initial_assignments)
      : net(register_module("net", std::move(net))),
        centres(register_parameter("centres", initial_centres.clone())),
        assignments(register_buffer("assignments", initial_assignments.clone())) {}

  Autoencoder net;
  torch::Tensor centres, assignments;
};
TORCH_MODULE(ClusterModel);

class DeepCluster final : public scssl::IMethod {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_RAW_COUNTS; }
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        {"modality", SCSSL_PARAM_STRING, "RNA",
         "modality to model; the first one if the data set has no such modality"},
        ParamSpec("latent_dim", SCSSL_PARAM_INT, "32", "size of the latent code, the embedding")
            .at_least(1),
        {"standardize", SCSSL_PARAM_BOOL, "true",
         "standardise every feature with the training cells' mean and deviation (scDeepCluster "
         "scales its input); set false when [preprocess] scale = true"},
        ParamSpec("noise_sd", SCSSL_PARAM_FLOAT, "2.5",
                  "sd of the Gaussian noise added to the standardised input while training "
                  "(scDeepCluster's sigma)")
            .at_least(0),
        ParamSpec("pretrain_epochs", SCSSL_PARAM_INT, "100",
                  "epochs of the ZINB-only pre-training at train.learning_rate (scDeepCluster: "
                  "300); the clustering stage runs at most train.epochs")
            .at_least(1),
        ParamSpec("n_clusters", SCSSL_PARAM_INT, "0",
                  "number of clusters, found by k-means; 0: Louvain communities of the "
                  "pretrained latent space decide (scDeepCluster's default)")
            .at_least(0),
        ParamSpec("knn", SCSSL_PARAM_INT, "20",
                  "neighbours per cell (the cell counted) in Louvain's graph")
            .at_least(2),
        ParamSpec("resolution", SCSSL_PARAM_FLOAT, "0.8",
                  "Louvain's resolution; larger gives more clusters")
            .above(0),
        ParamSpec("kmeans_restarts", SCSSL_PARAM_INT, "20",
                  "k-means++ restarts when n_clusters > 0 (scikit-learn's n_init)")
            .at_least(1),
        ParamSpec("alpha", SCSSL_PARAM_FLOAT, "1.0",
                  "degrees of freedom of the Student-t soft assignments")
            .above(0),
        ParamSpec("gamma", SCSSL_PARAM_FLOAT, "1.0",
                  "weight of the clustering KL term against the ZINB loss")
            .at_least(0),
        ParamSpec("tolerance", SCSSL_PARAM_FLOAT, "0.001",
                  "the clustering stage stops when fewer than this share of cells change "
                  "cluster between two target refreshes (0: never)")
            .at_least(0)
            .at_most(1),
        ParamSpec("cluster_learning_rate", SCSSL_PARAM_FLOAT, "1e-3",
                  "Adam learning rate of the clustering stage (scDeepCluster: Adadelta, lr 1)")
            .above(0),
    };
  }

  DeepCluster(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        modality_(p.get_string("modality")),
        latent_dim_(p.get_int("latent_dim")),
        standardize_(p.get_bool("standardize")),
        noise_sd_(p.get_float("noise_sd")),
        pretrain_epochs_(p.get_int("pretrain_epochs")),
        n_clusters_(p.get_int("n_clusters")),
        knn_(p.get_int("knn")),
        resolution_(p.get_float("resolution")),
        kmeans_restarts_(p.get_int("kmeans_restarts")),
        alpha_(p.get_float("alpha")),
        gamma_(p.get_float("gamma")),
        tolerance_(p.get_float("tolerance")),
        cluster_learning_rate_(p.get_float("cluster_learning_rate")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    const int m = modality_index(train);
    const scssl::Matrix& counts = scssl::raw_counts(train, m, kName);
    if (n_clusters_ > train.n_cells())
      throw scssl::InvalidArgument(
          std::string(kName) + ": n_clusters = " + std::to_string(n_clusters_) +
          " is more than the " + std::to_string(train.n_cells()) + " training cells");
    build(train.modalities[m].X.cols);
    if (standardize_) {
      torch::NoGradGuard no_grad;
      const auto [mean, sd] = deep_cluster::feature_mean_sd(train.modalities[m].X);
      net_->input_mean.copy_(mean);
      net_->input_sd.copy_(sd);
    }
    // Size factors: library / median library of the cells that have counts.
    const torch::Tensor library = scssl::library_sizes(counts);
    const torch::Tensor nonempty = library.masked_select(library > 0);
    if (nonempty.numel() == 0)
      throw scssl::BadData(std::string(kName) +
                           ": every training cell has zero counts in modality '" +
                           train.modalities[m].name + "'");
    median_library_ = nonempty.median().item<double>();

    scssl::LossTrainerOptions pre;
    pre.stage = "pretrain";
    pre.epochs = pretrain_epochs_;
    pre.amsgrad = true;  // scDeepCluster's pre-training optimiser
    pre.counts = true;
    pre.drop_empty_cells = true;
    scssl::LossTrainer pretrainer(host_, options, {m}, pre);
    device_ = pretrainer.device();
    pretrainer.fit(train, *net_, [this](const scssl::CellBatch& b) {
      return scssl::StepLoss{reconstruction_loss(b), {}};
    });

    const torch::Tensor z = encode_all(train, m).cpu();
    const deep_cluster::Clustering init = deep_cluster::initial_clusters(
        z, n_clusters_, kmeans_restarts_, knn_, resolution_, scssl::mix_seed(options.seed, 0xdec));
    const int64_t k = init.centres.size(0);
    host_.info(std::string(kName) + ": " + std::to_string(k) + " clusters from " +
               (n_clusters_ > 0 ? "k-means" : "Louvain") + " on the pretrained latent space");
    host_.record("n_clusters", 0, static_cast<double>(k));
    ClusterModel model(net_, init.centres.to(device_), init.labels.to(device_));

    scssl::LossTrainerOptions dec;
    dec.stage = "cluster";
    dec.learning_rate = cluster_learning_rate_;
    dec.counts = true;
    dec.drop_empty_cells = true;
    torch::Tensor target;  // DEC's target distribution of every training cell
    dec.before_epoch = [&](int64_t epoch) {
      torch::NoGradGuard no_grad;
      const torch::Tensor q =
          deep_cluster::soft_assignments(encode_all(train, m), model->centres, alpha_);
      target = deep_cluster::target_distribution(q);
      const torch::Tensor labels = q.argmax(1);
      const double changed =
          labels.ne(model->assignments).sum().item<double>() / static_cast<double>(labels.size(0));
      model->assignments.copy_(labels);
      host_.record("cluster_assignments_changed", epoch, changed);
      // The first refresh compares with the initial clusters and never stops, as scDeepCluster.
      if (epoch > 0 && changed < tolerance_) {
        host_.info(std::string(kName) + ": clustering converged before epoch " +
                   std::to_string(epoch + 1) + " (" + std::to_string(100 * changed) +
                   "% of the cells changed cluster)");
        return false;  // ends the stage before this epoch trains, as scDeepCluster
      }
      return true;
    };
    scssl::LossTrainer clusterer(host_, options, {m}, dec);
    clusterer.fit(train, *model, [&](const scssl::CellBatch& b) {
      const torch::Tensor zinb = reconstruction_loss(b);
      const torch::Tensor q = deep_cluster::soft_assignments(
          net_->encode(net_->standardized(b.x[0])), model->centres, alpha_);
      const torch::Tensor kl =
          deep_cluster::kl_divergence(target.index_select(0, b.cell_ids.to(device_)), q);
      return scssl::StepLoss{zinb + gamma_ * kl, {{"zinb", zinb.detach()}, {"kl", kl.detach()}}};
    });
    net_->eval();
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_)
      throw scssl::InvalidArgument(std::string(kName) + ": embed() before fit() or load()");
    return encode_all(data, modality_index(data)).cpu();
  }

  void save(const std::string& directory) const override {
    if (!net_)
      throw scssl::InvalidArgument(std::string(kName) +
                                   ": nothing to save, the method has not been trained");
    std::filesystem::create_directories(directory);
    torch::serialize::OutputArchive archive, weights;
    net_->save(weights);
    archive.write("weights", weights);
    archive.write("genes", torch::tensor(genes_));
    archive.write("latent_dim", torch::tensor(latent_dim_));
    archive.save_to(directory + "/model.pt");
  }

  void load(const std::string& directory) override {
    const std::string file = directory + "/model.pt";
    if (!std::filesystem::exists(file))
      throw scssl::IoError(std::string(kName) + ": no saved model at '" + file + "'");
    torch::serialize::InputArchive archive, weights;
    archive.load_from(file);
    torch::Tensor genes, latent_dim;
    archive.read("genes", genes);
    archive.read("latent_dim", latent_dim);
    latent_dim_ = latent_dim.item<int64_t>();
    build(genes.item<int64_t>());
    archive.read("weights", weights);
    net_->load(weights);
    net_->eval();
  }

 private:
  int modality_index(const scssl::CellData& data) const {
    const int m = data.modality_index(modality_);
    return m < 0 ? 0 : m;
  }

  void build(int64_t genes) {
    genes_ = genes;
    net_ = Autoencoder(genes, latent_dim_);
    net_->to(device_);
  }

  // scDeepCluster's ZINB loss, averaged over cells and genes: the mean scaled by the cell's size
  // factor, the input noised while training (the global generator, which LossTrainer reseeds
  // every epoch).
  torch::Tensor reconstruction_loss(const scssl::CellBatch& b) {
    torch::Tensor x = net_->standardized(b.x[0]);
    if (b.training && noise_sd_ > 0) x = x + noise_sd_ * torch::randn_like(x);
    const ZinbParameters out = net_->decode(net_->encode(x));
    const torch::Tensor size_factor = b.library[0] / median_library_;
    return -scssl::likelihoods::log_zinb(b.counts[0], out.mean * size_factor, out.dispersion,
                                         out.dropout_logit)
                .mean();
  }

  // The clean latent code of every cell, in blocks, in evaluation mode.
  torch::Tensor encode_all(const scssl::CellData& data, int m) {
    const scssl::Matrix& x = data.modalities.at(m).X;
    if (x.cols != genes_)
      throw scssl::BadData(std::string(kName) + ": the model was trained on " +
                           std::to_string(genes_) + " features of modality '" +
                           data.modalities.at(m).name + "', the data have " +
                           std::to_string(x.cols));
    torch::NoGradGuard no_grad;
    const bool training = net_->is_training();
    net_->eval();
    std::vector<torch::Tensor> blocks;
    constexpr int64_t kBlock = 256;
    for (int64_t begin = 0; begin < x.rows; begin += kBlock)
      blocks.push_back(net_->encode(
          net_->standardized(x.slice_dense(begin, std::min(x.rows, begin + kBlock)).to(device_))));
    net_->train(training);
    return blocks.empty() ? torch::zeros({0, latent_dim_}) : torch::cat(blocks, 0);
  }

  std::string modality_;
  int64_t latent_dim_;
  bool standardize_;
  double noise_sd_;
  int64_t pretrain_epochs_, n_clusters_, knn_;
  double resolution_;
  int64_t kmeans_restarts_;
  double alpha_, gamma_, tolerance_, cluster_learning_rate_;

  torch::Device device_{torch::kCPU};
  int64_t genes_ = 0;
  double median_library_ = 1;
  Autoencoder net_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(DeepCluster, "deep_cluster", "1.0.0",
             "Deep-clustering ZINB autoencoder (scDeepCluster design), stand-in for the study's "
             "SCDC baseline")
