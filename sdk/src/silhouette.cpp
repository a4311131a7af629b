#include "scssl/silhouette.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "distance_tiles.hpp"
#include "scssl/params.hpp"
#include "scssl/plugin.hpp"
#include "scssl/random.hpp"

namespace scssl {

namespace {

constexpr int64_t kBlock = detail::QueryBlock<double>::kBlockRows;
constexpr int64_t kPanel = detail::ReferencePanels<double>::kPanelCols;

// Cells in cluster order: cluster c holds the positions start[c] .. start[c + 1] - 1.
struct Clusters {
  int64_t k = 0;
  std::vector<int64_t> counts, start;
  const int64_t* own = nullptr;  // the cluster of each position

  // Calls f(c, lo, hi) for each cluster c overlapping positions [begin, end), clipped to them.
  template <class F>
  void each_in(int64_t begin, int64_t end, F f) const {
    int64_t c = std::upper_bound(start.begin(), start.end(), begin) - start.begin() - 1;
    for (; c < k && start[c] < end; ++c)
      f(c, std::max(start[c], begin), std::min(start[c + 1], end));
  }
  // s of a cell in cluster `ci` from its distance sums to every cluster (its own distance 0).
  double silhouette(const double* sums, int64_t ci) const {
    if (counts[ci] < 2) return 0.0;  // singleton: s = 0
    const double a = sums[ci] / static_cast<double>(counts[ci] - 1);
    double b = std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < k; ++c)
      if (c != ci) b = std::min(b, sums[c] / static_cast<double>(counts[c]));
    const double m = std::max(a, b);
    return m > 0 ? (b - a) / m : 0.0;  // a = b = 0 (duplicates): 0, as sklearn's nan_to_num
  }
};

// The silhouettes of the cells at `positions` (cluster order) against all n cells: every row's
// distances are summed in a fixed order. Costs |positions| x n distances.
void silhouettes_of_rows(const double* x, int64_t n, int64_t d, const Clusters& clusters,
                         const int64_t* position, int64_t n_rows, double* s) {
  const detail::ReferencePanels<double> all_cells(x, n, d);
  const int64_t k = clusters.k;
  at::parallel_for(0, (n_rows + kBlock - 1) / kBlock, 1, [&](int64_t block_lo, int64_t block_hi) {
    std::vector<double> tile(kBlock * kPanel), sums(kBlock * k);
    detail::QueryBlock<double> block;
    for (int64_t b = block_lo; b < block_hi; ++b) {
      const int64_t first = b * kBlock;
      block.load(x, d, first, std::min(kBlock, n_rows - first), position);
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int64_t p = 0; p < all_cells.panels(); ++p) {
        all_cells.squared_distances(block, p, tile.data());
        const int64_t begin = all_cells.panel_begin(p), width = all_cells.panel_size(p);
        for (int64_t r = 0; r < block.count(); ++r) {
          double* row = &tile[r * kPanel];
          // A cell's distance to itself is exactly 0; rounding would otherwise add a tiny term.
          const int64_t self = position[first + r] - begin;
          if (self >= 0 && self < width) row[self] = 0.0;
          detail::square_roots(row, width);
        }
        clusters.each_in(begin, begin + width, [&](int64_t c, int64_t lo, int64_t hi) {
          for (int64_t r = 0; r < block.count(); ++r)
            sums[r * k + c] += detail::sum(&tile[r * kPanel + lo - begin], hi - lo);
        });
      }
      for (int64_t r = 0; r < block.count(); ++r) {
        const int64_t i = position[first + r];
        s[i] = clusters.silhouette(&sums[r * k], clusters.own[i]);
      }
    }
  });
}

// The tensor path (docs/performance.md, "Distance kernels"): the silhouettes of the cells at
// `positions` as LibTorch float64 operations on `device`: each block of rows' distances to all n
// cells, summed per cluster by one product with the cells' cluster-membership matrix. x: float64
// [n, d] on the CPU, in cluster order; codes: int64 [n], the cluster of each position.
void silhouettes_with_tensors(const torch::Tensor& x, const torch::Tensor& codes,
                              const Clusters& clusters, const torch::Tensor& positions, double* s,
                              const torch::Device& device) {
  const int64_t n = x.size(0), k = clusters.k, n_rows = positions.numel();
  const torch::Tensor all = x.to(device);
  const torch::Tensor all_sq = all.pow(2).sum(1);
  const torch::Tensor members = torch::one_hot(codes.to(device), k).to(torch::kFloat64);
  // Blocks of about 2^27 distances (1 GiB) on a GPU, 2^23 on the CPU.
  const int64_t budget = int64_t{1} << (device.is_cpu() ? 23 : 27);
  const int64_t rows = std::clamp<int64_t>(budget / n, 1, 8192);
  const int64_t* position = positions.data_ptr<int64_t>();
  for (int64_t first = 0; first < n_rows; first += rows) {
    const int64_t count = std::min(rows, n_rows - first);
    const torch::Tensor at = positions.slice(0, first, first + count).to(device);
    torch::Tensor d2 = torch::addmm(all_sq.index_select(0, at).unsqueeze(1) + all_sq.unsqueeze(0),
                                    all.index_select(0, at), all.t(), 1.0, -2.0);
    // A cell's distance to itself is exactly 0; rounding would otherwise add a tiny term.
    d2.clamp_min_(0.0).scatter_(1, at.unsqueeze(1), 0.0);
    const torch::Tensor sums = d2.sqrt_().mm(members).to(torch::kCPU).contiguous();
    const double* sum = sums.data_ptr<double>();
    for (int64_t r = 0; r < count; ++r) {
      const int64_t i = position[first + r];
      s[i] = clusters.silhouette(sum + r * k, clusters.own[i]);
    }
  }
}

