#include "report.hpp"

#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include <boost/program_options.hpp>
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "results.hpp"
#include "scssl/h5.hpp"
#include "scssl/pca.hpp"

namespace fs = std::filesystem;
namespace pt = boost::property_tree;
namespace po = boost::program_options;

namespace scssl::host {

namespace {

const double kNaN = std::nan("");

// ---- small helpers -------------------------------------------------------------------------------


pt::ptree read_json(const fs::path& path) {
  pt::ptree tree;
  try {
    pt::read_json(path.string(), tree);
  } catch (const pt::json_parser_error& e) {
    throw BadData(path.string() + ": not valid JSON (" + e.message() + ", line " +
                  std::to_string(e.line()) + ")");
  }
  return tree;
}

// property_tree keeps JSON null as the text "null".
std::string json_text(const pt::ptree& tree, const std::string& key) {
  const std::string s = tree.get<std::string>(key, "");
  return s == "null" ? "" : s;
}

double json_double(const pt::ptree& tree, const std::string& key) {
  const std::string s = json_text(tree, key);
  if (s.empty()) return kNaN;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  return *end == '\0' ? v : kNaN;
}

// A JSON number with `digits` significant digits, for the page (full precision goes to the CSV).
std::string short_number(double v, int digits = 6) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string csv_number(double v) { return std::isfinite(v) ? json_number(v) : "nan"; }


std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A data set's name as part of a file name.
std::string file_safe(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
  return out.empty() ? "dataset" : out;
}


// ---- reading runs --------------------------------------------------------------------------------

struct RunEntry {
  std::string dir;
  std::string dataset;
  std::map<std::string, std::string> labels;  // every label but the data set and the seed
  int64_t seed = 0;
  std::string status = "ok";  // ok | failed | pending (sweeps)
  std::string error;
  std::vector<MetricValue> metrics;
  double fit_seconds = kNaN, peak_rss_mb = kNaN, wall_seconds = kNaN;
  std::string embedding_h5;  // embedding.h5 of a run, "" when absent
  std::string h5ad;          // the .h5ad holding the obs columns (and obsm/<obsm_key>)
  std::string obsm_key, label_key, batch_key;
};

// Everything the inputs hold; label names in order of first appearance.
struct Inputs {
  std::vector<RunEntry> runs;
  std::vector<std::string> label_names;
  std::set<std::string> seen;  // run folders, so that one given twice (a sweep and its runs/) counts once
  void add(RunEntry run) {
    std::error_code ec;
    const fs::path canonical = fs::canonical(run.dir, ec);
    if (!ec && fs::is_regular_file(canonical / "run.json") && !seen.insert(canonical.string()).second) return;
    for (const auto& [name, _] : run.labels) add_label_name(name);
    runs.push_back(std::move(run));
  }
  void add_label_name(const std::string& name) {
    if (name != "dataset" && name != "seed" &&
        std::find(label_names.begin(), label_names.end(), name) == label_names.end())
      label_names.push_back(name);
  }
};


// The resolved configuration of a run, or of the `evaluate` folder around it.
toml::table read_config(const fs::path& dir) {
  for (const fs::path& p : {dir / "config.resolved.toml", dir.parent_path() / "config.resolved.toml"}) {
    if (!fs::is_regular_file(p)) continue;
    try {
      return toml::parse_file(p.string());
    } catch (const toml::parse_error& e) {
      throw BadData(p.string() + ": " + std::string(e.description()));
    }
  }
  return {};
}

std::string strip_prefix(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0 && s.size() > prefix.size() ? s.substr(prefix.size()) : s;
}

// Reads run.json, config.resolved.toml and metrics.csv of `dir` into `run`. Labels and seed come
// from the folder unless a sweep gave them.
void read_run_folder(const fs::path& dir, RunEntry& run, bool from_sweep) {
  run.dir = dir.lexically_normal().string();
  if (!fs::is_regular_file(dir / "run.json"))
    throw BadData("'" + run.dir + "' has no run.json (not a finished run)");
  const pt::ptree info = read_json(dir / "run.json");
  if (info.get<std::string>("status", "") != "ok") {
    run.status = "failed";
    run.error = json_text(info, "error");
  }
  if (!from_sweep) run.seed = info.get<int64_t>("seed", 0);
  run.wall_seconds = json_double(info, "wall_seconds");
  run.peak_rss_mb = json_double(info, "peak_rss_mb");
  if (const auto stages = info.get_child_optional("stages"))
    for (const auto& [_, s] : *stages) {
      if (s.get<std::string>("stage", "") == "fit") run.fit_seconds = json_double(s, "wall_seconds");
      const double peak = json_double(s, "peak_rss_mb");
      if (std::isfinite(peak) && !(run.peak_rss_mb >= peak)) run.peak_rss_mb = peak;
    }
  run.obsm_key = json_text(info, "embedding.obsm_key");
  const std::string h5ad = json_text(info, "embedding.h5ad");
  // A run stores its copy's file name; `evaluate` names the file it read.
  if (!h5ad.empty()) run.h5ad = (fs::path(h5ad).is_absolute() ? fs::path(h5ad) : dir / h5ad).string();
  if (fs::is_regular_file(dir / "embedding.h5")) run.embedding_h5 = (dir / "embedding.h5").string();

  const toml::table cfg = read_config(dir);
  run.label_key = cfg["dataset"]["label_key"].value_or(std::string());
  run.batch_key = cfg["dataset"]["batch_key"].value_or(std::string());
  if (!from_sweep) {
    const std::string path = cfg["dataset"]["path"].value_or(std::string());
    run.dataset = path.empty() ? cfg["dataset"]["plugin"].value_or(std::string("unknown"))
                               : fs::path(path).stem().string();
    // An `evaluate` result has no method: the embedding's obsm key names it.
    const std::string method = cfg["method"]["plugin"].value_or(std::string());
    run.labels["method"] = method.empty() ? strip_prefix(run.obsm_key, "X_") : method;
    if (run.labels["method"].empty()) run.labels["method"] = dir.filename().string();
  }
  if (run.status == "ok") {
    if (!fs::is_regular_file(dir / "metrics.csv"))
      throw BadData("'" + run.dir + "' has no metrics.csv although run.json says it finished");
    run.metrics = read_metrics_csv((dir / "metrics.csv").string());
  }
}

// sweep.json (see docs/report.md): runs with their labels, status and folder.
void read_sweep(const fs::path& dir, Inputs& in) {
  const pt::ptree sweep = read_json(dir / "sweep.json");
  const auto runs = sweep.get_child_optional("runs");
  if (!runs) throw BadData((dir / "sweep.json").string() + ": has no \"runs\" list");
  in.add_label_name("method");
  if (const auto axes = sweep.get_child_optional("axes"))
    for (const auto& [_, a] : *axes) in.add_label_name(a.data());
  for (const auto& [_, r] : *runs) {
    RunEntry run;
    run.seed = r.get<int64_t>("seed", 0);
    run.status = r.get<std::string>("status", "pending");
    run.error = json_text(r, "error");
    if (const auto labels = r.get_child_optional("labels"))
      for (const auto& [name, value] : *labels) {
        if (name == "dataset") run.dataset = value.data();
        else if (name != "seed") run.labels[name] = value.data();
        in.add_label_name(name);
      }
    if (run.dataset.empty()) run.dataset = "unknown";
    const fs::path run_dir = dir / r.get<std::string>("dir", "");
    run.dir = run_dir.lexically_normal().string();
    if (run.status == "ok") {
      try {
        read_run_folder(run_dir, run, true);
      } catch (const std::exception& e) {
        run.status = "failed";
        run.error = e.what();
      }
    }
    in.add(std::move(run));
  }
}

std::vector<fs::path> subfolders(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

void add_run(const fs::path& dir, Inputs& in) {
  RunEntry run;
  try {
    read_run_folder(dir, run, false);
  } catch (const std::exception& e) {
    run.dir = dir.lexically_normal().string();
    run.status = "failed";
    run.error = e.what();
    if (run.dataset.empty()) run.dataset = "unknown";
    if (run.labels.empty()) run.labels["method"] = dir.filename().string();
  }
  in.add(std::move(run));
}

// A sweep folder, a run folder, an `evaluate` result (a folder of per-embedding runs), or, at the
// top level only, a folder holding any of these (such as run.output_dir).
void collect(const fs::path& input, Inputs& in, bool top) {
  std::error_code ec;
  if (!fs::is_directory(input, ec))
    throw InvalidArgument("'" + input.string() + "' is not a folder (report reads run and sweep folders)");
  if (fs::is_regular_file(input / "sweep.json")) return read_sweep(input, in);
  if (fs::is_regular_file(input / "run.json")) {
    if (!fs::is_regular_file(input / "metrics.csv")) {
      std::vector<fs::path> parts;
      for (const auto& sub : subfolders(input))
        if (fs::is_regular_file(sub / "run.json")) parts.push_back(sub);
      if (!parts.empty()) {
        for (const auto& p : parts) add_run(p, in);
        return;
      }
    }
    return add_run(input, in);
  }
  bool any = false;
  if (top)
    for (const auto& sub : subfolders(input))
      if (fs::is_regular_file(sub / "run.json") || fs::is_regular_file(sub / "sweep.json")) {
        collect(sub, in, false);
        any = true;
      }
  if (!any)
    throw InvalidArgument("'" + input.string() +
                          "' is not a run folder (no run.json), a sweep folder (no sweep.json) or a "
                          "folder holding either");
}

// ---- summaries -----------------------------------------------------------------------------------

struct Stat {
  double mean = kNaN, sd = kNaN;
  int n = 0;
};

// Mean and sample standard deviation of the finite values; sd is NaN for fewer than two.
Stat stat_of(const std::vector<double>& values) {
  Stat s;
  double sum = 0;
  for (double v : values)
    if (std::isfinite(v)) sum += v, ++s.n;
  if (s.n == 0) return s;
  s.mean = sum / s.n;
  if (s.n > 1) {
    double ss = 0;
    for (double v : values)
      if (std::isfinite(v)) ss += (v - s.mean) * (v - s.mean);
    s.sd = std::sqrt(ss / (s.n - 1));
  }
  return s;
}

struct Row {
  std::string key;
  std::map<std::string, std::string> labels;
  std::vector<const RunEntry*> ok;  // by seed
};

struct Column {
  std::string name;
  scssl_metric_group group;
};

// Metrics of chosen groups, one Stat per (row, metric) over the row's runs.
struct Table {
  std::vector<Column> columns;
  std::vector<std::map<std::string, Stat>> cells;  // per row
  bool empty() const { return columns.empty(); }
};

using MetricsOf = std::function<const std::vector<MetricValue>&(const RunEntry*)>;

Table summarize(const std::vector<Row>& rows, const MetricsOf& metrics_of,
                const std::vector<scssl_metric_group>& groups) {
  Table t;
  for (scssl_metric_group g : groups)
    for (const auto& row : rows)
      for (const RunEntry* run : row.ok)
        for (const auto& m : metrics_of(run))
          if (m.group == g && std::none_of(t.columns.begin(), t.columns.end(),
                                           [&](const Column& c) { return c.name == m.name; }))
            t.columns.push_back({m.name, g});
  for (const auto& row : rows) {
    std::map<std::string, Stat> cells;
    for (const auto& c : t.columns) {
      std::vector<double> values;
      for (const RunEntry* run : row.ok)
        for (const auto& m : metrics_of(run))
          if (m.name == c.name && m.group == c.group) values.push_back(m.value);
      cells[c.name] = stat_of(values);
    }
    t.cells.push_back(std::move(cells));
  }
  return t;
}

struct Layout {
  size_t row;
  int64_t seed = 0, n_total = 0;
  torch::Tensor xy;
  std::vector<int32_t> label_codes, batch_codes;
  std::vector<std::string> label_names, batch_names;
  std::string label_key, batch_key;
};

struct DatasetReport {
  std::string name;
  std::vector<Row> rows;  // rows with at least one finished run, best Total first
  std::map<const RunEntry*, std::vector<MetricValue>> scib, scaled;  // per run, aggregates added
  Table scib_table, scaled_table, annotation, modality;
  std::vector<Layout> layouts;
  std::vector<std::string> notes;
};

std::string row_key(const std::map<std::string, std::string>& labels, const std::vector<std::string>& axes) {
  std::string key;
  for (const auto& a : axes) {
    auto it = labels.find(a);
    if (it == labels.end() || it->second.empty()) continue;
    key += (key.empty() ? "" : " · ") + it->second;
  }
  return key.empty() ? "run" : key;
}

// ---- 2-d layouts of embeddings -------------------------------------------------------------------

// An obs column as category codes (-1: missing) and names: anndata's categorical group, its 0.7
// form (codes with a reference to the categories), or plain strings or numbers.
void read_obs_column(const std::string& file, const std::string& key, std::vector<int32_t>& codes,
                     std::vector<std::string>& names) {
  const h5::File f = h5::File::open(file);
  const h5::Group obs = f.root().group("obs");
  auto names_of = [](const h5::Dataset& d) {
    if (d.type().cls == h5::TypeClass::String) return d.read_strings();
    std::vector<std::string> out;
    for (double v : d.read_vector<double>()) out.push_back(short_number(v, 10));
    return out;
  };
  if (obs.has_group(key)) {
    const h5::Group g = obs.group(key);
    names = names_of(g.dataset("categories"));
    codes = g.dataset("codes").read_vector<int32_t>();
    return;
  }
  if (!obs.has_dataset(key)) throw BadData(file + ": obs has no column '" + key + "'");
  const h5::Dataset d = obs.dataset(key);
  if (d.has_attr("categories") && d.attr_type("categories").cls == h5::TypeClass::Reference) {
    names = names_of(d.attr_reference("categories"));
    codes = d.read_vector<int32_t>();
    return;
  }
  const std::vector<std::string> values = names_of(d);
  std::map<std::string, int32_t> index;
  for (const auto& v : values) index.emplace(v, 0);
  names.clear();
  for (auto& [name, code] : index) code = static_cast<int32_t>(names.size()), names.push_back(name);
  codes.clear();
  for (const auto& v : values) codes.push_back(index[v]);
}

// The embedding of a run: embedding.h5 when there, else obsm/<key> of its .h5ad.
torch::Tensor read_embedding(const RunEntry& run) {
  if (!run.embedding_h5.empty()) {
    const h5::File f = h5::File::open(run.embedding_h5);
    const h5::Dataset d = f.root().dataset("embedding");
    const auto shape = d.shape();
    if (shape.size() != 2) d.fail("is not a 2-d array");
    torch::Tensor e = torch::empty({shape[0], shape[1]}, torch::kFloat32);
    if (e.numel() > 0) d.read(h5::NumType::Float32, e.data_ptr<float>());
    return e;
  }
  int64_t rows = 0, cols = 0;
  std::vector<float> values = h5::read_obsm_array(run.h5ad, run.obsm_key, rows, cols);
  return torch::from_blob(values.data(), {rows, cols}, torch::kFloat32).clone();
}

// Codes for `n` cells of column `key`, or one "(not set)" category when the run named none.
void obs_codes_or_unset(const RunEntry& run, const std::string& key, int64_t n,
                           std::vector<int32_t>& codes, std::vector<std::string>& names) {
  if (key.empty()) {
    codes.assign(n, 0);
    names = {"(not set)"};
    return;
  }
  read_obs_column(run.h5ad, key, codes, names);
  if (static_cast<int64_t>(codes.size()) != n)
    throw BadData(run.h5ad + ": obs has " + std::to_string(codes.size()) + " cells but the embedding " +
                  std::to_string(n));
}

// The layout of the first finished run of a row (lowest seed) that has its .h5ad; a note instead
// when none can be drawn.
void add_layout(DatasetReport& ds, size_t row_index, int64_t max_cells) {
  const Row& row = ds.rows[row_index];
  const RunEntry* run = nullptr;
  for (const RunEntry* r : row.ok)
    if (!r->h5ad.empty() && fs::is_regular_file(r->h5ad)) {
      run = r;
      break;
    }
  if (run == nullptr) {
    ds.notes.push_back("No embedding plot for " + row.key +
                       ": no run of it kept an .h5ad copy with the cell types and batches (run.write_h5ad).");
    return;
  }
  try {
    const auto started = std::chrono::steady_clock::now();
    torch::Tensor embedding = read_embedding(*run);
    Layout layout;
    layout.row = row_index;
    layout.seed = run->seed;
    layout.n_total = embedding.size(0);
    layout.label_key = run->label_key;
    layout.batch_key = run->batch_key;
    std::vector<int32_t> labels, batches;
    obs_codes_or_unset(*run, run->label_key, layout.n_total, labels, layout.label_names);
    obs_codes_or_unset(*run, run->batch_key, layout.n_total, batches, layout.batch_names);
    // A fixed-seed random subsample keeps the exact t-SNE (n^2 memory and time) affordable.
    std::vector<int64_t> ids(layout.n_total);
    std::iota(ids.begin(), ids.end(), 0);
    if (layout.n_total > max_cells) {
      std::mt19937_64 rng(0);
      std::shuffle(ids.begin(), ids.end(), rng);
      ids.resize(max_cells);
      std::sort(ids.begin(), ids.end());
    }
    torch::Tensor sample = embedding.index_select(0, torch::tensor(ids, torch::kInt64));
    layout.xy = tsne_2d(sample);
    for (int64_t i : ids) {
      layout.label_codes.push_back(labels[i]);
      layout.batch_codes.push_back(batches[i]);
    }
    spdlog::info("layout of {} ({} of {} cells) in {:.1f} s", row.key, ids.size(), layout.n_total,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    ds.layouts.push_back(std::move(layout));
  } catch (const std::exception& e) {
    ds.notes.push_back("No embedding plot for " + row.key + ": " + e.what());
  }
}

// ---- the data sets -------------------------------------------------------------------------------

std::vector<DatasetReport> summarize_datasets(const Inputs& in, const std::vector<std::string>& axes,
                                              const ReportOptions& options) {
  std::vector<DatasetReport> out;
  for (const RunEntry& run : in.runs) {
    auto ds = std::find_if(out.begin(), out.end(), [&](const DatasetReport& d) { return d.name == run.dataset; });
    if (ds == out.end()) {
      out.push_back({});
      out.back().name = run.dataset;
      ds = out.end() - 1;
    }
    if (run.status != "ok") continue;
    const std::string key = row_key(run.labels, axes);
    auto row = std::find_if(ds->rows.begin(), ds->rows.end(), [&](const Row& r) { return r.key == key; });
    if (row == ds->rows.end()) {
      Row r{key, {}, {}};
      for (const auto& a : axes)
        if (run.labels.count(a)) r.labels[a] = run.labels.at(a);
      ds->rows.push_back(std::move(r));
      row = ds->rows.end() - 1;
    }
    row->ok.push_back(&run);
  }
  for (DatasetReport& ds : out) {
    std::vector<const RunEntry*> runs;
    for (Row& row : ds.rows) {
      std::stable_sort(row.ok.begin(), row.ok.end(),
                       [](const RunEntry* a, const RunEntry* b) { return a->seed < b->seed; });
      runs.insert(runs.end(), row.ok.begin(), row.ok.end());
    }
    // Bio / Batch / Total are recomputed from each run's metrics, as the scaled ones must be.
    for (const RunEntry* r : runs) {
      std::vector<MetricValue> m;
      for (const auto& v : r->metrics)
        if (v.group != SCSSL_GROUP_OTHER) m.push_back(v);
      const auto aggregates = scib_aggregates(m);
      m.insert(m.end(), aggregates.begin(), aggregates.end());
      ds.scib[r] = std::move(m);
    }
    if (options.min_max_scale) {
      std::vector<std::vector<MetricValue>> per_run;
      for (const RunEntry* r : runs) per_run.push_back(ds.scib[r]);
      const auto scaled = min_max_scaled(per_run);
      for (size_t i = 0; i < runs.size(); ++i) ds.scaled[runs[i]] = scaled[i];
    }
    const MetricsOf scib_of = [&ds](const RunEntry* r) -> const std::vector<MetricValue>& { return ds.scib.at(r); };
    const MetricsOf scaled_of = [&ds](const RunEntry* r) -> const std::vector<MetricValue>& { return ds.scaled.at(r); };
    const std::vector<scssl_metric_group> scib_groups = {SCSSL_GROUP_BIO, SCSSL_GROUP_BATCH, SCSSL_GROUP_OTHER};
    const Table order = summarize(ds.rows, options.min_max_scale ? scaled_of : scib_of, scib_groups);
    // Best Total first (the scaled one when scaling), as scIB's tables rank.
    std::vector<size_t> index(ds.rows.size());
    std::iota(index.begin(), index.end(), 0);
    auto total = [&](size_t i) {
      auto it = order.cells[i].find("total");
      return it == order.cells[i].end() || !std::isfinite(it->second.mean) ? -HUGE_VAL : it->second.mean;
    };
    std::stable_sort(index.begin(), index.end(), [&](size_t a, size_t b) { return total(a) > total(b); });
    std::vector<Row> sorted;
    for (size_t i : index) sorted.push_back(ds.rows[i]);
    ds.rows = std::move(sorted);

    ds.scib_table = summarize(ds.rows, scib_of, scib_groups);
    if (options.min_max_scale) ds.scaled_table = summarize(ds.rows, scaled_of, scib_groups);
    auto raw = [](const RunEntry* r) -> const std::vector<MetricValue>& { return r->metrics; };
    ds.annotation = summarize(ds.rows, raw, {SCSSL_GROUP_ANNOTATION});
    ds.modality = summarize(ds.rows, raw, {SCSSL_GROUP_MODALITY});
    if (options.layout_cells > 0)
      for (size_t i = 0; i < ds.rows.size(); ++i) add_layout(ds, i, options.layout_cells);
  }
  return out;
}

// ---- CSV -----------------------------------------------------------------------------------------

std::string axes_header(const std::vector<std::string>& axes) {
  std::string out;
  for (const auto& a : axes) out += csv_field(a) + ",";
  return out;
}

std::string axes_fields(const Row& row, const std::vector<std::string>& axes) {
  std::string out;
  for (const auto& a : axes) {
    auto it = row.labels.find(a);
    out += csv_field(it == row.labels.end() ? "" : it->second) + ",";
  }
  return out;
}

// One line per row: its labels, the number of runs, then mean and sd of each column of each table
// (a table's columns get `suffix` before _mean/_sd).
std::string tables_csv(const std::vector<Row>& rows, const std::vector<std::string>& axes,
                       const std::vector<std::pair<const Table*, std::string>>& tables) {
  std::ostringstream out;
  out << axes_header(axes) << "n_runs";
  for (const auto& [t, suffix] : tables)
    for (const auto& c : t->columns) out << "," << c.name << suffix << "_mean," << c.name << suffix << "_sd";
  out << "\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    out << axes_fields(rows[i], axes) << rows[i].ok.size();
    for (const auto& [t, suffix] : tables)
      for (const auto& c : t->columns) {
        const Stat& s = t->cells[i].at(c.name);
        out << "," << csv_number(s.mean) << "," << csv_number(s.sd);
      }
    out << "\n";
  }
  return out.str();
}

struct Cost {
  Stat fit, peak, wall;
  double peak_max = kNaN;
};

Cost cost_of(const Row& row) {
  std::vector<double> fit, peak, wall;
  Cost c;
  for (const RunEntry* r : row.ok) {
    fit.push_back(r->fit_seconds);
    peak.push_back(r->peak_rss_mb);
    wall.push_back(r->wall_seconds);
    if (std::isfinite(r->peak_rss_mb) && !(c.peak_max >= r->peak_rss_mb)) c.peak_max = r->peak_rss_mb;
  }
  c.fit = stat_of(fit);
  c.peak = stat_of(peak);
  c.wall = stat_of(wall);
  return c;
}

std::string compute_csv(const std::vector<DatasetReport>& datasets, const std::vector<std::string>& axes) {
  std::ostringstream out;
  out << "dataset," << axes_header(axes)
      << "n_runs,fit_seconds_mean,fit_seconds_sd,peak_rss_mb_mean,peak_rss_mb_sd,peak_rss_mb_max,"
         "wall_seconds_mean\n";
  for (const auto& ds : datasets)
    for (const auto& row : ds.rows) {
      const Cost c = cost_of(row);
      out << csv_field(ds.name) << "," << axes_fields(row, axes) << row.ok.size() << ","
          << csv_number(c.fit.mean) << "," << csv_number(c.fit.sd) << "," << csv_number(c.peak.mean) << ","
          << csv_number(c.peak.sd) << "," << csv_number(c.peak_max) << "," << csv_number(c.wall.mean) << "\n";
    }
  return out.str();
}

std::string runs_csv(const Inputs& in, const std::vector<std::string>& axes) {
  std::ostringstream out;
  out << "dataset," << axes_header(axes) << "seed,status,error,dir\n";
  for (const auto& r : in.runs) {
    out << csv_field(r.dataset) << ",";
    for (const auto& a : axes) {
      auto it = r.labels.find(a);
      out << csv_field(it == r.labels.end() ? "" : it->second) << ",";
    }
    out << r.seed << "," << r.status << "," << csv_field(r.error) << "," << csv_field(r.dir) << "\n";
  }
  return out.str();
}

// ---- the page ------------------------------------------------------------------------------------

std::string stats_json(const std::vector<Row>& rows, const Table& t) {
  std::ostringstream out;
  bool first = true;
  out << "[";
  for (size_t i = 0; i < rows.size(); ++i)
    for (const auto& c : t.columns) {
      const Stat& s = t.cells[i].at(c.name);
      out << (first ? "" : ",") << "{\"row\":" << json_string(rows[i].key) << ",\"metric\":" << json_string(c.name)
          << ",\"group\":" << json_string(c.group == SCSSL_GROUP_OTHER ? "aggregate" : group_name(c.group))
          << ",\"mean\":" << short_number(s.mean) << ",\"sd\":" << short_number(s.sd) << ",\"n\":" << s.n << "}";
      first = false;
    }
  return out.str() + "]";
}

std::string strings_json(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + json_string(items[i]);
  return out + "]";
}

template <class T>
std::string ints_json(const std::vector<T>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + std::to_string(items[i]);
  return out + "]";
}

std::string labels_json(const std::map<std::string, std::string>& labels) {
  std::string out = "{";
  for (const auto& [k, v] : labels) out += (out.size() > 1 ? "," : "") + json_string(k) + ":" + json_string(v);
  return out + "}";
}

std::string layout_json(const DatasetReport& ds, const Layout& l) {
  std::ostringstream out;
  torch::Tensor xy = l.xy.contiguous();
  const float* p = xy.data_ptr<float>();
  std::string xs = "[", ys = "[";
  for (int64_t i = 0; i < xy.size(0); ++i) {
    xs += (i ? "," : "") + short_number(p[2 * i], 4);
    ys += (i ? "," : "") + short_number(p[2 * i + 1], 4);
  }
  out << "{\"row\":" << json_string(ds.rows[l.row].key) << ",\"seed\":" << l.seed << ",\"n_total\":" << l.n_total
      << ",\"x\":" << xs << "],\"y\":" << ys << "],\"label_key\":" << json_string(l.label_key)
      << ",\"labels\":" << strings_json(l.label_names) << ",\"label\":" << ints_json(l.label_codes)
      << ",\"batch_key\":" << json_string(l.batch_key) << ",\"batches\":" << strings_json(l.batch_names)
      << ",\"batch\":" << ints_json(l.batch_codes) << "}";
  return out.str();
}

std::string dataset_json(const DatasetReport& ds) {
  std::ostringstream out;
  out << "{\"name\":" << json_string(ds.name) << ",\"rows\":[";
  for (size_t i = 0; i < ds.rows.size(); ++i)
    out << (i ? "," : "") << "{\"key\":" << json_string(ds.rows[i].key) << ",\"labels\":"
        << labels_json(ds.rows[i].labels) << ",\"n\":" << ds.rows[i].ok.size() << "}";
  const bool scaled = !ds.scaled_table.empty();
  out << "],\"scaled\":" << (scaled ? "true" : "false")
      << ",\"scib\":" << stats_json(ds.rows, scaled ? ds.scaled_table : ds.scib_table)
      << ",\"annotation\":" << stats_json(ds.rows, ds.annotation)
      << ",\"modality\":" << stats_json(ds.rows, ds.modality) << ",\"compute\":[";
  for (size_t i = 0; i < ds.rows.size(); ++i) {
    const Cost c = cost_of(ds.rows[i]);
    out << (i ? "," : "") << "{\"row\":" << json_string(ds.rows[i].key)
        << ",\"fit_seconds\":" << short_number(c.fit.mean) << ",\"fit_seconds_sd\":" << short_number(c.fit.sd)
        << ",\"peak_rss_mb\":" << short_number(c.peak.mean) << ",\"peak_rss_mb_sd\":" << short_number(c.peak.sd)
        << "}";
  }
  out << "],\"embeddings\":[";
  for (size_t i = 0; i < ds.layouts.size(); ++i) out << (i ? "," : "") << layout_json(ds, ds.layouts[i]);
  out << "],\"notes\":" << strings_json(ds.notes) << "}";
  return out.str();
}

std::string page_json(const ReportOptions& options, const Inputs& in, const std::vector<std::string>& axes,
                      const std::vector<DatasetReport>& datasets) {
  std::ostringstream out;
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M", std::localtime(&now));
  out << "{\"title\":" << json_string(options.title) << ",\"generated\":" << json_string(stamp)
      << ",\"inputs\":" << strings_json(options.inputs) << ",\"axes\":" << strings_json(axes)
      << ",\"layout_cells\":" << options.layout_cells << ",\"datasets\":[";
  for (size_t i = 0; i < datasets.size(); ++i) out << (i ? "," : "") << dataset_json(datasets[i]);
  out << "],\"runs\":[";
  bool first = true;
  for (const auto& r : in.runs) {
    out << (first ? "" : ",") << "{\"dataset\":" << json_string(r.dataset)
        << ",\"row\":" << json_string(row_key(r.labels, axes)) << ",\"seed\":" << r.seed
        << ",\"status\":" << json_string(r.status) << ",\"error\":" << json_string(r.error)
        << ",\"dir\":" << json_string(r.dir) << "}";
    first = false;
  }
  out << "]}";
  // "</" inside a <script> element would end it early; "<\/" means the same in JSON.
  std::string text = out.str();
  for (size_t at = 0; (at = text.find("</", at)) != std::string::npos; at += 3) text.replace(at, 2, "<\\/");
  return text;
}

const char* kVendorScripts[] = {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"};

// report.js, report.css and vendor/: the given folder, the installed copy next to the program,
// or the source tree this program was built from.
fs::path find_assets(const std::string& given) {
  std::vector<fs::path> candidates;
  if (!given.empty()) {
    candidates.push_back(given);
  } else {
    std::error_code ec;
    const fs::path exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
    candidates = {exe_dir / ".." / SCSSL_REPORT_ASSET_INSTALL_DIR, SCSSL_REPORT_ASSET_SOURCE_DIR};
  }
  for (const auto& dir : candidates) {
    bool complete = fs::is_regular_file(dir / "report.js") && fs::is_regular_file(dir / "report.css");
    for (const char* f : kVendorScripts) complete = complete && fs::is_regular_file(dir / "vendor" / f);
    if (complete) return dir.lexically_normal();
  }
  std::string tried;
  for (const auto& dir : candidates) tried += (tried.empty() ? "" : ", ") + dir.lexically_normal().string();
  throw IoError("the report's scripts (report.js and vendor/vega*.min.js) are not in " + tried +
                " (give the folder with --assets)");
}

std::string inline_script(const fs::path& file) {
  std::string text = read_text_file(file.string());
  // The map file is not shipped; without the comment a browser never asks for it.
  const size_t map = text.rfind("//# sourceMappingURL=");
  if (map != std::string::npos) text.erase(map);
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.find("</script") != std::string::npos)
    throw IoError(file.string() + " cannot be inlined into a page: it contains '</script'");
  return "<script>\n" + text + "\n</script>\n";
}

// Errors are caught from the first script on: each becomes a visible marker and a count on <body>.
const char* kErrorTrap = R"(<script>
window.reportErrors = 0;
function reportError(text) {
  window.reportErrors += 1;
  document.body.dataset.errors = String(window.reportErrors);
  var box = document.createElement('pre');
  box.className = 'report-error';
  box.textContent = 'Error: ' + text;
  document.body.insertBefore(box, document.body.firstChild);
}
window.onerror = function (message, source, line, column) {
  reportError(message + ' (' + (source || 'page') + ':' + line + ':' + column + ')');
};
window.addEventListener('unhandledrejection', function (event) {
  reportError(String((event.reason && event.reason.stack) || event.reason));
});
</script>
)";

std::string page_html(const ReportOptions& options, const fs::path& assets, const std::string& data) {
  std::string html = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
                     html_escape(options.title) + "</title>\n<style>\n" + read_text_file((assets / "report.css").string()) +
                     "</style>\n</head>\n<body>\n" + kErrorTrap;
  for (const char* f : kVendorScripts) html += inline_script(assets / "vendor" / f);
  html += "<main id=\"report\"><h1>" + html_escape(options.title) + "</h1></main>\n" +
          "<script type=\"application/json\" id=\"report-data\">" + data + "</script>\n" +
          inline_script(assets / "report.js") + "</body>\n</html>\n";
  return html;
}

std::vector<std::string> parse_list(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string s; std::getline(in, s, ',');)
    if (!s.empty()) out.push_back(s);
  return out;
}

}  // namespace

