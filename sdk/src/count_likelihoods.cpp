#include "scssl/count_likelihoods.hpp"

#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <tuple>

namespace scssl::likelihoods {

namespace {

// ---- the fused path
// ------------------------------------------------------------------------------ The generic
// formulas below cost about 40 tensor operations, forward and backward, over every (cell, gene) of
// a mini-batch, and ATen's digamma (the lgamma gradient) is a slow scalar loop: for scVI that was
// most of the step (docs/performance.md, "scVI"). A count is zero for most elements, where log NB
// needs neither lgamma nor digamma. So the common case (float32 on the CPU, [cells, genes] with
// theta per gene or per element) computes value and derivatives in one pass and hands the
// derivatives to autograd.

double digamma(double z) {  // z > 0: recurrence up to 6, then the asymptotic series
  double shift = 0;
  for (; z < 6; z += 1) shift -= 1 / z;
  const double f = 1 / (z * z);
  return shift + std::log(z) - 0.5 / z -
         f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))));
}

// What depends on theta alone: computed once per gene when theta is per gene.
struct ThetaTerms {
  float theta, log_theta, ratio, lgamma_theta, digamma_theta;
  ThetaTerms(float theta_, float eps)
      : theta(theta_),
        log_theta(std::log(theta_ + eps)),
        ratio(theta_ / (theta_ + eps)),
        lgamma_theta(std::lgamma(theta_)),
        digamma_theta(static_cast<float>(digamma(theta_))) {}
};

// Counts up to this size take exact sums instead of lgamma and digamma:
// lgamma(x + theta) - lgamma(theta) = log prod_{k<x} (theta + k) and
// digamma(x + theta) - digamma(theta) = sum_{k<x} 1 / (theta + k) for whole x.
constexpr int kSmallCount = 16;

// lgamma(x + 1) of the small counts.
const std::array<float, kSmallCount + 1>& log_factorials() {
  static const std::array<float, kSmallCount + 1> table = [] {
    std::array<float, kSmallCount + 1> t{};
    for (int k = 0; k <= kSmallCount; ++k) t[k] = static_cast<float>(std::lgamma(k + 1.0));
    return t;
  }();
  return table;
}

// The logarithms and logistic functions of a whole mini-batch, computed first by vectorised
// tensor operations: the per-element loop then needs no transcendental function except for
// nonzero counts.
struct Logs {
  torch::Tensor log_total;  // log(theta + mu + eps)
  torch::Tensor log_mu;     // log(mu + eps)
  // ZINB: softplus and sigmoid of -pi and of a = -pi + theta (log(theta + eps) - log_total)
  torch::Tensor softplus_neg_pi, sigmoid_neg_pi, softplus_a, sigmoid_a;
};

Logs batch_logs(const torch::Tensor& mu, const torch::Tensor& theta, const torch::Tensor& pi,
                double eps) {
  Logs l;
  l.log_total = torch::log(theta + mu + eps);
  l.log_mu = torch::log(mu + eps);
  if (pi.numel() > 0) {
    l.softplus_neg_pi = torch::softplus(-pi);
    l.sigmoid_neg_pi = torch::sigmoid(-pi);
    const torch::Tensor a = theta * (torch::log(theta + eps) - l.log_total) - pi;
    l.softplus_a = torch::softplus(a);
    l.sigmoid_a = torch::sigmoid(a);
  }
  return l;
}

struct Point {
  float value, d_mu, d_theta;
};

// log NB(x; mu, theta) and its derivatives in mu and theta, given lt = log(theta + mu + eps) and
// lm = log(mu + eps).
Point nb_point(float x, float mu, const ThetaTerms& k, float lt, float lm, float eps) {
  const float theta = k.theta;
  const float t = theta + mu + eps;
  Point p{theta * (k.log_theta - lt), -theta / t, k.log_theta + k.ratio - lt - theta / t};
  if (x == 0) return p;  // every x term vanishes at x = 0
  float gamma_ratio, digamma_difference, log_factorial;
  const int n = static_cast<int>(x);
  if (n == x && n <= kSmallCount) {
    double product = 1, reciprocals = 0;
    for (int j = 0; j < n; ++j) {
      product *= theta + j;
      reciprocals += 1.0 / (theta + j);
    }
    gamma_ratio = static_cast<float>(std::log(product));
    digamma_difference = static_cast<float>(reciprocals);
    log_factorial = log_factorials()[n];
  } else {
    gamma_ratio = std::lgamma(x + theta) - k.lgamma_theta;
    digamma_difference = static_cast<float>(digamma(x + theta)) - k.digamma_theta;
    log_factorial = std::lgamma(x + 1);
  }
  p.value += x * (lm - lt) + gamma_ratio - log_factorial;
  p.d_mu += x / (mu + eps) - x / t;
  p.d_theta += -x / t + digamma_difference;
  return p;
}

