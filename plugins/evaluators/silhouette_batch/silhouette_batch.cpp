// Silhouette batch (docs/metrics.md §3.1): batch mixing within each cell type. For every label, the
// silhouette of its cells with the batch as cluster (distances within the label only), per-cell
// score 1 - |s|, averaged over the label's cells; the metric is the unweighted mean over labels.
// A label is skipped when its cells come from one batch (nothing to mix) or when every cell is its
// own batch (silhouette undefined: sklearn needs 2 <= clusters <= cells - 1). If every label is
// skipped (e.g. a single batch in the data) the metric is NaN. Cells missing a label or a batch
// take no part. With max_cells, on a seeded sample stratified by cell type and batch
// (docs/metrics.md §1.6).
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

  static std::vector<scssl::ParamSpec> parameters() {
    return scssl::silhouette_sampling_parameters(
        "0: every cell with a type and a batch (exact); more: a sample of about this many cells, "
        "stratified by cell type and batch");
  }

  SilhouetteBatch(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host), max_cells_(p.get_int("max_cells")), seed_(p.get_int("seed")) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("silhouette_batch");
    const scssl::Column* batches = &ctx.data.require_batches("silhouette_batch");
    if (!ctx.embedding.defined() || ctx.embedding.dim() != 2 ||
        ctx.embedding.size(0) != ctx.data.n_cells())
      throw scssl::BadData("silhouette_batch: the embedding must have one row per cell");

    const int32_t* label = labels->codes.data_ptr<int32_t>();
    const int32_t* batch = batches->codes.data_ptr<int32_t>();
    const size_t n_labels = labels->categories.size();
    const int32_t n_batches = static_cast<int32_t>(batches->categories.size());
    std::vector<int32_t> stratum(ctx.data.n_cells(), -1);
    for (int64_t i = 0; i < ctx.data.n_cells(); ++i)
      if (label[i] >= 0 && batch[i] >= 0) stratum[i] = label[i] * n_batches + batch[i];
    const scssl::SampledRows sample =
        scssl::silhouette_sample(stratum, max_cells_, seed_, "silhouette_batch", "computed");
    if (!sample.note.empty()) sink.note("silhouette_batch", sample.note);
    std::vector<std::vector<int64_t>> cells_of(n_labels);
    for (int64_t i : sample.rows) cells_of[label[i]].push_back(i);

    torch::Tensor batch64 = batches->codes.to(torch::kInt64);
    torch::Tensor per_cell = torch::full({ctx.data.n_cells()}, std::nan(""), torch::kFloat64);
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
                                                  batch64.index_select(0, ids), {}, ctx.device);
      const torch::Tensor score = 1.0 - s.abs();
      per_cell.index_copy_(0, ids, score);
      total += score.mean().item<double>();
      ++scored;
    }
    if (scored == 0)
      return sink.undefined("silhouette_batch",
                            "no cell type has cells in two or more batches (and fewer batches "
                            "than cells), so no type can be scored");
    // The metric is the mean over types of each type's mean of this column.
    sink.report_cells("silhouette_batch", per_cell);
    sink.report("silhouette_batch", total / static_cast<double>(scored));
  }

 private:
  int64_t max_cells_, seed_;
};

}  // namespace

SCSSL_PLUGIN(
    SilhouetteBatch, "silhouette_batch", "1.0.0",
    "scIB silhouette batch: per cell type, how little the batches separate (1 - |silhouette|)")
