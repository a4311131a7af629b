#include "scssl/knn.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include "distance_tiles.hpp"
#include "scssl/params.hpp"

namespace scssl {

namespace {

// Exact float64 sum_k (a_k - b_k)^2, or sum_k a_k b_k, over k < d: eight partial sums in a fixed
// order (vectorisable), and no fused multiply-adds (this file is built without contraction), so
// the value is the same on every x86-64 CPU.
template <bool kDot>
double exact_pair(const double* a, const double* b, int64_t d) {
  constexpr int64_t kPartials = 8;
  double partial[kPartials] = {};
  int64_t k = 0;
  for (; k + kPartials <= d; k += kPartials)
    for (int64_t t = 0; t < kPartials; ++t) {
      const double x = kDot ? a[k + t] : a[k + t] - b[k + t];
      partial[t] += x * (kDot ? b[k + t] : x);
    }
  for (int64_t t = 0; k < d; ++k, ++t) {
    const double x = kDot ? a[k] : a[k] - b[k];
    partial[t] += x * (kDot ? b[k] : x);
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

// Bit t set where values[t] <= limit, for t < kScreenGroup.
constexpr int64_t kScreenGroup = 16;
uint32_t columns_at_most(const float* values, float limit) {
#if defined(__SSE2__)
  const __m128 bound = _mm_set1_ps(limit);
  uint32_t mask = 0;
  for (int q = 0; q < 4; ++q)
    mask |=
        static_cast<uint32_t>(_mm_movemask_ps(_mm_cmple_ps(_mm_loadu_ps(values + 4 * q), bound)))
        << (4 * q);
  return mask;
#else
  uint32_t mask = 0;
  for (int t = 0; t < kScreenGroup; ++t) mask |= static_cast<uint32_t>(values[t] <= limit) << t;
  return mask;
#endif
}

// The same for float64 tile values.
uint32_t columns_at_most(const double* values, float limit) {
  uint32_t mask = 0;
  for (int t = 0; t < kScreenGroup; ++t) mask |= static_cast<uint32_t>(values[t] <= limit) << t;
  return mask;
}

// The candidates of one query row by approximate value: every candidate within `slack` of the
// k-th best approximate value seen so far. When every approximation is within slack / 2 of its
// exact value, these include the exact k best. Candidates are appended and, when the list has
// grown enough, cut back: cheaper than a heap when most candidates never enter at all. A
// candidate is one 64-bit key, (approximate value bits << 32) | index, which orders like
// (value, index) because the values are non-negative floats.
class Candidates {
 public:
  // `relative`: a further slack in proportion to the k-th best, for approximations that are
  // roundings of more exact values.
  Candidates(int64_t k, double slack, double relative = 0.0)
      : k_(k), slack_(slack), relative_(relative) {
    keys_.reserve(2 * k);
  }
  // Approximate values above this cannot belong any more.
  float bound() const { return bound_; }
  void offer(float approx, int64_t index) {
    if (approx > bound_) return;
    uint32_t bits;
    std::memcpy(&bits, &approx, sizeof bits);
    keys_.push_back(uint64_t{bits} << 32 | static_cast<uint32_t>(index));
    if (static_cast<int64_t>(keys_.size()) >= limit_) cut();
  }
  // How many candidates are left once cut back: near k when the screen is tight.
  int64_t size() {
    if (static_cast<int64_t>(keys_.size()) > k_) cut();
    return static_cast<int64_t>(keys_.size());
  }
  // The k best by exact value (`exact(index)`), nearest first, ties by the smaller index.
  template <class Exact>
  const std::vector<std::pair<double, int64_t>>& best(Exact exact) {
    if (static_cast<int64_t>(keys_.size()) > k_) cut();
    best_.clear();
    for (uint64_t key : keys_) {
      const int64_t index = static_cast<uint32_t>(key);
      best_.emplace_back(exact(index), index);
    }
    std::sort(best_.begin(), best_.end());
    if (static_cast<int64_t>(best_.size()) > k_) best_.resize(k_);
    return best_;
  }

 private:
  static float value_of(uint64_t key) {
    const auto bits = static_cast<uint32_t>(key >> 32);
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
  void cut() {
    std::nth_element(keys_.begin(), keys_.begin() + (k_ - 1), keys_.end());
    const double limit = static_cast<double>(value_of(keys_[k_ - 1])) * (1.0 + relative_) + slack_;
    bound_ = std::nextafter(static_cast<float>(limit), std::numeric_limits<float>::infinity());
    keys_.erase(std::remove_if(keys_.begin(), keys_.end(),
                               [&](uint64_t key) { return value_of(key) > bound_; }),
                keys_.end());
    limit_ = std::max<int64_t>(2 * k_, 2 * static_cast<int64_t>(keys_.size()));
  }
  int64_t k_;
  double slack_, relative_;
  float bound_ = std::numeric_limits<float>::infinity();
  int64_t limit_ = 2 * k_;
  std::vector<uint64_t> keys_;
  std::vector<std::pair<double, int64_t>> best_;
};

// Full float32 products for the screen while at least one thread screens on a GPU: its error
// bound assumes them, and cuBLAS's TF32 mode (10-bit mantissas, off by default) would break it.
// The first thread in turns TF32 off, the last one out restores the setting.
class FullFloat32Products {
 public:
  FullFloat32Products() {
    std::lock_guard<std::mutex> hold(lock_);
    if (users_++ == 0) {
      restore_ = at::globalContext().allowTF32CuBLAS();
      if (restore_) at::globalContext().setAllowTF32CuBLAS(false);
    }
  }
  ~FullFloat32Products() {
    std::lock_guard<std::mutex> hold(lock_);
    if (--users_ == 0 && restore_) at::globalContext().setAllowTF32CuBLAS(true);
  }
  FullFloat32Products(const FullFloat32Products&) = delete;
  FullFloat32Products& operator=(const FullFloat32Products&) = delete;

 private:
  static inline std::mutex lock_;
  static inline int users_ = 0;
  static inline bool restore_ = false;
};

// Whether a float32 screen is too loose to be worth it: more than half of `rows` query rows each
// kept over four times the candidates they need (`over` of them did). Both the tile and the
// tensor path then switch to float64 products.
bool float32_screen_too_loose(int64_t over, int64_t rows) { return 2 * over > rows; }
constexpr int64_t kLooseFactor = 4;

// What the tensor path's screen keeps of one block of query rows, in CPU memory: the reference
// rows (cols) and d^2 of every kept pair, row r's pairs at row_bounds[r] .. row_bounds[r + 1] - 1;
// `float64`: whether d^2 came from float64 products (else float32).
struct ScreenedPairs {
  torch::Tensor row_bounds, cols, d2;
  bool float64 = false;
};

// The tensor path's screen (docs/performance.md, "Distance kernels"): d^2 of blocks of query rows
// against every reference row as LibTorch operations on `device`, keeping for each row every
// pair within its slack of its `wanted`-th smallest d^2 (its own row left out with self_first).
// `take(first, pairs)` gets each block's pairs, blocks in order. The inputs are float64 CPU
// tensors, the norms exact; slack32 / slack64 are the error bounds of float32 / float64 products
// (the tile path's). Products are float32 until a block where more than half of the rows keep
// over four times the pairs they need (the bound is loose, as in a diffusion map), float64 after.
template <class Take>
void screen_with_tensors(const torch::Tensor& ref, const torch::Tensor& ref_sq,
                         const torch::Tensor& qry, const torch::Tensor& qry_sq,
                         const torch::Tensor& slack32, const torch::Tensor& slack64, int64_t wanted,
                         bool self_first, const torch::Device& device, Take take) {
  std::optional<FullFloat32Products> full_products;
  if (device.is_cuda()) full_products.emplace();
  const auto on_device = torch::TensorOptions().device(device);
  const int64_t n_ref = ref.size(0), n_query = qry.size(0);
  // Blocks of about 2^28 distances (1 GiB of float32) on a GPU, 2^24 on the CPU.
  const int64_t budget = int64_t{1} << (device.is_cpu() ? 24 : 28);
  const int64_t rows = std::clamp<int64_t>(budget / n_ref, 1, 8192);
  bool float64 = false;
  torch::Tensor ref_d, ref_sq_d;  // on the device, in the products' type
  for (int64_t first = 0; first < n_query; first += rows) {
    const auto type = float64 ? torch::kFloat64 : torch::kFloat32;
    if (!ref_d.defined() || ref_d.scalar_type() != type) {
      ref_d = ref.to(device, type);
      ref_sq_d = ref_sq.to(device, type).unsqueeze(0);
    }
    const int64_t count = std::min(rows, n_query - first);
    const torch::Tensor q = qry.slice(0, first, first + count).to(device, type);
    const torch::Tensor q_sq = qry_sq.slice(0, first, first + count).to(device, type);
    torch::Tensor d2 = torch::addmm(q_sq.unsqueeze(1) + ref_sq_d, q, ref_d.t(), 1.0, -2.0);
    d2.clamp_min_(0.0);
    if (self_first)
      d2.scatter_(1,
                  torch::arange(first, first + count, on_device.dtype(torch::kInt64)).unsqueeze(1),
                  std::numeric_limits<double>::infinity());
    const torch::Tensor kth =
        std::get<0>(d2.topk(wanted, 1, /*largest=*/false, /*sorted=*/false)).amax(1);
    // The limit in float64, rounded up to the products' type.
    const torch::Tensor& slack = float64 ? slack64 : slack32;
    torch::Tensor limit =
        (kth.to(torch::kFloat64) + slack.slice(0, first, first + count).to(device)).to(type);
    limit =
        torch::nextafter(limit, torch::full_like(limit, std::numeric_limits<double>::infinity()));
    const torch::Tensor keep = d2 <= limit.unsqueeze(1);
    const torch::Tensor kept = keep.sum(1);
    ScreenedPairs pairs;
    pairs.float64 = float64;
    pairs.cols = keep.nonzero().select(1, 1).to(torch::kCPU).contiguous();  // rows ascending
    pairs.d2 = d2.masked_select(keep).to(torch::kCPU, torch::kFloat64).contiguous();
    pairs.row_bounds = torch::zeros({count + 1}, torch::kInt64);
    pairs.row_bounds.slice(0, 1).copy_(kept.cumsum(0).to(torch::kCPU));
    take(first, pairs);
    if (!float64 &&
        float32_screen_too_loose((kept > kLooseFactor * wanted).sum().item<int64_t>(), count))
      float64 = true;
  }
}

// Shared by knn_exact and knn_self; with self_first the query rows are the reference rows and
// each row's own index is ranked before everything else.
//
// Distances come in float32 tiles (twice the speed of float64). They select, per query row, the
// candidates whose approximate distance lies within twice the float32 error bound of the k-th
// best; only those are measured again exactly in float64 and ranked. The result is that of an
// all-float64 search (exact distances, ties by the smaller index), whatever the thread count.
// The metric is a template parameter so that the hot loops test it at compile time.
template <bool cosine>
Neighbors search(const torch::Tensor& reference, const torch::Tensor& query, int64_t k,
                 const bool self_first, const torch::Device& device) {
  TORCH_CHECK(reference.dim() == 2 && query.dim() == 2 && reference.size(1) == query.size(1),
              "knn_exact: reference and query must be matrices with the same number of columns");
  torch::Tensor ref = reference.to(torch::kCPU, torch::kFloat64);
  torch::Tensor qry = query.to(torch::kCPU, torch::kFloat64);
  if (cosine) {
    ref = ref / ref.norm(2, 1, true).clamp_min(1e-300);
    qry = qry / qry.norm(2, 1, true).clamp_min(1e-300);
  } else {
    // Distances do not change; smaller norms make a smaller float32 error.
    const torch::Tensor centre = ref.mean(0, /*keepdim=*/true);
    ref = ref - centre;
    qry = qry - centre;
  }
  ref = ref.contiguous();
  qry = qry.contiguous();
  const int64_t n_ref = ref.size(0), n_query = qry.size(0), d = ref.size(1);
  k = std::min(k, n_ref);
  Neighbors out{torch::empty({n_query, k}, torch::kInt64),
                torch::empty({n_query, k}, torch::kFloat32)};
  if (n_query == 0 || k == 0) return out;
  const int64_t wanted = self_first ? k - 1 : k;
  if (wanted == 0) {  // k = 1 with self first: every row is its own only neighbour
    out.indices.copy_(torch::arange(n_query, torch::kInt64).unsqueeze(1));
    out.distances.zero_();
    return out;
  }
  const double* ref_rows = ref.data_ptr<double>();
  const double* query_rows = qry.data_ptr<double>();
  const torch::Tensor ref_sq_t = ref.pow(2).sum(1).contiguous(),
                      qry_sq_t = qry.pow(2).sum(1).contiguous();
  const double* ref_sq = ref_sq_t.data_ptr<double>();
  const double* query_sq = qry_sq_t.data_ptr<double>();
  const double max_ref_sq = ref_sq_t.max().item<double>();
  // |float32 d^2 - d^2| <= (d + 7) u (|q|^2 + |x|^2) with u = 2^-24 (inputs rounded to float32,
  // a d-term float32 dot product, the final sums). Taken twice over as the error bound e of a
  // row, the candidates kept are those within 2e of the k-th best; cosine values are d^2 / 2,
  // so there the slack is e.
  // With float64 tiles u = 2^-53, and the approximations are those values rounded to float32.
  const double error_per_norm = 2.0 * static_cast<double>(d + 7) * std::ldexp(1.0, -24);
  const double error_per_norm64 = 2.0 * static_cast<double>(d + 7) * std::ldexp(1.0, -53);
  auto new_list = [&](int64_t i, bool float64_tiles = false) {
    const double error =
        (float64_tiles ? error_per_norm64 : error_per_norm) * (query_sq[i] + max_ref_sq);
    return Candidates(wanted, cosine ? error : 2.0 * error,
                      float64_tiles ? std::ldexp(1.0, -21) : 0.0);
  };
  // The approximate value from a tile's d^2; cosine: 1 - q.x recovered from d^2 and the exact
  // norms (right for zero rows too), at least 0.
  auto approx = [&](int64_t i, double d2, int64_t j) {
    if constexpr (!cosine) return static_cast<float>(d2);
    return static_cast<float>(std::max(0.0, 1.0 - (query_sq[i] + ref_sq[j] - d2) / 2.0));
  };
  int64_t* out_idx = out.indices.data_ptr<int64_t>();
  float* out_dist = out.distances.data_ptr<float>();
  // Row i's neighbours: its candidates ranked by exact float64 value.
  auto write_row = [&](int64_t i, Candidates& list) {
    const double* q = query_rows + i * d;
    int64_t* idx_row = out_idx + i * k;
    float* dist_row = out_dist + i * k;
    int64_t col = 0;
    if (self_first) {
      idx_row[0] = i;
      dist_row[0] = 0.0f;
      col = 1;
    }
    auto exact = [&](int64_t j) {
      const double* x = ref_rows + j * d;
      return cosine ? 1.0 - exact_pair<true>(q, x, d) : exact_pair<false>(q, x, d);
    };
    for (const auto& [value, j] : list.best(exact)) {
      idx_row[col] = j;
      dist_row[col++] = static_cast<float>(cosine ? value : std::sqrt(value));
    }
  };

  if (!device.is_cpu() || detail::tensor_path_forced()) {
    // The tensor path: the screen on `device`, then the same exact ranking on the CPU.
    const torch::Tensor norms = qry_sq_t + max_ref_sq;
    screen_with_tensors(
        ref, ref_sq_t, qry, qry_sq_t, 2.0 * error_per_norm * norms, 2.0 * error_per_norm64 * norms,
        wanted, self_first, device, [&](int64_t first, const ScreenedPairs& pairs) {
          const int64_t* cols = pairs.cols.data_ptr<int64_t>();
          const double* d2 = pairs.d2.data_ptr<double>();
          const int64_t* bounds = pairs.row_bounds.data_ptr<int64_t>();
          at::parallel_for(0, pairs.row_bounds.numel() - 1, 16, [&](int64_t lo, int64_t hi) {
            for (int64_t r = lo; r < hi; ++r) {
              const int64_t i = first + r;
              Candidates list = new_list(i, pairs.float64);
              for (int64_t e = bounds[r]; e < bounds[r + 1]; ++e)
                list.offer(approx(i, d2[e], cols[e]), cols[e]);
              write_row(i, list);
            }
          });
        });
    return out;
  }

  // The tile screen of query rows first .. first + count - 1 (or rows[first] .. when `rows` is
  // given) against every panel, each into its list in `lists`.
  auto screen_rows = [&](const auto& panels, auto& block, auto& tile,
                         std::vector<Candidates>& lists, int64_t first, int64_t count,
                         const int64_t* rows) {
    constexpr int64_t kPanel = std::remove_reference_t<decltype(panels)>::kPanelCols;
    const bool skip_self = self_first;  // a local, so the hot loop keeps it in a register
    block.load(query_rows, d, first, count, rows);
    for (int64_t p = 0; p < panels.panels(); ++p) {
      panels.squared_distances(block, p, tile.data());
      const int64_t begin = panels.panel_begin(p), size = panels.panel_size(p);
      for (int64_t r = 0; r < count; ++r) {
        Candidates& list = lists[r];
        const int64_t i = rows ? rows[first + r] : first + r;
        // The screen admits a superset of what `list` takes, in d^2 units, rounded up to
        // float32.
        auto screen_of = [&](float bound) {
          if constexpr (!cosine) return bound;
          const double d2 = 2.0 * bound - 2.0 + query_sq[i] + max_ref_sq;
          return std::nextafter(static_cast<float>(d2), std::numeric_limits<float>::infinity());
        };
        float screen = screen_of(list.bound());
        const auto* row = &tile[r * kPanel];
        // Sixteen columns at a time (tile rows are padded to whole groups): most groups have
        // no column under the screen, and in the others only the columns that are get visited.
        for (int64_t g = 0; g < size; g += kScreenGroup) {
          for (uint32_t mask = columns_at_most(row + g, screen); mask != 0; mask &= mask - 1) {
            const int64_t j = g + __builtin_ctz(mask);
            const int64_t index = begin + j;
            // The screen may have tightened since the mask was taken.
            if (j >= size || !(row[j] <= screen) || (skip_self && index == i)) continue;
            list.offer(approx(i, row[j], index), index);
            screen = screen_of(list.bound());
          }
        }
      }
    }
  };
  auto screen_all = [&](const auto& panels, bool float64_tiles) {
    using Real = typename std::remove_reference_t<decltype(panels)>::value_type;
    constexpr int64_t kBlock = detail::QueryBlock<Real>::kBlockRows;
    constexpr int64_t kPanel = std::remove_reference_t<decltype(panels)>::kPanelCols;
    at::parallel_for(
        0, (n_query + kBlock - 1) / kBlock, 1, [&](int64_t block_lo, int64_t block_hi) {
          std::vector<Real> tile(kBlock * kPanel);
          std::vector<Candidates> lists;
          detail::QueryBlock<Real> block;
          for (int64_t b = block_lo; b < block_hi; ++b) {
            const int64_t first = b * kBlock, count = std::min(kBlock, n_query - first);
            lists.clear();
            for (int64_t r = 0; r < count; ++r) lists.push_back(new_list(first + r, float64_tiles));
            screen_rows(panels, block, tile, lists, first, count, nullptr);
            for (int64_t r = 0; r < count; ++r) write_row(first + r, lists[r]);
          }
        });
  };

  // float32 tiles, twice as fast as float64, unless their error bound is loose against the
  // distances ranked: then most reference rows would pass the screen and be measured again one
  // by one (a diffusion map, whose few far-out cells make the largest norm huge next to the
  // distances between neighbours). Probed on evenly spaced query rows: float64 tiles when more
  // than half of them keep over four times the candidates they need. Either way the lists are
  // exact.
  {
    const detail::ReferencePanels<float> panels(ref_rows, n_ref, d);
    constexpr int64_t kProbe = detail::QueryBlock<float>::kBlockRows;
    const int64_t probed = std::min(kProbe, n_query);
    std::vector<int64_t> rows(probed);
    for (int64_t r = 0; r < probed; ++r) rows[r] = r * n_query / probed;
    std::vector<Candidates> lists;
    for (int64_t i : rows) lists.push_back(new_list(i));
    std::vector<float> tile(kProbe * detail::ReferencePanels<float>::kPanelCols);
    detail::QueryBlock<float> block;
    screen_rows(panels, block, tile, lists, 0, probed, rows.data());
    const auto over = std::count_if(lists.begin(), lists.end(), [&](Candidates& list) {
      return list.size() > kLooseFactor * wanted;
    });
    if (!float32_screen_too_loose(over, probed)) {
      screen_all(panels, false);
      return out;
    }
  }
  screen_all(detail::ReferencePanels<double>(ref_rows, n_ref, d), true);
  return out;
}

}  // namespace

std::vector<std::string> distance_kernel_paths() {
  std::vector<std::string> names;
  for (const detail::KernelPath* path : detail::runnable_kernel_paths())
    names.push_back(path->name);
  return names;
}

std::string distance_kernels() {
  if (detail::tensor_path_forced()) return detail::kTensorPath;
  try {
    return detail::kernel_path().name;
  } catch (const std::invalid_argument& e) {
    throw InvalidArgument(e.what());
  }
}

Neighbors knn_exact(const torch::Tensor& reference, const torch::Tensor& query, int64_t k,
                    Distance distance, const torch::Device& device) {
  return distance == Distance::Cosine ? search<true>(reference, query, k, false, device)
                                      : search<false>(reference, query, k, false, device);
}

Neighbors knn_self(const torch::Tensor& x, int64_t k, const torch::Device& device) {
  return search<false>(x, x, k, true, device);
}

namespace {

// sigma of one row by UMAP's bisection: sum over the non-self columns of exp(-(d - rho) / sigma)
// (1 where d <= rho) should equal log2 k.
double smooth_sigma(const float* dist, int64_t k, double rho) {
  const double target = std::log2(static_cast<double>(k));
  double lo = 0.0, hi = std::numeric_limits<double>::infinity(), mid = 1.0;
  for (int iter = 0; iter < 64; ++iter) {
    double sum = 0.0;
    for (int64_t j = 1; j < k; ++j) {
      const double gap = dist[j] - rho;
      sum += gap > 0.0 ? std::exp(-gap / mid) : 1.0;
    }
    if (std::abs(sum - target) < 1e-5) break;
    if (sum > target) {
      hi = mid;
      mid = (lo + hi) / 2.0;
    } else {
      lo = mid;
      mid = std::isinf(hi) ? mid * 2.0 : (lo + hi) / 2.0;
    }
  }
  return mid;
}

}  // namespace

SparseGraph fuzzy_connectivities(const Neighbors& nn) {
  TORCH_CHECK(nn.indices.dim() == 2 && nn.distances.sizes() == nn.indices.sizes(),
              "fuzzy_connectivities: indices and distances must be matrices of one shape");
  torch::Tensor idx_t = nn.indices.to(torch::kInt64).contiguous();
  torch::Tensor dist_t = nn.distances.to(torch::kFloat32).contiguous();
  const int64_t n = idx_t.size(0), k = idx_t.size(1);
  const int64_t* idx = idx_t.data_ptr<int64_t>();
  const float* dist = dist_t.data_ptr<float>();
  double all_mean = 0.0;
  for (int64_t e = 0; e < n * k; ++e) all_mean += dist[e];
  all_mean /= static_cast<double>(std::max<int64_t>(1, n * k));

  // Directed memberships A as per-row (column, weight) lists, sorted by column.
  std::vector<std::vector<std::pair<int64_t, double>>> forward(n);
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float* row = dist + i * k;
      double rho = 0.0, row_mean = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        row_mean += row[j];
        if (row[j] > 0.0f && (rho == 0.0 || row[j] < rho)) rho = row[j];
      }
      row_mean /= static_cast<double>(k);
      const double sigma =
          std::max(smooth_sigma(row, k, rho), 1e-3 * (rho > 0.0 ? row_mean : all_mean));
      for (int64_t j = 0; j < k; ++j) {
        const int64_t c = idx[i * k + j];
        if (c < 0 || c == i) continue;
        const double gap = row[j] - rho;
        const double w = gap <= 0.0 || sigma == 0.0 ? 1.0 : std::exp(-gap / sigma);
        if (w > 0.0) forward[i].emplace_back(c, w);
      }
      std::sort(forward[i].begin(), forward[i].end());
    }
  });
  // A^T, built row by row so that each transposed row is already sorted by column.
  std::vector<std::vector<std::pair<int64_t, double>>> backward(n);
  for (int64_t i = 0; i < n; ++i)
    for (const auto& [c, w] : forward[i]) backward[c].emplace_back(i, w);

