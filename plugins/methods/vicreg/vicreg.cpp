// VICReg (Bardes et al., ICLR 2022): invariance + variance + covariance regularisation of the two
// views' projections (docs/method-spec.md §6). Defaults are the reference's
// (lambda = mu = 5, nu = 1).
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class Vicreg final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    using scssl::ParamSpec;
    p.push_back(ParamSpec("factor", SCSSL_PARAM_INT, "4", "projection size = factor * hidden_dim")
                    .at_least(1));
    p.push_back(ParamSpec("lambda", SCSSL_PARAM_FLOAT, "5", "weight of the invariance (MSE) term")
                    .at_least(0));
    p.push_back(ParamSpec("mu", SCSSL_PARAM_FLOAT, "5", "weight of the variance term").at_least(0));
    p.push_back(
        ParamSpec("nu", SCSSL_PARAM_FLOAT, "1", "weight of the covariance term").at_least(0));
    return p;
  }
  Vicreg(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host),
        factor_(p.get_int("factor")),
        lambda_(p.get_float("lambda")),
        mu_(p.get_float("mu")),
        nu_(p.get_float("nu")) {}

 protected:
  int64_t projector_out(int64_t h) const override { return factor_ * h; }
  torch::nn::Sequential make_projector(int64_t h) override {
    return scssl::nn::make_head({{h, h, true, true}, {h, projector_out(h), false, false}});
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    return scssl::losses::vicreg(online()->forward(b.view0, b.domains).z,
                                 online()->forward(b.view1, b.domains).z, lambda_, mu_, nu_);
  }

 private:
  int64_t factor_;
  double lambda_, mu_, nu_;
};

}  // namespace

SCSSL_PLUGIN(Vicreg, "vicreg", "1.0.0", "VICReg: variance-invariance-covariance regularisation")
