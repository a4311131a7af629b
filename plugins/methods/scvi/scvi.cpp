// scVI (docs/method-spec.md §12, docs/methods/scvi.md): a variational autoencoder of the raw
// counts as scvi-tools 1.1 builds it. The encoder reads log(1 + counts) (by default without the
// batch), the decoder gets the batch one-hot at every hidden layer and gives the normalised
// expression; the counts are negative binomial (or zero-inflated NB) around observed library x
// expression, with one inverse dispersion per gene. The embedding is the posterior mean.
#include <algorithm>
#include <cmath>

#include "scssl/count_likelihoods.hpp"
#include "scssl/loss_trainer.hpp"
#include "scssl/model_archive.hpp"
#include "scssl/plugin.hpp"

namespace {

namespace lk = scssl::likelihoods;

// scvi-tools' FCLayers: n_layers x [Linear -> BatchNorm(momentum 0.01, eps 1e-3) -> ReLU ->
// Dropout], the batch one-hot concatenated to the input of the first layer, or of every layer
// with deep injection.
class FcLayersImpl : public torch::nn::Module {
 public:
  FcLayersImpl(int64_t in, int64_t hidden, int64_t layers, int64_t n_batch, bool inject_all,
               double dropout)
      : n_batch_(n_batch), inject_all_(inject_all), dropout_(dropout) {
    for (int64_t i = 0; i < layers; ++i) {
      const int64_t width = (i == 0 ? in : hidden) + (injects(i) ? n_batch : 0);
      linears_.push_back(
          register_module("linear" + std::to_string(i), torch::nn::Linear(width, hidden)));
      norms_.push_back(register_module(
          "norm" + std::to_string(i),
          torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(hidden).momentum(0.01).eps(1e-3))));
    }
  }

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& one_hot) {
    for (size_t i = 0; i < linears_.size(); ++i) {
      if (injects(static_cast<int64_t>(i)) && one_hot.defined()) x = torch::cat({x, one_hot}, 1);
      x = torch::relu(norms_[i]->forward(linears_[i]->forward(x)));
      if (dropout_ > 0) x = torch::dropout(x, dropout_, is_training());
    }
    return x;
  }

 private:
  // scvi-tools ignores a covariate with one category.
  bool injects(int64_t layer) const { return n_batch_ > 1 && (layer == 0 || inject_all_); }

  int64_t n_batch_;
  bool inject_all_;
  double dropout_;
  std::vector<torch::nn::Linear> linears_;
  std::vector<torch::nn::BatchNorm1d> norms_;
};
TORCH_MODULE(FcLayers);

struct ScviShape {
  int64_t genes, n_batch, layers, hidden, latent;
  bool zinb, encode_batch, deep_injection;
  double dropout;
};

struct Posterior {
  torch::Tensor mean, var;
};

class ScviNetImpl : public torch::nn::Module {
 public:
  explicit ScviNetImpl(const ScviShape& s)
      : shape_(s),
        encoder_(register_module(
            "encoder", FcLayers(s.genes, s.hidden, s.layers, s.encode_batch ? s.n_batch : 1,
                                s.deep_injection, s.dropout))),
        z_mean_(register_module("z_mean", torch::nn::Linear(s.hidden, s.latent))),
        z_var_(register_module("z_var", torch::nn::Linear(s.hidden, s.latent))),
        decoder_(register_module(
            "decoder", FcLayers(s.latent, s.hidden, s.layers, s.n_batch, s.deep_injection, 0.0))),
        scale_(register_module("scale", torch::nn::Linear(s.hidden, s.genes))) {
    if (s.zinb) dropout_logit_ = register_module("dropout", torch::nn::Linear(s.hidden, s.genes));
    // scvi-tools draws the log inverse dispersions from N(0, 1).
    log_theta_ = register_parameter("log_theta", torch::randn({s.genes}));
  }

  // A one-hot of the batch codes; codes outside the trained batches (a held-out query) get zeros.
  torch::Tensor one_hot(const torch::Tensor& domains) const {
    if (shape_.n_batch <= 1 || !domains.defined()) return {};
    const torch::Tensor known = domains.lt(shape_.n_batch).logical_and(domains.ge(0));
    return torch::one_hot(domains.clamp(0, shape_.n_batch - 1), shape_.n_batch)
        .to(torch::kFloat32)
        .mul(known.unsqueeze(1));
  }

  Posterior encode(const torch::Tensor& counts, const torch::Tensor& one_hot) {
    const torch::Tensor h =
        encoder_->forward(torch::log1p(counts), shape_.encode_batch ? one_hot : torch::Tensor());
    return {z_mean_->forward(h), torch::exp(z_var_->forward(h)) + 1e-4};
  }

