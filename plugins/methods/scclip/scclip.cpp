// scCLIP (Xiong et al., NeurIPS 2023 AI4Science workshop): one encoder per modality, trained so
// that a cell's RNA and protein (ADT) projections match each other and no other cell's: the
// symmetric CLIP loss with a fixed logit scale (docs/method-spec.md §11). Needs paired RNA + ADT
// data.
#include <algorithm>

#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

// The SslMethod settings that scCLIP decides itself; they are left out of its own schema.
const std::vector<std::string> kFixedByScclip = {"multimodal", "integrate", "predict_only_rna"};

// SslMethod's settings for scCLIP: the user's shared ones, both modalities, and the fusion of the
// two modalities' outputs that `embedding` asks for.
scssl::ParamSet shared_settings(const scssl::ParamSet& p) {
  const std::vector<scssl::ParamSpec> specs = scssl::ssl_parameters();
  scssl::ParamSet shared = scssl::ParamSet::defaults(specs, "scclip");
  for (const auto& [name, value] : p.values())
    if (shared.has(name)) shared.set(name, value);
  const std::string& embedding = p.get_string("embedding");
  shared.set("multimodal", true);
  shared.set("integrate", std::string(embedding == "mean" ? "mean" : "concat"));
  shared.set("predict_only_rna", embedding == "rna");
  return shared;
}

class Scclip final : public scssl::SslMethod {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_SECOND_MODALITY; }
  static std::vector<scssl::ParamSpec> parameters() {
    std::vector<scssl::ParamSpec> p;
    for (const scssl::ParamSpec& s : scssl::ssl_parameters()) {
      if (std::find(kFixedByScclip.begin(), kFixedByScclip.end(), s.name()) != kFixedByScclip.end())
        continue;
      p.push_back(s);
      // The original embeds the projected, normalised vectors of each modality.
      if (p.back().name() == std::string("keep_projector")) p.back().with_default("true");
    }
    p.push_back(
        scssl::ParamSpec("embedding", SCSSL_PARAM_STRING, "concat",
                         "concat | mean of the RNA and ADT outputs, or rna (the RNA encoder "
                         "only)")
            .one_of({"concat", "mean", "rna"}));
    p.push_back(scssl::ParamSpec("projection_dim", SCSSL_PARAM_INT, "128",
                                 "size of each modality's projection")
                    .at_least(1));
    p.push_back({"logit_scale", SCSSL_PARAM_FLOAT, "1.0",
                 "similarities are multiplied by exp(logit_scale) (scCLIP: 1, fixed)"});
    p.push_back({"learn_logit_scale", SCSSL_PARAM_BOOL, "false",
                 "train the logit scale too (scCLIP's requires_grad option)"});
    return p;
  }
  Scclip(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(shared_settings(p), host),
        projection_dim_(p.get_int("projection_dim")),
        initial_logit_scale_(p.get_float("logit_scale")),
        learn_logit_scale_(p.get_bool("learn_logit_scale")) {}

 protected:
  int64_t projector_out(int64_t) const override { return projection_dim_; }
  torch::nn::Sequential make_projector(int64_t h) override {
    // scCLIP's projection: one linear map without bias, then L2 normalisation.
    return torch::nn::Sequential(
        torch::nn::Linear(torch::nn::LinearOptions(h, projection_dim_).bias(false)),
        torch::nn::Functional([](const torch::Tensor& x) {
          return torch::nn::functional::normalize(
              x, torch::nn::functional::NormalizeFuncOptions().dim(1));
        }));
  }
  void build() override {
    // A parameter either way, so that checkpoints carry it; trained only when asked.
    logit_scale_ = model().register_parameter("logit_scale", torch::full({1}, initial_logit_scale_),
                                              learn_logit_scale_);
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    // scCLIP pairs the two modalities of a cell; it has no second augmented view.
    scssl::ViewOutput o = online()->forward(b.view0, b.domains);
    return scssl::losses::clip(o.z_each[0], o.z_each[1], logit_scale_);
  }

 private:
  int64_t projection_dim_;
  double initial_logit_scale_;
  bool learn_logit_scale_;
  torch::Tensor logit_scale_;
};

}  // namespace

SCSSL_PLUGIN(Scclip, "scclip", "1.0.0",
             "scCLIP: CLIP loss between an RNA encoder and an ADT encoder (needs RNA + ADT data)")
