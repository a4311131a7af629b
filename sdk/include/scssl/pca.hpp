// Principal component analysis of a (possibly sparse) cells x features matrix without densifying
// all of it: the feature covariance is accumulated over row blocks, then eigen-decomposed.
#pragma once

#include "scssl/cell_data.hpp"

namespace scssl {

struct PcaModel {
  torch::Tensor mean;                // float64 [features]
  torch::Tensor components;          // float64 [features, k], columns by decreasing variance
  torch::Tensor explained_variance;  // float64 [k]

  int64_t n_components() const { return components.size(1); }
  // Principal component scores of every row of x: float32 [rows, k], computed block-wise.
  torch::Tensor transform(const Matrix& x) const;
};

// k is clipped to min(rows - 1, features). Each component's sign is fixed so that its
// largest-magnitude loading is positive, which makes the result deterministic.
PcaModel fit_pca(const Matrix& x, int64_t k);

}  // namespace scssl
