// Isolated labels, ASW variant as in scib-metrics 0.5.1 (docs/metrics.md §2.3): cell types found
// in the fewest batches are the "isolated" ones; each is scored by the mean rescaled silhouette
// (s + 1)/2 of its cells, where s is the silhouette over ALL cell types computed once (not
// isolated-vs-rest), and the metric is the unweighted mean over isolated labels. The threshold is
// the minimum number of batches any label occurs in, so the set is never empty; if every label is
// in every batch all labels count (scib-metrics' behaviour, unlike scib's NaN). Cells missing a
// label or a batch take no part. With max_cells, the silhouette is computed on a seeded sample
// stratified by cell type; which labels are isolated is still decided on every cell
// (docs/metrics.md §1.6).
#include <limits>
#include <set>

#include "scssl/plugin.hpp"
#include "scssl/silhouette.hpp"

namespace {

class IsolatedLabels final : public scssl::IEvaluator {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_LABELS | SCSSL_NEEDS_BATCH; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"isolated_labels", SCSSL_GROUP_BIO, 1,
             "mean over the labels in the fewest batches of their mean (silhouette + 1) / 2"}};
  }

  static std::vector<scssl::ParamSpec> parameters() {
    return scssl::silhouette_sampling_parameters(
        "0: every cell with a type and a batch (exact); more: the silhouette of a sample of about "
        "this many cells, stratified by cell type");
  }

  IsolatedLabels(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host), max_cells_(p.get_int("max_cells")), seed_(p.get_int("seed")) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("isolated_labels");
    const scssl::Column* batches = &ctx.data.require_batches("isolated_labels");
    if (!ctx.embedding.defined() || ctx.embedding.dim() != 2 ||
        ctx.embedding.size(0) != ctx.data.n_cells())
      throw scssl::BadData("isolated_labels: the embedding must have one row per cell");

    const int32_t* label = labels->codes.data_ptr<int32_t>();
    const int32_t* batch = batches->codes.data_ptr<int32_t>();
    std::vector<int64_t> keep;
    const int64_t n_labels = static_cast<int64_t>(labels->categories.size());
    std::vector<std::set<int32_t>> batches_of(n_labels);
    for (int64_t i = 0; i < ctx.data.n_cells(); ++i) {
      if (label[i] < 0 || batch[i] < 0) continue;
      keep.push_back(i);
      batches_of[label[i]].insert(batch[i]);
    }
    if (keep.empty())
      return sink.undefined("isolated_labels", "no cell has both a cell type and a batch");
    // Threshold = fewest batches of any label that has cells (categories without cells ignored).
    size_t threshold = std::numeric_limits<size_t>::max();
    for (const auto& b : batches_of)
      if (!b.empty()) threshold = std::min(threshold, b.size());
    if (max_cells_ > 0) {
      std::vector<int32_t> stratum(ctx.data.n_cells(), -1);
      for (int64_t i : keep) stratum[i] = label[i];
      scssl::SampledRows sample = scssl::silhouette_sample(
          stratum, max_cells_, seed_, "isolated_labels", "silhouette computed");
      if (!sample.note.empty()) sink.note("isolated_labels", sample.note);
      keep = std::move(sample.rows);
    }

    torch::Tensor ids = torch::tensor(keep, torch::kInt64);
    torch::Tensor codes = labels->codes.to(torch::kInt64).index_select(0, ids);
    // Only the isolated labels' cells are scored, so only their rows of distances are needed (all
    // rows, shared with silhouette_label, when every label is isolated).
    torch::Tensor isolated = torch::zeros({static_cast<int64_t>(keep.size())}, torch::kBool);
    for (size_t j = 0; j < keep.size(); ++j)
      if (batches_of[label[keep[j]]].size() <= threshold) isolated[static_cast<int64_t>(j)] = true;
    torch::Tensor s =
        scssl::shared_silhouette_samples(host_, ctx.embedding, ids, codes, isolated, ctx.device);
    const double* sp = s.data_ptr<double>();
    std::vector<double> sum(n_labels, 0.0);
    std::vector<int64_t> count(n_labels, 0);
    for (size_t j = 0; j < keep.size(); ++j) {
      sum[label[keep[j]]] += (sp[j] + 1.0) / 2.0;
      ++count[label[keep[j]]];
    }
    double total = 0;
    int64_t n_isolated = 0;
    std::string names;
    std::vector<double> score_of(n_labels, std::nan(""));
    for (int64_t l = 0; l < n_labels; ++l) {
      if (batches_of[l].empty() || batches_of[l].size() > threshold) continue;
      score_of[l] = sum[l] / static_cast<double>(count[l]);
      total += score_of[l];
      ++n_isolated;
      names += (names.empty() ? "" : ", ") + labels->categories[l];
    }
    // Each cell of an isolated type carries its type's score; other cells have none.
    torch::Tensor per_cell = torch::full({ctx.data.n_cells()}, std::nan(""), torch::kFloat64);
    double* pc = per_cell.data_ptr<double>();
    for (int64_t i = 0; i < ctx.data.n_cells(); ++i)
      if (label[i] >= 0 && batch[i] >= 0) pc[i] = score_of[label[i]];
    sink.report_cells("isolated_labels", per_cell);
    host_.debug("isolated_labels: threshold " + std::to_string(threshold) + " batch(es); " +
                std::to_string(n_isolated) + " isolated label(s): " + names);
    sink.report("isolated_labels", total / static_cast<double>(n_isolated));
  }

 private:
  int64_t max_cells_, seed_;
};

}  // namespace

SCSSL_PLUGIN(
    IsolatedLabels, "isolated_labels", "1.0.0",
    "scIB isolated labels (ASW variant): silhouette of the labels found in the fewest batches")
