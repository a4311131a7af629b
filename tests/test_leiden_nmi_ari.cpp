// The leiden_nmi_ari evaluator: against the reference cases (tests/data/reference/*.scib.json;
// within 0.05, since igraph's C random stream is not Python's) and on hand-made clusterings.
#include <nlohmann/json.hpp>

#include <chrono>
#include <iostream>
#include <limits>

#include "support.hpp"

using namespace scssl;

namespace {

struct Scores {
  double nmi;
  double ari;
  double seconds;  // the evaluator alone, the neighbour graph already built
};

const host::LoadedPlugin& plugin() {
  return test::plugins().get("leiden_nmi_ari", SCSSL_KIND_EVALUATOR);
}

Scores score(const CellData& data, const torch::Tensor& embedding,
             const ParamSet& params = plugin().default_params()) {
  host::HostServices services;
  host::NeighborCache cache(embedding);
  services.serve_neighbors(&cache);
  cache.connectivities(15);
  host::Evaluator e(plugin(), params, services);
  const auto start = std::chrono::steady_clock::now();
  std::map<std::string, double> got;
  for (const auto& m : e.evaluate(data, embedding, {}, {})) got[m.name] = m.value;
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  return {got.at("leiden_nmi"), got.at("leiden_ari"), took.count()};
}

void check_case(const std::string& h5ad, const std::string& json_path,
                double ari_tolerance = 0.05) {
  CellData data = test::load_h5ad(h5ad);
  auto expected = nlohmann::json::parse(test::read_text(json_path))["embeddings"];
  for (const char* key : {"X_pca", "X_batchcentered"}) {
    const Scores got = score(data, test::read_obsm(h5ad, key));
    const auto& reference = expected[key];
    const double nmi = reference["metrics"]["leiden_nmi"].get<double>();
    const double ari = reference["metrics"]["leiden_ari"].get<double>();
    std::cout << h5ad.substr(h5ad.rfind('/') + 1) << " " << key << ": NMI " << got.nmi << " (ref "
              << nmi << "), ARI " << got.ari << " (ref " << ari << "), best resolution in ref "
              << reference["details"]["leiden"]["best_resolution"] << ", " << data.n_cells()
              << " cells, Leiden " << got.seconds << " s\n";
    EXPECT_NEAR(got.nmi, nmi, 0.05) << "leiden_nmi on " << key;
    EXPECT_NEAR(got.ari, ari, ari_tolerance) << "leiden_ari on " << key;
  }
}

// Cells with the given cell types (codes 0, 1, ...).
CellData typed_cells(const std::vector<int32_t>& types) {
  CellData data;
  int32_t type_count = 0;
  for (size_t i = 0; i < types.size(); ++i) {
    data.cell_names.push_back("c" + std::to_string(i));
    type_count = std::max(type_count, types[i] + 1);
  }
  std::vector<std::string> names;
  for (int32_t t = 0; t < type_count; ++t) names.push_back("t" + std::to_string(t));
  data.columns = {{"cell_type", true, torch::tensor(types, torch::kInt32), names, {}}};
  data.label_key = "cell_type";
  return data;
}

// `groups` Gaussian blobs of `per_group` cells in 2-D, 100 units apart: no kNN edge between them.
torch::Tensor separated_blobs(int64_t groups, int64_t per_group) {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(7);
  torch::Tensor x = torch::randn({groups * per_group, 2}, rng);
  for (int64_t g = 0; g < groups; ++g) x.slice(0, g * per_group, (g + 1) * per_group) += 100.0 * g;
  return x;
}

std::vector<int32_t> types_by_group(int64_t groups, int64_t per_group) {
  std::vector<int32_t> t;
  for (int64_t i = 0; i < groups * per_group; ++i) t.push_back(static_cast<int32_t>(i / per_group));
  return t;
}

}  // namespace

TEST(LeidenNmiAri, KangCtrlStimMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_case(dir + "kang_ctrl_stim.h5ad", dir + "kang_ctrl_stim.h5ad.scib.json");
}

TEST(LeidenNmiAri, TrianaMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_case(dir + "triana_rna_adt.h5ad", dir + "triana_rna_adt.h5ad.scib.json");
}