// Sums accumulated as 64-bit fixed-point integers: exact integer additions, so the total does
// not depend on the order the parts arrive in (here: which thread handled which tile).
class FixedPoint {
 public:
  // Every total will be at most `largest_total` (>= 0).
  explicit FixedPoint(double largest_total)
      : scale_(largest_total > 0 ? std::ldexp(1.0, 62 - std::ilogb(largest_total) - 1) : 1.0) {}
  int64_t to_fixed(double value) const { return static_cast<int64_t>(value * scale_ + 0.5); }
  double to_double(int64_t fixed) const { return static_cast<double>(fixed) / scale_; }

 private:
  double scale_;
};

// The silhouettes of all n cells, each pair's distance computed once: a tile of rows i and
// columns j > i adds to i's sums along its rows and to j's sums along its columns. Row blocks are
// paired from both ends so that every task has the same work.
// `largest_sq` is the largest squared norm of a row.
void silhouettes_of_all(const double* x, int64_t n, int64_t d, double largest_sq,
                        const Clusters& clusters, double* s) {
  const detail::ReferencePanels<double> all_cells(x, n, d);
  const int64_t k = clusters.k;
  const FixedPoint fixed(static_cast<double>(n) * 2.0 *
                         std::sqrt(largest_sq));  // |xi - xj| <= |xi| + |xj|
  std::vector<int64_t> total(n * k, 0);
  std::mutex merge;
  const int64_t n_blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, (n_blocks + 1) / 2, 1, [&](int64_t pair_lo, int64_t pair_hi) {
    std::vector<int64_t> sums(n * k, 0);
    std::vector<double> tile(kBlock * kPanel), columns(kPanel);
    detail::QueryBlock<double> block;
    auto add_block = [&](int64_t b) {
      const int64_t first = b * kBlock, rows = std::min(kBlock, n - first);
      block.load(x, d, first, rows);
      for (int64_t p = first / kPanel; p < all_cells.panels(); ++p) {
        all_cells.squared_distances(block, p, tile.data());
        const int64_t begin = all_cells.panel_begin(p), width = all_cells.panel_size(p);
        for (int64_t r = 0; r < rows; ++r) {
          double* row = &tile[r * kPanel];
          // Only pairs j > i: the others are counted from the other side (or are i itself).
          std::fill(row, row + std::clamp<int64_t>(first + r - begin + 1, 0, width), 0.0);
          detail::square_roots(row, width);
        }
        clusters.each_in(begin, begin + width, [&](int64_t c, int64_t lo, int64_t hi) {
          for (int64_t r = 0; r < rows; ++r)
            sums[(first + r) * k + c] +=
                fixed.to_fixed(detail::sum(&tile[r * kPanel + lo - begin], hi - lo));
        });
        clusters.each_in(first, first + rows, [&](int64_t c, int64_t lo, int64_t hi) {
          detail::column_sums(&tile[(lo - first) * kPanel], kPanel, hi - lo, width, columns.data());
          for (int64_t j = 0; j < width; ++j)
            sums[(begin + j) * k + c] += fixed.to_fixed(columns[j]);
        });
      }
    };
    for (int64_t pair = pair_lo; pair < pair_hi; ++pair) {
      add_block(pair);
      if (n_blocks - 1 - pair != pair) add_block(n_blocks - 1 - pair);
    }
    std::lock_guard<std::mutex> hold(merge);
    for (int64_t e = 0; e < n * k; ++e) total[e] += sums[e];
  });
  at::parallel_for(0, n, 1024, [&](int64_t lo, int64_t hi) {
    std::vector<double> row_sums(k);
    for (int64_t i = lo; i < hi; ++i) {
      for (int64_t c = 0; c < k; ++c) row_sums[c] = fixed.to_double(total[i * k + c]);
      s[i] = clusters.silhouette(row_sums.data(), clusters.own[i]);
    }
  });
}

}  // namespace

