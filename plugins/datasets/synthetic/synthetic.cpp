// The synthetic dataset plugin: negative-binomial (gamma-Poisson) counts with cell types, batches
// and optionally a protein (ADT) modality, generated straight into CSR.
//
// Model, per modality:
//   base mean of feature g:     m_g = exp(N(0, s))                      (s = 2 for genes, 1 for
//   proteins) cell type t:                x exp(N(0, de_effect)) on a random de_fraction of the
//   features batch b:                    x exp(N(0, batch_effect)) on every feature p_tbg = m_g *
//   type_tg * batch_bg, normalised to sum 1 over g cell c (type t, batch b):   mu_cg = L_c * p_tbg,
//   L_c = mean_library_size * exp(N(0, 0.3)) count_cg ~ NB(mean mu_cg, inverse dispersion theta),
//   i.e. Poisson(Gamma(theta, mu_cg/theta))
// Every random draw comes from streams seeded from `seed` (std::mt19937_64 for the model and the
// cells, xoshiro256** for the counts), through the small distribution functions below (not
// std::*_distribution, whose output differs between standard libraries), so one seed gives the
// same data on every platform and for any number of threads.
//
// Speed: the count of a (cell, feature) is drawn by inverting the NB distribution function, which
// needs P(0) = (theta / (theta + mu))^theta. Library sizes are drawn on a grid of 1/32 in log
// space so that P(0) can be tabulated per (type, batch, library) instead of computed per entry;
// the draw of one cell is then one uniform number per feature plus a short loop per non-zero.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <unordered_map>

#include "scssl/plugin.hpp"
#include "scssl/random.hpp"

