// Count likelihoods and Gaussian KL terms for the generative methods (docs/method-spec.md §12.2),
// in scvi-tools' parameterisation: mean mu > 0, inverse dispersion
// theta > 0 (variance mu + mu^2 / theta), zero-inflation and mixture weights as logits, and
// eps = 1e-8 inside every logarithm. Every function works elementwise on broadcastable tensors of
// any floating dtype and is differentiable in every argument but x.
#pragma once

#include <torch/torch.h>

namespace scssl::likelihoods {

constexpr double kEps = 1e-8;

// log NB(x; mu, theta) = theta (log(theta + eps) - log(theta + mu + eps))
//   + x (log(mu + eps) - log(theta + mu + eps)) + lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
torch::Tensor log_nb(const torch::Tensor& x, const torch::Tensor& mu, const torch::Tensor& theta,
                     double eps = kEps);

// Zero-inflated NB: with probability sigmoid(pi_logit) a structural zero, else NB(mu, theta);
// computed in log space with softplus (x < eps counts as a zero).
torch::Tensor log_zinb(const torch::Tensor& x, const torch::Tensor& mu, const torch::Tensor& theta,
                       const torch::Tensor& pi_logit, double eps = kEps);

// Two-component NB mixture with a shared theta (totalVI's protein background / foreground):
// sigmoid(pi_logit) NB(mu1, theta) + (1 - sigmoid(pi_logit)) NB(mu2, theta), as
// logsumexp(log NB1, log NB2 - pi_logit) - softplus(-pi_logit).
torch::Tensor log_nb_mixture(const torch::Tensor& x, const torch::Tensor& mu1,
                             const torch::Tensor& mu2, const torch::Tensor& theta,
                             const torch::Tensor& pi_logit, double eps = kEps);

// KL(N(mu, var) || N(0, 1)) per element.
torch::Tensor kl_standard_normal(const torch::Tensor& mu, const torch::Tensor& var);
// KL(N(mu_q, var_q) || N(mu_p, var_p)) per element.
torch::Tensor kl_normal(const torch::Tensor& mu_q, const torch::Tensor& var_q,
                        const torch::Tensor& mu_p, const torch::Tensor& var_p);

}  // namespace scssl::likelihoods
