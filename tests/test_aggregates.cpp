// Bio / Batch / Total, defined by metric name (docs/evaluation.md#bio--batch--total), worked by
// hand; a metric outside the study's ten does not move them, whatever group it declares.
#include <nlohmann/json.hpp>

#include <cmath>

#include "aggregates.hpp"
#include "results.hpp"
#include "support.hpp"

using namespace scssl;
using runfolder::MetricGroup;
using runfolder::MetricRecord;

namespace {

MetricRecord metric(const std::string& name, double value, MetricGroup group) {
  MetricRecord m;
  m.evaluator = name;
  m.metric = name;
  m.group = group;
  m.value = value;
  return m;
}

double value_of(const std::vector<MetricRecord>& aggregates, const std::string& name) {
  for (const auto& a : aggregates)
    if (a.metric == name) return a.value;
  ADD_FAILURE() << "no aggregate " << name;
  return std::nan("");
}

}  // namespace

TEST(ScibAggregates, MeansByNameSkippingNaNAndWeightedTotal) {
  const std::vector<MetricRecord> m = {
      metric("isolated_labels", 0.2, MetricGroup::bio), metric("clisi", 0.4, MetricGroup::bio),
      metric("leiden_nmi", std::nan(""), MetricGroup::bio),
      metric("ilisi", 0.9, MetricGroup::batch), metric("macro_f1", 0.77, MetricGroup::annotation)};
  const auto agg = evaluation::scib_aggregates(m);
  ASSERT_EQ(agg.size(), 3u);
  EXPECT_EQ(agg[0].metric, "bio_conservation");
  EXPECT_EQ(agg[2].metric, "total");
  EXPECT_EQ(agg[2].evaluator, "aggregate");
  EXPECT_EQ(agg[2].group, MetricGroup::other);
  EXPECT_DOUBLE_EQ(agg[0].value, 0.3);  // (0.2 + 0.4) / 2, NaN skipped
  EXPECT_DOUBLE_EQ(agg[1].value, 0.9);
  EXPECT_DOUBLE_EQ(agg[2].value, 0.6 * 0.3 + 0.4 * 0.9);
  EXPECT_TRUE(std::isnan(agg[0].seconds)) << "aggregates have no time";
}

TEST(ScibAggregates, NoStudyMetricMeansNoAggregates) {
  EXPECT_TRUE(
      evaluation::scib_aggregates({metric("macro_f1", 0.8, MetricGroup::annotation)}).empty());
  // A third-party bio metric alone does not make aggregates either.
  EXPECT_TRUE(
      evaluation::scib_aggregates({metric("my_kmeans_nmi", 0.8, MetricGroup::bio)}).empty());
}

TEST(ScibAggregates, AGroupWithoutValuesIsNaN) {
  const auto agg = evaluation::scib_aggregates({metric("silhouette_label", 0.5, MetricGroup::bio)});
  ASSERT_EQ(agg.size(), 3u);
  EXPECT_DOUBLE_EQ(agg[0].value, 0.5);
  EXPECT_TRUE(std::isnan(agg[1].value));
  EXPECT_TRUE(std::isnan(agg[2].value));
}

// The case of the plugin author who installed a k-means NMI evaluator: its bio-group metric is
// reported beside the aggregates and leaves Bio, Batch and Total as they were.
TEST(ScibAggregates, AnExtraBioOrBatchMetricDoesNotChangeTotal) {
  std::vector<MetricRecord> study;
  for (const auto& name : evaluation::kBioConservationMetrics)
    study.push_back(metric(name, 0.6, MetricGroup::bio));
  for (const auto& name : evaluation::kBatchCorrectionMetrics)
    study.push_back(metric(name, 0.3, MetricGroup::batch));
  const auto before = evaluation::scib_aggregates(study);
  std::vector<MetricRecord> with_extra = study;
  with_extra.push_back(metric("kmeans_nmi", 0.05, MetricGroup::bio));
  with_extra.push_back(metric("my_batch_score", 0.99, MetricGroup::batch));
  const auto after = evaluation::scib_aggregates(with_extra);
  for (const char* name : {"bio_conservation", "batch_correction", "total"})
    EXPECT_DOUBLE_EQ(value_of(after, name), value_of(before, name)) << name;
  EXPECT_DOUBLE_EQ(value_of(after, "total"), 0.6 * 0.6 + 0.4 * 0.3);
  EXPECT_EQ(evaluation::kBioConservationMetrics.size(), 5u);
  EXPECT_EQ(evaluation::kBatchCorrectionMetrics.size(), 5u);
}

