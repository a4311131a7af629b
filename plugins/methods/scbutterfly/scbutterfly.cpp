// scButterfly (Cao et al., Nature Communications 2024), its CITE-seq variant: dual-aligned
// variational autoencoders that translate between RNA and surface proteins (ADT)
// (docs/method-spec.md §17, docs/methods/scbutterfly.md).
//  - Each modality has an encoder (to latent_dim) and a mirrored decoder.
//  - Stage 1 pre-trains each modality's autoencoder alone, through a one-modality variational
//    translator that stage 2 does not use (stages "pretrain_rna", "pretrain_adt").
//  - Stage 2 ("translator") trains the joint translator: each modality's encoder output gets its
//    own Gaussian head onto a shared latent, from which both modalities are decoded, so every cell
//    is reconstructed four ways (RNA->RNA, ADT->RNA, RNA->ADT, ADT->ADT). One discriminator per
//    modality tells that modality's encoder output from the translation of the other modality,
//    and the encoders and the translator learn to fool it.
// The embedding is the RNA head's mean (evaluation mode), so RNA alone embeds a cell.
#include <algorithm>
#include <filesystem>

#include "scbutterfly_parts.hpp"
#include "scssl/loss_trainer.hpp"
#include "scssl/nn.hpp"
#include "scssl/training.hpp"

namespace {

namespace F = torch::nn::functional;

enum class Act { leaky_relu, identity, sigmoid };

torch::Tensor activate(Act act, const torch::Tensor& x) {
  switch (act) {
    case Act::leaky_relu:
      return F::leaky_relu(x);  // slope 0.01, PyTorch's default as in scButterfly
    case Act::sigmoid:
      return torch::sigmoid(x);
    case Act::identity:
      break;
  }
  return x;
}

// scButterfly's NetBlock: dropout on the input (its "noise rate"), then per layer Linear
// (Xavier-uniform weights) -> BatchNorm -> activation -> dropout, with no dropout after the last.
class NetBlockImpl : public torch::nn::Module {
 public:
  NetBlockImpl(const std::vector<int64_t>& dims, std::vector<Act> acts, double dropout,
               double input_dropout)
      : acts_(std::move(acts)),
        input_dropout_(register_module("input_dropout", torch::nn::Dropout(input_dropout))),
        dropout_(register_module("dropout", torch::nn::Dropout(dropout))) {
    for (size_t i = 0; i + 1 < dims.size(); ++i) {
      auto linear =
          register_module("linear" + std::to_string(i), torch::nn::Linear(dims[i], dims[i + 1]));
      torch::nn::init::xavier_uniform_(linear->weight);
      linears_.push_back(linear);
      norms_.push_back(
          register_module("norm" + std::to_string(i), torch::nn::BatchNorm1d(dims[i + 1])));
    }
  }
  torch::Tensor forward(torch::Tensor x) {
    x = input_dropout_(x);
    for (size_t i = 0; i < linears_.size(); ++i) {
      x = activate(acts_[i], norms_[i](linears_[i](x)));
      if (i + 1 < linears_.size()) x = dropout_(x);
    }
    return x;
  }

 private:
  std::vector<Act> acts_;
  torch::nn::Dropout input_dropout_, dropout_;
  std::vector<torch::nn::Linear> linears_;
  std::vector<torch::nn::BatchNorm1d> norms_;
};
TORCH_MODULE(NetBlock);

// One Linear -> BatchNorm -> LeakyReLU layer, the translators' building block.
NetBlock dense(int64_t in, int64_t out) {
  return NetBlock(std::vector<int64_t>{in, out}, std::vector<Act>{Act::leaky_relu}, 0, 0);
}

struct Latent {
  torch::Tensor mu, logvar, z;
};

// A modality's variational head: mean and log-variance (each a dense layer); z is drawn by
// reparameterisation while training and is the mean otherwise.
class GaussianHeadImpl : public torch::nn::Module {
 public:
  GaussianHeadImpl(int64_t in, int64_t latent)
      : mu_(register_module("mu", dense(in, latent))),
        logvar_(register_module("logvar", dense(in, latent))) {}
  Latent forward(const torch::Tensor& h, bool sample) {
    Latent l{mu_(h), logvar_(h), {}};
    l.z = sample ? l.mu + torch::randn_like(l.mu) * torch::exp(0.5 * l.logvar) : l.mu;
    return l;
  }

