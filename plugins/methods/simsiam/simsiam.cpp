// SimSiam (Chen & He, CVPR 2021): a predictor on one view matches the other view's projection
// under stop-gradient; no negatives (docs/method-spec.md §3).
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class SimSiam final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    p.push_back(scssl::ParamSpec("factor", SCSSL_PARAM_INT, "2",
                                 "projection size = hidden_dim / factor; predictor width = "
                                 "hidden_dim / (2 factor)")
                    .at_least(1));
    // With clip_z_gradient = false SslMethod's default stand-ins apply: the projections detached.
    p.push_back(scssl::clip_z_gradient_parameter());
    return p;
  }
  SimSiam(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host), factor_(p.get_int("factor")) {}

 protected:
  int64_t projector_out(int64_t h) const override { return std::max<int64_t>(1, h / factor_); }
  torch::nn::Sequential make_projector(int64_t h) override {
    const int64_t out = projector_out(h);
    return scssl::nn::make_head(
        {{h, h, true, true}, {h, h, true, true}, {h, out, true, false, /*affine=*/false}});
  }
  torch::nn::Sequential make_predictor(int64_t out) override {
    const int64_t width = std::max<int64_t>(1, hidden_dim() / (2 * factor_));
    return scssl::nn::make_head({{out, width, true, true}, {width, out, false, false}});
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    scssl::ViewOutput o0 = online()->forward(b.view0, b.domains);
    scssl::ViewOutput o1 = online()->forward(b.view1, b.domains);
    return 0.5 * (scssl::losses::negative_cosine(o1.p, o0.z) +
                  scssl::losses::negative_cosine(o0.p, o1.z));
  }

 private:
  int64_t factor_;
};

}  // namespace

SCSSL_PLUGIN(SimSiam, "simsiam", "1.0.0", "SimSiam: predictor + stop-gradient, no negatives")
