// The BLAS path of the distance tiles (distance_tiles.hpp): the tile's dot products as one matrix
// product through LibTorch's BLAS (OpenBLAS picks its kernels for the CPU), then the norms added
// while the tile is still in cache.
#include <ATen/ATen.h>

#include <algorithm>

#include "distance_tiles.hpp"

namespace scssl::detail {

namespace {

template <class Real>
void blas_tile_of(const Real* query, const Real* query_sq, int64_t query_rows, const Real* rows,
                  const Real* ref_sq, int64_t cols, int64_t d, Real* tile, int64_t tile_stride) {
  constexpr auto type = std::is_same_v<Real, float> ? at::kFloat : at::kDouble;
  const auto options = at::TensorOptions().dtype(type);
  const at::Tensor q = at::from_blob(const_cast<Real*>(query), {query_rows, d}, options);
  const at::Tensor x = at::from_blob(const_cast<Real*>(rows), {cols, d}, options);
  at::Tensor out = at::from_blob(tile, {query_rows, cols}, {tile_stride, 1}, options);
  at::mm_out(out, q, x.t());
  for (int64_t r = 0; r < query_rows; ++r) {
    Real* row = tile + r * tile_stride;
    for (int64_t j = 0; j < cols; ++j)
      row[j] = std::max(Real(0), query_sq[r] + ref_sq[j] - Real(2) * row[j]);
  }
}

}  // namespace

void blas_tile(const float* query, const float* query_sq, int64_t query_rows, const float* rows,
               const float* ref_sq, int64_t cols, int64_t d, float* tile, int64_t tile_stride) {
  blas_tile_of(query, query_sq, query_rows, rows, ref_sq, cols, d, tile, tile_stride);
}

void blas_tile(const double* query, const double* query_sq, int64_t query_rows, const double* rows,
               const double* ref_sq, int64_t cols, int64_t d, double* tile, int64_t tile_stride) {
  blas_tile_of(query, query_sq, query_rows, rows, ref_sq, cols, d, tile, tile_stride);
}

}  // namespace scssl::detail