  // Fuzzy union W = A + A^T - A o A^T, merging the two sorted lists of every row.
  std::vector<int64_t> indptr(n + 1, 0), columns;
  std::vector<double> weights;
  columns.reserve(2 * n * k);
  weights.reserve(2 * n * k);
  for (int64_t i = 0; i < n; ++i) {
    const auto &a = forward[i], &b = backward[i];
    size_t p = 0, q = 0;
    while (p < a.size() || q < b.size()) {
      if (q == b.size() || (p < a.size() && a[p].first < b[q].first)) {
        columns.push_back(a[p].first);
        weights.push_back(a[p++].second);
      } else if (p == a.size() || b[q].first < a[p].first) {
        columns.push_back(b[q].first);
        weights.push_back(b[q++].second);
      } else {
        columns.push_back(a[p].first);
        weights.push_back(a[p].second + b[q].second - a[p].second * b[q].second);
        ++p, ++q;
      }
    }
    indptr[i + 1] = static_cast<int64_t>(columns.size());
  }
  const auto nnz = static_cast<int64_t>(columns.size());
  return {torch::tensor(indptr, torch::kInt64),
          torch::from_blob(columns.data(), {nnz}, torch::kInt64).clone(),
          torch::from_blob(weights.data(), {nnz}, torch::kFloat64).clone()};
}

}  // namespace scssl
