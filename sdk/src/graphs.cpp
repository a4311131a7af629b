#include "scssl/graphs.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <mutex>
#include <numeric>

#include "scssl/knn.hpp"
#include "scssl/pca.hpp"
#include "scssl/random.hpp"

namespace scssl {

NeighborGraph NeighborGraph::from_lists(const std::vector<std::vector<int64_t>>& lists) {
  const int64_t n = static_cast<int64_t>(lists.size());
  NeighborGraph g;
  g.offsets = torch::empty({n + 1}, torch::kInt64);
  int64_t* off = g.offsets.data_ptr<int64_t>();
  off[0] = 0;
  for (int64_t i = 0; i < n; ++i) off[i + 1] = off[i] + static_cast<int64_t>(lists[i].size());
  g.targets = torch::empty({off[n]}, torch::kInt64);
  int64_t* t = g.targets.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) std::copy(lists[i].begin(), lists[i].end(), t + off[i]);
  return g;
}

int64_t NeighborGraph::degree(int64_t cell) const {
  const int64_t* off = offsets.data_ptr<int64_t>();
  return off[cell + 1] - off[cell];
}

std::vector<int64_t> NeighborGraph::neighbors(int64_t cell) const {
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* t = targets.data_ptr<int64_t>();
  return {t + off[cell], t + off[cell + 1]};
}

torch::Tensor NeighborGraph::sample(const torch::Tensor& cells, torch::Generator& rng,
                                    const std::string& who, bool position_as_row) const {
  torch::Tensor ids = cells.to(torch::kInt64).flatten().contiguous();
  const int64_t b = ids.size(0);
  torch::Tensor u = torch::rand({b}, rng, torch::kFloat64);
  if (b == 0) return ids;
  const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
  if (lo < 0 || hi >= n_cells())
    throw BadData(who + ": cell id " + std::to_string(lo < 0 ? lo : hi) +
                  " is not a row of the training data (" + std::to_string(n_cells()) + " cells)");
  if (n_edges() == 0) return position_as_row ? torch::zeros_like(ids) : ids.clone();
  torch::Tensor start = offsets.index_select(0, ids);
  torch::Tensor deg = offsets.index_select(0, ids + 1) - start;
  // floor(u * deg) is uniform on 0..deg-1; the clamps keep cells of degree 0 on a valid slot,
  // which torch::where then discards in favour of the cell itself.
  torch::Tensor pick = (u * deg.to(torch::kFloat64)).floor().to(torch::kInt64);
  pick = torch::minimum(pick, (deg - 1).clamp_min(0));
  if (position_as_row) return pick;
  torch::Tensor pos = (start + pick).clamp_max(n_edges() - 1);
  return torch::where(deg > 0, targets.index_select(0, pos), ids);
}

int64_t BatchIndex::n_nonempty() const {
  int64_t n = 0;
  for (const auto& m : members) n += m.numel() > 0;
  return n;
}

BatchIndex batch_index(const CellData& data, const std::string& who) {
  const Column* column = data.batches();
  if (!column)
    throw BadData(who +
                  " needs batch labels, but the data set has no batch column (set the "
                  "dataset's batch_key)");
  if (!column->categorical)
    throw BadData(who + ": the batch column '" + column->name + "' must be categorical");
  BatchIndex index;
  index.names = column->categories;
  index.codes = column->codes.to(torch::kInt64).contiguous();
  const int64_t n = index.codes.size(0);
  const int64_t* code = index.codes.data_ptr<int64_t>();
  const int64_t n_batches = index.n_batches();
  std::vector<std::vector<int64_t>> members(n_batches);
  for (int64_t i = 0; i < n; ++i) {
    if (code[i] < 0 || code[i] >= n_batches)
      throw BadData(who + ": cell '" + data.cell_names.at(i) + "' has no batch in column '" +
                    column->name + "'");
    members[code[i]].push_back(i);
  }
  for (auto& m : members) index.members.push_back(torch::tensor(m, torch::kInt64));
  return index;
}

torch::Tensor pca_scores(const Matrix& x, int64_t k) { return fit_pca(x, k).transform(x); }

