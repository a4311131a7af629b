// Bio / Batch / Total from the metrics' own groups (metrics.md §1.5), worked by hand.
#include <nlohmann/json.hpp>

#include <cmath>

#include "results.hpp"
#include "support.hpp"

using namespace scssl;
using host::MetricValue;

TEST(ScibAggregates, MeansPerGroupSkippingNaNAndWeightedTotal) {
  std::vector<MetricValue> m = {{"a", "x", 0.2, SCSSL_GROUP_BIO, true},
                                {"b", "y", 0.4, SCSSL_GROUP_BIO, true},
                                {"c", "z", std::nan(""), SCSSL_GROUP_BIO, true},
                                {"d", "u", 0.9, SCSSL_GROUP_BATCH, true},
                                {"e", "v", 0.77, SCSSL_GROUP_ANNOTATION, true}};
  auto agg = host::scib_aggregates(m);
  ASSERT_EQ(agg.size(), 3u);
  EXPECT_DOUBLE_EQ(agg[0].value, 0.3);               // (0.2 + 0.4) / 2, NaN skipped
  EXPECT_DOUBLE_EQ(agg[1].value, 0.9);
  EXPECT_DOUBLE_EQ(agg[2].value, 0.6 * 0.3 + 0.4 * 0.9);
  EXPECT_EQ(agg[2].name, "total");
}

TEST(ScibAggregates, NoScibMetricMeansNoAggregates) {
  EXPECT_TRUE(host::scib_aggregates({{"knn_annotation", "macro_f1", 0.8, SCSSL_GROUP_ANNOTATION, true}}).empty());
}

TEST(ScibAggregates, AGroupWithoutValuesIsNaN) {
  auto agg = host::scib_aggregates({{"a", "x", 0.5, SCSSL_GROUP_BIO, true}});
  EXPECT_DOUBLE_EQ(agg[0].value, 0.5);
  EXPECT_TRUE(std::isnan(agg[1].value));
  EXPECT_TRUE(std::isnan(agg[2].value));
}

// On a reference case with all seven implemented metrics, the aggregates are those of the same
// seven reference values (the reference's own aggregates include kBET and Leiden, not run here).
TEST(ScibAggregates, MatchTheReferenceValuesOfTheSameMetrics) {
  const std::string dir = test::repo_file("tests/data/reference/");
  CellData data = test::load_h5ad(dir + "kang_ctrl_stim.h5ad");
  torch::Tensor emb = test::read_obsm(dir + "kang_ctrl_stim.h5ad", "X_batchcentered");
  torch::Tensor pre = test::read_obsm(dir + "kang_ctrl_stim.h5ad", "X_pca");
  host::HostServices services;
  host::NeighborCache cache(emb);
  services.serve_neighbors(&cache);
  std::vector<MetricValue> all;
  for (const char* name : {"isolated_labels", "silhouette_label", "clisi", "silhouette_batch", "ilisi",
                           "graph_connectivity", "pcr_comparison"}) {
    const host::LoadedPlugin& p = test::plugins().get(name, SCSSL_KIND_EVALUATOR);
    host::Evaluator e(p, p.default_params(), services);
    for (auto& v : e.evaluate(data, emb, pre, {})) all.push_back(v);
  }
  // Reference values (kang_ctrl_stim.h5ad.scib.json, X_batchcentered) of the same metrics.
  const auto reference = nlohmann::json::parse(test::read_text(dir + "kang_ctrl_stim.h5ad.scib.json"))
      ["embeddings"]["X_batchcentered"]["metrics"];
  auto value = [&](const char* key) { return reference[key].get<double>(); };
  const double bio = (value("isolated_labels") + value("silhouette_label") + value("clisi")) / 3;
  const double batch = (value("silhouette_batch") + value("ilisi") + value("graph_connectivity") +
                        value("pcr_comparison")) / 4;
  auto agg = host::scib_aggregates(all);
  EXPECT_NEAR(agg[0].value, bio, 1e-4);
  EXPECT_NEAR(agg[1].value, batch, 1e-4);
  EXPECT_NEAR(agg[2].value, 0.6 * bio + 0.4 * batch, 1e-4);
}
