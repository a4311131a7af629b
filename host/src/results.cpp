#include "results.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "runfolder/files.hpp"
#include "scssl/anndata/anndata.hpp"

namespace fs = std::filesystem;

namespace scssl::host {

runfolder::MetricGroup metric_group(scssl_metric_group group) {
  switch (group) {
    case SCSSL_GROUP_BIO:
      return runfolder::MetricGroup::bio;
    case SCSSL_GROUP_BATCH:
      return runfolder::MetricGroup::batch;
    case SCSSL_GROUP_ANNOTATION:
      return runfolder::MetricGroup::annotation;
    case SCSSL_GROUP_MODALITY:
      return runfolder::MetricGroup::modality;
    default:
      return runfolder::MetricGroup::other;
  }
}

MetricRecord metric_record(const MetricValue& value) {
  MetricRecord m;
  m.evaluator = value.evaluator;
  m.metric = value.name;
  m.group = metric_group(value.group);
  m.higher_is_better = value.higher_is_better;
  m.value = value.value;
  m.seconds = value.seconds;
  m.note = value.note;
  return m;
}

void write_embedding_file(const std::string& path, const torch::Tensor& embedding,
                          const std::vector<std::string>& cell_names) {
  torch::Tensor e = embedding.to(torch::kCPU, torch::kFloat32).contiguous();
  if (e.dim() != 2)
    throw InvalidArgument(path + ": the embedding must be 2-d (cells x dimensions)");
  // Written under a temporary name and published only if `path` does not exist yet.
  anndata::write_embedding_h5(path, e.data_ptr<float>(), e.size(0), e.size(1), cell_names);
}

std::string per_cell_csv(const std::vector<std::string>& cell_names, const CellScores& scores) {
  std::string out = "cell";
  for (const auto& name : scores.names) out += "," + runfolder::csv_field(name);
  out += "\n";
  std::vector<const double*> columns;
  for (const auto& v : scores.values) columns.push_back(v.data_ptr<double>());
  for (size_t i = 0; i < cell_names.size(); ++i) {
    out += runfolder::csv_field(cell_names[i]);
    for (const double* c : columns) out += "," + runfolder::csv_number(c[i]);
    out += "\n";
  }
  return out;
}

namespace {
std::vector<anndata::ObsColumn> obs_columns(const CellScores& scores, const std::string& prefix) {
  std::vector<anndata::ObsColumn> columns;
  for (size_t i = 0; i < scores.names.size(); ++i)
    columns.push_back(
        {prefix + scores.names[i], scores.values[i].data_ptr<double>(), scores.values[i].numel()});
  return columns;
}
}  // namespace

void write_h5ad_with_embedding(const std::string& source_h5ad, const std::string& target,
                               const std::string& key, const torch::Tensor& embedding,
                               const CellScores& scores) {
  torch::Tensor e = embedding.to(torch::kCPU, torch::kFloat32).contiguous();
  if (e.dim() != 2)
    throw InvalidArgument(target + ": the embedding must be 2-d (cells x dimensions)");
  // The source is only read; the copy appears under `target` complete or not at all.
  anndata::write_copy_with_obsm(source_h5ad, target, key, e.data_ptr<float>(), e.size(0), e.size(1),
                                obs_columns(scores, key + "_"));
}

void write_h5ad_with_scores(const std::string& source_h5ad, const std::string& target,
                            const CellScores& scores) {
  anndata::write_copy_with_obs(source_h5ad, target, obs_columns(scores, ""));
}

std::string comparison_csv(const std::vector<std::string>& embeddings,
                           const std::vector<std::vector<MetricRecord>>& metrics,
                           const std::vector<std::vector<MetricRecord>>& scaled) {
  // Columns in order of first appearance; a metric an embedding lacks is left empty.
  std::vector<std::string> columns;
  std::vector<std::map<std::string, double>> rows(embeddings.size());
  auto collect = [&](const std::vector<std::vector<MetricRecord>>& table, const char* suffix) {
    for (size_t i = 0; i < table.size(); ++i)
      for (const auto& m : table[i]) {
        const std::string column = m.metric + suffix;
        if (std::find(columns.begin(), columns.end(), column) == columns.end())
          columns.push_back(column);
        rows[i][column] = m.value;
      }
  };
  collect(metrics, "");
  collect(scaled, "_scaled");
  std::ostringstream out;
  out << "embedding";
  for (const auto& c : columns) out << "," << c;
  out << "\n";
  for (size_t i = 0; i < embeddings.size(); ++i) {
    out << embeddings[i];
    for (const auto& c : columns) {
      out << ",";
      auto it = rows[i].find(c);
      if (it != rows[i].end()) out << runfolder::csv_number(it->second);
    }
    out << "\n";
  }
  return out.str();
}

std::string metrics_table(const std::vector<MetricRecord>& metrics) {
  size_t w_eval = 9, w_metric = 6, w_group = 5;
  for (const auto& m : metrics) {
    w_eval = std::max(w_eval, m.evaluator.size());
    w_metric = std::max(w_metric, m.metric.size());
    w_group = std::max(w_group, std::string(group_name(m.group)).size());
  }
  std::ostringstream out;
  char line[512];
  std::snprintf(line, sizeof line, "%-*s  %-*s  %-*s  %10s  %9s\n", (int)w_eval, "evaluator",
                (int)w_metric, "metric", (int)w_group, "group", "value", "seconds");
  out << line;
  out << std::string(w_eval + w_metric + w_group + 27, '-') << "\n";
  for (const auto& m : metrics) {
    char seconds[32] = "";
    if (std::isfinite(m.seconds)) std::snprintf(seconds, sizeof seconds, "%9.2f", m.seconds);
    std::snprintf(line, sizeof line, "%-*s  %-*s  %-*s  %10.4f  %9s\n", (int)w_eval,
                  m.evaluator.c_str(), (int)w_metric, m.metric.c_str(), (int)w_group,
                  group_name(m.group), m.value, seconds);
    out << line;
  }
  return out.str();
}

}  // namespace scssl::host
