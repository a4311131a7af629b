// Squared Euclidean distances between query rows and reference rows, produced tile by tile so that
// every tile stays in the per-core cache: the exact kNN search and the exact silhouettes reduce
// each tile as soon as it is made, and no n x n matrix ever exists. Internal to the SDK (not
// installed). Tiles come in float64 (the silhouettes) or float32 (the kNN search's screening pass,
// twice as fast); either way the arithmetic runs in a fixed order that does not depend on the
// number of threads.
//
// The tiles are made by one of several kernel paths (docs/performance.md, "Distance kernels"): a
// register micro-tile shaped for AVX-512, for AVX2+FMA or for 16-byte vectors (SSE2 on x86-64,
// NEON or the compiler's choice elsewhere), or the BLAS's matrix product. The best path the CPU
// runs is used unless SCSSL_DISTANCE_KERNELS names another, so every path can be tested and
// benchmarked on one machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace scssl::detail {

// One way of making tiles. Reference rows are packed in strips of `strip<Real>()` rows laid out
// dimension-major ([strip][dim][row in strip]); a strip of one row is plain row-major.
struct KernelPath {
  const char* name;
  int64_t micro_rows;  // query rows per micro-tile (divides kBlockRows)
  int64_t float_strip, double_strip;
  void (*float_tile)(const float* query, const float* query_sq, int64_t query_rows,
                     const float* strips, const float* ref_sq, int64_t cols, int64_t d, float* tile,
                     int64_t tile_stride);
  void (*double_tile)(const double* query, const double* query_sq, int64_t query_rows,
                      const double* strips, const double* ref_sq, int64_t cols, int64_t d,
                      double* tile, int64_t tile_stride);
  template <class Real>
  int64_t strip() const {
    return sizeof(Real) == sizeof(float) ? float_strip : double_strip;
  }
};

// The paths this CPU runs, best first: "avx512" and "avx2" where the CPU has them, then "blas",
// then the 16-byte vector path.
std::vector<const KernelPath*> runnable_kernel_paths();
// Whether SCSSL_DISTANCE_KERNELS=tensor asks for the tensor path on the CPU: the searches and
// silhouettes then run as LibTorch operations on whole blocks, as they do on a GPU, so that the
// GPU's code is tested on any machine. Read once per process.
bool tensor_path_forced();
inline constexpr char kTensorPath[] = "tensor";
// SCSSL_DISTANCE_KERNELS when set (under "tensor": the best runnable path, for other callers of
// the tiles), else the best runnable path; resolved once per process.
// Throws std::invalid_argument naming the variable when it names an unknown or unrunnable path.
const KernelPath& kernel_path();
// The path called `name` ("auto": the best); throws like kernel_path().
const KernelPath& kernel_path_named(const std::string& name);

// The BLAS path's tile (distance_tiles_blas.cpp): one matrix product through LibTorch's BLAS.
void blas_tile(const float* query, const float* query_sq, int64_t query_rows, const float* rows,
               const float* ref_sq, int64_t cols, int64_t d, float* tile, int64_t tile_stride);
void blas_tile(const double* query, const double* query_sq, int64_t query_rows, const double* rows,
               const double* ref_sq, int64_t cols, int64_t d, double* tile, int64_t tile_stride);

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

// All reference rows, packed once into panels of kPanelCols rows for the tile kernel of `path`.
template <class Real>
class ReferencePanels {
 public:
  using value_type = Real;
  static constexpr int64_t kPanelCols = 512;

  // x: row-major float64 [n, d].
  ReferencePanels(const double* x, int64_t n, int64_t d, const KernelPath& path = kernel_path());
  int64_t panels() const { return (n_ + kPanelCols - 1) / kPanelCols; }
  int64_t panel_begin(int64_t p) const { return p * kPanelCols; }
  int64_t panel_size(int64_t p) const;
  // tile[r * kPanelCols + j] = max(0, |q_r|^2 + |x_j|^2 - 2 q_r . x_j) for the block's rows r and
  // panel p's rows j (only the first panel_size(p) columns of each tile row are meaningful).
  // `tile` must hold kBlockRows * kPanelCols values.
  void squared_distances(const QueryBlock<Real>& block, int64_t p, Real* tile) const;

 private:
  const KernelPath& path_;
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
