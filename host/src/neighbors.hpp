// The host's neighbour service for evaluators (docs/metrics.md §1.2-1.3): one k-nearest-neighbour
// search per embedding at the largest k asked for (at least 90, the scIB metrics' largest), served
// as prefixes, and the fuzzy connectivities per k. Exact search or an HNSW index (hnswlib): under
// "auto", whichever is predicted to finish first from both timed on a sample of the embedding (the
// speed of the exact search depends on the CPU's distance-kernel path), or a fixed size threshold;
// the backend used and why are recorded with the results.
#pragma once

#include <cmath>
#include <map>
#include <string>

#include "scssl/knn.hpp"

namespace scssl::host {

// How an HNSW index is built: by every core at once (hnswlib's insertion is thread-safe, but
// which cells end up linked then depends on the threads' timing, so two runs can differ in the
// few neighbours HNSW misses), or one cell after another, which gives one result per input.
enum class HnswBuild { Parallel, Sequential };

struct NeighborOptions {
  std::string backend = "auto";  // "auto" | "exact" | "hnsw"
  // "auto": 0 decides by the predicted times; a positive count searches exactly up to it.
  int64_t exact_max_cells = 0;
  HnswBuild hnsw_build = HnswBuild::Parallel;
  // Where the exact search's distance screen runs (run.device).
  torch::Device device = torch::kCPU;
};

// How "auto" decides without a fixed threshold: up to kAlwaysExactCells the exact search, else
// both backends timed on evenly spaced cells of the embedding and scaled up: the exact search on
// kExactTimingCells as n^2 (fewer cells would time mostly fixed costs), the HNSW index on
// kTimingSampleCells as n^kHnswGrowth, slightly worse than n log n as the index outgrows the
// caches (measured from 4096 to 100 000 cells, docs/performance.md).
constexpr int64_t kAlwaysExactCells = 50000, kTimingSampleCells = 4096, kExactTimingCells = 16384;
constexpr double kHnswGrowth = 4.0 / 3.0;

// The predicted seconds of each backend for the whole embedding (NaN when not measured).
struct BackendPrediction {
  double exact_seconds = std::nan(""), hnsw_seconds = std::nan("");
};

// Whether this build has the approximate backend (SCSSL_HAVE_HNSWLIB, a public definition of
// the engine, so that everything built with it agrees).
inline bool hnsw_available() {
#ifdef SCSSL_HAVE_HNSWLIB
  return true;
#else
  return false;
#endif
}

// Self-first neighbour lists from an HNSW index: the candidates' distances are recomputed exactly
// and sorted with ties by the smaller index, so only recall can differ from knn_self. The queries
// run on every core; the build as `build` says.
Neighbors knn_self_hnsw(const torch::Tensor& x, int64_t k, HnswBuild build = HnswBuild::Parallel);

// Self-first neighbour lists from a stored cells x cells distance graph (scanpy's
// obsp['distances']: each row the distances to that cell's neighbours, the cell itself left out):
// each cell first at distance 0, then its stored neighbours by distance, ties by the smaller
// index, cut to the fewest any cell has. BadData naming `source` for a cell without neighbours or
// a negative distance.
Neighbors lists_from_graph(const std::vector<int64_t>& indptr, const std::vector<int32_t>& indices,
                           const std::vector<float>& distances, const std::string& source);

class NeighborCache {
 public:
  explicit NeighborCache(torch::Tensor embedding, const NeighborOptions& options = {},
                         int64_t min_k = 90);
  const Neighbors& get(int64_t k);
  // Serves `lists` (self first, as knn_self gives them) instead of searching: a graph stored with
  // the data (`evaluate --graph`). A k above theirs is then a BadData naming `source`.
  void use_given(Neighbors lists, const std::string& source);
  // The fuzzy connectivities of the k-neighbour lists, computed once per k.
  const SparseGraph& connectivities(int64_t k);
  // The k of the search done so far (0 if none), for the results.
  int64_t searched_k() const { return full_.indices.defined() ? full_.indices.size(1) : 0; }
  // "exact" or "hnsw" once a search ran (before: the forced backend, or "auto"); "given" for
  // lists from use_given.
  const std::string& backend() const { return backend_; }
  // "config" (evaluation.neighbors), "size" (exact_max_cells or a small embedding), "measured",
  // or with given lists where they came from.
  const std::string& chosen_by() const { return chosen_by_; }
  const BackendPrediction& prediction() const { return prediction_; }
  // What evaluators share with each other about this embedding (scssl_host_api.share_result).
  std::map<std::string, torch::Tensor> shared_results;

 private:
  torch::Tensor embedding_;
  void choose_backend(int64_t k);
  int64_t min_k_, exact_max_cells_;
  HnswBuild hnsw_build_;
  torch::Device device_;
  std::string backend_, chosen_by_, given_source_;
  BackendPrediction prediction_;
  Neighbors full_;
  std::map<int64_t, Neighbors> prefixes_;
  std::map<int64_t, SparseGraph> connectivities_;
};

}  // namespace scssl::host
