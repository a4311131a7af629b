// Each SSL loss on a case small enough to work out by hand (the arithmetic is in the comments).
#include <gtest/gtest.h>

#include <cmath>

#include "scssl/losses.hpp"
#include "scssl/nn.hpp"

using namespace scssl;

namespace {
torch::Tensor t(std::vector<std::vector<float>> rows) {
  std::vector<float> flat;
  for (auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return torch::tensor(flat).view({static_cast<int64_t>(rows.size()), -1});
}
const double e = std::exp(1.0);
}  // namespace

// z0 = z1 = {[1,0], [0,1]}, t = 1. Row [1,0] sees its positive at similarity 1 and the two other
// rows at 0: loss = -log(e / (e + 2)) for every one of the 4 rows.
TEST(Losses, NtXent) {
  torch::Tensor z = t({{1, 0}, {0, 1}});
  EXPECT_NEAR(losses::nt_xent(z, z.clone(), 1.0).item<double>(), std::log((e + 2) / e), 1e-6);
  // Scaling does not matter (rows are normalised); temperature 0.5 doubles every logit.
  EXPECT_NEAR(losses::nt_xent(3 * z, z, 0.5).item<double>(), std::log((e * e + 2) / (e * e)), 1e-6);
}

// q = k = [1,0], bank {[0,1], [-1,0]}, t = 1: logits [1, 0, -1], label 0.
TEST(Losses, InfoNceAgainstABank) {
  torch::Tensor q = t({{1, 0}});
  EXPECT_NEAR(losses::info_nce(q, q, t({{0, 1}, {-1, 0}}), 1.0).item<double>(),
              -std::log(e / (e + 1 + 1 / e)), 1e-6);
}

TEST(Losses, NegativeCosine) {
  EXPECT_NEAR(losses::negative_cosine(t({{1, 0}}), t({{1, 1}})).item<double>(), -1 / std::sqrt(2.0),
              1e-6);
}

// za = zb = {[1,0], [-1,0]}: MSE 0; dimension 0 has variance 2 (std > 1, no penalty), dimension 1
// variance 0 -> relu(1 - sqrt(1e-4)) = 0.99, so V = 0.495 per view; covariance off-diagonal 0.
// Total = mu * 0.5 * (0.495 + 0.495) = 0.495 mu.
TEST(Losses, Vicreg) {
  torch::Tensor z = t({{1, 0}, {-1, 0}});
  EXPECT_NEAR(losses::vicreg(z, z, 25, 25, 1).item<double>(), 0.495 * 25, 1e-5);
  // Shifting one view by 1 adds an MSE of 1 (times lambda) and changes nothing else.
  EXPECT_NEAR(losses::vicreg(z, z + 1, 2, 25, 1).item<double>(), 2 + 0.495 * 25, 1e-5);
}

// za = zb with columns [1,3,5] and [2,4,0]: each column's correlation with itself is 1 (up to the
// 1e-5 in the standardisation), and between them -0.5, so the loss is 0.005 * 2 * 0.25.
TEST(Losses, BarlowTwins) {
  torch::Tensor z = t({{1, 2}, {3, 4}, {5, 0}});
  EXPECT_NEAR(losses::barlow_twins(z, z, 0.005, /*joint=*/false).item<double>(), 0.0025, 1e-5);
  // Identical views: their joint statistics are each view's own, so the same loss.
  EXPECT_NEAR(losses::barlow_twins(z, z, 0.005, /*joint=*/true).item<double>(), 0.0025, 1e-5);
}

// One dimension, za = {1, 3}, zb = {5, 7}. Each view alone standardises both to {-1, 1}: c = 1,
// loss 0. Jointly (lightly): mean 4, biased variance (9 + 1 + 1 + 9) / 4 = 5, so za -> {-3, -1}
// / sqrt(5) and zb -> {1, 3} / sqrt(5), c = (-3 - 3) / 5 / 2 = -0.6, loss (1 + 0.6)^2 = 2.56.
TEST(Losses, BarlowTwinsJointOrPerViewStandardisation) {
  torch::Tensor za = t({{1}, {3}}), zb = t({{5}, {7}});
  EXPECT_NEAR(losses::barlow_twins(za, zb, 0.005, /*joint=*/false).item<double>(), 0.0, 1e-5);
  EXPECT_NEAR(losses::barlow_twins(za, zb, 0.005, /*joint=*/true).item<double>(), 2.56, 1e-4);
}

// a = b = {[1,0], [0,1]}, scale exp(0) = 1: logits = I, each row -log(e / (e + 1)), both ways.
TEST(Losses, Clip) {
  torch::Tensor a = t({{1, 0}, {0, 1}});
  EXPECT_NEAR(losses::clip(a, a, torch::zeros({1})).item<double>(), std::log((e + 1) / e), 1e-6);
}

TEST(MemoryBank, FifoWrapsAndNearestReturnsTheStoredRow) {
  losses::MemoryBank bank(4, 2);
  bank->enqueue(t({{1, 0}, {0, 2}, {3, 3}}));
  bank->enqueue(t({{-5, 0}, {9, 9}}));  // one row fits, the rest is dropped and the pointer wraps
  EXPECT_TRUE(bank->vectors()[3].equal(torch::tensor({-5.f, 0.f})));
  bank->enqueue(t({{0, -7}}));
  EXPECT_TRUE(bank->vectors()[0].equal(torch::tensor({0.f, -7.f})));
  // Nearest by cosine, returned as stored (not normalised).
  EXPECT_TRUE(bank->nearest(t({{0.1f, 1}}))[0].equal(torch::tensor({0.f, 2.f})));
}

TEST(Momentum, CosineScheduleAndEmaUpdate) {
  EXPECT_DOUBLE_EQ(nn::cosine_momentum(0.996, 0, 10), 0.996);
  EXPECT_NEAR(nn::cosine_momentum(0.996, 5, 10), 0.998, 1e-12);
  torch::nn::Linear a(2, 1), b(2, 1);
  torch::NoGradGuard no_grad;
  a->weight.fill_(0);
  b->weight.fill_(1);
  nn::momentum_update(*a, *b, 0.9);
  EXPECT_NEAR(a->weight[0][0].item<float>(), 0.1f, 1e-6);
}

TEST(DomainBatchNorm, NormalisesEachBatchSeparately) {
  nn::DomainBatchNorm bn(1, 2);
  torch::Tensor x = t({{1}, {3}, {100}, {300}});
  torch::Tensor d = torch::tensor({0, 0, 1, 1}, torch::kInt64);
  torch::Tensor y = bn->forward(x, d);
  // Each domain becomes {-1, 1} (biased variance, eps negligible).
  EXPECT_NEAR(y[0][0].item<float>(), -1, 1e-3);
  EXPECT_NEAR(y[3][0].item<float>(), 1, 1e-3);
}

TEST(DomainBatchNorm, UnseenDomainUsesTheAverageOfTrainedOnes) {
  nn::DomainBatchNorm bn(1, 3);  // domain 2 never appears in training (a held-out batch)
  torch::Tensor x = t({{1}, {3}, {100}, {300}});
  torch::Tensor d = torch::tensor({0, 0, 1, 1}, torch::kInt64);
  for (int i = 0; i < 200; ++i) bn->forward(x, d);  // running statistics converge
  bn->eval();
  torch::NoGradGuard no_grad;
  // Domains 0 and 1 have running means 2 and 200: their average 101 maps to about 0.
  torch::Tensor y = bn->forward(t({{101}}), torch::tensor({2}, torch::kInt64));
  EXPECT_NEAR(y[0][0].item<float>(), 0.f, 1e-3);
}
