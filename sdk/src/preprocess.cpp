#include "scssl/preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace scssl {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Matrix as_csr(const Matrix& m) {
  if (m.is_csr()) return m;
  torch::Tensor dense = m.dense;
  torch::Tensor mask = dense != 0;
  torch::Tensor counts = mask.sum(1).to(torch::kInt64);
  torch::Tensor indptr = torch::zeros({m.rows + 1}, torch::kInt64);
  indptr.slice(0, 1).copy_(counts.cumsum(0));
  torch::Tensor nz = mask.nonzero();
  return Matrix::csr(indptr, nz.select(1, 1).to(torch::kInt32), dense.masked_select(mask), m.rows,
                     m.cols, "dense matrix");
}

// Per-batch sums of expm1(x), its square and the number of positive entries, in one CSR pass.
struct BatchMoments {
  int64_t n_batches;
  std::vector<int64_t> cells;  // cells per batch
  std::vector<double> sum, sum_sq;
  std::vector<int64_t> positive;
};

BatchMoments batch_moments(const Matrix& x, const torch::Tensor& codes, int64_t n_batches) {
  BatchMoments m{n_batches, std::vector<int64_t>(n_batches, 0), {}, {}, {}};
  const int64_t g = x.cols;
  m.sum.assign(n_batches * g, 0.0);
  m.sum_sq.assign(n_batches * g, 0.0);
  m.positive.assign(n_batches * g, 0);
  const int64_t* p = x.indptr.data_ptr<int64_t>();
  const int32_t* idx = x.indices.data_ptr<int32_t>();
  const float* v = x.values.data_ptr<float>();
  const int32_t* code = codes.defined() ? codes.data_ptr<int32_t>() : nullptr;
  for (int64_t r = 0; r < x.rows; ++r) {
    const int64_t b = code ? code[r] : 0;
    if (b < 0) continue;
    ++m.cells[b];
    double* s = m.sum.data() + b * g;
    double* s2 = m.sum_sq.data() + b * g;
    int64_t* pos = m.positive.data() + b * g;
    for (int64_t k = p[r]; k < p[r + 1]; ++k) {
      // Seurat's dispersion is computed on the un-logged normalised values.
      const double e = std::expm1(static_cast<double>(v[k]));
      s[idx[k]] += e;
      s2[idx[k]] += e * e;
      pos[idx[k]] += v[k] > 0;
    }
  }
  return m;
}

struct SingleBatchHvg {
  std::vector<double> means, dispersions, norm;
  std::vector<char> highly_variable;
};

// scanpy's _highly_variable_genes_single_batch, seurat flavour, on the features in `genes`.
SingleBatchHvg hvg_single_batch(const double* sum, const double* sum_sq, int64_t n,
                                const std::vector<int64_t>& genes, int64_t n_top, int64_t n_bins) {
  const size_t m = genes.size();
  SingleBatchHvg out;
  out.means.resize(m);
  out.dispersions.resize(m);
  out.norm.resize(m);
  out.highly_variable.assign(m, 0);
  for (size_t i = 0; i < m; ++i) {
    const int64_t gene = genes[i];
    double mean = sum[gene] / n;
    const double mean_sq = sum_sq[gene] / n;
    const double var = n > 1 ? (mean_sq - mean * mean) * n / (n - 1.0) : kNaN;
    if (mean == 0) mean = 1e-12;
    const double dispersion = var / mean;
    out.dispersions[i] = dispersion == 0 ? kNaN : std::log(dispersion);
    out.means[i] = std::log1p(mean);
  }
  if (m == 0) return out;
  // pandas.cut(means, n_bins): equal-width bins over [min, max], right-closed, the lowest edge
  // widened by 0.1 % of the range so that the minimum falls inside.
  double lo = *std::min_element(out.means.begin(), out.means.end());
  double hi = *std::max_element(out.means.begin(), out.means.end());
  if (lo == hi) {
    const double adj = lo != 0 ? 0.001 * std::abs(lo) : 0.001;
    lo -= adj;
    hi += adj;
  }
  std::vector<double> edges(n_bins + 1);
  for (int64_t b = 0; b <= n_bins; ++b) edges[b] = lo + (hi - lo) * b / n_bins;
  edges[0] -= (hi - lo) * 0.001;
  std::vector<int64_t> bin(m);
  for (size_t i = 0; i < m; ++i) {
    const int64_t pos = std::lower_bound(edges.begin(), edges.end(), out.means[i]) - edges.begin();
    bin[i] = std::clamp<int64_t>(pos - 1, 0, n_bins - 1);
  }
  // Mean and sample standard deviation of the dispersions per bin, NaNs skipped (pandas).
  std::vector<double> bin_sum(n_bins, 0.0), bin_sq(n_bins, 0.0);
  std::vector<int64_t> bin_n(n_bins, 0);
  for (size_t i = 0; i < m; ++i) {
    if (std::isnan(out.dispersions[i])) continue;
    bin_sum[bin[i]] += out.dispersions[i];
    bin_n[bin[i]] += 1;
  }
  std::vector<double> bin_mean(n_bins), bin_std(n_bins);
  for (int64_t b = 0; b < n_bins; ++b) bin_mean[b] = bin_n[b] ? bin_sum[b] / bin_n[b] : kNaN;
  for (size_t i = 0; i < m; ++i) {
    if (std::isnan(out.dispersions[i])) continue;
    const double d = out.dispersions[i] - bin_mean[bin[i]];
    bin_sq[bin[i]] += d * d;
  }
  for (int64_t b = 0; b < n_bins; ++b) {
    bin_std[b] = bin_n[b] > 1 ? std::sqrt(bin_sq[b] / (bin_n[b] - 1)) : kNaN;
    // scanpy: a bin with a single gene gets mean 0 and std = that mean, i.e. a z-score of 1.
    if (std::isnan(bin_std[b])) {
      bin_std[b] = bin_mean[b];
      bin_mean[b] = 0;
    }
  }
  std::vector<double> finite;
  for (size_t i = 0; i < m; ++i) {
    out.norm[i] = (out.dispersions[i] - bin_mean[bin[i]]) / bin_std[bin[i]];
    if (!std::isnan(out.norm[i])) finite.push_back(out.norm[i]);
  }
  if (finite.empty()) return out;
  std::sort(finite.begin(), finite.end(), std::greater<double>());
  const int64_t top = std::min<int64_t>(n_top, static_cast<int64_t>(finite.size()));
  const double cutoff = finite[top - 1];
  for (size_t i = 0; i < m; ++i) {
    // numpy.nan_to_num: NaN counts as 0, infinities as the largest finite values.
    double v = out.norm[i];
    if (std::isnan(v)) v = 0;
    out.highly_variable[i] = v >= cutoff;
  }
  return out;
}

}  // namespace