 private:
  NetBlock mu_, logvar_;
};
TORCH_MODULE(GaussianHead);

// KL(q(z|x) || N(0, I)), averaged over cells and latent dimensions (scButterfly's kl_mean).
torch::Tensor kl_mean(const Latent& l) {
  return -0.5 * torch::mean(1 + l.logvar - l.mu.pow(2) - l.logvar.exp());
}

// The pre-training translator of one modality (scButterfly's Single_Translator): a head and a
// dense layer from the latent back to the encoder's output space.
class SingleTranslatorImpl : public torch::nn::Module {
 public:
  SingleTranslatorImpl(int64_t width, int64_t latent)
      : head(register_module("head", GaussianHead(width, latent))),
        out(register_module("out", dense(latent, width))) {}
  GaussianHead head;
  NetBlock out;
};
TORCH_MODULE(SingleTranslator);

// The joint translator: a head per modality onto the shared latent, and a dense layer from the
// latent back to each modality's encoder space (scButterfly's RNA_decoder_l / ATAC_decoder_l).
class TranslatorImpl : public torch::nn::Module {
 public:
  TranslatorImpl(int64_t width, int64_t latent)
      : rna_head(register_module("rna_head", GaussianHead(width, latent))),
        adt_head(register_module("adt_head", GaussianHead(width, latent))),
        to_rna(register_module("to_rna", dense(latent, width))),
        to_adt(register_module("to_adt", dense(latent, width))) {}
  GaussianHead rna_head, adt_head;
  NetBlock to_rna, to_adt;
};
TORCH_MODULE(Translator);

// One discriminator per modality: Linear(latent_dim, 1) -> BatchNorm -> Sigmoid.
class DiscriminatorsImpl : public torch::nn::Module {
 public:
  explicit DiscriminatorsImpl(int64_t width)
      : rna(register_module(
            "rna", NetBlock(std::vector<int64_t>{width, 1}, std::vector<Act>{Act::sigmoid}, 0, 0))),
        adt(register_module("adt", NetBlock(std::vector<int64_t>{width, 1},
                                            std::vector<Act>{Act::sigmoid}, 0, 0))) {}
  NetBlock rna, adt;
};
TORCH_MODULE(Discriminators);

struct Architecture {
  int64_t genes = 0, proteins = 0, rna_hidden = 0, adt_hidden = 0, latent = 0;
  double dropout = 0, rna_input_dropout = 0, adt_input_dropout = 0;
};

class ButterflyImpl : public torch::nn::Module {
 public:
  explicit ButterflyImpl(const Architecture& a)
      : rna_encoder(register_module(
            "rna_encoder", NetBlock(std::vector<int64_t>{a.genes, a.rna_hidden, a.latent},
                                    std::vector<Act>{Act::leaky_relu, Act::leaky_relu}, a.dropout,
                                    a.rna_input_dropout))),
        adt_encoder(register_module(
            "adt_encoder", NetBlock(std::vector<int64_t>{a.proteins, a.adt_hidden, a.latent},
                                    std::vector<Act>{Act::leaky_relu, Act::leaky_relu}, a.dropout,
                                    a.adt_input_dropout))),
        rna_decoder(register_module(
            "rna_decoder",
            NetBlock(std::vector<int64_t>{a.latent, a.rna_hidden, a.genes},
                     std::vector<Act>{Act::leaky_relu, Act::leaky_relu}, a.dropout, 0))),
        // CLR values are signed: the ADT decoder ends without an activation (scButterfly CITE).
        adt_decoder(register_module(
            "adt_decoder",
            NetBlock(std::vector<int64_t>{a.latent, a.adt_hidden, a.proteins},
                     std::vector<Act>{Act::leaky_relu, Act::identity}, a.dropout, 0))),
        rna_pretrain(register_module("rna_pretrain", SingleTranslator(a.latent, a.latent))),
        adt_pretrain(register_module("adt_pretrain", SingleTranslator(a.latent, a.latent))),
        translator(register_module("translator", Translator(a.latent, a.latent))),
        discriminator(register_module("discriminator", Discriminators(a.latent))) {}

