#include "aggregates.hpp"

#include <algorithm>
#include <cmath>
#include <map>

namespace scssl::evaluation {

using runfolder::MetricGroup;

const std::vector<std::string> kBioConservationMetrics = {
    "isolated_labels", "leiden_nmi", "leiden_ari", "silhouette_label", "clisi"};
const std::vector<std::string> kBatchCorrectionMetrics = {"silhouette_batch", "ilisi", "kbet",
                                                          "graph_connectivity", "pcr_comparison"};

namespace {

bool listed(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

bool is_scib_group(MetricGroup g) { return g == MetricGroup::bio || g == MetricGroup::batch; }

MetricRecord aggregate(const char* name, double value) {
  MetricRecord m;
  m.evaluator = "aggregate";
  m.metric = name;
  m.group = MetricGroup::other;
  m.higher_is_better = true;
  m.value = value;
  return m;
}

}  // namespace

std::vector<MetricRecord> scib_aggregates(const std::vector<MetricRecord>& metrics) {
  double sum[2] = {0, 0};
  int count[2] = {0, 0};
  bool any = false;
  for (const auto& m : metrics) {
    const int g = listed(kBioConservationMetrics, m.metric)   ? 0
                  : listed(kBatchCorrectionMetrics, m.metric) ? 1
                                                              : -1;
    if (g < 0) continue;
    any = true;
    if (!std::isfinite(m.value)) continue;
    sum[g] += m.value;
    ++count[g];
  }
  if (!any) return {};
  const double nan = std::nan("");
  const double bio = count[0] ? sum[0] / count[0] : nan;
  const double batch = count[1] ? sum[1] / count[1] : nan;
  return {aggregate("bio_conservation", bio), aggregate("batch_correction", batch),
          aggregate("total", 0.6 * bio + 0.4 * batch)};
}

std::vector<std::vector<MetricRecord>> min_max_scaled(
    const std::vector<std::vector<MetricRecord>>& per_embedding) {
  std::map<std::string, std::pair<double, double>> range;  // metric -> (min, max) of finite values
  for (const auto& metrics : per_embedding)
    for (const auto& m : metrics) {
      if (!is_scib_group(m.group) || !std::isfinite(m.value)) continue;
      auto [it, fresh] = range.try_emplace(m.metric, m.value, m.value);
      if (!fresh)
        it->second = {std::min(it->second.first, m.value), std::max(it->second.second, m.value)};
    }
  std::vector<std::vector<MetricRecord>> out;
  for (const auto& metrics : per_embedding) {
    std::vector<MetricRecord> scaled;
    for (MetricRecord m : metrics) {
      if (!is_scib_group(m.group)) continue;
      m.seconds = std::nan("");
      if (std::isfinite(m.value)) {
        const auto [lo, hi] = range.at(m.metric);
        // sklearn's MinMaxScaler maps a constant column to 0.
        m.value = hi > lo ? (m.value - lo) / (hi - lo) : 0.0;
      }
      scaled.push_back(m);
    }
    const auto aggregates = scib_aggregates(scaled);
    scaled.insert(scaled.end(), aggregates.begin(), aggregates.end());
    out.push_back(std::move(scaled));
  }
  return out;
}

}  // namespace scssl::evaluation
