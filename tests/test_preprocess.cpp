// Preprocessing against values worked out by hand (the arithmetic is in the comments).
#include <gtest/gtest.h>

#include <cmath>

#include "scssl/preprocess.hpp"

using namespace scssl;

namespace {

Matrix csr_from_dense(const std::vector<std::vector<float>>& rows) {
  std::vector<int64_t> indptr{0};
  std::vector<int32_t> indices;
  std::vector<float> values;
  for (const auto& r : rows) {
    for (size_t j = 0; j < r.size(); ++j)
      if (r[j] != 0) {
        indices.push_back(static_cast<int32_t>(j));
        values.push_back(r[j]);
      }
    indptr.push_back(static_cast<int64_t>(values.size()));
  }
  return Matrix::csr(torch::tensor(indptr, torch::kInt64), torch::tensor(indices, torch::kInt32),
                     torch::tensor(values, torch::kFloat32), static_cast<int64_t>(rows.size()),
                     static_cast<int64_t>(rows.at(0).size()), "test matrix");
}

// Log-normalised rows whose expm1 is the given matrix (what HVG selection works on).
Matrix lognorm_of(const std::vector<std::vector<float>>& expm1_rows) {
  auto rows = expm1_rows;
  for (auto& r : rows)
    for (auto& v : r) v = std::log1p(v);
  return csr_from_dense(rows);
}

double sample_std(std::vector<double> v) {
  double m = 0;
  for (double x : v) m += x / v.size();
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / (v.size() - 1));
}

}  // namespace

TEST(NormalizeTotal, RowsSumToTargetAndEmptyRowsStayEmpty) {
  Matrix counts = csr_from_dense({{1, 3, 0, 6}, {0, 0, 0, 0}, {5, 0, 5, 0}});
  Matrix n = normalize_total(counts, 1e4, "test");
  torch::Tensor d = n.slice_dense(0, 3);
  EXPECT_TRUE(torch::allclose(d[0], torch::tensor({1000.f, 3000.f, 0.f, 6000.f})));
  EXPECT_EQ(d[1].abs().sum().item<float>(), 0.f);
  EXPECT_TRUE(torch::allclose(d[2], torch::tensor({5000.f, 0.f, 5000.f, 0.f})));
}

TEST(NormalizeTotal, NegativeCountIsRefusedNamingTheCell) {
  Matrix counts = csr_from_dense({{1, 2}, {3, -1}});
  try {
    normalize_total(counts, 1e4, "modality 'RNA'");
    FAIL();
  } catch (const BadData& e) {
    EXPECT_NE(std::string(e.what()).find("modality 'RNA' has a negative or NaN count"),
              std::string::npos);
    EXPECT_NE(std::string(e.what()).find("in cell 1"), std::string::npos) << e.what();
  }
}

TEST(Log1p, IsNaturalLogOfOnePlusX) {
  Matrix m = log1p(csr_from_dense({{0, std::exp(2.f) - 1}}));
  EXPECT_NEAR(m.slice_dense(0, 1)[0][1].item<float>(), 2.f, 1e-5);
}

