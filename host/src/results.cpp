#include "results.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "scssl/h5.hpp"

namespace fs = std::filesystem;

namespace scssl::host {

namespace {

std::string temporary_name(const std::string& path) {
  fs::path p(path);
  return (p.parent_path() / ("." + p.filename().string() + ".tmp-" + std::to_string(getpid())))
      .string();
}

// Runs `write` on a temporary path, then renames it to `path`; removes the temporary on failure.
template <class F>
void atomically(const std::string& path, F&& write) {
  const std::string tmp = temporary_name(path);
  try {
    write(tmp);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw IoError("cannot write '" + path + "': " + ec.message());
  }
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& content) {
  atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out << content;
    out.flush();
    if (!out) throw IoError("cannot write '" + path + "'");
  });
}

std::string create_run_directory(const std::string& output_dir, const std::string& name) {
  std::error_code ec;
  fs::create_directories(output_dir, ec);
  if (ec) throw IoError("cannot create output folder '" + output_dir + "': " + ec.message());
  char stamp[32];
  std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const fs::path base = fs::path(output_dir) / (name + "-" + stamp);
  for (int i = 1; i < 1000; ++i) {
    fs::path dir = i == 1 ? base : fs::path(base.string() + "-" + std::to_string(i));
    // create_directory is false when the folder exists: an earlier run is never reused.
    if (fs::create_directory(dir, ec)) return dir.lexically_normal().string();
    if (ec) throw IoError("cannot create run folder '" + dir.string() + "': " + ec.message());
  }
  throw IoError("too many runs named '" + base.string() + "'");
}

std::string claim_run_directory(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError("cannot create run folder '" + dir + "': " + ec.message());
  if (!fs::is_empty(dir, ec))
    throw IoError("run folder '" + dir + "' is not empty; earlier results are never overwritten");
  return fs::path(dir).lexically_normal().string();
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

const char* group_name(scssl_metric_group group) {
  switch (group) {
    case SCSSL_GROUP_BIO: return "bio";
    case SCSSL_GROUP_BATCH: return "batch";
    case SCSSL_GROUP_ANNOTATION: return "annotation";
    case SCSSL_GROUP_MODALITY: return "modality";
    default: return "other";
  }
}

std::string metrics_json(const std::vector<MetricValue>& metrics) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < metrics.size(); ++i) {
    const auto& m = metrics[i];
    out << (i ? ",\n  " : "\n  ") << "{\"evaluator\": " << json_string(m.evaluator)
        << ", \"metric\": " << json_string(m.name) << ", \"group\": " << json_string(group_name(m.group))
        << ", \"higher_is_better\": " << (m.higher_is_better ? "true" : "false")
        << ", \"value\": " << json_number(m.value) << ", \"seconds\": " << json_number(m.seconds)
        << "}";
  }
  out << (metrics.empty() ? "]" : "\n]");
  return out.str();
}

std::string metrics_csv(const std::vector<MetricValue>& metrics) {
  std::ostringstream out;
  out << "evaluator,metric,group,higher_is_better,value,seconds\n";
  for (const auto& m : metrics) {
    out << m.evaluator << "," << m.name << "," << group_name(m.group) << ","
        << (m.higher_is_better ? "true" : "false") << ","
        << (std::isfinite(m.value) ? json_number(m.value) : "nan") << ","
        << (std::isfinite(m.seconds) ? json_number(m.seconds) : "") << "\n";
  }
  return out.str();
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

namespace {
scssl_metric_group group_of(const std::string& name) {
  for (scssl_metric_group g : {SCSSL_GROUP_BIO, SCSSL_GROUP_BATCH, SCSSL_GROUP_ANNOTATION,
                               SCSSL_GROUP_MODALITY, SCSSL_GROUP_OTHER})
    if (name == group_name(g)) return g;
  return SCSSL_GROUP_OTHER;
}
}  // namespace

std::vector<MetricValue> read_metrics_csv(const std::string& path) {
  std::istringstream in(read_text_file(path));
  std::string line;
  std::getline(in, line);
  if (line.rfind("evaluator,metric,group,higher_is_better,value", 0) != 0)
    throw BadData(path + ": not a metrics table (unexpected header '" + line + "')");
  std::vector<MetricValue> out;
  for (int number = 2; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string s; std::getline(fields, s, ',');) f.push_back(s);
    if (f.size() < 5) throw BadData(path + ": line " + std::to_string(number) + " has too few fields");
    char* end = nullptr;
    const double value = std::strtod(f[4].c_str(), &end);
    if (*end != '\0')
      throw BadData(path + ": line " + std::to_string(number) + ": '" + f[4] + "' is not a number");
    MetricValue m{f[0], f[1], value, group_of(f[2]), f[3] == "true"};
    if (f.size() > 5 && !f[5].empty()) m.seconds = std::strtod(f[5].c_str(), nullptr);
    out.push_back(std::move(m));
  }
  return out;
}

