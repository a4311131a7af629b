// SimCLR (Chen et al., ICML 2020): NT-Xent between the two views' projections, in-batch
// negatives (docs/method-spec.md §1).
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class SimClr final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    p.push_back(scssl::ParamSpec("temperature", SCSSL_PARAM_FLOAT, "0.5",
                                 "NT-Xent temperature (ablation 0.1 to 10)")
                    .above(0));
    p.push_back(
        scssl::ParamSpec("factor", SCSSL_PARAM_INT, "1", "projection size = hidden_dim / factor")
            .at_least(1));
    return p;
  }
  SimClr(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host),
        temperature_(p.get_float("temperature")),
        factor_(p.get_int("factor")) {}

 protected:
  int64_t projector_out(int64_t h) const override { return std::max<int64_t>(1, h / factor_); }
  torch::nn::Sequential make_projector(int64_t h) override {
    return scssl::nn::make_head({{h, h, true, true}, {h, projector_out(h), true, false}});
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    return scssl::losses::nt_xent(online()->forward(b.view0, b.domains).z,
                                  online()->forward(b.view1, b.domains).z, temperature_);
  }

 private:
  double temperature_;
  int64_t factor_;
};

}  // namespace

SCSSL_PLUGIN(SimClr, "simclr", "1.0.0", "SimCLR: contrastive NT-Xent with in-batch negatives")
