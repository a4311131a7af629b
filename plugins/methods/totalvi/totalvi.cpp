// totalVI (Gayoso et al., Nature Methods 2021): a variational autoencoder of CITE-seq data, as
// scvi-tools 1.1 builds it (docs/method-spec.md §13, docs/methods/totalvi.md). One latent vector
// per cell explains both the raw RNA counts (negative binomial with the observed library size)
// and the raw protein (ADT) counts (a mixture of a background and a foreground negative binomial);
// the background's log rate has a per-cell posterior and a per-batch prior initialised from the
// data. The embedding is the posterior mean of the latent vector.
//
// Guards against the NaNs reported upstream (scvi-tools #873, #1568, #2981): scvi-tools 1.1
// stacks two exponentials on the background (exp of a log scale, then exp of a normal draw), the
// instability that 1.2 removed by switching the scale to softplus. Here the log scale is clamped to
// [kMinLogScale, kMaxLogScale] and the drawn log background to at most kMaxLogBackground; both
// bounds lie far outside what a trained model uses, so they only stop overflow.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gaussian_mixture.hpp"
#include "scssl/count_likelihoods.hpp"
#include "scssl/loss_trainer.hpp"
#include "scssl/model_archive.hpp"

namespace {

namespace F = torch::nn::functional;
namespace L = scssl::likelihoods;

constexpr double kMinLogScale = -15, kMaxLogScale = 10;  // std of the log background
constexpr double kMaxLogBackground = 20;                 // background rate below 5e8 counts

// The input with the batch one-hot appended (scvi-tools injects it before every linear layer).
torch::Tensor with_batch(const torch::Tensor& x, const torch::Tensor& one_hot) {
  return one_hot.defined() ? torch::cat({x, one_hot}, 1) : x;
}

// scvi-tools' FCLayers: `layers` times Linear([x, batch]) -> BatchNorm1d(momentum 0.01, eps
// 1e-3) -> ReLU -> Dropout, every layer `hidden` wide.
class HiddenLayersImpl : public torch::nn::Module {
 public:
  HiddenLayersImpl(int64_t in, int64_t hidden, int64_t layers, int64_t covariates, double dropout) {
    for (int64_t i = 0; i < layers; ++i) {
      const std::string n = std::to_string(i);
      linear_.push_back(register_module(
          "linear" + n, torch::nn::Linear((i == 0 ? in : hidden) + covariates, hidden)));
      norm_.push_back(register_module(
          "norm" + n,
          torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(hidden).momentum(0.01).eps(1e-3))));
    }
    dropout_ = register_module("dropout", torch::nn::Dropout(dropout));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& one_hot) {
    for (size_t i = 0; i < linear_.size(); ++i)
      x = dropout_(torch::relu(norm_[i](linear_[i](with_batch(x, one_hot)))));
    return x;
  }

