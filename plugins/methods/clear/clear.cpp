// CLEAR (Han et al., Briefings in Bioinformatics 2022): MoCo-style contrastive learning for
// scRNA-seq (docs/method-spec.md §8). A key encoder follows the query encoder with a constant
// momentum, and a queue of past keys gives the negatives of InfoNCE. As in the original, there is
// no projection head: the encoder output itself is contrasted.
#include "scssl/losses.hpp"
#include "scssl/ssl_method.hpp"

namespace {

class Clear final : public scssl::SslMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    auto p = scssl::ssl_parameters();
    using scssl::ParamSpec;
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
    return p;
  }
  Clear(const scssl::ParamSet& p, scssl::HostContext& host)
      : SslMethod(p, host),
        temperature_(p.get_float("temperature")),
        queue_size_(p.get_int("queue_size")),
        momentum_(p.get_float("momentum")) {}

 protected:
  int64_t projector_out(int64_t h) const override { return h; }
  torch::nn::Sequential make_projector(int64_t) override {
    return torch::nn::Sequential(torch::nn::Identity());
  }
  void build() override {
    key_encoder_ = model().register_module("key", make_frozen_copy());
    queue_ = model().register_module("queue",
                                     scssl::losses::MemoryBank(queue_size_, fused_projector_out()));
  }
  torch::Tensor loss(const scssl::TrainBatch& b) override {
    // The key encoder moves first, then encodes the other view; its keys get no gradient.
    scssl::nn::momentum_update(*key_encoder_, *online(), momentum_);
    {
      torch::NoGradGuard no_grad;
      keys_ =
          torch::nn::functional::normalize(key_encoder_->forward(b.view1, b.domains).z,
                                           torch::nn::functional::NormalizeFuncOptions().dim(1));
    }
    return scssl::losses::info_nce(online()->forward(b.view0, b.domains).z, keys_,
                                   queue_->vectors(), temperature_);
  }
  // The queue changes only after the step: this batch's logits used the keys queued before it.
  void after_step(const scssl::TrainBatch&) override { queue_->enqueue(keys_); }

 private:
  double temperature_;
  int64_t queue_size_;
  double momentum_;
  scssl::SslNetwork key_encoder_{nullptr};
  scssl::losses::MemoryBank queue_{nullptr};
  torch::Tensor keys_;  // this step's normalised keys, queued in after_step
};

}  // namespace

SCSSL_PLUGIN(Clear, "clear", "1.0.0",
             "CLEAR: single-cell MoCo (InfoNCE against a queue of momentum-encoder keys)")
