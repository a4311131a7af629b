// The clustering parts of deep_cluster (docs/method-spec.md §19, docs/methods/deep_cluster.md),
// kept apart from the plugin so that tests can check them on hand-made cases:
//  - DEC's Student-t soft assignments, its sharpened target distribution and the KL term;
//  - the initial clusters of the pretrained latent space: Louvain communities of a kNN graph when
//    the number of clusters is not given (scDeepCluster's default), else k-means++ with restarts;
//  - the per-feature statistics that standardise the input.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/knn.hpp"
#include "scssl/random.hpp"

namespace deep_cluster {

// q_ij proportional to (1 + |z_i - mu_j|^2 / alpha)^(-(alpha + 1) / 2), each row summing to 1.
inline torch::Tensor soft_assignments(const torch::Tensor& z, const torch::Tensor& centres,
                                      double alpha) {
  const torch::Tensor squared = (z.unsqueeze(1) - centres.unsqueeze(0)).pow(2).sum(2);
  const torch::Tensor kernel = (1 + squared / alpha).pow(-(alpha + 1) / 2);
  return kernel / kernel.sum(1, /*keepdim=*/true);
}

// p_ij proportional to q_ij^2 / f_j with f_j = sum_i q_ij (the cluster's soft size), each row
// summing to 1: sharper than q, and large clusters are kept from swallowing the others.
inline torch::Tensor target_distribution(const torch::Tensor& q) {
  const torch::Tensor p = q.pow(2) / q.sum(0, /*keepdim=*/true);
  return p / p.sum(1, /*keepdim=*/true);
}

// KL(P || Q) summed over clusters and averaged over cells, with scDeepCluster's 1e-6 inside the
// logarithm of q; 0 log 0 counts as 0.
inline torch::Tensor kl_divergence(const torch::Tensor& p, const torch::Tensor& q) {
  return (torch::xlogy(p, p) - p * torch::log(q + 1e-6)).sum(1).mean();
}

// The mean of the rows of every cluster, float32 [k, d]; labels are int64 in [0, k).
inline torch::Tensor cluster_means(const torch::Tensor& x, const torch::Tensor& labels, int64_t k) {
  const torch::Tensor sums = torch::zeros({k, x.size(1)}, x.options()).index_add_(0, labels, x);
  const torch::Tensor sizes = torch::bincount(labels, {}, k).to(x.dtype()).clamp_min(1);
  return sums / sizes.unsqueeze(1);
}

// Louvain communities (Blondel et al. 2008) of a symmetric weighted graph without self-loops,
// maximising modularity with a resolution gamma (Reichardt & Bornholdt):
//   Q = sum_c [ in_c - gamma tot_c^2 / 2m ] / 2m,
// in_c the weight inside community c (ordered pairs), tot_c the summed degrees of its nodes. Nodes
// move, in a seeded random order, to the neighbouring community that raises Q most until none
// does; then communities become the nodes of the next level, until a level moves no node.
// Returns a community per node, numbered 0.. by first appearance.
inline std::vector<int64_t> louvain(const scssl::SparseGraph& graph, double resolution,
                                    uint64_t seed) {
  const int64_t n = graph.indptr.numel() - 1;
  using Edges = std::vector<std::vector<std::pair<int64_t, double>>>;
  Edges edges(static_cast<size_t>(n));
  std::vector<double> self(static_cast<size_t>(n), 0.0);  // weight of a node's own loop
  const int64_t* indptr = graph.indptr.data_ptr<int64_t>();
  const int64_t* indices = graph.indices.data_ptr<int64_t>();
  const double* weights = graph.weights.data_ptr<double>();
  double two_m = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) {
      if (indices[e] == i)
        self[i] += weights[e];
      else
        edges[i].emplace_back(indices[e], weights[e]);
      two_m += weights[e];
    }
  std::vector<int64_t> membership(static_cast<size_t>(n));
  std::iota(membership.begin(), membership.end(), int64_t{0});
  if (two_m <= 0) return membership;

