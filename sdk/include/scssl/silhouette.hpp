// Exact silhouette coefficients (docs/metrics.md §2.1), shared by the scIB silhouette evaluators.
// All pairs are used, but the n x n distance matrix is never held: distances are produced in
// cache-sized tiles and immediately reduced to per-cluster sums, so memory is O(n x (d + k)).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "scssl/params.hpp"

namespace scssl {

// The silhouette s_i of every row of `x` (float [n, d]) with cluster `codes` (integer [n], every
// value >= 0; codes need not be contiguous). Returns float64 [n].
//   a_i = mean distance to the other members of i's cluster,
//   b_i = smallest mean distance to the members of another cluster,
//   s_i = (b_i - a_i) / max(a_i, b_i).
// As sklearn's silhouette_samples: s_i = 0 for a singleton cluster, for a_i = b_i = 0, and for
// every cell when only one cluster is present. Distances are Euclidean, computed in float64; the
// result does not depend on the number of threads.
// `wanted` (bool [n], optional): only these rows' s_i are computed (still against every cell); the
// others are returned as 0. Costs |wanted| x n distances instead of n x n.
// On a GPU `device` the distances are made and summed there (the tensor path, float64 too).
// Throws BadData on a non-finite embedding, a negative code or mismatched sizes.
torch::Tensor silhouette_samples(const torch::Tensor& x, const torch::Tensor& codes,
                                 const torch::Tensor& wanted = {},
                                 const torch::Device& device = torch::kCPU);

class HostContext;

// Inside an evaluator: silhouette_samples(embedding.index_select(0, rows), codes, wanted), shared
// with the other evaluators scoring the same embedding through the host (HostContext::share).
// A complete result (no `wanted`, or every row wanted) is shared once computed; a caller with the
// same rows and codes then reuses it instead of repeating the O(n^2) work.
torch::Tensor shared_silhouette_samples(const HostContext& host, const torch::Tensor& embedding,
                                        const torch::Tensor& rows, const torch::Tensor& codes,
                                        const torch::Tensor& wanted = {},
                                        const torch::Device& device = torch::kCPU);

// The sampling option of the silhouette evaluators (docs/metrics.md §1.6): the parameters
// max_cells (0: exact) and seed; `max_cells_help` must be a string literal.
std::vector<ParamSpec> silhouette_sampling_parameters(const char* max_cells_help);

// The rows with strata[i] >= 0, or a seeded stratified sample of about max_cells of them; `note`
// is what evaluator `metric` then says ("<what> on a stratified sample of ... cells
// (evaluation.<metric>.max_cells, seed ...)"), empty when every row is kept.
struct SampledRows {
  std::vector<int64_t> rows;
  std::string note;
};
SampledRows silhouette_sample(const std::vector<int32_t>& strata, int64_t max_cells, int64_t seed,
                              const std::string& metric, const std::string& what);

}  // namespace scssl
