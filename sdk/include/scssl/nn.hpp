// Network pieces the methods share (docs/method-spec.md §0.2-0.3): the encoder ("backbone"),
// domain-specific batch normalisation, heads built from lightly-style blocks, gradient reversal.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace scssl::nn {

// Identity on the way forward; on the way back the gradient is multiplied by -scale. `scale` is a
// one-element tensor read when the gradient flows, not when the function is applied, so the
// caller may set it after seeing the discriminator loss (scButterfly lets the adversarial term
// reach the generator only while that loss is below a threshold). No gradient flows to `scale`.
class GradientReversal : public torch::autograd::Function<GradientReversal> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& scale) {
    ctx->saved_data["scale"] = scale;
    return x.clone();
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad) {
    const double scale = ctx->saved_data["scale"].toTensor().item<double>();
    return {grad[0] * -scale, torch::Tensor()};
  }
};

inline torch::Tensor reverse_gradient(const torch::Tensor& x, const torch::Tensor& scale) {
  return GradientReversal::apply(x, scale);
}

// BatchNorm1d, or one BatchNorm1d per batch (domain-specific BN) when n_domains > 1. Rows whose
// domain was never seen in training (e.g. a held-out query batch) are normalised in evaluation
// with the average of the trained domains' running statistics and affine weights.
class DomainBatchNormImpl : public torch::nn::Module {
 public:
  DomainBatchNormImpl(int64_t features, int64_t n_domains, bool affine = true, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& domains);

 private:
  torch::Tensor average_of_seen(const torch::Tensor& x);

  int64_t features_;
  bool affine_;
  double eps_;
  torch::nn::ModuleList norms_;
  torch::Tensor seen_;  // 1 for every domain that had rows in a training batch
};
TORCH_MODULE(DomainBatchNorm);

// x (G) -> Linear(G, hidden) -> BN -> ReLU -> Linear(hidden, h) -> BN -> Dropout(p).
// No activation after the second BN; linears keep their bias (docs/method-spec.md §0.2).
class EncoderImpl : public torch::nn::Module {
 public:
  EncoderImpl(int64_t in_features, int64_t hidden, int64_t out_features, double dropout,
              int64_t n_domains);
  // domains: int64 [b] batch codes, used only with domain-specific BN (may be undefined).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& domains);
  int64_t out_features() const { return out_features_; }

 private:
  int64_t out_features_;
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
  DomainBatchNorm bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(Encoder);

// One block of a projection/prediction head: Linear(in, out, bias = !batch_norm), then optional
// BatchNorm1d, then optional ReLU (lightly v1.5 semantics).
struct HeadBlock {
  int64_t in, out;
  bool batch_norm;
  bool relu;
  bool affine = true;  // BN affine (SimSiam's last BN has none)
};
torch::nn::Sequential make_head(const std::vector<HeadBlock>& blocks);

// Copies parameters and buffers of `from` into `to` (same architecture).
void copy_weights(torch::nn::Module& to, const torch::nn::Module& from);
// to <- m * to + (1 - m) * from, parameters only (BN running statistics are not averaged).
void momentum_update(torch::nn::Module& to, const torch::nn::Module& from, double m);
// Cosine schedule from `base` at epoch 0 towards 1 at `epochs` (MoCo/BYOL, stepped per epoch).
double cosine_momentum(double base, int64_t epoch, int64_t epochs);

// The weights of one post-norm transformer encoder layer (torch.nn.TransformerEncoderLayer with
// norm_first = false, a BERT layer): self-attention with the [q; k; v] input projection packed,
// add and LayerNorm, feed-forward (ReLU or erf GELU), add and LayerNorm.
struct PostNormLayer {
  torch::Tensor qkv_weight, qkv_bias, out_weight, out_bias;
  torch::Tensor norm1_weight, norm1_bias;
  torch::Tensor ff1_weight, ff1_bias, ff2_weight, ff2_bias;
  torch::Tensor norm2_weight, norm2_bias;
  int64_t heads = 1;
  bool gelu = false;
  double eps = 1e-5;  // of both LayerNorms
};

// True where the fused layers below may stand in for a module's own: evaluation mode, gradients
// off (the kernel has no backward and no dropout).
bool fused_inference_possible(const torch::nn::Module& module);

// `layers` applied in turn to x [B, L, d] through LibTorch's fused inference kernel
// (_transformer_encoder_layer_fwd); returns every layer's output [B, L, d]. `padding` [B, L]
// (true at padding, after the tokens of each row; undefined: none) is dropped by running on
// nested tensors, so padding costs nothing and its outputs are 0. Every row needs a token.
std::vector<torch::Tensor> fused_post_norm_layers(const torch::Tensor& x,
                                                  const torch::Tensor& padding,
                                                  const std::vector<PostNormLayer>& layers);

}  // namespace scssl::nn
