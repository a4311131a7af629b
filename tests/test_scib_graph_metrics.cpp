// The neighbour-graph scIB metrics (cLISI, iLISI, graph connectivity) through the host's shared
// neighbour lists, against the reference cases (tests/data/reference/*.scib.json, within 1e-4).
#include <nlohmann/json.hpp>

#include "support.hpp"

using namespace scssl;

namespace {

std::map<std::string, double> score(const CellData& data, const torch::Tensor& embedding,
                                    const std::vector<std::string>& evaluators,
                                    int64_t* searched_k = nullptr) {
  host::HostServices services;
  host::NeighborCache cache(embedding);
  services.serve_neighbors(&cache);
  std::map<std::string, double> out;
  for (const auto& name : evaluators) {
    const host::LoadedPlugin& p = test::plugins().get(name, SCSSL_KIND_EVALUATOR);
    host::Evaluator e(p, p.default_params(), services);
    for (const auto& m : e.evaluate(data, embedding, {}, {})) out[m.name] = m.value;
  }
  if (searched_k) *searched_k = cache.searched_k();
  return out;
}

void check_case(const std::string& h5ad, const std::string& json_path) {
  CellData data = test::load_h5ad(h5ad);
  auto expected = nlohmann::json::parse(test::read_text(json_path))["embeddings"];
  for (const char* key : {"X_pca", "X_batchcentered"}) {
    int64_t k = 0;
    auto got =
        score(data, test::read_obsm(h5ad, key), {"clisi", "ilisi", "graph_connectivity"}, &k);
    EXPECT_EQ(k, 90) << "one search at the largest k serves every metric";
    for (const char* metric : {"clisi", "ilisi", "graph_connectivity"})
      EXPECT_NEAR(got.at(metric), expected[key]["metrics"][metric].get<double>(), 1e-4)
          << metric << " on " << key;
  }
}

}  // namespace

TEST(ScibGraphMetrics, KangCtrlStimMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_case(dir + "kang_ctrl_stim.h5ad", dir + "kang_ctrl_stim.h5ad.scib.json");
}

TEST(ScibGraphMetrics, TrianaMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_case(dir + "triana_rna_adt.h5ad", dir + "triana_rna_adt.h5ad.scib.json");
}

TEST(ScibGraphMetrics, Kang8DonorsMatchesReference) {
  const std::string h5ad = test::shared_file("reference/kang_8donors.h5ad");
  if (h5ad.empty()) GTEST_SKIP() << "../shared/reference/kang_8donors.h5ad not present, skipped";
  check_case(h5ad, test::repo_file("tests/data/reference/kang_8donors.h5ad.scib.json"));
}

// Two well separated cell types, each spread evenly over two batches.
TEST(ScibGraphMetrics, SeparatedTypesMixedBatches) {
  CellData data;
  std::vector<int32_t> type, batch;
  std::vector<float> x;
  for (int i = 0; i < 200; ++i) {
    data.cell_names.push_back("c" + std::to_string(i));
    type.push_back(i < 100 ? 0 : 1);
    batch.push_back(i % 2);
    x.push_back((i < 100 ? 0.f : 1000.f) + static_cast<float>(i % 100));
  }
  data.columns = {{"batch", true, torch::tensor(batch, torch::kInt32), {"b0", "b1"}, {}},
                  {"cell_type", true, torch::tensor(type, torch::kInt32), {"A", "B"}, {}}};
  data.batch_key = "batch";
  data.label_key = "cell_type";
  auto got = score(data, torch::tensor(x).view({200, 1}), {"clisi", "ilisi", "graph_connectivity"});
  EXPECT_NEAR(got["clisi"], 1.0, 1e-6);  // every neighbourhood is one type
  EXPECT_GT(got["ilisi"], 0.9);          // and both batches alike
  EXPECT_DOUBLE_EQ(got["graph_connectivity"], 1.0);
  // A single batch: iLISI is undefined (B - 1 = 0), not a crash.
  data.columns[0].codes = torch::zeros({200}, torch::kInt32);
  EXPECT_TRUE(std::isnan(score(data, torch::tensor(x).view({200, 1}), {"ilisi"})["ilisi"]));
}

// The neighbour backend: forced by the config, by a size threshold, or, by default above
// kAlwaysExactCells, by the predicted times of both backends timed on a sample.
TEST(NeighbourBackend, ConfigAndSizeThresholdDecideWithoutMeasuring) {
  if (!host::hnsw_available()) GTEST_SKIP() << "this build has no hnswlib";
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({300, 4});
  host::NeighborCache forced(x, {"hnsw", 0});
  forced.get(10);
  EXPECT_EQ(forced.backend(), "hnsw");
  EXPECT_EQ(forced.chosen_by(), "config");
  host::NeighborCache small(x, {"auto", 299});
  small.get(10);
  EXPECT_EQ(small.backend(), "hnsw");
  EXPECT_EQ(small.chosen_by(), "size");
  host::NeighborCache fits(x, {"auto", 300});
  fits.get(10);
  EXPECT_EQ(fits.backend(), "exact");
  EXPECT_EQ(fits.chosen_by(), "size");
  EXPECT_TRUE(std::isnan(fits.prediction().exact_seconds));
}

// Share of the exact lists' neighbours (self left out) that `found` has too.
double recall(const Neighbors& found, const Neighbors& exact) {
  const int64_t n = exact.indices.size(0), k = exact.indices.size(1);
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto row = found.indices[i];
    for (int64_t c = 1; c < k; ++c) hits += (row == exact.indices[i][c]).any().item<bool>();
  }
  return static_cast<double>(hits) / static_cast<double>(n * (k - 1));
}

// Both ways of building the index find (nearly) the exact lists, self first; the sequential
// build gives one result per input.
TEST(NeighbourBackend, HnswBuiltInParallelOrInSequenceFindsTheExactNeighbours) {
  if (!host::hnsw_available()) GTEST_SKIP() << "this build has no hnswlib";
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({3000, 8});
  const Neighbors exact = knn_self(x, 15);
  for (auto build : {host::HnswBuild::Parallel, host::HnswBuild::Sequential}) {
    const Neighbors found = host::knn_self_hnsw(x, 15, build);
    ASSERT_EQ(found.indices.sizes(), exact.indices.sizes());
    EXPECT_TRUE(torch::equal(found.indices.select(1, 0), torch::arange(3000)));
    EXPECT_GT(recall(found, exact), 0.99);
  }
  EXPECT_TRUE(torch::equal(host::knn_self_hnsw(x, 15, host::HnswBuild::Sequential).indices,
                           host::knn_self_hnsw(x, 15, host::HnswBuild::Sequential).indices));
}

TEST(NeighbourBackend, AutoPicksTheBackendPredictedToFinishFirst) {
  if (!host::hnsw_available()) GTEST_SKIP() << "this build has no hnswlib";
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({host::kAlwaysExactCells + 1, 3});
  host::NeighborCache cache(x);
  cache.get(15);
  EXPECT_EQ(cache.chosen_by(), "measured");
  const host::BackendPrediction& p = cache.prediction();
  ASSERT_TRUE(std::isfinite(p.exact_seconds) && std::isfinite(p.hnsw_seconds));
  EXPECT_GT(p.exact_seconds, 0.0);
  EXPECT_GT(p.hnsw_seconds, 0.0);
  EXPECT_EQ(cache.backend(), p.exact_seconds <= p.hnsw_seconds ? "exact" : "hnsw");
  EXPECT_EQ(cache.searched_k(), 90);
}
