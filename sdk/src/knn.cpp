#include "scssl/knn.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace scssl {

namespace {
// Query rows per distance block: at most 512, and the block at most ~16 M doubles (128 MB).
int64_t query_block(int64_t n_ref) {
  return std::clamp<int64_t>((int64_t{1} << 24) / std::max<int64_t>(1, n_ref), 16, 512);
}
}

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
  if (distance == Distance::Cosine) {
    ref = ref / ref.norm(2, 1, true).clamp_min(1e-300);
    qry = qry / qry.norm(2, 1, true).clamp_min(1e-300);
  }
  const int64_t n_ref = ref.size(0), n_query = qry.size(0);
  k = std::min(k, n_ref);
  Neighbors out{torch::empty({n_query, k}, torch::kInt64), torch::empty({n_query, k}, torch::kFloat32)};
  const bool cosine = distance == Distance::Cosine;
  const torch::Tensor ref_sq_t = ref.pow(2).sum(1).contiguous(), qry_sq_t = qry.pow(2).sum(1).contiguous();
  const double* r_sq = ref_sq_t.data_ptr<double>();
  const double* qry_sq = qry_sq_t.data_ptr<double>();
  int64_t* out_idx = out.indices.data_ptr<int64_t>();
  float* out_dist = out.distances.data_ptr<float>();
  const int64_t block = query_block(n_ref);
  for (int64_t begin = 0; begin < n_query; begin += block) {
    const int64_t end = std::min(n_query, begin + block);
    torch::Tensor q = qry.slice(0, begin, end);
    // Squared distances are formed row by row in the selection loop from this one product.
    const torch::Tensor gram = torch::matmul(q, ref.t()).contiguous();
    const double* G = gram.data_ptr<double>();
    at::parallel_for(0, end - begin, 16, [&](int64_t lo, int64_t hi) {
      // A bounded max-heap of (distance, index): one comparison rejects most reference rows, and
      // the lexicographic order breaks distance ties by the smaller index.
      std::vector<std::pair<double, int64_t>> heap;
      heap.reserve(k);
      for (int64_t i = lo; i < hi; ++i) {
        const double* g = G + i * n_ref;
        const double q_sq = qry_sq[begin + i];
        auto distance_of = [&](int64_t j) {
          return cosine ? 1.0 - g[j] : std::max(0.0, q_sq + r_sq[j] - 2.0 * g[j]);
        };
        const int64_t self = self_first ? begin + i : -1;
        const int64_t wanted = self_first ? k - 1 : k;
        heap.clear();
        for (int64_t j = 0; j < n_ref && wanted > 0; ++j) {
          if (j == self) continue;
          const std::pair<double, int64_t> candidate{distance_of(j), j};
          if (static_cast<int64_t>(heap.size()) < wanted) {
            heap.push_back(candidate);
            std::push_heap(heap.begin(), heap.end());
          } else if (candidate < heap.front()) {
            std::pop_heap(heap.begin(), heap.end());
            heap.back() = candidate;
            std::push_heap(heap.begin(), heap.end());
          }
        }
        std::sort_heap(heap.begin(), heap.end());
        int64_t* idx_row = out_idx + (begin + i) * k;
        float* dist_row = out_dist + (begin + i) * k;
        int64_t col = 0;
        if (self_first) {
          idx_row[0] = self;
          dist_row[0] = 0.0f;
          col = 1;
        }
        for (const auto& [value, j] : heap) {
          idx_row[col] = j;
          dist_row[col++] =
              static_cast<float>(distance == Distance::Euclidean ? std::sqrt(value) : value);
        }
      }
    });
  }
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