std::string stages_json(const std::vector<StageRecord>& stages) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < stages.size(); ++i) {
    const auto& s = stages[i];
    out << (i ? ",\n    " : "\n    ") << "{\"stage\": " << json_string(s.name)
        << ", \"wall_seconds\": " << json_number(s.wall_seconds)
        << ", \"peak_rss_mb\": " << json_number(s.peak_rss_mb)
        << ", \"end_rss_mb\": " << json_number(s.end_rss_mb) << "}";
  }
  out << (stages.empty() ? "]" : "\n  ]");
  return out.str();
}

void write_embedding_file(const std::string& path, const torch::Tensor& embedding,
                          const std::vector<std::string>& cell_names) {
  torch::Tensor e = embedding.to(torch::kCPU, torch::kFloat32).contiguous();
  atomically(path, [&](const std::string& tmp) {
    h5::write_embedding_h5(tmp, "embedding", e.data_ptr<float>(), e.size(0), e.size(1), cell_names);
  });
}

void write_h5ad_with_embedding(const std::string& source_h5ad, const std::string& target,
                               const std::string& key, const torch::Tensor& embedding) {
  torch::Tensor e = embedding.to(torch::kCPU, torch::kFloat32).contiguous();
  atomically(target, [&](const std::string& tmp) {
    std::error_code ec;
    fs::copy_file(source_h5ad, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) throw IoError("cannot copy '" + source_h5ad + "' to the run folder: " + ec.message());
    // The copy inherits the source's permissions; a read-only input must still be writable here.
    fs::permissions(tmp, fs::perms::owner_write, fs::perm_options::add, ec);
    h5::add_obsm_array(tmp, key, e.data_ptr<float>(), e.size(0), e.size(1));
  });
}

namespace {
bool is_scib_group(scssl_metric_group g) { return g == SCSSL_GROUP_BIO || g == SCSSL_GROUP_BATCH; }
}  // namespace

std::vector<MetricValue> scib_aggregates(const std::vector<MetricValue>& metrics) {
  double sum[2] = {0, 0};
  int count[2] = {0, 0};
  bool any = false;
  for (const auto& m : metrics) {
    if (!is_scib_group(m.group)) continue;
    any = true;
    if (!std::isfinite(m.value)) continue;
    const int g = m.group == SCSSL_GROUP_BIO ? 0 : 1;
    sum[g] += m.value;
    ++count[g];
  }
  if (!any) return {};
  const double nan = std::nan("");
  const double bio = count[0] ? sum[0] / count[0] : nan;
  const double batch = count[1] ? sum[1] / count[1] : nan;
  return {{"aggregate", "bio_conservation", bio, SCSSL_GROUP_OTHER, true},
          {"aggregate", "batch_correction", batch, SCSSL_GROUP_OTHER, true},
          {"aggregate", "total", 0.6 * bio + 0.4 * batch, SCSSL_GROUP_OTHER, true}};
}

std::vector<std::vector<MetricValue>> min_max_scaled(
    const std::vector<std::vector<MetricValue>>& per_embedding) {
  std::map<std::string, std::pair<double, double>> range;  // metric -> (min, max) of finite values
  for (const auto& metrics : per_embedding)
    for (const auto& m : metrics) {
      if (!is_scib_group(m.group) || !std::isfinite(m.value)) continue;
      auto [it, fresh] = range.try_emplace(m.name, m.value, m.value);
      if (!fresh) it->second = {std::min(it->second.first, m.value), std::max(it->second.second, m.value)};
    }
  std::vector<std::vector<MetricValue>> out;
  for (const auto& metrics : per_embedding) {
    std::vector<MetricValue> scaled;
    for (MetricValue m : metrics) {
      if (!is_scib_group(m.group)) continue;
      m.seconds = std::nan("");
      if (std::isfinite(m.value)) {
        const auto [lo, hi] = range.at(m.name);
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

std::string comparison_csv(const std::vector<std::string>& embeddings,
                           const std::vector<std::vector<MetricValue>>& metrics,
                           const std::vector<std::vector<MetricValue>>& scaled) {
  // Columns in order of first appearance; a metric an embedding lacks is left empty.
  std::vector<std::string> columns;
  std::vector<std::map<std::string, double>> rows(embeddings.size());
  auto collect = [&](const std::vector<std::vector<MetricValue>>& table, const char* suffix) {
    for (size_t i = 0; i < table.size(); ++i)
      for (const auto& m : table[i]) {
        const std::string column = m.name + suffix;
        if (std::find(columns.begin(), columns.end(), column) == columns.end()) columns.push_back(column);
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
      if (it != rows[i].end()) out << (std::isfinite(it->second) ? json_number(it->second) : "nan");
    }
    out << "\n";
  }
  return out.str();
}

std::string metrics_table(const std::vector<MetricValue>& metrics) {
  size_t w_eval = 9, w_metric = 6, w_group = 5;
  for (const auto& m : metrics) {
    w_eval = std::max(w_eval, m.evaluator.size());
    w_metric = std::max(w_metric, m.name.size());
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
                  m.evaluator.c_str(), (int)w_metric, m.name.c_str(), (int)w_group,
                  group_name(m.group), m.value, seconds);
    out << line;
  }
  return out.str();
}

}  // namespace scssl::host
