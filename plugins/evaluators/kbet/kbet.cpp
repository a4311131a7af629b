// kBET per cell type (docs/metrics.md §3.3: scib-metrics 0.5.1's variant, made deterministic). For
// every label, a diffusion map of its cells' 50-NN fuzzy connectivity subgraph, the k0 + 1 nearest
// cells of each cell in that map, and a chi-square test of the batch counts among them against the
// label's batch composition; the label's score is the share of cells the test accepts. The metric
// is the mean over labels, skipping labels with fewer than 10 cells or a single batch. Cells
// missing a label or a batch take no part. With tested_cells, only a seeded sample of each label's
// cells, stratified by batch, is tested; the diffusion map still uses all of them
// (docs/metrics.md §1.6).
#include <Eigen/Core>
#include <Spectra/SymEigsSolver.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <boost/math/special_functions/gamma.hpp>
#include <cmath>
#include <iomanip>
#include <limits>
#include <mutex>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "scssl/knn.hpp"
#include "scssl/plugin.hpp"
#include "scssl/random.hpp"

namespace {

// Connected graphs up to this size get a dense eigendecomposition, larger ones Lanczos from the
// fixed start vector 1/sqrt(m) (docs/metrics.md §3.3). The reference values were made dense up to
// 3000, but both give the same eigenpairs (the reference cases agree to every digit) and Lanczos
// is ~5x faster from 500 on.
constexpr int64_t kDenseEigenLimit = 500;

// A weighted undirected graph in CSR form over local node ids 0..size-1, columns ascending.
struct Graph {
  std::vector<int64_t> indptr{0};
  std::vector<int64_t> indices;
  std::vector<double> weights;
  int64_t size() const { return static_cast<int64_t>(indptr.size()) - 1; }
};

// The subgraph induced by `nodes` (ascending ids of the source graph), renumbered 0..nodes-1.
// `local` maps source ids to new ids; it must be all -1 on entry and is left all -1.
Graph induced_subgraph(const int64_t* indptr, const int64_t* indices, const double* weights,
                       const std::vector<int64_t>& nodes, std::vector<int64_t>& local) {
  for (size_t i = 0; i < nodes.size(); ++i) local[nodes[i]] = static_cast<int64_t>(i);
  Graph sub;
  sub.indptr.reserve(nodes.size() + 1);
  for (int64_t node : nodes) {
    for (int64_t e = indptr[node]; e < indptr[node + 1]; ++e) {
      const int64_t j = local[indices[e]];
      if (j < 0) continue;
      sub.indices.push_back(j);
      sub.weights.push_back(weights[e]);
    }
    sub.indptr.push_back(static_cast<int64_t>(sub.indices.size()));
  }
  for (int64_t node : nodes) local[node] = -1;
  return sub;
}

Graph induced_subgraph(const Graph& g, const std::vector<int64_t>& nodes) {
  std::vector<int64_t> local(g.size(), -1);
  return induced_subgraph(g.indptr.data(), g.indices.data(), g.weights.data(), nodes, local);
}

// Connected component of every node (the graph is symmetric, so weak = strong); returns the count.
int64_t connected_components(const Graph& g, std::vector<int64_t>& component) {
  component.assign(g.size(), -1);
  std::vector<int64_t> stack;
  int64_t count = 0;
  for (int64_t root = 0; root < g.size(); ++root) {
    if (component[root] >= 0) continue;
    component[root] = count;
    stack.push_back(root);
    while (!stack.empty()) {
      const int64_t v = stack.back();
      stack.pop_back();
      for (int64_t e = g.indptr[v]; e < g.indptr[v + 1]; ++e) {
        if (component[g.indices[e]] >= 0) continue;
        component[g.indices[e]] = count;
        stack.push_back(g.indices[e]);
      }
    }
    ++count;
  }
  return count;
}

// The diffusion operator could not be decomposed: the label scores 0 (scib-metrics' ValueError).
struct DiffusionFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// y = T x for Spectra's Lanczos iteration.
class SparseProduct {
 public:
  using Scalar = double;
  explicit SparseProduct(const Graph& t) : t_(t) {}
  Eigen::Index rows() const { return t_.size(); }
  Eigen::Index cols() const { return t_.size(); }
  void perform_op(const double* x, double* y) const {
    for (int64_t i = 0; i < t_.size(); ++i) {
      double sum = 0;
      for (int64_t e = t_.indptr[i]; e < t_.indptr[i + 1]; ++e)
        sum += t_.weights[e] * x[t_.indices[e]];
      y[i] = sum;
    }
  }

