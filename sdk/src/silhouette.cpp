#include "scssl/silhouette.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "distance_tiles.hpp"
#include "scssl/params.hpp"
#include "scssl/plugin.hpp"

namespace scssl {

torch::Tensor silhouette_samples(const torch::Tensor& x_in, const torch::Tensor& codes_in,
                                 const torch::Tensor& wanted) {
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
  x = (x - x.mean(0, /*keepdim=*/true)).contiguous();
  const int64_t d = x.size(1);
  const double* rows = x.data_ptr<double>();
  const detail::ReferencePanels<double> all_cells(rows, n, d);

  torch::Tensor s_sorted = torch::zeros({n}, torch::kFloat64);
  double* s = s_sorted.data_ptr<double>();
  const int64_t* own = sorted_codes.data_ptr<int64_t>();
  // Positions (in cluster order) whose silhouette is computed.
  const torch::Tensor positions =
      wanted.defined() ? torch::nonzero(wanted.to(torch::kBool).index_select(0, order)).flatten()
                       : torch::arange(n, torch::kInt64);
  const int64_t n_rows = positions.numel();
  const int64_t* position = positions.data_ptr<int64_t>();
  constexpr int64_t kBlock = detail::QueryBlock<double>::kBlockRows;
  constexpr int64_t kPanel = detail::ReferencePanels<double>::kPanelCols;
  const int64_t n_blocks = (n_rows + kBlock - 1) / kBlock;
  at::parallel_for(0, n_blocks, 1, [&](int64_t block_lo, int64_t block_hi) {
    std::vector<double> tile(kBlock * kPanel), sums(kBlock * k), self(kBlock);
    detail::QueryBlock<double> block;
    for (int64_t b = block_lo; b < block_hi; ++b) {
      const int64_t first = b * kBlock;
      block.load(rows, d, first, std::min(kBlock, n_rows - first), position);
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int64_t p = 0; p < all_cells.panels(); ++p) {
        all_cells.squared_distances(block, p, tile.data());
        const int64_t begin = all_cells.panel_begin(p), end = begin + all_cells.panel_size(p);
        // The clusters overlapping this panel, each one contiguous run of columns.
        int64_t c = std::upper_bound(start.begin(), start.end(), begin) - start.begin() - 1;
        for (; c < k && start[c] < end; ++c) {
          const int64_t lo = std::max(start[c], begin), hi = std::min(start[c + 1], end);
          for (int64_t r = 0; r < block.count(); ++r)
            sums[r * k + c] += detail::sum_of_square_roots(&tile[r * kPanel + lo - begin], hi - lo);
        }
        for (int64_t r = 0; r < block.count(); ++r) {
          const int64_t i = position[first + r];
          if (i >= begin && i < end) self[r] = tile[r * kPanel + i - begin];
        }
      }
      for (int64_t r = 0; r < block.count(); ++r) {
        const int64_t i = position[first + r];
        const int64_t ci = own[i];
        if (counts[ci] < 2) continue;  // singleton: s = 0
        double* row_sums = &sums[r * k];
        // A cell's distance to itself is exactly 0; rounding would otherwise add a tiny term.
        row_sums[ci] -= std::sqrt(self[r]);
        const double a = row_sums[ci] / static_cast<double>(counts[ci] - 1);
        double nearest = std::numeric_limits<double>::infinity();
        for (int64_t c = 0; c < k; ++c)
          if (c != ci) nearest = std::min(nearest, row_sums[c] / static_cast<double>(counts[c]));
        const double m = std::max(a, nearest);
        s[i] = m > 0 ? (nearest - a) / m : 0.0;  // a = b = 0 (duplicates): 0, as sklearn's nan_to_num
      }
    }
  });
  // Back to the caller's row order.
  result.index_copy_(0, order, s_sorted);
  return result;
}

namespace {

// Names a silhouette by its rows and codes; the embedding is fixed while results are shared.
std::string silhouette_key(const torch::Tensor& rows, const torch::Tensor& codes) {
  auto bytes = [](const torch::Tensor& t) {
    const torch::Tensor c = t.to(torch::kInt64).contiguous();
    return std::hash<std::string_view>{}(std::string_view(static_cast<const char*>(c.data_ptr()),
                                                          c.numel() * sizeof(int64_t)));
  };
  return "silhouette_samples/" + std::to_string(rows.numel()) + "/" + std::to_string(bytes(rows)) +
         "/" + std::to_string(bytes(codes));
}

}  // namespace

torch::Tensor shared_silhouette_samples(const HostContext& host, const torch::Tensor& embedding,
                                        const torch::Tensor& rows, const torch::Tensor& codes,
                                        const torch::Tensor& wanted) {
  const std::string key = silhouette_key(rows, codes);
  if (torch::Tensor done = host.shared(key); done.defined()) return done;
  const bool complete = !wanted.defined() || wanted.all().item<bool>();
  torch::Tensor s = silhouette_samples(embedding.index_select(0, rows), codes,
                                       complete ? torch::Tensor() : wanted);
  if (complete) host.share(key, s);
  return s;
}

}  // namespace scssl
