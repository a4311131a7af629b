// Exact k-nearest-neighbour search by blocked matrix products (BLAS), shared by evaluators and
// augmentations. Deterministic: neighbours sorted by distance, ties broken by the smaller index.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace scssl {

enum class Distance { Euclidean, Cosine };

struct Neighbors {
  torch::Tensor indices;    // int64 [queries, k], rows of the reference, nearest first
  torch::Tensor distances;  // float32 [queries, k]; cosine distance is 1 - cos
};

// The k nearest reference rows of every query row (k is clipped to the reference size). On a
// GPU `device`, the distance screen runs there (the tensor path); the lists are the same.
Neighbors knn_exact(const torch::Tensor& reference, const torch::Tensor& query, int64_t k,
                    Distance distance = Distance::Euclidean,
                    const torch::Device& device = torch::kCPU);

// The k nearest rows of x to every row of x, the row itself always first (distance 0), then the
// k - 1 nearest others, ties by the smaller index: the scIB metrics' convention
// (docs/metrics.md §1.2).
Neighbors knn_self(const torch::Tensor& x, int64_t k, const torch::Device& device = torch::kCPU);

// The distance-kernel paths this CPU runs, best first: "avx512" and "avx2" (where the CPU has
// them), "blas", then "sse2" (x86-64) or "vector16" (other CPUs) (docs/performance.md,
// "Distance kernels").
std::vector<std::string> distance_kernel_paths();

// The path that knn_exact, knn_self and the silhouettes use on the CPU: SCSSL_DISTANCE_KERNELS
// when set ("auto", one of distance_kernel_paths(), or "tensor": the GPU's code, LibTorch
// operations on whole blocks, run on the CPU), else the best. Throws InvalidArgument naming the
// variable when it names a path that is unknown or that this CPU cannot run.
std::string distance_kernels();

// A sparse n x n matrix in CSR form, columns ascending within each row.
struct SparseGraph {
  torch::Tensor indptr;   // int64 [n + 1]
  torch::Tensor indices;  // int64 [nnz]
  torch::Tensor weights;  // float64 [nnz]
};

// UMAP's fuzzy connectivities of self-first neighbour lists (docs/metrics.md §1.3: rho, bisection
// for sigma with target log2 k, fuzzy union W = A + A^T - A o A^T), symmetric and without diagonal.
// Negative indices (missing neighbours) are ignored.
SparseGraph fuzzy_connectivities(const Neighbors& nn);

}  // namespace scssl
