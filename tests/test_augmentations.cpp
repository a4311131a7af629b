// The six augmentation plugins (mask, gauss, innerswap, crossover, mnn, bbknn), loaded through the
// real registry and checked by their behaviour only: which genes change, where copied values come
// from, and which cells the graph augmentations mix. See docs/augmentations.md.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "augmentation_pipeline.hpp"
#include "config.hpp"
#include "scssl/graphs.hpp"
#include "scssl/knn.hpp"
#include "scssl/pca.hpp"
#include "scssl/preprocess.hpp"
#include "scssl/random.hpp"
#include "support.hpp"

using namespace scssl;

namespace {

ParamValue real(double v) { return ParamValue(std::in_place_type<double>, v); }
ParamValue integer(int64_t v) { return ParamValue(std::in_place_type<int64_t>, v); }
ParamValue text(const std::string& v) { return ParamValue(std::in_place_type<std::string>, v); }
ParamValue boolean(bool v) { return ParamValue(std::in_place_type<bool>, v); }

host::HostServices& services() {
  static host::HostServices s;
  return s;
}

std::unique_ptr<host::Augmentation> make(const std::string& name,
                                         const std::map<std::string, ParamValue>& values = {}) {
  const host::LoadedPlugin& p = test::plugins().get(name, SCSSL_KIND_AUGMENTATION);
  ParamSet params = p.default_params();
  for (const auto& [k, v] : values) params.set(k, v);
  return std::make_unique<host::Augmentation>(p, params, services());
}

std::string creation_error(const std::string& name,
                           const std::map<std::string, ParamValue>& values) {
  try {
    make(name, values);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A dense data set; batches[i] is the batch of cell i (no batch column when empty).
CellData dataset(const torch::Tensor& x, const std::vector<int32_t>& batches = {},
                 int32_t n_batches = 0) {
  CellData d;
  for (int64_t i = 0; i < x.size(0); ++i) d.cell_names.push_back("cell" + std::to_string(i));
  Modality m;
  m.name = "RNA";
  for (int64_t g = 0; g < x.size(1); ++g) m.features.push_back("g" + std::to_string(g));
  m.X = Matrix::from_dense(x.contiguous(), "test data");
  d.modalities.push_back(std::move(m));
  if (!batches.empty()) {
    std::vector<std::string> names;
    for (int32_t b = 0; b < n_batches; ++b) names.push_back("batch" + std::to_string(b));
    d.columns.push_back({"batch", true, torch::tensor(batches, torch::kInt32), names, {}});
    d.batch_key = "batch";
  }
  return d;
}

// Every value different: cell i, gene g holds 1 + i * genes + g, so a value names its cell.
torch::Tensor distinct_values(int64_t cells, int64_t genes) {
  return (torch::arange(cells * genes, torch::kFloat32) + 1).reshape({cells, genes});
}

// An augmentation prepared on `data`; keeps the data's C view alive as long as the plugin.
struct Prepared {
  std::unique_ptr<CellDataView> view;
  std::unique_ptr<host::Augmentation> aug;
  torch::Tensor dense;  // the training matrix, to build batches from

  torch::Tensor run(const torch::Tensor& ids, int view_index, uint64_t seed) {
    torch::Tensor batch = dense.index_select(0, ids).contiguous();
    aug->apply(batch, ids, view_index, seed);
    return batch;
  }
};

Prepared prepare(const std::string& name, const CellData& data,
                 const std::map<std::string, ParamValue>& values = {}) {
  Prepared p;
  p.aug = make(name, values);
  p.view = std::make_unique<CellDataView>(data);
  p.aug->prepare(p.view->get(), 0);
  const Matrix& x = data.modalities[0].X;
  p.dense = x.slice_dense(0, x.rows);
  return p;
}

// ---- the real data and an independent computation of the graphs it should give ------------------

struct Reference {
  CellData data;
  torch::Tensor dense;  // [n, G]
  std::vector<int64_t> batch;
  int64_t n_batches = 0;
  torch::Tensor pcs;  // PCA-50 scores, as the plugins compute them
};

const Reference& kang() {
  static Reference* r = [] {
    auto* ref = new Reference;
    ref->data = test::load_h5ad(test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad"));
    const Matrix& x = ref->data.modalities[0].X;
    ref->dense = x.slice_dense(0, x.rows);
    torch::Tensor codes = ref->data.batches()->codes.to(torch::kInt64);
    ref->batch.assign(codes.data_ptr<int64_t>(), codes.data_ptr<int64_t>() + codes.numel());
    ref->n_batches = static_cast<int64_t>(ref->data.batches()->categories.size());
    ref->pcs = fit_pca(x, 50).transform(x);
    return ref;
  }();
  return *r;
}

std::vector<int64_t> members(const Reference& r, int64_t b) {
  std::vector<int64_t> m;
  for (int64_t i = 0; i < static_cast<int64_t>(r.batch.size()); ++i)
    if (r.batch[i] == b) m.push_back(i);
  return m;
}

// For every cell, the k nearest cells (Euclidean on the PCs) of batch b, itself excluded.
void add_nearest_of_batch(const Reference& r, int64_t b, int64_t k,
                          std::vector<std::set<int64_t>>& out, bool only_own_cells) {
  std::vector<int64_t> in_b = members(r, b);
  torch::Tensor ref_ids = torch::tensor(in_b, torch::kInt64);
  const int64_t n = static_cast<int64_t>(r.batch.size());
  Neighbors nn = knn_exact(r.pcs.index_select(0, ref_ids), r.pcs, k + 1);
  for (int64_t i = 0; i < n; ++i) {
    if (only_own_cells && r.batch[i] != b) continue;
    int64_t taken = 0;
    for (int64_t j = 0; j <= k && taken < k; ++j) {
      const int64_t other = in_b[nn.indices[i][j].item<int64_t>()];
      if (other == i) continue;
      out[i].insert(other);
      ++taken;
    }
  }
}

std::vector<std::set<int64_t>> expected_within(const Reference& r, int64_t k) {
  std::vector<std::set<int64_t>> out(r.batch.size());
  for (int64_t b = 0; b < r.n_batches; ++b) add_nearest_of_batch(r, b, k, out, true);
  return out;
}

std::vector<std::set<int64_t>> expected_balanced(const Reference& r, int64_t k) {
  std::vector<std::set<int64_t>> out(r.batch.size());
  for (int64_t b = 0; b < r.n_batches; ++b) add_nearest_of_batch(r, b, k, out, false);
  return out;
}

std::vector<std::set<int64_t>> expected_partners(const Reference& r, int64_t k) {
  std::vector<std::set<int64_t>> out(r.batch.size());
  for (int64_t a = 0; a < r.n_batches; ++a) {
    for (int64_t b = 0; b < r.n_batches; ++b) {
      if (a == b) continue;
      std::vector<int64_t> in_a = members(r, a), in_b = members(r, b);
      torch::Tensor pa = r.pcs.index_select(0, torch::tensor(in_a, torch::kInt64));
      torch::Tensor pb = r.pcs.index_select(0, torch::tensor(in_b, torch::kInt64));
      torch::Tensor ab = knn_exact(pb, pa, k, Distance::Cosine).indices;
      torch::Tensor ba = knn_exact(pa, pb, k, Distance::Cosine).indices;
      for (int64_t i = 0; i < static_cast<int64_t>(in_a.size()); ++i)
        for (int64_t s = 0; s < ab.size(1); ++s) {
          const int64_t j = ab[i][s].item<int64_t>();
          if ((ba[j] == i).any().item<bool>()) out[in_a[i]].insert(in_b[j]);
        }
    }
  }
  return out;
}

// The training row each output row is exactly equal to, or -1.
std::vector<int64_t> identify(const torch::Tensor& out, const torch::Tensor& dense) {
  torch::Tensor idx = knn_exact(dense, out, 1).indices.select(1, 0).contiguous();
  torch::Tensor same = (dense.index_select(0, idx) == out).all(1);
  std::vector<int64_t> r(out.size(0));
  for (int64_t i = 0; i < out.size(0); ++i)
    r[i] = same[i].item<bool>() ? idx[i].item<int64_t>() : -1;
  return r;
}

torch::Tensor repeat_each(const std::vector<int64_t>& cells, int64_t times) {
  return torch::tensor(cells, torch::kInt64).repeat_interleave(times);
}

// The start of a run config whose method takes augmentations (SCSSL_USES_AUGMENTATIONS): the host
// refuses [[augmentation]] sections otherwise.
const std::string kAugmentedRunHead =
    "[dataset]\nplugin = \"h5ad\"\npath = \"unused.h5ad\"\n\n"
    "[method]\nplugin = \"simclr\"\n\n";

// A run config that includes `include` (unless empty), then `kAugmentedRunHead` + `sections`,
// written to `path` and loaded.
host::RunConfig augmented_run_config(const std::string& path, const std::string& sections,
                                     const std::string& include = "") {
  std::ofstream out(path);
  if (!include.empty()) out << "include = [\"" << include << "\"]\n";
  out << kAugmentedRunHead << sections;
  out.close();
  return host::load_run_config(path, {}, test::plugins());
}

const char* const kTriana = "datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad";

}  // namespace

// ---- mask ---------------------------------------------------------------------------------------

TEST(Mask, ZeroModeZeroesExactlyTheFractionOfGenesOfEveryCell) {
  const torch::Tensor x = distinct_values(64, 50);
  Prepared p = prepare("mask", dataset(x), {{"fraction", real(0.3)}, {"mode", text("zero")}});
  torch::Tensor ids = torch::arange(64, torch::kInt64);
  torch::Tensor out = p.run(ids, 0, 1);
  torch::Tensor zeroed = out == 0;
  EXPECT_TRUE((zeroed.sum(1) == 15).all().item<bool>());  // int(0.3 * 50)
  EXPECT_TRUE(torch::equal(torch::where(zeroed, x, out), x));
  // Each cell draws its own genes.
  EXPECT_FALSE(torch::equal(zeroed[0], zeroed[1]));
}

TEST(Mask, EveryGeneIsEquallyLikelyToBePicked) {
  const torch::Tensor x = distinct_values(4000, 50);
  Prepared p = prepare("mask", dataset(x), {{"fraction", real(0.3)}});
  torch::Tensor share =
      (p.run(torch::arange(4000, torch::kInt64), 0, 2) == 0).to(torch::kFloat64).mean(0);
  EXPECT_NEAR(share.min().item<double>(), 0.3, 0.03);
  EXPECT_NEAR(share.max().item<double>(), 0.3, 0.03);
}

TEST(Mask, KeepModeKeepsExactlyTheFractionOfGenesOfEveryCell) {
  const torch::Tensor x = distinct_values(64, 50);
  Prepared p = prepare("mask", dataset(x), {{"fraction", real(0.5)}, {"mode", text("keep")}});
  torch::Tensor out = p.run(torch::arange(64, torch::kInt64), 0, 1);
  torch::Tensor kept = out != 0;
  EXPECT_TRUE((kept.sum(1) == 25).all().item<bool>());
  EXPECT_TRUE(torch::equal(torch::where(kept, out, x), x));
}

TEST(Mask, CountIsTruncatedLikePythonsInt) {
  const torch::Tensor x = distinct_values(8, 7);
  Prepared p = prepare("mask", dataset(x), {{"fraction", real(0.3)}});  // int(2.1) = 2
  EXPECT_TRUE(((p.run(torch::arange(8, torch::kInt64), 0, 3) == 0).sum(1) == 2).all().item<bool>());
}

// ---- gauss --------------------------------------------------------------------------------------

TEST(Gauss, AddsNoiseWithSigmaToExactlyTheFractionOfGenes) {
  // Values in [1, 2): float32 resolves noise down to ~1e-7 there, so every noisy gene changes.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const torch::Tensor x = torch::rand({400, 50}, gen) + 1;
  Prepared p = prepare("gauss", dataset(x), {{"fraction", real(0.8)}, {"sigma", real(0.5)}});
  torch::Tensor out = p.run(torch::arange(400, torch::kInt64), 0, 5);
  torch::Tensor changed = out != x;
  EXPECT_TRUE((changed.sum(1) == 40).all().item<bool>());
  torch::Tensor noise = (out - x).masked_select(changed).to(torch::kFloat64);
  EXPECT_NEAR(noise.mean().item<double>(), 0.0, 0.02);
  EXPECT_NEAR(noise.std().item<double>(), 0.5, 0.02);
}

TEST(Gauss, ZeroSigmaChangesNothing) {
  const torch::Tensor x = distinct_values(10, 20);
  Prepared p = prepare("gauss", dataset(x), {{"sigma", real(0.0)}});
  EXPECT_TRUE(torch::equal(p.run(torch::arange(10, torch::kInt64), 0, 5), x));
}

// ---- innerswap ----------------------------------------------------------------------------------

TEST(InnerSwap, KeepsEveryRowsValuesAndMovesAtMostTwoGenesPerPair) {
  const torch::Tensor x = distinct_values(200, 50);
  Prepared p = prepare("innerswap", dataset(x), {{"fraction", real(0.5)}});  // 12 pairs
  torch::Tensor out = p.run(torch::arange(200, torch::kInt64), 0, 9);
  EXPECT_TRUE(torch::equal(std::get<0>(out.sort(1)), x));  // same multiset in every row
  torch::Tensor moved = (out != x).sum(1);
  EXPECT_TRUE((moved <= 24).all().item<bool>());
  EXPECT_GT(moved.to(torch::kFloat64).mean().item<double>(), 15.0);  // most pairs do swap
}

TEST(InnerSwap, FullFractionStillPermutes) {
  const torch::Tensor x = distinct_values(50, 33);
  Prepared p = prepare("innerswap", dataset(x), {{"fraction", real(1.0)}});
  torch::Tensor out = p.run(torch::arange(50, torch::kInt64), 0, 2);
  EXPECT_TRUE(torch::equal(std::get<0>(out.sort(1)), x));
  EXPECT_FALSE(torch::equal(out, x));
}

// ---- crossover ----------------------------------------------------------------------------------

TEST(CrossOver, CopiesTheFractionOfGenesFromOneOtherTrainingCell) {
  const int64_t n = 30, genes = 40;
  const torch::Tensor x = distinct_values(n, genes);
  Prepared p = prepare("crossover", dataset(x), {{"fraction", real(0.25)}});
  torch::Tensor ids = repeat_each({0, 7, 29}, 40);
  torch::Tensor out = p.run(ids, 0, 11);
  std::set<int64_t> donors_of_0;
  for (int64_t r = 0; r < ids.size(0); ++r) {
    const int64_t cell = ids[r].item<int64_t>();
    torch::Tensor changed = (out[r] != x[cell]).nonzero().flatten();
    ASSERT_EQ(changed.numel(), 10);  // int(0.25 * 40), every copied value differs
    // Value v sits at gene (v - 1) % genes of cell (v - 1) / genes.
    torch::Tensor v = out[r].index_select(0, changed).to(torch::kInt64) - 1;
    torch::Tensor donor = v.div(genes, "floor");
    EXPECT_TRUE(torch::equal(v.remainder(genes), changed));
    EXPECT_TRUE((donor == donor[0]).all().item<bool>());
    EXPECT_NE(donor[0].item<int64_t>(), cell);
    if (cell == 0) donors_of_0.insert(donor[0].item<int64_t>());
  }
  EXPECT_GT(donors_of_0.size(), 10u);
}

// ---- mnn ----------------------------------------------------------------------------------------

TEST(Mnn, RefusesDataWithoutBatches) {
  auto aug = make("mnn");
  CellDataView view(dataset(distinct_values(10, 5)));
  try {
    aug->prepare(view.get(), 0);
    FAIL() << "mnn accepted data without a batch column";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch"), std::string::npos) << e.what();
  }
  auto bbknn = make("bbknn");
  EXPECT_THROW(bbknn->prepare(view.get(), 0), Error);
}

TEST(Mnn, ViewZeroWithAlphaZeroIsASameBatchNearestNeighbour) {
  const Reference& r = kang();
  Prepared p = prepare("mnn", r.data, {{"alpha", real(0.0)}, {"knn", integer(3)}});
  auto within = expected_within(r, 3);
  torch::Tensor ids = torch::arange(static_cast<int64_t>(r.batch.size()), torch::kInt64);
  std::vector<int64_t> got = identify(p.run(ids, 0, 21), r.dense);
  for (int64_t i = 0; i < ids.size(0); ++i) {
    ASSERT_GE(got[i], 0) << "cell " << i << ": output is not a training cell";
    EXPECT_NE(got[i], i);
    EXPECT_EQ(r.batch[got[i]], r.batch[i]);
    EXPECT_TRUE(within[i].count(got[i])) << "cell " << i << " got " << got[i];
  }
}

// index_bug = true reproduces scSSL-Bench's bug (docs/augmentations.md): the position drawn in
// the 3-long neighbour list is taken as a row, so every cell is mixed with row 0, 1 or 2 of the
// training data, each about a third of the time, whatever its batch.
TEST(Mnn, IndexBugMixesEveryCellWithOneOfTheFirstRows) {
  const Reference& r = kang();
  Prepared p = prepare("mnn", r.data,
                       {{"alpha", real(0.0)}, {"knn", integer(3)}, {"index_bug", boolean(true)}});
  const int64_t n = static_cast<int64_t>(r.batch.size());
  std::vector<int64_t> got = identify(p.run(torch::arange(n, torch::kInt64), 0, 21), r.dense);
  std::vector<int64_t> count(3, 0);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_GE(got[i], 0) << "cell " << i;
    ASSERT_LT(got[i], 3) << "cell " << i << " was mixed with row " << got[i];
    ++count[got[i]];
  }
  for (int64_t row = 0; row < 3; ++row) EXPECT_NEAR(count[row] / double(n), 1.0 / 3, 0.05);
}

TEST(Mnn, ViewOneWithAlphaOneIsAMutualNearestNeighbourFromAnotherBatch) {
  const Reference& r = kang();
  Prepared p = prepare("mnn", r.data, {{"alpha", real(1.0)}, {"k_anchor", integer(5)}});
  auto partners = expected_partners(r, 5);
  const int64_t n = static_cast<int64_t>(r.batch.size());
  torch::Tensor ids = torch::arange(n, torch::kInt64);
  std::vector<int64_t> got = identify(p.run(ids, 1, 4), r.dense);
  int64_t with_partner = 0, several = 0;
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_GE(got[i], 0);
    if (partners[i].empty()) {
      EXPECT_EQ(got[i], i) << "a cell without partner stands for itself";
      continue;
    }
    ++with_partner;
    several += partners[i].size() > 1;
    EXPECT_NE(r.batch[got[i]], r.batch[i]);
    EXPECT_TRUE(partners[i].count(got[i])) << "cell " << i << " got " << got[i];
    if (pairs.size() < 40 && i % 7 == 0) pairs.emplace_back(i, got[i]);
  }
  EXPECT_GT(with_partner, n / 4);
  EXPECT_GT(several, 0);
  // Mutual, seen through the behaviour alone: the partner's own view 1, drawn many times, shows
  // the original cell among its partners.
  for (const auto& [cell, partner] : pairs) {
    std::vector<int64_t> seen = identify(p.run(repeat_each({partner}, 300), 1, 99), r.dense);
    EXPECT_NE(std::find(seen.begin(), seen.end(), cell), seen.end())
        << cell << " -> " << partner << " is not mutual";
    // A cell with several partners uses all of them.
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()), partners[partner]);
  }
}

