#include "scssl/ssl_method.hpp"

#include <filesystem>
#include <optional>

#include "scssl/losses.hpp"

namespace fs = std::filesystem;

namespace scssl {

std::vector<scssl::ParamSpec> ssl_parameters() {
  return {
      ParamSpec("hidden_dim", SCSSL_PARAM_INT, "64",
                "embedding size h (encoder output); the study used 64")
          .at_least(1),
      ParamSpec("encoder_hidden", SCSSL_PARAM_INT, "128", "width of the encoder's first layer")
          .at_least(1),
      ParamSpec("dropout", SCSSL_PARAM_FLOAT, "0.0",
                "dropout after the encoder (ablations: 0.15, 0.2)")
          .at_least(0)
          .below(1),
      {"keep_projector", SCSSL_PARAM_BOOL, "false",
       "embed with the projector output instead of the encoder output (ablation)"},
      {"dsbn", SCSSL_PARAM_BOOL, "false",
       "domain-specific batch normalisation: one BatchNorm per batch in the encoder (ablation)"},
      {"multimodal", SCSSL_PARAM_BOOL, "false",
       "train on the first two modalities (e.g. RNA + ADT) with one encoder each"},
      ParamSpec("integrate", SCSSL_PARAM_STRING, "add",
                "multimodal fusion: add | mean | concat | clip (CLIP loss between the modalities)")
          .one_of({"add", "mean", "concat", "clip"}),
      {"predict_only_rna", SCSSL_PARAM_BOOL, "false",
       "multimodal: embed with the first modality's encoder only"},
      ParamSpec("embedding_mode", SCSSL_PARAM_STRING, "eval",
                "eval: BatchNorm's running statistics; bench: training mode, batch statistics of "
                "every 256 cells in data order, as the study embedded")
          .one_of({"eval", "bench"}),
  };
}

ParamSpec clip_z_gradient_parameter() {
  return {"clip_z_gradient", SCSSL_PARAM_BOOL, "true",
          "integrate = clip: the projector terms carry gradient; false: as the study, only the "
          "predictor terms (MoCo: the query term) do"};
}

SslNetworkImpl::SslNetworkImpl(const std::vector<int64_t>& in_features, int64_t encoder_hidden,
                               int64_t hidden_dim, double dropout, int64_t n_domains,
                               std::string integrate,
                               const std::function<torch::nn::Sequential(int64_t)>& make_projector,
                               const std::function<torch::nn::Sequential(int64_t)>& make_predictor)
    : integrate_(std::move(integrate)) {
  for (size_t m = 0; m < in_features.size(); ++m) {
    const std::string k = std::to_string(m);
    encoders_.push_back(register_module(
        "encoder" + k,
        nn::Encoder(in_features[m], encoder_hidden, hidden_dim, dropout, n_domains)));
    projectors_.push_back(register_module("projector" + k, make_projector(hidden_dim)));
    torch::nn::Sequential predictor = make_predictor(hidden_dim);
    if (!predictor->is_empty()) predictors_.push_back(register_module("predictor" + k, predictor));
  }
}

torch::Tensor SslNetworkImpl::fuse(const std::vector<torch::Tensor>& parts) const {
  if (parts.size() == 1) return parts[0];
  if (integrate_ == "add") return parts[0] + parts[1];
  if (integrate_ == "mean") return (parts[0] + parts[1]) / 2;
  return torch::cat(parts, 1);  // concat; clip embeds as concat too (docs/method-spec.md §0.5)
}

ViewOutput SslNetworkImpl::forward(const std::vector<torch::Tensor>& x,
                                   const torch::Tensor& domains) {
  ViewOutput out;
  std::vector<torch::Tensor> hs;
  for (size_t m = 0; m < encoders_.size(); ++m) {
    hs.push_back(encoders_[m]->forward(x.at(m), domains));
    out.z_each.push_back(projectors_[m]->forward(hs.back()));
    if (!predictors_.empty()) out.p_each.push_back(predictors_[m]->forward(out.z_each.back()));
  }
  out.h = fuse(hs);
  out.z = fuse(out.z_each);
  if (!out.p_each.empty()) out.p = fuse(out.p_each);
  return out;
}

torch::Tensor SslNetworkImpl::represent(const std::vector<torch::Tensor>& x,
                                        const torch::Tensor& domains, SslOutput output,
                                        bool only_first_modality) {
  std::vector<torch::Tensor> parts;
  const size_t n = only_first_modality ? 1 : encoders_.size();
  for (size_t m = 0; m < n; ++m) {
    torch::Tensor out = encoders_[m]->forward(x.at(m), domains);
    if (output != SslOutput::encoder) out = projectors_[m]->forward(out);
    if (output == SslOutput::predictor) out = predictors_.at(m)->forward(out);
    parts.push_back(out);
  }
  return fuse(parts);
}

SslMethod::SslMethod(const ParamSet& p, HostContext& host)
    : IMethod(host),
      hidden_dim_(p.get_int("hidden_dim")),
      encoder_hidden_(p.get_int("encoder_hidden")),
      dropout_(p.get_float("dropout")),
      keep_projector_(p.get_bool("keep_projector")),
      dsbn_(p.get_bool("dsbn")),
      multimodal_(p.get_bool("multimodal")),
      only_rna_(p.get_bool("predict_only_rna")),
      bench_embedding_(p.get_string("embedding_mode") == "bench"),
      clip_z_gradient_(!p.has("clip_z_gradient") || p.get_bool("clip_z_gradient")),
      integrate_(p.get_string("integrate")) {}

std::vector<int> SslMethod::used_modalities(const CellData& data) const {
  if (!multimodal_) return {0};
  if (data.modalities.size() < 2)
    throw BadData(
        "multimodal = true needs two modalities (e.g. RNA and ADT), but the data set has " +
        std::to_string(data.modalities.size()));
  return {0, 1};
}

std::vector<torch::Tensor> SslMethod::inputs(const CellData& data, const torch::Tensor& ids) const {
  std::vector<torch::Tensor> x;
  for (int m : used_modalities(data)) x.push_back(data.modalities[m].X.rows_dense(ids).to(device_));
  return x;
}

void SslMethod::build_networks(const std::vector<int64_t>& in_features, int64_t n_domains) {
  in_features_ = in_features;
  n_domains_ = n_domains;
  model_ = std::make_shared<torch::nn::Module>("ssl_model");
  online_ = model_->register_module(
      "online", SslNetwork(
                    in_features, encoder_hidden_, hidden_dim_, dropout_, n_domains, integrate_,
                    [this](int64_t h) { return make_projector(h); },
                    [this](int64_t h) { return make_predictor(projector_out(h)); }));
  if (integrate_ == "clip" && in_features.size() > 1)
    // CLIP's learnable temperature, initialised to log(1 / 0.07).
    logit_scale_ = model_->register_parameter("logit_scale", torch::full({1}, std::log(1 / 0.07)));
  build();
}

int64_t SslMethod::fused_projector_out() const {
  const int64_t out = projector_out(hidden_dim_);
  return integrate_ == "concat" && in_features_.size() > 1 ? out * 2 : out;
}

SslNetwork SslMethod::make_frozen_copy() {
  SslNetwork copy(
      in_features_, encoder_hidden_, hidden_dim_, dropout_, n_domains_, integrate_,
      [this](int64_t h) { return make_projector(h); },
      [this](int64_t h) { return make_predictor(projector_out(h)); });
  nn::copy_weights(*copy, *online_);
  for (auto& p : copy->parameters()) p.set_requires_grad(false);
  return copy;
}

std::array<std::vector<torch::Tensor>, 2> SslMethod::clip_z_stand_ins(const TrainBatch&,
                                                                      const OnlineView& online) {
  return {online(0).z_each, online(1).z_each};
}

torch::Tensor SslMethod::clip_loss(const TrainBatch& b) {
  // Each view runs through the online network at most once, and only when a term needs it (the
  // reference's MoCo never runs view 1 through it).
  std::array<std::optional<ViewOutput>, 2> outputs;
  const OnlineView online = [&](int view) -> const ViewOutput& {
    if (!outputs[view]) outputs[view] = online_->forward(view == 0 ? b.view0 : b.view1, b.domains);
    return *outputs[view];
  };
  std::array<std::vector<torch::Tensor>, 2> z;
  if (!clip_z_gradient_) z = clip_z_stand_ins(b, online);
  torch::Tensor total = torch::zeros({}, b.view0[0].options());
  for (int view = 0; view < 2; ++view) {
    for (auto& t : z[view]) t = t.detach();
    if (z[view].empty()) z[view] = online(view).z_each;
    total = total + losses::clip(z[view][0], z[view][1], logit_scale_);
    if (online_->has_predictor()) {
      const ViewOutput& o = online(view);
      total = total + losses::clip(o.p_each[0], o.p_each[1], logit_scale_);
    }
  }
  return total;
}

void SslMethod::fit(const CellData& train, const TrainOptions& options) {
  const std::vector<int> used = used_modalities(train);
  std::vector<int64_t> in_features;
  for (int m : used) in_features.push_back(train.modalities[m].X.cols);
  epochs_ = options.epochs;
  Trainer trainer(host_, options, used);
  device_ = trainer.device();
  build_networks(in_features, dsbn_ ? batch_count(train) : 1);
  TrainCallbacks callbacks;
  const bool clip = integrate_ == "clip" && used.size() > 1;
  callbacks.loss = [this, clip](const TrainBatch& b) { return clip ? clip_loss(b) : loss(b); };
  // With CLIP the method's own objective (and its banks / momentum updates) is not used.
  if (!clip) callbacks.after_step = [this](const TrainBatch& b) { after_step(b); };
  trainer.fit(train, *model_, callbacks);
}

torch::Tensor SslMethod::embed(const CellData& data) {
  if (!online_) throw InvalidArgument("embed() called before fit() or load()");
  const torch::Tensor domains = dsbn_ ? batch_codes(data) : torch::Tensor();
  torch::NoGradGuard no_grad;
  // In training mode BatchNorm also moves its running statistics: keep them, so that embedding
  // leaves the model as trained (and a saved model the same whatever was embedded).
  std::vector<torch::Tensor> buffers;
  if (bench_embedding_)
    for (const auto& b : model_->buffers()) buffers.push_back(b.clone());
  online_->train(bench_embedding_);
  const SslOutput output = !keep_projector_    ? SslOutput::encoder
                           : embed_predictor() ? SslOutput::predictor
                                               : SslOutput::projector;
  std::vector<torch::Tensor> blocks;
  constexpr int64_t kBlock = 256;  // the reference's inference batch size
  for (int64_t begin = 0; begin < data.n_cells(); begin += kBlock) {
    torch::Tensor ids =
        torch::arange(begin, std::min(data.n_cells(), begin + kBlock), torch::kInt64);
    torch::Tensor d =
        domains.defined() ? domains.index_select(0, ids).to(device_) : torch::Tensor();
    blocks.push_back(online_->represent(inputs(data, ids), d, output, only_rna_).cpu());
  }
  online_->eval();
  if (bench_embedding_) {
    const auto now = model_->buffers();
    for (size_t i = 0; i < buffers.size(); ++i) now[i].copy_(buffers[i]);
  }
  return torch::cat(blocks, 0);
}

void SslMethod::save(const std::string& directory) const {
  if (!model_) throw InvalidArgument("nothing to save: the method has not been trained");
  fs::create_directories(directory);
  torch::serialize::OutputArchive archive, weights;
  model_->save(weights);
  archive.write("weights", weights);
  archive.write("in_features", torch::tensor(in_features_, torch::kInt64));
  archive.write("n_domains", torch::tensor(n_domains_));
  archive.save_to(directory + "/model.pt");
}

void SslMethod::load(const std::string& directory) {
  const std::string file = directory + "/model.pt";
  if (!fs::exists(file)) throw IoError("no saved model at '" + file + "'");
  torch::serialize::InputArchive archive, weights;
  archive.load_from(file);
  torch::Tensor in_features, n_domains;
  archive.read("in_features", in_features);
  archive.read("n_domains", n_domains);
  build_networks(std::vector<int64_t>(in_features.data_ptr<int64_t>(),
                                      in_features.data_ptr<int64_t>() + in_features.numel()),
                 n_domains.item<int64_t>());
  archive.read("weights", weights);
  model_->load(weights);
  model_->eval();
}

}  // namespace scssl
