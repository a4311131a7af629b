// Helpers the foundation-model plugins share (docs/method-spec.md §14-16): which modality holds
// the RNA, the check that the values they turn into tokens are expression rather than scaled
// data, and per-cell random streams so that a cell's tokens do not depend on its batch.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/params.hpp"
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

// The `fused_attention` parameter of the plugins whose layers scssl::nn::fused_post_norm_layers
// can run.
inline ParamSpec fused_attention_param() {
  return {"fused_attention", SCSSL_PARAM_BOOL, "true",
          "embed through LibTorch's fused inference kernel, skipping the padding (false: the "
          "layers that train; the same embedding within float rounding)"};
}

// Rows [begin, end) of a batch of token sequences that run through a transformer together, cut
// to their longest sequence (`length`, at least 1; tokens are contiguous from position 0).
struct TokenPass {
  int64_t begin, end, length;
};

// Splits a batch into forward passes whose attention matrices (cells x heads x length^2 floats)
// stay within `budget` floats: on CPU, temporaries of more than 32 MB are mapped afresh from the
// system at every allocation, which costs more than the arithmetic (about 3x on Geneformer's
// pretrain config); shorter passes also carry less padding. Consecutive rows, greedily.
// `tokens` [B, L]: non-zero at tokens.
inline std::vector<TokenPass> attention_passes(const torch::Tensor& tokens, int64_t heads,
                                               int64_t budget = int64_t{4} << 20,
                                               int64_t max_cells = 64) {
  const torch::Tensor lengths = tokens.ne(0).sum(1).to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* n = lengths.data_ptr<int64_t>();
  std::vector<TokenPass> passes;
  for (int64_t b = 0; b < lengths.size(0);) {
    TokenPass p{b, b + 1, std::max<int64_t>(n[b], 1)};
    while (p.end < lengths.size(0) && p.end - p.begin < max_cells) {
      const int64_t l = std::max(p.length, n[p.end]);
      if ((p.end - p.begin + 1) * heads * l * l > budget) break;
      p.length = l;
      ++p.end;
    }
    passes.push_back(p);
    b = p.end;
  }
  return passes;
}

}  // namespace scssl