  scssl::Xoshiro256 rng(seed);
  for (;;) {
    const auto nodes = static_cast<int64_t>(edges.size());
    std::vector<double> degree(self);
    for (int64_t i = 0; i < nodes; ++i)
      for (const auto& [j, w] : edges[i]) degree[i] += w;
    std::vector<int64_t> community(static_cast<size_t>(nodes));
    std::iota(community.begin(), community.end(), int64_t{0});
    std::vector<double> total(degree);
    std::vector<int64_t> order(community);
    for (int64_t i = nodes - 1; i > 0; --i)
      std::swap(order[i], order[scssl::uniform_below(rng, i + 1)]);

    // Weights from the node being moved to each neighbouring community.
    std::vector<double> link(static_cast<size_t>(nodes), 0.0);
    std::vector<char> seen(static_cast<size_t>(nodes), 0);
    std::vector<int64_t> touched;
    bool moved_any = false;
    for (bool moved = true; moved;) {
      moved = false;
      for (const int64_t i : order) {
        const int64_t own = community[i];
        total[own] -= degree[i];
        touched.assign(1, own);
        seen[own] = 1;
        for (const auto& [j, w] : edges[i]) {
          const int64_t c = community[j];
          if (!seen[c]) touched.push_back(c), seen[c] = 1;
          link[c] += w;
        }
        // The gain of joining c, up to a factor: link(i, c) - gamma tot_c k_i / 2m. Another
        // community must beat the node's own by a margin that rounding cannot produce, so that
        // nodes never cycle between equal choices.
        auto gain = [&](int64_t c) { return link[c] - resolution * total[c] * degree[i] / two_m; };
        int64_t best = own;
        double best_gain = gain(own) + 1e-10 * degree[i];
        for (const int64_t c : touched)
          if (gain(c) > best_gain) best = c, best_gain = gain(c);
        for (const int64_t c : touched) link[c] = 0, seen[c] = 0;
        total[best] += degree[i];
        community[i] = best;
        if (best != own) moved = moved_any = true;
      }
    }
    if (!moved_any) break;

    // Renumber the communities and fold every one into a node of the next level.
    std::vector<int64_t> number(static_cast<size_t>(nodes), -1);
    int64_t count = 0;
    for (int64_t i = 0; i < nodes; ++i)
      if (number[community[i]] < 0) number[community[i]] = count++;
    for (auto& m : membership) m = number[community[m]];
    Edges next(static_cast<size_t>(count));
    std::vector<double> next_self(static_cast<size_t>(count), 0.0);
    for (int64_t i = 0; i < nodes; ++i) {
      const int64_t c = number[community[i]];
      next_self[c] += self[i];
      for (const auto& [j, w] : edges[i]) {
        const int64_t d = number[community[j]];
        if (d == c)
          next_self[c] += w;
        else
          next[c].emplace_back(d, w);
      }
    }
    // Parallel edges between two communities become one.
    for (auto& list : next) {
      std::sort(list.begin(), list.end());
      size_t kept = 0;
      for (size_t e = 0; e < list.size(); ++e)
        if (kept > 0 && list[kept - 1].first == list[e].first)
          list[kept - 1].second += list[e].second;
        else
          list[kept++] = list[e];
      list.resize(kept);
    }
    edges = std::move(next);
    self = std::move(next_self);
  }
  return membership;
}

struct Clustering {
  torch::Tensor labels;   // int64 [n]
  torch::Tensor centres;  // float32 [k, d]
};

