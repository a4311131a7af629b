// Leiden NMI / ARI (docs/metrics.md §2.4): Leiden clusterings of the 15-NN fuzzy connectivities at
// several resolutions, each compared with the cell types; the clustering with the largest NMI gives
// both reported numbers (ARI is not maximised on its own).
#include <igraph.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "scssl/plugin.hpp"

namespace {

constexpr const char* kName = "leiden_nmi_ari";
// python-igraph's defaults, which scib-metrics keeps: the refinement's randomness and the number
// of passes.
constexpr double kBeta = 0.01;
constexpr igraph_integer_t kIterations = 2;

void check(igraph_error_t status, const std::string& doing) {
  if (status != IGRAPH_SUCCESS)
    throw scssl::Error(SCSSL_ERR_INTERNAL, std::string(kName) + ": igraph failed to " + doing +
                                               ": " + igraph_strerror(status));
}

// igraph aborts the process on errors by default; while this lives it returns error codes instead.
class IgraphErrorsAsCodes {
 public:
  IgraphErrorsAsCodes() : previous_(igraph_set_error_handler(igraph_error_handler_ignore)) {}
  ~IgraphErrorsAsCodes() { igraph_set_error_handler(previous_); }
  IgraphErrorsAsCodes(const IgraphErrorsAsCodes&) = delete;
  IgraphErrorsAsCodes& operator=(const IgraphErrorsAsCodes&) = delete;

 private:
  igraph_error_handler_t* previous_;
};

class RealVector {
 public:
  explicit RealVector(igraph_integer_t size) { check(igraph_vector_init(&v_, size), "allocate"); }
  ~RealVector() { igraph_vector_destroy(&v_); }
  RealVector(const RealVector&) = delete;
  RealVector& operator=(const RealVector&) = delete;
  igraph_vector_t* get() { return &v_; }
  igraph_real_t& operator[](igraph_integer_t i) { return VECTOR(v_)[i]; }

 private:
  igraph_vector_t v_;
};

class IntVector {
 public:
  explicit IntVector(igraph_integer_t size) {
    check(igraph_vector_int_init(&v_, size), "allocate");
  }
  ~IntVector() { igraph_vector_int_destroy(&v_); }
  IntVector(const IntVector&) = delete;
  IntVector& operator=(const IntVector&) = delete;
  igraph_vector_int_t* get() { return &v_; }
  igraph_integer_t& operator[](igraph_integer_t i) { return VECTOR(v_)[i]; }

 private:
  igraph_vector_int_t v_;
};

// The symmetric connectivities as an undirected igraph graph, each pair once, with the weights and
// the weighted degrees that Leiden's modularity objective needs.
class WeightedGraph {
 public:
  explicit WeightedGraph(const scssl::SparseGraph& w)
      : edges_(0), weights_(0), strength_(w.indptr.numel() - 1) {
    const int64_t n = w.indptr.numel() - 1;
    const int64_t* indptr = w.indptr.data_ptr<int64_t>();
    const int64_t* indices = w.indices.data_ptr<int64_t>();
    const double* weight = w.weights.data_ptr<double>();
    const int64_t pairs = (indptr[n] + 1) / 2;
    check(igraph_vector_int_reserve(edges_.get(), 2 * pairs), "allocate the edge list");
    check(igraph_vector_reserve(weights_.get(), pairs), "allocate the edge weights");
    for (int64_t i = 0; i < n; ++i) {
      double strength = 0;
      for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) {
        strength += weight[e];
        if (indices[e] <= i) continue;  // the pair was added from the other row
        igraph_vector_int_push_back(edges_.get(), i);
        igraph_vector_int_push_back(edges_.get(), indices[e]);
        igraph_vector_push_back(weights_.get(), weight[e]);
      }
      strength_[i] = strength;
      total_weight_ += strength;
    }
    check(igraph_create(&graph_, edges_.get(), n, IGRAPH_UNDIRECTED), "build the neighbour graph");
  }
  ~WeightedGraph() { igraph_destroy(&graph_); }
  WeightedGraph(const WeightedGraph&) = delete;
  WeightedGraph& operator=(const WeightedGraph&) = delete;