Matrix normalize_total(const Matrix& counts, double target_sum, const std::string& what) {
  Matrix x = as_csr(counts);
  const int64_t* p = x.indptr.data_ptr<int64_t>();
  const float* v = x.values.data_ptr<float>();
  torch::Tensor values = torch::empty_like(x.values);
  float* out = values.data_ptr<float>();
  for (int64_t r = 0; r < x.rows; ++r) {
    double total = 0;
    for (int64_t k = p[r]; k < p[r + 1]; ++k) {
      if (!(v[k] >= 0))
        throw BadData(what + " has a negative or NaN count (" + std::to_string(v[k]) +
                      ") in cell " + std::to_string(r) +
                      "; normalisation needs raw counts (set "
                      "preprocess.normalize = false for already normalised data)");
      total += v[k];
    }
    const double factor = total > 0 ? target_sum / total : 0.0;
    for (int64_t k = p[r]; k < p[r + 1]; ++k) out[k] = static_cast<float>(v[k] * factor);
  }
  x.values = values;
  return x;
}

Matrix log1p(Matrix x) {
  if (x.is_csr())
    x.values = torch::log1p(x.values);
  else
    x.dense = torch::log1p(x.dense);
  return x;
}

HvgResult highly_variable_genes(const Matrix& lognorm, int64_t n_top_genes,
                                const torch::Tensor& batch_codes,
                                const std::vector<std::string>& feature_names, int64_t n_bins) {
  Matrix x = as_csr(lognorm);
  const int64_t g = x.cols;
  int64_t n_batches = 1;
  torch::Tensor codes;
  if (batch_codes.defined()) {
    codes = batch_codes.to(torch::kInt32).contiguous();
    n_batches = std::max<int64_t>(1, codes.max().item<int32_t>() + 1);
  }
  const bool batched = codes.defined();
  BatchMoments moments = batch_moments(x, codes, n_batches);

  HvgResult result;
  result.means.assign(g, 0.0);
  result.dispersions.assign(g, 0.0);
  result.dispersions_norm.assign(g, 0.0);
  result.n_batches.assign(g, 0);
  std::vector<double> norm_sum(g, 0.0);
  std::vector<int64_t> norm_count(g, 0), disp_count(g, 0);
  int64_t batches_seen = 0;
  std::vector<char> single_hv(g, 0);
  for (int64_t b = 0; b < n_batches; ++b) {
    const int64_t n = moments.cells[b];
    if (n == 0) continue;
    ++batches_seen;
    // With a batch key scanpy drops the features never expressed in that batch; they count
    // as 0 (not highly variable, normalised dispersion 0) in the averages across batches.
    std::vector<int64_t> genes;
    for (int64_t j = 0; j < g; ++j)
      if (!batched || moments.positive[b * g + j] > 0) genes.push_back(j);
    SingleBatchHvg h = hvg_single_batch(moments.sum.data() + b * g, moments.sum_sq.data() + b * g,
                                        n, genes, n_top_genes, n_bins);
    std::vector<char> expressed(g, 0);
    for (size_t i = 0; i < genes.size(); ++i) {
      const int64_t j = genes[i];
      expressed[j] = 1;
      result.means[j] += h.means[i];
      if (!std::isnan(h.dispersions[i])) {
        result.dispersions[j] += h.dispersions[i];
        ++disp_count[j];
      }
      if (!std::isnan(h.norm[i])) {
        norm_sum[j] += h.norm[i];
        ++norm_count[j];
      }
      result.n_batches[j] += h.highly_variable[i];
      single_hv[j] = h.highly_variable[i];
    }
    for (int64_t j = 0; j < g; ++j) {
      if (expressed[j]) continue;
      // The zeros scanpy fills in for unexpressed features enter its nanmeans.
      ++norm_count[j];
      ++disp_count[j];
    }
  }
  for (int64_t j = 0; j < g; ++j) {
    result.means[j] /= std::max<int64_t>(1, batches_seen);
    result.dispersions[j] = disp_count[j] ? result.dispersions[j] / disp_count[j] : kNaN;
    result.dispersions_norm[j] = norm_count[j] ? norm_sum[j] / norm_count[j] : kNaN;
  }

  if (n_top_genes <= 0 || n_top_genes >= g) {
    result.selected.resize(g);
    std::iota(result.selected.begin(), result.selected.end(), 0);
    return result;
  }
  if (!batched) {
    // Without a batch key scanpy keeps every feature at or above the cut-off.
    for (int64_t j = 0; j < g; ++j)
      if (single_hv[j]) result.selected.push_back(j);
    return result;
  }
  // scanpy ranks by the number of batches in which a feature is highly variable, then by the
  // normalised dispersion (NaN last), stably from an order sorted by feature name.
  std::vector<int64_t> order(g);
  std::iota(order.begin(), order.end(), 0);
  if (static_cast<int64_t>(feature_names.size()) == g)
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return feature_names[a] < feature_names[b]; });
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (result.n_batches[a] != result.n_batches[b])
      return result.n_batches[a] > result.n_batches[b];
    const double da = result.dispersions_norm[a], db = result.dispersions_norm[b];
    if (std::isnan(da) || std::isnan(db)) return !std::isnan(da) && std::isnan(db);
    return da > db;
  });
  result.selected.assign(order.begin(), order.begin() + n_top_genes);
  std::sort(result.selected.begin(), result.selected.end());
  return result;
}

