#include "scssl/losses.hpp"

namespace F = torch::nn::functional;

namespace scssl::losses {

namespace {
torch::Tensor normalize(const torch::Tensor& x) {
  return F::normalize(x, F::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
}
}  // namespace

torch::Tensor nt_xent(const torch::Tensor& z0, const torch::Tensor& z1, double temperature) {
  TORCH_CHECK(z0.size(0) >= 2, "NT-Xent needs at least 2 cells per batch");
  const int64_t n = z0.size(0);
  torch::Tensor a = normalize(z0), b = normalize(z1);
  // Rows 0..n-1 are view 0, n..2n-1 view 1; a row's positive is the same cell in the other view.
  torch::Tensor z = torch::cat({a, b}, 0);
  torch::Tensor sim = torch::matmul(z, z.t()) / temperature;
  // Drop each row's similarity with itself: 2N - 1 logits per row, as lightly.
  torch::Tensor self =
      torch::eye(2 * n, torch::TensorOptions().dtype(torch::kBool).device(z.device()));
  torch::Tensor logits = sim.masked_select(~self).view({2 * n, 2 * n - 1});
  // After removing the diagonal, the positive of row i < n sits at column n + i - 1, and the
  // positive of row n + i at column i.
  torch::Tensor idx =
      torch::arange(n, torch::TensorOptions().dtype(torch::kLong).device(z.device()));
  torch::Tensor target = torch::cat({idx + n - 1, idx}, 0);
  return F::cross_entropy(logits, target);
}

torch::Tensor info_nce(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& bank,
                       double temperature) {
  torch::Tensor qn = normalize(q), kn = normalize(k.detach()), bn = normalize(bank.detach());
  torch::Tensor positive = (qn * kn).sum(1, true);
  torch::Tensor negative = torch::matmul(qn, bn.t());
  torch::Tensor logits = torch::cat({positive, negative}, 1) / temperature;
  torch::Tensor target =
      torch::zeros({q.size(0)}, torch::TensorOptions().dtype(torch::kLong).device(q.device()));
  return F::cross_entropy(logits, target);
}

torch::Tensor negative_cosine(const torch::Tensor& a, const torch::Tensor& b) {
  return -F::cosine_similarity(a, b.detach(), F::CosineSimilarityFuncOptions().dim(1).eps(1e-8))
              .mean();
}

torch::Tensor vicreg(const torch::Tensor& za, const torch::Tensor& zb, double lambda, double mu,
                     double nu) {
  const int64_t n = za.size(0), d = za.size(1);
  TORCH_CHECK(n >= 2, "VICReg needs at least 2 cells per batch");
  torch::Tensor invariance = F::mse_loss(za, zb);
  // One covariance matrix per view gives both terms: its diagonal is the unbiased variance.
  auto variance_and_covariance = [&](const torch::Tensor& z) {
    torch::Tensor c = z - z.mean(0, true);
    torch::Tensor cov = torch::matmul(c.t(), c) / (n - 1);
    torch::Tensor var = cov.diagonal();
    return std::make_pair(torch::relu(1.0 - torch::sqrt(var + 1e-4)).mean(),
                          (cov.pow(2).sum() - var.pow(2).sum()) / d);
  };
  const auto [var_a, cov_a] = variance_and_covariance(za);
  const auto [var_b, cov_b] = variance_and_covariance(zb);
  return lambda * invariance + mu * 0.5 * (var_a + var_b) + nu * (cov_a + cov_b);
}

torch::Tensor barlow_twins(const torch::Tensor& za, const torch::Tensor& zb, double lambda_offdiag,
                           bool joint) {
  const int64_t n = za.size(0);
  // Standardised with the statistics of `rows`: BatchNorm in training mode, without affine.
  auto standardize = [](const torch::Tensor& z, const torch::Tensor& rows) {
    return (z - rows.mean(0, true)) / torch::sqrt(rows.var(0, /*unbiased=*/false, true) + 1e-5);
  };
  const torch::Tensor both = joint ? torch::cat({za, zb}, 0) : torch::Tensor();
  torch::Tensor c =
      torch::matmul(standardize(za, joint ? both : za).t(), standardize(zb, joint ? both : zb)) / n;
  torch::Tensor diag = torch::diag(c);
  torch::Tensor on = (1.0 - diag).pow(2).sum();
  torch::Tensor off = c.pow(2).sum() - diag.pow(2).sum();
  return on + lambda_offdiag * off;
}

torch::Tensor clip(const torch::Tensor& a, const torch::Tensor& b,
                   const torch::Tensor& logit_scale) {
  torch::Tensor logits = logit_scale.exp() * torch::matmul(normalize(a), normalize(b).t());
  torch::Tensor target =
      torch::arange(a.size(0), torch::TensorOptions().dtype(torch::kLong).device(a.device()));
  return 0.5 * (F::cross_entropy(logits, target) + F::cross_entropy(logits.t(), target));
}

MemoryBankImpl::MemoryBankImpl(int64_t size, int64_t dim) {
  bank_ = register_buffer("bank", normalize(torch::randn({size, dim})));
  pointer_ = register_buffer("pointer", torch::zeros({1}, torch::kLong));
}

void MemoryBankImpl::enqueue(const torch::Tensor& rows) {
  torch::NoGradGuard no_grad;
  const int64_t size = bank_.size(0);
  int64_t start = pointer_.item<int64_t>();
  const int64_t count = std::min(rows.size(0), size - start);
  bank_.slice(0, start, start + count).copy_(rows.slice(0, 0, count).detach());
  start += count;
  pointer_.fill_(start >= size ? 0 : start);
}

torch::Tensor MemoryBankImpl::nearest(const torch::Tensor& z) const {
  torch::Tensor sim = torch::matmul(normalize(z.detach()), normalize(bank_).t());
  return bank_.index_select(0, sim.argmax(1));
}

}  // namespace scssl::losses