TEST(Mnn, ViewOneWithAlphaZeroIsANeighbourOfThePartner) {
  const Reference& r = kang();
  Prepared p = prepare("mnn", r.data, {{"alpha", real(0.0)}});
  auto partners = expected_partners(r, 5);
  auto within = expected_within(r, 3);
  const int64_t n = static_cast<int64_t>(r.batch.size());
  std::vector<int64_t> got = identify(p.run(torch::arange(n, torch::kInt64), 1, 8), r.dense);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_GE(got[i], 0);
    bool ok = false;
    if (partners[i].empty()) ok = within[i].count(got[i]) > 0;
    for (int64_t partner : partners[i]) ok = ok || within[partner].count(got[i]) > 0;
    EXPECT_TRUE(ok) << "cell " << i << " got " << got[i];
  }
}

TEST(Mnn, LambdaIsFixedOrUniformBetweenAlphaAndOne) {
  // Batches of two cells and knn = 1: a cell's only neighbour is the other cell of its batch,
  // so the weight can be read back from the output.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const torch::Tensor x = torch::rand({6, 5}, gen) + 1;
  const CellData data = dataset(x, {0, 0, 1, 1, 2, 2}, 3);
  const std::vector<int64_t> other = {1, 0, 3, 2, 5, 4};
  for (const std::string mode : {"fixed", "uniform"}) {
    Prepared p = prepare("mnn", data,
                         {{"alpha", real(0.3)}, {"knn", integer(1)}, {"lambda_mode", text(mode)}});
    torch::Tensor ids = repeat_each({0, 1, 2, 3, 4, 5}, 200);
    torch::Tensor out = p.run(ids, 0, 17).to(torch::kFloat64);
    torch::Tensor self = x.index_select(0, ids).to(torch::kFloat64);
    torch::Tensor nb =
        x.index_select(0, torch::tensor(other).index_select(0, ids)).to(torch::kFloat64);
    // out = a x + (1 - a) y  =>  1 - a = <out - x, y - x> / |y - x|^2
    torch::Tensor a = 1 - ((out - self) * (nb - self)).sum(1) / (nb - self).pow(2).sum(1);
    if (mode == "fixed") {
      EXPECT_NEAR(a.min().item<double>(), 0.3, 1e-4);
      EXPECT_NEAR(a.max().item<double>(), 0.3, 1e-4);
    } else {
      EXPECT_GE(a.min().item<double>(), 0.3 - 1e-4);
      EXPECT_LE(a.max().item<double>(), 1.0 + 1e-4);
      EXPECT_NEAR(a.mean().item<double>(), 0.65, 0.03);
      EXPECT_GT(a.std().item<double>(), 0.15);  // U(0.3, 1) has sd 0.2
    }
  }
}

