// NNCLR (Dwibedi et al., ICCV 2021): the positive of a view is its nearest neighbour in a support
// set of past projections; NT-Xent against the other view's prediction (docs/method-spec.md §4).
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class Nnclr final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    using scssl::ParamSpec;
    p.push_back(ParamSpec("temperature", SCSSL_PARAM_FLOAT, "0.5", "NT-Xent temperature").above(0));
    p.push_back(ParamSpec("bank_size", SCSSL_PARAM_INT, "2048", "support set size").at_least(1));
    p.push_back(ParamSpec("factor", SCSSL_PARAM_INT, "1", "projection size = hidden_dim / factor")
                    .at_least(1));
    p.push_back(scssl::clip_z_gradient_parameter());
    return p;
  }
  Nnclr(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host),
        temperature_(p.get_float("temperature")),
        bank_size_(p.get_int("bank_size")),
        factor_(p.get_int("factor")) {}

 protected:
  int64_t projector_out(int64_t h) const override { return std::max<int64_t>(1, h / factor_); }
  torch::nn::Sequential make_projector(int64_t h) override {
    return scssl::nn::make_head(
        {{h, h, true, true}, {h, h, true, true}, {h, projector_out(h), true, false}});
  }
  torch::nn::Sequential make_predictor(int64_t out) override {
    return scssl::nn::make_head(
        {{out, hidden_dim(), true, true}, {hidden_dim(), out, false, false}});
  }
  void build() override {
    bank_ = model().register_module("bank",
                                    scssl::losses::MemoryBank(bank_size_, fused_projector_out()));
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    scssl::ViewOutput o0 = online()->forward(b.view0, b.domains);
    scssl::ViewOutput o1 = online()->forward(b.view1, b.domains);
    // Neighbours are looked up in the bank as it was before this step.
    torch::Tensor nn0 = bank_->nearest(o0.z), nn1 = bank_->nearest(o1.z);
    last_z1_ = o1.z.detach();
    return 0.5 * (scssl::losses::nt_xent(nn0, o1.p, temperature_) +
                  scssl::losses::nt_xent(nn1, o0.p, temperature_));
  }
  void after_step(const scssl::TrainBatch&) override { bank_->enqueue(last_z1_); }
  // The reference's CLIP terms (docs/method-spec.md §0.5): every projection is replaced by its
  // support-set neighbour, and view 0's second modality is written before view 1 is looked up.
  std::array<std::vector<torch::Tensor>, 2> clip_z_stand_ins(const scssl::TrainBatch&,
                                                             const OnlineView& online) override {
    const std::vector<torch::Tensor>& z0 = online(0).z_each;
    std::array<std::vector<torch::Tensor>, 2> out;
    out[0] = {bank_->nearest(z0[0]), bank_->nearest(z0[1])};
    bank_->enqueue(z0[1]);
    const std::vector<torch::Tensor>& z1 = online(1).z_each;
    out[1] = {bank_->nearest(z1[0]), bank_->nearest(z1[1])};
    return out;
  }

 private:
  double temperature_;
  int64_t bank_size_;
  int64_t factor_;
  scssl::losses::MemoryBank bank_{nullptr};
  torch::Tensor last_z1_;
};

}  // namespace

SCSSL_PLUGIN(Nnclr, "nnclr", "1.0.0",
             "NNCLR: nearest-neighbour positives from a support set (NT-Xent)")
