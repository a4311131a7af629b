// Helpers shared by the augmentation plugins.
//  - Neighbour graphs over training cells for the graph-based augmentations (CLAIRE's MNN pairs,
//    batch-balanced kNN): PCA scores, exact kNN inside / across batches and mutual nearest
//    neighbours between batches. Every graph is a ragged list per cell in CSR layout, so memory
//    is O(cells * k) and a random neighbour of a whole mini-batch is drawn with a few tensor ops.
//  - for_each_random_subset / random_subsets: a fixed number of distinct random genes per cell
//    (mask, gauss, crossover), on fast per-row streams (scssl/random.hpp).
#pragma once

#include <torch/torch.h>

#include <ATen/Parallel.h>

#include <numeric>
#include <string>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/random.hpp"

namespace scssl {

// The neighbours of cell i are targets[offsets[i] .. offsets[i+1]).
struct NeighborGraph {
  torch::Tensor offsets;  // int64 [n_cells + 1]
  torch::Tensor targets;  // int64 [edges], cell ids

  static NeighborGraph from_lists(const std::vector<std::vector<int64_t>>& lists);

  int64_t n_cells() const { return offsets.defined() ? offsets.size(0) - 1 : 0; }
  int64_t n_edges() const { return targets.defined() ? targets.size(0) : 0; }
  int64_t degree(int64_t cell) const;
  std::vector<int64_t> neighbors(int64_t cell) const;

  // One neighbour per given cell (int64 [b]), uniform among its neighbours; a cell without any
  // stands for itself. Exactly one uniform number per cell is drawn from `rng`, whatever the
  // degrees, so the random stream does not depend on the graph. Throws BadData naming `who`
  // when a cell id is out of range. With `position_as_row` the drawn position in the cell's list
  // (0 for a cell without neighbours) is returned as if it were a cell id: scSSL-Bench's index
  // bug (docs/augmentations.md, "The study's neighbour index bug"), kept to reproduce its results.
  torch::Tensor sample(const torch::Tensor& cells, torch::Generator& rng, const std::string& who,
                       bool position_as_row = false) const;
};

// The batches of a data set: a code per cell and the cells of each batch (ascending ids).
struct BatchIndex {
  std::vector<std::string> names;
  torch::Tensor codes;                 // int64 [n_cells], index into names
  std::vector<torch::Tensor> members;  // int64 cell ids per batch; empty for an unused category

  int64_t n_batches() const { return static_cast<int64_t>(names.size()); }
  int64_t n_nonempty() const;
};

// Throws BadData naming `who` when the data set has no batch column, the column is not
// categorical, or a cell has no batch.
BatchIndex batch_index(const CellData& data, const std::string& who);

// Principal component scores of every row: fit_pca(x, k) then transform, float32 [rows, k'].
torch::Tensor pca_scores(const Matrix& x, int64_t k);

// For every cell its k nearest cells (Euclidean) of its own batch only (own_batch_only) or of
// every batch (batch-balanced kNN, BBKNN's neighbors_within_batch = k), never the cell itself.
// A batch with fewer cells contributes what it has. Lists go batch by batch, nearest first.
NeighborGraph batch_knn(const torch::Tensor& points, const BatchIndex& batches, int64_t k,
                        bool own_batch_only);

// Mutual nearest neighbours for every pair of batches on cosine distance: i (batch A) and j
// (batch B) are partners when j is among the k nearest cells of B to i and i among the k nearest
// cells of A to j. The graph is symmetric; a cell may have several partners, or none.
NeighborGraph mutual_nearest_neighbors(const torch::Tensor& points, const BatchIndex& batches,
                                       int64_t k);

// One number from `rng` (a CPU generator, under its lock): the seed of a call's per-row streams.
uint64_t draw_seed(torch::Generator& rng);

// Row r's own fast stream for a call seeded with `seed`: rows are independent, and a result does
// not depend on the number of threads.
inline Xoshiro256 row_stream(uint64_t seed, int64_t row) {
  return Xoshiro256(splitmix64(seed + static_cast<uint64_t>(row)));
}

// For each of `rows` rows, `count` distinct indices out of 0..n-1 (n < 2^32), every subset
// equally likely, passed as visit(row, picked, stream) with the row's stream (row_stream) after
// the draws, for the caller's own numbers. The order within a row is not random when count >
// n / 2. Rows run in parallel: visit must touch only its own row.
template <class Visit>
void for_each_random_subset(int64_t rows, int64_t n, int64_t count, torch::Generator& rng,
                            Visit&& visit) {
  TORCH_CHECK(rows >= 0 && count >= 0 && count <= n && n < (int64_t{1} << 32),
              "random subsets: need 0 <= count <= n < 2^32, got count ", count, " of ", n);
  if (rows == 0) return;
  const uint64_t seed = draw_seed(rng);
  // A partial Fisher-Yates shuffle: step i swaps a uniform pick of the n - i remaining indices
  // into place i. More than half of the indices are picked by drawing the ones left out.
  const bool by_complement = 2 * count > n;
  const int64_t draws = by_complement ? n - count : count;
  at::parallel_for(0, rows, 8, [&](int64_t lo, int64_t hi) {
    std::vector<int64_t> pool(static_cast<size_t>(n));
    for (int64_t r = lo; r < hi; ++r) {
      Xoshiro256 stream = row_stream(seed, r);
      std::iota(pool.begin(), pool.end(), int64_t{0});
      for (int64_t i = 0; i < draws; ++i)
        std::swap(pool[i], pool[i + uniform_below(stream, n - i)]);
      visit(r, pool.data() + (by_complement ? draws : 0), stream);
    }
  });
}

// The subsets of for_each_random_subset as an int64 [rows, count] tensor.
torch::Tensor random_subsets(int64_t rows, int64_t n, int64_t count, torch::Generator& rng);

}  // namespace scssl