// shared_coin = true reproduces scSSL-Bench's one coin per cell for both views
// (docs/augmentations.md, "mnn (CLAIRE)"): through the host's pipeline, as the training core calls
// it (view 0, then view 1 with another seed), a cell is mixed in both views or in neither, with
// chance pair_probability. With the host's coin per view instead, a pair is mixed in both views
// with chance p^2 only; and shared_coin with a per-view coin (probability < 1) is refused.
TEST(Mnn, SharedCoinMixesBothViewsOfACellOrNeither) {
  const Reference& r = kang();
  const std::string dir = test::temp_dir("mnn-shared-coin");
  CellDataView view(r.data);
  const int64_t n = static_cast<int64_t>(r.batch.size());
  const torch::Tensor ids = torch::arange(n, torch::kInt64);
  // With alpha = 0 a mixed row is a training row, which is never negative; others stay -1.
  auto mixed = [&](host::AugmentationPipeline& pipeline, int v, uint64_t seed) {
    torch::Tensor batch = torch::full({n, r.dense.size(1)}, -1.0f);
    pipeline.apply(0, v, batch, ids, seed);
    return (batch != -1).any(1);
  };
  auto share = [](const torch::Tensor& t) { return t.to(torch::kFloat64).mean().item<double>(); };
  const std::string section = "[[augmentation]]\nplugin = \"mnn\"\nalpha = 0.0\n";

  const host::RunConfig shared = augmented_run_config(
      dir + "/shared.toml",
      section + "probability = 1.0\nshared_coin = true\npair_probability = 0.5\n");
  host::AugmentationPipeline pipeline(shared.augmentations, r.data, services());
  pipeline.prepare(view.get());
  for (uint64_t step = 0; step < 3; ++step) {
    const torch::Tensor first = mixed(pipeline, 0, 2 * step),
                        second = mixed(pipeline, 1, 2 * step + 1);
    EXPECT_TRUE(torch::equal(first, second)) << "step " << step;
    EXPECT_NEAR(share(first), 0.5, 0.05) << "step " << step;
  }

  const host::RunConfig per_view =
      augmented_run_config(dir + "/per_view.toml", section + "probability = 0.5\n");
  host::AugmentationPipeline independent(per_view.augmentations, r.data, services());
  independent.prepare(view.get());
  const torch::Tensor first = mixed(independent, 0, 0), second = mixed(independent, 1, 1);
  EXPECT_NEAR(share(first & second), 0.25, 0.05);
  EXPECT_NEAR(share(first ^ second), 0.5, 0.05);

  const host::RunConfig wrong = augmented_run_config(
      dir + "/wrong.toml", section + "probability = 0.5\nshared_coin = true\n");
  host::AugmentationPipeline refused(wrong.augmentations, r.data, services());
  refused.prepare(view.get());
  mixed(refused, 0, 0);
  try {
    mixed(refused, 1, 1);
    FAIL() << "shared_coin under a per-view coin was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("set probability = 1"), std::string::npos) << e.what();
  }
}

