#include "neighbors.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <limits>
#include <thread>
#include <vector>

#include "scssl/params.hpp"

#ifdef SCSSL_HAVE_HNSWLIB
#include <hnswlib/hnswlib.h>
#endif

namespace scssl::host {

#ifdef SCSSL_HAVE_HNSWLIB
Neighbors knn_self_hnsw(const torch::Tensor& input, int64_t k, HnswBuild build) {
  torch::Tensor x = input.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = x.size(0), d = x.size(1);
  k = std::min(k, n);
  const float* data = x.data_ptr<float>();
  hnswlib::L2Space space(static_cast<size_t>(d));
  hnswlib::HierarchicalNSW<float> index(&space, static_cast<size_t>(n), 16, 200, 100);
  const int64_t workers = std::max<int64_t>(1, std::thread::hardware_concurrency());
  if (build == HnswBuild::Sequential || workers == 1 || n < 2) {
    for (int64_t i = 0; i < n; ++i) index.addPoint(data + i * d, static_cast<size_t>(i));
  } else {
    // hnswlib's insertion is thread-safe; the first cell is the entry point of every later one.
    index.addPoint(data, 0);
    std::atomic<int64_t> next{1};
    auto insert = [&] {
      for (int64_t i = next++; i < n; i = next++)
        index.addPoint(data + i * d, static_cast<size_t>(i));
    };
    std::vector<std::thread> inserters;
    for (int64_t w = 0; w < workers; ++w) inserters.emplace_back(insert);
    for (auto& t : inserters) t.join();
  }
  // A wide beam keeps recall near 1 at k = 90; a few extra candidates absorb self and ties.
  const auto beam = static_cast<size_t>(std::max<int64_t>(2 * k, 200));
  index.setEf(beam);
  const auto candidates = static_cast<size_t>(std::min<int64_t>(n, k + 8));

  Neighbors out{torch::empty({n, k}, torch::kInt64), torch::empty({n, k}, torch::kFloat32)};
  int64_t* out_idx = out.indices.data_ptr<int64_t>();
  float* out_dist = out.distances.data_ptr<float>();
  auto search_rows = [&](int64_t lo, int64_t hi) {
    std::vector<std::pair<double, int64_t>> found;
    for (int64_t i = lo; i < hi; ++i) {
      auto heap = index.searchKnn(data + i * d, candidates);
      found.clear();
      for (; !heap.empty(); heap.pop()) {
        const auto j = static_cast<int64_t>(heap.top().second);
        if (j == i) continue;
        double sq = 0.0;
        for (int64_t c = 0; c < d; ++c) {
          const double diff = static_cast<double>(data[i * d + c]) - data[j * d + c];
          sq += diff * diff;
        }
        found.emplace_back(sq, j);
      }
      std::sort(found.begin(), found.end());
      out_idx[i * k] = i;
      out_dist[i * k] = 0.0f;
      for (int64_t col = 1; col < k; ++col) {
        const bool have = col - 1 < static_cast<int64_t>(found.size());
        out_idx[i * k + col] = have ? found[col - 1].second : -1;
        out_dist[i * k + col] = have ? static_cast<float>(std::sqrt(found[col - 1].first)) : 0.0f;
      }
    }
  };
  std::vector<std::thread> threads;
  const int64_t chunk = (n + workers - 1) / workers;
  for (int64_t w = 0; w < workers; ++w)
    threads.emplace_back(search_rows, std::min(n, w * chunk), std::min(n, (w + 1) * chunk));
  for (auto& t : threads) t.join();
  return out;
}
#else
Neighbors knn_self_hnsw(const torch::Tensor&, int64_t, HnswBuild) {
  throw InvalidArgument("this build has no approximate neighbour backend (hnswlib was not found)");
}
#endif

NeighborCache::NeighborCache(torch::Tensor embedding, const NeighborOptions& options, int64_t min_k)
    : embedding_(std::move(embedding)),
      min_k_(min_k),
      exact_max_cells_(options.exact_max_cells),
      hnsw_build_(options.hnsw_build),
      device_(options.device),
      backend_(options.backend),
      chosen_by_("config") {
  if (backend_ != "exact" && backend_ != "hnsw" && backend_ != "auto")
    throw InvalidArgument("unknown neighbour backend '" + options.backend +
                          "' (expected auto, exact or hnsw)");
  if (backend_ == "hnsw" && !hnsw_available())
    throw InvalidArgument("neighbour backend 'hnsw' is not available: this build has no hnswlib");
}

void NeighborCache::choose_backend(int64_t k) {
  const int64_t n = embedding_.size(0);
  chosen_by_ = "size";
  if (!hnsw_available() || (exact_max_cells_ > 0 && n <= exact_max_cells_) ||
      (exact_max_cells_ == 0 && n <= kAlwaysExactCells)) {
    backend_ = "exact";
    return;
  }
  if (exact_max_cells_ > 0) {
    backend_ = "hnsw";
    return;
  }
  chosen_by_ = "measured";
  auto sample = [&](int64_t cells) {
    const int64_t step = n / cells;
    return embedding_.slice(0, 0, step * cells, step).contiguous();
  };
  auto seconds = [](auto&& search) {
    const auto start = std::chrono::steady_clock::now();
    search();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // The exact search of many cells is its distance tiles, n^2 of them: timed with k = 2, whose
  // candidate lists are too short to matter, as they are at large n for any k; after a small
  // search that starts the threads.
  knn_self(sample(kTimingSampleCells / 4), 2, device_);
  const double exact = seconds([&] { knn_self(sample(kExactTimingCells), 2, device_); });
  const double hnsw = seconds([&] { knn_self_hnsw(sample(kTimingSampleCells), k, hnsw_build_); });
  const double exact_scale = static_cast<double>(n) / kExactTimingCells;
  prediction_.exact_seconds = exact * exact_scale * exact_scale;
  prediction_.hnsw_seconds =
      hnsw * std::pow(static_cast<double>(n) / kTimingSampleCells, kHnswGrowth);
  backend_ = prediction_.exact_seconds <= prediction_.hnsw_seconds ? "exact" : "hnsw";
}

Neighbors lists_from_graph(const std::vector<int64_t>& indptr, const std::vector<int32_t>& indices,
                           const std::vector<float>& distances, const std::string& source) {
  const int64_t n = static_cast<int64_t>(indptr.size()) - 1;
  // Entries of a row other than the cell itself, nearest first.
  auto row = [&](int64_t i) {
    std::vector<std::pair<float, int64_t>> entries;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
      if (indices[p] == i) continue;
      if (!(distances[p] >= 0))
        throw BadData(source + ": cell " + std::to_string(i) + " has a negative distance (" +
                      std::to_string(distances[p]) + ")");
      entries.emplace_back(distances[p], indices[p]);
    }
    std::sort(entries.begin(), entries.end());
    return entries;
  };
  int64_t fewest = std::numeric_limits<int64_t>::max();
  for (int64_t i = 0; i < n; ++i) {
    int64_t count = 0;
    for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) count += indices[p] != i;
    if (count == 0)
      throw BadData(source + ": cell " + std::to_string(i) +
                    " has no neighbour (an empty row of the graph)");
    fewest = std::min(fewest, count);
  }
  const int64_t k = n == 0 ? 0 : fewest + 1;
  Neighbors lists{torch::empty({n, k}, torch::kInt64), torch::empty({n, k}, torch::kFloat32)};
  int64_t* I = lists.indices.data_ptr<int64_t>();
  float* D = lists.distances.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const auto entries = row(i);
    I[i * k] = i;
    D[i * k] = 0;
    for (int64_t j = 1; j < k; ++j) {
      D[i * k + j] = entries[j - 1].first;
      I[i * k + j] = entries[j - 1].second;
    }
  }
  return lists;
}

