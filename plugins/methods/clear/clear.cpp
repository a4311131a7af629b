// CLEAR (Han et al., Briefings in Bioinformatics 2022): MoCo-style contrastive learning for
// scRNA-seq (docs/method-spec.md §8, docs/methods/clear.md). A key encoder follows the query
// encoder with a constant momentum, and a queue of past keys gives the negatives of InfoNCE. As
// in the original, there is no projection head by default: the encoder output itself is
// contrasted.
//
// CLEAR is a method of its own rather than an SslMethod because its options reach what SslMethod
// fixes: the encoder (the shared one with BatchNorm, or CLEAR's without), the network that embeds
// (query or key encoder, optionally L2-normalised) and the optimiser (Adam or CLEAR's SGD). With
// the defaults it trains and embeds exactly as the shared SSL skeleton did
// (docs/method-spec.md §0.2 and §0.4).
#include <algorithm>
#include <filesystem>

#include "scssl/losses.hpp"
#include "scssl/nn.hpp"
#include "scssl/ssl_method.hpp"
#include "scssl/training.hpp"

namespace {

namespace F = torch::nn::functional;

// The settings of the SSL methods that CLEAR has; it is unimodal and has no projector to keep.
const std::vector<std::string> kSharedSettings = {"hidden_dim", "encoder_hidden", "dropout", "dsbn",
                                                  "embedding_mode"};

struct Architecture {
  std::string encoder;  // "shared" | "original" | "no_bn"
  int64_t encoder_hidden, hidden_dim;
  double dropout;
  bool head;
};

// The encoders without BatchNorm: CLEAR's own, Linear -> ReLU -> Dropout twice, with a ReLU on
// the output ("original"), or the shared encoder's layers without its BatchNorms ("no_bn").
torch::nn::Sequential plain_encoder(const Architecture& a, int64_t genes) {
  torch::nn::Sequential s(torch::nn::Linear(genes, a.encoder_hidden), torch::nn::ReLU());
  if (a.encoder == "original") s->push_back(torch::nn::Dropout(a.dropout));
  s->push_back(torch::nn::Linear(a.encoder_hidden, a.hidden_dim));
  if (a.encoder == "original") s->push_back(torch::nn::ReLU());
  s->push_back(torch::nn::Dropout(a.dropout));
  return s;
}

// The query or the key network: an encoder, whose output is the embedding, and with head = "mlp"
// MoCo v2's head (Linear(h, h) -> ReLU -> Linear(h, h)), whose output InfoNCE compares.
class ClearNetImpl : public torch::nn::Module {
 public:
  ClearNetImpl(const Architecture& a, int64_t genes, int64_t n_domains) {
    if (a.encoder == "shared")
      shared_ = register_module("encoder", scssl::nn::Encoder(genes, a.encoder_hidden, a.hidden_dim,
                                                              a.dropout, n_domains));
    else
      plain_ = register_module("encoder", plain_encoder(a, genes));
    if (a.head)
      head_ = register_module("head",
                              scssl::nn::make_head({{a.hidden_dim, a.hidden_dim, false, true},
                                                    {a.hidden_dim, a.hidden_dim, false, false}}));
  }
  torch::Tensor encode(const torch::Tensor& x, const torch::Tensor& domains) {
    return shared_ ? shared_->forward(x, domains) : plain_->forward(x);
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& domains) {
    torch::Tensor h = encode(x, domains);
    return head_ ? head_->forward(h) : h;
  }

