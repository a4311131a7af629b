#include "distance_tiles.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <type_traits>

// The small helper kernels (square roots, sums) are compiled three times on x86-64 and the loader
// picks the best for the CPU; their results are the same on every clone (no fused operations, a
// fixed order), so they are not part of the forced paths.
#if defined(__x86_64__)
#define SCSSL_KERNEL_CLONES [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#else
#define SCSSL_KERNEL_CLONES
#endif

namespace scssl::detail {

namespace {

// The micro-tile: kRows query rows x two vectors of kVecBytes (the strip width), accumulated in
// registers. Four rows on every path: 8 accumulators, the two strip vectors and the broadcast
// query value fit the 16 registers of AVX2 and SSE2 (the earlier single shape of 4 rows x two
// 64-byte vectors needed 16 AVX2 accumulators and spilled), and on AVX-512 eight rows were
// slower than four (docs/performance.md, "Distance kernels").
template <class Real, int kVecBytes, int kRows>
[[gnu::always_inline]] inline void tile_body(const Real* query, const Real* query_sq,
                                             int64_t query_rows, const Real* strips,
                                             const Real* ref_sq, int64_t cols, int64_t d,
                                             Real* tile, int64_t tile_stride) {
  typedef Real Vec __attribute__((vector_size(kVecBytes)));
  constexpr int64_t lanes = kVecBytes / sizeof(Real), micro_cols = 2 * lanes;
  for (int64_t r = 0; r < query_rows; r += kRows) {
    const Real* q = query + r * d;
    for (int64_t c = 0; c < cols; c += micro_cols) {
      const Real* strip = strips + c * d;
      Vec acc[kRows][2] = {};
      for (int64_t k = 0; k < d; ++k) {
        Vec b0, b1;
        std::memcpy(&b0, strip + k * micro_cols, sizeof b0);
        std::memcpy(&b1, strip + k * micro_cols + lanes, sizeof b1);
        for (int64_t i = 0; i < kRows; ++i) {
          const Real a = q[i * d + k];
          acc[i][0] += a * b0;
          acc[i][1] += a * b1;
        }
      }
      Vec r0, r1;
      std::memcpy(&r0, ref_sq + c, sizeof r0);
      std::memcpy(&r1, ref_sq + c + lanes, sizeof r1);
      const Vec zero = {};
      for (int64_t i = 0; i < kRows; ++i) {
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

// One function per path and precision, each compiled for its instruction set.
#define SCSSL_TILE_FUNCTIONS(name, target, vec_bytes, rows)                                  \
  target void name(const float* q, const float* q_sq, int64_t n_q, const float* s,           \
                   const float* s_sq, int64_t cols, int64_t d, float* t, int64_t stride) {   \
    tile_body<float, vec_bytes, rows>(q, q_sq, n_q, s, s_sq, cols, d, t, stride);            \
  }                                                                                          \
  target void name(const double* q, const double* q_sq, int64_t n_q, const double* s,        \
                   const double* s_sq, int64_t cols, int64_t d, double* t, int64_t stride) { \
    tile_body<double, vec_bytes, rows>(q, q_sq, n_q, s, s_sq, cols, d, t, stride);           \
  }

#if defined(__x86_64__)
SCSSL_TILE_FUNCTIONS(avx512_tile, [[gnu::target("arch=x86-64-v4")]], 64, 4)
SCSSL_TILE_FUNCTIONS(avx2_tile, [[gnu::target("arch=x86-64-v3")]], 32, 4)
#endif
SCSSL_TILE_FUNCTIONS(vector16_tile, , 16, 4)
#undef SCSSL_TILE_FUNCTIONS

template <class Real, int kVecBytes>
constexpr int64_t strip_of = 2 * kVecBytes / static_cast<int64_t>(sizeof(Real));

#define SCSSL_KERNEL_PATH(label, function, vec_bytes, rows)                                    \
  KernelPath {                                                                                 \
    label, rows, strip_of<float, vec_bytes>, strip_of<double, vec_bytes>, &function, &function \
  }
#if defined(__x86_64__)
const KernelPath kAvx512 = SCSSL_KERNEL_PATH("avx512", avx512_tile, 64, 4);
const KernelPath kAvx2 = SCSSL_KERNEL_PATH("avx2", avx2_tile, 32, 4);
// On x86-64 the 16-byte path is the SSE2 baseline every CPU has.
const KernelPath kVector16 = SCSSL_KERNEL_PATH("sse2", vector16_tile, 16, 4);
#else
const KernelPath kVector16 = SCSSL_KERNEL_PATH("vector16", vector16_tile, 16, 4);
#endif
#undef SCSSL_KERNEL_PATH
const KernelPath kBlas{"blas", 1, 1, 1, &blas_tile, &blas_tile};
// Blocks and panels hold whole micro-tiles of every path.
static_assert(QueryBlock<float>::kBlockRows % 4 == 0);
static_assert(ReferencePanels<float>::kPanelCols % strip_of<float, 64> == 0);

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

std::string path_names() {
  std::string names;
  for (const KernelPath* p : runnable_kernel_paths()) names += std::string(", ") + p->name;
  return names.substr(2);
}

}  // namespace

std::vector<const KernelPath*> runnable_kernel_paths() {
  std::vector<const KernelPath*> paths;
#if defined(__x86_64__)
  // The features of x86-64-v3 and v4 that the compilers emit (Clang 14 knows no level names here).
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  if (v4) paths.push_back(&kAvx512);
  if (v3) paths.push_back(&kAvx2);
#endif
  // Without AVX2 the BLAS's kernels (OpenBLAS has them for every CPU) beat 16-byte vectors.
  paths.push_back(&kBlas);
  paths.push_back(&kVector16);
  return paths;
}

const KernelPath& kernel_path_named(const std::string& name) {
  const std::vector<const KernelPath*> paths = runnable_kernel_paths();
  if (name.empty() || name == "auto") return *paths.front();
  for (const KernelPath* p : paths)
    if (name == p->name) return *p;
  throw std::invalid_argument("SCSSL_DISTANCE_KERNELS=" + name +
                              ": not a distance-kernel path this CPU runs (it runs: auto, " +
                              path_names() + ", " + kTensorPath + ")");
}

bool tensor_path_forced() {
  static const bool forced = [] {
    const char* name = std::getenv("SCSSL_DISTANCE_KERNELS");
    return name != nullptr && std::string(name) == kTensorPath;
  }();
  return forced;
}

const KernelPath& kernel_path() {
  static const KernelPath* const chosen = [] {
    const char* forced = std::getenv("SCSSL_DISTANCE_KERNELS");
    return &kernel_path_named(forced && !tensor_path_forced() ? forced : "");
  }();
  return *chosen;
}

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
ReferencePanels<Real>::ReferencePanels(const double* x, int64_t n, int64_t d,
                                       const KernelPath& path)
    : path_(path), n_(n), d_(d) {
  const int64_t micro_cols = path.strip<Real>();
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
  auto kernel = [&] {
    if constexpr (std::is_same_v<Real, float>)
      return path_.float_tile;
    else
      return path_.double_tile;
  }();
  kernel(block.rows_.data(), block.sq_.data(), round_up(block.count_, path_.micro_rows),
         packed_.data() + begin * d_, sq_.data() + begin,
         round_up(panel_size(p), path_.strip<Real>()), d_, tile, kPanelCols);
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