// ---- bbknn --------------------------------------------------------------------------------------

TEST(Bbknn, NeighboursAreTheNearestCellsOfEveryBatchInEqualShares) {
  const Reference& r = kang();
  ASSERT_GE(r.n_batches, 2);
  Prepared p = prepare("bbknn", r.data,
                       {{"mode", text("interpolate")},
                        {"alpha", real(0.0)},
                        {"neighbors_within_batch", integer(3)}});
  auto expected = expected_balanced(r, 3);
  const std::vector<int64_t> cells = {0, 100, 555, 1000, 1500};
  const int64_t draws = 600;
  std::vector<int64_t> got = identify(p.run(repeat_each(cells, draws), 0, 5), r.dense);
  for (size_t c = 0; c < cells.size(); ++c) {
    std::set<int64_t> seen;
    std::vector<int64_t> per_batch(r.n_batches, 0);
    for (int64_t d = 0; d < draws; ++d) {
      const int64_t nb = got[c * draws + d];
      ASSERT_GE(nb, 0) << "alpha = 0 must give a training cell";
      ASSERT_NE(nb, cells[c]);
      seen.insert(nb);
      ++per_batch[r.batch[nb]];
    }
    EXPECT_EQ(seen, expected[cells[c]]) << "cell " << cells[c];
    EXPECT_EQ(static_cast<int64_t>(seen.size()), 3 * r.n_batches);
    for (int64_t b = 0; b < r.n_batches; ++b)
      EXPECT_NEAR(per_batch[b] / double(draws), 1.0 / r.n_batches, 0.07) << "batch " << b;
  }
}