 private:
  const Graph& t_;
};

// Eigenvalues and their eigenvectors (float64 columns of an m x values.size() tensor).
struct Eigenpairs {
  std::vector<double> values;
  torch::Tensor vectors;
};

// The `count` (<= m) eigenpairs of largest magnitude of the symmetric T of a connected graph.
Eigenpairs connected_top_eigenpairs(const Graph& t, int64_t count) {
  const int64_t m = t.size();
  const int64_t subspace = std::max<int64_t>(2 * count + 1, 20);  // ARPACK's default for eigsh
  if (m <= kDenseEigenLimit || subspace >= m) {
    torch::Tensor dense = torch::zeros({m, m}, torch::kFloat64);
    double* d = dense.data_ptr<double>();
    for (int64_t i = 0; i < m; ++i)
      for (int64_t e = t.indptr[i]; e < t.indptr[i + 1]; ++e)
        d[i * m + t.indices[e]] = t.weights[e];
    torch::Tensor values, vectors;
    try {
      std::tie(values, vectors) = torch::linalg_eigh(dense);
    } catch (const c10::Error&) {
      throw DiffusionFailed("dense eigendecomposition did not converge");
    }
    const double* w = values.data_ptr<double>();
    std::vector<int64_t> order(m);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return std::abs(w[a]) > std::abs(w[b]); });
    order.resize(count);
    Eigenpairs out;
    for (int64_t i : order) out.values.push_back(w[i]);
    out.vectors = vectors.index_select(1, torch::tensor(order, torch::kInt64)).contiguous();
    return out;
  }
  SparseProduct product(t);
  Spectra::SymEigsSolver<SparseProduct> solver(product, count, subspace);
  const Eigen::VectorXd start =
      Eigen::VectorXd::Constant(m, 1.0 / std::sqrt(static_cast<double>(m)));
  solver.init(start.data());
  solver.compute(Spectra::SortRule::LargestMagn, 1000, 1e-10);
  if (solver.info() != Spectra::CompInfo::Successful)
    throw DiffusionFailed("Lanczos iteration did not converge");
  const Eigen::VectorXd values = solver.eigenvalues();
  const Eigen::MatrixXd vectors = solver.eigenvectors();  // column-major m x count
  Eigenpairs out{std::vector<double>(values.data(), values.data() + count), {}};
  out.vectors = torch::from_blob(const_cast<double*>(vectors.data()), {count, m}, torch::kFloat64)
                    .t()
                    .contiguous();
  return out;
}

// The `count` eigenpairs of largest magnitude of the symmetric T. A disconnected T is block
// diagonal, its spectrum the union of the blocks' spectra: solving block by block keeps the
// eigenvalue 1 of every component, which one Krylov sequence over all of T would merge into one.
Eigenpairs top_eigenpairs(const Graph& t, int64_t count) {
  std::vector<int64_t> component;
  const int64_t n_components = connected_components(t, component);
  if (n_components == 1) return connected_top_eigenpairs(t, count);
  std::vector<std::vector<int64_t>> members(n_components);
  for (int64_t i = 0; i < t.size(); ++i) members[component[i]].push_back(i);
  std::vector<Eigenpairs> blocks;
  struct Candidate {
    double value;
    int64_t block, column;
  };
  std::vector<Candidate> candidates;
  for (int64_t b = 0; b < n_components; ++b) {
    const int64_t size = static_cast<int64_t>(members[b].size());
    blocks.push_back(
        connected_top_eigenpairs(induced_subgraph(t, members[b]), std::min(count, size)));
    for (size_t c = 0; c < blocks[b].values.size(); ++c)
      candidates.push_back({blocks[b].values[c], b, static_cast<int64_t>(c)});
  }
  std::stable_sort(
      candidates.begin(), candidates.end(),
      [](const Candidate& a, const Candidate& b) { return std::abs(a.value) > std::abs(b.value); });
  Eigenpairs out{{}, torch::zeros({t.size(), count}, torch::kFloat64)};
  for (int64_t c = 0; c < count; ++c) {
    const Candidate& pick = candidates[c];
    out.values.push_back(pick.value);
    out.vectors.index_put_({torch::tensor(members[pick.block], torch::kInt64), c},
                           blocks[pick.block].vectors.select(1, pick.column));
  }
  return out;
}

