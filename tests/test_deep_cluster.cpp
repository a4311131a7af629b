// deep_cluster (docs/method-spec.md §19): DEC's soft assignments and target distribution and the
// initial clusterings on hand-made cases, then training through scssl-host on the bundled Kang
// file (both stages' losses fall, one seed = one embedding, a resumed run equals an uninterrupted
// one, the stopping rule), the refusal of values that are not counts, and a saved model loaded
// again.
#include <cmath>

#include "../plugins/methods/deep_cluster/clustering.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::run_command;

namespace {

const char* kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";
const char* kConfig = "configs/methods/deep_cluster.toml";

std::string run(const std::string& sets) {
  static const std::string out = scssl::test::temp_dir("deep-cluster");
  return scssl::test::run_config(kConfig, out, sets);
}

const std::string kQuick =
    "--set evaluation.evaluators=[] --set evaluation.query_batches=[] --set run.threads=1";
// Tolerance 0: the clustering stage runs all its epochs.
const std::string kShort =
    kQuick + " --set method.pretrain_epochs=4 --set train.epochs=4 --set method.tolerance=0";

torch::Tensor rows(std::initializer_list<std::initializer_list<double>> values) {
  std::vector<torch::Tensor> r;
  for (const auto& v : values) r.push_back(torch::tensor(std::vector<double>(v), torch::kFloat64));
  return torch::stack(r);
}

}  // namespace

TEST(DeepClusterDec, SoftAssignmentsTargetAndKlOnAHandCase) {
  // alpha 1: q proportional to 1 / (1 + d^2); the cell at the first centre is at distance 1 from
  // the second, so q = (1, 1/2) / (3/2).
  const torch::Tensor q0 =
      deep_cluster::soft_assignments(rows({{0, 0}}), rows({{0, 0}, {1, 0}}), 1);
  EXPECT_TRUE(q0.allclose(rows({{2.0 / 3, 1.0 / 3}}))) << q0;
  // alpha 3: the kernel is (1 + d^2 / 3)^-2, (1, 9/16) at distances 0 and 1.
  const torch::Tensor q3 =
      deep_cluster::soft_assignments(rows({{0, 0}}), rows({{0, 0}, {1, 0}}), 3);
  EXPECT_TRUE(q3.allclose(rows({{16.0 / 25, 9.0 / 25}}))) << q3;

  // Cluster sizes f = (1.4, 0.6). Row 1: (0.25 / 1.4, 0.25 / 0.6) normalised = (0.3, 0.7). Row 2:
  // (0.81 / 1.4, 0.01 / 0.6) normalised = 0.486 / 0.5 = 0.972 and 0.028.
  const torch::Tensor q = rows({{0.5, 0.5}, {0.9, 0.1}});
  const torch::Tensor p = deep_cluster::target_distribution(q);
  EXPECT_TRUE(p.allclose(rows({{0.3, 0.7}, {0.972, 0.028}}))) << p;

  // KL(P || Q) averaged over cells, with 1e-6 added to q; 0 when P = Q (up to that 1e-6).
  const double expected =
      0.5 * (0.3 * std::log(0.3 / (0.5 + 1e-6)) + 0.7 * std::log(0.7 / (0.5 + 1e-6)) +
             0.972 * std::log(0.972 / (0.9 + 1e-6)) + 0.028 * std::log(0.028 / (0.1 + 1e-6)));
  EXPECT_NEAR(deep_cluster::kl_divergence(p, q).item<double>(), expected, 1e-9);
  EXPECT_NEAR(deep_cluster::kl_divergence(q, q).item<double>(), 0.0, 1e-5);
  // A zero in P adds nothing (0 log 0 = 0).
  EXPECT_TRUE(std::isfinite(
      deep_cluster::kl_divergence(rows({{1, 0}}), rows({{0.5, 0.5}})).item<double>()));
}