// With the bench's index bug, the neighbour is the row at the drawn position of the cell's list
// of 3 per batch: one of the first 3 x batches rows of the data.
TEST(Bbknn, IndexBugMixesEveryCellWithOneOfTheFirstRows) {
  const Reference& r = kang();
  Prepared p = prepare("bbknn", r.data,
                       {{"mode", text("interpolate")},
                        {"alpha", real(0.0)},
                        {"neighbors_within_batch", integer(3)},
                        {"index_bug", boolean(true)}});
  const int64_t n = static_cast<int64_t>(r.batch.size());
  std::vector<int64_t> got = identify(p.run(torch::arange(n, torch::kInt64), 0, 5), r.dense);
  std::set<int64_t> rows;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_GE(got[i], 0) << "cell " << i;
    rows.insert(got[i]);
  }
  EXPECT_EQ(static_cast<int64_t>(rows.size()), 3 * r.n_batches);
  EXPECT_EQ(*rows.rbegin(), 3 * r.n_batches - 1);
}

TEST(Bbknn, SwitchTakesGenesFromOneNeighbourWithProbabilityOneMinusAlpha) {
  const int64_t n = 30, genes = 60;
  const torch::Tensor x = distinct_values(n, genes);
  std::vector<int32_t> batches;
  for (int64_t i = 0; i < n; ++i) batches.push_back(static_cast<int32_t>(i % 3));
  const CellData data = dataset(x, batches, 3);
  Prepared p = prepare("bbknn", data, {{"mode", text("switch")}, {"alpha", real(0.3)}});
  torch::Tensor ids = repeat_each({0, 4, 17}, 50);
  torch::Tensor out = p.run(ids, 0, 6);
  int64_t from_self = 0;
  for (int64_t r = 0; r < ids.size(0); ++r) {
    const int64_t cell = ids[r].item<int64_t>();
    torch::Tensor v = out[r].to(torch::kInt64) - 1;
    EXPECT_TRUE(torch::equal(v.remainder(genes), torch::arange(genes)));  // genes stay in place
    torch::Tensor source = v.div(genes, "floor");
    torch::Tensor others = source.masked_select(source != cell);
    if (others.numel()) {
      EXPECT_TRUE((others == others[0]).all().item<bool>());
    }
    from_self += (source == cell).sum().item<int64_t>();
  }
  EXPECT_NEAR(from_self / double(ids.size(0) * genes), 0.3, 0.03);
  // alpha = 1 keeps the cell, alpha = 0 gives the neighbour itself.
  Prepared keep = prepare("bbknn", data, {{"mode", text("switch")}, {"alpha", real(1.0)}});
  EXPECT_TRUE(torch::equal(keep.run(ids, 0, 6), x.index_select(0, ids)));
  Prepared take = prepare("bbknn", data, {{"mode", text("switch")}, {"alpha", real(0.0)}});
  for (int64_t got : identify(take.run(ids, 0, 6), x)) EXPECT_GE(got, 0);
}

// ---- every plugin -------------------------------------------------------------------------------

TEST(Augmentations, SameSeedSameOutputOtherSeedOtherOutput) {
  const Reference& r = kang();
  torch::Tensor ids = torch::arange(0, 1500, 7, torch::kInt64);
  for (const std::string name : {"mask", "gauss", "innerswap", "crossover", "mnn", "bbknn"}) {
    Prepared p = prepare(name, r.data);
    for (int view : {0, 1}) {
      torch::Tensor a = p.run(ids, view, 42), b = p.run(ids, view, 42), c = p.run(ids, view, 43);
      EXPECT_TRUE(torch::equal(a, b)) << name << " view " << view;
      EXPECT_FALSE(torch::equal(a, c)) << name << " view " << view;
      EXPECT_FALSE(torch::equal(a, r.dense.index_select(0, ids))) << name << " changed nothing";
    }
  }
}