NeighborGraph batch_knn(const torch::Tensor& points, const BatchIndex& batches, int64_t k,
                        bool own_batch_only) {
  TORCH_CHECK(k >= 1, "batch_knn: k must be at least 1");
  const int64_t n = points.size(0);
  TORCH_CHECK(batches.codes.size(0) == n, "batch_knn: one batch code per point is needed");
  torch::Tensor pts = points.to(torch::kFloat32).contiguous();
  const int64_t* code = batches.codes.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> lists(n);
  for (int64_t b = 0; b < batches.n_batches(); ++b) {
    const torch::Tensor& members = batches.members[b];
    if (members.numel() == 0) continue;
    // Queries: the batch itself, or every cell for the balanced graph.
    torch::Tensor query_ids = own_batch_only ? members : torch::arange(n, torch::kInt64);
    // One extra neighbour so that k remain after the cell itself is dropped.
    Neighbors nn = knn_exact(pts.index_select(0, members), pts.index_select(0, query_ids), k + 1);
    const int64_t kk = nn.indices.size(1);
    const int64_t* idx = nn.indices.data_ptr<int64_t>();
    const int64_t* member = members.data_ptr<int64_t>();
    const int64_t* query = query_ids.data_ptr<int64_t>();
    for (int64_t q = 0; q < query_ids.size(0); ++q) {
      const int64_t cell = query[q];
      const bool same_batch = code[cell] == b;
      std::vector<int64_t>& out = lists[cell];
      int64_t taken = 0;
      for (int64_t j = 0; j < kk && taken < k; ++j) {
        const int64_t other = member[idx[q * kk + j]];
        if (same_batch && other == cell) continue;
        out.push_back(other);
        ++taken;
      }
    }
  }
  return NeighborGraph::from_lists(lists);
}

NeighborGraph mutual_nearest_neighbors(const torch::Tensor& points, const BatchIndex& batches,
                                       int64_t k) {
  TORCH_CHECK(k >= 1, "mutual_nearest_neighbors: k must be at least 1");
  const int64_t n = points.size(0);
  torch::Tensor pts = points.to(torch::kFloat32).contiguous();
  std::vector<std::vector<int64_t>> lists(n);
  for (int64_t a = 0; a < batches.n_batches(); ++a) {
    const torch::Tensor& in_a = batches.members[a];
    if (in_a.numel() == 0) continue;
    torch::Tensor pa = pts.index_select(0, in_a);
    for (int64_t b = a + 1; b < batches.n_batches(); ++b) {
      const torch::Tensor& in_b = batches.members[b];
      if (in_b.numel() == 0) continue;
      torch::Tensor pb = pts.index_select(0, in_b);
      Neighbors a_to_b = knn_exact(pb, pa, k, Distance::Cosine);  // [|A|, k] rows of B
      Neighbors b_to_a = knn_exact(pa, pb, k, Distance::Cosine);  // [|B|, k] rows of A
      const int64_t ka = a_to_b.indices.size(1), kb = b_to_a.indices.size(1);
      const int64_t* ab = a_to_b.indices.data_ptr<int64_t>();
      const int64_t* ba = b_to_a.indices.data_ptr<int64_t>();
      const int64_t* ida = in_a.data_ptr<int64_t>();
      const int64_t* idb = in_b.data_ptr<int64_t>();
      for (int64_t i = 0; i < in_a.numel(); ++i) {
        for (int64_t s = 0; s < ka; ++s) {
          const int64_t j = ab[i * ka + s];
          const int64_t* back = ba + j * kb;
          if (std::find(back, back + kb, i) == back + kb) continue;
          // Each mutual pair is met once here (from A's side), so both ends get it once.
          lists[ida[i]].push_back(idb[j]);
          lists[idb[j]].push_back(ida[i]);
        }
      }
    }
  }
  return NeighborGraph::from_lists(lists);
}

uint64_t draw_seed(torch::Generator& rng) {
  std::lock_guard<std::mutex> hold(rng.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(rng)->random64();
}

torch::Tensor random_subsets(int64_t rows, int64_t n, int64_t count, torch::Generator& rng) {
  torch::Tensor out = torch::empty({rows, count}, torch::kInt64);
  int64_t* po = out.data_ptr<int64_t>();
  for_each_random_subset(rows, n, count, rng, [&](int64_t r, const int64_t* picked, Xoshiro256&) {
    std::copy(picked, picked + count, po + r * count);
  });
  return out;
}

}  // namespace scssl
