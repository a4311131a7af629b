// scTEL's training targets and loss (docs/method-spec.md §18, docs/methods/sctel.md), kept apart
// from the plugin so that tests can check them on hand-made cases:
//  - the standardisation groups (one per batch) and the per-group standardisation of genes and
//    proteins that scTEL applies to its inputs and targets;
//  - which proteins count as measured in each batch;
//  - the pinball (quantile) loss and the masked protein loss built on it.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <functional>

#include "scssl/cell_data.hpp"

namespace sctel {

// The standardisation group of every cell: its batch code, with the cells of no batch (code -1)
// in a group of their own after the batches; group 0 for all cells when `codes` is undefined (no
// batch column). There are n_batches + 1 groups.
inline torch::Tensor groups_of(const torch::Tensor& codes, int64_t n_cells, int64_t n_batches,
                               const torch::Device& device = torch::kCPU) {
  if (!codes.defined()) return torch::zeros({n_cells}, torch::dtype(torch::kInt64).device(device));
  const torch::Tensor c = codes.to(device, torch::kInt64);
  return torch::where(c < 0, torch::full_like(c, n_batches), c);
}

// Calls f(first_row, dense_block) over the rows of x in blocks, so a sparse matrix is never
// densified whole.
inline void for_row_blocks(const scssl::Matrix& x,
                           const std::function<void(int64_t, const torch::Tensor&)>& f) {
  constexpr int64_t kRows = 4096;
  for (int64_t begin = 0; begin < x.rows; begin += kRows)
    f(begin, x.slice_dense(begin, std::min(x.rows, begin + kRows)));
}

// Mean and standard deviation of every feature within every group, applied as
// (x - mean) / sd. The deviation divides by n - 1, as scanpy's scale() that scTEL calls; a
// feature that is constant within its group, or a group of one cell, gets sd 1, so its values
// become 0 there. Not clipped.
struct GroupScaling {
  torch::Tensor mean;    // float32 [groups, features]
  torch::Tensor inv_sd;  // float32 [groups, features]

  torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& groups) const {
    return (x - mean.index_select(0, groups)) * inv_sd.index_select(0, groups);
  }
  GroupScaling to(const torch::Device& device) const {
    return {mean.to(device), inv_sd.to(device)};
  }
};

inline GroupScaling group_scaling(const scssl::Matrix& x, const torch::Tensor& groups,
                                  int64_t n_groups) {
  const torch::Tensor g = groups.to(torch::kCPU, torch::kInt64);
  const auto f64 = torch::kFloat64;
  torch::Tensor count = torch::zeros({n_groups, 1}, f64);
  count.index_add_(0, g, torch::ones({g.size(0), 1}, f64));
  torch::Tensor sum = torch::zeros({n_groups, x.cols}, f64);
  for_row_blocks(x, [&](int64_t begin, const torch::Tensor& block) {
    sum.index_add_(0, g.slice(0, begin, begin + block.size(0)), block.to(f64));
  });
  const torch::Tensor mean = sum / count.clamp_min(1);
  // A second pass over the deviations from the group mean avoids the cancellation of
  // E[x^2] - E[x]^2.
  torch::Tensor squares = torch::zeros({n_groups, x.cols}, f64);
  for_row_blocks(x, [&](int64_t begin, const torch::Tensor& block) {
    const torch::Tensor ids = g.slice(0, begin, begin + block.size(0));
    squares.index_add_(0, ids, (block.to(f64) - mean.index_select(0, ids)).pow(2));
  });
  torch::Tensor sd = (squares / (count - 1).clamp_min(1)).sqrt();
  sd = torch::where((sd > 0) & (count > 1), sd, torch::ones_like(sd));
  return {mean.to(torch::kFloat32), sd.reciprocal().to(torch::kFloat32)};
}

// 1 where a protein has a non-zero value in at least one cell of the group, else 0: float32
// [groups, proteins]. Merged panels read as zeros where a batch did not measure a protein (scTEL
// fills them with 0 and leaves them out of the loss); so does a protein none of the batch's cells
// expresses.
inline torch::Tensor observed_proteins(const scssl::Matrix& x, const torch::Tensor& groups,
                                       int64_t n_groups) {
  const torch::Tensor g = groups.to(torch::kCPU, torch::kInt64);
  torch::Tensor nonzero = torch::zeros({n_groups, x.cols}, torch::kFloat32);
  for_row_blocks(x, [&](int64_t begin, const torch::Tensor& block) {
    nonzero.index_add_(0, g.slice(0, begin, begin + block.size(0)),
                       (block != 0).to(torch::kFloat32));
  });
  return (nonzero > 0).to(torch::kFloat32);
}

// The pinball loss of quantile predictions, averaged over the quantiles: with e = prediction -
// truth, (1 - q)·e where the prediction lies above the truth and q·(-e) where it does not.
// predicted [b, p, Q], truth [b, p], quantiles [Q] -> [b, p].
inline torch::Tensor pinball(const torch::Tensor& predicted, const torch::Tensor& truth,
                             const torch::Tensor& quantiles) {
  const torch::Tensor error = predicted - truth.unsqueeze(2);
  const torch::Tensor q = quantiles.to(predicted.device(), predicted.scalar_type());
  const torch::Tensor weight = torch::where(error > 0, 1 - q, q);
  return (error.abs() * weight).mean(2);
}

// scTEL's protein loss: per cell and protein, the squared error of the point prediction plus the
// pinball loss of the quantile predictions, where the protein was measured (observed 1), averaged
// over all b x p entries as scTEL does (unmeasured entries count as 0).
inline torch::Tensor protein_loss(const torch::Tensor& predicted,
                                  const torch::Tensor& quantile_predicted,
                                  const torch::Tensor& truth, const torch::Tensor& observed,
                                  const torch::Tensor& quantiles) {
  const torch::Tensor per_entry =
      (predicted - truth).pow(2) + pinball(quantile_predicted, truth, quantiles);
  return (per_entry * observed).mean();
}

}  // namespace sctel
