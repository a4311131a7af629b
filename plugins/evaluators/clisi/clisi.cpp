// cLISI (docs/metrics.md §2.6): how pure each cell's 90-neighbourhood is in cell types. The median
// LISI over cells, rescaled to (L - median) / (L - 1): 1 = every neighbourhood a single type.
#include <cmath>

#include "scssl/lisi.hpp"
#include "scssl/plugin.hpp"

namespace {

class Clisi final : public scssl::IEvaluator {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("k", SCSSL_PARAM_INT, "90",
                             "neighbours per cell (perplexity k / 3), as scib-metrics")
                .at_least(3)};
  }
  static uint64_t requirements() { return SCSSL_NEEDS_LABELS; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"clisi", SCSSL_GROUP_BIO, 1,
             "cell-type LISI, scaled so that 1 means pure neighbourhoods"}};
  }
  Clisi(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host), k_(p.get_int("k")) {}
  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("clisi");
    auto [indices, distances] = host_.neighbors(k_);
    const double n_labels = static_cast<double>(scssl::count_present(labels->codes));
    if (n_labels < 2)
      return sink.undefined("clisi", "cLISI needs two or more cell types; the data has " +
                                         std::to_string(static_cast<int>(n_labels)));
    // Scaled per cell: the metric is the median of the per-cell column.
    const torch::Tensor scaled = (n_labels - scssl::lisi_per_cell(indices, distances, labels->codes,
                                                                  labels->categories.size())) /
                                 (n_labels - 1);
    sink.report_cells("clisi", scaled);
    sink.report("clisi", scssl::nanmedian(scaled));
  }

 private:
  int64_t k_;
};

}  // namespace

SCSSL_PLUGIN(Clisi, "clisi", "1.0.0",
             "cLISI: cell-type purity of each cell's 90 nearest neighbours (scIB)")