  NetBlock rna_encoder, adt_encoder, rna_decoder, adt_decoder;
  SingleTranslator rna_pretrain, adt_pretrain;
  Translator translator;
  Discriminators discriminator;
};
TORCH_MODULE(Butterfly);

// The parts one stage trains, under their names in the full model (the stage's checkpoint holds
// exactly these).
std::shared_ptr<torch::nn::Module> stage_model(
    const std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>& parts) {
  auto m = std::make_shared<torch::nn::Module>("scbutterfly");
  for (const auto& [name, part] : parts) m->register_module(name, part);
  return m;
}

// The centred log-ratio of the raw ADT counts of every cell of `data`, float32.
torch::Tensor centred_log_ratio(const scssl::CellData& data) {
  const scssl::Matrix& counts = scssl::raw_counts(data, 1, "scbutterfly (adt_input = \"clr\")");
  constexpr int64_t kBlock = 4096;
  std::vector<torch::Tensor> blocks;
  for (int64_t begin = 0; begin < counts.rows; begin += kBlock) {
    const torch::Tensor c =
        counts.slice_dense(begin, std::min(counts.rows, begin + kBlock)).to(torch::kFloat64);
    if (c.lt(0).any().item<bool>())
      throw scssl::BadData("scbutterfly: adt_input = \"clr\" needs raw counts, but modality '" +
                           data.modalities[1].name +
                           "' has negative ones (use adt_input = \"host\")");
    blocks.push_back(scbutterfly::centred_log_ratio(c).to(torch::kFloat32));
  }
  return torch::cat(blocks, 0);
}

class ScButterfly final : public scssl::IMethod {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_SECOND_MODALITY; }
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("rna_hidden", SCSSL_PARAM_INT, "256",
                  "hidden width of the RNA encoder and decoder (scButterfly: 256)")
            .at_least(1),
        ParamSpec("adt_hidden", SCSSL_PARAM_INT, "128",
                  "hidden width of the ADT encoder and decoder (scButterfly CITE: 128)")
            .at_least(1),
        ParamSpec("latent_dim", SCSSL_PARAM_INT, "128",
                  "size of the encoder outputs and of the shared latent, the embedding "
                  "(scButterfly: 128)")
            .at_least(1),
        ParamSpec("dropout", SCSSL_PARAM_FLOAT, "0.1",
                  "dropout after every encoder and decoder layer but the last")
            .at_least(0)
            .below(1),
        ParamSpec("rna_input_dropout", SCSSL_PARAM_FLOAT, "0.5",
                  "share of RNA inputs zeroed while training (scButterfly's R_noise_rate)")
            .at_least(0)
            .below(1),
        ParamSpec("adt_input_dropout", SCSSL_PARAM_FLOAT, "0",
                  "share of ADT inputs zeroed while training (scButterfly's A_noise_rate)")
            .at_least(0)
            .below(1),
        ParamSpec("adt_input", SCSSL_PARAM_STRING, "clr",
                  "clr: the centred log-ratio of the host's raw ADT counts (scButterfly); host: "
                  "the host's preprocessed ADT values")
            .one_of({"clr", "host"}),
        ParamSpec("rna_weight", SCSSL_PARAM_FLOAT, "1",
                  "weight of the two RNA reconstructions (RNA->RNA, ADT->RNA)")
            .at_least(0),
        ParamSpec("adt_weight", SCSSL_PARAM_FLOAT, "2",
                  "weight of the two ADT reconstructions (RNA->ADT, ADT->ADT; scButterfly CITE: 2)")
            .at_least(0),
        ParamSpec("adversarial_weight", SCSSL_PARAM_FLOAT, "1",
                  "weight of the discriminator loss that the encoders and translator maximise")
            .at_least(0),
        ParamSpec("adversarial_threshold", SCSSL_PARAM_FLOAT, "1.35",
                  "the encoders and translator fight the discriminators only in steps where the "
                  "discriminator loss is below this (scButterfly: 1.35)")
            .above(0),
        ParamSpec("discriminator_lr_factor", SCSSL_PARAM_FLOAT, "5",
                  "discriminator learning rate over train.learning_rate (scButterfly: 5e-3 / "
                  "1e-3)")
            .above(0),
        ParamSpec("rna_kl_scale", SCSSL_PARAM_FLOAT, "20",
                  "RNA KL weight times the number of genes (scButterfly: weight 20 / genes)")
            .at_least(0),
        ParamSpec("adt_kl_weight", SCSSL_PARAM_FLOAT, "0.006666666666666667",
                  "ADT KL weight (scButterfly CITE: 1/150); the translator stage weighs both KL "
                  "terms with the sum of the two weights")
            .at_least(0),
        ParamSpec("kl_warmup_epochs", SCSSL_PARAM_INT, "50",
                  "epochs over which every stage's KL weight rises linearly from 0")
            .at_least(0),
        ParamSpec("pretrain_rna_epochs", SCSSL_PARAM_INT, "100",
                  "epochs of RNA autoencoder pre-training, 0 to skip (the translator stage runs "
                  "train.epochs)")
            .at_least(0),
        ParamSpec("pretrain_adt_epochs", SCSSL_PARAM_INT, "100",
                  "epochs of ADT autoencoder pre-training, 0 to skip")
            .at_least(0),
        ParamSpec("validation_fraction", SCSSL_PARAM_FLOAT, "0.2",
                  "share of the training cells held out to watch the reconstruction loss "
                  "(scButterfly: 16 of 80 %)")
            .at_least(0)
            .below(1),
        ParamSpec("early_stopping_patience", SCSSL_PARAM_INT, "50",
                  "end a stage after this many epochs without a lower reconstruction loss on the "
                  "validation cells (on the training cells when there are none); 0 = never")
            .at_least(0),
        ParamSpec("embedding", SCSSL_PARAM_STRING, "rna",
                  "rna: the RNA head's mean (RNA alone suffices); adt: the ADT head's mean; "
                  "mean: their average")
            .one_of({"rna", "adt", "mean"}),
    };
  }

  ScButterfly(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        rna_input_dropout_(p.get_float("rna_input_dropout")),
        adt_input_dropout_(p.get_float("adt_input_dropout")),
        dropout_(p.get_float("dropout")),
        rna_hidden_(p.get_int("rna_hidden")),
        adt_hidden_(p.get_int("adt_hidden")),
        latent_dim_(p.get_int("latent_dim")),
        adt_clr_(p.get_string("adt_input") == "clr"),
        rna_weight_(p.get_float("rna_weight")),
        adt_weight_(p.get_float("adt_weight")),
        adversarial_weight_(p.get_float("adversarial_weight")),
        adversarial_threshold_(p.get_float("adversarial_threshold")),
        discriminator_lr_factor_(p.get_float("discriminator_lr_factor")),
        rna_kl_scale_(p.get_float("rna_kl_scale")),
        adt_kl_weight_(p.get_float("adt_kl_weight")),
        kl_warmup_epochs_(p.get_int("kl_warmup_epochs")),
        pretrain_rna_epochs_(p.get_int("pretrain_rna_epochs")),
        pretrain_adt_epochs_(p.get_int("pretrain_adt_epochs")),
        validation_fraction_(p.get_float("validation_fraction")),
        patience_(p.get_int("early_stopping_patience")),
        embedding_(p.get_string("embedding")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    if (train.modalities.size() < 2)
      throw scssl::BadData(
          "scbutterfly needs paired RNA and ADT (two modalities), but the data set has " +
          std::to_string(train.modalities.size()));
    device_ = scssl::parse_device(options.device);
    adt_ = adt_clr_ ? centred_log_ratio(train) : torch::Tensor();
    Architecture a = architecture();
    a.genes = train.modalities[0].X.cols;
    a.proteins = train.modalities[1].X.cols;
    build(a);
    // With CLR the ADT input comes from adt_, so the trainer densifies the RNA block only.
    const std::vector<int> modalities = adt_clr_ ? std::vector<int>{0} : std::vector<int>{0, 1};
    const double rna_kl = rna_kl_scale_ / static_cast<double>(a.genes);
    Butterfly& n = net_;

    if (pretrain_rna_epochs_ > 0) {
      scssl::LossTrainer trainer(host_, options, modalities,
                                 stage("pretrain_rna", pretrain_rna_epochs_));
      auto part = stage_model({{"rna_encoder", n->rna_encoder.ptr()},
                               {"rna_pretrain", n->rna_pretrain.ptr()},
                               {"rna_decoder", n->rna_decoder.ptr()}});
      trainer.fit(train, *part, [&](const scssl::CellBatch& b) {
        return pretrain_loss(n->rna_encoder, n->rna_pretrain, n->rna_decoder, b.x.at(0), rna_kl, b);
      });
    }
    if (pretrain_adt_epochs_ > 0) {
      scssl::LossTrainer trainer(host_, options, modalities,
                                 stage("pretrain_adt", pretrain_adt_epochs_));
      auto part = stage_model({{"adt_encoder", n->adt_encoder.ptr()},
                               {"adt_pretrain", n->adt_pretrain.ptr()},
                               {"adt_decoder", n->adt_decoder.ptr()}});
      trainer.fit(train, *part, [&](const scssl::CellBatch& b) {
        return pretrain_loss(n->adt_encoder, n->adt_pretrain, n->adt_decoder, adt_input(b),
                             adt_kl_weight_, b);
      });
    }
    scssl::LossTrainerOptions joint = stage("translator", 0);  // 0: train.epochs
    joint.learning_rate_factors = {{"discriminator", discriminator_lr_factor_}};
    scssl::LossTrainer trainer(host_, options, modalities, joint);
    auto part = stage_model({{"rna_encoder", n->rna_encoder.ptr()},
                             {"adt_encoder", n->adt_encoder.ptr()},
                             {"rna_decoder", n->rna_decoder.ptr()},
                             {"adt_decoder", n->adt_decoder.ptr()},
                             {"translator", n->translator.ptr()},
                             {"discriminator", n->discriminator.ptr()}});
    trainer.fit(train, *part, [&](const scssl::CellBatch& b) {
      return translator_loss(b, rna_kl + adt_kl_weight_);
    });
    net_->eval();
  }

  // The heads' means in evaluation mode, in data order, blocks of 256 cells.
  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("scbutterfly: embed() called before fit() or load()");
    const bool rna = embedding_ != "adt", adt = embedding_ != "rna";
    const scssl::Matrix& x_rna = data.modalities.at(0).X;
    if (x_rna.cols != arch_.genes)
      throw scssl::BadData("scbutterfly was trained on " + std::to_string(arch_.genes) +
                           " genes, but the data to embed has " + std::to_string(x_rna.cols));
    torch::Tensor x_adt;
    if (adt) {
      if (data.modalities.size() < 2)
        throw scssl::BadData("scbutterfly: embedding = \"" + embedding_ +
                             "\" needs the ADT modality, but the data to embed has only one");
      if (data.modalities[1].X.cols != arch_.proteins)
        throw scssl::BadData("scbutterfly was trained on " + std::to_string(arch_.proteins) +
                             " proteins, but the data to embed has " +
                             std::to_string(data.modalities[1].X.cols));
      x_adt =
          adt_clr_ ? centred_log_ratio(data) : data.modalities[1].X.slice_dense(0, data.n_cells());
    }
    torch::NoGradGuard no_grad;
    net_->eval();
    std::vector<torch::Tensor> blocks;
    constexpr int64_t kBlock = 256;
    for (int64_t begin = 0; begin < data.n_cells(); begin += kBlock) {
      const int64_t end = std::min(data.n_cells(), begin + kBlock);
      torch::Tensor mu_rna, mu_adt;
      if (rna)
        mu_rna = net_->translator
                     ->rna_head(net_->rna_encoder(x_rna.slice_dense(begin, end).to(device_)), false)
                     .mu;
      if (adt)
        mu_adt = net_->translator
                     ->adt_head(net_->adt_encoder(x_adt.slice(0, begin, end).to(device_)), false)
                     .mu;
      blocks.push_back((rna && adt ? 0.5 * (mu_rna + mu_adt) : rna ? mu_rna : mu_adt).cpu());
    }
    return torch::cat(blocks, 0);
  }

  void save(const std::string& directory) const override {
    if (!net_)
      throw scssl::InvalidArgument("scbutterfly: nothing to save, the method has not been trained");
    std::filesystem::create_directories(directory);
    torch::serialize::OutputArchive archive, weights;
    net_->save(weights);
    archive.write("weights", weights);
    archive.write("architecture", torch::tensor({arch_.genes, arch_.proteins, arch_.rna_hidden,
                                                 arch_.adt_hidden, arch_.latent}));
    archive.write("adt_clr", torch::tensor(static_cast<int64_t>(adt_clr_)));
    archive.save_to(directory + "/model.pt");
  }

  // The saved sizes and ADT input win over the parameters given now: they shaped the weights.
  void load(const std::string& directory) override {
    const std::string file = directory + "/model.pt";
    if (!std::filesystem::exists(file))
      throw scssl::IoError("scbutterfly: no saved model at '" + file + "'");
    torch::serialize::InputArchive archive, weights;
    archive.load_from(file);
    torch::Tensor sizes, clr;
    archive.read("architecture", sizes);
    archive.read("adt_clr", clr);
    Architecture a = architecture();
    a.genes = sizes[0].item<int64_t>();
    a.proteins = sizes[1].item<int64_t>();
    a.rna_hidden = sizes[2].item<int64_t>();
    a.adt_hidden = sizes[3].item<int64_t>();
    a.latent = sizes[4].item<int64_t>();
    adt_clr_ = clr.item<int64_t>() != 0;
    device_ = torch::kCPU;
    build(a);
    archive.read("weights", weights);
    net_->load(weights);
    net_->eval();
  }

 private:
  Architecture architecture() const {
    Architecture a;
    a.rna_hidden = rna_hidden_;
    a.adt_hidden = adt_hidden_;
    a.latent = latent_dim_;
    a.dropout = dropout_;
    a.rna_input_dropout = rna_input_dropout_;
    a.adt_input_dropout = adt_input_dropout_;
    return a;
  }

  void build(const Architecture& a) {
    arch_ = a;
    net_ = Butterfly(a);
    net_->to(device_);
  }

  scssl::LossTrainerOptions stage(const std::string& name, int64_t epochs) const {
    scssl::LossTrainerOptions o;
    o.stage = name;
    o.epochs = epochs;
    o.train_fraction = 1.0 - validation_fraction_;
    o.monitor = "reconstruction";
    o.early_stopping_patience = patience_;
    return o;
  }

  torch::Tensor adt_input(const scssl::CellBatch& b) const {
    return adt_clr_ ? adt_.index_select(0, b.cell_ids).to(device_) : b.x.at(1);
  }

  // Linear KL warm-up from 0 at a stage's first epoch to `weight` at kl_warmup_epochs.
  double warmed_up(double weight, int64_t epoch) const {
    return epoch < kl_warmup_epochs_
               ? weight * static_cast<double>(epoch) / static_cast<double>(kl_warmup_epochs_)
               : weight;
  }

  // One modality's autoencoder through its pre-training translator: MSE to the clean input plus
  // the warmed-up KL term.
  scssl::StepLoss pretrain_loss(NetBlock& encoder, SingleTranslator& translator, NetBlock& decoder,
                                const torch::Tensor& x, double kl_weight,
                                const scssl::CellBatch& b) const {
    const Latent l = translator->head(encoder(x), b.training);
    const torch::Tensor reconstruction = F::mse_loss(decoder(translator->out(l.z)), x);
    const torch::Tensor kl = kl_mean(l);
    return {reconstruction + warmed_up(kl_weight, b.epoch) * kl,
            {{"reconstruction", reconstruction}, {"kl", kl}}};
  }

  // The joint objective: four reconstructions, both KL terms and the discriminators. One
  // optimiser step serves both sides of the game: the discriminators minimise their BCE, and
  // through the gradient reversal the encoders and the translator get adversarial_weight times
  // the opposite gradient, in steps where that BCE is below adversarial_threshold.
  scssl::StepLoss translator_loss(const scssl::CellBatch& b, double kl_weight) {
    Butterfly& n = net_;
    const torch::Tensor x_rna = b.x.at(0), x_adt = adt_input(b);
    const torch::Tensor h_rna = n->rna_encoder(x_rna), h_adt = n->adt_encoder(x_adt);
    const Latent from_rna = n->translator->rna_head(h_rna, b.training);
    const Latent from_adt = n->translator->adt_head(h_adt, b.training);
    const torch::Tensor rna_to_rna = n->translator->to_rna(from_rna.z);
    const torch::Tensor rna_to_adt = n->translator->to_adt(from_rna.z);
    const torch::Tensor adt_to_rna = n->translator->to_rna(from_adt.z);
    const torch::Tensor adt_to_adt = n->translator->to_adt(from_adt.z);
    const torch::Tensor rna_reconstruction = F::mse_loss(n->rna_decoder(rna_to_rna), x_rna) +
                                             F::mse_loss(n->rna_decoder(adt_to_rna), x_rna);
    const torch::Tensor adt_reconstruction = F::mse_loss(n->adt_decoder(rna_to_adt), x_adt) +
                                             F::mse_loss(n->adt_decoder(adt_to_adt), x_adt);
    const torch::Tensor reconstruction =
        rna_weight_ * rna_reconstruction + adt_weight_ * adt_reconstruction;
    const torch::Tensor kl = kl_mean(from_rna) + kl_mean(from_adt);

    // Each cell shows a discriminator either the modality's encoder output (target > 0.5) or
    // the translation from the other modality, in the encoder's output space.
    const torch::Tensor targets =
        scbutterfly::soft_targets(torch::rand({x_rna.size(0)}, x_rna.options()));
    const torch::Tensor real = (targets > 0.5).unsqueeze(1);
    const torch::Tensor scale = torch::zeros({}, torch::kFloat64);
    auto judged = [&](NetBlock& discriminator, const torch::Tensor& encoded,
                      const torch::Tensor& translated) {
      const torch::Tensor shown =
          scssl::nn::reverse_gradient(torch::where(real, encoded, translated), scale);
      return F::binary_cross_entropy(discriminator(shown).view(-1), targets);
    };
    const torch::Tensor discriminator = judged(n->discriminator->adt, h_adt, rna_to_adt) +
                                        judged(n->discriminator->rna, h_rna, adt_to_rna);
    if (b.training && discriminator.item<double>() < adversarial_threshold_)
      scale.fill_(adversarial_weight_);
    return {reconstruction + warmed_up(kl_weight, b.epoch) * kl + discriminator,
            {{"reconstruction", reconstruction},
             {"rna_reconstruction", rna_reconstruction},
             {"adt_reconstruction", adt_reconstruction},
             {"kl", kl},
             {"discriminator", discriminator}}};
  }

  double rna_input_dropout_, adt_input_dropout_, dropout_;
  int64_t rna_hidden_, adt_hidden_, latent_dim_;
  bool adt_clr_;
  double rna_weight_, adt_weight_, adversarial_weight_, adversarial_threshold_;
  double discriminator_lr_factor_, rna_kl_scale_, adt_kl_weight_;
  int64_t kl_warmup_epochs_, pretrain_rna_epochs_, pretrain_adt_epochs_;
  double validation_fraction_;
  int64_t patience_;
  std::string embedding_;

  torch::Device device_{torch::kCPU};
  Architecture arch_;
  Butterfly net_{nullptr};
  torch::Tensor adt_;  // CLR values of the training cells (adt_input = "clr")
};

}  // namespace

SCSSL_PLUGIN(ScButterfly, "scbutterfly", "1.0.0",
             "scButterfly (CITE-seq): dual-aligned VAEs translating RNA <-> ADT; embeds the RNA "
             "latent mean")
