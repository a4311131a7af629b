// Geneformer's input (docs/method-spec.md §15.1): the rank-value encoding. A cell becomes the
// tokens of its expressed genes that the dictionary knows, ordered by normalised count / the
// gene's median, largest first; the expression values themselves are not fed. Also the masked-LM
// corruption of Hugging Face's DataCollatorForLanguageModeling. Header-only so that the tests
// check the same code.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <unordered_map>
#include <utility>
#include <vector>

#include "scssl/random.hpp"

namespace geneformer {

// The data's genes as the tokenizer sees them. Several columns may share a token (two symbols
// mapped to one Ensembl id): their values are summed, as Geneformer sums the counts of genes it
// collapses onto one id.
struct GenePanel {
  std::vector<int64_t> slot;    // per data column: index into tokens/medians, -1 when unknown
  std::vector<int64_t> tokens;  // per slot, in the order of the slot's first column
  std::vector<double> medians;  // per slot, > 0
  int64_t known_columns = 0;    // columns with a slot
};

// column_tokens[g]: token of data column g or -1; column_medians[g]: its median (ignored at -1).
inline GenePanel make_panel(const std::vector<int64_t>& column_tokens,
                            const std::vector<double>& column_medians) {
  GenePanel p;
  std::unordered_map<int64_t, int64_t> slot_of_token;
  for (size_t g = 0; g < column_tokens.size(); ++g) {
    const int64_t token = column_tokens[g];
    if (token < 0) {
      p.slot.push_back(-1);
      continue;
    }
    const auto [it, added] = slot_of_token.emplace(token, static_cast<int64_t>(p.tokens.size()));
    if (added) {
      p.tokens.push_back(token);
      p.medians.push_back(column_medians[g]);
    }
    p.slot.push_back(it->second);
    ++p.known_columns;
  }
  return p;
}

struct TokenizerOptions {
  int64_t max_length = 2048;  // tokens per cell, special tokens included
  int64_t pad_id = 0;
  int64_t cls_id = -1;  // V2 dictionaries: <cls> first, <eos> last; -1 where absent (V1)
  int64_t eos_id = -1;
};

struct Tokens {
  torch::Tensor ids;             // int64 [B, L], padded with pad_id to the longest cell
  torch::Tensor attention_mask;  // int64 [B, L], 1 at tokens, 0 at padding
};

// The genes of one cell in rank order: slots with a positive value, by value / median
// descending; ties keep the order of the slots (the data's gene order).
inline std::vector<int64_t> rank_slots(const double* row, int64_t columns, const GenePanel& p,
                                       std::vector<double>& sums) {
  sums.assign(p.tokens.size(), 0.0);
  std::vector<int64_t> present;
  for (int64_t j = 0; j < columns; ++j) {
    const int64_t s = p.slot[static_cast<size_t>(j)];
    if (s < 0 || !(row[j] > 0)) continue;
    if (sums[static_cast<size_t>(s)] == 0) present.push_back(s);
    sums[static_cast<size_t>(s)] += row[j];
  }
  std::sort(present.begin(), present.end());
  std::vector<double> score(present.size());
  for (size_t i = 0; i < present.size(); ++i) {
    const auto s = static_cast<size_t>(present[i]);
    score[i] = sums[s] / p.medians[s];
  }
  std::vector<size_t> order(present.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return score[a] > score[b]; });
  std::vector<int64_t> ranked;
  ranked.reserve(order.size());
  for (size_t i : order) ranked.push_back(present[i]);
  return ranked;
}

// The rank-value encoding of the cells in `normalised` ([B, G], the counts divided by the
// cell's total; any common factor per cell leaves the order unchanged). Cells keep their top
// max_length genes (less the special tokens).
inline Tokens tokenize(const torch::Tensor& normalised, const GenePanel& p,
                       const TokenizerOptions& o) {
  const torch::Tensor x = normalised.to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t n = x.size(0), g = x.size(1);
  const double* data = x.data_ptr<double>();
  const int64_t specials = (o.cls_id >= 0) + (o.eos_id >= 0);
  const auto room = static_cast<size_t>(std::max<int64_t>(o.max_length - specials, 0));
  std::vector<std::vector<int64_t>> cells(static_cast<size_t>(n));
  std::vector<double> sums;
  int64_t longest = 1;
  for (int64_t b = 0; b < n; ++b) {
    std::vector<int64_t> ranked = rank_slots(data + b * g, g, p, sums);
    if (ranked.size() > room) ranked.resize(room);
    auto& ids = cells[static_cast<size_t>(b)];
    if (o.cls_id >= 0) ids.push_back(o.cls_id);
    for (int64_t s : ranked) ids.push_back(p.tokens[static_cast<size_t>(s)]);
    if (o.eos_id >= 0) ids.push_back(o.eos_id);
    longest = std::max<int64_t>(longest, static_cast<int64_t>(ids.size()));
  }
  Tokens t{torch::full({n, longest}, o.pad_id, torch::kInt64),
           torch::zeros({n, longest}, torch::kInt64)};
  auto ids = t.ids.accessor<int64_t, 2>();
  auto mask = t.attention_mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < n; ++b) {
    const auto& cell = cells[static_cast<size_t>(b)];
    for (size_t i = 0; i < cell.size(); ++i) {
      ids[b][static_cast<int64_t>(i)] = cell[i];
      mask[b][static_cast<int64_t>(i)] = 1;
    }
  }
  return t;
}

struct MaskedTokens {
  torch::Tensor input;   // int64 [B, L]: the corrupted ids
  torch::Tensor labels;  // int64 [B, L]: the original id at chosen positions, -100 elsewhere
};

// Hugging Face's DataCollatorForLanguageModeling: every token (not padding) is chosen with
// probability `ratio`; a chosen token becomes <mask> with probability 0.8, a random gene token
// (ids first_gene..vocab-1) with 0.1, and stays itself with 0.1. `cell_seeds[b]` seeds row b.
inline MaskedTokens mask_tokens(const Tokens& t, double ratio, int64_t mask_id, int64_t first_gene,
                                int64_t vocab, const std::vector<uint64_t>& cell_seeds) {
  MaskedTokens m{t.ids.clone(), torch::full_like(t.ids, -100)};
  auto input = m.input.accessor<int64_t, 2>();
  auto labels = m.labels.accessor<int64_t, 2>();
  auto ids = t.ids.accessor<int64_t, 2>();
  auto present = t.attention_mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < t.ids.size(0); ++b) {
    scssl::Xoshiro256 rng(cell_seeds[static_cast<size_t>(b)]);
    for (int64_t i = 0; i < t.ids.size(1); ++i) {
      if (present[b][i] == 0 || scssl::uniform(rng) >= ratio) continue;
      labels[b][i] = ids[b][i];
      const double u = scssl::uniform(rng);
      if (u < 0.8)
        input[b][i] = mask_id;
      else if (u < 0.9)
        input[b][i] = first_gene + scssl::uniform_below(rng, vocab - first_gene);
    }
  }
  return m;
}

}  // namespace geneformer