 private:
  scssl::nn::Encoder shared_{nullptr};
  torch::nn::Sequential plain_{nullptr}, head_{nullptr};
};
TORCH_MODULE(ClearNet);

torch::Tensor l2_normalized(const torch::Tensor& x) {
  return F::normalize(x, F::NormalizeFuncOptions().dim(1));
}

class Clear final : public scssl::IMethod {
 public:
  static uint64_t requirements() { return SCSSL_USES_AUGMENTATIONS; }
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    std::vector<ParamSpec> p;
    for (const ParamSpec& s : scssl::ssl_parameters())
      if (std::find(kSharedSettings.begin(), kSharedSettings.end(), s.name()) !=
          kSharedSettings.end())
        p.push_back(s);
    p.push_back(
        ParamSpec("temperature", SCSSL_PARAM_FLOAT, "0.2", "InfoNCE temperature (CLEAR: 0.2)")
            .above(0));
    p.push_back(ParamSpec("queue_size", SCSSL_PARAM_INT, "1024",
                          "negative keys kept in the queue (CLEAR: 1024, best a multiple of the "
                          "batch size)")
                    .at_least(1));
    p.push_back(ParamSpec("momentum", SCSSL_PARAM_FLOAT, "0.999",
                          "key encoder EMA, constant over training (CLEAR: 0.999)")
                    .at_least(0)
                    .at_most(1));
    p.push_back(ParamSpec("encoder", SCSSL_PARAM_STRING, "shared",
                          "shared: the SSL methods' encoder with BatchNorm; original: CLEAR's, "
                          "Linear-ReLU-Linear-ReLU without BatchNorm; no_bn: the shared one "
                          "without its BatchNorms")
                    .one_of({"shared", "original", "no_bn"}));
    p.push_back(ParamSpec("head", SCSSL_PARAM_STRING, "none",
                          "none: InfoNCE compares the encoder output (CLEAR); mlp: MoCo v2's "
                          "Linear-ReLU-Linear head in between")
                    .one_of({"none", "mlp"}));
    p.push_back(ParamSpec("embedding", SCSSL_PARAM_STRING, "query",
                          "the encoder that embeds: query, or key (the momentum encoder, CLEAR)")
                    .one_of({"query", "key"}));
    p.push_back({"normalize_embedding", SCSSL_PARAM_BOOL, "false",
                 "L2-normalise the embedding of every cell (CLEAR)"});
    p.push_back(ParamSpec("optimizer", SCSSL_PARAM_STRING, "adam",
                          "adam, or sgd with momentum (CLEAR: SGD, learning rate 5e-3)")
                    .one_of({"adam", "sgd"}));
    p.push_back(ParamSpec("sgd_momentum", SCSSL_PARAM_FLOAT, "0.9",
                          "momentum of optimizer = sgd (CLEAR: 0.9)")
                    .at_least(0)
                    .below(1));
    return p;
  }

  Clear(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        arch_{p.get_string("encoder"), p.get_int("encoder_hidden"), p.get_int("hidden_dim"),
              p.get_float("dropout"), p.get_string("head") == "mlp"},
        dsbn_(p.get_bool("dsbn")),
        bench_embedding_(p.get_string("embedding_mode") == "bench"),
        temperature_(p.get_float("temperature")),
        queue_size_(p.get_int("queue_size")),
        momentum_(p.get_float("momentum")),
        embed_with_key_(p.get_string("embedding") == "key"),
        normalize_embedding_(p.get_bool("normalize_embedding")) {
    if (dsbn_ && arch_.encoder != "shared")
      throw scssl::InvalidArgument(
          "clear: dsbn = true needs encoder = \"shared\", the encoder "
          "with BatchNorm, not \"" +
          arch_.encoder + "\"");
    if (p.get_string("optimizer") == "sgd") optimizer_.kind = scssl::OptimizerChoice::Kind::sgd;
    optimizer_.momentum = p.get_float("sgd_momentum");
  }

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    scssl::Trainer trainer(host_, options, {0}, optimizer_);
    device_ = trainer.device();
    build(train.modalities.at(0).X.cols, dsbn_ ? scssl::batch_count(train) : 1);
    scssl::TrainCallbacks callbacks;
    callbacks.loss = [this](const scssl::TrainBatch& b) { return step_loss(b); };
    // The queue changes only after the step: this batch's logits used the keys queued before it.
    callbacks.after_step = [this](const scssl::TrainBatch&) { queue_->enqueue(keys_); };
    trainer.fit(train, *model_, callbacks);
  }

