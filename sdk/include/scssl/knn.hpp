// Exact k-nearest-neighbour search by blocked matrix products (BLAS), shared by evaluators and
// augmentations. Deterministic: neighbours sorted by distance, ties broken by the smaller index.
#pragma once

#include <torch/torch.h>

namespace scssl {

enum class Distance { Euclidean, Cosine };

struct Neighbors {
  torch::Tensor indices;    // int64 [queries, k], rows of the reference, nearest first
  torch::Tensor distances;  // float32 [queries, k]; cosine distance is 1 - cos
};

// The k nearest reference rows of every query row (k is clipped to the reference size).
Neighbors knn_exact(const torch::Tensor& reference, const torch::Tensor& query, int64_t k,
                    Distance distance = Distance::Euclidean);

}  // namespace scssl
