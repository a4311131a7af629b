// The exact kNN search and the exact silhouettes work on cache-sized tiles of distances (64 query
// rows x 512 reference rows). These tests use sizes that cut across tile edges and compare with
// direct O(n^2) computations, and check that the thread count does not change a single bit.
// Every kernel path this CPU runs is checked tile by tile here; ctest also runs the whole binary
// once per forced path (SCSSL_DISTANCE_KERNELS), so the searches and silhouettes are checked on
// each path too, the tensor path (the code a GPU runs, here on the CPU) included.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "distance_tiles.hpp"
#include "scssl/knn.hpp"
#include "scssl/params.hpp"
#include "scssl/silhouette.hpp"

using namespace scssl;

namespace {

// Under a forced path this CPU cannot run (ctest forces each in turn), there is nothing to test.
class ForcedPathRunnable : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* forced = std::getenv("SCSSL_DISTANCE_KERNELS");
    if (!forced) return;
    std::vector<std::string> paths = distance_kernel_paths();
    paths.push_back("tensor");  // the GPU's code on the CPU: runs everywhere
    if (std::find(paths.begin(), paths.end(), forced) == paths.end())
      GTEST_SKIP() << "SCSSL_DISTANCE_KERNELS=" << forced << ": this CPU does not run that path";
    ASSERT_EQ(distance_kernels(), forced);
  }
};
const auto* const kForcedPathRunnable = ::testing::AddGlobalTestEnvironment(new ForcedPathRunnable);

// Runs `f` with n threads, restoring the previous setting.
template <class F>
auto with_threads(int n, F f) {
  const int saved = at::get_num_threads();
  at::set_num_threads(n);
  auto result = f();
  at::set_num_threads(saved);
  return result;
}

// Small integer coordinates: every product and sum is exact in float64, so the tiled search and
// the direct one see identical distances, and the many exact ties test "smaller index first".
torch::Tensor integer_points(int64_t n, int64_t d, int64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, 3, {n, d}, torch::kInt64).to(torch::kFloat32);
}

}  // namespace

TEST(ExactKnn, SelfSearchEqualsDirectSortingWithTiesBySmallerIndex) {
  const int64_t n = 1300, k = 12;  // 1300 = 2.5 panels, 20.3 query blocks
  torch::Tensor x = integer_points(n, 5, 1);
  const Neighbors nn = knn_self(x, k);
  ASSERT_EQ(nn.indices.sizes(), (std::vector<int64_t>{n, k}));
  torch::Tensor d2 = torch::cdist(x.to(torch::kFloat64), x.to(torch::kFloat64)).pow(2).round();
  for (int64_t i : {0L, 63L, 64L, 511L, 512L, 777L, 1299L}) {
    std::vector<std::pair<double, int64_t>> all;
    for (int64_t j = 0; j < n; ++j)
      if (j != i) all.emplace_back(d2[i][j].item<double>(), j);
    std::sort(all.begin(), all.end());
    EXPECT_EQ(nn.indices[i][0].item<int64_t>(), i);
    for (int64_t s = 1; s < k; ++s) {
      EXPECT_EQ(nn.indices[i][s].item<int64_t>(), all[s - 1].second)
          << "row " << i << " rank " << s;
      EXPECT_FLOAT_EQ(nn.distances[i][s].item<float>(), std::sqrt(all[s - 1].first));
    }
  }
}

TEST(ExactKnn, QuerySearchEqualsDirectSorting) {
  torch::Tensor ref = integer_points(700, 4, 2), query = integer_points(150, 4, 3);
  const Neighbors nn = knn_exact(ref, query, 9);
  for (int64_t i = 0; i < 150; i += 7) {
    std::vector<std::pair<double, int64_t>> all;
    for (int64_t j = 0; j < 700; ++j)
      all.emplace_back((query[i] - ref[j]).to(torch::kFloat64).pow(2).sum().item<double>(), j);
    std::sort(all.begin(), all.end());
    for (int64_t s = 0; s < 9; ++s) EXPECT_EQ(nn.indices[i][s].item<int64_t>(), all[s].second);
  }
}

TEST(ExactKnn, CosineDistancesEqualDirectOnes) {
  torch::manual_seed(4);
  torch::Tensor ref = torch::randn({600, 6}), query = torch::randn({70, 6});
  ref[5].zero_();  // a zero row: cosine distance 1 to everything
  const Neighbors nn = knn_exact(ref, query, 600, Distance::Cosine);
  torch::Tensor cos = torch::mm(torch::nn::functional::normalize(query.to(torch::kFloat64)),
                                torch::nn::functional::normalize(ref.to(torch::kFloat64)).t());
  torch::Tensor expected = std::get<0>((1.0 - cos).sort(1));
  EXPECT_LT((nn.distances.to(torch::kFloat64) - expected).abs().max().item<double>(), 1e-6);
  for (int64_t i = 0; i < 70; ++i) {
    const auto row = nn.indices[i];
    const int64_t pos = (row == 5).nonzero().item<int64_t>();
    EXPECT_NEAR(nn.distances[i][pos].item<float>(), 1.0f, 1e-6f);
  }
}