TEST(LeidenNmiAri, Kang8DonorsMatchesReference) {
  const std::string h5ad = test::shared_file("reference/kang_8donors.h5ad");
  if (h5ad.empty()) GTEST_SKIP() << "../shared/reference/kang_8donors.h5ad not present, skipped";
  // On X_batchcentered the reference's seed-42 draw of Python's random stream is an unlucky one:
  // python-igraph gives NMI 0.761 / ARI 0.760 with seed 42 but 0.784-0.797 / 0.796-0.816 with
  // seeds 0-7, and this evaluator 0.797 / 0.817. ARI moves more than NMI between draws.
  check_case(h5ad, test::repo_file("tests/data/reference/kang_8donors.h5ad.scib.json"), 0.08);
}

TEST(LeidenNmiAri, SeparatedClustersMatchingTypesScoreOne) {
  const Scores got = score(typed_cells(types_by_group(3, 40)), separated_blobs(3, 40));
  EXPECT_DOUBLE_EQ(got.nmi, 1.0);
  EXPECT_DOUBLE_EQ(got.ari, 1.0);
}

TEST(LeidenNmiAri, TypesUnrelatedToClustersScoreNearZero) {
  std::vector<int32_t> types;
  auto rng = at::make_generator<at::CPUGeneratorImpl>(11);
  torch::Tensor drawn = torch::randint(0, 2, {300}, rng, torch::kInt32);
  for (int64_t i = 0; i < 300; ++i) types.push_back(drawn[i].item<int32_t>());
  const Scores got = score(typed_cells(types), separated_blobs(3, 100));
  EXPECT_LT(got.nmi, 0.05);
  EXPECT_NEAR(got.ari, 0.0, 0.05);
}

// Leiden at resolution 0.2 finds the three blobs exactly, so the scores are those of a known
// contingency table (values from scikit-learn 1.2); cells without a type are left out.
TEST(LeidenNmiAri, ScoresMatchSklearnOnKnownClusters) {
  std::vector<int32_t> types;
  types.insert(types.end(), 5, -1);
  types.insert(types.end(), 25, 0);
  types.insert(types.end(), 50, 1);
  types.insert(types.end(), 20, 2);
  types.insert(types.end(), 20, 0);
  ParamSet params = plugin().default_params();
  params.set("resolutions", FloatList{0.2});
  const Scores got = score(typed_cells(types), separated_blobs(3, 40), params);
  EXPECT_NEAR(got.nmi, 0.5730163526353569, 1e-12);
  EXPECT_NEAR(got.ari, 0.47963534397766994, 1e-12);
}

// One cell type and several clusters: sklearn gives NMI 0 (one side constant) and ARI 0.
TEST(LeidenNmiAri, SingleTypeFollowsSklearnConventions) {
  const Scores got = score(typed_cells(std::vector<int32_t>(120, 0)), separated_blobs(3, 40));
  EXPECT_EQ(got.nmi, 0.0);
  EXPECT_NEAR(got.ari, 0.0, 1e-12);
}

TEST(LeidenNmiAri, SeededRunsAreIdentical) {
  const std::string h5ad = test::repo_file("tests/data/reference/triana_rna_adt.h5ad");
  CellData data = test::load_h5ad(h5ad);
  const torch::Tensor x = test::read_obsm(h5ad, "X_pca");
  const Scores first = score(data, x), second = score(data, x);
  EXPECT_EQ(first.nmi, second.nmi);
  EXPECT_EQ(first.ari, second.ari);
}

// The schema refuses bad resolutions when they are set, before the plugin exists: out of bounds,
// empty, or infinite (a bounded number must be finite).
TEST(LeidenNmiAri, RejectsBadResolutions) {
  for (const FloatList& bad : {FloatList{0.5, 0.0}, FloatList{-1}, FloatList{},
                               FloatList{0.5, std::numeric_limits<double>::infinity()}}) {
    ParamSet params = plugin().default_params();
    try {
      params.set("resolutions", bad);
      ADD_FAILURE() << "accepted resolutions " << format_param(bad);
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(
                    "parameter 'resolutions' of evaluator plugin 'leiden_nmi_ari' must be"),
                std::string::npos)
          << e.what();
    }
  }
  ParamSet params = plugin().default_params();
  EXPECT_THROW(params.set("resolutions", StringList{"0.5"}), InvalidArgument);  // not numbers
}