TEST(DeepClusterInit, LouvainSeparatesTwoLooselyJoinedCliques) {
  // Two 4-cliques joined by one light edge (3-4).
  std::vector<std::vector<std::pair<int64_t, double>>> lists(8);
  auto join = [&](int64_t a, int64_t b, double w) {
    lists[a].emplace_back(b, w);
    lists[b].emplace_back(a, w);
  };
  for (int64_t base : {0, 4})
    for (int64_t a = 0; a < 4; ++a)
      for (int64_t b = a + 1; b < 4; ++b) join(base + a, base + b, 1.0);
  join(3, 4, 0.1);
  scssl::SparseGraph g;
  std::vector<int64_t> indptr{0}, indices;
  std::vector<double> weights;
  for (auto& l : lists) {
    std::sort(l.begin(), l.end());
    for (const auto& [j, w] : l) indices.push_back(j), weights.push_back(w);
    indptr.push_back(static_cast<int64_t>(indices.size()));
  }
  g.indptr = torch::tensor(indptr, torch::kInt64);
  g.indices = torch::tensor(indices, torch::kInt64);
  g.weights = torch::tensor(weights, torch::kFloat64);
  for (uint64_t seed : {0, 1, 2}) {
    EXPECT_EQ(deep_cluster::louvain(g, 1.0, seed), (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1}))
        << "seed " << seed;
  }
  // A tiny resolution favours one community for everything.
  EXPECT_EQ(deep_cluster::louvain(g, 0.01, 0), std::vector<int64_t>(8, 0));
}

TEST(DeepClusterInit, KmeansAndLouvainFindTwoBlobs) {
  // Two far-apart blobs of 15 points. With 15 neighbours (the point counted) every point's
  // neighbours are its own blob, so the kNN graph is two cliques: Louvain keeps each whole.
  torch::manual_seed(0);
  const torch::Tensor a = torch::randn({15, 3}) * 0.1, b = torch::randn({15, 3}) * 0.1 + 5;
  const torch::Tensor z = torch::cat({a, b});
  for (int64_t n_clusters : {2, 0}) {
    const deep_cluster::Clustering c = deep_cluster::initial_clusters(z, n_clusters, 5, 15, 0.8, 7);
    ASSERT_EQ(c.centres.size(0), 2) << "n_clusters " << n_clusters;
    const torch::Tensor first = c.labels.slice(0, 0, 15), second = c.labels.slice(0, 15);
    EXPECT_TRUE((first == first[0]).all().item<bool>());
    EXPECT_TRUE((second == second[0]).all().item<bool>());
    EXPECT_NE(first[0].item<int64_t>(), second[0].item<int64_t>());
    // The centres are the blobs' means.
    EXPECT_TRUE(c.centres[first[0].item<int64_t>()].allclose(a.mean(0), 1e-4, 1e-5));
    EXPECT_TRUE(c.centres[second[0].item<int64_t>()].allclose(b.mean(0), 1e-4, 1e-5));
  }
}

TEST(DeepClusterInit, StandardisationUsesTheSampleDeviation) {
  // Column 0: values 1, 2, 3 (mean 2, sd 1 with ddof 1); column 1 is constant: sd 1 by rule.
  const torch::Tensor dense = torch::tensor({1.f, 5.f, 2.f, 5.f, 3.f, 5.f}).view({3, 2});
  for (const scssl::Matrix& x :
       {scssl::Matrix::from_dense(dense, "test"),
        scssl::Matrix::csr(torch::tensor({0, 2, 4, 6}, torch::kInt64),
                           torch::tensor({0, 1, 0, 1, 0, 1}, torch::kInt32), dense.flatten(), 3, 2,
                           "test")}) {
    const auto [mean, sd] = deep_cluster::feature_mean_sd(x);
    EXPECT_TRUE(mean.allclose(torch::tensor({2.f, 5.f})));
    EXPECT_TRUE(sd.allclose(torch::tensor({1.f, 1.f})));
  }
}

TEST(DeepClusterTraining, BothLossesFallAndOneSeedGivesOneEmbedding) {
  const std::string dir = run(kShort);
  for (const char* series : {"pretrain_loss", "cluster_loss"}) {
    const std::vector<double> loss = scssl::test::run_series(dir, series);
    ASSERT_EQ(loss.size(), 4u) << series;
    EXPECT_LT(loss.back(), loss.front()) << series;
  }
  // The clustering stage records its terms, the clusters found and the refreshes' changes.
  EXPECT_EQ(scssl::test::run_series(dir, "cluster_kl").size(), 4u);
  EXPECT_EQ(scssl::test::run_series(dir, "cluster_zinb").size(), 4u);
  const std::vector<double> n_clusters = scssl::test::run_series(dir, "n_clusters");
  ASSERT_EQ(n_clusters.size(), 1u);
  EXPECT_GE(n_clusters[0], 2);
  EXPECT_EQ(scssl::test::run_series(dir, "cluster_assignments_changed").size(), 4u);

  const torch::Tensor a = scssl::test::run_embedding(dir);
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({1556, 32}));
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
  EXPECT_TRUE(a.equal(scssl::test::run_embedding(run(kShort))));
  EXPECT_FALSE(a.equal(scssl::test::run_embedding(run(kShort + " --set run.seed=1"))));
}