// One batch, four cells. Genes 0-3 share a mean of 2 for expm1(x), so they fall into the lowest
// of the 20 equal-width mean bins; gene4 (mean 1000) is alone in the top bin.
//   gene0 = 2,2,2,2 -> variance 0 -> dispersion NaN
//   gene1 = 1,3,1,3 -> var 4/3 -> log(2/3);  gene2 = 0,4,0,4 -> var 16/3 -> log(8/3)
//   gene3 = 0,0,0,8 -> var (64/4 - 4) * 4/3 = 16 -> log(8)
//   gene4 = 0,2000,0,2000: alone in its bin, which scanpy scores as z = 1
// Genes 1-3: z = (d - mean of the three) / their sample std. Top 2: gene4 (1), gene3 (0.959).
TEST(HighlyVariableGenes, SeuratZScoresWithinABin) {
  Matrix x = lognorm_of({{2, 1, 0, 0, 0}, {2, 3, 4, 0, 2000}, {2, 1, 0, 0, 0}, {2, 3, 4, 8, 2000}});
  HvgResult h = highly_variable_genes(x, 2, torch::Tensor());
  const std::vector<double> d = {std::log(2.0 / 3), std::log(8.0 / 3), std::log(8.0)};
  const double mean = (d[0] + d[1] + d[2]) / 3, sd = sample_std(d);
  EXPECT_TRUE(std::isnan(h.dispersions_norm[0]));
  for (int g = 1; g < 4; ++g) {
    EXPECT_NEAR(h.dispersions[g], d[g - 1], 1e-5);
    EXPECT_NEAR(h.dispersions_norm[g], (d[g - 1] - mean) / sd, 1e-5);
    EXPECT_NEAR(h.means[g], std::log1p(2.0), 1e-5);
  }
  EXPECT_NEAR(h.dispersions_norm[4], 1.0, 1e-6);
  EXPECT_EQ(h.selected, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(highly_variable_genes(x, 3, torch::Tensor()).selected, (std::vector<int64_t>{2, 3, 4}));
}

// Batch A = the four cells above; batch B: gene0 = 1,3,1,3, gene1 = 2,2,2,2 (NaN dispersion),
// gene2 = 0,4,0,4, gene3 never expressed (dropped in B: counts as z = 0, not variable), gene4 as
// in A (z = 1). Top 3 per batch:
//   A: finite z of genes 1-4 = zA1 < zA2 < zA3 < 1; cut-off zA2 -> genes 2, 3, 4.
//   B: finite z = -1/sqrt(2) (gene0), +1/sqrt(2) (gene2), 1 (gene4); cut-off -1/sqrt(2), and
//      scanpy's nan_to_num turns gene1's NaN into 0 >= cut-off -> genes 0, 1, 2, 4.
// Batches: [1, 1, 2, 1, 2]. Ranking: gene4 (2, z 1), gene2 (2, (zA2 + r)/2), then by mean z among
// the genes marked once: gene3 (zA3 / 2) before gene0 (-r) and gene1 (zA1).
TEST(HighlyVariableGenes, BatchAwareRanksByBatchCountThenMeanZ) {
  Matrix x = lognorm_of({{2, 1, 0, 0, 0},
                         {2, 3, 4, 0, 2000},
                         {2, 1, 0, 0, 0},
                         {2, 3, 4, 8, 2000},
                         {1, 2, 0, 0, 0},
                         {3, 2, 4, 0, 2000},
                         {1, 2, 0, 0, 0},
                         {3, 2, 4, 0, 2000}});
  torch::Tensor batch = torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kInt32);
  HvgResult h = highly_variable_genes(x, 3, batch);
  EXPECT_EQ(h.n_batches, (std::vector<int64_t>{1, 1, 2, 1, 2}));
  const std::vector<double> d = {std::log(2.0 / 3), std::log(8.0 / 3), std::log(8.0)};
  const double mean = (d[0] + d[1] + d[2]) / 3, sd = sample_std(d);
  const double zA1 = (d[0] - mean) / sd, zA2 = (d[1] - mean) / sd, zA3 = (d[2] - mean) / sd;
  const double r = 1 / std::sqrt(2.0);
  EXPECT_NEAR(h.dispersions_norm[0], -r, 1e-5);
  EXPECT_NEAR(h.dispersions_norm[1], zA1, 1e-5);
  EXPECT_NEAR(h.dispersions_norm[2], (zA2 + r) / 2, 1e-5);
  EXPECT_NEAR(h.dispersions_norm[3], zA3 / 2, 1e-5);
  EXPECT_NEAR(h.dispersions_norm[4], 1.0, 1e-6);
  EXPECT_EQ(h.selected, (std::vector<int64_t>{2, 3, 4}));
}

TEST(HighlyVariableGenes, AskingForAtLeastAllFeaturesKeepsAll) {
  Matrix x = lognorm_of({{1, 2, 3}, {3, 2, 1}});
  EXPECT_EQ(highly_variable_genes(x, 3, torch::Tensor()).selected, (std::vector<int64_t>{0, 1, 2}));
}

TEST(Scale, ZeroMeanUnitVarianceClipped) {
  Matrix x = csr_from_dense({{1, 0}, {2, 0}, {3, 0}, {100, 5}});
  Matrix s = scale(x, 1.0);
  ASSERT_EQ(s.format, Matrix::Format::Dense);
  EXPECT_LE(s.dense.max().item<float>(), 1.0f);
  EXPECT_GE(s.dense.min().item<float>(), -1.0f);
  Matrix unclipped = scale(x, 1e9);
  EXPECT_NEAR(unclipped.dense.mean(0)[0].item<float>(), 0.f, 1e-5);
  EXPECT_NEAR(unclipped.dense.std(0)[0].item<float>(), 1.f, 1e-5);
}

