#include "scssl/knn.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "distance_tiles.hpp"

namespace scssl {

namespace {

// Shared by knn_exact and knn_self; with self_first the query rows are the reference rows and
// each row's own index is ranked before everything else.
Neighbors search(const torch::Tensor& reference, const torch::Tensor& query, int64_t k,
                 Distance distance, bool self_first) {
  TORCH_CHECK(reference.dim() == 2 && query.dim() == 2 && reference.size(1) == query.size(1),
              "knn_exact: reference and query must be matrices with the same number of columns");
  // float64 keeps distance ties exact enough that "smaller index first" is reproducible.
  torch::Tensor ref = reference.to(torch::kCPU, torch::kFloat64).contiguous();
  torch::Tensor qry = query.to(torch::kCPU, torch::kFloat64).contiguous();
  const bool cosine = distance == Distance::Cosine;
  if (cosine) {
    ref = ref / ref.norm(2, 1, true).clamp_min(1e-300);
    qry = qry / qry.norm(2, 1, true).clamp_min(1e-300);
  }
  const int64_t n_ref = ref.size(0), n_query = qry.size(0), d = ref.size(1);
  k = std::min(k, n_ref);
  Neighbors out{torch::empty({n_query, k}, torch::kInt64), torch::empty({n_query, k}, torch::kFloat32)};
  if (n_query == 0 || k == 0) return out;
  const detail::ReferencePanels panels(ref.data_ptr<double>(), n_ref, d);
  const double* query_rows = qry.data_ptr<double>();
  int64_t* out_idx = out.indices.data_ptr<int64_t>();
  float* out_dist = out.distances.data_ptr<float>();
  constexpr int64_t kBlock = detail::QueryBlock::kBlockRows;
  constexpr int64_t kPanel = detail::ReferencePanels::kPanelCols;
  const int64_t wanted = self_first ? k - 1 : k;
  at::parallel_for(0, (n_query + kBlock - 1) / kBlock, 1, [&](int64_t block_lo, int64_t block_hi) {
    std::vector<double> tile(kBlock * kPanel);
    // One bounded max-heap of (distance, index) per query row: one comparison rejects most
    // reference rows, and the lexicographic order breaks distance ties by the smaller index.
    std::vector<std::vector<std::pair<double, int64_t>>> heaps(kBlock);
    for (auto& heap : heaps) heap.reserve(wanted);
    detail::QueryBlock block;
    for (int64_t b = block_lo; b < block_hi; ++b) {
      const int64_t first = b * kBlock;
      block.load(query_rows, d, first, std::min(kBlock, n_query - first));
      for (auto& heap : heaps) heap.clear();
      for (int64_t p = 0; p < panels.panels(); ++p) {
        panels.squared_distances(block, p, tile.data());
        const int64_t begin = panels.panel_begin(p), size = panels.panel_size(p);
        for (int64_t r = 0; r < block.count(); ++r) {
          auto& heap = heaps[r];
          const double* row = &tile[r * kPanel];
          const double q_sq = block.squared_norm(r);
          const int64_t self = self_first ? first + r : -1;
          for (int64_t j = 0; j < size && wanted > 0; ++j) {
            // Cosine: 1 - q.r of the unit rows (a zero row stays zero and is at distance 1).
            const double value =
                cosine ? 1.0 - (q_sq + panels.squared_norm(begin + j) - row[j]) / 2.0 : row[j];
            const bool full = static_cast<int64_t>(heap.size()) == wanted;
            if (full && value >= heap.front().first) continue;  // the common case
            if (begin + j == self) continue;
            const std::pair<double, int64_t> candidate{value, begin + j};
            if (!full) {
              heap.push_back(candidate);
              std::push_heap(heap.begin(), heap.end());
            } else if (candidate < heap.front()) {
              std::pop_heap(heap.begin(), heap.end());
              heap.back() = candidate;
              std::push_heap(heap.begin(), heap.end());
            }
          }
        }
      }
      for (int64_t r = 0; r < block.count(); ++r) {
        auto& heap = heaps[r];
        std::sort_heap(heap.begin(), heap.end());
        int64_t* idx_row = out_idx + (first + r) * k;
        float* dist_row = out_dist + (first + r) * k;
        int64_t col = 0;
        if (self_first) {
          idx_row[0] = first + r;
          dist_row[0] = 0.0f;
          col = 1;
        }
        for (const auto& [value, j] : heap) {
          idx_row[col] = j;
          dist_row[col++] = static_cast<float>(cosine ? value : std::sqrt(value));
        }
      }
    }
  });
  return out;
}

}  // namespace

Neighbors knn_exact(const torch::Tensor& reference, const torch::Tensor& query, int64_t k,
                    Distance distance) {
  return search(reference, query, k, distance, false);
}

Neighbors knn_self(const torch::Tensor& x, int64_t k) {
  return search(x, x, k, Distance::Euclidean, true);
}

namespace {

// sigma of one row by UMAP's bisection: sum over the non-self columns of exp(-(d - rho) / sigma)
// (1 where d <= rho) should equal log2 k.
double smooth_sigma(const float* dist, int64_t k, double rho) {
  const double target = std::log2(static_cast<double>(k));
  double lo = 0.0, hi = std::numeric_limits<double>::infinity(), mid = 1.0;
  for (int iter = 0; iter < 64; ++iter) {
    double sum = 0.0;
    for (int64_t j = 1; j < k; ++j) {
      const double gap = dist[j] - rho;
      sum += gap > 0.0 ? std::exp(-gap / mid) : 1.0;
    }
    if (std::abs(sum - target) < 1e-5) break;
    if (sum > target) {
      hi = mid;
      mid = (lo + hi) / 2.0;
    } else {
      lo = mid;
      mid = std::isinf(hi) ? mid * 2.0 : (lo + hi) / 2.0;
    }
  }
  return mid;
}

}  // namespace

SparseGraph fuzzy_connectivities(const Neighbors& nn) {
  TORCH_CHECK(nn.indices.dim() == 2 && nn.distances.sizes() == nn.indices.sizes(),
              "fuzzy_connectivities: indices and distances must be matrices of one shape");
  torch::Tensor idx_t = nn.indices.to(torch::kInt64).contiguous();
  torch::Tensor dist_t = nn.distances.to(torch::kFloat32).contiguous();
  const int64_t n = idx_t.size(0), k = idx_t.size(1);
  const int64_t* idx = idx_t.data_ptr<int64_t>();
  const float* dist = dist_t.data_ptr<float>();
  double all_mean = 0.0;
  for (int64_t e = 0; e < n * k; ++e) all_mean += dist[e];
  all_mean /= static_cast<double>(std::max<int64_t>(1, n * k));

  // Directed memberships A as per-row (column, weight) lists, sorted by column.
  std::vector<std::vector<std::pair<int64_t, double>>> forward(n);
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float* row = dist + i * k;
      double rho = 0.0, row_mean = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        row_mean += row[j];
        if (row[j] > 0.0f && (rho == 0.0 || row[j] < rho)) rho = row[j];
      }
      row_mean /= static_cast<double>(k);
      const double sigma =
          std::max(smooth_sigma(row, k, rho), 1e-3 * (rho > 0.0 ? row_mean : all_mean));
      for (int64_t j = 0; j < k; ++j) {
        const int64_t c = idx[i * k + j];
        if (c < 0 || c == i) continue;
        const double gap = row[j] - rho;
        const double w = gap <= 0.0 || sigma == 0.0 ? 1.0 : std::exp(-gap / sigma);
        if (w > 0.0) forward[i].emplace_back(c, w);
      }
      std::sort(forward[i].begin(), forward[i].end());
    }
  });
  // A^T, built row by row so that each transposed row is already sorted by column.
  std::vector<std::vector<std::pair<int64_t, double>>> backward(n);
  for (int64_t i = 0; i < n; ++i)
    for (const auto& [c, w] : forward[i]) backward[c].emplace_back(i, w);

  // Fuzzy union W = A + A^T - A o A^T, merging the two sorted lists of every row.
  std::vector<int64_t> indptr(n + 1, 0), columns;
  std::vector<double> weights;
  columns.reserve(2 * n * k);
  weights.reserve(2 * n * k);
  for (int64_t i = 0; i < n; ++i) {
    const auto &a = forward[i], &b = backward[i];
    size_t p = 0, q = 0;
    while (p < a.size() || q < b.size()) {
      if (q == b.size() || (p < a.size() && a[p].first < b[q].first)) {
        columns.push_back(a[p].first);
        weights.push_back(a[p++].second);
      } else if (p == a.size() || b[q].first < a[p].first) {
        columns.push_back(b[q].first);
        weights.push_back(b[q++].second);
      } else {
        columns.push_back(a[p].first);
        weights.push_back(a[p].second + b[q].second - a[p].second * b[q].second);
        ++p, ++q;
      }
    }
    indptr[i + 1] = static_cast<int64_t>(columns.size());
  }
  const auto nnz = static_cast<int64_t>(columns.size());
  return {torch::tensor(indptr, torch::kInt64),
          torch::from_blob(columns.data(), {nnz}, torch::kInt64).clone(),
          torch::from_blob(weights.data(), {nnz}, torch::kFloat64).clone()};
}

}  // namespace scssl
