#include "report.hpp"

#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "aggregates.hpp"
#include "runfolder/files.hpp"
#include "runfolder/json.hpp"
#include "runfolder/metrics.hpp"
#include "runfolder/records.hpp"
#include "scssl/anndata/anndata.hpp"

namespace fs = std::filesystem;

namespace scssl::report {

using runfolder::csv_field;
using runfolder::csv_number;
using runfolder::Json;
using runfolder::MetricGroup;
using runfolder::MetricRecord;
using runfolder::RunStatus;

namespace {

const double kNaN = std::nan("");
// Neighbours per cell of the embedding maps, itself included: scanpy's pp.neighbors default.
const int64_t kUmapNeighbors = 15;

// ---- small helpers
// -------------------------------------------------------------------------------

// `v` with `digits` significant digits, for the page (full precision goes to the CSV); null when
// not finite.
Json short_number(double v, int digits = 6) {
  if (!std::isfinite(v)) return nullptr;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return std::strtod(buf, nullptr);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A data set's name as part of a file name.
std::string file_safe(const std::string& name) {
  std::string out;
  for (char c : name)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.') ? c : '_';
  return out.empty() ? "dataset" : out;
}

// ---- reading runs
// --------------------------------------------------------------------------------

struct RunEntry {
  std::string dir;
  std::string dataset;
  std::map<std::string, std::string> labels;  // every label but the data set and the seed
  int64_t seed = 0;
  // A run's evaluation protocol. Runs of one row under both protocols merge: the scIB columns
  // come from its batch-correction runs, the annotation columns from its query-mapping runs.
  std::string protocol;
  RunStatus status = RunStatus::ok;
  std::string error;
  std::vector<MetricRecord> metrics;
  double fit_seconds = kNaN, peak_rss_mb = kNaN, wall_seconds = kNaN;
  std::string embedding_h5;  // embedding.h5 of a run, "" when absent
  std::string h5ad;          // the .h5ad holding the obs columns (and obsm/<obsm_key>)
  std::string obsm_key, label_key, batch_key;
};

// Everything the inputs hold; label names in order of first appearance.
struct Inputs {
  std::vector<RunEntry> runs;
  std::vector<std::string> label_names;
  std::set<std::string>
      seen;  // run folders, so that one given twice (a sweep and its runs/) counts once
  void add(RunEntry run) {
    std::error_code ec;
    const fs::path canonical = fs::canonical(run.dir, ec);
    if (!ec && fs::is_regular_file(canonical / "run.json") &&
        !seen.insert(canonical.string()).second)
      return;
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
  for (const fs::path& p :
       {dir / "config.resolved.toml", dir.parent_path() / "config.resolved.toml"}) {
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
  const runfolder::RunRecord info = runfolder::read_run_record((dir / "run.json").string());
  if (info.status != RunStatus::ok) {
    run.status = info.status == RunStatus::running ? RunStatus::running : RunStatus::failed;
    run.error = info.error.value_or(
        info.status == RunStatus::running
            ? "run.json still says running: the run is under way, or its process died"
            : "");
  }
  if (!from_sweep) run.seed = info.seed;
  if (info.data && info.data->protocol) run.protocol = *info.data->protocol;
  run.wall_seconds = info.wall_seconds;
  run.peak_rss_mb = info.peak_rss_mb;
  for (const auto& s : info.stages) {
    if (s.stage == "fit") run.fit_seconds = s.wall_seconds;
    if (std::isfinite(s.peak_rss_mb) && !(run.peak_rss_mb >= s.peak_rss_mb))
      run.peak_rss_mb = s.peak_rss_mb;
  }
  if (info.embedding) {
    run.obsm_key = info.embedding->obsm_key;
    // A run stores its copy's file name; `evaluate` names the file it read.
    if (const auto& h5ad = info.embedding->h5ad)
      run.h5ad = (fs::path(*h5ad).is_absolute() ? fs::path(*h5ad) : dir / *h5ad).string();
  }
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
  if (run.status == RunStatus::ok) {
    if (!fs::is_regular_file(dir / "metrics.csv"))
      throw BadData("'" + run.dir + "' has no metrics.csv although run.json says it finished");
    run.metrics = runfolder::read_metrics_csv((dir / "metrics.csv").string());
  }
}

// sweep.json (docs/run-folder.md): runs with their labels, status and folder.
void read_sweep(const fs::path& dir, Inputs& in) {
  const runfolder::SweepRecord sweep = runfolder::read_sweep_record((dir / "sweep.json").string());
  in.add_label_name("method");
  for (const auto& a : sweep.axes) in.add_label_name(a);
  for (const auto& r : sweep.runs) {
    RunEntry run;
    run.seed = r.seed;
    run.protocol = r.protocol;
    run.status = r.status;
    run.error = r.error.value_or("");
    for (const auto& [name, value] : r.labels) {
      if (name == "dataset")
        run.dataset = value;
      else if (name != "seed")
        run.labels[name] = value;
      in.add_label_name(name);
    }
    if (run.dataset.empty()) run.dataset = "unknown";
    const fs::path run_dir = dir / r.dir;
    run.dir = run_dir.lexically_normal().string();
    if (run.status == RunStatus::ok) {
      try {
        read_run_folder(run_dir, run, true);
      } catch (const std::exception& e) {
        run.status = RunStatus::failed;
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
    run.status = RunStatus::failed;
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
    throw InvalidArgument("'" + input.string() +
                          "' is not a folder (report reads run and sweep folders)");
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
    throw InvalidArgument(
        "'" + input.string() +
        "' is not a run folder (no run.json), a sweep folder (no sweep.json) or a "
        "folder holding either");
}

// ---- summaries
// -----------------------------------------------------------------------------------

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
  MetricGroup group;
};

// Metrics of chosen groups, one Stat per (row, metric) over the row's runs.
struct Table {
  std::vector<Column> columns;
  std::vector<std::map<std::string, Stat>> cells;  // per row
  bool empty() const { return columns.empty(); }
};

using MetricsOf = std::function<const std::vector<MetricRecord>&(const RunEntry*)>;

Table summarize(const std::vector<Row>& rows, const MetricsOf& metrics_of,
                const std::vector<MetricGroup>& groups) {
  Table t;
  for (MetricGroup g : groups)
    for (const auto& row : rows)
      for (const RunEntry* run : row.ok)
        for (const auto& m : metrics_of(run))
          if (m.group == g && std::none_of(t.columns.begin(), t.columns.end(),
                                           [&](const Column& c) { return c.name == m.metric; }))
            t.columns.push_back({m.metric, g});
  for (const auto& row : rows) {
    std::map<std::string, Stat> cells;
    for (const auto& c : t.columns) {
      std::vector<double> values;
      for (const RunEntry* run : row.ok)
        for (const auto& m : metrics_of(run))
          if (m.metric == c.name && m.group == c.group) values.push_back(m.value);
      cells[c.name] = stat_of(values);
    }
    t.cells.push_back(std::move(cells));
  }
  return t;
}

// What the page needs to draw one embedding map: the sampled cells' neighbour graph (the page runs
// UMAP on it) and their cell types and batches.
struct Layout {
  size_t row;
  int64_t seed = 0, n_total = 0, k = 0;
  std::vector<int32_t> knn;  // n x k, row by row
  std::vector<float> knn_dist;
  std::vector<int32_t> label_codes, batch_codes;
  std::vector<std::string> label_names, batch_names;
  std::string label_key, batch_key;
};

struct DatasetReport {
  std::string name;
  std::vector<Row> rows;  // rows with at least one finished run, best Total first
  std::map<const RunEntry*, std::vector<MetricRecord>> scib, scaled;  // per run, aggregates added
  Table scib_table, scaled_table, annotation, modality;
  std::vector<Layout> layouts;
  std::vector<std::string> notes;
};

std::string row_key(const std::map<std::string, std::string>& labels,
                    const std::vector<std::string>& axes) {
  std::string key;
  for (const auto& a : axes) {
    auto it = labels.find(a);
    if (it == labels.end() || it->second.empty()) continue;
    key += (key.empty() ? "" : " · ") + it->second;
  }
  return key.empty() ? "run" : key;
}

// ---- 2-d layouts of embeddings
// -------------------------------------------------------------------

// The embedding of a run: embedding.h5 when there, else obsm/<key> of its .h5ad.
anndata::Matrix read_embedding(const RunEntry& run) {
  if (!run.embedding_h5.empty()) return anndata::read_embedding_h5(run.embedding_h5);
  return anndata::read_obsm(run.h5ad, run.obsm_key);
}

// Codes for `n` cells of column `key`, or one "(not set)" category when the run named none.
void obs_codes_or_unset(const RunEntry& run, const std::string& key, int64_t n,
                        std::vector<int32_t>& codes, std::vector<std::string>& names) {
  if (key.empty()) {
    codes.assign(n, 0);
    names = {"(not set)"};
    return;
  }
  anndata::Categories column = anndata::read_obs_categories(run.h5ad, key);
  codes = std::move(column.codes);
  names = std::move(column.names);
  if (static_cast<int64_t>(codes.size()) != n)
    throw BadData(run.h5ad + ": obs has " + std::to_string(codes.size()) +
                  " cells but the embedding " + std::to_string(n));
}

// The layout of the first finished run of a row (lowest seed) that has its .h5ad; a note instead
// when none can be drawn.
void add_layout(DatasetReport& ds, size_t row_index, int64_t max_cells) {
  const Row& row = ds.rows[row_index];
  // The map shows integration: a model trained on every cell when the row has one.
  const RunEntry* run = nullptr;
  for (const RunEntry* r : row.ok)
    if (!r->h5ad.empty() && fs::is_regular_file(r->h5ad) &&
        (run == nullptr || (run->protocol != runfolder::kBatchCorrection &&
                            r->protocol == runfolder::kBatchCorrection)))
      run = r;
  if (run == nullptr) {
    ds.notes.push_back(
        "No embedding plot for " + row.key +
        ": no run of it kept an .h5ad copy with the cell types and batches (run.write_h5ad).");
    return;
  }
  try {
    const auto started = std::chrono::steady_clock::now();
    const anndata::Matrix embedding = read_embedding(*run);
    const int64_t n = embedding.rows, d = embedding.cols;
    Layout layout;
    layout.row = row_index;
    layout.seed = run->seed;
    layout.n_total = n;
    layout.label_key = run->label_key;
    layout.batch_key = run->batch_key;
    std::vector<int32_t> labels, batches;
    obs_codes_or_unset(*run, run->label_key, n, labels, layout.label_names);
    obs_codes_or_unset(*run, run->batch_key, n, batches, layout.batch_names);
    // A fixed-seed random subsample keeps the page's layout affordable.
    std::vector<int64_t> ids(n);
    std::iota(ids.begin(), ids.end(), 0);
    if (n > max_cells) {
      std::mt19937_64 rng(0);
      std::shuffle(ids.begin(), ids.end(), rng);
      ids.resize(max_cells);
      std::sort(ids.begin(), ids.end());
    }
    std::vector<float> sample;
    sample.reserve(ids.size() * d);
    for (int64_t i : ids) {
      sample.insert(sample.end(), embedding.values.begin() + i * d,
                    embedding.values.begin() + (i + 1) * d);
      layout.label_codes.push_back(labels[i]);
      layout.batch_codes.push_back(batches[i]);
    }
    if (static_cast<int64_t>(ids.size()) <= kUmapNeighbors)
      throw BadData("a map needs more than " + std::to_string(kUmapNeighbors) +
                    " cells, the run has " + std::to_string(ids.size()));
    layout.k = kUmapNeighbors;
    nearest_neighbors(sample, static_cast<int64_t>(ids.size()), d, layout.k, layout.knn,
                      layout.knn_dist);
    spdlog::info("neighbours of {} ({} of {} cells) in {:.1f} s", row.key, ids.size(),
                 layout.n_total,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    ds.layouts.push_back(std::move(layout));
  } catch (const std::exception& e) {
    ds.notes.push_back("No embedding plot for " + row.key + ": " + e.what());
  }
}

// ---- the data sets
// -------------------------------------------------------------------------------

std::vector<DatasetReport> summarize_datasets(const Inputs& in,
                                              const std::vector<std::string>& axes,
                                              const ReportOptions& options) {
  std::vector<DatasetReport> out;
  for (const RunEntry& run : in.runs) {
    auto ds = std::find_if(out.begin(), out.end(),
                           [&](const DatasetReport& d) { return d.name == run.dataset; });
    if (ds == out.end()) {
      out.push_back({});
      out.back().name = run.dataset;
      ds = out.end() - 1;
    }
    if (run.status != RunStatus::ok) continue;
    const std::string key = row_key(run.labels, axes);
    auto row =
        std::find_if(ds->rows.begin(), ds->rows.end(), [&](const Row& r) { return r.key == key; });
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
      std::vector<MetricRecord> m;
      for (const auto& v : r->metrics)
        if (v.group != MetricGroup::other) m.push_back(v);
      const auto aggregates = evaluation::scib_aggregates(m);
      m.insert(m.end(), aggregates.begin(), aggregates.end());
      ds.scib[r] = std::move(m);
    }
    if (options.min_max_scale) {
      std::vector<std::vector<MetricRecord>> per_run;
      for (const RunEntry* r : runs) per_run.push_back(ds.scib[r]);
      const auto scaled = evaluation::min_max_scaled(per_run);
      for (size_t i = 0; i < runs.size(); ++i) ds.scaled[runs[i]] = scaled[i];
    }
    const MetricsOf scib_of = [&ds](const RunEntry* r) -> const std::vector<MetricRecord>& {
      return ds.scib.at(r);
    };
    const MetricsOf scaled_of = [&ds](const RunEntry* r) -> const std::vector<MetricRecord>& {
      return ds.scaled.at(r);
    };
    const std::vector<MetricGroup> scib_groups = {MetricGroup::bio, MetricGroup::batch,
                                                  MetricGroup::other};
    const Table order =
        summarize(ds.rows, options.min_max_scale ? scaled_of : scib_of, scib_groups);
    // Best Total first (the scaled one when scaling), as scIB's tables rank.
    std::vector<size_t> index(ds.rows.size());
    std::iota(index.begin(), index.end(), 0);
    auto total = [&](size_t i) {
      auto it = order.cells[i].find("total");
      return it == order.cells[i].end() || !std::isfinite(it->second.mean) ? -HUGE_VAL
                                                                           : it->second.mean;
    };
    std::stable_sort(index.begin(), index.end(),
                     [&](size_t a, size_t b) { return total(a) > total(b); });
    std::vector<Row> sorted;
    for (size_t i : index) sorted.push_back(ds.rows[i]);
    ds.rows = std::move(sorted);

    ds.scib_table = summarize(ds.rows, scib_of, scib_groups);
    if (options.min_max_scale) ds.scaled_table = summarize(ds.rows, scaled_of, scib_groups);
    auto raw = [](const RunEntry* r) -> const std::vector<MetricRecord>& { return r->metrics; };
    ds.annotation = summarize(ds.rows, raw, {MetricGroup::annotation});
    ds.modality = summarize(ds.rows, raw, {MetricGroup::modality});
    if (options.layout_cells > 0)
      for (size_t i = 0; i < ds.rows.size(); ++i) add_layout(ds, i, options.layout_cells);
  }
  return out;
}

// ---- CSV
// -----------------------------------------------------------------------------------------

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

// One line per row: its labels, the number of runs behind the tables' values (a row's runs under
// the other protocol have none), then mean and sd of each column of each table (a table's columns
// get `suffix` before _mean/_sd).
std::string tables_csv(const std::vector<Row>& rows, const std::vector<std::string>& axes,
                       const std::vector<std::pair<const Table*, std::string>>& tables) {
  std::ostringstream out;
  out << axes_header(axes) << "n_runs";
  for (const auto& [t, suffix] : tables)
    for (const auto& c : t->columns)
      out << "," << c.name << suffix << "_mean," << c.name << suffix << "_sd";
  out << "\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    int runs = 0;
    for (const auto& [t, suffix] : tables)
      for (const auto& c : t->columns) runs = std::max(runs, t->cells[i].at(c.name).n);
    out << axes_fields(rows[i], axes) << runs;
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
    if (std::isfinite(r->peak_rss_mb) && !(c.peak_max >= r->peak_rss_mb))
      c.peak_max = r->peak_rss_mb;
  }
  c.fit = stat_of(fit);
  c.peak = stat_of(peak);
  c.wall = stat_of(wall);
  return c;
}

std::string compute_csv(const std::vector<DatasetReport>& datasets,
                        const std::vector<std::string>& axes) {
  std::ostringstream out;
  out << "dataset," << axes_header(axes)
      << "n_runs,fit_seconds_mean,fit_seconds_sd,peak_rss_mb_mean,peak_rss_mb_sd,peak_rss_mb_max,"
         "wall_seconds_mean\n";
  for (const auto& ds : datasets)
    for (const auto& row : ds.rows) {
      const Cost c = cost_of(row);
      out << csv_field(ds.name) << "," << axes_fields(row, axes) << row.ok.size() << ","
          << csv_number(c.fit.mean) << "," << csv_number(c.fit.sd) << "," << csv_number(c.peak.mean)
          << "," << csv_number(c.peak.sd) << "," << csv_number(c.peak_max) << ","
          << csv_number(c.wall.mean) << "\n";
    }
  return out.str();
}

std::string runs_csv(const Inputs& in, const std::vector<std::string>& axes) {
  std::ostringstream out;
  out << "dataset," << axes_header(axes) << "seed,protocol,status,error,dir\n";
  for (const auto& r : in.runs) {
    out << csv_field(r.dataset) << ",";
    for (const auto& a : axes) {
      auto it = r.labels.find(a);
      out << csv_field(it == r.labels.end() ? "" : it->second) << ",";
    }
    out << r.seed << "," << csv_field(r.protocol) << "," << runfolder::status_name(r.status) << ","
        << csv_field(r.error) << "," << csv_field(r.dir) << "\n";
  }
  return out.str();
}

// ---- the page
// ------------------------------------------------------------------------------------

Json stats_json(const std::vector<Row>& rows, const Table& t) {
  Json out = Json::array();
  for (size_t i = 0; i < rows.size(); ++i)
    for (const auto& c : t.columns) {
      const Stat& s = t.cells[i].at(c.name);
      out.push_back(
          {{"row", rows[i].key},
           {"metric", c.name},
           {"group", c.group == MetricGroup::other ? "aggregate" : runfolder::group_name(c.group)},
           {"mean", short_number(s.mean)},
           {"sd", short_number(s.sd)},
           {"n", s.n}});
    }
  return out;
}

Json layout_json(const DatasetReport& ds, const Layout& l) {
  Json dist = Json::array();
  for (float v : l.knn_dist) dist.push_back(short_number(v, 4));
  return {{"row", ds.rows[l.row].key},
          {"seed", l.seed},
          {"n_total", l.n_total},
          {"k", l.k},
          {"knn", l.knn},
          {"knn_dist", dist},
          {"label_key", l.label_key},
          {"labels", l.label_names},
          {"label", l.label_codes},
          {"batch_key", l.batch_key},
          {"batches", l.batch_names},
          {"batch", l.batch_codes}};
}

Json dataset_json(const DatasetReport& ds) {
  Json rows = Json::array(), compute = Json::array(), embeddings = Json::array();
  for (const Row& row : ds.rows) {
    Json labels = Json::object();
    for (const auto& [k, v] : row.labels) labels[k] = v;
    rows.push_back({{"key", row.key}, {"labels", labels}, {"n", row.ok.size()}});
    const Cost c = cost_of(row);
    compute.push_back({{"row", row.key},
                       {"fit_seconds", short_number(c.fit.mean)},
                       {"fit_seconds_sd", short_number(c.fit.sd)},
                       {"peak_rss_mb", short_number(c.peak.mean)},
                       {"peak_rss_mb_sd", short_number(c.peak.sd)}});
  }
  for (const Layout& l : ds.layouts) embeddings.push_back(layout_json(ds, l));
  const bool scaled = !ds.scaled_table.empty();
  return {{"name", ds.name},
          {"rows", rows},
          {"scaled", scaled},
          {"scib", stats_json(ds.rows, scaled ? ds.scaled_table : ds.scib_table)},
          {"annotation", stats_json(ds.rows, ds.annotation)},
          {"modality", stats_json(ds.rows, ds.modality)},
          {"compute", compute},
          {"embeddings", embeddings},
          {"notes", ds.notes}};
}

std::string page_json(const ReportOptions& options, const Inputs& in,
                      const std::vector<std::string>& axes,
                      const std::vector<DatasetReport>& datasets) {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M", std::localtime(&now));
  Json sets = Json::array(), runs = Json::array();
  for (const auto& ds : datasets) sets.push_back(dataset_json(ds));
  for (const auto& r : in.runs)
    runs.push_back({{"dataset", r.dataset},
                    {"row", row_key(r.labels, axes)},
                    {"seed", r.seed},
                    {"status", runfolder::status_name(r.status)},
                    {"error", r.error},
                    {"dir", r.dir}});
  const Json page = {{"title", options.title},
                     {"generated", stamp},
                     {"inputs", options.inputs},
                     {"axes", axes},
                     {"layout_cells", options.layout_cells},
                     {"datasets", sets},
                     {"runs", runs}};
  // "</" inside a <script> element would end it early; "<\/" means the same in JSON.
  std::string text = runfolder::dump_json(page, -1);
  for (size_t at = 0; (at = text.find("</", at)) != std::string::npos; at += 3)
    text.replace(at, 2, "<\\/");
  return text;
}

const char* kVendorScripts[] = {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js",
                                "umap-js.min.js"};

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
    bool complete =
        fs::is_regular_file(dir / "report.js") && fs::is_regular_file(dir / "report.css");
    for (const char* f : kVendorScripts)
      complete = complete && fs::is_regular_file(dir / "vendor" / f);
    if (complete) return dir.lexically_normal();
  }
  std::string tried;
  for (const auto& dir : candidates)
    tried += (tried.empty() ? "" : ", ") + dir.lexically_normal().string();
  throw IoError("the report's scripts (report.js and vendor/*.min.js) are not in " + tried +
                " (give the folder with --assets)");
}

std::string inline_script(const fs::path& file) {
  std::string text = runfolder::read_text_file(file.string());
  // The map file is not shipped; without the comment a browser never asks for it.
  const size_t map = text.rfind("//# sourceMappingURL=");
  if (map != std::string::npos) text.erase(map);
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return std::tolower(c); });
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

std::string page_html(const ReportOptions& options, const fs::path& assets,
                      const std::string& data) {
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
      html_escape(options.title) + "</title>\n<style>\n" +
      runfolder::read_text_file((assets / "report.css").string()) + "</style>\n</head>\n<body>\n" +
      kErrorTrap;
  for (const char* f : kVendorScripts) html += inline_script(assets / "vendor" / f);
  html += "<main id=\"report\"><h1>" + html_escape(options.title) + "</h1></main>\n" +
          "<script type=\"application/json\" id=\"report-data\">" + data + "</script>\n" +
          inline_script(assets / "report.js") + "</body>\n</html>\n";
  return html;
}

}  // namespace

// ---- neighbours for the maps --------------------------------------------------------------------

void nearest_neighbors(const std::vector<float>& x, int64_t n, int64_t d, int64_t k,
                       std::vector<int32_t>& indices, std::vector<float>& distances) {
  k = std::min(k, n);
  indices.assign(static_cast<size_t>(n * k), 0);
  distances.assign(static_cast<size_t>(n * k), 0.0f);
  std::vector<std::pair<double, int32_t>> row(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x.data() + i * d;
    for (int64_t j = 0; j < n; ++j) {
      const float* xj = x.data() + j * d;
      double sq = 0;
      for (int64_t c = 0; c < d; ++c) sq += (double(xi[c]) - xj[c]) * (double(xi[c]) - xj[c]);
      // The cell itself comes first even where another cell sits at the same point.
      row[j] = {j == i ? -1.0 : sq, static_cast<int32_t>(j)};
    }
    std::partial_sort(row.begin(), row.begin() + k, row.end());
    for (int64_t r = 0; r < k; ++r) {
      indices[i * k + r] = row[r].second;
      distances[i * k + r] = static_cast<float>(std::sqrt(std::max(0.0, row[r].first)));
    }
  }
}

// ---- entry points
// --------------------------------------------------------------------------------

std::vector<std::string> write_report(const ReportOptions& options) {
  if (options.inputs.empty())
    throw InvalidArgument("report needs at least one run or sweep folder");
  if (options.output.empty()) throw InvalidArgument("report needs an output folder (--output)");
  if (options.layout_cells < 0)
    throw InvalidArgument("--layout-cells must be 0 (no plots) or more");
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
  const size_t ok = std::count_if(in.runs.begin(), in.runs.end(),
                                  [](const RunEntry& r) { return r.status == RunStatus::ok; });
  spdlog::info("report: {} run(s), {} finished, {} failed or pending", in.runs.size(), ok,
               in.runs.size() - ok);
  for (const auto& r : in.runs)
    if (r.status != RunStatus::ok)
      spdlog::warn("{} {}: {}", runfolder::status_name(r.status), r.dir,
                   r.error.empty() ? "(no error recorded)" : r.error);

  const std::vector<DatasetReport> datasets = summarize_datasets(in, axes, options);
  std::error_code ec;
  fs::create_directories(options.output, ec);
  if (ec) throw IoError("cannot create output folder '" + options.output + "': " + ec.message());
  const fs::path out(options.output);
  std::vector<std::string> written;
  auto write = [&](const std::string& name, const std::string& content) {
    runfolder::write_file_atomic((out / name).string(), content);
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

}  // namespace scssl::report