 private:
  std::vector<torch::nn::Linear> linear_;
  std::vector<torch::nn::BatchNorm1d> norm_;
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(HiddenLayers);

// What fixes the shapes of the network (saved with the weights).
struct Shape {
  int64_t genes, proteins, batches, latent, hidden, encoder_layers, decoder_layers;
  // The one-hot width: a single batch adds no input (scvi-tools ignores one-category covariates).
  int64_t covariates() const { return batches > 1 ? batches : 0; }
  std::vector<int64_t> values() const {
    return {genes, proteins, batches, latent, hidden, encoder_layers, decoder_layers};
  }
};

// Per-cell terms of the negative ELBO.
struct CellTerms {
  torch::Tensor rna, protein, kl_z, kl_background;  // each [cells]
};

class TotalviNetImpl : public torch::nn::Module {
 public:
  TotalviNetImpl(const Shape& s, double encoder_dropout, double decoder_dropout) {
    const int64_t cov = s.covariates(), joined = s.hidden + s.latent + cov;
    auto hidden = [&](const char* name) {
      return register_module(
          name, HiddenLayers(s.latent, s.hidden, s.decoder_layers, cov, decoder_dropout));
    };
    encoder = register_module("encoder", HiddenLayers(s.genes + s.proteins, s.hidden,
                                                      s.encoder_layers, cov, encoder_dropout));
    z_mean = register_module("z_mean", torch::nn::Linear(s.hidden, s.latent));
    z_log_var = register_module("z_log_var", torch::nn::Linear(s.hidden, s.latent));
    rna_hidden = hidden("rna_hidden");
    rna_scale = register_module("rna_scale", torch::nn::Linear(joined, s.genes));
    background_hidden = hidden("background_hidden");
    background_mean = register_module("background_mean", torch::nn::Linear(joined, s.proteins));
    background_log_scale =
        register_module("background_log_scale", torch::nn::Linear(joined, s.proteins));
    foreground_hidden = hidden("foreground_hidden");
    foreground_scale = register_module("foreground_scale", torch::nn::Linear(joined, s.proteins));
    mixing_hidden = hidden("mixing_hidden");
    mixing = register_module("mixing", torch::nn::Linear(joined, s.proteins));
    // scvi-tools' initialisations: px_r ~ N(0, 1), py_r ~ 2 U(0, 1); the prior is set by fit().
    rna_log_theta = register_parameter("rna_log_theta", torch::randn({s.genes}));
    protein_log_theta = register_parameter("protein_log_theta", 2 * torch::rand({s.proteins}));
    prior_mean = register_parameter("prior_mean", torch::zeros({s.proteins, s.batches}));
    prior_log_scale = register_parameter("prior_log_scale", torch::zeros({s.proteins, s.batches}));
    trained_batches = register_buffer("trained_batches", torch::zeros({s.batches}));
  }

  // Posterior q(z | x, y, batch): mean and variance (exp + 1e-4), from log1p counts.
  std::pair<torch::Tensor, torch::Tensor> posterior(const torch::Tensor& rna,
                                                    const torch::Tensor& protein,
                                                    const torch::Tensor& one_hot) {
    const torch::Tensor h =
        encoder(torch::cat({torch::log1p(rna), torch::log1p(protein)}, 1), one_hot);
    return {z_mean(h), torch::exp(z_log_var(h)) + 1e-4};
  }

  CellTerms terms(const torch::Tensor& rna, const torch::Tensor& protein,
                  const torch::Tensor& library, const torch::Tensor& domains,
                  const torch::Tensor& one_hot) {
    const auto [q_mean, q_var] = posterior(rna, protein, one_hot);
    const torch::Tensor z = q_mean + torch::sqrt(q_var) * torch::randn_like(q_mean);
    // Every head reads [its hidden layer, z, batch one-hot].
    auto head_input = [&](HiddenLayers& hidden) {
      return with_batch(torch::cat({hidden(z, one_hot), z}, 1), one_hot);
    };
    const torch::Tensor rna_in = head_input(rna_hidden);
    const torch::Tensor rna_mean = library * torch::softmax(rna_scale(rna_in), 1);
    const torch::Tensor back_in = head_input(background_hidden);
    const torch::Tensor back_mean = background_mean(back_in);
    const torch::Tensor back_scale =
        torch::exp(background_log_scale(back_in).clamp(kMinLogScale, kMaxLogScale));
    const torch::Tensor log_back =
        (back_mean + back_scale * torch::randn_like(back_mean)).clamp_max(kMaxLogBackground);
    const torch::Tensor rate_back = torch::exp(log_back);
    const torch::Tensor rate_fore =
        rate_back * (torch::relu(foreground_scale(head_input(foreground_hidden))) + 1 + 1e-8);
    const torch::Tensor mix_logit = mixing(head_input(mixing_hidden));
    // The prior of the log background for each cell's batch ([cells, proteins]).
    const torch::Tensor cell_prior_mean = prior_mean.index_select(1, domains).t();
    const torch::Tensor cell_prior_scale = torch::exp(prior_log_scale.index_select(1, domains).t());
    return {
        -L::log_nb(rna, rna_mean, torch::exp(rna_log_theta)).sum(1),
        -L::log_nb_mixture(protein, rate_back, rate_fore, torch::exp(protein_log_theta), mix_logit)
             .sum(1),
        L::kl_standard_normal(q_mean, q_var).sum(1),
        L::kl_normal(back_mean, back_scale * back_scale, cell_prior_mean,
                     cell_prior_scale * cell_prior_scale)
            .sum(1)};
  }

