#include "scssl/lisi.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace scssl {

torch::Tensor lisi_per_cell(const torch::Tensor& indices, const torch::Tensor& distances,
                            const torch::Tensor& codes, int64_t n_categories) {
  const torch::Tensor idx = indices.to(torch::kInt64).contiguous();
  const torch::Tensor dist = distances.to(torch::kFloat64).contiguous();
  const torch::Tensor code = codes.to(torch::kInt32).contiguous();
  const int64_t n = idx.size(0), k = idx.size(1);
  const double log_u = std::log(std::floor(k / 3.0));
  torch::Tensor out = torch::empty({n}, torch::kFloat64);
  const int64_t* I = idx.data_ptr<int64_t>();
  const double* D = dist.data_ptr<double>();
  const int32_t* C = code.data_ptr<int32_t>();
  double* O = out.data_ptr<double>();
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
    std::vector<double> p(k), simpson(n_categories);
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t* nb = I + i * k;
      const double* d = D + i * k;
      // Entropy H(beta) and the normalised weights; the cell itself has weight 0.
      auto entropy = [&](double beta) {
        double sum = 0, weighted = 0;
        for (int64_t j = 0; j < k; ++j) {
          p[j] = nb[j] == i ? 0.0 : std::exp(-d[j] * beta);
          sum += p[j];
          weighted += d[j] * p[j];
        }
        if (sum == 0) {
          std::fill(p.begin(), p.end(), 0.0);
          return 0.0;
        }
        for (int64_t j = 0; j < k; ++j) p[j] /= sum;
        return std::log(sum) + beta * weighted / sum;
      };
      double beta = 1, beta_min = -std::numeric_limits<double>::infinity(),
             beta_max = std::numeric_limits<double>::infinity();
      double h = entropy(beta);
      for (int tries = 0; std::abs(h - log_u) >= 1e-5 && tries < 50; ++tries) {
        if (h - log_u > 0) {
          beta_min = beta;
          beta = std::isinf(beta_max) ? beta * 2 : (beta + beta_max) / 2;
        } else {
          beta_max = beta;
          beta = std::isinf(beta_min) ? beta / 2 : (beta + beta_min) / 2;
        }
        h = entropy(beta);
      }
      std::fill(simpson.begin(), simpson.end(), 0.0);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t c = nb[j] >= 0 ? C[nb[j]] : -1;
        if (c >= 0) simpson[c] += p[j];
      }
      double s = 0;
      for (double v : simpson) s += v * v;
      O[i] = h == 0 ? -1.0 : 1.0 / s;
    }
  });
  return out;
}

int64_t count_present(const torch::Tensor& codes) {
  return std::get<0>(torch::_unique(codes.masked_select(codes >= 0))).numel();
}

double nanmedian(const torch::Tensor& values) {
  torch::Tensor v = values.to(torch::kFloat64).flatten();
  v = v.masked_select(~torch::isnan(v));
  if (v.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  torch::Tensor sorted = std::get<0>(v.sort());
  const int64_t m = sorted.numel();
  const double* s = sorted.data_ptr<double>();
  return m % 2 ? s[m / 2] : (s[m / 2 - 1] + s[m / 2]) / 2;
}

}  // namespace scssl
