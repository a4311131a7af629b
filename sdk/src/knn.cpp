#include "scssl/knn.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>

namespace scssl {

namespace {
constexpr int64_t kQueryBlock = 512;
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
  torch::Tensor ref_sq = ref.pow(2).sum(1);
  int64_t* out_idx = out.indices.data_ptr<int64_t>();
  float* out_dist = out.distances.data_ptr<float>();
  for (int64_t begin = 0; begin < n_query; begin += kQueryBlock) {
    const int64_t end = std::min(n_query, begin + kQueryBlock);
    torch::Tensor q = qry.slice(0, begin, end);
    torch::Tensor d;
    if (distance == Distance::Cosine)
      d = 1.0 - torch::matmul(q, ref.t());
    else
      d = (q.pow(2).sum(1, true) + ref_sq.unsqueeze(0) - 2.0 * torch::matmul(q, ref.t()))
              .clamp_min(0);
    d = d.contiguous();
    const double* dist = d.data_ptr<double>();
    at::parallel_for(0, end - begin, 16, [&](int64_t lo, int64_t hi) {
      std::vector<int64_t> order(n_ref);
      for (int64_t i = lo; i < hi; ++i) {
        const double* row = dist + i * n_ref;
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
          const bool a_self = self_first && a == begin + i, b_self = self_first && b == begin + i;
          if (a_self != b_self) return a_self;
          return row[a] < row[b] || (row[a] == row[b] && a < b);
        });
        for (int64_t j = 0; j < k; ++j) {
          const double v = self_first && order[j] == begin + i ? 0.0 : row[order[j]];
          out_idx[(begin + i) * k + j] = order[j];
          out_dist[(begin + i) * k + j] =
              static_cast<float>(distance == Distance::Euclidean ? std::sqrt(v) : v);
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

}  // namespace scssl
