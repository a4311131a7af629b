// scBERT's input (docs/method-spec.md §16): a cell is its expression over a fixed gene panel,
// every gene's value floor(log2(1 + normalised count)) clamped to bin_num (classes 0..bin_num),
// panel genes the data lacks are 0, and one 0 token is appended. Masking for the masked-language
// objective follows scBERT's pretrain.py. Header-only so that the tests check the same code.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include "scssl/random.hpp"

namespace scbert {

// CrossEntropy's ignored label: positions not chosen for prediction.
constexpr int64_t kIgnore = -100;
constexpr double kLn2 = 0.69314718055994530942;

// Where each panel gene is among the data's features: its column (the first, should a symbol
// repeat), or -1 when the data lacks it.
inline std::vector<int64_t> panel_columns(const std::vector<std::string>& panel,
                                          const std::vector<std::string>& features) {
  std::unordered_map<std::string, int64_t> column;
  for (size_t j = 0; j < features.size(); ++j) column.emplace(features[j], static_cast<int64_t>(j));
  std::vector<int64_t> columns;
  columns.reserve(panel.size());
  for (const auto& gene : panel) {
    const auto it = column.find(gene);
    columns.push_back(it == column.end() ? -1 : it->second);
  }
  return columns;
}

// The tokens of the cells in `x` (float [B, G], the host's log1p values, natural log), int64
// [B, P + 1] on x's device: for panel gene p the value of column columns[p] (0 where -1) divided
// by ln 2, which turns ln(1 + c) into log2(1 + c), floored and clamped to [0, bin_num]; then 0.
inline torch::Tensor tokenize(const torch::Tensor& x, const std::vector<int64_t>& columns,
                              int64_t bin_num) {
  const int64_t b = x.size(0), g = x.size(1);
  const torch::Tensor values = x.to(torch::kFloat32);
  // A zero column stands for the genes the data lacks.
  const torch::Tensor padded = torch::cat({values, torch::zeros({b, 1}, values.options())}, 1);
  std::vector<int64_t> index(columns.size());
  std::transform(columns.begin(), columns.end(), index.begin(),
                 [g](int64_t c) { return c < 0 ? g : c; });
  const torch::Tensor picked =
      padded.index_select(1, torch::tensor(index, torch::kInt64).to(x.device()));
  const torch::Tensor bins = (picked.to(torch::kFloat64) / kLn2)
                                 .floor()
                                 .clamp(0, static_cast<double>(bin_num))
                                 .to(torch::kInt64);
  return torch::cat({bins, torch::zeros({b, 1}, bins.options())}, 1);
}

struct Masked {
  torch::Tensor input;   // int64 [B, L]: the tokens, chosen ones mostly replaced by the mask
  torch::Tensor labels;  // int64 [B, L]: the original token where chosen, kIgnore elsewhere
};

// scBERT's data_mask: per cell, ceil(n x mask_prob) of its n positions holding neither 0 nor the
// mask token are chosen without replacement; each chosen position becomes the mask token with
// probability replace_prob and keeps its token otherwise; the labels are the chosen positions'
// tokens. `tokens` on the CPU; cell b draws from a stream seeded with cell_seeds[b].
inline Masked mask_tokens(const torch::Tensor& tokens, const std::vector<uint64_t>& cell_seeds,
                          double mask_prob, double replace_prob, int64_t mask_token) {
  Masked m{tokens.clone(), torch::full_like(tokens, kIgnore)};
  auto input = m.input.accessor<int64_t, 2>();
  auto labels = m.labels.accessor<int64_t, 2>();
  for (int64_t b = 0; b < tokens.size(0); ++b) {
    scssl::Xoshiro256 rng(cell_seeds[static_cast<size_t>(b)]);
    std::vector<int64_t> eligible;
    for (int64_t p = 0; p < tokens.size(1); ++p)
      if (input[b][p] != 0 && input[b][p] != mask_token) eligible.push_back(p);
    // The small margin keeps products like 20 x 0.15 at 3 despite binary rounding.
    const auto count =
        static_cast<size_t>(std::ceil(static_cast<double>(eligible.size()) * mask_prob - 1e-9));
    for (size_t i = 0; i < count && i < eligible.size(); ++i) {
      std::swap(eligible[i], eligible[i + static_cast<size_t>(scssl::uniform_below(
                                              rng, static_cast<int64_t>(eligible.size() - i)))]);
      const int64_t p = eligible[i];
      labels[b][p] = input[b][p];
      if (scssl::uniform(rng) < replace_prob) input[b][p] = mask_token;
    }
  }
  return m;
}

}  // namespace scbert