class FusedCountLikelihood : public torch::autograd::Function<FusedCountLikelihood> {
 public:
  // pi empty: NB; else ZINB (autograd needs every input defined). theta is [genes], [1, genes] or
  // [cells, genes].
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& mu, const torch::Tensor& theta,
                               const torch::Tensor& pi, double eps) {
    const int64_t rows = mu.size(0), cols = mu.size(1);
    const bool per_gene = theta.numel() == cols;
    const bool zinb = pi.numel() > 0;
    const torch::Tensor xc = x.contiguous(), mc = mu.contiguous(), tc = theta.contiguous();
    const torch::Tensor pc = zinb ? pi.contiguous() : torch::Tensor();
    torch::Tensor value = torch::empty({rows, cols}), d_mu = torch::empty({rows, cols}),
                  d_theta = torch::empty({rows, cols});
    torch::Tensor d_pi = zinb ? torch::empty({rows, cols}) : torch::Tensor();
    const float *xp = xc.data_ptr<float>(), *mp = mc.data_ptr<float>(), *tp = tc.data_ptr<float>(),
                *pp = zinb ? pc.data_ptr<float>() : nullptr;
    float *vp = value.data_ptr<float>(), *dmp = d_mu.data_ptr<float>(),
          *dtp = d_theta.data_ptr<float>(), *dpp = zinb ? d_pi.data_ptr<float>() : nullptr;
    const float e = static_cast<float>(eps);
    std::vector<ThetaTerms> genes;
    if (per_gene)
      for (int64_t g = 0; g < cols; ++g) genes.emplace_back(tp[g], e);
    const Logs logs = batch_logs(mc, per_gene ? tc.reshape({1, cols}) : tc, pc, eps);
    const float *ltp = logs.log_total.data_ptr<float>(), *lmp = logs.log_mu.data_ptr<float>();
    const float *sp_pi = zinb ? logs.softplus_neg_pi.data_ptr<float>() : nullptr,
                *sg_pi = zinb ? logs.sigmoid_neg_pi.data_ptr<float>() : nullptr,
                *sp_a = zinb ? logs.softplus_a.data_ptr<float>() : nullptr,
                *sg_a = zinb ? logs.sigmoid_a.data_ptr<float>() : nullptr;
    at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin * cols; i < end * cols; ++i) {
        const ThetaTerms k = per_gene ? genes[i % cols] : ThetaTerms(tp[i], e);
        if (zinb && xp[i] < e) {
          // A zero: log(sigmoid(pi) + sigmoid(-pi) NB(0)) = softplus(a) - softplus(-pi).
          const float t = k.theta + mp[i] + e;
          vp[i] = sp_a[i] - sp_pi[i];
          dmp[i] = sg_a[i] * (-k.theta / t);
          dtp[i] = sg_a[i] * (k.log_theta + k.ratio - ltp[i] - k.theta / t);
          dpp[i] = sg_pi[i] - sg_a[i];
          continue;
        }
        const Point p = nb_point(xp[i], mp[i], k, ltp[i], lmp[i], e);
        vp[i] = p.value;
        dmp[i] = p.d_mu;
        dtp[i] = p.d_theta;
        if (zinb) {  // a positive count: log(sigmoid(-pi)) + log NB(x)
          vp[i] += -sp_pi[i] - pp[i];
          dpp[i] = sg_pi[i] - 1;
        }
      }
    });
    ctx->save_for_backward({d_mu, d_theta, zinb ? d_pi : torch::Tensor()});
    ctx->saved_data["theta_sizes"] = theta.sizes().vec();
    return value;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& g = grad[0];
    const auto theta_sizes = ctx->saved_data["theta_sizes"].toIntVector();
    return {torch::Tensor(), g * saved[0], (g * saved[1]).sum_to_size(theta_sizes),
            saved[2].defined() ? g * saved[2] : torch::Tensor(), torch::Tensor()};
  }
};

