// scGPT's input (docs/method-spec.md §14.1): a cell is the <cls> token followed by its expressed
// genes that the vocabulary knows (or all of them, the unexpressed with bin 0, as scGPT's
// integration fine-tuning); each gene carries its expression binned by the cell's own
// quantiles into bins 1..n_bins-1 (ties spread at random over the bins they span); sequences
// longer than the maximum keep a random subset of the genes; masked values are -1, padding has
// the pad value. Header-only so that the tests check the same code.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <unordered_map>
#include <vector>

#include "scssl/random.hpp"

namespace scgpt {

struct TokenizerOptions {
  int64_t n_bins = 51;
  int64_t max_length = 1200;  // tokens per cell, <cls> included
  int64_t cls_id = 0;
  int64_t pad_id = 0;
  double pad_value = -2;
  double cls_value = 0;  // the value at <cls>: 0 in scGPT's training, pad_value in its embed_data
  bool include_zero_genes = false;  // every known gene, not only the expressed ones
};

struct Tokens {
  torch::Tensor genes;    // int64 [B, L]
  torch::Tensor values;   // float32 [B, L]
  torch::Tensor padding;  // bool [B, L], true at padding
};

// numpy.quantile's default (linear interpolation) of sorted values at q in [0, 1].
inline double quantile_of_sorted(const std::vector<float>& sorted, double q) {
  const double position = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return sorted[below] + fraction * (static_cast<double>(sorted[above]) - sorted[below]);
}

// The bins of one cell's positive values: edges at the quantiles linspace(0, 1, n_bins - 1) of the
// values; a value gets the number of edges at or below it, or, where it equals several edges, a
// uniformly drawn one of the bins those edges span (scGPT's _digitize with side "both").
template <class Rng>
std::vector<float> bin_values(const std::vector<float>& values, int64_t n_bins, Rng& rng) {
  std::vector<float> bins(values.size());
  if (values.empty()) return bins;
  std::vector<float> sorted(values);
  std::sort(sorted.begin(), sorted.end());
  std::vector<double> edges(static_cast<size_t>(n_bins - 1));
  for (size_t i = 0; i < edges.size(); ++i)
    edges[i] = quantile_of_sorted(
        sorted, edges.size() == 1 ? 0.0 : static_cast<double>(i) / double(edges.size() - 1));
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    const auto at_or_below = std::upper_bound(edges.begin(), edges.end(), v) - edges.begin();
    const auto below = std::lower_bound(edges.begin(), edges.end(), v) - edges.begin();
    const double u = scssl::uniform(rng);
    bins[i] = static_cast<float>(
        std::ceil(static_cast<double>(at_or_below) - u * double(at_or_below - below)));
  }
  return bins;
}

// Tokens of the cells in `x` (float32 [B, G], non-negative): gene_ids[g] is gene g's token, or -1
// when the vocabulary lacks it. `cell_seeds[b]` seeds cell b's tie-breaking and sub-sampling.
inline Tokens tokenize(const torch::Tensor& x, const std::vector<int64_t>& gene_ids,
                       const std::vector<uint64_t>& cell_seeds, const TokenizerOptions& o) {
  const torch::Tensor dense = x.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t n = dense.size(0), g = dense.size(1);
  const float* data = dense.data_ptr<float>();
  std::vector<std::vector<int64_t>> cell_genes(static_cast<size_t>(n));
  std::vector<std::vector<float>> cell_bins(static_cast<size_t>(n));
  int64_t longest = 1;
  for (int64_t b = 0; b < n; ++b) {
    scssl::Xoshiro256 rng(cell_seeds[static_cast<size_t>(b)]);
    std::vector<int64_t> columns, expressed;
    std::vector<float> values;
    for (int64_t j = 0; j < g; ++j) {
      const float v = data[b * g + j];
      if (gene_ids[static_cast<size_t>(j)] < 0 || (v <= 0 && !o.include_zero_genes)) continue;
      if (v > 0) {
        expressed.push_back(static_cast<int64_t>(columns.size()));
        values.push_back(v);
      }
      columns.push_back(j);
    }
    // Only expressed genes are binned; the others keep bin 0.
    std::vector<float> bins(columns.size(), 0.0f);
    const std::vector<float> expressed_bins = bin_values(values, o.n_bins, rng);
    for (size_t i = 0; i < expressed.size(); ++i)
      bins[static_cast<size_t>(expressed[i])] = expressed_bins[i];
    std::vector<size_t> keep(columns.size());
    std::iota(keep.begin(), keep.end(), size_t{0});
    const auto room = static_cast<size_t>(std::max<int64_t>(o.max_length - 1, 0));
    if (keep.size() > room) {  // a random subset, kept in gene order
      for (size_t i = 0; i < room; ++i)
        std::swap(keep[i], keep[i + static_cast<size_t>(scssl::uniform_below(
                                        rng, static_cast<int64_t>(keep.size() - i)))]);
      keep.resize(room);
      std::sort(keep.begin(), keep.end());
    }
    auto& genes = cell_genes[static_cast<size_t>(b)];
    auto& cell_values = cell_bins[static_cast<size_t>(b)];
    for (size_t k : keep) {
      genes.push_back(gene_ids[static_cast<size_t>(columns[k])]);
      cell_values.push_back(bins[k]);
    }
    longest = std::max<int64_t>(longest, static_cast<int64_t>(genes.size()) + 1);
  }
  Tokens t{torch::full({n, longest}, o.pad_id, torch::kInt64),
           torch::full({n, longest}, o.pad_value, torch::kFloat32),
           torch::ones({n, longest}, torch::kBool)};
  auto genes = t.genes.accessor<int64_t, 2>();
  auto values = t.values.accessor<float, 2>();
  auto padding = t.padding.accessor<bool, 2>();
  for (int64_t b = 0; b < n; ++b) {
    genes[b][0] = o.cls_id;
    values[b][0] = static_cast<float>(o.cls_value);
    padding[b][0] = false;
    const auto& ids = cell_genes[static_cast<size_t>(b)];
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto p = static_cast<int64_t>(i) + 1;
      genes[b][p] = ids[i];
      values[b][p] = cell_bins[static_cast<size_t>(b)][i];
      padding[b][p] = false;
    }
  }
  return t;
}

// Masks int(n x ratio) of the n non-padding tokens of every row (<cls> included, as scGPT's
// random_mask_value): their values become `mask_value`. Returns the masked values; `masked` gets
// true at the masked positions.
inline torch::Tensor mask_values(const Tokens& t, double ratio, double mask_value, uint64_t seed,
                                 torch::Tensor& masked) {
  torch::Tensor values = t.values.clone();
  masked = torch::zeros_like(t.padding);
  auto v = values.accessor<float, 2>();
  auto m = masked.accessor<bool, 2>();
  auto padding = t.padding.accessor<bool, 2>();
  for (int64_t b = 0; b < values.size(0); ++b) {
    scssl::Xoshiro256 rng(scssl::splitmix64(seed + static_cast<uint64_t>(b)));
    std::vector<int64_t> positions;
    for (int64_t p = 0; p < values.size(1); ++p)
      if (!padding[b][p]) positions.push_back(p);
    const auto count = static_cast<size_t>(static_cast<double>(positions.size()) * ratio);
    for (size_t i = 0; i < count; ++i) {
      std::swap(positions[i], positions[i + static_cast<size_t>(scssl::uniform_below(
                                                rng, static_cast<int64_t>(positions.size() - i)))]);
      v[b][positions[i]] = static_cast<float>(mask_value);
      m[b][positions[i]] = true;
    }
  }
  return values;
}

}  // namespace scgpt