namespace {

// ---- portable random numbers -------------------------------------------------------------------

// The count streams draw one number per (cell, feature), hundreds of millions per data set, and
// std::mt19937_64's out-of-line refill cost a fifth of the time: they use scssl::Xoshiro256, a
// small generator that inlines.
using scssl::splitmix64;
using scssl::uniform;
using scssl::Xoshiro256;

// An independent stream per purpose (and block), so e.g. adding proteins leaves the RNA counts
// unchanged.
uint64_t stream_seed(uint64_t seed, uint64_t purpose, uint64_t block = 0) {
  return splitmix64(splitmix64(splitmix64(seed) ^ (purpose * 0xd1b54a32d192ed03ull)) + block);
}
std::mt19937_64 stream(uint64_t seed, uint64_t purpose) {
  return std::mt19937_64(stream_seed(seed, purpose));
}

// Uniform integer in [0, n) (n > 0), without modulo bias worth caring about at these sizes.
int64_t uniform_int(std::mt19937_64& rng, int64_t n) {
  return static_cast<int64_t>(uniform(rng) * static_cast<double>(n));
}

// Standard normal (Marsaglia's polar method, no cached second value: simpler to keep in step).
template <class Rng>
double normal(Rng& rng) {
  while (true) {
    const double u = 2.0 * uniform(rng) - 1.0, v = 2.0 * uniform(rng) - 1.0;
    const double s = u * u + v * v;
    if (s > 0.0 && s < 1.0) return u * std::sqrt(-2.0 * std::log(s) / s);
  }
}

// Gamma(shape, 1) by Marsaglia & Tsang; shape < 1 through Gamma(shape + 1) * U^(1/shape).
template <class Rng>
double gamma(Rng& rng, double shape) {
  if (shape < 1.0) {
    double u;
    do u = uniform(rng);
    while (u <= 0.0);
    return gamma(rng, shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = normal(rng);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = uniform(rng);
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

// Poisson by inversion, in pieces of at most 500 so exp(-lambda) never underflows.
template <class Rng>
int64_t poisson(Rng& rng, double lambda) {
  int64_t total = 0;
  while (lambda > 0.0) {
    const double piece = std::min(lambda, 500.0);
    lambda -= piece;
    const double u = uniform(rng);
    double p = std::exp(-piece), f = p;
    int64_t k = 0;
    while (u >= f && p > 0.0) {
      ++k;
      p *= piece / static_cast<double>(k);
      f += p;
    }
    total += k;
  }
  return total;
}

// ---- the model ---------------------------------------------------------------------------------

constexpr double kLibraryLogSd = 0.3;        // spread of library sizes around the mean (log scale)
constexpr double kLibraryStep = 1.0 / 32.0;  // grid of library sizes in log space
constexpr int kLibraryBins = 40;             // grid covers +-40 steps = +-1.25 = about 4 sd

struct ModalitySpec {
  std::string name;
  std::string feature_prefix;
  int64_t n_features = 0;
  double mean_sd = 2.0;  // spread of base means across features (log scale)
  double de_fraction = 0.1;
  double de_effect = 1.0;
  double library_size = 5000;
};

struct Cells {
  std::vector<int32_t> type;
  std::vector<int32_t> batch;
};

class CountModel {
 public:
  CountModel(const ModalitySpec& spec, int32_t n_types, int32_t n_batches, double batch_effect,
             double theta, std::mt19937_64& rng)
      : n_features_(spec.n_features),
        n_types_(n_types),
        n_batches_(n_batches),
        theta_(theta),
        library_size_(spec.library_size) {
    const int64_t g = n_features_;
    std::vector<double> base(g);
    for (auto& b : base) b = std::exp(spec.mean_sd * normal(rng));
    type_factor_.assign(static_cast<size_t>(n_types) * g, 1.0);
    const int64_t n_de =
        static_cast<int64_t>(std::llround(spec.de_fraction * static_cast<double>(g)));
    std::vector<int64_t> order(g);
    for (int32_t t = 0; t < n_types; ++t) {
      // A random subset of n_de features (partial Fisher-Yates) gets a fold change.
      for (int64_t j = 0; j < g; ++j) order[j] = j;
      for (int64_t j = 0; j < n_de; ++j) {
        std::swap(order[j], order[j + uniform_int(rng, g - j)]);
        type_factor_[t * g + order[j]] = std::exp(spec.de_effect * normal(rng));
      }
    }
    batch_factor_.resize(static_cast<size_t>(n_batches) * g);
    for (auto& f : batch_factor_) f = std::exp(batch_effect * normal(rng));
    // p_tbg = base * type * batch, normalised per (type, batch); stored as base * type * batch
    // and a per-(type, batch) normaliser so memory stays (types + batches) x features.
    for (int64_t j = 0; j < g; ++j)
      for (int32_t t = 0; t < n_types; ++t) type_factor_[t * g + j] *= base[j];
    norm_.resize(static_cast<size_t>(n_types) * n_batches);
    for (int32_t t = 0; t < n_types; ++t)
      for (int32_t b = 0; b < n_batches; ++b) {
        double s = 0;
        for (int64_t j = 0; j < g; ++j) s += type_factor_[t * g + j] * batch_factor_[b * g + j];
        norm_[t * n_batches + b] = s > 0 ? 1.0 / s : 0.0;
      }
  }

  // Draws the library-size grid position of one cell.
  static int32_t draw_library_bin(std::mt19937_64& rng) {
    const double z = std::clamp(kLibraryLogSd * normal(rng), -kLibraryBins * kLibraryStep,
                                kLibraryBins * kLibraryStep);
    return static_cast<int32_t>(std::lround(z / kLibraryStep));
  }

  // Generates all cells into CSR. Cells are drawn in fixed blocks, each from its own stream
  // (seed, purpose, block), so the result does not depend on the number of threads; blocks run in
  // parallel and are appended in order. lib_bin[c] is the cell's library grid position.
  scssl::Matrix generate(const Cells& cells, const std::vector<int32_t>& lib_bin, uint64_t seed,
                         uint64_t purpose) {
    const int64_t n = static_cast<int64_t>(cells.type.size());
    const int64_t g = n_features_;
    const int64_t n_blocks = (n + kBlockCells - 1) / kBlockCells;
    const int64_t n_threads = std::max<int64_t>(
        1, std::min<int64_t>(
               {n_blocks, 16, static_cast<int64_t>(std::thread::hardware_concurrency())}));
    // Reserve the expected number of non-zeros (+ slack) so the arrays rarely grow.
    double expected = 0;
    for (int64_t c = 0; c < n; ++c) {
      trim_cache();
      expected += table(cells, lib_bin, c).expected_nonzero;
    }
    auto* indices = new std::vector<int32_t>();
    auto* values = new std::vector<float>();
    const size_t reserve = static_cast<size_t>(expected * 1.01 + 4 * std::sqrt(expected) + 1024);
    indices->reserve(std::min<size_t>(reserve, static_cast<size_t>(n) * static_cast<size_t>(g)));
    values->reserve(indices->capacity());
    torch::Tensor indptr = torch::empty({n + 1}, torch::kInt64);
    int64_t* p = indptr.data_ptr<int64_t>();
    p[0] = 0;

    struct Block {
      std::vector<int32_t> indices;
      std::vector<float> values;
      std::vector<int64_t> row_end;  // non-zeros up to the end of each row, within the block
    };
    std::vector<Block> wave(static_cast<size_t>(n_threads));
    for (int64_t first = 0; first < n_blocks; first += n_threads) {
      const int64_t count = std::min(n_threads, n_blocks - first);
      // Tables are looked up here, before the threads start, so the threads only read them (and
      // the cache is not trimmed while they are in use).
      trim_cache();
      std::vector<std::vector<const Table*>> tables(static_cast<size_t>(count));
      for (int64_t t = 0; t < count; ++t) {
        const int64_t c0 = (first + t) * kBlockCells, c1 = std::min(n, c0 + kBlockCells);
        for (int64_t c = c0; c < c1; ++c) tables[t].push_back(&table(cells, lib_bin, c));
      }
      auto run = [&](int64_t t) {
        Xoshiro256 rng(stream_seed(seed, purpose, static_cast<uint64_t>(first + t)));
        Block& out = wave[t];
        out.indices.clear();
        out.values.clear();
        out.row_end.clear();
        for (const Table* tab : tables[t]) {
          draw_cell(*tab, rng, out.indices, out.values);
          out.row_end.push_back(static_cast<int64_t>(out.values.size()));
        }
      };
      std::vector<std::thread> threads;
      for (int64_t t = 1; t < count; ++t) threads.emplace_back(run, t);
      run(0);
      for (auto& th : threads) th.join();
      for (int64_t t = 0; t < count; ++t) {
        const Block& b = wave[t];
        const int64_t base = static_cast<int64_t>(values->size());
        int64_t row = (first + t) * kBlockCells;
        for (int64_t e : b.row_end) p[++row] = base + e;
        indices->insert(indices->end(), b.indices.begin(), b.indices.end());
        values->insert(values->end(), b.values.begin(), b.values.end());
      }
    }
    const int64_t nnz = static_cast<int64_t>(values->size());
    // The vectors go to torch without a copy. Every CSR invariant holds by construction (indptr
    // from 0 and non-decreasing, column indices in range and ascending, finite counts), so the
    // matrix is assembled directly rather than re-checked entry by entry.
    scssl::Matrix m;
    m.format = scssl::Matrix::Format::Csr;
    m.rows = n;
    m.cols = g;
    m.indptr = indptr;
    m.indices = torch::from_blob(
        indices->data(), {nnz}, [indices](void*) { delete indices; }, torch::kInt32);
    m.values = torch::from_blob(
        values->data(), {nnz}, [values](void*) { delete values; }, torch::kFloat32);
    return m;
  }

 private:
  struct Table {
    std::vector<uint64_t> zero_below;  // P(count = 0) scaled to 2^64: a draw below it is a zero
    std::vector<double> p0;            // P(count = 0)
    std::vector<double> r;             // mu / (theta + mu)
    double expected_nonzero = 0;
  };

  // One cell: a 64-bit draw per feature decides zero / non-zero with an integer comparison;
  // non-zeros are drawn by inverting the distribution function from there.
  void draw_cell(const Table& tab, Xoshiro256& rng, std::vector<int32_t>& indices,
                 std::vector<float>& values) const {
    const int64_t g = n_features_;
    const double theta = theta_;
    for (int64_t j = 0; j < g; ++j) {
      const uint64_t x = rng();
      if (x < tab.zero_below[j]) continue;
      const double p0 = tab.p0[j];
      int64_t k = 0;
      if (p0 > 1e-250) {
        // P(k) = P(k-1) * r * (k - 1 + theta) / k. The factor does not depend on the running
        // product, and 1/k comes from a table, so the loop's dependency chain is one multiply
        // and one add per step (the division was the bottleneck for highly expressed features).
        const double u = static_cast<double>(x >> 11) * 0x1.0p-53, r = tab.r[j];
        double pk = p0, f = p0;
        while (u >= f) {
          ++k;
          const double inv_k = k < kReciprocals ? reciprocal_[k] : 1.0 / static_cast<double>(k);
          pk *= r * (static_cast<double>(k) - 1.0 + theta) * inv_k;
          const double next = f + pk;
          if (next == f && k > 1) break;  // rounding left f just short of 1
          f = next;
        }
      } else {
        // P(0) underflows for huge means: sample the gamma-Poisson mixture directly.
        const double mu = tab.r[j] * theta / (1.0 - tab.r[j]);
        k = poisson(rng, gamma(rng, theta) * mu / theta);
      }
      if (k == 0) continue;
      indices.push_back(static_cast<int32_t>(j));
      values.push_back(static_cast<float>(k));
    }
  }

  // Keeps the table cache under 256 MiB (the values do not depend on the cache, so the output
  // stays deterministic). Never called while threads hold table pointers.
  void trim_cache() {
    const size_t table_bytes = static_cast<size_t>(n_features_) * 3 * sizeof(double);
    if ((cache_.size() + 1) * table_bytes > (size_t{256} << 20)) cache_.clear();
  }

  // The table of one cell's (type, batch, library), built on first use.
  const Table& table(const Cells& cells, const std::vector<int32_t>& lib_bin, int64_t c) {
    const int32_t t = cells.type[c], b = cells.batch[c], l = lib_bin[c];
    const int64_t key =
        (static_cast<int64_t>(t) * n_batches_ + b) * (2 * kLibraryBins + 1) + (l + kLibraryBins);
    auto it = cache_.find(key);
    if (it != cache_.end()) return *it->second;
    auto tab = std::make_unique<Table>();
    const int64_t g = n_features_;
    tab->zero_below.resize(g);
    tab->p0.resize(g);
    tab->r.resize(g);
    // exp(-sd^2 / 2) makes the log-normal library factor average 1.
    const double scale = library_size_ *
                         std::exp(l * kLibraryStep - 0.5 * kLibraryLogSd * kLibraryLogSd) *
                         norm_[t * n_batches_ + b];
    for (int64_t j = 0; j < g; ++j) {
      const double mu = scale * type_factor_[t * g + j] * batch_factor_[b * g + j];
      const double p0 = std::exp(theta_ * std::log(theta_ / (theta_ + mu)));
      tab->p0[j] = p0;
      tab->r[j] = mu / (theta_ + mu);
      tab->zero_below[j] = p0 >= 1.0 ? std::numeric_limits<uint64_t>::max()
                                     : static_cast<uint64_t>(std::ldexp(p0, 64));
      tab->expected_nonzero += 1.0 - p0;
    }
    const Table& ref = *tab;
    cache_[key] = std::move(tab);
    return ref;
  }

  static constexpr int64_t kBlockCells = 1024;
  static constexpr int64_t kReciprocals = 4096;
  std::vector<double> reciprocal_ = [] {
    std::vector<double> v(kReciprocals, 0.0);
    for (int64_t k = 1; k < kReciprocals; ++k) v[k] = 1.0 / static_cast<double>(k);
    return v;
  }();
  int64_t n_features_;
  int32_t n_types_, n_batches_;
  double theta_, library_size_;
  std::vector<double> type_factor_;   // [types, features], includes the base means
  std::vector<double> batch_factor_;  // [batches, features]
  std::vector<double> norm_;          // [types, batches]
  std::unordered_map<int64_t, std::unique_ptr<Table>> cache_;
};

scssl::Column categorical(const std::string& name, const std::vector<int32_t>& codes,
                          const std::string& prefix, int32_t n) {
  scssl::Column c;
  c.name = name;
  c.categorical = true;
  c.codes =
      torch::from_blob(const_cast<int32_t*>(codes.data()), {(int64_t)codes.size()}, torch::kInt32)
          .clone();
  for (int32_t i = 0; i < n; ++i) c.categories.push_back(prefix + std::to_string(i));
  return c;
}

std::vector<std::string> numbered(const std::string& prefix, int64_t n) {
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

class SyntheticDataset final : public scssl::IDataset {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    // Sizes stay within int32 indices; the upper bounds on the model's scales keep the counts
    // finite and the sampler's loops short.
    constexpr double kMaxIndex = std::numeric_limits<int32_t>::max();
    return {
        ParamSpec("n_cells", SCSSL_PARAM_INT, "2000", "number of cells")
            .at_least(1)
            .at_most(kMaxIndex),
        ParamSpec("n_genes", SCSSL_PARAM_INT, "2000", "number of genes (RNA features)")
            .at_least(1)
            .at_most(kMaxIndex),
        ParamSpec("n_cell_types", SCSSL_PARAM_INT, "5", "number of cell types (obs 'cell_type')")
            .at_least(1)
            .at_most(100000),
        ParamSpec("n_batches", SCSSL_PARAM_INT, "3", "number of batches (obs 'batch')")
            .at_least(1)
            .at_most(100000),
        ParamSpec("n_proteins", SCSSL_PARAM_INT, "0",
                  "number of surface proteins; > 0 adds an ADT modality (CITE-seq-like)")
            .at_least(0)
            .at_most(kMaxIndex),
        ParamSpec(
            "batch_effect", SCSSL_PARAM_FLOAT, "0.5",
            "log-scale standard deviation of the per-batch, per-feature multiplicative factors")
            .at_least(0)
            .at_most(10),
        ParamSpec("theta", SCSSL_PARAM_FLOAT, "2.0",
                  "negative-binomial inverse dispersion: variance = mu + mu^2 / theta")
            .above(0)
            .at_most(1e6),
        ParamSpec("mean_library_size", SCSSL_PARAM_FLOAT, "5000", "mean total RNA count per cell")
            .above(0)
            .at_most(1e8),
        ParamSpec("de_fraction", SCSSL_PARAM_FLOAT, "0.1",
                  "fraction of features whose mean differs in each cell type")
            .at_least(0)
            .at_most(1),
        ParamSpec("de_effect", SCSSL_PARAM_FLOAT, "1.0",
                  "log-scale standard deviation of those cell-type fold changes")
            .at_least(0)
            .at_most(10),
        ParamSpec("seed", SCSSL_PARAM_INT, "0", "random seed; one seed always gives the same data"),
    };
  }

  scssl::CellData load(const scssl::ParamSet& params, scssl::HostContext& host) override {
    const int64_t n_cells = params.get_int("n_cells");
    const int64_t n_genes = params.get_int("n_genes");
    const int64_t n_types = params.get_int("n_cell_types");
    const int64_t n_batches = params.get_int("n_batches");
    const int64_t n_proteins = params.get_int("n_proteins");
    const double batch_effect = params.get_float("batch_effect");
    const double theta = params.get_float("theta");
    const double library = params.get_float("mean_library_size");
    const double de_fraction = params.get_float("de_fraction");
    const double de_effect = params.get_float("de_effect");
    const uint64_t seed = static_cast<uint64_t>(params.get_int("seed"));

    // Model parameters and per-cell labels come from one stream, counts from their own.
    std::mt19937_64 model_rng = stream(seed, 1);
    ModalitySpec rna{"RNA", "gene_", n_genes, 2.0, de_fraction, de_effect, library};
    CountModel rna_model(rna, static_cast<int32_t>(n_types), static_cast<int32_t>(n_batches),
                         batch_effect, theta, model_rng);
    Cells cells;
    cells.type.resize(n_cells);
    cells.batch.resize(n_cells);
    std::vector<int32_t> rna_bin(n_cells);
    std::mt19937_64 cell_rng = stream(seed, 2);
    for (int64_t c = 0; c < n_cells; ++c) {
      cells.type[c] = static_cast<int32_t>(uniform_int(cell_rng, n_types));
      cells.batch[c] = static_cast<int32_t>(uniform_int(cell_rng, n_batches));
      rna_bin[c] = CountModel::draw_library_bin(cell_rng);
    }

    scssl::CellData data;
    data.cell_names = numbered("cell_", n_cells);
    data.columns.push_back(
        categorical("batch", cells.batch, "batch_", static_cast<int32_t>(n_batches)));
    data.columns.push_back(
        categorical("cell_type", cells.type, "type_", static_cast<int32_t>(n_types)));
    data.batch_key = "batch";
    data.label_key = "cell_type";

    scssl::Modality m;
    m.name = "RNA";
    m.features = numbered("gene_", n_genes);
    m.X = rna_model.generate(cells, rna_bin, seed, 3);
    data.modalities.push_back(std::move(m));

    if (n_proteins > 0) {
      // Proteins: fewer, denser features with stronger type markers, as in CITE-seq panels.
      std::mt19937_64 adt_model_rng = stream(seed, 4);
      ModalitySpec adt{"ADT",
                       "protein_",
                       n_proteins,
                       1.0,
                       std::max(de_fraction, 0.3),
                       de_effect,
                       std::max(200.0, 30.0 * static_cast<double>(n_proteins))};
      CountModel adt_model(adt, static_cast<int32_t>(n_types), static_cast<int32_t>(n_batches),
                           batch_effect, theta, adt_model_rng);
      std::mt19937_64 adt_cell_rng = stream(seed, 5);
      std::vector<int32_t> adt_bin(n_cells);
      for (auto& b : adt_bin) b = CountModel::draw_library_bin(adt_cell_rng);
      scssl::Modality a;
      a.name = "ADT";
      a.features = numbered("protein_", n_proteins);
      a.X = adt_model.generate(cells, adt_bin, seed, 6);
      data.modalities.push_back(std::move(a));
    }
    host.debug("synthetic: " + std::to_string(n_cells) + " cells, " + std::to_string(n_genes) +
               " genes, " + std::to_string(data.modalities[0].X.nnz()) + " non-zeros");
    return data;
  }
};

}  // namespace

SCSSL_PLUGIN(SyntheticDataset, "synthetic", "1.0.0",
             "Negative-binomial counts with cell types, batches and optional proteins (ADT)")