// Whether the fused path computes these arguments.
bool fusable(const torch::Tensor& x, const torch::Tensor& mu, const torch::Tensor& theta,
             const torch::Tensor& pi) {
  auto plain = [](const torch::Tensor& t) {
    return t.scalar_type() == torch::kFloat32 && t.device().is_cpu();
  };
  if (mu.dim() != 2 || !x.sizes().equals(mu.sizes()) || x.requires_grad() || !plain(x) ||
      !plain(mu) || !plain(theta))
    return false;
  const int64_t genes = mu.size(1);
  const bool theta_ok = (theta.dim() == 1 && theta.size(0) == genes) ||
                        (theta.dim() == 2 && theta.size(0) == 1 && theta.size(1) == genes) ||
                        theta.sizes().equals(mu.sizes());
  return theta_ok && (!pi.defined() || (plain(pi) && pi.sizes().equals(mu.sizes())));
}

// The terms NB, ZINB and the mixture share: theta log(theta / (theta + mu)) and
// x log(mu / (theta + mu)), each with eps inside the logarithms as scvi-tools writes them.
struct NbTerms {
  torch::Tensor theta_part;
  torch::Tensor x_part;
};

NbTerms nb_terms(const torch::Tensor& x, const torch::Tensor& mu, const torch::Tensor& theta,
                 double eps) {
  const torch::Tensor log_theta_mu = torch::log(theta + mu + eps);
  return {theta * (torch::log(theta + eps) - log_theta_mu),
          x * (torch::log(mu + eps) - log_theta_mu)};
}

torch::Tensor lgamma_terms(const torch::Tensor& x, const torch::Tensor& theta) {
  return torch::lgamma(x + theta) - torch::lgamma(theta) - torch::lgamma(x + 1);
}

}  // namespace

torch::Tensor log_nb(const torch::Tensor& x, const torch::Tensor& mu, const torch::Tensor& theta,
                     double eps) {
  if (fusable(x, mu, theta, torch::Tensor()))
    return FusedCountLikelihood::apply(x, mu, theta, torch::empty({0}), eps);
  const NbTerms t = nb_terms(x, mu, theta, eps);
  return t.theta_part + t.x_part + lgamma_terms(x, theta);
}

torch::Tensor log_zinb(const torch::Tensor& x, const torch::Tensor& mu, const torch::Tensor& theta,
                       const torch::Tensor& pi_logit, double eps) {
  if (fusable(x, mu, theta, pi_logit))
    return FusedCountLikelihood::apply(x, mu, theta, pi_logit, eps);
  const NbTerms t = nb_terms(x, mu, theta, eps);
  const torch::Tensor softplus_neg_pi = torch::softplus(-pi_logit);
  // x = 0: log(sigmoid(pi) + sigmoid(-pi) NB(0)) = softplus(-pi + log NB(0)) - softplus(-pi).
  const torch::Tensor zero_case = torch::softplus(-pi_logit + t.theta_part) - softplus_neg_pi;
  // x > 0: log(sigmoid(-pi)) + log NB(x) = -softplus(-pi) - pi + log NB(x).
  const torch::Tensor positive_case =
      -softplus_neg_pi - pi_logit + t.theta_part + t.x_part + lgamma_terms(x, theta);
  return torch::where(x < eps, zero_case, positive_case);
}

torch::Tensor log_nb_mixture(const torch::Tensor& x, const torch::Tensor& mu1,
                             const torch::Tensor& mu2, const torch::Tensor& theta,
                             const torch::Tensor& pi_logit, double eps) {
  const torch::Tensor shared = lgamma_terms(x, theta);
  const NbTerms a = nb_terms(x, mu1, theta, eps), b = nb_terms(x, mu2, theta, eps);
  const torch::Tensor log_nb1 = a.theta_part + a.x_part + shared;
  const torch::Tensor log_nb2 = b.theta_part + b.x_part + shared;
  return torch::logsumexp(torch::stack({log_nb1, log_nb2 - pi_logit}), 0) -
         torch::softplus(-pi_logit);
}

torch::Tensor kl_standard_normal(const torch::Tensor& mu, const torch::Tensor& var) {
  return 0.5 * (var + mu * mu - 1 - torch::log(var));
}

torch::Tensor kl_normal(const torch::Tensor& mu_q, const torch::Tensor& var_q,
                        const torch::Tensor& mu_p, const torch::Tensor& var_p) {
  const torch::Tensor diff = mu_q - mu_p;
  return 0.5 * (torch::log(var_p) - torch::log(var_q) + (var_q + diff * diff) / var_p - 1);
}

}  // namespace scssl::likelihoods
