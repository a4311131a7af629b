// Files of a run directory. Every file is written under a temporary name and renamed into place,
// so a crash never leaves a half-written result and never clobbers an existing one.
#pragma once

#include <string>
#include <vector>

#include "adapters.hpp"
#include "resources.hpp"

namespace scssl::host {

// Writes `content` to `path` through a temporary file in the same folder and a rename.
void write_file_atomic(const std::string& path, const std::string& content);

// Creates <output_dir>/<name>-<timestamp> (with -2, -3, ... if taken) and returns its path.
std::string create_run_directory(const std::string& output_dir, const std::string& name);
// Creates `dir` (parents included) for a run whose folder is chosen by the caller (a sweep); an
// existing folder must be empty, so earlier results are never overwritten.
std::string claim_run_directory(const std::string& dir);

// A JSON string literal (quoted, escaped).
std::string json_string(const std::string& s);
// A JSON number; NaN and infinities become null, as Python's json/pandas read them.
std::string json_number(double v);

const char* group_name(scssl_metric_group group);

std::string metrics_json(const std::vector<MetricValue>& metrics);
std::string metrics_csv(const std::vector<MetricValue>& metrics);
// The inverse of metrics_csv: a run folder's metrics.csv back as values (BadData names the line).
std::vector<MetricValue> read_metrics_csv(const std::string& path);

// A whole file as text (IoError when it cannot be read).
std::string read_text_file(const std::string& path);
// A CSV field, quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s);
std::string stages_json(const std::vector<StageRecord>& stages);

// embedding.h5: the embedding and the cell names (see docs/user-guide.md).
void write_embedding_file(const std::string& path, const torch::Tensor& embedding,
                          const std::vector<std::string>& cell_names);
// A copy of `source_h5ad` with the embedding added as obsm/<key>, readable by Python's anndata.
void write_h5ad_with_embedding(const std::string& source_h5ad, const std::string& target,
                               const std::string& key, const torch::Tensor& embedding);

// scIB aggregates of one embedding: Bio conservation = mean of the bio-group metrics, Batch
// correction = mean of the batch-group metrics (NaN metrics skipped), Total = 0.6 Bio + 0.4 Batch.
// Which metric counts where comes from each metric's own group. Empty when no bio or batch metric
// was computed; an aggregate without any finite metric is NaN.
std::vector<MetricValue> scib_aggregates(const std::vector<MetricValue>& metrics);

// Min-max scaling across the embeddings of one data set (metrics.md §1.5): each bio/batch metric
// becomes (x - min) / (max - min) over the embeddings (0 where all are equal; NaN stays NaN),
// followed by the aggregates recomputed from the scaled values. Other metrics are left out.
std::vector<std::vector<MetricValue>> min_max_scaled(
    const std::vector<std::vector<MetricValue>>& per_embedding);

// One row per embedding, one column per metric (raw), then the scaled metrics and aggregates as
// "<name>_scaled" columns when `scaled` is not empty.
std::string comparison_csv(const std::vector<std::string>& embeddings,
                           const std::vector<std::vector<MetricValue>>& metrics,
                           const std::vector<std::vector<MetricValue>>& scaled);

// The results as an aligned text table for the terminal.
std::string metrics_table(const std::vector<MetricValue>& metrics);

}  // namespace scssl::host
