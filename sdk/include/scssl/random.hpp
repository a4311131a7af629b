// Small, fast, portable random-number streams for plugins' hot loops, where the generators behind
// torch::Generator (a Mersenne Twister, drawn one number at a time) cost more than the work they
// feed. One seed gives the same numbers on every platform and standard library.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace scssl {

// One splitmix64 step (Steele, Lea & Flood): a good 64-bit mix of x, e.g. to derive seeds.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// xoshiro256** (Blackman & Vigna), seeded through splitmix64 as its authors recommend. Meets the
// UniformRandomBitGenerator requirements.
class Xoshiro256 {
 public:
  using result_type = uint64_t;
  explicit Xoshiro256(uint64_t seed) {
    for (auto& word : s_) word = seed = splitmix64(seed);
  }
  static constexpr uint64_t min() { return 0; }
  static constexpr uint64_t max() { return ~uint64_t{0}; }
  uint64_t operator()() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Uniform in [0, 1) with 53 random bits.
template <class Rng>
double uniform(Rng& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Uniform integer in [0, n) for 0 < n < 2^32 by Lemire's multiply-shift; the bias, at most n /
// 2^32, is far below anything a sample could show.
template <class Rng>
int64_t uniform_below(Rng& rng, int64_t n) {
  return static_cast<int64_t>(((rng() >> 32) * static_cast<uint64_t>(n)) >> 32);
}

// A seeded stratified sample of the rows with strata[i] >= 0 (rows with -1 take no part): about
// `size` rows in all, each stratum's share proportional to its size (largest remainders), and at
// least one row of every stratum. Returns the chosen rows in ascending order; every eligible row
// when size <= 0 or size >= their count. docs/metrics.md §1.6.
inline std::vector<int64_t> stratified_sample(const std::vector<int32_t>& strata, int64_t size,
                                              uint64_t seed) {
  std::vector<std::vector<int64_t>> rows_of;
  for (int64_t i = 0; i < static_cast<int64_t>(strata.size()); ++i) {
    if (strata[i] < 0) continue;
    if (static_cast<size_t>(strata[i]) >= rows_of.size()) rows_of.resize(strata[i] + 1);
    rows_of[strata[i]].push_back(i);
  }
  int64_t eligible = 0;
  for (const auto& r : rows_of) eligible += static_cast<int64_t>(r.size());
  std::vector<int64_t> chosen;
  if (size <= 0 || size >= eligible) {
    for (const auto& r : rows_of) chosen.insert(chosen.end(), r.begin(), r.end());
    std::sort(chosen.begin(), chosen.end());
    return chosen;
  }
  // Proportional quotas, the remainder to the largest fractional parts (ties: lower stratum).
  const size_t n_strata = rows_of.size();
  std::vector<int64_t> quota(n_strata);
  std::vector<std::pair<double, size_t>> fraction;
  int64_t given = 0;
  for (size_t s = 0; s < n_strata; ++s) {
    const double exact = static_cast<double>(size) * static_cast<double>(rows_of[s].size()) /
                         static_cast<double>(eligible);
    quota[s] = static_cast<int64_t>(exact);
    given += quota[s];
    fraction.emplace_back(-(exact - static_cast<double>(quota[s])), s);
  }
  std::sort(fraction.begin(), fraction.end());
  for (size_t j = 0; given < size && j < fraction.size(); ++j, ++given) ++quota[fraction[j].second];
  Xoshiro256 rng(seed);
  for (size_t s = 0; s < n_strata; ++s) {
    std::vector<int64_t>& rows = rows_of[s];
    const int64_t n = static_cast<int64_t>(rows.size());
    const int64_t take = std::min(n, std::max<int64_t>(quota[s], n > 0 ? 1 : 0));
    // Partial Fisher-Yates: the first `take` rows become a uniform sample without replacement.
    for (int64_t j = 0; j < take; ++j) std::swap(rows[j], rows[j + uniform_below(rng, n - j)]);
    chosen.insert(chosen.end(), rows.begin(), rows.begin() + take);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

// The note a metric computed on such a sample carries in the result files.
inline std::string sample_note(const std::string& what, int64_t taken, int64_t eligible,
                               const std::string& setting, uint64_t seed) {
  return what + " on a stratified sample of " + std::to_string(taken) + " of " +
         std::to_string(eligible) + " cells (" + setting + ", seed " + std::to_string(seed) + ")";
}

// Standard normal draws by Marsaglia & Tsang's ziggurat (J. Stat. Softw. 5(8), 2000) with 128
// layers: one 64-bit draw and one comparison for about 98.8% of the numbers, against a logarithm
// and a sine per number for Box-Muller. The layer comes from the low 7 bits and the value from the
// high 32, so the two are independent (the original shared bits between them).
class StandardNormal {
 public:
  template <class Rng>
  static double draw(Rng& rng) {
    const Tables& t = tables();
    for (;;) {
      const uint64_t bits = rng();
      const int layer = static_cast<int>(bits & 127);
      const auto value = static_cast<int32_t>(bits >> 32);
      const double x = value * t.w[layer];
      if (static_cast<uint32_t>(std::abs(static_cast<int64_t>(value))) < t.k[layer]) return x;
      if (layer == 0) return tail(rng, value < 0);
      // The sliver between the rectangle and the curve: accept x with the probability that the
      // curve lies above a uniform point of the layer's height interval.
      if (t.f[layer] + uniform(rng) * (t.f[layer - 1] - t.f[layer]) < std::exp(-0.5 * x * x))
        return x;
    }
  }

 private:
  static constexpr double kR = 3.442619855899;          // where the base layer's tail begins
  static constexpr double kArea = 9.91256303526217e-3;  // the area of every layer
  struct Tables {
    uint32_t k[128];
    double w[128], f[128];
    Tables() {
      const double scale = 2147483648.0;  // 2^31: |value| < 2^31
      const double q = kArea / std::exp(-0.5 * kR * kR);
      double x = kR, previous = kR;
      k[0] = static_cast<uint32_t>(kR / q * scale);
      k[1] = 0;
      w[0] = q / scale;
      w[127] = kR / scale;
      f[0] = 1.0;
      f[127] = std::exp(-0.5 * kR * kR);
      for (int i = 126; i >= 1; --i) {
        x = std::sqrt(-2.0 * std::log(kArea / x + std::exp(-0.5 * x * x)));
        k[i + 1] = static_cast<uint32_t>(x / previous * scale);
        previous = x;
        f[i] = std::exp(-0.5 * x * x);
        w[i] = x / scale;
      }
    }
  };
  static const Tables& tables() {
    static const Tables t;
    return t;
  }
  // Beyond kR: Marsaglia's exponential rejection for the normal tail.
  template <class Rng>
  static double tail(Rng& rng, bool negative) {
    double x, y;
    do {
      x = -std::log1p(-uniform(rng)) / kR;
      y = -std::log1p(-uniform(rng));
    } while (y + y < x * x);
    return negative ? -(kR + x) : kR + x;
  }
};

}  // namespace scssl