Matrix scale(const Matrix& x, double max_value, const torch::Tensor& fit_rows) {
  torch::Tensor dense =
      x.is_csr() ? x.slice_dense(0, x.rows).to(torch::kFloat64) : x.dense.to(torch::kFloat64);
  const torch::Tensor fit = fit_rows.defined() ? dense.index_select(0, fit_rows) : dense;
  torch::Tensor mean = fit.mean(0, true);
  torch::Tensor std = fit.std(0, /*unbiased=*/true, /*keepdim=*/true);
  std = torch::where(std == 0, torch::ones_like(std), std);
  dense = ((dense - mean) / std).clamp(-max_value, max_value);
  return Matrix::from_dense(dense.to(torch::kFloat32), "scaled matrix");
}

HvgResult preprocess_modality(Modality& modality, const PreprocessOptions& options,
                              const Column* batches, const torch::Tensor& fit_rows) {
  const std::string what = "modality '" + modality.name + "'";
  Matrix x = as_csr(modality.X);
  // Raw counts: what the data set gave as counts, else its matrix as read.
  Matrix raw = modality.counts.empty() ? x : as_csr(modality.counts);
  if (options.normalize) x = normalize_total(x, options.target_sum, what);
  if (options.log1p) x = log1p(std::move(x));
  HvgResult hvg;
  const int64_t g = x.cols;
  if (options.n_top_genes > 0 && options.n_top_genes < g) {
    torch::Tensor codes =
        options.batch_aware && batches && batches->categorical ? batches->codes : torch::Tensor();
    if (fit_rows.defined())
      hvg = highly_variable_genes(x.select_rows(fit_rows), options.n_top_genes,
                                  codes.defined() ? codes.index_select(0, fit_rows) : codes,
                                  modality.features);
    else
      hvg = highly_variable_genes(x, options.n_top_genes, codes, modality.features);
    x = x.select_cols(hvg.selected);
    raw = raw.select_cols(hvg.selected);
    std::vector<std::string> kept;
    for (int64_t j : hvg.selected) kept.push_back(modality.features[j]);
    modality.features = std::move(kept);
  }
  if (options.scale) x = scale(x, options.scale_max, fit_rows);
  modality.X = std::move(x);
  modality.counts = std::move(raw);
  return hvg;
}

}  // namespace scssl
