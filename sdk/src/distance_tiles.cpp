#include "distance_tiles.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

// The hot kernels are compiled three times on x86-64 and the loader picks the best for the CPU;
// elsewhere once, for the target the build was configured for.
#if defined(__x86_64__)
#define SCSSL_KERNEL_CLONES [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#else
#define SCSSL_KERNEL_CLONES
#endif

namespace scssl::detail {

namespace {

// The micro-tile: kMicroRows query rows x two 64-byte vectors of reference rows (16 doubles or 32
// floats), accumulated in registers (8 AVX-512 or 16 AVX2 registers). Block rows and panel
// columns are multiples of these.
constexpr int64_t kMicroRows = 4;
template <class Real>
constexpr int64_t kLanes = 64 / sizeof(Real);
template <class Real>
constexpr int64_t kMicroCols = 2 * kLanes<Real>;
static_assert(QueryBlock<double>::kBlockRows % kMicroRows == 0);
static_assert(ReferencePanels<float>::kPanelCols % kMicroCols<float> == 0);

// The reference is stored panel by panel, and inside a panel as strips of kMicroCols rows laid out
// dimension-major ([strip][dim][kMicroCols]), so the kernel streams one contiguous strip. Written
// with 64-byte vector types (one AVX-512 register, two AVX2 or four SSE2 registers, depending on
// the clone being compiled) so that every clone keeps its accumulators in registers.
template <class Real>
[[gnu::always_inline]] inline void tile_body(const Real* query, const Real* query_sq,
                                             int64_t query_rows, const Real* strips,
                                             const Real* ref_sq, int64_t cols, int64_t d,
                                             Real* tile, int64_t tile_stride) {
  typedef Real Vec __attribute__((vector_size(64)));
  constexpr int64_t lanes = kLanes<Real>, micro_cols = kMicroCols<Real>;
  for (int64_t r = 0; r < query_rows; r += kMicroRows) {
    const Real* q = query + r * d;
    for (int64_t c = 0; c < cols; c += micro_cols) {
      const Real* strip = strips + c * d;
      Vec acc[kMicroRows][2] = {};
      for (int64_t k = 0; k < d; ++k) {
        Vec b0, b1;
        std::memcpy(&b0, strip + k * micro_cols, sizeof b0);
        std::memcpy(&b1, strip + k * micro_cols + lanes, sizeof b1);
        for (int64_t i = 0; i < kMicroRows; ++i) {
          const Real a = q[i * d + k];
          acc[i][0] += a * b0;
          acc[i][1] += a * b1;
        }
      }
      Vec r0, r1;
      std::memcpy(&r0, ref_sq + c, sizeof r0);
      std::memcpy(&r1, ref_sq + c + lanes, sizeof r1);
      const Vec zero = {};
      for (int64_t i = 0; i < kMicroRows; ++i) {
        Vec d0 = query_sq[r + i] + r0 - Real(2) * acc[i][0];
        Vec d1 = query_sq[r + i] + r1 - Real(2) * acc[i][1];
        d0 = d0 > zero ? d0 : zero;
        d1 = d1 > zero ? d1 : zero;
        Real* out = tile + (r + i) * tile_stride + c;
        std::memcpy(out, &d0, sizeof d0);
        std::memcpy(out + lanes, &d1, sizeof d1);
      }
    }
  }
}

SCSSL_KERNEL_CLONES
void tile_kernel(const double* query, const double* query_sq, int64_t query_rows,
                 const double* strips, const double* ref_sq, int64_t cols, int64_t d, double* tile,
                 int64_t tile_stride) {
  tile_body(query, query_sq, query_rows, strips, ref_sq, cols, d, tile, tile_stride);
}

SCSSL_KERNEL_CLONES
void tile_kernel(const float* query, const float* query_sq, int64_t query_rows, const float* strips,
                 const float* ref_sq, int64_t cols, int64_t d, float* tile, int64_t tile_stride) {
  tile_body(query, query_sq, query_rows, strips, ref_sq, cols, d, tile, tile_stride);
}

SCSSL_KERNEL_CLONES
void square_roots_kernel(double* values, int64_t count) {
  for (int64_t j = 0; j < count; ++j) values[j] = std::sqrt(values[j]);
}

SCSSL_KERNEL_CLONES
double sum_kernel(const double* values, int64_t count) {
  // Eight partial sums in a fixed lane order: vectorisable, and the same result for every clone.
  constexpr int64_t kPartials = 8;
  double partial[kPartials] = {};
  int64_t j = 0;
  for (; j + kPartials <= count; j += kPartials)
    for (int64_t t = 0; t < kPartials; ++t) partial[t] += values[j + t];
  for (int64_t t = 0; j < count; ++j, ++t) partial[t] += values[j];
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

SCSSL_KERNEL_CLONES
void column_sums_kernel(const double* values, int64_t stride, int64_t rows, int64_t cols,
                        double* out) {
  std::fill(out, out + cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) out[j] += values[r * stride + j];
}

int64_t round_up(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

}  // namespace

template <class Real>
void QueryBlock<Real>::load(const double* x, int64_t d, int64_t first, int64_t count,
                            const int64_t* rows) {
  count_ = std::min(count, kBlockRows);
  d_ = d;
  rows_.assign(kBlockRows * d, Real(0));
  sq_.assign(kBlockRows, Real(0));
  for (int64_t r = 0; r < count_; ++r) {
    const double* src = x + (rows ? rows[first + r] : first + r) * d;
    double s = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      rows_[r * d + k] = static_cast<Real>(src[k]);
      s += src[k] * src[k];
    }
    sq_[r] = static_cast<Real>(s);
  }
}

template <class Real>
ReferencePanels<Real>::ReferencePanels(const double* x, int64_t n, int64_t d) : n_(n), d_(d) {
  constexpr int64_t micro_cols = kMicroCols<Real>;
  const int64_t padded = round_up(std::max<int64_t>(n, 1), kPanelCols);
  packed_.assign(padded * d, Real(0));
  sq_.assign(padded, Real(0));
  for (int64_t j = 0; j < n; ++j) {
    const double* src = x + j * d;
    Real* strip = packed_.data() + (j / micro_cols) * micro_cols * d;
    double s = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      strip[k * micro_cols + j % micro_cols] = static_cast<Real>(src[k]);
      s += src[k] * src[k];
    }
    sq_[j] = static_cast<Real>(s);
  }
}

template <class Real>
int64_t ReferencePanels<Real>::panel_size(int64_t p) const {
  return std::min(kPanelCols, n_ - p * kPanelCols);
}

template <class Real>
void ReferencePanels<Real>::squared_distances(const QueryBlock<Real>& block, int64_t p,
                                              Real* tile) const {
  const int64_t begin = panel_begin(p);
  tile_kernel(block.rows_.data(), block.sq_.data(), round_up(block.count_, kMicroRows),
              packed_.data() + begin * d_, sq_.data() + begin,
              round_up(panel_size(p), kMicroCols<Real>), d_, tile, kPanelCols);
}

template class QueryBlock<double>;
template class QueryBlock<float>;
template class ReferencePanels<double>;
template class ReferencePanels<float>;

void square_roots(double* values, int64_t count) { square_roots_kernel(values, count); }

double sum(const double* values, int64_t count) { return sum_kernel(values, count); }

void column_sums(const double* values, int64_t stride, int64_t rows, int64_t cols, double* out) {
  column_sums_kernel(values, stride, rows, cols, out);
}

}  // namespace scssl::detail
