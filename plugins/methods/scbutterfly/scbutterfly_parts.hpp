// Parts of scButterfly (docs/method-spec.md §17, docs/methods/scbutterfly.md) kept apart from
// the plugin so that tests can check them on hand-made cases:
//  - the centred log-ratio that scButterfly applies to protein counts;
//  - the soft targets of the discriminators, drawn per cell;
//  - a gradient-reversal function, which lets one optimiser step train the discriminators to
//    tell encoder outputs from translated ones while the encoders and the translator learn to
//    fool them.
#pragma once

#include <torch/torch.h>

namespace scbutterfly {

// scButterfly's centred log-ratio of every row (cell) of non-negative protein counts: log(x / g)
// for the non-zero counts, g their geometric mean; zero counts stay 0. float64 in and out.
inline torch::Tensor centred_log_ratio(const torch::Tensor& counts) {
  const torch::Tensor nonzero = counts > 0;
  const torch::Tensor logs = torch::where(nonzero, counts.log(), torch::zeros_like(counts));
  const torch::Tensor centre = logs.sum(1, true) / nonzero.sum(1, true).clamp_min(1);
  return torch::where(nonzero, logs - centre, torch::zeros_like(counts));
}

// scButterfly's soft targets from uniform draws u in [0, 1): a draw above 0.8 is kept, one in
// (0.5, 0.8] becomes 0.8, one in (0.2, 0.5] becomes 0.2 and one at most 0.2 is kept. A target
// above 0.5 marks a cell whose real encoder output the discriminator sees; the others show it the
// translation from the other modality.
inline torch::Tensor soft_targets(const torch::Tensor& u) {
  return torch::where(u > 0.8, u,
                      torch::where(u > 0.5, torch::full_like(u, 0.8),
                                   torch::where(u > 0.2, torch::full_like(u, 0.2), u)));
}

// Identity on the way forward; on the way back the gradient is multiplied by -scale. `scale` is a
// one-element tensor read when the gradient flows, not when the function is applied, so the
// caller may set it after seeing the discriminator loss (scButterfly only lets the adversarial
// term reach the generator while that loss is below a threshold). No gradient flows to `scale`.
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

}  // namespace scbutterfly