TEST(DeepClusterTraining, ResumedRunEqualsUninterruptedRun) {
  const std::string common = kQuick +
                             " --set method.pretrain_epochs=3 --set method.tolerance=0"
                             " --set train.checkpoint_every=2";
  const std::string straight = run(common + " --set train.epochs=4");
  const std::string first_half = run(common + " --set train.epochs=2");
  ASSERT_TRUE(fs::exists(first_half + "/checkpoints/pretrain-checkpoint.pt"));
  ASSERT_TRUE(fs::exists(first_half + "/checkpoints/cluster-checkpoint.pt"));
  const std::string resumed =
      run(common + " --set train.epochs=4 --set train.resume_from=" + first_half + "/checkpoints");
  EXPECT_TRUE(scssl::test::run_embedding(straight).equal(scssl::test::run_embedding(resumed)));
  // The resumed run skipped the finished pre-training and trained clustering epochs 3 and 4.
  EXPECT_TRUE(scssl::test::run_series(resumed, "pretrain_loss").empty());
  EXPECT_EQ(scssl::test::run_series(resumed, "cluster_loss").size(), 2u);
}

TEST(DeepClusterTraining, StopsWhenFewCellsChangeClusterAndTakesAGivenNumberOfClusters) {
  // Tolerance 1: every refresh after the first has fewer than all cells changing, so the stage
  // ends before its second epoch; k-means makes the 5 clusters asked for.
  const std::string dir = run(kQuick +
                              " --set method.pretrain_epochs=2 --set train.epochs=5"
                              " --set method.tolerance=1 --set method.n_clusters=5");
  EXPECT_EQ(scssl::test::run_series(dir, "cluster_loss").size(), 1u);
  EXPECT_EQ(scssl::test::run_series(dir, "cluster_assignments_changed").size(), 2u);
  EXPECT_EQ(scssl::test::run_series(dir, "n_clusters"), std::vector<double>{5});
  EXPECT_EQ(scssl::test::run_embedding(dir).size(0), 1556);
}

TEST(DeepClusterTraining, RefusesValuesThatAreNotCounts) {
  // A copy of the Kang file whose first stored value is 0.5.
  const std::string path = scssl::test::temp_dir("deep-cluster-not-counts") + "/not_counts.h5ad";
  fs::copy_file(scssl::test::repo_file(kKang), path);
  {
    scssl::h5::File f = scssl::h5::File::open(path, scssl::h5::File::Mode::ReadWrite);
    const scssl::h5::Group x = f.root().group("X");
    std::vector<float> data = x.dataset("data").read_vector<float>();
    data[0] = 0.5f;
    x.remove("data");
    x.write("data", scssl::h5::NumType::Float32, data.data(), {static_cast<int64_t>(data.size())});
    f.flush();
  }
  auto r = run_command(scssl::test::host_command("--quiet run " + scssl::test::repo_file(kConfig) +
                                                 " --output " +
                                                 scssl::test::temp_dir("deep-cluster-refused") +
                                                 " " + kShort + " --set dataset.path=" + path));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'deep_cluster' needs raw counts"), std::string::npos) << r.output;
}

TEST(DeepClusterSaveAndLoad, ALoadedModelGivesTheSameEmbedding) {
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kKang));
  data.modalities[0].counts = data.modalities[0].X;
  scssl::CellDataView view(data);
  scssl::TrainOptions options;
  options.epochs = 1;
  options.learning_rate = 1e-3;
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("deep_cluster", SCSSL_KIND_METHOD);
  scssl::ParamSet params = plugin.default_params();
  params.set("pretrain_epochs", int64_t{1});
  params.set("latent_dim", int64_t{8});
  scssl::host::Method trained(plugin, params, services);
  trained.fit(view.get(), options);
  const std::string dir = scssl::test::temp_dir("deep-cluster-saved");
  trained.save(dir);
  // Saved with latent_dim 8, loaded by an instance configured with the default 32.
  scssl::host::Method loaded(plugin, plugin.default_params(), services);
  loaded.load(dir);
  const torch::Tensor a = trained.embed(data);
  EXPECT_EQ(a.size(1), 8);
  EXPECT_TRUE(a.equal(loaded.embed(data)));
}
