// Helpers shared by the augmentation plugins.
//  - Neighbour graphs over training cells for the graph-based augmentations (CLAIRE's MNN pairs,
//    batch-balanced kNN): PCA scores, exact kNN inside / across batches and mutual nearest
//    neighbours between batches. Every graph is a ragged list per cell in CSR layout, so memory
//    is O(cells * k) and a random neighbour of a whole mini-batch is drawn with a few tensor ops.
//  - random_subsets: a fixed number of distinct random genes per cell (mask, gauss, crossover).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "scssl/cell_data.hpp"

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

// `count` distinct indices out of 0..n-1 (n < 2^32) for each of `rows` rows, int64 [rows, count],
// every subset equally likely; the order within a row is not random when count > n / 2. Draws
// one number from `rng` (a CPU generator), which seeds a fast stream per row (scssl/random.hpp).
torch::Tensor random_subsets(int64_t rows, int64_t n, int64_t count, torch::Generator& rng);

}  // namespace scssl
