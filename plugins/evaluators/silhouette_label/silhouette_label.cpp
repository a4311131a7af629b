// Silhouette label (docs/metrics.md §2.2): how well cell types separate in the embedding. The exact
// all-pairs silhouette with the labels as clusters, averaged over cells, rescaled from [-1, 1] to
// [0, 1]: (mean s_i + 1) / 2. Cells without a label take no part. With max_cells, on a seeded
// sample stratified by cell type (docs/metrics.md §1.6).
#include <cmath>

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

  static std::vector<scssl::ParamSpec> parameters() {
    return scssl::silhouette_sampling_parameters(
        "0: every labelled cell (exact); more: a sample of about this many cells, stratified by "
        "cell type");
  }

  SilhouetteLabel(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host), max_cells_(p.get_int("max_cells")), seed_(p.get_int("seed")) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("silhouette_label");
    if (!ctx.embedding.defined() || ctx.embedding.dim() != 2 ||
        ctx.embedding.size(0) != ctx.data.n_cells())
      throw scssl::BadData("silhouette_label: the embedding must have one row per cell");
    torch::Tensor codes = labels->codes.to(torch::kInt64);
    const torch::Tensor codes32 = labels->codes.to(torch::kInt32).contiguous();
    const scssl::SampledRows sample = scssl::silhouette_sample(
        {codes32.data_ptr<int32_t>(), codes32.data_ptr<int32_t>() + codes32.numel()}, max_cells_,
        seed_, "silhouette_label", "computed");
    if (sample.rows.empty()) return sink.undefined("silhouette_label", "no cell has a cell type");
    if (!sample.note.empty()) sink.note("silhouette_label", sample.note);
    const torch::Tensor keep = torch::tensor(sample.rows, torch::kInt64);
    const torch::Tensor width =
        (scssl::shared_silhouette_samples(host_, ctx.embedding, keep, codes.index_select(0, keep),
                                          {}, ctx.device) +
         1.0) /
        2.0;
    sink.report_cells("silhouette_label",
                      torch::full({ctx.data.n_cells()}, std::nan(""), torch::kFloat64)
                          .index_copy_(0, keep, width));
    sink.report("silhouette_label", width.mean().item<double>());
  }

 private:
  int64_t max_cells_, seed_;
};

}  // namespace

SCSSL_PLUGIN(SilhouetteLabel, "silhouette_label", "1.0.0",
             "scIB silhouette label: exact silhouette of the cell types in the embedding")
