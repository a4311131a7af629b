// Cell-type annotation by query-to-reference mapping (docs/metrics.md §4.1): the cells of the
// held-out query batches are labelled by a k-nearest-neighbour vote among the reference cells, in
// the embedding, and scored with macro-F1 and accuracy. Like sklearn's KNeighborsClassifier:
// Euclidean distance, uniform weights, vote ties to the class whose name sorts first.
#include <algorithm>
#include <limits>
#include <set>

#include "scssl/knn.hpp"
#include "scssl/plugin.hpp"

namespace {

struct Scores {
  double macro_f1;
  double accuracy;
};

class KnnAnnotation final : public scssl::IEvaluator {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("k", SCSSL_PARAM_INT, "11", "neighbours in the vote (scSSL-Bench uses 11)")
            .at_least(1)};
  }
  static uint64_t requirements() {
    return SCSSL_NEEDS_LABELS | SCSSL_NEEDS_BATCH | SCSSL_NEEDS_QUERY_BATCHES;
  }
  static std::vector<scssl::MetricSpec> metrics() {
    return {{"macro_f1", SCSSL_GROUP_ANNOTATION, 1,
             "macro-F1 on the query, cell types seen on one side only excluded"},
            {"accuracy", SCSSL_GROUP_ANNOTATION, 1,
             "accuracy on the query, cell types seen on one side only excluded"},
            {"macro_f1_in", SCSSL_GROUP_ANNOTATION, 1, "macro-F1 on the query, all cell types"},
            {"accuracy_in", SCSSL_GROUP_ANNOTATION, 1, "accuracy on the query, all cell types"}};
  }

  KnnAnnotation(const scssl::ParamSet& params, scssl::HostContext& host)
      : IEvaluator(host), k_(params.get_int("k")) {}

  void evaluate(const scssl::EvalContext& ctx, const scssl::MetricSink& sink) override {
    const scssl::Column* labels = &ctx.data.require_labels("knn_annotation");
    const scssl::Column* batches = &ctx.data.require_batches("knn_annotation");
    if (ctx.query_batches.empty())
      throw scssl::InvalidArgument(
          "knn_annotation needs the held-out batches: set evaluation.query_batches");

    std::vector<char> is_query(batches->categories.size(), 0);
    for (const auto& q : ctx.query_batches) {
      auto it = std::find(batches->categories.begin(), batches->categories.end(), q);
      if (it == batches->categories.end())
        throw scssl::BadData("knn_annotation: query batch '" + q + "' is not in the data");
      is_query[it - batches->categories.begin()] = 1;
    }
    const int32_t* label = labels->codes.data_ptr<int32_t>();
    const int32_t* batch = batches->codes.data_ptr<int32_t>();
    std::vector<int64_t> reference, query;
    for (int64_t i = 0; i < ctx.data.n_cells(); ++i) {
      if (label[i] < 0 || batch[i] < 0) continue;  // unlabelled cells take no part
      (is_query[batch[i]] ? query : reference).push_back(i);
    }

    // Rank of every category name in sorted order: sklearn's class order, used for vote ties.
    std::vector<int32_t> by_name(labels->categories.size());
    for (size_t c = 0; c < by_name.size(); ++c) by_name[c] = static_cast<int32_t>(c);
    std::sort(by_name.begin(), by_name.end(),
              [&](int32_t a, int32_t b) { return labels->categories[a] < labels->categories[b]; });
    rank_.assign(by_name.size(), 0);
    for (size_t r = 0; r < by_name.size(); ++r) rank_[by_name[r]] = static_cast<int32_t>(r);

    const Scores in = score(ctx.embedding, label, reference, query, ctx.device);
    // Drop cell types present on one side only, from both sides.
    std::set<int32_t> ref_types, query_types;
    for (int64_t i : reference) ref_types.insert(label[i]);
    for (int64_t i : query) query_types.insert(label[i]);
    auto shared = [&](int64_t i) {
      return ref_types.count(label[i]) && query_types.count(label[i]);
    };
    std::vector<int64_t> ref_ex, query_ex;
    std::copy_if(reference.begin(), reference.end(), std::back_inserter(ref_ex), shared);
    std::copy_if(query.begin(), query.end(), std::back_inserter(query_ex), shared);
    const Scores ex = score(ctx.embedding, label, ref_ex, query_ex, ctx.device);
    host_.debug("knn_annotation: " + std::to_string(reference.size()) + " reference and " +
                std::to_string(query.size()) + " query cells; " +
                std::to_string(query.size() - query_ex.size()) + " query cells of one-sided types");

    if (query_ex.empty())
      for (const char* name : {"macro_f1", "accuracy"})
        sink.note(name, "no query cell has a cell type that the reference also has");
    if (query.empty() || reference.empty())
      for (const char* name : {"macro_f1_in", "accuracy_in"})
        sink.note(name, "the reference or the query has no labelled cell");
    sink.report("macro_f1", ex.macro_f1);
    sink.report("accuracy", ex.accuracy);
    sink.report("macro_f1_in", in.macro_f1);
    sink.report("accuracy_in", in.accuracy);
  }

 private:
  Scores score(const torch::Tensor& embedding, const int32_t* label,
               const std::vector<int64_t>& reference, const std::vector<int64_t>& query,
               const torch::Device& device) const {
    constexpr double nan = std::numeric_limits<double>::quiet_NaN();
    if (reference.empty() || query.empty()) return {nan, nan};
    auto rows = [&](const std::vector<int64_t>& ids) {
      return embedding.index_select(0, torch::tensor(ids, torch::kInt64));
    };
    scssl::Neighbors nn =
        scssl::knn_exact(rows(reference), rows(query), k_, scssl::Distance::Euclidean, device);
    const int64_t k = nn.indices.size(1);
    const int64_t* idx = nn.indices.data_ptr<int64_t>();
    const size_t n_classes = rank_.size();
    std::vector<int64_t> tp(n_classes, 0), fp(n_classes, 0), fn(n_classes, 0);
    std::vector<char> seen(n_classes, 0);
    int64_t correct = 0;
    std::vector<int64_t> votes(n_classes);
    for (size_t q = 0; q < query.size(); ++q) {
      std::fill(votes.begin(), votes.end(), 0);
      for (int64_t j = 0; j < k; ++j) ++votes[label[reference[idx[q * k + j]]]];
      int32_t best = -1;
      for (size_t c = 0; c < n_classes; ++c) {
        if (votes[c] == 0) continue;
        if (best < 0 || votes[c] > votes[best] ||
            (votes[c] == votes[best] && rank_[c] < rank_[best]))
          best = static_cast<int32_t>(c);
      }
      const int32_t truth = label[query[q]];
      seen[truth] = seen[best] = 1;
      if (best == truth) {
        ++correct;
        ++tp[truth];
      } else {
        ++fp[best];
        ++fn[truth];
      }
    }
    // Macro-F1 over every class that is true or predicted somewhere in the query (sklearn).
    double f1_sum = 0;
    int64_t n = 0;
    for (size_t c = 0; c < n_classes; ++c) {
      if (!seen[c]) continue;
      f1_sum += tp[c] ? 2.0 * tp[c] / (2.0 * tp[c] + fp[c] + fn[c]) : 0.0;
      ++n;
    }
    return {f1_sum / n, static_cast<double>(correct) / query.size()};
  }

  int64_t k_;
  std::vector<int32_t> rank_;
};

}  // namespace

SCSSL_PLUGIN(KnnAnnotation, "knn_annotation", "1.0.0",
             "Cell-type annotation of held-out query batches by a kNN vote (macro-F1, accuracy)")