// k-means (Lloyd's iterations from k-means++ seeds, as scikit-learn's KMeans that scDeepCluster
// calls), restarted `restarts` times; the run with the smallest within-cluster sum of squares
// wins. Every draw comes from a generator seeded with `seed`.
inline Clustering kmeans(const torch::Tensor& points, int64_t k, int64_t restarts, uint64_t seed,
                         int64_t max_iterations = 300) {
  const torch::Tensor x = points.to(torch::kFloat64);
  const int64_t n = x.size(0);
  auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto squared_distances = [&](const torch::Tensor& centres) {
    return (x.pow(2).sum(1, true) - 2 * x.mm(centres.t()) + centres.pow(2).sum(1).unsqueeze(0))
        .clamp_min(0);
  };
  Clustering best;
  double best_inertia = std::numeric_limits<double>::infinity();
  for (int64_t r = 0; r < restarts; ++r) {
    // k-means++: each further seed is drawn with probability proportional to its squared
    // distance from the nearest seed so far (uniformly when every point is already a seed).
    std::vector<int64_t> seeds{torch::randint(n, {1}, rng, torch::kInt64).item<int64_t>()};
    torch::Tensor nearest = squared_distances(x.index({seeds.back()}).unsqueeze(0)).squeeze(1);
    while (static_cast<int64_t>(seeds.size()) < k) {
      const torch::Tensor weights =
          nearest.sum().item<double>() > 0 ? nearest : torch::ones_like(nearest);
      seeds.push_back(torch::multinomial(weights, 1, false, rng).item<int64_t>());
      nearest = torch::minimum(nearest,
                               squared_distances(x.index({seeds.back()}).unsqueeze(0)).squeeze(1));
    }
    torch::Tensor centres = x.index_select(0, torch::tensor(seeds, torch::kInt64));
    torch::Tensor labels;
    for (int64_t it = 0; it < max_iterations; ++it) {
      const torch::Tensor next = squared_distances(centres).argmin(1);
      if (labels.defined() && next.equal(labels)) break;
      labels = next;
      // A cluster left empty keeps its centre.
      const torch::Tensor sizes = torch::bincount(labels, {}, k).unsqueeze(1);
      centres = torch::where(sizes > 0, cluster_means(x, labels, k), centres);
    }
    const double inertia = std::get<0>(squared_distances(centres).min(1)).sum().item<double>();
    if (inertia < best_inertia) {
      best_inertia = inertia;
      best = {squared_distances(centres).argmin(1), centres.to(torch::kFloat32)};
    }
  }
  return best;
}

// The clusters of the pretrained latent space that DEC starts from: k-means with n_clusters > 0,
// else Louvain on UMAP's fuzzy connectivities of the knn nearest cells (the cell itself counted,
// as scanpy's neighbors), with the centres as the clusters' means.
inline Clustering initial_clusters(const torch::Tensor& z, int64_t n_clusters, int64_t restarts,
                                   int64_t knn, double resolution, uint64_t seed) {
  if (n_clusters > 0) return kmeans(z, n_clusters, restarts, seed);
  const scssl::SparseGraph graph =
      scssl::fuzzy_connectivities(scssl::knn_self(z, std::min<int64_t>(knn, z.size(0))));
  const std::vector<int64_t> communities = louvain(graph, resolution, seed);
  const torch::Tensor labels = torch::tensor(communities, torch::kInt64);
  const int64_t k = labels.max().item<int64_t>() + 1;
  return {labels, cluster_means(z, labels, k)};
}

// Per-feature mean and standard deviation over the rows (ddof 1, as scanpy's scale), float32;
// a constant feature gets deviation 1, so that standardising leaves it at 0.
inline std::pair<torch::Tensor, torch::Tensor> feature_mean_sd(const scssl::Matrix& x) {
  torch::Tensor sum = torch::zeros({x.cols}, torch::kFloat64), squares = torch::zeros_like(sum);
  if (x.is_csr()) {
    const torch::Tensor columns = x.indices.to(torch::kInt64);
    const torch::Tensor values = x.values.to(torch::kFloat64);
    sum.index_add_(0, columns, values);
    squares.index_add_(0, columns, values * values);
  } else {
    const torch::Tensor values = x.dense.to(torch::kFloat64);
    sum = values.sum(0);
    squares = values.pow(2).sum(0);
  }
  const auto rows = static_cast<double>(x.rows);
  const torch::Tensor mean = sum / rows;
  const torch::Tensor variance =
      ((squares - rows * mean * mean) / std::max(rows - 1, 1.0)).clamp_min(0);
  torch::Tensor sd = variance.sqrt();
  sd = torch::where(sd > 0, sd, torch::ones_like(sd));
  return {mean.to(torch::kFloat32), sd.to(torch::kFloat32)};
}

}  // namespace deep_cluster