// The diffusion-map embedding (float32, m x components) of a connectivity graph: T = Dz^-1 K Dz^-1
// with K = Dq^-1 G Dq^-1, its top eigenvectors scaled by lambda / (1 - lambda) (by 1 where the
// float32 lambda + 1e-8 is exactly 1).
torch::Tensor diffusion_embedding(const Graph& g, int64_t components) {
  const int64_t m = g.size();
  auto row_sums = [&](const std::vector<double>& w) {
    std::vector<double> sums(m, 0.0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t e = g.indptr[i]; e < g.indptr[i + 1]; ++e) sums[i] += w[e];
    return sums;
  };
  const std::vector<double> q = row_sums(g.weights);  // symmetric: row sums = column sums
  Graph t = g;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t e = g.indptr[i]; e < g.indptr[i + 1]; ++e) t.weights[e] /= q[i] * q[g.indices[e]];
  std::vector<double> z = row_sums(t.weights);
  for (double& v : z) v = std::sqrt(v);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t e = g.indptr[i]; e < g.indptr[i + 1]; ++e) t.weights[e] /= z[i] * z[g.indices[e]];

  const Eigenpairs pairs = top_eigenpairs(t, components);
  const double* v = pairs.vectors.data_ptr<double>();
  torch::Tensor embedding = torch::empty({m, components}, torch::kFloat32);
  float* out = embedding.data_ptr<float>();
  for (int64_t c = 0; c < components; ++c) {
    // Sign fixed so that the largest-magnitude entry is positive: a reproducible embedding.
    int64_t pivot = 0;
    for (int64_t i = 1; i < m; ++i)
      if (std::abs(v[i * components + c]) > std::abs(v[pivot * components + c])) pivot = i;
    const float sign = v[pivot * components + c] < 0 ? -1.0f : 1.0f;
    const float lambda = static_cast<float>(pairs.values[c]) + 1e-8f;
    const float scale = lambda == 1.0f ? 1.0f : lambda / (1.0f - lambda);
    for (int64_t i = 0; i < m; ++i)
      out[i * components + c] = sign * static_cast<float>(v[i * components + c]) * scale;
  }
  return embedding;
}

// Share of the tested cells (the rows of `neighbours`) whose batch counts among their `wanted`
// nearest cells (self included) pass the chi-square test at level alpha against the batch
// composition of all m cells of batch_of. A neighbour list shorter than `wanted` (only for a
// subset of exactly k0 = 10 cells) is completed with the subset's last cell, as scib-metrics does.
double acceptance_rate(const torch::Tensor& neighbours, int64_t wanted,
                       const std::vector<int32_t>& batch_of, double alpha) {
  const int64_t m = static_cast<int64_t>(batch_of.size()), tested = neighbours.size(0),
                found = neighbours.size(1);
  std::vector<int32_t> rank(*std::max_element(batch_of.begin(), batch_of.end()) + 1, -1);
  std::vector<double> expected;
  for (int32_t b : batch_of) {
    if (rank[b] < 0) {
      rank[b] = static_cast<int32_t>(expected.size());
      expected.push_back(0.0);
    }
    expected[rank[b]] += 1.0;
  }
  const int64_t n_batches = static_cast<int64_t>(expected.size());
  // One batch left after dropping small components: the test is undefined (scipy gives NaN,
  // which accepts no cell).
  if (n_batches < 2) return 0.0;
  for (double& e : expected) e *= static_cast<double>(wanted) / static_cast<double>(m);
  const double half_dof = (n_batches - 1) / 2.0;

  const int64_t* nb = neighbours.data_ptr<int64_t>();
  std::vector<double> observed(n_batches);
  int64_t accepted = 0;
  for (int64_t i = 0; i < tested; ++i) {
    std::fill(observed.begin(), observed.end(), 0.0);
    for (int64_t j = 0; j < found; ++j) observed[rank[batch_of[nb[i * found + j]]]] += 1.0;
    observed[rank[batch_of[m - 1]]] += static_cast<double>(wanted - found);
    double chi2 = 0.0;
    for (int64_t b = 0; b < n_batches; ++b)
      chi2 += (observed[b] - expected[b]) * (observed[b] - expected[b]) / expected[b];
    if (boost::math::gamma_q(half_dof, chi2 / 2.0) >= alpha) ++accepted;
  }
  return static_cast<double>(accepted) / static_cast<double>(tested);
}

