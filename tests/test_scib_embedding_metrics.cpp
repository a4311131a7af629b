// The silhouette-based scIB metrics (silhouette_label, isolated_labels, silhouette_batch) and PCR
// comparison against the reference cases (tests/data/reference/*.scib.json, within 1e-4), plus
// small hand-checkable cases for the definitions and edge cases of docs/metrics.md §2-3 and §5.
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>

#include "scssl/silhouette.hpp"
#include "support.hpp"

using namespace scssl;

namespace {

constexpr double kTol = 1e-4;
const char* const kMetrics[] = {"isolated_labels", "silhouette_label", "silhouette_batch",
                                "pcr_comparison"};

// Runs one evaluator plugin and returns its single metric.
double run_metric(const std::string& name, const CellData& data, const torch::Tensor& embedding,
                  const torch::Tensor& unintegrated = {}) {
  host::HostServices services;
  const host::LoadedPlugin& p = test::plugins().get(name, SCSSL_KIND_EVALUATOR);
  host::Evaluator evaluator(p, p.default_params(), services);
  auto values = evaluator.evaluate(data, embedding, unintegrated, {});
  for (const auto& m : values)
    if (m.name == name) return m.value;
  ADD_FAILURE() << name << " did not report its metric";
  return std::nan("");
}

// Mean of (1 - |s|) per label, as the reference's silhouette_batch_per_label.
std::map<std::string, double> silhouette_batch_per_label(const CellData& data,
                                                         const torch::Tensor& emb) {
  std::map<std::string, double> out;
  const Column* labels = data.labels();
  torch::Tensor lab = labels->codes.to(torch::kInt64);
  torch::Tensor bat = data.batches()->codes.to(torch::kInt64);
  for (size_t l = 0; l < labels->categories.size(); ++l) {
    torch::Tensor ids = torch::nonzero(lab == static_cast<int64_t>(l)).squeeze(1);
    torch::Tensor b = bat.index_select(0, ids);
    const int64_t nb = std::get<0>(torch::_unique(b)).numel();
    if (nb < 2 || nb == ids.numel()) continue;
    torch::Tensor s = silhouette_samples(emb.index_select(0, ids), b);
    out[labels->categories[l]] = (1.0 - s.abs()).mean().item<double>();
  }
  return out;
}

void check_case(const std::string& h5ad, const std::string& json_path) {
  CellData data = test::load_h5ad(h5ad);
  const torch::Tensor pre = test::read_obsm(h5ad, "X_pca");
  const auto reference = nlohmann::json::parse(test::read_text(json_path));
  for (const std::string key : {"X_pca", "X_batchcentered"}) {
    SCOPED_TRACE(h5ad + " obsm " + key);
    const torch::Tensor emb = test::read_obsm(h5ad, key);
    const auto& expected = reference["embeddings"][key];
    for (const char* metric : kMetrics) {
      const double want = expected["metrics"][metric].get<double>();
      const double got = run_metric(metric, data, emb, pre);
      EXPECT_NEAR(got, want, kTol) << metric;
    }

    // Per-label details: isolated labels' per-label (s + 1)/2 means over the all-label silhouette.
    const auto& details = expected["details"];
    if (details.contains("isolated_labels") && details["isolated_labels"].contains("per_label")) {
      const Column* labels = data.labels();
      torch::Tensor s = silhouette_samples(emb, labels->codes);
      torch::Tensor lab = labels->codes.to(torch::kInt64);
      for (const auto& [name, value] : details["isolated_labels"]["per_label"].items()) {
        auto it = std::find(labels->categories.begin(), labels->categories.end(), name);
        ASSERT_NE(it, labels->categories.end()) << "label " << name;
        torch::Tensor mask = lab == static_cast<int64_t>(it - labels->categories.begin());
        const double got = ((s.masked_select(mask) + 1.0) / 2.0).mean().item<double>();
        EXPECT_NEAR(got, value.get<double>(), kTol) << "isolated_labels per label " << name;
      }
    }
    if (details.contains("silhouette_batch_per_label")) {
      const auto got = silhouette_batch_per_label(data, emb);
      for (const auto& [name, value] : details["silhouette_batch_per_label"].items()) {
        if (value.is_null()) {
          EXPECT_EQ(got.count(name), 0u) << "label " << name << " should be skipped";
          continue;
        }
        ASSERT_EQ(got.count(name), 1u) << "label " << name << " was skipped";
        EXPECT_NEAR(got.at(name), value.get<double>(), kTol)
            << "silhouette_batch per label " << name;
      }
    }
  }
}

// A toy data set: one categorical batch column and one label column over len(batch) cells.
CellData toy(const std::vector<int32_t>& batch, int n_batches, const std::vector<int32_t>& label,
             int n_labels) {
  CellData data;
  for (size_t i = 0; i < batch.size(); ++i) data.cell_names.push_back("c" + std::to_string(i));
  Column b{"batch", true, torch::tensor(batch, torch::kInt32), {}, {}};
  for (int i = 0; i < n_batches; ++i) b.categories.push_back("b" + std::to_string(i));
  Column l{"cell_type", true, torch::tensor(label, torch::kInt32), {}, {}};
  for (int i = 0; i < n_labels; ++i) l.categories.push_back("t" + std::to_string(i));
  data.columns = {b, l};
  data.batch_key = "batch";
  data.label_key = "cell_type";
  return data;
}

}  // namespace

