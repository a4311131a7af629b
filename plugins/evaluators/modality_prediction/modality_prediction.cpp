// Missing-modality prediction (docs/metrics.md §4.2): each query cell's protein (ADT) profile is
// predicted as the mean of its 5 nearest reference cells by cosine distance in the embedding, and
// compared with the measured one by Pearson correlation across proteins. The protein block is
// used as stored (raw counts when the data set gives them), as the reference does; the embedding
// should be the method's RNA-only one (e.g. method.predict_only_rna = true).
#include <cmath>
#include <limits>

#include "scssl/knn.hpp"
#include "scssl/plugin.hpp"

namespace {

class ModalityPrediction final : public scssl::IEvaluator {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("k", SCSSL_PARAM_INT, "5", "reference neighbours averaged per query cell")
            .at_least(1),
        scssl::ParamSpec("modality", SCSSL_PARAM_STRING, "ADT", "the modality to predict")
            .nonempty()};
  }
  static uint64_t requirements() { return SCSSL_NEEDS_BATCH | SCSSL_NEEDS_QUERY_BATCHES; }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"pearson_mean", SCSSL_GROUP_MODALITY, 1,
             "mean over query cells of the per-cell Pearson r"},
            {"pearson_min", SCSSL_GROUP_MODALITY, 1, "lowest per-cell Pearson r"},
            {"pearson_max", SCSSL_GROUP_MODALITY, 1, "highest per-cell Pearson r"}};
  }
  ModalityPrediction(const scssl::ParamSet& p, scssl::HostContext& host)
      : IEvaluator(host), k_(p.get_int("k")), modality_(p.get_string("modality")) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const int m = ctx.data.modality_index(modality_);
    if (m < 0)
      throw scssl::BadData("modality_prediction: the data set has no modality '" + modality_ +
                           "' (it needs paired RNA + protein data)");
    const scssl::Modality& protein = ctx.data.modalities[m];
    const scssl::Matrix& stored = protein.counts.empty() ? protein.X : protein.counts;
    const scssl::Column* batches = &ctx.data.require_batches("modality_prediction");
    std::vector<char> is_query(batches->categories.size(), 0);
    for (const auto& q : ctx.query_batches) {
      auto it = std::find(batches->categories.begin(), batches->categories.end(), q);
      if (it == batches->categories.end())
        throw scssl::BadData("modality_prediction: query batch '" + q + "' is not in the data");
      is_query[it - batches->categories.begin()] = 1;
    }
    std::vector<int64_t> reference, query;
    const int32_t* code = batches->codes.data_ptr<int32_t>();
    for (int64_t i = 0; i < ctx.data.n_cells(); ++i)
      if (code[i] >= 0) (is_query[code[i]] ? query : reference).push_back(i);
    if (reference.empty() || query.empty())
      throw scssl::BadData("modality_prediction: the query batches must leave cells on both sides");
    const torch::Tensor ref_ids = torch::tensor(reference, torch::kInt64);
    const torch::Tensor query_ids = torch::tensor(query, torch::kInt64);
    scssl::Neighbors nn = scssl::knn_exact(ctx.embedding.index_select(0, ref_ids),
                                           ctx.embedding.index_select(0, query_ids), k_,
                                           scssl::Distance::Cosine, ctx.device);
    // Mean of the neighbours' protein vectors, in float64.
    const torch::Tensor ref_protein = stored.rows_dense(ref_ids).to(torch::kFloat64);
    const torch::Tensor predicted = ref_protein.index_select(0, nn.indices.flatten())
                                        .view({query_ids.size(0), nn.indices.size(1), -1})
                                        .mean(1);
    const torch::Tensor truth = stored.rows_dense(query_ids).to(torch::kFloat64);
    // Per-cell Pearson r across proteins; a constant vector gives NaN, which plain mean/min/max
    // pass on, as the reference reports them.
    const torch::Tensor a = predicted - predicted.mean(1, true), b = truth - truth.mean(1, true);
    const torch::Tensor r =
        ((a * b).sum(1) / (a.pow(2).sum(1) * b.pow(2).sum(1)).sqrt()).clamp(-1.0, 1.0);
    const bool any_nan = torch::isnan(r).any().item<bool>();
    const double nan = std::numeric_limits<double>::quiet_NaN();
    if (any_nan)
      for (const char* name : {"pearson_mean", "pearson_min", "pearson_max"})
        sink.note(name,
                  "a query cell's measured or predicted values are constant across the "
                  "features, so its correlation is undefined (as the study reports it)");
    sink.report("pearson_mean", any_nan ? nan : r.mean().item<double>());
    sink.report("pearson_min", any_nan ? nan : r.min().item<double>());
    sink.report("pearson_max", any_nan ? nan : r.max().item<double>());
  }

 private:
  int64_t k_;
  std::string modality_;
};

}  // namespace

SCSSL_PLUGIN(ModalityPrediction, "modality_prediction", "1.0.0",
             "Missing-modality prediction: protein profiles from 5 cosine neighbours (Pearson r)")
