// CLAIRE's positive pairs and their refinement (docs/method-spec.md §9), kept apart from the plugin
// so that tests can check them on hand-made cases:
//  - the two views of an anchor cell: its own row mixed with a same-batch neighbour, and one of its
//    mutual-nearest-neighbour (MNN) partners mixed with that partner's same-batch neighbour;
//  - the symmetric MoCo objective over both views;
//  - the refinement that drops MNN pairs whose cells lie far apart in the current embedding (the
//    minority component of a two-component Gaussian mixture of the pairs' cosine similarities).
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/graphs.hpp"
#include "scssl/losses.hpp"

namespace claire {

// Interpolation weights, one per cell ([n, 1]): lambda ~ U(alpha, 1) as in CLAIRE, or the
// constant alpha as in the scSSL-Bench reference.
inline torch::Tensor interpolation_weights(int64_t n, double alpha, bool uniform,
                                           torch::Generator& rng) {
  if (!uniform) return torch::full({n, 1}, alpha, torch::kFloat32);
  return alpha + (1.0 - alpha) * torch::rand({n, 1}, rng, torch::kFloat32);
}

struct PairViews {
  torch::Tensor view0;    // lambda0 * x + (1 - lambda0) * x_nn
  torch::Tensor view1;    // lambda1 * x_partner + (1 - lambda1) * x_partner_nn
  torch::Tensor partner;  // the partner drawn for each cell (the cell itself when it has none)
  torch::Tensor lambda0, lambda1;
};

// The two views of the given cells (rows of x). Draws, in this order, the cells' neighbours, their
// partners, the partners' neighbours and the two weights, all from `rng`.
inline PairViews make_pair_views(const scssl::Matrix& x, const torch::Tensor& cells,
                                 const scssl::NeighborGraph& within,
                                 const scssl::NeighborGraph& partners, double alpha, bool uniform,
                                 torch::Generator& rng) {
  PairViews v;
  const torch::Tensor neighbor = within.sample(cells, rng, "claire");
  v.partner = partners.sample(cells, rng, "claire");
  const torch::Tensor partner_neighbor = within.sample(v.partner, rng, "claire");
  v.lambda0 = interpolation_weights(cells.size(0), alpha, uniform, rng);
  v.lambda1 = interpolation_weights(cells.size(0), alpha, uniform, rng);
  v.view0 = v.lambda0 * x.rows_dense(cells) + (1 - v.lambda0) * x.rows_dense(neighbor);
  v.view1 = v.lambda1 * x.rows_dense(v.partner) + (1 - v.lambda1) * x.rows_dense(partner_neighbor);
  return v;
}

// 0.5 * (InfoNCE(q0 | k1) + InfoNCE(q1 | k0)) against the same bank of negative keys: each view's
// query is pulled towards the key of the other view.
inline torch::Tensor symmetric_moco_loss(const torch::Tensor& q0, const torch::Tensor& q1,
                                         const torch::Tensor& k0, const torch::Tensor& k1,
                                         const torch::Tensor& bank, double temperature) {
  return 0.5 * (scssl::losses::info_nce(q0, k1, bank, temperature) +
                scssl::losses::info_nce(q1, k0, bank, temperature));
}

// Every pair of a symmetric graph once, as int64 [pairs, 2] with the smaller cell id first.
inline torch::Tensor unique_pairs(const scssl::NeighborGraph& graph) {
  std::vector<int64_t> flat;
  for (int64_t i = 0; i < graph.n_cells(); ++i)
    for (int64_t j : graph.neighbors(i))
      if (i < j) flat.insert(flat.end(), {i, j});
  return torch::tensor(flat, torch::kInt64).view({-1, 2});
}

// The symmetric graph of the pairs whose `keep` entry is true.
inline scssl::NeighborGraph graph_of_pairs(const torch::Tensor& pairs, const torch::Tensor& keep,
                                           int64_t n_cells) {
  std::vector<std::vector<int64_t>> lists(n_cells);
  const torch::Tensor p = pairs.contiguous();
  const torch::Tensor k = keep.to(torch::kBool).contiguous();
  const int64_t* ids = p.data_ptr<int64_t>();
  const bool* kept = k.data_ptr<bool>();
  for (int64_t e = 0; e < p.size(0); ++e) {
    if (!kept[e]) continue;
    lists[ids[2 * e]].push_back(ids[2 * e + 1]);
    lists[ids[2 * e + 1]].push_back(ids[2 * e]);
  }
  return scssl::NeighborGraph::from_lists(lists);
}

// Fits a two-component 1-D Gaussian mixture to `values` by expectation-maximisation (started from
// the lower and upper quartiles, the overall variance and equal weights; variance floor 1e-6, as
// scikit-learn's reg_covar) and returns, per value, whether its posterior probability of the
// component that most values are assigned to is at least `threshold` (CLAIRE's yita).
inline torch::Tensor gmm_majority_mask(const torch::Tensor& values, double threshold) {
  const torch::Tensor x = values.to(torch::kFloat64).flatten().unsqueeze(1);  // [n, 1]
  const int64_t n = x.size(0);
  if (n < 2) return torch::ones({n}, torch::kBool);
  constexpr double kVarianceFloor = 1e-6;
  const torch::Tensor quartiles = torch::tensor({0.25, 0.75}, torch::kFloat64);
  torch::Tensor mean = torch::quantile(x.squeeze(1), quartiles).unsqueeze(0);  // [1, 2]
  torch::Tensor var = (x.var(0, /*unbiased=*/false) + kVarianceFloor).expand({1, 2}).clone();
  torch::Tensor weight = torch::full({1, 2}, 0.5, torch::kFloat64);
  torch::Tensor resp;
  double previous = -INFINITY;
  for (int iteration = 0; iteration < 200; ++iteration) {
    const torch::Tensor log_joint =
        -0.5 * ((x - mean).pow(2) / var + torch::log(2 * M_PI * var)) + torch::log(weight);
    const torch::Tensor log_total = torch::logsumexp(log_joint, 1, /*keepdim=*/true);
    resp = torch::exp(log_joint - log_total);
    const double log_likelihood = log_total.mean().item<double>();
    if (std::abs(log_likelihood - previous) < 1e-8) break;
    previous = log_likelihood;
    const torch::Tensor mass = resp.sum(0, /*keepdim=*/true).clamp_min(1e-12);
    weight = mass / n;
    mean = (resp * x).sum(0, true) / mass;
    var = (resp * (x - mean).pow(2)).sum(0, true) / mass + kVarianceFloor;
  }
  const int64_t in_second = resp.argmax(1).sum().item<int64_t>();
  const int64_t majority = in_second * 2 > n ? 1 : 0;
  // The tolerance keeps ties (two identical components: posterior 0.5 up to rounding) at 0.5.
  return resp.select(1, majority) >= threshold - 1e-9;
}

}  // namespace claire
