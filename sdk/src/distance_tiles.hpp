// Squared Euclidean distances between query rows and reference rows, produced tile by tile so that
// every tile stays in the per-core cache: the exact kNN search and the exact silhouettes reduce
// each tile as soon as it is made, and no n x n matrix ever exists. Internal to the SDK (not
// installed). Tiles come in float64 (the silhouettes) or float32 (the kNN search's screening pass,
// twice as fast); either way the arithmetic runs in a fixed order that does not depend on the
// number of threads. The kernels are compiled for AVX-512, AVX2+FMA and baseline x86-64, and the
// best one for the CPU is picked at load time.
#pragma once

#include <cstdint>
#include <vector>

namespace scssl::detail {

template <class Real>
class ReferencePanels;

// A block of at most kBlockRows query rows, copied (zero-padded) into the layout the kernel reads.
template <class Real>
class QueryBlock {
 public:
  static constexpr int64_t kBlockRows = 64;

  // Copies rows first .. first + count - 1 of the row-major float64 [*, d] matrix x, or, when
  // `rows` is given, rows[first] .. rows[first + count - 1].
  void load(const double* x, int64_t d, int64_t first, int64_t count,
            const int64_t* rows = nullptr);
  int64_t count() const { return count_; }

 private:
  friend class ReferencePanels<Real>;
  int64_t count_ = 0, d_ = 0;
  std::vector<Real> rows_, sq_;
};

// All reference rows, packed once into panels of kPanelCols rows for the tile kernel.
template <class Real>
class ReferencePanels {
 public:
  static constexpr int64_t kPanelCols = 512;

  // x: row-major float64 [n, d].
  ReferencePanels(const double* x, int64_t n, int64_t d);
  int64_t panels() const { return (n_ + kPanelCols - 1) / kPanelCols; }
  int64_t panel_begin(int64_t p) const { return p * kPanelCols; }
  int64_t panel_size(int64_t p) const;
  // tile[r * kPanelCols + j] = max(0, |q_r|^2 + |x_j|^2 - 2 q_r . x_j) for the block's rows r and
  // panel p's rows j (only the first panel_size(p) columns of each tile row are meaningful).
  // `tile` must hold kBlockRows * kPanelCols values.
  void squared_distances(const QueryBlock<Real>& block, int64_t p, Real* tile) const;

 private:
  int64_t n_, d_;
  std::vector<Real> packed_, sq_;
};

extern template class QueryBlock<double>;
extern template class QueryBlock<float>;
extern template class ReferencePanels<double>;
extern template class ReferencePanels<float>;

// values[j] = sqrt(values[j]) for j < count.
void square_roots(double* values, int64_t count);
// sum_j values[j] over j < count, in a fixed order.
double sum(const double* values, int64_t count);
// out[j] = sum_r values[r * stride + j] over r < rows (in order of r), for j < cols.
void column_sums(const double* values, int64_t stride, int64_t rows, int64_t cols, double* out);

}  // namespace scssl::detail
