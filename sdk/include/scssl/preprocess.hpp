// Preprocessing shared by every method, as scanpy does it: normalize_total, log1p, highly variable
// genes (Seurat flavour, batch-aware), optional scaling. Works on CSR without densifying.
#pragma once

#include <string>
#include <vector>

#include "scssl/cell_data.hpp"

namespace scssl {

struct PreprocessOptions {
  bool normalize = true;  // normalize_total: every cell sums to target_sum
  double target_sum = 1e4;
  bool log1p = true;           // natural log(1 + x)
  int64_t n_top_genes = 2000;  // highly variable genes kept; 0 or >= features keeps all
  bool batch_aware = true;     // select HVGs per batch, as scanpy's batch_key does
  bool scale = false;          // zero mean, unit variance per feature, clipped (makes X dense)
  double scale_max = 10.0;
};

// Scanpy's `highly_variable_genes(flavor='seurat')` statistics per feature.
struct HvgResult {
  std::vector<double> means;             // log1p of the mean of expm1(x), averaged over batches
  std::vector<double> dispersions;       // log of variance / mean
  std::vector<double> dispersions_norm;  // z-score within mean bins (nanmean over batches)
  std::vector<int64_t> n_batches;        // batches in which the feature was highly variable
  std::vector<int64_t> selected;         // chosen features, in their original order
};

// Each row scaled to sum to target_sum (rows summing to 0 stay 0). Counts must be finite and
// non-negative; throws BadData naming `what` otherwise.
Matrix normalize_total(const Matrix& counts, double target_sum, const std::string& what);
Matrix log1p(Matrix x);
// batch_codes: int32 per cell (-1 = no batch) or undefined for one batch. feature_names (may be
// empty) break ranking ties as scanpy does; n_bins = 20 as scanpy.
HvgResult highly_variable_genes(const Matrix& lognorm, int64_t n_top_genes,
                                const torch::Tensor& batch_codes,
                                const std::vector<std::string>& feature_names = {},
                                int64_t n_bins = 20);
// Dense, zero-centred, unit variance (ddof = 1 as scanpy's scale), clipped at +-max_value. The
// means and deviations come from the rows `fit_rows` (int64 row ids; undefined: every row) and
// are applied to every row.
Matrix scale(const Matrix& x, double max_value, const torch::Tensor& fit_rows = {});

// Runs the whole chain on one modality: X becomes the processed matrix, counts the raw counts of
// the kept features. `batches` may be null. Returns the HVG statistics when selection ran.
// `fit_rows` (int64 row ids; undefined: every row) are the cells whose statistics choose the
// features and the scaling: the reference cells of a query-mapping run, so that held-out cells
// cannot influence them (docs/evaluation.md, "Protocols"). normalize_total and log1p work cell by
// cell and are applied to every row.
HvgResult preprocess_modality(Modality& modality, const PreprocessOptions& options,
                              const Column* batches, const torch::Tensor& fit_rows = {});

}  // namespace scssl