  // In data order, blocks of 256 cells, in evaluation mode, or in training mode with
  // embedding_mode = "bench" (docs/method-spec.md §0.4).
  torch::Tensor embed(const scssl::CellData& data) override {
    if (!model_) throw scssl::InvalidArgument("clear: embed() called before fit() or load()");
    ClearNet& net = embed_with_key_ ? key_ : query_;
    const torch::Tensor domains = dsbn_ ? scssl::batch_codes(data) : torch::Tensor();
    const scssl::Matrix& x = data.modalities.at(0).X;
    torch::NoGradGuard no_grad;
    // In training mode BatchNorm also moves its running statistics: keep them, so that embedding
    // leaves the model as trained.
    std::vector<torch::Tensor> buffers;
    if (bench_embedding_)
      for (const auto& b : model_->buffers()) buffers.push_back(b.clone());
    net->train(bench_embedding_);
    std::vector<torch::Tensor> blocks;
    constexpr int64_t kBlock = 256;  // the reference's inference batch size
    for (int64_t begin = 0; begin < x.rows; begin += kBlock) {
      const torch::Tensor ids =
          torch::arange(begin, std::min(x.rows, begin + kBlock), torch::kInt64);
      const torch::Tensor d =
          domains.defined() ? domains.index_select(0, ids).to(device_) : torch::Tensor();
      torch::Tensor h = net->encode(x.rows_dense(ids).to(device_), d);
      blocks.push_back((normalize_embedding_ ? l2_normalized(h) : h).cpu());
    }
    net->eval();
    if (bench_embedding_) {
      const auto now = model_->buffers();
      for (size_t i = 0; i < buffers.size(); ++i) now[i].copy_(buffers[i]);
    }
    return torch::cat(blocks, 0);
  }

  void save(const std::string& directory) const override {
    if (!model_)
      throw scssl::InvalidArgument("clear: nothing to save, the method has not been trained");
    std::filesystem::create_directories(directory);
    torch::serialize::OutputArchive archive, weights;
    model_->save(weights);
    archive.write("weights", weights);
    archive.write("genes", torch::tensor(genes_));
    archive.write("n_domains", torch::tensor(n_domains_));
    archive.save_to(directory + "/model.pt");
  }

  void load(const std::string& directory) override {
    const std::string file = directory + "/model.pt";
    if (!std::filesystem::exists(file))
      throw scssl::IoError("clear: no saved model at '" + file + "'");
    torch::serialize::InputArchive archive, weights;
    archive.load_from(file);
    torch::Tensor genes, n_domains;
    archive.read("genes", genes);
    archive.read("n_domains", n_domains);
    build(genes.item<int64_t>(), n_domains.item<int64_t>());
    archive.read("weights", weights);
    model_->load(weights);
    model_->eval();
  }

 private:
  // The query network, its frozen copy (the key network) and the queue, in this order.
  void build(int64_t genes, int64_t n_domains) {
    genes_ = genes;
    n_domains_ = n_domains;
    model_ = std::make_shared<torch::nn::Module>("clear");
    query_ = model_->register_module("query", ClearNet(arch_, genes, n_domains));
    key_ = model_->register_module("key", ClearNet(arch_, genes, n_domains));
    scssl::nn::copy_weights(*key_, *query_);
    for (auto& p : key_->parameters()) p.set_requires_grad(false);
    queue_ =
        model_->register_module("queue", scssl::losses::MemoryBank(queue_size_, arch_.hidden_dim));
  }

  torch::Tensor step_loss(const scssl::TrainBatch& b) {
    // The key network moves first, then encodes the other view; its keys get no gradient.
    scssl::nn::momentum_update(*key_, *query_, momentum_);
    {
      torch::NoGradGuard no_grad;
      keys_ = l2_normalized(key_->forward(b.view1.at(0), b.domains));
    }
    return scssl::losses::info_nce(query_->forward(b.view0.at(0), b.domains), keys_,
                                   queue_->vectors(), temperature_);
  }

  Architecture arch_;
  bool dsbn_, bench_embedding_;
  double temperature_;
  int64_t queue_size_;
  double momentum_;
  bool embed_with_key_, normalize_embedding_;
  scssl::OptimizerChoice optimizer_;

  torch::Device device_{torch::kCPU};
  int64_t genes_ = 0, n_domains_ = 1;
  std::shared_ptr<torch::nn::Module> model_;
  ClearNet query_{nullptr}, key_{nullptr};
  scssl::losses::MemoryBank queue_{nullptr};
  torch::Tensor keys_;  // this step's normalised keys, queued in after_step
};

}  // namespace

SCSSL_PLUGIN(Clear, "clear", "1.1.0",
             "CLEAR: single-cell MoCo (InfoNCE against a queue of momentum-encoder keys)")