  // Per cell: -log p(counts | z, library, batch) summed over genes, and KL(q(z|x) || N(0, I)).
  std::pair<torch::Tensor, torch::Tensor> terms(const torch::Tensor& counts,
                                                const torch::Tensor& library,
                                                const torch::Tensor& domains) {
    const torch::Tensor batch = one_hot(domains);
    const Posterior q = encode(counts, batch);
    const torch::Tensor z = q.mean + torch::sqrt(q.var) * torch::randn_like(q.mean);
    const torch::Tensor h = decoder_->forward(z, batch);
    // Observed library: log(total counts) without an epsilon; cells with no counts never get
    // here (the trainer leaves them out).
    const torch::Tensor rate = library * torch::softmax(scale_->forward(h), 1);
    const torch::Tensor theta = torch::exp(log_theta_);
    const torch::Tensor log_p = shape_.zinb
                                    ? lk::log_zinb(counts, rate, theta, dropout_logit_->forward(h))
                                    : lk::log_nb(counts, rate, theta);
    return {-log_p.sum(1), lk::kl_standard_normal(q.mean, q.var).sum(1)};
  }

  const ScviShape& shape() const { return shape_; }

 private:
  ScviShape shape_;
  FcLayers encoder_;
  torch::nn::Linear z_mean_, z_var_;
  FcLayers decoder_;
  torch::nn::Linear scale_, dropout_logit_{nullptr};
  torch::Tensor log_theta_;
};
TORCH_MODULE(ScviNet);

