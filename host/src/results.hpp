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

// Per-cell scores of one or more embeddings: column names and float64 [n_cells] values, in the
// order the evaluators reported them (docs/evaluation.md, "Per-cell scores").
struct CellScores {
  std::vector<std::string> names;
  std::vector<torch::Tensor> values;
  void add(const std::string& name, const torch::Tensor& v) {
    names.push_back(name);
    values.push_back(v.to(torch::kFloat64).contiguous());
  }
};

// per_cell.csv: "cell" and one column per score; "nan" where a cell has no value.
std::string per_cell_csv(const std::vector<std::string>& cell_names, const CellScores& scores);

// embedding.h5: the embedding and the cell names (see docs/user-guide.md).
void write_embedding_file(const std::string& path, const torch::Tensor& embedding,
                          const std::vector<std::string>& cell_names);
// A copy of `source_h5ad` with the embedding added as obsm/<key> and each score as the obs
// column <key>_<score>, readable by Python's anndata.
void write_h5ad_with_embedding(const std::string& source_h5ad, const std::string& target,
                               const std::string& key, const torch::Tensor& embedding,
                               const CellScores& scores);
// A copy of `source_h5ad` with each score as an obs column of its name.
void write_h5ad_with_scores(const std::string& source_h5ad, const std::string& target,
                            const CellScores& scores);

// One row per embedding, one column per metric (raw), then the scaled metrics and aggregates as
// "<name>_scaled" columns when `scaled` is not empty.
std::string comparison_csv(const std::vector<std::string>& embeddings,
                           const std::vector<std::vector<MetricRecord>>& metrics,
                           const std::vector<std::vector<MetricRecord>>& scaled);

// The results as an aligned text table for the terminal.
std::string metrics_table(const std::vector<MetricRecord>& metrics);

}  // namespace scssl::host
