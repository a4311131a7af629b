#include "scssl/silhouette.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "scssl/params.hpp"

namespace scssl {

torch::Tensor silhouette_samples(const torch::Tensor& x_in, const torch::Tensor& codes_in,
                                 int64_t block_rows, const torch::Tensor& wanted) {
  if (x_in.dim() != 2) throw BadData("silhouette: the embedding must be a 2-D matrix");
  const int64_t n = x_in.size(0);
  if (codes_in.dim() != 1 || codes_in.size(0) != n)
    throw BadData("silhouette: need one cluster code per embedding row (" + std::to_string(n) +
                  " rows, " + std::to_string(codes_in.numel()) + " codes)");
  torch::Tensor result = torch::zeros({n}, torch::kFloat64);
  if (n == 0) return result;
  if (wanted.defined() && (wanted.dim() != 1 || wanted.size(0) != n))
    throw BadData("silhouette: the row selection must have one entry per embedding row");
  if (!torch::isfinite(x_in).all().item<bool>())
    throw BadData("silhouette: the embedding contains NaN or infinite values");

  // Cluster codes made contiguous (0..k-1) so per-cluster sums index a small table.
  torch::Tensor codes64 = codes_in.to(torch::kInt64).contiguous();
  if (codes64.min().item<int64_t>() < 0)
    throw BadData("silhouette: cluster codes must be >= 0 (drop cells with missing codes first)");
  torch::Tensor unique, dense;
  std::tie(unique, dense, std::ignore) =
      torch::_unique2(codes64, /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/false);
  const int64_t k = unique.numel();
  if (k < 2) return result;  // one cluster: silhouette undefined, 0 as in sklearn

  // Cells ordered by cluster, so each cluster is one contiguous range of distance columns.
  torch::Tensor order = torch::argsort(dense);
  torch::Tensor sorted_codes = dense.index_select(0, order);
  torch::Tensor counts_t = torch::bincount(sorted_codes, {}, k);
  std::vector<int64_t> counts(counts_t.data_ptr<int64_t>(), counts_t.data_ptr<int64_t>() + k);
  std::vector<int64_t> start(k + 1, 0);
  for (int64_t c = 0; c < k; ++c) start[c + 1] = start[c] + counts[c];

  // float64 throughout: the |a|^2 + |b|^2 - 2ab expansion cancels badly in float32 for close
  // points, and the reference values are float64. Centring first shrinks the norms that cancel.
  torch::Tensor x = x_in.to(torch::kFloat64).index_select(0, order);
  x = x - x.mean(0, /*keepdim=*/true);
  torch::Tensor sq = (x * x).sum(1);  // [n]

  if (block_rows <= 0) block_rows = std::clamp<int64_t>((int64_t{1} << 25) / n, 1, 1024);

  torch::Tensor s_sorted = torch::zeros({n}, torch::kFloat64);
  double* s = s_sorted.data_ptr<double>();
  const int64_t* own = sorted_codes.data_ptr<int64_t>();
  const double* sq_all = sq.data_ptr<double>();
  // Positions (in cluster order) whose silhouette is computed.
  const torch::Tensor positions =
      wanted.defined() ? torch::nonzero(wanted.to(torch::kBool).index_select(0, order)).flatten()
                       : torch::arange(n, torch::kInt64);
  const int64_t n_rows = positions.numel();
  const int64_t* position = positions.data_ptr<int64_t>();
  block_rows = std::min(block_rows, std::max<int64_t>(1, n_rows));
  // One product buffer for all blocks: a fresh block-sized allocation per block costs more in
  // page faults than the arithmetic on small machines.
  torch::Tensor buffer = torch::empty({block_rows, n}, torch::kFloat64);
  const torch::Tensor xt = x.t();
  for (int64_t r0 = 0; r0 < n_rows; r0 += block_rows) {
    const int64_t rows = std::min(block_rows, n_rows - r0);
    torch::Tensor gram = buffer.narrow(0, 0, rows);
    torch::mm_out(gram, wanted.defined() ? x.index_select(0, positions.narrow(0, r0, rows))
                                         : x.narrow(0, r0, rows),
                  xt);  // x_i.x_j by BLAS
    const double* G = gram.data_ptr<double>();
    at::parallel_for(0, rows, 8, [&](int64_t lo, int64_t hi) {
      std::vector<double> sums(k);
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t i = position[r0 + r];
        const int64_t ci = own[i];
        if (counts[ci] < 2) continue;  // singleton: s = 0
        const double* g = G + r * n;
        for (int64_t c = 0; c < k; ++c) {
          double total = 0.0;
          for (int64_t j = start[c]; j < start[c + 1]; ++j)
            total += std::sqrt(std::max(0.0, sq_all[i] + sq_all[j] - 2.0 * g[j]));
          sums[c] = total;
        }
        // A cell's distance to itself is exactly 0; rounding would otherwise add a tiny term.
        sums[ci] -= std::sqrt(std::max(0.0, 2.0 * sq_all[i] - 2.0 * g[i]));
        const double a = sums[ci] / static_cast<double>(counts[ci] - 1);
        double b = std::numeric_limits<double>::infinity();
        for (int64_t c = 0; c < k; ++c)
          if (c != ci) b = std::min(b, sums[c] / static_cast<double>(counts[c]));
        const double m = std::max(a, b);
        s[i] = m > 0 ? (b - a) / m : 0.0;  // a = b = 0 (duplicates): 0, as sklearn's nan_to_num
      }
    });
  }
  // Back to the caller's row order.
  result.index_copy_(0, order, s_sorted);
  return result;
}

}  // namespace scssl