TEST(Augmentations, OutOfRangeParametersAreRefusedAtCreationByName) {
  struct Case {
    std::string plugin, param;
    ParamValue value;
  };
  const std::vector<Case> cases = {{"mask", "fraction", real(1.5)},
                                   {"mask", "mode", text("drop")},
                                   {"gauss", "fraction", real(-0.1)},
                                   {"gauss", "sigma", real(-0.2)},
                                   {"innerswap", "fraction", real(2.0)},
                                   {"crossover", "fraction", real(1.01)},
                                   {"mnn", "alpha", real(1.5)},
                                   {"mnn", "knn", integer(0)},
                                   {"mnn", "k_anchor", integer(-1)},
                                   {"mnn", "lambda_mode", text("beta")},
                                   {"mnn", "pair_probability", real(1.5)},
                                   {"bbknn", "neighbors_within_batch", integer(0)},
                                   {"bbknn", "alpha", real(-1.0)},
                                   {"bbknn", "mode", text("blend")}};
  // The host's schema check refuses them, naming the parameter and the plugin.
  for (const auto& c : cases) {
    const std::string message = creation_error(c.plugin, {{c.param, c.value}});
    EXPECT_NE(message.find("parameter '" + c.param + "' of augmentation plugin '" + c.plugin +
                           "' must be"),
              std::string::npos)
        << c.plugin << "." << c.param << ": " << (message.empty() ? "accepted" : message);
  }
  // Infinity passes sigma's lower bound, but a bounded number must be finite.
  const std::string message =
      creation_error("gauss", {{"sigma", real(std::numeric_limits<double>::infinity())}});
  EXPECT_NE(message.find("'sigma' of augmentation plugin 'gauss' must be at least 0, got inf (not "
                         "a finite number)"),
            std::string::npos)
      << message;
}

TEST(Augmentations, CellIdsOutsideTheTrainingDataAreRefused) {
  const Reference& r = kang();
  for (const std::string name : {"crossover", "mnn", "bbknn"}) {
    Prepared p = prepare(name, r.data);
    torch::Tensor batch = r.dense.slice(0, 0, 2).clone();
    torch::Tensor ids = torch::tensor({int64_t{0}, int64_t{1} << 40});
    EXPECT_THROW(p.aug->apply(batch, ids, 0, 1), Error) << name;
  }
}

// The configuration files: appended to a run config they parse against the real schemas, and
// the pipelines they describe run on real data.
TEST(AugmentationConfigs, EveryFileLoadsIntoARunConfigAndRuns) {
  const std::string dir = test::temp_dir("augmentation-configs");
  const std::map<std::string, std::vector<std::string>> expected = {
      {"clear_pipeline", {"mask", "gauss", "innerswap", "crossover"}},
      {"study_clear_pipeline", {"mask", "gauss", "innerswap", "crossover"}},
      {"reference_pipeline", {"mnn", "gauss", "innerswap", "mask"}},
      {"only_mask", {"mask"}},
      {"only_gauss", {"gauss"}},
      {"only_innerswap", {"innerswap"}},
      {"only_crossover", {"crossover"}},
      {"only_mnn", {"mnn"}},
      {"only_bbknn", {"bbknn"}},
      {"only_mask_keep", {"mask"}},
      {"only_mnn_index_bug", {"mnn"}},
      {"only_bbknn_index_bug", {"bbknn"}},
      {"clear_original_pipeline", {"mask", "gauss", "innerswap", "crossover", "crossover"}}};
  // Every file is listed here, or, with sections for two modalities, in
  // RnaAdtPipelinesAugmentBothModalitiesIndependently.
  const std::set<std::string> two_modalities = {"clear_pipeline_rna_adt",
                                                "study_clear_pipeline_rna_adt"};
  for (const auto& entry :
       std::filesystem::directory_iterator(test::repo_file("configs/augmentations"))) {
    const std::string name = entry.path().stem().string();
    EXPECT_TRUE(expected.count(name) || two_modalities.count(name))
        << entry.path() << " is not covered by a test";
  }
  const Reference& r = kang();
  CellDataView view(r.data);
  torch::Tensor ids = torch::arange(0, 256, torch::kInt64);
  for (const auto& [name, plugins] : expected) {
    const std::string file = test::repo_file("configs/augmentations/" + name + ".toml");
    host::RunConfig cfg = augmented_run_config(dir + "/" + name + ".toml", test::read_text(file));
    host::RunConfig included = augmented_run_config(dir + "/inc_" + name + ".toml", "", file);
    EXPECT_EQ(included.resolved_toml(), cfg.resolved_toml()) << name;
    ASSERT_EQ(cfg.augmentations.size(), plugins.size()) << name;
    for (size_t i = 0; i < plugins.size(); ++i) {
      EXPECT_EQ(cfg.augmentations[i].choice.plugin->name(), plugins[i]) << name;
      EXPECT_EQ(cfg.augmentations[i].probability, 0.5) << name;
    }
    host::AugmentationPipeline pipeline(cfg.augmentations, r.data, services());
    pipeline.prepare(view.get());
    for (int v : {0, 1}) {
      torch::Tensor batch = r.dense.index_select(0, ids).contiguous();
      pipeline.apply(0, v, batch, ids, 3 + v);
      EXPECT_TRUE(torch::isfinite(batch).all().item<bool>()) << name;
      EXPECT_FALSE(torch::equal(batch, r.dense.index_select(0, ids))) << name;
    }
  }
  host::RunConfig clear = host::load_run_config(dir + "/clear_pipeline.toml", {}, test::plugins());
  EXPECT_EQ(clear.augmentations[0].choice.params.get_string("mode"), "zero");
  EXPECT_DOUBLE_EQ(clear.augmentations[1].choice.params.get_float("sigma"), 0.2);
  host::RunConfig ref =
      host::load_run_config(dir + "/reference_pipeline.toml", {}, test::plugins());
  EXPECT_EQ(ref.augmentations[0].choice.params.get_int("knn"), 3);
  EXPECT_EQ(ref.augmentations[3].choice.params.get_string("mode"), "keep");
  EXPECT_DOUBLE_EQ(ref.augmentations[3].choice.params.get_float("fraction"), 0.5);
}

