// Helpers the foundation-model plugins share (docs/method-spec.md §14-16): which modality holds
// the RNA, the check that the values they turn into tokens are expression rather than scaled
// data, and per-cell random streams so that a cell's tokens do not depend on its batch.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/training.hpp"

namespace scssl {

// The modality named RNA, else the first.
inline int rna_modality(const CellData& data) {
  const int m = data.modality_index("RNA");
  return m < 0 ? 0 : m;
}

// BadData "<who>: the preprocessed values have negative entries; <why> (turn off scaling in
// [preprocess])" when `x` holds a value below zero.
inline void require_expression_values(const Matrix& x, const std::string& who,
                                      const std::string& why) {
  const torch::Tensor& v = x.is_csr() ? x.values : x.dense;
  if (v.numel() > 0 && v.min().item<float>() < 0)
    throw BadData(who + ": the preprocessed values have negative entries; " + why +
                  " (turn off scaling in [preprocess])");
}

// One seed per cell: mix_seed(seed, cell id) for every id of `cell_ids` (int64).
inline std::vector<uint64_t> cell_seeds(const torch::Tensor& cell_ids, uint64_t seed) {
  const torch::Tensor ids = cell_ids.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* p = ids.data_ptr<int64_t>();
  std::vector<uint64_t> seeds(static_cast<size_t>(ids.numel()));
  for (size_t i = 0; i < seeds.size(); ++i) seeds[i] = mix_seed(seed, static_cast<uint64_t>(p[i]));
  return seeds;
}

}  // namespace scssl