void NeighborCache::use_given(Neighbors lists, const std::string& source) {
  full_ = std::move(lists);
  backend_ = "given";
  chosen_by_ = "obsp";
  given_source_ = source;
  prefixes_.clear();
  connectivities_.clear();
}

const Neighbors& NeighborCache::get(int64_t k) {
  const int64_t n = embedding_.size(0);
  k = std::min(k, n);
  if (!given_source_.empty() && searched_k() < k)
    throw BadData("this evaluator needs " + std::to_string(k) +
                  " neighbours per cell (the cell itself included), but " + given_source_ +
                  " holds " + std::to_string(searched_k()) +
                  "; compute the graph with more neighbours (scanpy: sc.pp.neighbors(adata, "
                  "n_neighbors=" +
                  std::to_string(k) +
                  ")), lower the evaluator's k, or leave "
                  "--graph out to search");
  if (searched_k() < k) {
    const int64_t wanted = std::min(n, std::max(k, min_k_));
    if (backend_ == "auto") choose_backend(wanted);
    full_ = backend_ == "hnsw" ? knn_self_hnsw(embedding_, wanted, hnsw_build_)
                               : knn_self(embedding_, wanted, device_);
    prefixes_.clear();
    connectivities_.clear();
  }
  if (k == searched_k()) return full_;
  auto it = prefixes_.find(k);
  if (it == prefixes_.end())
    it = prefixes_
             .emplace(k, Neighbors{full_.indices.slice(1, 0, k).contiguous(),
                                   full_.distances.slice(1, 0, k).contiguous()})
             .first;
  return it->second;
}

const SparseGraph& NeighborCache::connectivities(int64_t k) {
  k = std::min(k, embedding_.size(0));
  auto it = connectivities_.find(k);
  if (it == connectivities_.end())
    it = connectivities_.emplace(k, fuzzy_connectivities(get(k))).first;
  return it->second;
}

}  // namespace scssl::host