torch::Tensor silhouette_samples(const torch::Tensor& x_in, const torch::Tensor& codes_in,
                                 const torch::Tensor& wanted, const torch::Device& device) {
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
  Clusters clusters;
  clusters.k = unique.numel();
  if (clusters.k < 2) return result;  // one cluster: silhouette undefined, 0 as in sklearn

  // Cells ordered by cluster, so each cluster is one contiguous range of distance columns.
  torch::Tensor order = torch::argsort(dense);
  torch::Tensor sorted_codes = dense.index_select(0, order);
  torch::Tensor counts = torch::bincount(sorted_codes, {}, clusters.k);
  clusters.counts.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + clusters.k);
  clusters.start.assign(clusters.k + 1, 0);
  for (int64_t c = 0; c < clusters.k; ++c)
    clusters.start[c + 1] = clusters.start[c] + clusters.counts[c];
  clusters.own = sorted_codes.data_ptr<int64_t>();

  // float64 throughout: the |a|^2 + |b|^2 - 2ab expansion cancels badly in float32 for close
  // points, and the reference values are float64. Centring first shrinks the norms that cancel.
  torch::Tensor x = x_in.to(torch::kFloat64).index_select(0, order);
  x = (x - x.mean(0, /*keepdim=*/true)).contiguous();
  const int64_t d = x.size(1);
  torch::Tensor s_sorted = torch::zeros({n}, torch::kFloat64);
  const torch::Tensor positions =
      wanted.defined() ? torch::nonzero(wanted.to(torch::kBool).index_select(0, order)).flatten()
                       : torch::Tensor();
  if (!device.is_cpu() || detail::tensor_path_forced()) {
    silhouettes_with_tensors(x, sorted_codes, clusters,
                             positions.defined() ? positions : torch::arange(n, torch::kInt64),
                             s_sorted.data_ptr<double>(), device);
    result.index_copy_(0, order, s_sorted);
    return result;
  }
  // Every pair once needs an n x k table of sums per thread; past 1 GiB in all, rows one by one.
  const bool table_fits =
      n * clusters.k * static_cast<int64_t>(sizeof(int64_t)) * (at::get_num_threads() + 1) <=
      (int64_t{1} << 30);
  if ((!positions.defined() || positions.numel() == n) && table_fits) {
    const double largest_sq = (x * x).sum(1).max().item<double>();
    silhouettes_of_all(x.data_ptr<double>(), n, d, largest_sq, clusters,
                       s_sorted.data_ptr<double>());
  } else {
    const torch::Tensor rows = positions.defined() ? positions : torch::arange(n, torch::kInt64);
    silhouettes_of_rows(x.data_ptr<double>(), n, d, clusters, rows.data_ptr<int64_t>(),
                        rows.numel(), s_sorted.data_ptr<double>());
  }
  // Back to the caller's row order.
  result.index_copy_(0, order, s_sorted);
  return result;
}

namespace {

// Names a silhouette by its rows and codes; the embedding is fixed while results are shared.
std::string silhouette_key(const torch::Tensor& rows, const torch::Tensor& codes) {
  auto bytes = [](const torch::Tensor& t) {
    const torch::Tensor c = t.to(torch::kInt64).contiguous();
    return std::hash<std::string_view>{}(
        std::string_view(static_cast<const char*>(c.data_ptr()), c.numel() * sizeof(int64_t)));
  };
  return "silhouette_samples/" + std::to_string(rows.numel()) + "/" + std::to_string(bytes(rows)) +
         "/" + std::to_string(bytes(codes));
}

}  // namespace

torch::Tensor shared_silhouette_samples(const HostContext& host, const torch::Tensor& embedding,
                                        const torch::Tensor& rows, const torch::Tensor& codes,
                                        const torch::Tensor& wanted, const torch::Device& device) {
  const std::string key = silhouette_key(rows, codes);
  if (torch::Tensor done = host.shared(key); done.defined()) return done;
  const bool complete = !wanted.defined() || wanted.all().item<bool>();
  torch::Tensor s = silhouette_samples(embedding.index_select(0, rows), codes,
                                       complete ? torch::Tensor() : wanted, device);
  if (complete) host.share(key, s);
  return s;
}

std::vector<ParamSpec> silhouette_sampling_parameters(const char* max_cells_help) {
  return {ParamSpec("max_cells", SCSSL_PARAM_INT, "0", max_cells_help).at_least(0),
          ParamSpec("seed", SCSSL_PARAM_INT, "0", "seed of the sample").at_least(0)};
}

SampledRows silhouette_sample(const std::vector<int32_t>& strata, int64_t max_cells, int64_t seed,
                              const std::string& metric, const std::string& what) {
  SampledRows out;
  out.rows = stratified_sample(strata, max_cells, static_cast<uint64_t>(seed));
  const auto eligible =
      std::count_if(strata.begin(), strata.end(), [](int32_t s) { return s >= 0; });
  if (static_cast<int64_t>(out.rows.size()) < eligible)
    out.note = sample_note(what, static_cast<int64_t>(out.rows.size()), eligible,
                           "evaluation." + metric + ".max_cells", static_cast<uint64_t>(seed));
  return out;
}

}  // namespace scssl
