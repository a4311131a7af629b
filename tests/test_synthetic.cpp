// The synthetic dataset plugin, loaded through the registry like any other data set.
#include <cmath>
#include <map>

#include "support.hpp"

using namespace scssl;

namespace {

CellData generate(const std::map<std::string, ParamValue>& overrides = {}) {
  host::HostServices services;
  services.on_log = [](scssl_log_level, const std::string&) {};
  const host::LoadedPlugin& p = test::plugins().get("synthetic", SCSSL_KIND_DATASET);
  ParamSet params = p.default_params();
  for (const auto& [k, v] : overrides) params.set(k, v);
  return host::load_dataset(p, params, services);
}

std::vector<int32_t> codes_of(const Column& c) {
  return std::vector<int32_t>(c.codes.data_ptr<int32_t>(),
                              c.codes.data_ptr<int32_t>() + c.codes.size(0));
}

// Per-gene means over the cells of one (type, batch) group.
torch::Tensor group_means(const CellData& d, int32_t type, int32_t batch) {
  std::vector<int64_t> ids;
  std::vector<int32_t> t = codes_of(*d.labels()), b = codes_of(*d.batches());
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i] == type && b[i] == batch) ids.push_back(static_cast<int64_t>(i));
  return d.modalities[0]
      .X.rows_dense(torch::tensor(ids, torch::kInt64))
      .to(torch::kFloat64)
      .mean(0);
}

// Mean |log ratio| of two mean profiles over genes expressed in both.
double mean_abs_log_ratio(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor keep = (a > 2) & (b > 2);
  return (a.masked_select(keep).log() - b.masked_select(keep).log()).abs().mean().item<double>();
}

}  // namespace

TEST(Synthetic, DefaultsDescribeAUnimodalDataSet) {
  CellData d = generate();
  ASSERT_EQ(d.n_cells(), 2000);
  EXPECT_EQ(d.cell_names.front(), "cell_0");
  EXPECT_EQ(d.cell_names.back(), "cell_1999");
  ASSERT_EQ(d.modalities.size(), 1u);
  const Modality& rna = d.modalities[0];
  EXPECT_EQ(rna.name, "RNA");
  ASSERT_EQ(rna.features.size(), 2000u);
  EXPECT_EQ(rna.features.front(), "gene_0");
  EXPECT_EQ(rna.features.back(), "gene_1999");
  ASSERT_TRUE(rna.X.is_csr());
  EXPECT_EQ(rna.X.rows, 2000);
  EXPECT_EQ(rna.X.cols, 2000);
  EXPECT_TRUE(rna.counts.empty());
  // Counts: positive integers, sparse but not empty.
  torch::Tensor v = rna.X.values;
  EXPECT_TRUE((v > 0).all().item<bool>());
  EXPECT_TRUE(torch::equal(v, v.round()));
  const double density = static_cast<double>(rna.X.nnz()) / (2000.0 * 2000.0);
  EXPECT_GT(density, 0.05);
  EXPECT_LT(density, 0.8);

  EXPECT_EQ(d.batch_key, "batch");
  EXPECT_EQ(d.label_key, "cell_type");
  ASSERT_NE(d.batches(), nullptr);
  ASSERT_NE(d.labels(), nullptr);
  EXPECT_EQ(d.batches()->categories, (std::vector<std::string>{"batch_0", "batch_1", "batch_2"}));
  EXPECT_EQ(d.labels()->categories,
            (std::vector<std::string>{"type_0", "type_1", "type_2", "type_3", "type_4"}));
  // Every type and batch is used, in roughly equal shares.
  torch::Tensor type_counts = torch::bincount(d.labels()->codes.to(torch::kInt64));
  torch::Tensor batch_counts = torch::bincount(d.batches()->codes.to(torch::kInt64));
  ASSERT_EQ(type_counts.size(0), 5);
  ASSERT_EQ(batch_counts.size(0), 3);
  EXPECT_GT(type_counts.min().item<int64_t>(), 300);
  EXPECT_GT(batch_counts.min().item<int64_t>(), 550);
}

TEST(Synthetic, OneSeedGivesOneDataSet) {
  // Several blocks of cells (they are drawn in parallel) and both modalities.
  const std::map<std::string, ParamValue> p = {{"n_cells", int64_t{2500}},
                                               {"n_genes", int64_t{200}},
                                               {"n_proteins", int64_t{10}},
                                               {"seed", int64_t{42}}};
  CellData a = generate(p), b = generate(p);
  for (size_t m = 0; m < 2; ++m) {
    EXPECT_TRUE(torch::equal(a.modalities[m].X.indptr, b.modalities[m].X.indptr));
    EXPECT_TRUE(torch::equal(a.modalities[m].X.indices, b.modalities[m].X.indices));
    EXPECT_TRUE(torch::equal(a.modalities[m].X.values, b.modalities[m].X.values));
  }
  EXPECT_TRUE(torch::equal(a.labels()->codes, b.labels()->codes));
  EXPECT_TRUE(torch::equal(a.batches()->codes, b.batches()->codes));

  auto other_seed = p;
  other_seed["seed"] = int64_t{43};
  CellData c = generate(other_seed);
  EXPECT_FALSE(torch::equal(a.labels()->codes, c.labels()->codes));
  EXPECT_FALSE(a.modalities[0].X.nnz() == c.modalities[0].X.nnz() &&
               torch::equal(a.modalities[0].X.values, c.modalities[0].X.values));
}

