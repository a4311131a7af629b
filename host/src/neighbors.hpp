// The host's neighbour service for evaluators (docs/metrics.md §1.2-1.3): one k-nearest-neighbour
// search per embedding at the largest k asked for (at least 90, the scIB metrics' largest), served
// as prefixes, and the fuzzy connectivities per k. Exact search up to a size threshold, an HNSW
// index (hnswlib) above it; the backend used is recorded with the results.
#pragma once

#include <map>
#include <string>

#include "scssl/knn.hpp"

namespace scssl::host {

struct NeighborOptions {
  std::string backend = "auto";      // "auto" | "exact" | "hnsw"
  int64_t exact_max_cells = 250000;  // "auto" searches exactly up to this many cells
};

// Whether this build has the approximate backend.
bool hnsw_available();

// Self-first neighbour lists from an HNSW index: the candidates' distances are recomputed exactly
// and sorted with ties by the smaller index, so only recall can differ from knn_self. Insertion is
// sequential, so one input gives one result.
Neighbors knn_self_hnsw(const torch::Tensor& x, int64_t k);

class NeighborCache {
 public:
  explicit NeighborCache(torch::Tensor embedding, const NeighborOptions& options = {},
                         int64_t min_k = 90);
  const Neighbors& get(int64_t k);
  // The fuzzy connectivities of the k-neighbour lists, computed once per k.
  const SparseGraph& connectivities(int64_t k);
  // The k of the search done so far (0 if none), for the results.
  int64_t searched_k() const { return full_.indices.defined() ? full_.indices.size(1) : 0; }
  // "exact" or "hnsw".
  const std::string& backend() const { return backend_; }
  // What evaluators share with each other about this embedding (scssl_host_api.share_result).
  std::map<std::string, torch::Tensor> shared_results;

 private:
  torch::Tensor embedding_;
  int64_t min_k_;
  std::string backend_;
  Neighbors full_;
  std::map<int64_t, Neighbors> prefixes_;
  std::map<int64_t, SparseGraph> connectivities_;
};

}  // namespace scssl::host