// ---- the shared helpers of scssl/graphs.hpp -----------------------------------------------------

TEST(GraphHelpers, SampleIsUniformOverNeighboursAndFallsBackToTheCell) {
  NeighborGraph g = NeighborGraph::from_lists({{1, 2}, {}, {0}});
  auto rng = at::make_generator<at::CPUGeneratorImpl>(4);
  torch::Tensor got = g.sample(repeat_each({0, 1, 2}, 1000), rng, "test");
  torch::Tensor of0 = got.slice(0, 0, 1000);
  EXPECT_TRUE(((of0 == 1) | (of0 == 2)).all().item<bool>());
  EXPECT_NEAR((of0 == 1).to(torch::kFloat64).mean().item<double>(), 0.5, 0.05);
  EXPECT_TRUE((got.slice(0, 1000, 2000) == 1).all().item<bool>());
  EXPECT_TRUE((got.slice(0, 2000) == 0).all().item<bool>());
  EXPECT_THROW(g.sample(torch::tensor({int64_t{3}}), rng, "test"), BadData);
}

TEST(GraphHelpers, RandomSubsetsAreDistinctAndInRange) {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int64_t count : {0, 1, 7, 20}) {
    torch::Tensor s = random_subsets(300, 20, count, rng);
    ASSERT_EQ(s.sizes(), (std::vector<int64_t>{300, count}));
    if (count == 0) continue;
    EXPECT_TRUE((s >= 0).all().item<bool>() && (s < 20).all().item<bool>());
    torch::Tensor sorted = std::get<0>(s.sort(1));
    EXPECT_TRUE((sorted.slice(1, 1) != sorted.slice(1, 0, -1)).all().item<bool>());
  }
  // count = n is a random permutation of every row.
  torch::Tensor all = random_subsets(10, 20, 20, rng);
  EXPECT_TRUE(torch::equal(std::get<0>(all.sort(1)), torch::arange(20).repeat({10, 1})));
}

// Every index is picked with probability count / n, whether the subsets are drawn directly
// (count <= n / 2) or as the complement of the indices left out (count > n / 2); one seed gives
// one result, whatever the thread count.
TEST(GraphHelpers, RandomSubsetsPickEveryIndexEquallyOftenAndRepeatWithTheSeed) {
  const int64_t rows = 20000, n = 10;
  for (int64_t count : {3, 8}) {
    auto rng = at::make_generator<at::CPUGeneratorImpl>(11);
    torch::Tensor s = random_subsets(rows, n, count, rng);
    torch::Tensor hits = torch::bincount(s.flatten(), {}, n).to(torch::kFloat64) / rows;
    EXPECT_LT((hits - static_cast<double>(count) / n).abs().max().item<double>(), 0.02)
        << "count " << count;
    // Pairs too: index 0 and 1 together with probability count (count - 1) / (n (n - 1)).
    torch::Tensor both = ((s == 0).any(1) & (s == 1).any(1)).to(torch::kFloat64).mean();
    EXPECT_NEAR(both.item<double>(), count * (count - 1.0) / (n * (n - 1.0)), 0.02);
    auto again = at::make_generator<at::CPUGeneratorImpl>(11);
    const int saved = at::get_num_threads();
    at::set_num_threads(saved == 1 ? 2 : 1);
    EXPECT_TRUE(torch::equal(random_subsets(rows, n, count, again), s));
    at::set_num_threads(saved);
  }
}

// The ziggurat's draws follow N(0, 1): moments, a chi-square over 100 intervals of width 0.1
// between -5 and 5 and the two tails, and the share beyond the base layer, which takes its own
// path. Fast-path thresholds shifted by one layer give a chi-square of about 230 here.
TEST(Random, StandardNormalMatchesTheNormalDistribution) {
  Xoshiro256 stream(7);
  const int64_t draws = 10000000, bins = 100;
  std::vector<int64_t> counts(bins + 2, 0);
  double sum = 0, sum2 = 0, sum4 = 0;
  int64_t beyond_base = 0;
  for (int64_t i = 0; i < draws; ++i) {
    const double x = StandardNormal::draw(stream);
    sum += x;
    sum2 += x * x;
    sum4 += x * x * x * x;
    beyond_base += std::abs(x) > 3.442619855899;
    counts[x < -5 ? 0 : x >= 5 ? bins + 1 : 1 + static_cast<int64_t>((x + 5) * bins / 10)]++;
  }
  EXPECT_NEAR(sum / draws, 0.0, 0.002);
  EXPECT_NEAR(sum2 / draws, 1.0, 0.003);
  EXPECT_NEAR(sum4 / draws, 3.0, 0.02);
  auto cdf = [](double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); };
  auto edge = [&](int64_t b) { return -5 + 10.0 * static_cast<double>(b) / bins; };
  double chi2 = 0;
  for (int64_t b = 0; b < bins + 2; ++b) {
    const double lo = b == 0 ? 0 : cdf(edge(b - 1)), hi = b == bins + 1 ? 1 : cdf(edge(b));
    const double expected = (hi - lo) * static_cast<double>(draws);
    chi2 += (static_cast<double>(counts[b]) - expected) *
            (static_cast<double>(counts[b]) - expected) / expected;
  }
  EXPECT_LT(chi2, 154.4) << "101 degrees of freedom; 154.4 is the 0.9995 quantile";
  const double tail = 2 * (1 - cdf(3.442619855899));
  EXPECT_NEAR(static_cast<double>(beyond_base) / draws, tail, 4 * std::sqrt(tail / draws));
}

