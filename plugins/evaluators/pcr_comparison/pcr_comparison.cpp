// PCR comparison (docs/metrics.md §3.5): how much of the variance explained by batch in the
// unintegrated data (X_pre, the host's PCA of it) the embedding removed:
//   score = max(0, (pcr_pre - pcr_post) / pcr_pre), NaN when pcr_pre = 0 (e.g. a single batch).
// PCR(Y) is the variance-weighted mean over all principal components of the one-way ANOVA R^2 of
// that component on the batch. With all components kept, that weighted mean is exactly the share
// of Y's total variance that lies between batch means, which needs no SVD and does not depend on
// the PCA's signs or rotation:
//   PCR(Y) = sum_b n_b |mean_b(Y) - mean(Y)|^2 / sum_i |y_i - mean(Y)|^2.
// Computed in float64. Cells without a batch take no part.
#include <limits>

#include "scssl/plugin.hpp"

namespace {

// Share of the variance of y (float [n, p]) lying between the groups of `batch` (int64 [n],
// 0..B-1). A matrix without any variance has nothing explained by batch: 0.
double variance_share_of_batch(const torch::Tensor& y_in, const torch::Tensor& batch,
                               int64_t n_batches) {
  torch::Tensor y = y_in.to(torch::kFloat64);
  y = y - y.mean(0, /*keepdim=*/true);
  const double total = (y * y).sum().item<double>();
  if (total <= 0) return 0.0;
  torch::Tensor group_sums = torch::zeros({n_batches, y.size(1)}, torch::kFloat64);
  group_sums.index_add_(0, batch, y);
  torch::Tensor counts = torch::bincount(batch, {}, n_batches).to(torch::kFloat64);
  // n_b * mean_b^2 = sum_b^2 / n_b; empty batches contribute nothing.
  torch::Tensor between = (group_sums * group_sums).sum(1) / counts.clamp_min(1.0);
  return between.sum().item<double>() / total;
}

class PcrComparison final : public scssl::IEvaluator {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_UNINTEGRATED | SCSSL_NEEDS_BATCH; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"pcr_comparison", SCSSL_GROUP_BATCH, 1,
             "relative drop of the variance explained by batch, unintegrated PCA vs embedding"}};
  }

  PcrComparison(const scssl::ParamSet&, scssl::HostContext& host) : IEvaluator(host) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* batches = &ctx.data.require_batches("pcr_comparison");
    const int64_t n = ctx.data.n_cells();
    if (!ctx.embedding.defined() || ctx.embedding.dim() != 2 || ctx.embedding.size(0) != n)
      throw scssl::BadData("pcr_comparison: the embedding must have one row per cell");
    if (!ctx.unintegrated.defined() || ctx.unintegrated.numel() == 0)
      throw scssl::BadData(
          "pcr_comparison needs the unintegrated PCA (X_pre) from the host, and none was given");
    if (ctx.unintegrated.dim() != 2 || ctx.unintegrated.size(0) != n)
      throw scssl::BadData("pcr_comparison: the unintegrated PCA must have one row per cell (" +
                           std::to_string(n) + ")");
    for (const auto* t : {&ctx.embedding, &ctx.unintegrated})
      if (!torch::isfinite(*t).all().item<bool>())
        throw scssl::BadData(std::string("pcr_comparison: the ") +
                             (t == &ctx.embedding ? "embedding" : "unintegrated PCA") +
                             " contains NaN or infinite values");

    torch::Tensor codes = batches->codes.to(torch::kInt64);
    torch::Tensor keep = torch::nonzero(codes >= 0).squeeze(1);
    const int64_t n_batches = static_cast<int64_t>(batches->categories.size());
    torch::Tensor b = codes.index_select(0, keep);
    // Count the batches that actually have cells: with one, pcr_pre is 0 up to rounding, and the
    // ratio of two rounding residues must not be reported as a score.
    const int64_t present =
        keep.numel() == 0 ? 0 : (torch::bincount(b, {}, n_batches) > 0).sum().item<int64_t>();
    if (present < 2)
      return sink.undefined("pcr_comparison",
                            "fewer than two batches have cells, so batch explains no variance");
    const double pre =
        variance_share_of_batch(ctx.unintegrated.index_select(0, keep), b, n_batches);
    const double post = variance_share_of_batch(ctx.embedding.index_select(0, keep), b, n_batches);
    host_.debug("pcr_comparison: pcr_pre " + std::to_string(pre) + ", pcr_post " +
                std::to_string(post));
    if (pre == 0)
      return sink.undefined("pcr_comparison",
                            "batch explains no variance of the unintegrated data, so there is "
                            "nothing to remove");
    sink.report("pcr_comparison", std::max(0.0, (pre - post) / pre));
  }
};

}  // namespace

SCSSL_PLUGIN(PcrComparison, "pcr_comparison", "1.0.0",
             "scIB PCR comparison: variance explained by batch, unintegrated PCA vs embedding")
