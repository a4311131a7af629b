#include "distance_tiles.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace scssl::detail {

namespace {

// The micro-tile: kMicroRows query rows x kMicroCols reference rows, accumulated in registers
// (8 AVX-512 or 16 AVX2 registers). Block rows and panel columns are multiples of these.
constexpr int64_t kMicroRows = 4;
constexpr int64_t kMicroCols = 16;
static_assert(QueryBlock::kBlockRows % kMicroRows == 0);
static_assert(ReferencePanels::kPanelCols % kMicroCols == 0);

// Eight doubles: one AVX-512 register, two AVX2 registers or four SSE2 registers, depending on the
// clone being compiled. Written with vector types so every clone keeps its accumulators in registers.
typedef double Vec8 __attribute__((vector_size(64)));
static_assert(kMicroCols == 16, "the kernel holds a micro-tile row in two Vec8");

// Unaligned loads and stores of eight doubles.
#define SCSSL_LOAD8(dst, src) std::memcpy(&(dst), (src), sizeof(Vec8))
#define SCSSL_STORE8(dst, src) std::memcpy((dst), &(src), sizeof(Vec8))

// The reference is stored panel by panel, and inside a panel as strips of kMicroCols rows laid out
// dimension-major ([strip][dim][kMicroCols]), so the kernel streams one contiguous strip.
[[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
void tile_kernel(const double* query, const double* query_sq, int64_t query_rows,
                 const double* strips, const double* ref_sq, int64_t cols, int64_t d,
                 double* tile, int64_t tile_stride) {
  for (int64_t r = 0; r < query_rows; r += kMicroRows) {
    const double* q = query + r * d;
    for (int64_t c = 0; c < cols; c += kMicroCols) {
      const double* strip = strips + c * d;
      Vec8 acc[kMicroRows][2] = {};
      for (int64_t k = 0; k < d; ++k) {
        Vec8 b0, b1;
        SCSSL_LOAD8(b0, strip + k * kMicroCols);
        SCSSL_LOAD8(b1, strip + k * kMicroCols + 8);
        for (int64_t i = 0; i < kMicroRows; ++i) {
          const double a = q[i * d + k];
          acc[i][0] += a * b0;
          acc[i][1] += a * b1;
        }
      }
      Vec8 r0, r1;
      SCSSL_LOAD8(r0, ref_sq + c);
      SCSSL_LOAD8(r1, ref_sq + c + 8);
      for (int64_t i = 0; i < kMicroRows; ++i) {
        const Vec8 zero = {};
        Vec8 d0 = query_sq[r + i] + r0 - 2.0 * acc[i][0];
        Vec8 d1 = query_sq[r + i] + r1 - 2.0 * acc[i][1];
        d0 = d0 > zero ? d0 : zero;
        d1 = d1 > zero ? d1 : zero;
        double* out = tile + (r + i) * tile_stride + c;
        SCSSL_STORE8(out, d0);
        SCSSL_STORE8(out + 8, d1);
      }
    }
  }
}

[[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
double sum_sqrt_kernel(const double* values, int64_t count) {
  // Eight partial sums in a fixed lane order: vectorisable, and the same result for every clone.
  constexpr int64_t kLanes = 8;
  double partial[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= count; j += kLanes)
    for (int64_t t = 0; t < kLanes; ++t) partial[t] += std::sqrt(values[j + t]);
  for (int64_t t = 0; j < count; ++j, ++t) partial[t] += std::sqrt(values[j]);
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

}  // namespace

void QueryBlock::load(const double* x, int64_t d, int64_t first, int64_t count, const int64_t* rows) {
  count_ = std::min(count, kBlockRows);
  d_ = d;
  rows_.assign(kBlockRows * d, 0.0);
  sq_.assign(kBlockRows, 0.0);
  for (int64_t r = 0; r < count_; ++r) {
    const double* src = x + (rows ? rows[first + r] : first + r) * d;
    std::copy(src, src + d, rows_.begin() + r * d);
    double s = 0.0;
    for (int64_t k = 0; k < d; ++k) s += src[k] * src[k];
    sq_[r] = s;
  }
}

ReferencePanels::ReferencePanels(const double* x, int64_t n, int64_t d) : n_(n), d_(d) {
  const int64_t padded = round_up(std::max<int64_t>(n, 1), kPanelCols);
  packed_.assign(padded * d, 0.0);
  sq_.assign(padded, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    const double* src = x + j * d;
    double* strip = packed_.data() + (j / kMicroCols) * kMicroCols * d;
    double s = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      strip[k * kMicroCols + j % kMicroCols] = src[k];
      s += src[k] * src[k];
    }
    sq_[j] = s;
  }
}

int64_t ReferencePanels::panel_size(int64_t p) const {
  return std::min(kPanelCols, n_ - p * kPanelCols);
}

void ReferencePanels::squared_distances(const QueryBlock& block, int64_t p, double* tile) const {
  const int64_t begin = panel_begin(p);
  tile_kernel(block.rows_.data(), block.sq_.data(), round_up(block.count_, kMicroRows),
              packed_.data() + begin * d_, sq_.data() + begin, round_up(panel_size(p), kMicroCols),
              d_, tile, kPanelCols);
}

double sum_of_square_roots(const double* values, int64_t count) {
  return sum_sqrt_kernel(values, count);
}

}  // namespace scssl::detail