// ---- t-SNE ---------------------------------------------------------------------------------------

torch::Tensor tsne_2d(const torch::Tensor& input, double perplexity, int iterations) {
  torch::NoGradGuard no_grad;
  const int64_t n = input.size(0);
  torch::Tensor x = input.to(torch::kFloat32).contiguous();
  if (n < 2 || input.size(1) < 1) return torch::zeros({n, 2}, torch::kFloat32);
  // PCA start (scaled to a tiny spread, as scikit-learn does): deterministic, and keeps global shape.
  torch::Tensor y;
  if (input.size(1) >= 2) {
    y = fit_pca(Matrix::from_dense(x, "embedding"), 2).transform(Matrix::from_dense(x, "embedding"));
  } else {
    y = torch::cat({x, torch::zeros({n, 1})}, 1);
  }
  if (y.size(1) < 2) y = torch::cat({y, torch::zeros({n, 2 - y.size(1)})}, 1);
  y = (y - y.mean(0, true)) / y.select(1, 0).std().clamp_min(1e-12) * 1e-4;
  if (n < 4) return y;
  perplexity = std::max(1.0, std::min(perplexity, (n - 1) / 3.0));

  // Affinities: per cell, the Gaussian width whose conditional distribution has the wanted
  // perplexity (bisection on the precision beta, all cells at once), then symmetrized.
  torch::Tensor sq = (x * x).sum(1);
  torch::Tensor d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * x.mm(x.t())).clamp_min(0);
  d = d / d.mean().clamp_min(1e-12);
  d.fill_diagonal_(std::numeric_limits<float>::infinity());
  d = d - std::get<0>(d.min(1, true));  // the nearest neighbour at 0: no underflow below
  d.fill_diagonal_(0);
  torch::Tensor beta = torch::ones({n, 1}), lo = torch::zeros({n, 1});
  torch::Tensor hi = torch::full({n, 1}, std::numeric_limits<float>::infinity());
  const double target = std::log(perplexity);
  torch::Tensor p;
  for (int it = 0; it < 64; ++it) {
    p = torch::exp(-d * beta);
    p.fill_diagonal_(0);
    torch::Tensor sum = p.sum(1, true);
    torch::Tensor entropy = sum.log() + beta * (d * p).sum(1, true) / sum;
    if ((entropy - target).abs().max().item<double>() < 1e-5) break;
    torch::Tensor too_flat = entropy > target;  // too many neighbours: narrow the kernel
    lo = torch::where(too_flat, beta, lo);
    hi = torch::where(too_flat, hi, beta);
    beta = torch::where(torch::isinf(hi), beta * 2, (lo + hi) / 2);
  }
  p = p / p.sum(1, true);
  p = (p + p.t()) / (2.0 * n);

  // Gradient descent with momentum and per-coordinate gains (van der Maaten & Hinton 2008); the first
  // third exaggerates the affinities so that clusters form before they settle.
  const double exaggeration = 12;
  const int exaggerated = iterations / 3;
  const double rate = std::max(n / exaggeration / 4, 50.0);
  torch::Tensor update = torch::zeros_like(y), gains = torch::ones_like(y);
  // The n x n work happens in place in two buffers: fresh n x n temporaries every iteration
  // made the kernel's page faults cost more than the arithmetic.
  torch::Tensor w = torch::empty({n, n}), m = torch::empty({n, n});
  for (int it = 0; it < iterations; ++it) {
    // w = 1 / (1 + |y_i - y_j|^2) off the diagonal; m = (P - Q) * w with Q = w / sum(w).
    torch::Tensor sy = (y * y).sum(1);
    torch::addmm_out(w, sy.unsqueeze(0), y, y.t(), 1, -2);
    w.add_(sy.unsqueeze(1)).add_(1).reciprocal_();
    w.fill_diagonal_(0);
    const double z = w.sum().item<double>();
    torch::mul_out(m, p, it < exaggerated ? exaggeration : 1.0);
    m.sub_(w, 1 / z).mul_(w);
    torch::Tensor grad = 4 * (m.sum(1, true) * y - m.mm(y));
    gains = torch::where((grad > 0) != (update > 0), gains + 0.2, gains * 0.8).clamp_min(0.01);
    update = (it < exaggerated ? 0.5 : 0.8) * update - rate * gains * grad;
    y = y + update;
  }
  return y - y.mean(0, true);
}

