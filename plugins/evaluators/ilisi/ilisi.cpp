// iLISI (docs/metrics.md §3.2): how well batches mix in each cell's 90-neighbourhood. The median
// LISI over cells, rescaled to (median - 1) / (B - 1): 1 = every neighbourhood as mixed as B
// batches allow.
#include <cmath>

#include "scssl/lisi.hpp"
#include "scssl/plugin.hpp"

namespace {

class Ilisi final : public scssl::IEvaluator {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("k", SCSSL_PARAM_INT, "90",
                             "neighbours per cell (perplexity k / 3), as scib-metrics")
                .at_least(3)};
  }
  static uint64_t requirements() { return SCSSL_NEEDS_BATCH; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"ilisi", SCSSL_GROUP_BATCH, 1,
             "batch LISI, scaled so that 1 means fully mixed neighbourhoods"}};
  }
  Ilisi(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host), k_(p.get_int("k")) {}
  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* batches = &ctx.data.require_batches("ilisi");
    auto [indices, distances] = host_.neighbors(k_);
    const double n_batches = static_cast<double>(scssl::count_present(batches->codes));
    if (n_batches < 2)
      return sink.undefined("ilisi", "iLISI needs two or more batches; the data has " +
                                         std::to_string(static_cast<int>(n_batches)));
    // Scaled per cell: the metric is the median of the per-cell column.
    const torch::Tensor scaled =
        (scssl::lisi_per_cell(indices, distances, batches->codes, batches->categories.size()) - 1) /
        (n_batches - 1);
    sink.report_cells("ilisi", scaled);
    sink.report("ilisi", scssl::nanmedian(scaled));
  }

 private:
  int64_t k_;
};

}  // namespace

SCSSL_PLUGIN(Ilisi, "ilisi", "1.0.0",
             "iLISI: batch mixing in each cell's 90 nearest neighbours (scIB)")