  // Leiden with the modularity objective at resolution gamma, from singletons, igraph's RNG
  // seeded first so that every resolution sees the same random stream. Returns the cluster count.
  int64_t cluster(double gamma, uint64_t seed, IntVector& membership) {
    check(igraph_rng_seed(igraph_rng_default(), seed), "seed its random number generator");
    igraph_integer_t clusters = 0;
    // igraph's objective is sum_ij (A_ij - r * n_i n_j) over same-cluster pairs: with node weights
    // n_i = strength and r = gamma / sum_ij A_ij it is modularity at resolution gamma.
    check(igraph_community_leiden(&graph_, weights_.get(), strength_.get(), gamma / total_weight_,
                                  kBeta, /*start=*/false, kIterations, membership.get(), &clusters,
                                  /*quality=*/nullptr),
          "run Leiden");
    return clusters;
  }
  bool has_edges() const { return total_weight_ > 0; }

 private:
  IntVector edges_;
  RealVector weights_;
  RealVector strength_;
  double total_weight_ = 0;
  igraph_t graph_;
};

struct Agreement {
  double nmi;
  double ari;
};

// NMI (arithmetic-mean normalisation, natural logs) and ARI (Hubert-Arabie) of two partitions of
// the same cells, with scikit-learn's conventions for the degenerate cases.
Agreement compare(const std::vector<int64_t>& truth, const std::vector<int64_t>& found) {
  const size_t n = truth.size();
  int64_t found_max = 0;
  for (int64_t f : found) found_max = std::max(found_max, f);
  // Contingency table as sorted (truth, found) keys: sparse, so any number of clusters is cheap.
  std::vector<int64_t> keys(n);
  for (size_t i = 0; i < n; ++i) keys[i] = truth[i] * (found_max + 1) + found[i];
  std::sort(keys.begin(), keys.end());
  std::vector<int64_t> truth_sizes(*std::max_element(truth.begin(), truth.end()) + 1, 0);
  std::vector<int64_t> found_sizes(found_max + 1, 0);
  for (int64_t t : truth) ++truth_sizes[t];
  for (int64_t f : found) ++found_sizes[f];

  const double total = static_cast<double>(n);
  auto pairs = [](double count) { return count * (count - 1) / 2; };
  double mutual_info = 0, pairs_together = 0;
  for (size_t start = 0; start < n;) {
    size_t end = start;
    while (end < n && keys[end] == keys[start]) ++end;
    const double count = static_cast<double>(end - start);
    const double a = static_cast<double>(truth_sizes[keys[start] / (found_max + 1)]);
    const double b = static_cast<double>(found_sizes[keys[start] % (found_max + 1)]);
    mutual_info += count / total * std::log(count * total / (a * b));
    pairs_together += pairs(count);
    start = end;
  }
  auto summarise = [&](const std::vector<int64_t>& sizes, double& entropy, double& pair_sum) {
    int64_t parts = 0;
    entropy = pair_sum = 0;
    for (int64_t s : sizes) {
      if (s == 0) continue;
      ++parts;
      entropy -= s / total * std::log(s / total);
      pair_sum += pairs(static_cast<double>(s));
    }
    return parts;
  };
  double truth_entropy, truth_pairs, found_entropy, found_pairs;
  const int64_t truth_parts = summarise(truth_sizes, truth_entropy, truth_pairs);
  const int64_t found_parts = summarise(found_sizes, found_entropy, found_pairs);

  Agreement out{};
  if (truth_parts == 1 && found_parts == 1) {
    out.nmi = 1;  // neither splits the cells: a perfect match
  } else if (truth_parts == 1 || found_parts == 1) {
    out.nmi = 0;  // one side carries no information
  } else {
    out.nmi = std::max(mutual_info, 0.0) / ((truth_entropy + found_entropy) / 2);
  }
  // Pairs split by one partition only; none means the partitions agree (ARI 1, as in sklearn).
  if (truth_pairs == pairs_together && found_pairs == pairs_together) {
    out.ari = 1;
  } else {
    const double expected = truth_pairs * found_pairs / pairs(total);
    out.ari = (pairs_together - expected) / ((truth_pairs + found_pairs) / 2 - expected);
  }
  return out;
}