// Scaling keeps the extra metric (scaled, beside the others) but the aggregates still use the ten.
TEST(ScibAggregates, MinMaxScalingScalesEveryScibGroupMetricAndAggregatesByName) {
  const std::vector<std::vector<MetricRecord>> runs = {
      {metric("clisi", 0.2, MetricGroup::bio), metric("ilisi", 0.5, MetricGroup::batch),
       metric("kmeans_nmi", 0.1, MetricGroup::bio),
       metric("macro_f1", 0.7, MetricGroup::annotation)},
      {metric("clisi", 0.6, MetricGroup::bio), metric("ilisi", 0.5, MetricGroup::batch),
       metric("kmeans_nmi", 0.9, MetricGroup::bio),
       metric("macro_f1", 0.9, MetricGroup::annotation)}};
  const auto scaled = evaluation::min_max_scaled(runs);
  ASSERT_EQ(scaled.size(), 2u);
  ASSERT_EQ(scaled[1].size(), 6u) << "three scaled metrics and three aggregates; macro_f1 left out";
  EXPECT_DOUBLE_EQ(scaled[0][0].value, 0.0);
  EXPECT_DOUBLE_EQ(scaled[1][0].value, 1.0);
  EXPECT_DOUBLE_EQ(scaled[1][1].value, 0.0) << "a constant metric scales to 0";
  EXPECT_DOUBLE_EQ(scaled[1][2].value, 1.0);
  EXPECT_DOUBLE_EQ(value_of(scaled[1], "bio_conservation"), 1.0) << "kmeans_nmi is not averaged in";
  EXPECT_DOUBLE_EQ(value_of(scaled[0], "bio_conservation"), 0.0);
}

// On a reference case with all seven metrics that need no clustering, the aggregates are those of
// the same seven reference values (the reference's own aggregates include kBET and Leiden, not run
// here).
TEST(ScibAggregates, MatchTheReferenceValuesOfTheSameMetrics) {
  const std::string dir = test::repo_file("tests/data/reference/");
  CellData data = test::load_h5ad(dir + "kang_ctrl_stim.h5ad");
  torch::Tensor emb = test::read_obsm(dir + "kang_ctrl_stim.h5ad", "X_batchcentered");
  torch::Tensor pre = test::read_obsm(dir + "kang_ctrl_stim.h5ad", "X_pca");
  host::HostServices services;
  host::NeighborCache cache(emb);
  services.serve_neighbors(&cache);
  std::vector<MetricRecord> all;
  for (const char* name : {"isolated_labels", "silhouette_label", "clisi", "silhouette_batch",
                           "ilisi", "graph_connectivity", "pcr_comparison"}) {
    const host::LoadedPlugin& p = test::plugins().get(name, SCSSL_KIND_EVALUATOR);
    host::Evaluator e(p, p.default_params(), services);
    for (auto& v : e.evaluate(data, emb, pre, {})) all.push_back(host::metric_record(v));
  }
  // Reference values (kang_ctrl_stim.h5ad.scib.json, X_batchcentered) of the same metrics.
  const auto reference = nlohmann::json::parse(test::read_text(
      dir + "kang_ctrl_stim.h5ad.scib.json"))["embeddings"]["X_batchcentered"]["metrics"];
  auto value = [&](const char* key) { return reference[key].get<double>(); };
  const double bio = (value("isolated_labels") + value("silhouette_label") + value("clisi")) / 3;
  const double batch = (value("silhouette_batch") + value("ilisi") + value("graph_connectivity") +
                        value("pcr_comparison")) /
                       4;
  const auto agg = evaluation::scib_aggregates(all);
  EXPECT_NEAR(value_of(agg, "bio_conservation"), bio, 1e-4);
  EXPECT_NEAR(value_of(agg, "batch_correction"), batch, 1e-4);
  EXPECT_NEAR(value_of(agg, "total"), 0.6 * bio + 0.4 * batch, 1e-4);
}