TEST(Synthetic, ProteinsAddAnAdtModalityWithoutChangingTheRna) {
  const std::map<std::string, ParamValue> base = {{"n_cells", int64_t{500}},
                                                  {"n_genes", int64_t{300}}};
  auto with_proteins = base;
  with_proteins["n_proteins"] = int64_t{30};
  CellData rna_only = generate(base), both = generate(with_proteins);
  ASSERT_EQ(both.modalities.size(), 2u);
  EXPECT_EQ(both.modalities[1].name, "ADT");
  ASSERT_EQ(both.modalities[1].features.size(), 30u);
  EXPECT_EQ(both.modalities[1].features.front(), "protein_0");
  EXPECT_EQ(both.modalities[1].features.back(), "protein_29");
  EXPECT_EQ(both.modalities[1].X.rows, 500);
  // Protein panels are dense.
  EXPECT_GT(both.modalities[1].X.nnz(), 500 * 30 / 2);
  EXPECT_TRUE(torch::equal(rna_only.modalities[0].X.values, both.modalities[0].X.values));
  EXPECT_TRUE(torch::equal(rna_only.labels()->codes, both.labels()->codes));
}

TEST(Synthetic, LibrarySizeAndDispersionFollowTheParameters) {
  auto run = [](double theta) {
    return generate({{"n_cells", int64_t{3000}},
                     {"n_genes", int64_t{400}},
                     {"n_cell_types", int64_t{1}},
                     {"n_batches", int64_t{1}},
                     {"mean_library_size", 2000.0},
                     {"theta", theta}});
  };
  CellData poisson_like = run(1000.0), overdispersed = run(0.5);
  for (const CellData* d : {&poisson_like, &overdispersed}) {
    const double mean_library =
        d->modalities[0].X.values.sum(torch::kFloat64).item<double>() / 3000.0;
    EXPECT_NEAR(mean_library, 2000.0, 60.0);
  }
  // Variance / mean of genes with a moderate mean: about 1 + 0.1 mu (library spread only) for a
  // huge theta, about 1 + mu / theta for a small one.
  auto median_ratio = [](const CellData& d) {
    torch::Tensor x = d.modalities[0].X.slice_dense(0, d.n_cells()).to(torch::kFloat64);
    torch::Tensor mean = x.mean(0), var = x.var(0);
    torch::Tensor keep = (mean > 0.3) & (mean < 3);
    return (var.masked_select(keep) / mean.masked_select(keep)).median().item<double>();
  };
  EXPECT_LT(median_ratio(poisson_like), 1.3);
  EXPECT_GT(median_ratio(overdispersed), 1.8);
}

TEST(Synthetic, BatchAndCellTypeEffectsFollowTheParameters) {
  auto shift = [](double batch_effect, int32_t type_a, int32_t batch_a, int32_t type_b,
                  int32_t batch_b) {
    CellData d = generate({{"n_cells", int64_t{4000}},
                           {"n_genes", int64_t{500}},
                           {"n_cell_types", int64_t{2}},
                           {"n_batches", int64_t{2}},
                           {"batch_effect", batch_effect},
                           {"de_fraction", 0.3},
                           {"de_effect", 1.5}});
    return mean_abs_log_ratio(group_means(d, type_a, batch_a), group_means(d, type_b, batch_b));
  };
  // Same type, two batches.
  const double none = shift(0.0, 0, 0, 0, 1), strong = shift(1.5, 0, 0, 0, 1);
  EXPECT_LT(none, 0.15);
  EXPECT_GT(strong, 0.8);
  // Same batch, two types: only the DE genes differ, so the mean shift is clearly above noise.
  EXPECT_GT(shift(0.0, 0, 0, 1, 0), 2 * none);
}

TEST(Synthetic, InvalidParametersAreRefused) {
  auto message = [](const std::map<std::string, ParamValue>& p) -> std::string {
    try {
      generate(p);
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), SCSSL_ERR_INVALID_ARGUMENT) << e.what();
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message({{"n_cells", int64_t{0}}}).find("'n_cells'"), std::string::npos);
  EXPECT_NE(message({{"n_genes", int64_t{-5}}}).find("'n_genes'"), std::string::npos);
  EXPECT_NE(message({{"theta", 0.0}}).find("'theta'"), std::string::npos);
  EXPECT_NE(message({{"de_fraction", 1.5}}).find("'de_fraction'"), std::string::npos);
  EXPECT_NE(message({{"mean_library_size", -1.0}}).find("'mean_library_size'"), std::string::npos);
  EXPECT_NE(message({{"n_proteins", int64_t{-1}}}).find("'n_proteins'"), std::string::npos);
  // The host checks the schema's bounds, naming the plugin.
  EXPECT_NE(message({{"theta", 0.0}}).find("of dataset plugin 'synthetic' must be in (0, "),
            std::string::npos)
      << message({{"theta", 0.0}});
}
