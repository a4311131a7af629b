// Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation of the two views' standardised
// projections is pushed towards the identity (docs/method-spec.md §7).
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class BarlowTwins final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    p.push_back(
        scssl::ParamSpec("factor", SCSSL_PARAM_INT, "4", "projection size = factor * hidden_dim")
            .at_least(1));
    p.push_back(scssl::ParamSpec("lambda_offdiag", SCSSL_PARAM_FLOAT, "0.005",
                                 "weight of the off-diagonal terms")
                    .at_least(0));
    p.push_back(scssl::ParamSpec("standardize", SCSSL_PARAM_STRING, "joint",
                                 "joint: both views with the statistics of their rows together "
                                 "(lightly, the study); each: every view by its own (the paper)")
                    .one_of({"joint", "each"}));
    return p;
  }
  BarlowTwins(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host),
        factor_(p.get_int("factor")),
        lambda_(p.get_float("lambda_offdiag")),
        joint_(p.get_string("standardize") == "joint") {}

 protected:
  int64_t projector_out(int64_t h) const override { return factor_ * h; }
  torch::nn::Sequential make_projector(int64_t h) override {
    const int64_t w = projector_out(h);
    return scssl::nn::make_head({{h, w, true, true}, {w, w, true, true}, {w, w, false, false}});
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    return scssl::losses::barlow_twins(online()->forward(b.view0, b.domains).z,
                                       online()->forward(b.view1, b.domains).z, lambda_, joint_);
  }

 private:
  int64_t factor_;
  double lambda_;
  bool joint_;
};

}  // namespace

SCSSL_PLUGIN(BarlowTwins, "barlowtwins", "1.0.0",
             "Barlow Twins: redundancy reduction of the cross-correlation")