class Scvi final : public scssl::IMethod {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_RAW_COUNTS; }

  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("n_layers", SCSSL_PARAM_INT, "1",
                         "hidden layers of the encoder and of the decoder (the study: 8)")
            .at_least(1),
        scssl::ParamSpec("n_hidden", SCSSL_PARAM_INT, "128", "width of every hidden layer")
            .at_least(1),
        scssl::ParamSpec("n_latent", SCSSL_PARAM_INT, "10",
                         "dimension of the latent space, the embedding (the study: 30)")
            .at_least(1),
        scssl::ParamSpec("dropout", SCSSL_PARAM_FLOAT, "0.1", "dropout of the encoder's layers")
            .at_least(0)
            .below(1),
        scssl::ParamSpec("gene_likelihood", SCSSL_PARAM_STRING, "zinb",
                         "count distribution: zinb (zero-inflated negative binomial) or nb")
            .one_of({"zinb", "nb"}),
        {"encode_batch", SCSSL_PARAM_BOOL, "false",
         "give the encoder the batch one-hot too (scvi-tools' encode_covariates)"},
        {"deep_injection", SCSSL_PARAM_BOOL, "true",
         "batch one-hot into every hidden layer, not only the first (deeply_inject_covariates)"},
        scssl::ParamSpec("kl_warmup_epochs", SCSSL_PARAM_INT, "400",
                         "the KL weight grows as epoch / kl_warmup_epochs up to 1 (0: always 1)")
            .at_least(0),
        scssl::ParamSpec("epochs_rule", SCSSL_PARAM_STRING, "scvi",
                         "scvi: epochs = max(1, min(round(20000 / cells x 400), 400)), as "
                         "scvi-tools; config: train.epochs")
            .one_of({"scvi", "config"}),
        scssl::ParamSpec("train_fraction", SCSSL_PARAM_FLOAT, "0.9",
                         "share of the cells trained on; the rest gives the validation ELBO")
            .above(0)
            .at_most(1),
        scssl::ParamSpec("adam_eps", SCSSL_PARAM_FLOAT, "0.01", "Adam's epsilon (scvi-tools: 0.01)")
            .above(0),
        scssl::ParamSpec("early_stopping_patience", SCSSL_PARAM_INT, "0",
                         "stop after this many epochs without a better validation ELBO (0: never)")
            .at_least(0),
    };
  }

  Scvi(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        layers_(p.get_int("n_layers")),
        hidden_(p.get_int("n_hidden")),
        latent_(p.get_int("n_latent")),
        dropout_(p.get_float("dropout")),
        zinb_(p.get_string("gene_likelihood") == "zinb"),
        encode_batch_(p.get_bool("encode_batch")),
        deep_injection_(p.get_bool("deep_injection")),
        kl_warmup_epochs_(p.get_int("kl_warmup_epochs")),
        scvi_epochs_(p.get_string("epochs_rule") == "scvi"),
        train_fraction_(p.get_float("train_fraction")),
        adam_eps_(p.get_float("adam_eps")),
        patience_(p.get_int("early_stopping_patience")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    const int rna = modality(train);
    scssl::raw_counts(train, rna, "scvi");
    torch::manual_seed(scssl::mix_seed(options.seed, 0x5c71));  // the initial weights
    net_ = ScviNet(ScviShape{static_cast<int64_t>(train.modalities[rna].features.size()),
                             scssl::batch_count(train), layers_, hidden_, latent_, zinb_,
                             encode_batch_, deep_injection_, dropout_});
    if (layers_ > 2)
      host_.warn("scvi: " + std::to_string(layers_) +
                 " hidden layers without residual connections are hard to train (the study's "
                 "setting); scvi-tools' default is 1");

    scssl::LossTrainerOptions o;
    o.values = false;  // scVI reads the counts alone
    o.counts = true;
    o.drop_empty_cells = true;
    o.train_fraction = train_fraction_;
    o.adam_eps = adam_eps_;
    o.monitor = "elbo";
    o.early_stopping_patience = patience_;
    if (scvi_epochs_) {
      // Python's round(), halves to even, as scvi-tools computes it.
      const double rule = std::nearbyint(20000.0 / static_cast<double>(train.n_cells()) * 400.0);
      o.epochs = std::max<int64_t>(1, std::min<int64_t>(static_cast<int64_t>(rule), 400));
      host_.info("scvi: " + std::to_string(o.epochs) + " epochs (scvi-tools' rule for " +
                 std::to_string(train.n_cells()) + " cells)");
    }
    scssl::LossTrainer trainer(host_, options, {rna}, o);
    ScviNet net = net_;
    const int64_t warmup = kl_warmup_epochs_;
    trainer.fit(train, *net, [&](const scssl::CellBatch& b) {
      auto [reconstruction, kl] = net->terms(b.counts[0], b.library[0], b.domains);
      // Constant within an epoch, as scvi-tools' n_epochs_kl_warmup.
      const double weight = warmup > 0 ? std::min(1.0, double(b.epoch) / double(warmup)) : 1.0;
      const torch::Tensor elbo = (reconstruction + kl).mean();
      return scssl::StepLoss{(reconstruction + weight * kl).mean(),
                             {{"elbo", elbo.detach()},
                              {"reconstruction", reconstruction.mean().detach()},
                              {"kl", kl.mean().detach()}}};
    });
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("scvi: embed() called before fit() or load()");
    const int rna = modality(data);
    const scssl::Matrix& counts = scssl::raw_counts(data, rna, "scvi");
    const torch::Tensor domains = scssl::batch_codes(data);
    net_->eval();
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> parts;
    constexpr int64_t kChunk = 1024;
    for (int64_t begin = 0; begin < data.n_cells(); begin += kChunk) {
      const torch::Tensor ids =
          torch::arange(begin, std::min(data.n_cells(), begin + kChunk), torch::kInt64);
      const torch::Tensor batch =
          net_->one_hot(domains.defined() ? domains.index_select(0, ids) : torch::Tensor());
      parts.push_back(net_->encode(counts.rows_dense(ids), batch).mean);
    }
    return torch::cat(parts);
  }

  void save(const std::string& directory) const override {
    const ScviShape& s = net_ ? net_->shape() : ScviShape{};
    scssl::save_model(directory, "scvi", net_.ptr(),
                      {s.genes, s.n_batch, s.layers, s.hidden, s.latent, s.zinb, s.encode_batch,
                       s.deep_injection});
  }

  void load(const std::string& directory) override {
    scssl::SavedModel saved(directory, "scvi");
    const auto& v = saved.shape();
    if (v.size() != 8)
      throw scssl::BadData("scvi: '" + directory + "/model.pt' is not an scvi model");
    net_ =
        ScviNet(ScviShape{v[0], v[1], v[2], v[3], v[4], v[5] != 0, v[6] != 0, v[7] != 0, dropout_});
    saved.load_into(*net_);
  }

 private:
  // scVI models the RNA counts: the modality named RNA, else the first.
  static int modality(const scssl::CellData& data) {
    const int m = data.modality_index("RNA");
    return m < 0 ? 0 : m;
  }

  int64_t layers_, hidden_, latent_;
  double dropout_;
  bool zinb_, encode_batch_, deep_injection_;
  int64_t kl_warmup_epochs_;
  bool scvi_epochs_;
  double train_fraction_, adam_eps_;
  int64_t patience_;
  ScviNet net_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(Scvi, "scvi", "1.0.0",
             "scVI: variational autoencoder of raw counts (negative binomial or ZINB), batch "
             "injected into the decoder; embedding = posterior mean (needs raw counts)")
