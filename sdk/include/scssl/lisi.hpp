// Local inverse Simpson's index (LISI) of every cell over its neighbour list, as scib-metrics
// 0.5.1 computes it (docs/metrics.md §2.6): Gaussian-like weights exp(-beta d) on plain distances,
// beta set by bisection to a perplexity of floor(k / 3), the cell itself weighted 0.
#pragma once

#include <torch/torch.h>

namespace scssl {

// indices int64 [n, k] (self in column 0), distances float32 [n, k], codes int32 [n] with values
// in [0, n_categories) or -1 (neighbours without a category add nothing). Returns float64 [n];
// a cell whose weights all underflow gets -1, as the reference does.
torch::Tensor lisi_per_cell(const torch::Tensor& indices, const torch::Tensor& distances,
                            const torch::Tensor& codes, int64_t n_categories);

// Number of distinct non-negative codes (categories that occur), as the reference counts them.
int64_t count_present(const torch::Tensor& codes);

// NaN-skipping median, as numpy.nanmedian.
double nanmedian(const torch::Tensor& values);

}  // namespace scssl
