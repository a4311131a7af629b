// The study's aggregate scores of one embedding (docs/evaluation.md#bio--batch--total), defined by
// metric name: a metric outside the two lists below never changes Bio, Batch or Total, whatever
// group it declares; it is reported beside them. No torch here: scssl-report recomputes the
// aggregates of min-max scaled values with the same code.
#pragma once

#include <string>
#include <vector>

#include "runfolder/metrics.hpp"

namespace scssl::evaluation {

using runfolder::MetricRecord;

// The five bio-conservation and five batch-correction metrics of scIB that make the aggregates.
extern const std::vector<std::string> kBioConservationMetrics;
extern const std::vector<std::string> kBatchCorrectionMetrics;

// bio_conservation = mean of the bio-conservation metrics present, batch_correction = mean of the
// batch-correction metrics present (NaN values skipped in both), total = 0.6 bio + 0.4 batch; as
// three records of evaluator "aggregate", group other. Empty when none of the ten metrics is
// present; an aggregate without any finite metric is NaN.
std::vector<MetricRecord> scib_aggregates(const std::vector<MetricRecord>& metrics);

// Min-max scaling across the embeddings of one data set: each bio- and batch-group metric becomes
// (x - min) / (max - min) over the embeddings' finite values (0 where all are equal; NaN stays
// NaN), followed by the aggregates of the scaled values. Other metrics are left out.
std::vector<std::vector<MetricRecord>> min_max_scaled(
    const std::vector<std::vector<MetricRecord>>& per_embedding);

}  // namespace scssl::evaluation
