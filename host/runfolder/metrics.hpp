// metrics.csv and metrics.json of a run folder: one record per metric of one embedding
// (docs/run-folder.md, schema in docs/schema/metrics.schema.json).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "runfolder/json.hpp"

namespace scssl::runfolder {

// The group a metric reports under; written as "bio", "batch", "annotation", "modality", "other".
enum class MetricGroup { bio, batch, annotation, modality, other };

const char* group_name(MetricGroup group);
// The group written as `name`; BadData naming `what` for an unknown name.
MetricGroup group_from_name(const std::string& name, const std::string& what);

struct MetricRecord {
  std::string evaluator;  // the evaluator plugin, or "aggregate" for Bio / Batch / Total
  std::string metric;
  MetricGroup group = MetricGroup::other;
  bool higher_is_better = true;
  double value = std::nan("");    // NaN where the metric could not be computed
  double seconds = std::nan("");  // wall time of the evaluator that reported it; NaN: not timed
  std::string note;               // the evaluator's word on the value (why NaN); "" when none
};

void to_json(Json& j, const MetricRecord& m);
void from_json(const Json& j, MetricRecord& m);

// metrics.csv: evaluator,metric,group,higher_is_better,value,seconds,note (value "nan" when NaN,
// seconds empty when not timed, note quoted and empty when none). Tables without the note column
// (written before it existed) are read too.
std::string metrics_csv(const std::vector<MetricRecord>& metrics);
// The inverse; BadData naming the file and line.
std::vector<MetricRecord> read_metrics_csv(const std::string& path);

// metrics.json: the same records as a JSON array.
std::string metrics_json(const std::vector<MetricRecord>& metrics);
std::vector<MetricRecord> read_metrics_json(const std::string& path);

}  // namespace scssl::runfolder