TEST(PreprocessModality, KeepsSelectedFeaturesAndTheirRawCounts) {
  Modality m{"RNA",
             {"g0", "g1", "g2", "g3", "g4"},
             csr_from_dense({{2, 1, 0, 0, 0}, {2, 3, 4, 0, 9}, {2, 1, 0, 0, 0}, {2, 3, 4, 8, 9}}),
             {}};
  PreprocessOptions o;
  o.normalize = false;
  o.log1p = false;  // the matrix is treated as already log-normalised
  o.n_top_genes = 2;
  // One batch through the batch-aware path, which keeps exactly n_top_genes.
  Column batch{"batch", true, torch::zeros({4}, torch::kInt32), {"b0"}, {}};
  preprocess_modality(m, o, &batch);
  EXPECT_EQ(m.features.size(), 2u);
  EXPECT_EQ(m.X.rows, 4);
  EXPECT_EQ(m.X.cols, 2);
  EXPECT_EQ(m.counts.cols, 2);
  EXPECT_TRUE(m.counts.slice_dense(0, 4).equal(m.X.slice_dense(0, 4)));
}

// A query-mapping run fits the feature selection and the scaling on the reference rows only
// (docs/evaluation.md, "Protocols"): whatever the held-out rows hold, the kept features and the
// reference rows' values are those of preprocessing the reference alone, and the held-out rows
// are transformed with the reference's statistics.
TEST(PreprocessModality, FitRowsAloneChooseTheFeaturesAndTheScaling) {
  const std::vector<std::vector<float>> reference = {
      {2, 1, 0, 0, 0}, {2, 3, 4, 0, 9}, {2, 1, 0, 1, 0}, {2, 3, 4, 1, 9}};
  PreprocessOptions o;
  o.normalize = false;
  o.log1p = false;
  o.n_top_genes = 2;
  o.scale = true;
  auto modality = [](std::vector<std::vector<float>> rows) {
    return Modality{"RNA", {"g0", "g1", "g2", "g3", "g4"}, csr_from_dense(rows), {}};
  };
  Modality alone = modality(reference);
  Column one_batch{"batch", true, torch::zeros({4}, torch::kInt32), {"ref", "query"}, {}};
  preprocess_modality(alone, o, &one_batch);

  for (const std::vector<float>& query_row :
       {std::vector<float>{0, 0, 0, 50, 0}, std::vector<float>{9, 0, 7, 0, 1}}) {
    std::vector<std::vector<float>> all = reference;
    all.push_back(query_row);
    all.push_back(query_row);
    Modality m = modality(all);
    Column batches{
        "batch", true, torch::tensor({0, 0, 0, 0, 1, 1}, torch::kInt32), {"ref", "query"}, {}};
    preprocess_modality(m, o, &batches, torch::arange(4, torch::kInt64));
    EXPECT_EQ(m.features, alone.features);
    EXPECT_TRUE(m.X.slice_dense(0, 4).allclose(alone.X.slice_dense(0, 4)));
    // Held-out rows: centred and scaled by the reference's mean and deviation.
    torch::Tensor kept_ref =
        torch::stack({torch::tensor(reference[0]), torch::tensor(reference[1]),
                      torch::tensor(reference[2]), torch::tensor(reference[3])});
    std::vector<int64_t> cols;
    for (const auto& f : m.features) cols.push_back(f[1] - '0');
    const torch::Tensor idx = torch::tensor(cols, torch::kInt64);
    kept_ref = kept_ref.index_select(1, idx).to(torch::kFloat64);
    const torch::Tensor expected =
        ((torch::tensor(query_row).index_select(0, idx).to(torch::kFloat64) - kept_ref.mean(0)) /
         kept_ref.std(0))
            .clamp(-10, 10)
            .to(torch::kFloat32);
    EXPECT_TRUE(m.X.slice_dense(4, 5)[0].allclose(expected, 1e-5, 1e-5))
        << m.X.slice_dense(4, 5) << expected;
  }
  // Without fit rows, the same held-out values change the choice: the test can tell.
  std::vector<std::vector<float>> all = reference;
  all.push_back({0, 0, 0, 50, 0});
  all.push_back({0, 0, 0, 60, 0});
  Modality pooled = modality(all);
  Column batches{
      "batch", true, torch::tensor({0, 0, 0, 0, 1, 1}, torch::kInt32), {"ref", "query"}, {}};
  preprocess_modality(pooled, o, &batches);
  EXPECT_NE(pooled.features, alone.features);
}
