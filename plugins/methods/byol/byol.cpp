// BYOL (Grill et al., NeurIPS 2020): the online network's prediction of one view matches a target
// network's projection of the other (docs/method-spec.md §5). The target follows the online network
// by EMA; target_update = "frozen" reproduces the scSSL-Bench code, whose target never moved.
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class Byol final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    p.push_back(scssl::ParamSpec("factor", SCSSL_PARAM_INT, "4", "head width = factor * hidden_dim")
                    .at_least(1));
    p.push_back(scssl::ParamSpec("target_update", SCSSL_PARAM_STRING, "ema",
                                 "ema (BYOL) | frozen (the reference's target stayed at its "
                                 "initialisation)")
                    .one_of({"ema", "frozen"}));
    p.push_back(scssl::ParamSpec("momentum", SCSSL_PARAM_FLOAT, "0.996",
                                 "target EMA at epoch 0, rising to 1 by a cosine schedule")
                    .at_least(0)
                    .at_most(1));
    p.push_back({"embed_predictor", SCSSL_PARAM_BOOL, "false",
                 "with keep_projector: embed the predictor's output, as the reference did"});
    p.push_back(scssl::clip_z_gradient_parameter());
    return p;
  }
  Byol(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host),
        factor_(p.get_int("factor")),
        ema_(p.get_string("target_update") == "ema"),
        momentum_(p.get_float("momentum")),
        embed_predictor_(p.get_bool("embed_predictor")) {}

 protected:
  int64_t projector_out(int64_t h) const override { return h; }
  torch::nn::Sequential make_projector(int64_t h) override {
    return scssl::nn::make_head({{h, factor_ * h, true, true}, {factor_ * h, h, false, false}});
  }
  torch::nn::Sequential make_predictor(int64_t out) override {
    const int64_t width = factor_ * hidden_dim();
    return scssl::nn::make_head({{out, width, true, true}, {width, out, false, false}});
  }
  void build() override { target_ = model().register_module("target", make_frozen_copy()); }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    follow_online(b);
    scssl::ViewOutput o0 = online()->forward(b.view0, b.domains);
    scssl::ViewOutput o1 = online()->forward(b.view1, b.domains);
    torch::Tensor t0, t1;
    {
      torch::NoGradGuard no_grad;
      t0 = target_->forward(b.view0, b.domains).z;
      t1 = target_->forward(b.view1, b.domains).z;
    }
    return 0.5 *
           (scssl::losses::negative_cosine(o0.p, t1) + scssl::losses::negative_cosine(o1.p, t0));
  }
  // The reference's CLIP terms (docs/method-spec.md §0.5): the target's projections.
  std::array<std::vector<torch::Tensor>, 2> clip_z_stand_ins(const scssl::TrainBatch& b,
                                                             const OnlineView&) override {
    follow_online(b);
    torch::NoGradGuard no_grad;
    return {target_->forward(b.view0, b.domains).z_each,
            target_->forward(b.view1, b.domains).z_each};
  }
  bool embed_predictor() const override { return embed_predictor_; }

 private:
  // The target moves before every step (docs/method-spec.md §5), unless frozen.
  void follow_online(const scssl::TrainBatch& b) {
    if (ema_)
      scssl::nn::momentum_update(*target_, *online(),
                                 scssl::nn::cosine_momentum(momentum_, b.epoch, b.epochs));
  }

  int64_t factor_;
  bool ema_;
  double momentum_;
  bool embed_predictor_;
  scssl::SslNetwork target_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(Byol, "byol", "1.0.0", "BYOL: online predictor against a momentum target network")