TEST(ScibEmbeddingMetrics, KangCtrlStimMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_case(dir + "kang_ctrl_stim.h5ad", dir + "kang_ctrl_stim.h5ad.scib.json");
}

TEST(ScibEmbeddingMetrics, TrianaMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_case(dir + "triana_rna_adt.h5ad", dir + "triana_rna_adt.h5ad.scib.json");
}

TEST(ScibEmbeddingMetrics, Kang8DonorsMatchesReference) {
  const std::string h5ad = test::shared_file("reference/kang_8donors.h5ad");
  if (h5ad.empty()) GTEST_SKIP() << "../shared/reference/kang_8donors.h5ad not present, skipped";
  check_case(h5ad, test::repo_file("tests/data/reference/kang_8donors.h5ad.scib.json"));
}

// Silhouette by hand: points 0, 1 (cluster 0) and 4 (cluster 1).
// Cell 0: a = 1, b = 4 -> 3/4. Cell 1: a = 1, b = 3 -> 2/3. Cell 2: singleton -> 0.
TEST(Silhouette, SmallCaseByHand) {
  torch::Tensor x = torch::tensor({{0.f}, {1.f}, {4.f}});
  torch::Tensor s = silhouette_samples(x, torch::tensor({0, 0, 1}, torch::kInt32));
  EXPECT_NEAR(s[0].item<double>(), 0.75, 1e-12);
  EXPECT_NEAR(s[1].item<double>(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(s[2].item<double>(), 0.0);
  // One cluster only: all zero, as sklearn.
  EXPECT_EQ(silhouette_samples(x, torch::zeros({3}, torch::kInt64)).abs().sum().item<double>(),
            0.0);
}

TEST(Silhouette, NegativeCodeIsAnError) {
  torch::Tensor x = torch::randn({5, 2});
  EXPECT_THROW(silhouette_samples(x, torch::tensor({0, 1, -1, 1, 0}, torch::kInt64)), Error);
}

// Computing only some rows gives exactly those rows of the full result, and 0 elsewhere.
TEST(Silhouette, SelectedRowsMatchTheFullComputation) {
  torch::manual_seed(4);
  torch::Tensor x = torch::randn({41, 6});
  torch::Tensor c = torch::randint(0, 3, {41}, torch::kInt64);
  torch::Tensor wanted = torch::rand({41}) < 0.3;
  torch::Tensor full = silhouette_samples(x, c);
  torch::Tensor part = silhouette_samples(x, c, wanted);
  EXPECT_LT((part - torch::where(wanted, full, torch::zeros_like(full))).abs().max().item<double>(),
            1e-12);
  EXPECT_THROW(silhouette_samples(x, c, torch::ones({40}, torch::kBool)), Error);
}

// Two tight, far-apart cell types: silhouette label -> 1.
TEST(ScibEmbeddingMetrics, SeparatedLabelsGiveSilhouetteLabelNearOne) {
  CellData data = toy({0, 1, 0, 1, 0, 1, 0, 1}, 2, {0, 0, 0, 0, 1, 1, 1, 1}, 2);
  torch::Tensor emb = torch::tensor({{0.f, 0.f},
                                     {0.01f, 0.f},
                                     {0.f, 0.01f},
                                     {0.01f, 0.01f},
                                     {100.f, 0.f},
                                     {100.01f, 0.f},
                                     {100.f, 0.01f},
                                     {100.01f, 0.01f}});
  EXPECT_GT(run_metric("silhouette_label", data, emb), 0.999);
}

// Within each cell type both batches sit on the same m points (a lattice), the best mixing a
// silhouette can see. For a cell: b = (sum of its distances to the m lattice points) / m, a = the
// same sum / (m - 1) (its twin at distance 0 is in the other batch), so s = -1/m exactly and the
// metric is 1 - 1/m: near 1, and exactly checkable.
TEST(ScibEmbeddingMetrics, MixedBatchesGiveSilhouetteBatchNearOne) {
  const int m = 50;
  std::vector<int32_t> batch, label;
  std::vector<float> x;
  for (int l = 0; l < 2; ++l)
    for (int b = 0; b < 2; ++b)
      for (int p = 0; p < m; ++p) {
        batch.push_back(b);
        label.push_back(l);
        x.push_back(1000.f * l + p);
      }
  CellData data = toy(batch, 2, label, 2);
  torch::Tensor emb = torch::tensor(x).unsqueeze(1);
  EXPECT_NEAR(run_metric("silhouette_batch", data, emb), 1.0 - 1.0 / m, 1e-9);
}

// One batch in the whole data set: both batch metrics are undefined (NaN), not an error.
TEST(ScibEmbeddingMetrics, SingleBatchGivesNaN) {
  CellData data = toy({0, 0, 0, 0, 0, 0}, 1, {0, 0, 0, 1, 1, 1}, 2);
  torch::Tensor emb = torch::tensor({{0.f}, {1.f}, {2.f}, {10.f}, {11.f}, {12.f}});
  EXPECT_TRUE(std::isnan(run_metric("silhouette_batch", data, emb)));
  EXPECT_TRUE(std::isnan(run_metric("pcr_comparison", data, emb, emb)));
  // The same with a second batch category that has no cells.
  CellData unused = toy({0, 0, 0, 0, 0, 0}, 2, {0, 0, 0, 1, 1, 1}, 2);
  EXPECT_TRUE(std::isnan(run_metric("silhouette_batch", unused, emb)));
  EXPECT_TRUE(std::isnan(run_metric("pcr_comparison", unused, emb, emb)));
}

// Label t2 only in batch b0, the others in both: the isolated set is {t2}, so the metric is t2's
// mean (s + 1)/2 over the all-label silhouette.
TEST(ScibEmbeddingMetrics, LabelInOneBatchIsTheIsolatedOne) {
  CellData data = toy({0, 1, 0, 1, 0, 1, 0, 0}, 2, {0, 0, 0, 1, 1, 1, 2, 2}, 3);
  torch::Tensor emb =
      torch::tensor({{0.f}, {1.f}, {0.5f}, {10.f}, {11.f}, {10.5f}, {30.f}, {31.f}});
  torch::Tensor s = silhouette_samples(emb, data.labels()->codes);
  const double t2 = ((s.narrow(0, 6, 2) + 1.0) / 2.0).mean().item<double>();
  const double all = ((s + 1.0) / 2.0).mean().item<double>();
  const double got = run_metric("isolated_labels", data, emb);
  EXPECT_NEAR(got, t2, 1e-12);
  EXPECT_GT(std::abs(got - all), 1e-3);  // not the all-label mean
}

// Scored together on one embedding, isolated_labels (every label isolated here) shares its
// per-cell silhouette and silhouette_label reuses it: a planted shared result shows through.
TEST(ScibEmbeddingMetrics, SilhouetteLabelReusesTheSilhouetteIsolatedLabelsShared) {
  CellData data = toy({0, 1, 0, 1, 0, 1, 0, 1}, 2, {0, 0, 0, 0, 1, 1, 1, 1}, 2);
  torch::Tensor emb = torch::tensor({{0.f}, {0.2f}, {1.f}, {1.3f}, {5.f}, {5.1f}, {6.f}, {7.f}});
  const double alone = run_metric("silhouette_label", data, emb);
  host::HostServices services;
  host::NeighborCache cache(emb);
  services.serve_neighbors(&cache);
  auto score = [&](const std::string& name) {
    const host::LoadedPlugin& p = test::plugins().get(name, SCSSL_KIND_EVALUATOR);
    host::Evaluator evaluator(p, p.default_params(), services);
    return evaluator.evaluate(data, emb, {}, {}).at(0).value;
  };
  score("isolated_labels");
  ASSERT_EQ(cache.shared_results.size(), 1u);
  EXPECT_NEAR(score("silhouette_label"), alone, 1e-12);
  cache.shared_results.begin()->second.fill_(1.0);
  EXPECT_DOUBLE_EQ(score("silhouette_label"), 1.0);
}

// Only some labels isolated: isolated_labels computes just their rows and shares nothing.
TEST(ScibEmbeddingMetrics, PartialIsolatedSilhouetteIsNotShared) {
  CellData data = toy({0, 1, 0, 1, 0, 1, 0, 0}, 2, {0, 0, 0, 1, 1, 1, 2, 2}, 3);
  torch::Tensor emb =
      torch::tensor({{0.f}, {1.f}, {0.5f}, {10.f}, {11.f}, {10.5f}, {30.f}, {31.f}});
  host::HostServices services;
  host::NeighborCache cache(emb);
  services.serve_neighbors(&cache);
  const host::LoadedPlugin& p = test::plugins().get("isolated_labels", SCSSL_KIND_EVALUATOR);
  host::Evaluator evaluator(p, p.default_params(), services);
  evaluator.evaluate(data, emb, {}, {});
  EXPECT_TRUE(cache.shared_results.empty());
}

// Cells with a missing batch or label (-1) take no part: appending such cells, far away, changes
// nothing. The label metrics drop cells without a label (and the batch-aware ones cells without a
// batch); pcr_comparison drops cells without a batch.
TEST(ScibEmbeddingMetrics, MissingCodesAreExcluded) {
  CellData full = toy({0, 1, 0, 1, 0, 1, 0, 1}, 2, {0, 0, 0, 0, 1, 1, 1, 1}, 2);
  torch::Tensor emb =
      torch::tensor({{0.f}, {0.2f}, {1.f}, {1.3f}, {50.f}, {50.1f}, {51.f}, {52.f}});
  torch::Tensor emb_gaps = torch::cat({emb, torch::tensor({{-40.f}, {80.f}})});
  // Cell 8: neither code; cell 9: a batch but no label.
  CellData no_label = toy({0, 1, 0, 1, 0, 1, 0, 1, -1, 0}, 2, {0, 0, 0, 0, 1, 1, 1, 1, -1, -1}, 2);
  for (const char* metric : {"silhouette_label", "isolated_labels", "silhouette_batch"})
    EXPECT_NEAR(run_metric(metric, no_label, emb_gaps), run_metric(metric, full, emb), 1e-12)
        << metric;
  // Cells 8 and 9: a label but no batch.
  CellData no_batch = toy({0, 1, 0, 1, 0, 1, 0, 1, -1, -1}, 2, {0, 0, 0, 0, 1, 1, 1, 1, 0, 1}, 2);
  for (const char* metric : {"isolated_labels", "silhouette_batch"})
    EXPECT_NEAR(run_metric(metric, no_batch, emb_gaps), run_metric(metric, full, emb), 1e-12)
        << metric;
  // An X_pre where batch b1 is shifted by 3.
  torch::Tensor pre = emb + torch::tensor({0.f, 3.f, 0.f, 3.f, 0.f, 3.f, 0.f, 3.f}).unsqueeze(1);
  torch::Tensor pre_gaps = torch::cat({pre, torch::tensor({{7.f}, {-9.f}})});
  EXPECT_NEAR(run_metric("pcr_comparison", no_batch, emb_gaps, pre_gaps),
              run_metric("pcr_comparison", full, emb, pre), 1e-12);
}

// PCR: an embedding with the batch means removed scores 1, the unintegrated data itself 0, and a
// missing X_pre is a clear error naming it.
TEST(ScibEmbeddingMetrics, PcrComparisonByHand) {
  CellData data = toy({0, 0, 1, 1}, 2, {0, 1, 0, 1}, 2);
  torch::Tensor pre = torch::tensor({{0.f, 1.f}, {0.f, -1.f}, {4.f, 1.f}, {4.f, -1.f}});
  torch::Tensor centred = torch::tensor({{0.f, 1.f}, {0.f, -1.f}, {0.f, 1.f}, {0.f, -1.f}});
  EXPECT_NEAR(run_metric("pcr_comparison", data, centred, pre), 1.0, 1e-12);
  EXPECT_NEAR(run_metric("pcr_comparison", data, pre, pre), 0.0, 1e-12);
  // Rotation invariance: a rotated copy of X_pre explains the same share.
  torch::Tensor rot = torch::tensor({{0.6f, -0.8f}, {0.8f, 0.6f}});
  EXPECT_NEAR(run_metric("pcr_comparison", data, torch::matmul(pre, rot), pre), 0.0, 1e-6);
  host::HostServices services;
  const host::LoadedPlugin& p = test::plugins().get("pcr_comparison", SCSSL_KIND_EVALUATOR);
  host::Evaluator evaluator(p, p.default_params(), services);
  try {
    evaluator.evaluate(data, pre, {}, {});
    FAIL() << "no error without X_pre";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unintegrated"), std::string::npos) << e.what();
  }
}