class LeidenNmiAri final : public scssl::IEvaluator {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("k", SCSSL_PARAM_INT, "15", "neighbours per cell, the cell itself included")
            .at_least(2),
        ParamSpec("resolutions", SCSSL_PARAM_FLOAT_LIST, "0.2,0.4,0.6,0.8,1.0,1.2,1.4,1.6,1.8,2.0",
                  "Leiden resolutions to try; the one with the largest NMI is reported")
            .above(0)
            .nonempty(),
        ParamSpec("seed", SCSSL_PARAM_INT, "42",
                  "seed of igraph's random numbers, reset per resolution")
            .at_least(0)};
  }
  static uint64_t requirements() { return SCSSL_NEEDS_LABELS; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"leiden_nmi", SCSSL_GROUP_BIO, 1,
             "NMI of cell types and the Leiden clustering, at the resolution with the largest NMI"},
            {"leiden_ari", SCSSL_GROUP_BIO, 1,
             "ARI of cell types and the same Leiden clustering as leiden_nmi"}};
  }
  LeidenNmiAri(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host),
        k_(p.get_int("k")),
        resolutions_(p.get_float_list("resolutions")),
        seed_(p.get_int("seed")) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column& labels = ctx.data.require_labels(kName);
    const int32_t* code = labels.codes.data_ptr<int32_t>();
    const int64_t n = labels.codes.numel();
    // Cells without a cell type are clustered with the others but not scored.
    std::vector<int64_t> scored, truth;
    for (int64_t i = 0; i < n; ++i)
      if (code[i] >= 0) scored.push_back(i), truth.push_back(code[i]);
    if (scored.empty()) throw scssl::BadData(std::string(kName) + ": no cell has a cell type");

    IgraphErrorsAsCodes errors_as_codes;
    WeightedGraph graph(host_.connectivities(k_));
    if (!graph.has_edges())
      throw scssl::BadData(std::string(kName) + ": the neighbour graph has no edges (" +
                           std::to_string(n) + " cells)");
    IntVector membership(n);
    std::vector<int64_t> found(scored.size());
    Agreement best{-1, 0};
    double best_resolution = 0;
    int64_t best_clusters = 0;
    for (double gamma : resolutions_) {
      const int64_t clusters = graph.cluster(gamma, static_cast<uint64_t>(seed_), membership);
      for (size_t i = 0; i < scored.size(); ++i) found[i] = membership[scored[i]];
      const Agreement a = compare(truth, found);
      std::ostringstream line;
      line << kName << ": resolution " << gamma << ": " << clusters << " clusters, NMI " << a.nmi
           << ", ARI " << a.ari;
      host_.debug(line.str());
      if (a.nmi > best.nmi) best = a, best_resolution = gamma, best_clusters = clusters;
    }
    std::ostringstream line;
    line << kName << ": best resolution " << best_resolution << " (" << best_clusters
         << " clusters): NMI " << best.nmi << ", ARI " << best.ari;
    host_.info(line.str());
    sink.report("leiden_nmi", best.nmi);
    sink.report("leiden_ari", best.ari);
  }

 private:
  int64_t k_;
  std::vector<double> resolutions_;
  int64_t seed_;
};

}  // namespace

SCSSL_PLUGIN(
    LeidenNmiAri, "leiden_nmi_ari", "1.0.0",
    "Leiden NMI and ARI: cell types recovered by Leiden clustering of the 15-NN graph (scIB)")