class Kbet final : public scssl::IEvaluator {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("k", SCSSL_PARAM_INT, "50",
                  "neighbours per cell of the connectivity graph, self included")
            .at_least(2),
        ParamSpec("alpha", SCSSL_PARAM_FLOAT, "0.05", "significance level of the chi-square test")
            .above(0)
            .below(1),
        ParamSpec("diffusion_components", SCSSL_PARAM_INT, "100",
                  "diffusion-map dimensions per label")
            .at_least(1),
        ParamSpec("tested_cells", SCSSL_PARAM_INT, "0",
                  "0: test every cell (exact); more: test about this many cells of each label, "
                  "a sample stratified by batch")
            .at_least(0),
        ParamSpec("seed", SCSSL_PARAM_INT, "0", "seed of the tested sample").at_least(0)};
  }
  static uint64_t requirements() { return SCSSL_NEEDS_LABELS | SCSSL_NEEDS_BATCH; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {
        {"kbet", SCSSL_GROUP_BATCH, 1,
         "mean over cell types of the kBET acceptance rate in a diffusion map of the 50-NN graph"}};
  }

  Kbet(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host),
        k_(p.get_int("k")),
        alpha_(p.get_float("alpha")),
        components_(p.get_int("diffusion_components")),
        tested_cells_(p.get_int("tested_cells")),
        seed_(p.get_int("seed")) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column& labels = ctx.data.require_labels("kbet");
    const scssl::Column& batches = ctx.data.require_batches("kbet");
    const int64_t n = ctx.data.n_cells();
    const scssl::SparseGraph graph = host_.connectivities(k_);
    if (graph.indptr.numel() != n + 1)
      throw scssl::BadData("kbet: the connectivity graph must have one row per cell");
    const int64_t* indptr = graph.indptr.data_ptr<int64_t>();
    const int64_t* indices = graph.indices.data_ptr<int64_t>();
    const double* weights = graph.weights.data_ptr<double>();

    const int32_t* label = labels.codes.data_ptr<int32_t>();
    const int32_t* batch = batches.codes.data_ptr<int32_t>();
    std::vector<std::vector<int64_t>> cells_of(labels.categories.size());
    for (int64_t i = 0; i < n; ++i)
      if (label[i] >= 0 && batch[i] >= 0) cells_of[label[i]].push_back(i);

    std::vector<int64_t> local(n, -1);
    // scib-metrics 0.5.1 lowers its component count to (label size - 1) for a small label and keeps
    // it lowered for every later label (docs/metrics.md §3.3 point 7); reproduced on purpose.
    int64_t components = components_;
    // First, in label order, what each label needs (cheap); then the diffusion maps and tests,
    // the expensive part, for several labels at once.
    struct LabelTask {
      std::ostringstream note;
      bool scored = false;
      double score = 0.0;
      Graph sub;
      std::vector<int32_t> batch_of;
      std::vector<int64_t> tested;  // rows of `sub` to test; empty: every row
      int64_t k0 = 0, components = 0;
    };
    std::vector<LabelTask> tasks(cells_of.size());
    std::vector<LabelTask*> to_test;
    int64_t eligible = 0, tested = 0;  // cells in the tested labels' maps, and of them tested
    for (size_t l = 0; l < cells_of.size(); ++l) {
      const std::vector<int64_t>& cells = cells_of[l];
      LabelTask& task = tasks[l];
      if (cells.empty()) continue;
      const int64_t n_cells = static_cast<int64_t>(cells.size());
      std::vector<int64_t> batch_size(batches.categories.size(), 0);
      for (int64_t i : cells) ++batch_size[batch[i]];
      const int64_t present =
          std::count_if(batch_size.begin(), batch_size.end(), [](int64_t s) { return s > 0; });
      std::ostringstream& note = task.note;
      note << "kbet: label '" << labels.categories[l] << "' (" << n_cells << " cells, " << present
           << " batches";
      if (n_cells < 10 || present < 2) {
        note << "): NaN, skipped";
        continue;
      }
      // k0 = a quarter of the mean batch size, clipped to [10, 70].
      int64_t k0 = std::clamp<int64_t>(n_cells / present / 4, 10, 70);
      const int64_t size_max = std::numeric_limits<int32_t>::max();
      if (k0 * n_cells >= size_max) k0 = size_max / n_cells;
      note << ", k0 " << k0;

      Graph sub = induced_subgraph(indptr, indices, weights, cells, local);
      std::vector<int64_t> component;
      const int64_t n_components = connected_components(sub, component);
      note << ", " << n_components << " components";
      std::vector<int64_t> kept(n_cells);
      std::iota(kept.begin(), kept.end(), 0);
      task.scored = true;
      if (n_components > 1) {
        // Only components of at least 3 k0 cells are tested, and only if they hold 75 % of the
        // cells.
        std::vector<int64_t> component_size(n_components, 0);
        for (int64_t c : component) ++component_size[c];
        kept.clear();
        for (int64_t i = 0; i < n_cells; ++i)
          if (component_size[component[i]] >= 3 * k0) kept.push_back(i);
        if (static_cast<double>(kept.size()) < 0.75 * static_cast<double>(n_cells)) {
          note << ", too fragmented): 0";
          continue;
        }
        sub = induced_subgraph(sub, kept);
        note << ", " << kept.size() << " cells in large ones";
      }
      const int64_t m = static_cast<int64_t>(kept.size());
      components = std::min(components, m - 1);
      note << ", " << components << " diffusion components";
      task.sub = std::move(sub);
      task.k0 = k0;
      task.components = components;
      task.batch_of.resize(m);
      for (int64_t i = 0; i < m; ++i) task.batch_of[i] = batch[cells[kept[i]]];
      if (tested_cells_ > 0 && m > tested_cells_) {
        // One stream per label, so that a label's sample does not depend on the others.
        task.tested = scssl::stratified_sample(
            task.batch_of, tested_cells_,
            scssl::splitmix64(static_cast<uint64_t>(seed_) ^ static_cast<uint64_t>(l)));
        note << ", " << task.tested.size() << " cells tested";
      }
      eligible += m;
      tested += task.tested.empty() ? m : static_cast<int64_t>(task.tested.size());
      to_test.push_back(&task);
    }

    std::atomic<size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_lock;
    auto work = [&] {
      for (size_t t = next++; t < to_test.size(); t = next++) {
        LabelTask& task = *to_test[t];
        try {
          const torch::Tensor embedding = diffusion_embedding(task.sub, task.components);
          // A tested cell is its own nearest (distance 0), as in the full self search.
          const torch::Tensor neighbours =
              task.tested.empty()
                  ? scssl::knn_self(embedding, task.k0 + 1, ctx.device).indices.contiguous()
                  : scssl::knn_exact(
                        embedding,
                        embedding.index_select(0, torch::tensor(task.tested, torch::kInt64)),
                        task.k0 + 1, scssl::Distance::Euclidean, ctx.device)
                        .indices.contiguous();
          task.score = acceptance_rate(neighbours, task.k0 + 1, task.batch_of, alpha_);
        } catch (const DiffusionFailed& e) {
          task.note << ", " << e.what();
        } catch (...) {
          std::lock_guard<std::mutex> hold(failure_lock);
          if (!failure) failure = std::current_exception();
        }
        task.note << "): " << std::setprecision(10) << task.score;
      }
    };
    const size_t workers =
        std::min<size_t>(to_test.size(), std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (size_t w = 0; w < workers; ++w)
      pool.emplace_back([&] {
#ifdef _OPENMP
        omp_set_num_threads(1);  // this worker's own setting: one label per core, no nested teams
#endif
        work();
      });
    for (auto& t : pool) t.join();
    if (failure) std::rethrow_exception(failure);

    double total = 0;
    int64_t scored = 0;
    // Each cell of a scored type carries its type's acceptance rate.
    torch::Tensor per_cell = torch::full({ctx.data.n_cells()}, std::nan(""), torch::kFloat64);
    double* pc = per_cell.data_ptr<double>();
    for (size_t l = 0; l < tasks.size(); ++l) {
      const LabelTask& task = tasks[l];
      if (!task.note.str().empty()) host_.debug(task.note.str());
      if (!task.scored) continue;
      for (int64_t i : cells_of[l]) pc[i] = task.score;
      total += task.score;
      ++scored;
    }
    if (scored == 0)
      return sink.undefined("kbet",
                            "no cell type has 10 or more cells in two or more batches, so no "
                            "type can be tested");
    if (tested < eligible)
      sink.note("kbet", scssl::sample_note("tested", tested, eligible,
                                           "evaluation.kbet.tested_cells", seed_));
    sink.report_cells("kbet", per_cell);
    sink.report("kbet", total / static_cast<double>(scored));
  }

 private:
  int64_t k_;
  double alpha_;
  int64_t components_, tested_cells_, seed_;
};

}  // namespace

SCSSL_PLUGIN(Kbet, "kbet", "1.0.0", "kBET: batch mixing of each cell type's neighbourhoods (scIB)")