// The search screens with float32 distances, then measures candidates exactly. Here the radii
// differ by 1e-7 on 100 (squared distances by 2e-5, far below float32's resolution at 1e4), and
// the exact pass must still return exactly the 50 nearest pairs of points, nearest first.
TEST(ExactKnn, DifferencesBelowFloat32ResolutionAreRankedExactly) {
  torch::manual_seed(8);
  const int64_t pairs = 300;
  torch::Tensor directions =
      torch::nn::functional::normalize(torch::randn({pairs, 8}, torch::kFloat64));
  torch::Tensor rank = torch::randperm(pairs, torch::kInt64);
  torch::Tensor radius = 100.0 + rank.to(torch::kFloat64) * 1e-7;
  torch::Tensor half = directions * radius.unsqueeze(1);
  torch::Tensor ref = torch::stack({half, -half}, 1).reshape({2 * pairs, 8});  // mean zero
  const Neighbors nn = knn_exact(ref, torch::zeros({1, 8}, torch::kFloat64), 100);
  std::vector<int64_t> ranks;
  for (int64_t s = 0; s < 100; ++s)
    ranks.push_back(rank[nn.indices[0][s].item<int64_t>() / 2].item<int64_t>());
  for (int64_t s = 0; s < 100; ++s) EXPECT_EQ(ranks[s], s / 2) << "position " << s;
}

// A tight cloud of cells and a few far out, as in a diffusion map: the far rows' norms make the
// float32 error bound wider than the cloud, so the search switches to float64 products (the tile
// path from the start, the tensor path after its first block of 8192 queries). The lists must
// still be the exact ones, on both sides of that switch.
TEST(ExactKnn, FarOutliersDoNotChangeTheLists) {
  torch::manual_seed(9);
  const int64_t n = 1500, d = 6, k = 10;
  torch::Tensor ref = torch::randn({n, d}, torch::kFloat64) * 1e-3;
  ref.slice(0, 0, 3) += 1e4;  // three far-out rows
  const torch::Tensor query = torch::randn({9000, d}, torch::kFloat64) * 1e-3;
  const Neighbors self = knn_self(ref, k);
  const Neighbors nn = knn_exact(ref, query, k);
  auto nearest = [&](const torch::Tensor& q, int64_t skip) {
    const torch::Tensor diff = ref - q.unsqueeze(0);
    const torch::Tensor d2 = (diff * diff).sum(1);
    std::vector<std::pair<double, int64_t>> all;
    for (int64_t j = 0; j < n; ++j)
      if (j != skip) all.emplace_back(d2[j].item<double>(), j);
    std::sort(all.begin(), all.end());
    return all;
  };
  for (int64_t i : {3L, 777L, 1499L}) {
    const auto all = nearest(ref[i], i);
    EXPECT_EQ(self.indices[i][0].item<int64_t>(), i);
    for (int64_t s = 1; s < k; ++s)
      EXPECT_EQ(self.indices[i][s].item<int64_t>(), all[s - 1].second) << "row " << i;
  }
  for (int64_t i : {0L, 8191L, 8192L, 8999L}) {
    const auto all = nearest(query[i], -1);
    for (int64_t s = 0; s < k; ++s)
      EXPECT_EQ(nn.indices[i][s].item<int64_t>(), all[s].second) << "query " << i;
  }
}

TEST(ExactKnn, ThreadCountDoesNotChangeTheResult) {
  torch::manual_seed(5);
  torch::Tensor x = torch::randn({1100, 16});
  const Neighbors one = with_threads(1, [&] { return knn_self(x, 30); });
  const Neighbors two = with_threads(2, [&] { return knn_self(x, 30); });
  EXPECT_TRUE(torch::equal(one.indices, two.indices));
  EXPECT_TRUE(torch::equal(one.distances, two.distances));
}