  HiddenLayers encoder{nullptr}, rna_hidden{nullptr}, background_hidden{nullptr},
      foreground_hidden{nullptr}, mixing_hidden{nullptr};
  torch::nn::Linear z_mean{nullptr}, z_log_var{nullptr}, rna_scale{nullptr},
      background_mean{nullptr}, background_log_scale{nullptr}, foreground_scale{nullptr},
      mixing{nullptr};
  torch::Tensor rna_log_theta, protein_log_theta, prior_mean, prior_log_scale;
  // 1 for the batches that had training cells (see Totalvi::one_hot for the others).
  torch::Tensor trained_batches;
};
TORCH_MODULE(TotalviNet);

// Batch codes of every cell ([cells], zeros without a batch column); BadData for a missing code or
// one beyond the model's batches.
torch::Tensor domains_of(const scssl::CellData& data, int64_t batches) {
  const torch::Tensor codes = scssl::batch_codes(data);
  if (!codes.defined()) {
    if (batches > 1)
      throw scssl::BadData("totalvi was trained on " + std::to_string(batches) +
                           " batches, but these cells have no batch column");
    return torch::zeros({data.n_cells()}, torch::kInt64);
  }
  const int64_t missing = (codes < 0).sum().item<int64_t>();
  if (missing > 0)
    throw scssl::BadData("totalvi: " + std::to_string(missing) +
                         " cells have no value in the batch column '" + data.batch_key +
                         "'; give every cell a batch or leave dataset.batch_key unset");
  if (codes.numel() > 0 && codes.max().item<int64_t>() >= batches)
    throw scssl::BadData("totalvi: the batch column '" + data.batch_key + "' has more than the " +
                         std::to_string(batches) + " categories the model was trained with");
  return codes;
}

class Totalvi final : public scssl::IMethod {
 public:
  // Batches are optional, as in scvi-tools: without a batch column all cells form one batch.
  static uint64_t requirements() { return SCSSL_NEEDS_RAW_COUNTS | SCSSL_NEEDS_SECOND_MODALITY; }
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("n_latent", SCSSL_PARAM_INT, "20", "dimension of the latent space, the embedding")
            .at_least(1),
        ParamSpec("n_hidden", SCSSL_PARAM_INT, "256",
                  "width of every hidden layer of the encoder and the decoder")
            .at_least(1),
        ParamSpec("n_layers_encoder", SCSSL_PARAM_INT, "2", "hidden layers of the encoder")
            .at_least(1),
        ParamSpec("n_layers_decoder", SCSSL_PARAM_INT, "1",
                  "hidden layers of each of the four decoder heads")
            .at_least(1),
        ParamSpec("dropout_encoder", SCSSL_PARAM_FLOAT, "0.2",
                  "dropout after every hidden layer of the encoder (dropout_rate_encoder)")
            .at_least(0)
            .below(1),
        ParamSpec("dropout_decoder", SCSSL_PARAM_FLOAT, "0.2",
                  "dropout after every hidden layer of the decoder (dropout_rate_decoder)")
            .at_least(0)
            .below(1),
        ParamSpec("background_prior", SCSSL_PARAM_STRING, "auto",
                  "initial prior of the protein background: \"empirical\" (per-cell Gaussian "
                  "mixtures), \"random\" (N(0, 1) draws), or \"auto\": empirical with more than "
                  "10 proteins (scvi-tools' empirical_protein_background_prior = None)")
            .one_of({"auto", "empirical", "random"}),
        ParamSpec("prior_cells", SCSSL_PARAM_INT, "100",
                  "cells drawn per batch (with replacement) for the empirical prior")
            .at_least(1),
        ParamSpec("kl_warmup_per_cell", SCSSL_PARAM_FLOAT, "0.75",
                  "the KL weight rises linearly from 0 to 1 over int(this x cells) training "
                  "steps (scvi-tools: n_steps_kl_warmup = int(0.75 n_obs)); 0 = weight 1 "
                  "throughout")
            .at_least(0),
        ParamSpec("train_fraction", SCSSL_PARAM_FLOAT, "0.9",
                  "share of the cells trained on; the others give the validation ELBO "
                  "(train_size)")
            .above(0)
            .at_most(1),
        ParamSpec("early_stopping_patience", SCSSL_PARAM_INT, "45",
                  "stop after this many epochs without a better validation ELBO; 0 = never")
            .at_least(0),
        ParamSpec("plateau_patience", SCSSL_PARAM_INT, "30",
                  "multiply the learning rate by plateau_factor after more than this many epochs "
                  "without a better validation ELBO; 0 = never")
            .at_least(0),
        ParamSpec("plateau_factor", SCSSL_PARAM_FLOAT, "0.6",
                  "learning-rate factor of reduce-on-plateau (lr_factor)")
            .above(0)
            .below(1),
        ParamSpec("adam_eps", SCSSL_PARAM_FLOAT, "0.01", "Adam's epsilon (scvi-tools: 0.01)")
            .above(0),
        ParamSpec("epochs_rule", SCSSL_PARAM_STRING, "scvi",
                  "\"scvi\": at most min(round(20000 / cells x 400), 400) epochs, scvi-tools' "
                  "max_epochs heuristic (train.epochs is not used); \"config\": train.epochs")
            .one_of({"scvi", "config"}),
        {"embed_proteins", SCSSL_PARAM_BOOL, "true",
         "false: embed from RNA alone, the protein input zero (as scvi-tools gives cells without "
         "proteins), for the missing-modality task"},
    };
  }

  Totalvi(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        latent_(p.get_int("n_latent")),
        hidden_(p.get_int("n_hidden")),
        encoder_layers_(p.get_int("n_layers_encoder")),
        decoder_layers_(p.get_int("n_layers_decoder")),
        encoder_dropout_(p.get_float("dropout_encoder")),
        decoder_dropout_(p.get_float("dropout_decoder")),
        background_prior_(p.get_string("background_prior")),
        prior_cells_(p.get_int("prior_cells")),
        kl_warmup_per_cell_(p.get_float("kl_warmup_per_cell")),
        train_fraction_(p.get_float("train_fraction")),
        early_stopping_patience_(p.get_int("early_stopping_patience")),
        plateau_patience_(p.get_int("plateau_patience")),
        plateau_factor_(p.get_float("plateau_factor")),
        adam_eps_(p.get_float("adam_eps")),
        scvi_epochs_(p.get_string("epochs_rule") == "scvi"),
        embed_proteins_(p.get_bool("embed_proteins")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    check_modalities(train);
    const scssl::Matrix& rna = scssl::raw_counts(train, 0, "totalvi");
    const scssl::Matrix& protein = scssl::raw_counts(train, 1, "totalvi");
    const int64_t n = train.n_cells();
    const int64_t batches = scssl::batch_count(train);
    const torch::Tensor domains = domains_of(train, batches);

    torch::manual_seed(scssl::mix_seed(options.seed, kInitStream));
    build({rna.cols, protein.cols, batches, latent_, hidden_, encoder_layers_, decoder_layers_});
    init_prior(protein, domains, options.seed);
    {
      torch::NoGradGuard no_grad;
      net_->trained_batches.index_fill_(0, domains, 1);
    }

    scssl::LossTrainerOptions o;
    // scvi-tools' rule, rounding halves to even as Python's round().
    const double rule = std::min(std::nearbyint(20000.0 / static_cast<double>(n) * 400), 400.0);
    o.epochs = scvi_epochs_ ? std::max<int64_t>(1, static_cast<int64_t>(rule)) : options.epochs;
    o.adam_eps = adam_eps_;
    o.values = false;  // totalVI reads the counts alone
    o.counts = true;
    o.train_fraction = train_fraction_;
    o.monitor = "elbo";
    o.early_stopping_patience = early_stopping_patience_;
    o.plateau_patience = plateau_patience_;
    o.plateau_factor = plateau_factor_;
    const int64_t warmup = static_cast<int64_t>(kl_warmup_per_cell_ * static_cast<double>(n));
    host_.info("totalvi: " + std::to_string(n) + " cells, " + std::to_string(rna.cols) + " " +
               train.modalities[0].name + " and " + std::to_string(protein.cols) + " " +
               train.modalities[1].name + " features, " + std::to_string(batches) +
               " batch(es); at most " + std::to_string(o.epochs) + " epochs" +
               (scvi_epochs_ ? " (scvi-tools' rule)" : "") + ", KL warm-up over " +
               std::to_string(warmup) + " steps");
    scssl::LossTrainer trainer(host_, options, {0, 1}, o);
    device_ = trainer.device();
    trainer.fit(train, *net_, [&](const scssl::CellBatch& b) {
      const torch::Tensor d = b.domains.defined()
                                  ? b.domains
                                  : torch::zeros({b.cell_ids.size(0)}, torch::kInt64).to(device_);
      const CellTerms t = net_->terms(b.counts[0], b.counts[1], b.library[0], d, one_hot(d));
      const double kl_weight =
          warmup > 0 && b.step < warmup ? static_cast<double>(b.step) / warmup : 1.0;
      const torch::Tensor kl = t.kl_z + t.kl_background;
      const torch::Tensor reconstruction = t.rna + t.protein;
      scssl::StepLoss step{(reconstruction + kl_weight * kl).mean(), {}};
      torch::NoGradGuard no_grad;
      // The ELBO as scvi-tools reports it: every KL term at full weight.
      step.terms = {
          {"elbo", (reconstruction + kl).mean()},       {"reconstruction_rna", t.rna.mean()},
          {"reconstruction_protein", t.protein.mean()}, {"kl_z", t.kl_z.mean()},
          {"kl_background", t.kl_background.mean()},    {"kl_weight", torch::tensor(kl_weight)}};
      return step;
    });
  }

  // The posterior mean of every cell, in evaluation mode, 256 cells at a time.
  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("totalvi: embed() called before fit() or load()");
    check_modalities(data);
    const scssl::Matrix& rna = scssl::raw_counts(data, 0, "totalvi");
    const scssl::Matrix& protein = scssl::raw_counts(data, 1, "totalvi");
    if (rna.cols != shape_.genes || protein.cols != shape_.proteins)
      throw scssl::BadData("totalvi was trained on " + std::to_string(shape_.genes) + " + " +
                           std::to_string(shape_.proteins) + " features, but these cells have " +
                           std::to_string(rna.cols) + " + " + std::to_string(protein.cols));
    const torch::Tensor domains = domains_of(data, shape_.batches);
    torch::NoGradGuard no_grad;
    net_->eval();
    std::vector<torch::Tensor> blocks;
    constexpr int64_t kBlock = 256;
    for (int64_t begin = 0; begin < data.n_cells(); begin += kBlock) {
      const int64_t end = std::min(data.n_cells(), begin + kBlock);
      const torch::Tensor d = domains.slice(0, begin, end).to(device_);
      torch::Tensor proteins = protein.slice_dense(begin, end);
      if (!embed_proteins_) proteins.zero_();
      blocks.push_back(
          net_->posterior(rna.slice_dense(begin, end).to(device_), proteins.to(device_), one_hot(d))
              .first.cpu());
    }
    return blocks.empty() ? torch::zeros({0, shape_.latent}) : torch::cat(blocks, 0);
  }

  void save(const std::string& directory) const override {
    scssl::save_model(directory, "totalvi", net_.ptr(), shape_.values());
  }

  void load(const std::string& directory) override {
    scssl::SavedModel saved(directory, "totalvi");
    const std::vector<int64_t>& s = saved.shape();
    if (s.size() != 7) throw scssl::BadData("totalvi: '" + directory + "' holds another model");
    build({s[0], s[1], s[2], s[3], s[4], s[5], s[6]});
    saved.load_into(*net_);
    net_->eval();
  }

 private:
  static constexpr uint64_t kInitStream = 0x7074a1, kPriorStream = 0x7074a2;

  static void check_modalities(const scssl::CellData& data) {
    if (data.modalities.size() < 2)
      throw scssl::BadData(
          "totalvi needs a protein (ADT) modality next to RNA, but the data set has only "
          "modality '" +
          (data.modalities.empty() ? std::string() : data.modalities[0].name) + "'");
  }

  void build(const Shape& shape) {
    shape_ = shape;
    net_ = TotalviNet(shape, encoder_dropout_, decoder_dropout_);
    net_->to(device_);
  }

  // The prior of the log protein background, per protein and batch: scvi-tools' empirical
  // estimate (the same value for every protein of a batch), or N(0, 1) means with clamped N(0, 1)
  // log scales.
  void init_prior(const scssl::Matrix& protein, const torch::Tensor& domains, uint64_t seed) {
    torch::NoGradGuard no_grad;
    const bool empirical =
        background_prior_ == "empirical" || (background_prior_ == "auto" && shape_.proteins > 10);
    if (!empirical) {
      net_->prior_mean.copy_(torch::randn_like(net_->prior_mean));
      net_->prior_log_scale.copy_(torch::randn_like(net_->prior_log_scale).clamp(-10, 1));
      return;
    }
    const totalvi::BackgroundPrior prior = totalvi::empirical_background_prior(
        protein, domains, shape_.batches, prior_cells_, scssl::mix_seed(seed, kPriorStream));
    const torch::Tensor mean = torch::tensor(prior.mean, torch::kFloat64).to(torch::kFloat32);
    const torch::Tensor scale = torch::tensor(prior.scale, torch::kFloat64).to(torch::kFloat32);
    net_->prior_mean.copy_(mean.unsqueeze(0).expand_as(net_->prior_mean));
    net_->prior_log_scale.copy_(torch::log(scale).unsqueeze(0).expand_as(net_->prior_log_scale));
    std::string text;
    for (int64_t b = 0; b < shape_.batches; ++b)
      text +=
          (b ? ", " : "") + std::to_string(prior.mean[b]) + " +- " + std::to_string(prior.scale[b]);
    host_.info("totalvi: empirical prior of the log protein background per batch: " + text);
  }

  // The batch one-hot the network reads. A cell of a batch without training cells (a held-out
  // query), whose weights never trained, reads the mean one-hot of the trained batches instead:
  // with a single training batch its column is a constant input the network relies on.
  torch::Tensor one_hot(const torch::Tensor& domains) const {
    if (shape_.covariates() == 0) return {};
    const torch::Tensor& trained = net_->trained_batches;
    const torch::Tensor known = trained.index_select(0, domains).unsqueeze(1);
    return F::one_hot(domains, shape_.batches).to(torch::kFloat32) * known +
           (1 - known) * (trained / trained.sum());
  }

  int64_t latent_, hidden_, encoder_layers_, decoder_layers_;
  double encoder_dropout_, decoder_dropout_;
  std::string background_prior_;
  int64_t prior_cells_;
  double kl_warmup_per_cell_, train_fraction_;
  int64_t early_stopping_patience_, plateau_patience_;
  double plateau_factor_, adam_eps_;
  bool scvi_epochs_;
  bool embed_proteins_;

  torch::Device device_{torch::kCPU};
  Shape shape_{};
  TotalviNet net_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(Totalvi, "totalvi", "1.0.0",
             "totalVI: VAE of RNA + protein counts (NB and NB-mixture likelihoods; needs raw "
             "counts and a protein modality)")
