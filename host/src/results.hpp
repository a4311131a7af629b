// What the engine writes into a run folder besides the records of host/runfolder/: the embedding
// files, the evaluators' values as run-folder metric records, and the terminal and comparison
// tables. The folder's layout is docs/run-folder.md.
#pragma once

#include <string>
#include <vector>

#include "adapters.hpp"
#include "runfolder/metrics.hpp"

namespace scssl::host {

using runfolder::MetricRecord;

runfolder::MetricGroup metric_group(scssl_metric_group group);
// An evaluator's value as the record metrics.csv / metrics.json hold.
MetricRecord metric_record(const MetricValue& value);

// embedding.h5: the embedding and the cell names (see docs/user-guide.md).
void write_embedding_file(const std::string& path, const torch::Tensor& embedding,
                          const std::vector<std::string>& cell_names);
// A copy of `source_h5ad` with the embedding added as obsm/<key>, readable by Python's anndata.
void write_h5ad_with_embedding(const std::string& source_h5ad, const std::string& target,
                               const std::string& key, const torch::Tensor& embedding);

// One row per embedding, one column per metric (raw), then the scaled metrics and aggregates as
// "<name>_scaled" columns when `scaled` is not empty.
std::string comparison_csv(const std::vector<std::string>& embeddings,
                           const std::vector<std::vector<MetricRecord>>& metrics,
                           const std::vector<std::vector<MetricRecord>>& scaled);

// The results as an aligned text table for the terminal.
std::string metrics_table(const std::vector<MetricRecord>& metrics);

}  // namespace scssl::host
