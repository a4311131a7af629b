// totalVI's empirical prior of the protein background (docs/method-spec.md §13,
// docs/methods/totalvi.md): per batch, 100 cells drawn with replacement; for each, a two-component
// Gaussian mixture over that cell's log1p protein counts (the proteins are the samples), whose
// lower-mean component is the cell's background. Kept apart from the plugin so that tests can
// check the mixture fit on hand-made data.
//
// The fit follows scikit-learn's GaussianMixture(n_components=2) as scvi-tools 1.1 calls it:
// k-means (k-means++ seeding, Lloyd iterations) gives the initial responsibilities, then EM until
// the mean log-likelihood per sample changes by less than `tolerance`, with `reg_covar` added to
// every variance.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/random.hpp"

namespace totalvi {

struct MixtureOptions {
  int max_iterations = 100;  // scikit-learn's max_iter
  double tolerance = 1e-3;   // on the change of the mean log-likelihood per sample
  double reg_covar = 1e-6;   // added to each variance: the floor that keeps a component alive
  int kmeans_iterations = 300;
};

struct MixtureFit {
  // Component 0 has the smaller mean.
  double mean[2] = {0, 0};
  double variance[2] = {1, 1};
  double weight[2] = {0.5, 0.5};
  int iterations = 0;
  // False where scikit-learn warns and totalVI falls back: fewer than two distinct values (k-means
  // finds one cluster) or no convergence within max_iterations.
  bool converged = false;
};

namespace detail {

// Two k-means clusters of 1-D data with at least two distinct values: k-means++ seeding with
// scikit-learn's 2 + floor(ln 2) = 2 candidates for the second centre, then Lloyd's iterations.
// Returns each value's cluster (0 or 1).
inline std::vector<int> two_means(const std::vector<double>& x, scssl::Xoshiro256& rng,
                                  int max_iterations) {
  const size_t n = x.size();
  const double first = x[scssl::uniform_below(rng, static_cast<int64_t>(n))];
  double c[2] = {first, first};
  std::vector<double> d2(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += d2[i] = (x[i] - c[0]) * (x[i] - c[0]);
  double best_potential = std::numeric_limits<double>::infinity();
  for (int trial = 0; trial < 2; ++trial) {
    // A value drawn with probability proportional to its squared distance to the first centre.
    double target = scssl::uniform(rng) * total, acc = 0;
    size_t pick = 0;
    for (; pick + 1 < n; ++pick)
      if ((acc += d2[pick]) > target) break;
    while (d2[pick] == 0) pick = (pick + 1) % n;  // rounding at the end may land on a zero
    double potential = 0;
    for (size_t i = 0; i < n; ++i)
      potential += std::min(d2[i], (x[i] - x[pick]) * (x[i] - x[pick]));
    if (potential < best_potential) {
      best_potential = potential;
      c[1] = x[pick];
    }
  }
  // scikit-learn stops when the centres move less than 1e-4 times the data's variance.
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= static_cast<double>(n);
  for (double v : x) var += (v - mean) * (v - mean);
  const double shift_tolerance = 1e-4 * var / static_cast<double>(n);
  std::vector<int> label(n, -1);
  for (int it = 0; it < max_iterations; ++it) {
    bool changed = false;
    double sum[2] = {0, 0}, count[2] = {0, 0};
    for (size_t i = 0; i < n; ++i) {
      const int l = std::abs(x[i] - c[1]) < std::abs(x[i] - c[0]) ? 1 : 0;
      changed |= l != label[i];
      label[i] = l;
      sum[l] += x[i];
      count[l] += 1;
    }
    if (!changed) break;
    // In 1-D both clusters keep a member: each side of the midpoint holds its own centre's
    // nearest values.
    double shift = 0;
    for (int k = 0; k < 2; ++k) {
      const double moved = count[k] > 0 ? sum[k] / count[k] : c[k];
      shift += (moved - c[k]) * (moved - c[k]);
      c[k] = moved;
    }
    if (shift <= shift_tolerance) break;
  }
  return label;
}

}  // namespace detail

// Fits a two-component Gaussian mixture to the values by EM.
inline MixtureFit fit_two_gaussians(const std::vector<double>& x, scssl::Xoshiro256& rng,
                                    const MixtureOptions& options = {}) {
  MixtureFit fit;
  const size_t n = x.size();
  if (n < 2 || std::all_of(x.begin(), x.end(), [&](double v) { return v == x[0]; })) return fit;
  // Responsibilities of component 1 (component 0 has 1 - r); k-means labels to start.
  std::vector<double> r(n);
  const std::vector<int> label = detail::two_means(x, rng, options.kmeans_iterations);
  for (size_t i = 0; i < n; ++i) r[i] = label[i];
  const double tiny = 10 * std::numeric_limits<double>::epsilon();  // scikit-learn's guard on N_k
  auto m_step = [&] {
    double nk[2] = {tiny, tiny}, sx[2] = {0, 0};
    for (size_t i = 0; i < n; ++i) {
      nk[0] += 1 - r[i];
      nk[1] += r[i];
      sx[0] += (1 - r[i]) * x[i];
      sx[1] += r[i] * x[i];
    }
    for (int k = 0; k < 2; ++k) fit.mean[k] = sx[k] / nk[k];
    double sv[2] = {0, 0};
    for (size_t i = 0; i < n; ++i) {
      sv[0] += (1 - r[i]) * (x[i] - fit.mean[0]) * (x[i] - fit.mean[0]);
      sv[1] += r[i] * (x[i] - fit.mean[1]) * (x[i] - fit.mean[1]);
    }
    for (int k = 0; k < 2; ++k) {
      fit.variance[k] = sv[k] / nk[k] + options.reg_covar;
      fit.weight[k] = nk[k] / static_cast<double>(n);
    }
  };
  // Mean log-likelihood per sample; updates the responsibilities.
  auto e_step = [&] {
    constexpr double kLog2Pi = 1.8378770664093453;
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      double lp[2];
      for (int k = 0; k < 2; ++k) {
        const double d = x[i] - fit.mean[k];
        lp[k] = std::log(fit.weight[k]) -
                0.5 * (kLog2Pi + std::log(fit.variance[k]) + d * d / fit.variance[k]);
      }
      const double top = std::max(lp[0], lp[1]);
      const double norm = top + std::log(std::exp(lp[0] - top) + std::exp(lp[1] - top));
      r[i] = std::exp(lp[1] - norm);
      total += norm;
    }
    return total / static_cast<double>(n);
  };
  m_step();
  double bound = -std::numeric_limits<double>::infinity();
  for (fit.iterations = 1; fit.iterations <= options.max_iterations; ++fit.iterations) {
    const double previous = bound;
    bound = e_step();
    m_step();
    if (std::abs(bound - previous) < options.tolerance) {
      fit.converged = true;
      break;
    }
  }
  fit.iterations = std::min(fit.iterations, options.max_iterations);
  if (fit.mean[1] < fit.mean[0]) {
    std::swap(fit.mean[0], fit.mean[1]);
    std::swap(fit.variance[0], fit.variance[1]);
    std::swap(fit.weight[0], fit.weight[1]);
  }
  return fit;
}

// The prior of the log protein background per batch: mean and scale of a normal.
struct BackgroundPrior {
  std::vector<double> mean, scale;
};

// totalVI's empirical background prior from raw protein counts ([cells, proteins]) and the cells'
// batch codes (int64, 0 <= code < n_batches). Per batch, `cells_per_batch` cells drawn with
// replacement; a cell whose mixture does not converge counts as (0, 0.05); the batch gets the mean
// of its cells' background means and sqrt(sum of their variances) / cells_per_batch. A batch
// without cells gets (0, 1), and with fewer than 5 proteins every batch gets (0, 0.05) (scvi-tools'
// values for these cases).
inline BackgroundPrior empirical_background_prior(const scssl::Matrix& proteins,
                                                  const torch::Tensor& batches, int64_t n_batches,
                                                  int64_t cells_per_batch, uint64_t seed,
                                                  const MixtureOptions& options = {}) {
  BackgroundPrior prior{std::vector<double>(n_batches, 0.0), std::vector<double>(n_batches, 0.05)};
  if (proteins.cols < 5) return prior;
  scssl::Xoshiro256 rng(seed);
  const torch::Tensor codes = batches.to(torch::kInt64).contiguous();
  for (int64_t b = 0; b < n_batches; ++b) {
    const torch::Tensor members = (codes == b).nonzero().flatten();
    if (members.numel() == 0) {
      prior.scale[b] = 1.0;
      continue;
    }
    std::vector<int64_t> drawn(cells_per_batch);
    for (auto& d : drawn) d = members[scssl::uniform_below(rng, members.numel())].item<int64_t>();
    const torch::Tensor values =
        torch::log1p(proteins.rows_dense(torch::tensor(drawn, torch::kInt64)).to(torch::kFloat64))
            .contiguous();
    const double* v = values.data_ptr<double>();
    double mean_sum = 0, variance_sum = 0;
    for (int64_t c = 0; c < cells_per_batch; ++c) {
      const std::vector<double> cell(v + c * proteins.cols, v + (c + 1) * proteins.cols);
      const MixtureFit fit = fit_two_gaussians(cell, rng, options);
      mean_sum += fit.converged ? fit.mean[0] : 0.0;
      variance_sum += fit.converged ? fit.variance[0] : 0.05 * 0.05;
    }
    prior.mean[b] = mean_sum / static_cast<double>(cells_per_batch);
    prior.scale[b] = std::sqrt(variance_sum) / static_cast<double>(cells_per_batch);
  }
  return prior;
}

}  // namespace totalvi