// ---- entry points --------------------------------------------------------------------------------

std::vector<std::string> write_report(const ReportOptions& options) {
  if (options.inputs.empty()) throw InvalidArgument("report needs at least one run or sweep folder");
  if (options.output.empty()) throw InvalidArgument("report needs an output folder (--output)");
  if (options.layout_cells < 0) throw InvalidArgument("--layout-cells must be 0 (no plots) or more");
  const fs::path assets = find_assets(options.assets);
  Inputs in;
  for (const auto& input : options.inputs) collect(input, in, true);
  std::vector<std::string> axes = options.rows;
  if (axes.empty()) axes = in.label_names;
  for (const auto& a : axes)
    if (std::find(in.label_names.begin(), in.label_names.end(), a) == in.label_names.end())
      throw InvalidArgument("--rows: no run has a label '" + a + "' (labels: " + [&] {
        std::string s;
        for (const auto& l : in.label_names) s += (s.empty() ? "" : ", ") + l;
        return s;
      }() + ")");
  const size_t ok = std::count_if(in.runs.begin(), in.runs.end(), [](const RunEntry& r) { return r.status == "ok"; });
  spdlog::info("report: {} run(s), {} finished, {} failed or pending", in.runs.size(), ok, in.runs.size() - ok);
  for (const auto& r : in.runs)
    if (r.status != "ok") spdlog::warn("{} {}: {}", r.status, r.dir, r.error.empty() ? "(no error recorded)" : r.error);

  const std::vector<DatasetReport> datasets = summarize_datasets(in, axes, options);
  std::error_code ec;
  fs::create_directories(options.output, ec);
  if (ec) throw IoError("cannot create output folder '" + options.output + "': " + ec.message());
  const fs::path out(options.output);
  std::vector<std::string> written;
  auto write = [&](const std::string& name, const std::string& content) {
    write_file_atomic((out / name).string(), content);
    written.push_back((out / name).string());
  };
  for (const auto& ds : datasets) {
    if (ds.rows.empty()) continue;
    const std::string stem = file_safe(ds.name);
    std::vector<std::pair<const Table*, std::string>> scib = {{&ds.scib_table, ""}};
    if (options.min_max_scale) scib.push_back({&ds.scaled_table, "_scaled"});
    if (!ds.scib_table.empty()) write("scib_" + stem + ".csv", tables_csv(ds.rows, axes, scib));
    if (!ds.annotation.empty())
      write("annotation_" + stem + ".csv", tables_csv(ds.rows, axes, {{&ds.annotation, ""}}));
    if (!ds.modality.empty())
      write("modality_" + stem + ".csv", tables_csv(ds.rows, axes, {{&ds.modality, ""}}));
  }
  write("compute.csv", compute_csv(datasets, axes));
  write("runs.csv", runs_csv(in, axes));
  write("report.html", page_html(options, assets, page_json(options, in, axes, datasets)));
  return written;
}

int cmd_report(const std::vector<std::string>& args) {
  ReportOptions options;
  std::string rows;
  po::options_description opts("report options");
  opts.add_options()("inputs", po::value(&options.inputs)->composing(),
                     "run folders, sweep folders, or folders holding them")(
      "output,o", po::value(&options.output)->required(), "folder for the tables and report.html")(
      "title", po::value(&options.title), "the page's title")(
      "min-max-scale", po::bool_switch(&options.min_max_scale),
      "also scale each scIB metric to [0, 1] across the runs of a data set")(
      "rows", po::value(&rows), "comma-separated labels that make a row (default: every label but dataset)")(
      "layout-cells", po::value(&options.layout_cells), "cells per embedding plot, 0 for none (default 2000)")(
      "assets", po::value(&options.assets), "folder of report.js and vendor/ (default: next to the program)");
  po::positional_options_description pos;
  pos.add("inputs", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  if (options.inputs.empty()) throw po::error("report needs at least one run or sweep folder");
  options.rows = parse_list(rows);
  for (const auto& path : write_report(options)) std::cout << path << "\n";
  return 0;
}

}  // namespace scssl::host
