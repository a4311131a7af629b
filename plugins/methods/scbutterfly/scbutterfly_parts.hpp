// Parts of scButterfly (docs/method-spec.md §17, docs/methods/scbutterfly.md) kept apart from
// the plugin so that tests can check them on hand-made cases:
//  - the centred log-ratio that scButterfly applies to protein counts;
//  - the soft targets of the discriminators, drawn per cell.
#pragma once

#include <torch/torch.h>

namespace scbutterfly {

// scButterfly's centred log-ratio of every row (cell) of non-negative protein counts: log(x / g)
// for the non-zero counts, g their geometric mean; zero counts stay 0. float64 in and out.
inline torch::Tensor centred_log_ratio(const torch::Tensor& counts) {
  const torch::Tensor nonzero = counts > 0;
  const torch::Tensor logs = torch::where(nonzero, counts.log(), torch::zeros_like(counts));
  const torch::Tensor centre = logs.sum(1, true) / nonzero.sum(1, true).clamp_min(1);
  return torch::where(nonzero, logs - centre, torch::zeros_like(counts));
}

// scButterfly's soft targets from uniform draws u in [0, 1): a draw above 0.8 is kept, one in
// (0.5, 0.8] becomes 0.8, one in (0.2, 0.5] becomes 0.2 and one at most 0.2 is kept. A target
// above 0.5 marks a cell whose real encoder output the discriminator sees; the others show it the
// translation from the other modality.
inline torch::Tensor soft_targets(const torch::Tensor& u) {
  return torch::where(u > 0.8, u,
                      torch::where(u > 0.5, torch::full_like(u, 0.8),
                                   torch::where(u > 0.2, torch::full_like(u, 0.2), u)));
}

}  // namespace scbutterfly
