// MoCo (He et al., CVPR 2020; v2 head): a momentum key network and a FIFO bank of negative keys;
// InfoNCE of the query view against its key and the bank (docs/method-spec.md §2).
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class Moco final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    using scssl::ParamSpec;
    p.push_back(ParamSpec("temperature", SCSSL_PARAM_FLOAT, "0.5", "InfoNCE temperature").above(0));
    p.push_back(
        ParamSpec("bank_size", SCSSL_PARAM_INT, "2048", "negative keys kept in the memory bank")
            .at_least(1));
    p.push_back(ParamSpec("momentum", SCSSL_PARAM_FLOAT, "0.996",
                          "key network EMA at epoch 0, rising to 1 by a cosine schedule")
                    .at_least(0)
                    .at_most(1));
    p.push_back(ParamSpec("momentum_epochs", SCSSL_PARAM_INT, "0",
                          "epochs the cosine schedule spans, then 1; 0: train.epochs (the "
                          "reference: 200 whatever it trained)")
                    .at_least(0));
    p.push_back(ParamSpec("factor", SCSSL_PARAM_INT, "1", "projection size = hidden_dim / factor")
                    .at_least(1));
    p.push_back(scssl::clip_z_gradient_parameter());
    return p;
  }
  Moco(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host),
        temperature_(p.get_float("temperature")),
        bank_size_(p.get_int("bank_size")),
        momentum_(p.get_float("momentum")),
        momentum_epochs_(p.get_int("momentum_epochs")),
        factor_(p.get_int("factor")) {}

 protected:
  int64_t projector_out(int64_t h) const override { return std::max<int64_t>(1, h / factor_); }
  torch::nn::Sequential make_projector(int64_t h) override {
    // MoCo v2 head: no batch norm, so both linears keep their bias.
    torch::nn::Sequential head;
    head->push_back(torch::nn::Linear(h, h));
    head->push_back(torch::nn::ReLU());
    head->push_back(torch::nn::Linear(h, projector_out(h)));
    return head;
  }
  void build() override {
    key_ = model().register_module("key", make_frozen_copy());
    bank_ = model().register_module("bank",
                                    scssl::losses::MemoryBank(bank_size_, fused_projector_out()));
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    follow_online(b);
    torch::Tensor q = online()->forward(b.view0, b.domains).z;
    torch::Tensor k;
    {
      torch::NoGradGuard no_grad;
      k = key_->forward(b.view1, b.domains).z;
    }
    torch::Tensor l = scssl::losses::info_nce(q, k, bank_->vectors(), temperature_);
    last_keys_ =
        torch::nn::functional::normalize(k, torch::nn::functional::NormalizeFuncOptions().dim(1));
    return l;
  }
  void after_step(const scssl::TrainBatch&) override { bank_->enqueue(last_keys_); }
  // The reference's CLIP terms (docs/method-spec.md §0.5): view 0's queries keep their gradient,
  // view 1 is the key network's.
  std::array<std::vector<torch::Tensor>, 2> clip_z_stand_ins(const scssl::TrainBatch& b,
                                                             const OnlineView&) override {
    follow_online(b);
    torch::NoGradGuard no_grad;
    return {std::vector<torch::Tensor>{}, key_->forward(b.view1, b.domains).z_each};
  }

 private:
  // The key network follows the query network before every step, parameters only, by a cosine
  // over momentum_epochs (or the epochs trained), then stays at 1 (docs/method-spec.md §0.7).
  void follow_online(const scssl::TrainBatch& b) {
    const int64_t span = momentum_epochs_ > 0 ? momentum_epochs_ : b.epochs;
    scssl::nn::momentum_update(
        *key_, *online(), scssl::nn::cosine_momentum(momentum_, std::min(b.epoch, span), span));
  }

  double temperature_;
  int64_t bank_size_;
  double momentum_;
  int64_t momentum_epochs_;
  int64_t factor_;
  scssl::SslNetwork key_{nullptr};
  scssl::losses::MemoryBank bank_{nullptr};
  torch::Tensor last_keys_;
};

}  // namespace

SCSSL_PLUGIN(Moco, "moco", "1.0.0",
             "MoCo: momentum key encoder and a memory bank of negatives (InfoNCE)")