TEST(ExactSilhouette, EqualsTheDefinitionAcrossTileEdges) {
  torch::manual_seed(6);
  const int64_t n = 1200, clusters = 5;
  torch::Tensor codes = torch::randint(0, clusters, {n}, torch::kInt64);
  torch::Tensor x = torch::randn({n, 8}) + codes.unsqueeze(1).to(torch::kFloat32);
  torch::Tensor s = silhouette_samples(x, codes);
  torch::Tensor dist = torch::cdist(x.to(torch::kFloat64), x.to(torch::kFloat64));
  for (int64_t i : {0L, 63L, 64L, 511L, 512L, 1023L, 1199L}) {
    std::vector<double> sum(clusters, 0.0);
    std::vector<int64_t> count(clusters, 0);
    for (int64_t j = 0; j < n; ++j) {
      sum[codes[j].item<int64_t>()] += dist[i][j].item<double>();
      ++count[codes[j].item<int64_t>()];
    }
    const int64_t own = codes[i].item<int64_t>();
    const double a = sum[own] / static_cast<double>(count[own] - 1);
    double b = std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < clusters; ++c)
      if (c != own) b = std::min(b, sum[c] / static_cast<double>(count[c]));
    EXPECT_NEAR(s[i].item<double>(), (b - a) / std::max(a, b), 1e-10) << "row " << i;
  }
}

TEST(ExactSilhouette, ThreadCountDoesNotChangeTheResult) {
  torch::manual_seed(7);
  torch::Tensor x = torch::randn({900, 10});
  torch::Tensor codes = torch::randint(0, 4, {900}, torch::kInt64);
  torch::Tensor one = with_threads(1, [&] { return silhouette_samples(x, codes); });
  torch::Tensor two = with_threads(2, [&] { return silhouette_samples(x, codes); });
  EXPECT_TRUE(torch::equal(one, two));
}

// One tile of every kernel path against the direct float64 computation, for sizes that are not
// multiples of any micro-tile (37 query rows, 1000 reference rows, 13 dimensions).
class EveryKernelPath : public ::testing::TestWithParam<std::string> {
 protected:
  template <class Real>
  void check_tiles(double tolerance) {
    const scssl::detail::KernelPath& path = scssl::detail::kernel_path_named(GetParam());
    ASSERT_STREQ(path.name, GetParam().c_str());
    torch::manual_seed(9);
    const int64_t n = 1000, rows = 37, d = 13;
    const torch::Tensor x = torch::randn({n, d}, torch::kFloat64).contiguous();
    const torch::Tensor direct = torch::cdist(x.slice(0, 100, 100 + rows), x).pow(2);
    const auto want = direct.accessor<double, 2>();
    const scssl::detail::ReferencePanels<Real> panels(x.data_ptr<double>(), n, d, path);
    scssl::detail::QueryBlock<Real> block;
    block.load(x.data_ptr<double>(), d, 100, rows);
    constexpr int64_t kPanel = scssl::detail::ReferencePanels<Real>::kPanelCols;
    std::vector<Real> tile(scssl::detail::QueryBlock<Real>::kBlockRows * kPanel);
    double worst = 0.0;
    for (int64_t p = 0; p < panels.panels(); ++p) {
      panels.squared_distances(block, p, tile.data());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < panels.panel_size(p); ++j) {
          const double got = tile[r * kPanel + j];
          worst = std::max(worst, std::abs(got - want[r][panels.panel_begin(p) + j]));
        }
      // The cell's distance to itself (row 100 + r) is exact up to rounding, and never negative.
      for (int64_t r = 0; r < rows; ++r) EXPECT_GE(tile[r * kPanel], Real(0));
    }
    EXPECT_LT(worst, tolerance) << GetParam();
  }
};

TEST_P(EveryKernelPath, Float32TilesEqualDirectDistances) { check_tiles<float>(1e-4); }

TEST_P(EveryKernelPath, Float64TilesEqualDirectDistances) { check_tiles<double>(1e-11); }

INSTANTIATE_TEST_SUITE_P(Paths, EveryKernelPath, ::testing::ValuesIn(distance_kernel_paths()),
                         [](const auto& info) { return info.param; });

TEST(KernelPaths, TheBestRunnablePathIsTheDefaultAndBlasIsAlwaysThere) {
  const std::vector<std::string> paths = distance_kernel_paths();
  ASSERT_GE(paths.size(), 2u);
  // The BLAS comes after the CPU's own AVX paths and before the 16-byte vectors.
  EXPECT_EQ(paths[paths.size() - 2], "blas");
  EXPECT_TRUE(paths.back() == "sse2" || paths.back() == "vector16") << paths.back();
  if (!std::getenv("SCSSL_DISTANCE_KERNELS")) {
    EXPECT_EQ(distance_kernels(), paths.front());
  }
  EXPECT_STREQ(scssl::detail::kernel_path_named("auto").name, paths.front().c_str());
}

TEST(KernelPaths, AnUnknownPathIsRefusedWithTheVariableAndTheChoices) {
  try {
    scssl::detail::kernel_path_named("avx1024");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("SCSSL_DISTANCE_KERNELS=avx1024"), std::string::npos) << what;
    EXPECT_NE(what.find("blas"), std::string::npos) << what;
  }
}
