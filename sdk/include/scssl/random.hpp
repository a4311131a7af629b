// Small, fast, portable random-number streams for plugins' hot loops, where the generators behind
// torch::Generator (a Mersenne Twister, drawn one number at a time) cost more than the work they
// feed. One seed gives the same numbers on every platform and standard library.
#pragma once

#include <cstdint>

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

}  // namespace scssl
