// Silhouette batch (docs/metrics.md §3.1): batch mixing within each cell type. For every label, the
// silhouette of its cells with the batch as cluster (distances within the label only), per-cell
// score 1 - |s|, averaged over the label's cells; the metric is the unweighted mean over labels.
// A label is skipped when its cells come from one batch (nothing to mix) or when every cell is its
// own batch (silhouette undefined: sklearn needs 2 <= clusters <= cells - 1). If every label is
// skipped (e.g. a single batch in the data) the metric is NaN. Cells missing a label or a batch
// take no part.
#include <limits>
#include <set>

#include "scssl/plugin.hpp"
#include "scssl/silhouette.hpp"

namespace {

class SilhouetteBatch final : public scssl::IEvaluator {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_LABELS | SCSSL_NEEDS_BATCH; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"silhouette_batch", SCSSL_GROUP_BATCH, 1,
             "mean over cell types of mean (1 - |silhouette with batch as cluster|)"}};
  }

  SilhouetteBatch(const scssl::ParamSet&, scssl::HostContext& host) : IEvaluator(host) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("silhouette_batch");
    const scssl::Column* batches = &ctx.data.require_batches("silhouette_batch");
    if (!ctx.embedding.defined() || ctx.embedding.dim() != 2 ||
        ctx.embedding.size(0) != ctx.data.n_cells())
      throw scssl::BadData("silhouette_batch: the embedding must have one row per cell");

    const int32_t* label = labels->codes.data_ptr<int32_t>();
    const int32_t* batch = batches->codes.data_ptr<int32_t>();
    const size_t n_labels = labels->categories.size();
    std::vector<std::vector<int64_t>> cells_of(n_labels);
    for (int64_t i = 0; i < ctx.data.n_cells(); ++i)
      if (label[i] >= 0 && batch[i] >= 0) cells_of[label[i]].push_back(i);

    torch::Tensor batch64 = batches->codes.to(torch::kInt64);
    double total = 0;
    int64_t scored = 0;
    for (size_t l = 0; l < n_labels; ++l) {
      const auto& cells = cells_of[l];
      if (cells.empty()) continue;
      std::set<int32_t> present;
      for (int64_t i : cells) present.insert(batch[i]);
      if (present.size() < 2 || present.size() == cells.size()) {
        host_.debug("silhouette_batch: label '" + labels->categories[l] + "' skipped (" +
                    std::to_string(present.size()) + " batch(es) over " +
                    std::to_string(cells.size()) + " cell(s))");
        continue;
      }
      torch::Tensor ids = torch::tensor(cells, torch::kInt64);
      torch::Tensor s = scssl::silhouette_samples(ctx.embedding.index_select(0, ids),
                                                  batch64.index_select(0, ids));
      total += (1.0 - s.abs()).mean().item<double>();
      ++scored;
    }
    if (scored == 0) {
      host_.warn("silhouette_batch: no cell type occurs in two or more batches; reporting NaN");
      sink.report("silhouette_batch", std::numeric_limits<double>::quiet_NaN());
      return;
    }
    sink.report("silhouette_batch", total / static_cast<double>(scored));
  }
};

}  // namespace

SCSSL_PLUGIN(
    SilhouetteBatch, "silhouette_batch", "1.0.0",
    "scIB silhouette batch: per cell type, how little the batches separate (1 - |silhouette|)")