// configs/profiles/bench.toml layered last over a method config sets the study's quirks and keeps
// the method's own augmentations; study_clear_pipeline.toml masks as the study's code did.
TEST(AugmentationConfigs, TheBenchProfileSetsTheStudysQuirks) {
  const std::string dir = test::temp_dir("bench-profile");
  const std::string run = dir + "/run.toml";
  std::ofstream(run) << "include = [\"" << test::repo_file("configs/methods/vicreg.toml")
                     << "\", \"" << test::repo_file("configs/profiles/bench.toml") << "\"]\n";
  const host::RunConfig cfg = host::load_run_config(run, {}, test::plugins());
  EXPECT_EQ(cfg.preprocess.n_top_genes, 4000);
  EXPECT_DOUBLE_EQ(cfg.train.learning_rate, 1e-4);
  EXPECT_TRUE(cfg.train.step_schedule);
  EXPECT_EQ(cfg.train.step_size, 10);
  EXPECT_DOUBLE_EQ(cfg.train.gamma, 0.1);
  ASSERT_EQ(cfg.augmentations.size(), 4u) << "the method's own pipeline stays";
  EXPECT_EQ(cfg.augmentations[0].choice.params.get_string("mode"), "zero");
  // The study's pipeline included after the method config replaces the method's.
  std::ofstream(run) << "include = [\"" << test::repo_file("configs/methods/vicreg.toml")
                     << "\", \""
                     << test::repo_file("configs/augmentations/study_clear_pipeline.toml")
                     << "\", \"" << test::repo_file("configs/profiles/bench.toml") << "\"]\n";
  const host::RunConfig with_pipeline = host::load_run_config(run, {}, test::plugins());
  ASSERT_EQ(with_pipeline.augmentations.size(), 4u);
  EXPECT_EQ(with_pipeline.augmentations[0].choice.params.get_string("mode"), "keep");
}

// --set augmentation.<plugin>.<key> changes that entry of the included list, which is what the
// augmentation strength sweeps vary; a plugin the list lacks is one clear error.
TEST(AugmentationConfigs, OneEntryIsChangedByItsPluginName) {
  const std::string config = test::repo_file("configs/methods/vicreg.toml");
  const host::RunConfig cfg = host::load_run_config(
      config, {"augmentation.gauss.sigma=0.7", "augmentation.mask.fraction=0.5"}, test::plugins());
  ASSERT_EQ(cfg.augmentations.size(), 4u);
  EXPECT_DOUBLE_EQ(cfg.augmentations[0].choice.params.get_float("fraction"), 0.5);
  EXPECT_DOUBLE_EQ(cfg.augmentations[1].choice.params.get_float("sigma"), 0.7);
  EXPECT_DOUBLE_EQ(cfg.augmentations[1].choice.params.get_float("fraction"), 0.8);
  try {
    host::load_run_config(config, {"augmentation.mnn.alpha=0.3"}, test::plugins());
    FAIL() << "a plugin the list does not have was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no [[augmentation]] section uses plugin 'mnn'"),
              std::string::npos)
        << e.what();
  }
}

// The RNA + ADT pipelines augment both modalities of the bundled Triana data, as the study does
// (docs/augmentations.md, "Two modalities"): four augmentations per modality, and the two ADT
// views differ from the stored values and from each other.
TEST(AugmentationConfigs, RnaAdtPipelinesAugmentBothModalitiesIndependently) {
  const std::string dir = test::temp_dir("rna-adt-pipelines");
  const CellData data = test::load_h5ad(test::repo_file(kTriana));
  CellDataView view(data);
  const int rna = data.modality_index("RNA"), adt = data.modality_index("ADT");
  ASSERT_GE(rna, 0);
  ASSERT_GE(adt, 0);
  const torch::Tensor ids = torch::arange(data.n_cells(), torch::kInt64);
  for (const auto& [name, mode] : std::map<std::string, std::string>{
           {"clear_pipeline_rna_adt", "zero"}, {"study_clear_pipeline_rna_adt", "keep"}}) {
    const host::RunConfig cfg = augmented_run_config(
        dir + "/" + name + ".toml", "", test::repo_file("configs/augmentations/" + name + ".toml"));
    ASSERT_EQ(cfg.augmentations.size(), 8u) << name;
    for (const auto& a : cfg.augmentations) {
      if (a.choice.plugin->name() != "mask") continue;
      EXPECT_EQ(a.choice.params.get_string("mode"), mode) << name << " " << a.modality;
    }
    host::AugmentationPipeline pipeline(cfg.augmentations, data, services());
    pipeline.prepare(view.get());
    EXPECT_EQ(pipeline.count(rna), 4) << name;
    EXPECT_EQ(pipeline.count(adt), 4) << name;
    const Matrix& x = data.modalities[adt].X;
    const torch::Tensor stored = x.slice_dense(0, x.rows);
    torch::Tensor v0 = stored.clone(), v1 = stored.clone();
    pipeline.apply(adt, 0, v0, ids, 5);
    pipeline.apply(adt, 1, v1, ids, 6);
    EXPECT_FALSE(torch::equal(v0, stored)) << name;
    EXPECT_FALSE(torch::equal(v1, stored)) << name;
    EXPECT_FALSE(torch::equal(v0, v1)) << name;
  }
}

// configs/data/triana_rna_adt_study.toml sets up the Triana data as the study sets up its
// multimodal runs: preprocessed as the host does it (scssl::preprocess_modality with the run's
// settings per modality), the ADT block stays exactly as stored (raw counts in this file) while
// the RNA block is normalised; and both modalities are augmented. triana_rna_adt.toml normalises
// the ADT block like the RNA.
TEST(AugmentationConfigs, TheStudysTrianaSetupTakesTheAdtBlockAsStored) {
  const std::string dir = test::temp_dir("triana-study");
  for (const std::string name : {"triana_rna_adt_study", "triana_rna_adt"}) {
    const bool study = name == "triana_rna_adt_study";
    const host::RunConfig cfg = augmented_run_config(
        dir + "/" + name + ".toml", "", test::repo_file("configs/data/" + name + ".toml"));
    EXPECT_EQ(cfg.augmentations.size(), study ? 8u : 0u) << name;
    CellData data = test::load_h5ad(test::repo_file(kTriana));
    for (Modality& m : data.modalities) {
      const torch::Tensor stored = m.X.slice_dense(0, m.X.rows);
      preprocess_modality(m, cfg.preprocess_for(m.name), data.batches());
      const bool as_stored = torch::equal(m.X.slice_dense(0, m.X.rows), stored);
      EXPECT_EQ(as_stored, study && m.name == "ADT") << name << " " << m.name;
    }
    const Matrix& adt = data.modalities.at(data.modality_index("ADT")).X;
    EXPECT_EQ(adt.cols, 197) << name;
    EXPECT_EQ(study, adt.slice_dense(0, adt.rows).max().item<float>() > 1000) << name;
  }
}
