// Silhouette label (docs/metrics.md §2.2): how well cell types separate in the embedding. The exact
// all-pairs silhouette with the labels as clusters, averaged over cells, rescaled from [-1, 1] to
// [0, 1]: (mean s_i + 1) / 2. Cells without a label take no part.
#include <limits>

#include "scssl/plugin.hpp"
#include "scssl/silhouette.hpp"

namespace {

class SilhouetteLabel final : public scssl::IEvaluator {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_LABELS; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"silhouette_label", SCSSL_GROUP_BIO, 1,
             "(mean silhouette with cell types as clusters + 1) / 2 (scib-metrics 0.5.1)"}};
  }

  SilhouetteLabel(const scssl::ParamSet&, scssl::HostContext& host) : IEvaluator(host) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("silhouette_label");
    if (!ctx.embedding.defined() || ctx.embedding.dim() != 2 ||
        ctx.embedding.size(0) != ctx.data.n_cells())
      throw scssl::BadData("silhouette_label: the embedding must have one row per cell");
    torch::Tensor codes = labels->codes.to(torch::kInt64);
    torch::Tensor keep = torch::nonzero(codes >= 0).squeeze(1);
    if (keep.numel() == 0) {
      host_.warn("silhouette_label: no cell has a label; reporting NaN");
      sink.report("silhouette_label", std::numeric_limits<double>::quiet_NaN());
      return;
    }
    torch::Tensor s =
        scssl::shared_silhouette_samples(host_, ctx.embedding, keep, codes.index_select(0, keep));
    sink.report("silhouette_label", (s.mean().item<double>() + 1.0) / 2.0);
  }
};

}  // namespace

SCSSL_PLUGIN(SilhouetteLabel, "silhouette_label", "1.0.0",
             "scIB silhouette label: exact silhouette of the cell types in the embedding")
