#include "run.hpp"

#include "crash_guard.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "aggregates.hpp"
#include "augmentation_pipeline.hpp"
#include "blas_kernels.hpp"
#include "resources.hpp"
#include "results.hpp"
#include "runfolder/files.hpp"
#include "runfolder/records.hpp"
#include "scssl/anndata/anndata.hpp"
#include "scssl/knn.hpp"
#include "scssl/pca.hpp"

namespace fs = std::filesystem;

namespace scssl::host {

using runfolder::claim_run_directory;
using runfolder::create_run_directory;
using runfolder::write_file_atomic;

namespace {

// Adds a log file to the default logger for the lifetime of this object.
class RunLog {
 public:
  explicit RunLog(const std::string& path)
      : sink_(std::make_shared<spdlog::sinks::basic_file_sink_mt>(path)),
        file_only_(std::make_shared<spdlog::logger>("run-file", sink_)) {
    sink_->set_level(spdlog::level::debug);
    file_only_->set_level(spdlog::level::debug);
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  // The caller reports the error on the terminal; the log file gets it too.
  void record_error(const std::string& message) { file_only_->error(message); }
  ~RunLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }

 private:
  std::shared_ptr<spdlog::sinks::basic_file_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> file_only_;
};

// Progress on a terminal: one line rewritten in place; elsewhere: a log line every 10 %.
void install_progress(HostServices& services, bool show) {
  const bool tty = isatty(STDERR_FILENO);
  services.on_progress = [show, tty, last = int64_t{-1}](const std::string& stage, int64_t done,
                                                         int64_t total,
                                                         const std::string& text) mutable {
    if (!show || total <= 0) return;
    const int64_t decile = done * 10 / total;
    if (tty) {
      std::fprintf(stderr, "\r  %s %lld/%lld %s\033[K", stage.c_str(), (long long)done,
                   (long long)total, text.c_str());
      if (done >= total) std::fprintf(stderr, "\n");
      std::fflush(stderr);
    } else if (decile != last || done >= total) {
      spdlog::info("{} {}/{} {}", stage, done, total, text);
    }
    last = decile;
  };
}

// Where the data set's matrix, and so the raw counts the host keeps, was read from.
std::string counts_source(const RunConfig& cfg) {
  const ParamSet& p = cfg.dataset.params;
  if (!p.has("layer")) return "the data set's matrix";
  const std::string& layer = p.get_string("layer");
  if (layer.empty()) return "X (dataset.layer = \"\")";
  if (layer == "raw") return "raw/X (dataset.layer = \"raw\")";
  return "layers/" + layer + " (dataset.layer = \"" + layer + "\")";
}

// The raw counts a generative method models must be counts (docs/method-spec.md §12.1):
// non-negative whole numbers. The first value that is not names its cell and feature.
void check_counts_are_counts(const Modality& m, const std::string& who, const CellData& data,
                             const std::string& source) {
  const Matrix& c = m.counts;
  const torch::Tensor values = c.is_csr() ? c.values : c.dense.reshape(-1);
  const torch::Tensor bad = (values < 0).logical_or(values != values.round());
  if (!bad.any().item<bool>()) return;
  const int64_t k = bad.nonzero()[0][0].item<int64_t>();
  int64_t row = 0, col = 0;
  if (c.is_csr()) {
    row = torch::searchsorted(c.indptr, torch::tensor(k), /*out_int32=*/false, /*right=*/true)
              .item<int64_t>() -
          1;
    col = c.indices[k].item<int32_t>();
  } else {
    row = k / c.cols;
    col = k % c.cols;
  }
  throw BadData(who + " needs raw counts, but modality '" + m.name + "' read from " + source +
                " holds " + std::to_string(values[k].item<float>()) + " for cell '" +
                data.cell_names.at(row) + "' and feature '" + m.features.at(col) +
                "', which is not a count; set dataset.layer to the matrix holding the raw counts "
                "(\"counts\" reads layers/counts, \"raw\" reads raw/X)");
}

// What a plugin declares it needs from the data (scssl_requirement bits), checked before training.
void check_requirements(uint64_t needs, const std::string& who, const CellData& data,
                        const std::string& counts_from = "the data set's matrix") {
  if (needs & SCSSL_NEEDS_BATCH) data.require_batches(who);
  if (needs & SCSSL_NEEDS_LABELS) data.require_labels(who);
  if ((needs & SCSSL_NEEDS_SECOND_MODALITY) && data.modalities.size() < 2)
    throw BadData(who + " needs two modalities (e.g. RNA and ADT), but the data set has " +
                  std::to_string(data.modalities.size()));
  if (needs & SCSSL_NEEDS_RAW_COUNTS) {
    for (const auto& m : data.modalities) {
      if (m.counts.empty())
        throw BadData(who + " needs raw counts, but modality '" + m.name + "' has none");
      check_counts_are_counts(m, who, data, counts_from);
    }
  }
}

// Settings that can only be checked against the data (per-modality preprocessing sections);
// checked before any training.
void check_config_against_data(const RunConfig& cfg, const CellData& data) {
  for (const auto& [name, options] : cfg.preprocess_by_modality) {
    if (data.modality_index(name) >= 0) continue;
    std::string have;
    for (const auto& m : data.modalities) have += (have.empty() ? "" : ", ") + m.name;
    throw InvalidArgument("[preprocess." + name +
                          "] is configured, but the data set has no modality '" + name +
                          "' (modalities: " + have + ")");
  }
}

// Says what the data set's label and batch columns mean for the scores: cells without a value,
// and a column with a single category (docs/reliability.md).
void describe_columns(const RunConfig& cfg, const CellData& data) {
  struct Role {
    const Column* column;
    const std::string& key;
    const char *noun, *plural;
    uint64_t need;
    const char* single;  // what one category means
  };
  const Role roles[] = {
      {data.labels(), data.label_key, "label", "labels", SCSSL_NEEDS_LABELS,
       "the bio-conservation metrics have no cell types to tell apart: those undefined for one "
       "type report NaN, and the others measure nothing useful"},
      {data.batches(), data.batch_key, "batch", "batches", SCSSL_NEEDS_BATCH,
       "there is no batch effect to correct: the batch-correction metrics undefined for one batch "
       "report NaN, and the others measure nothing useful"}};
  for (const Role& role : roles) {
    if (!role.column || !role.column->categorical) continue;
    const torch::Tensor codes = role.column->codes;
    const int64_t missing = (codes < 0).sum().item<int64_t>();
    if (missing > 0) {
      std::string users;
      for (const auto& e : cfg.evaluators)
        if (e.plugin->requirements() & role.need)
          users += (users.empty() ? "" : ", ") + e.plugin->name();
      spdlog::warn(
          "{} of {} cells have no {} (obs column '{}'): they are trained on and embedded like "
          "every cell, and {} leave them out of the scores, as docs/metrics.md says for each",
          missing, data.n_cells(), role.noun, role.key,
          users.empty()
              ? std::string("the evaluators that use ") + role.plural
              : "the evaluators that use " + std::string(role.plural) + " (" + users + ")");
    }
    const torch::Tensor present = std::get<0>(at::_unique(codes.masked_select(codes >= 0)));
    if (present.numel() == 1)
      spdlog::warn("obs column '{}' (the {}) has one category, '{}': {}", role.key, role.plural,
                   role.column->categories[present.item<int32_t>()], role.single);
  }
}

runfolder::PluginRecord plugin_record(const LoadedPlugin& p) {
  return {kind_name(p.kind()), p.name(), p.meta.version, p.path};
}

std::string iso_time(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", std::localtime(&tt));
  return buf;
}

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// The cells of the reference (trained on) and of the held-out query batches, in data order.
struct QuerySplit {
  torch::Tensor reference_ids, query_ids;
};

QuerySplit split_query(const CellData& data, const std::vector<std::string>& query_batches) {
  const int64_t n = data.n_cells();
  if (query_batches.empty())
    return {torch::arange(n, torch::kInt64), torch::empty({0}, torch::kInt64)};
  const Column* batches = data.batches();
  if (batches == nullptr || !batches->categorical)
    throw BadData(
        "evaluation.query_batches is set but the data set has no categorical batch column");
  std::vector<char> is_query_code(batches->categories.size(), 0);
  for (const auto& q : query_batches) {
    auto it = std::find(batches->categories.begin(), batches->categories.end(), q);
    if (it == batches->categories.end()) {
      std::string known;
      for (const auto& c : batches->categories) known += (known.empty() ? "" : ", ") + c;
      throw BadData("query batch '" + q + "' is not a batch of the data set (batches: " + known +
                    ")");
    }
    is_query_code[it - batches->categories.begin()] = 1;
  }
  std::vector<int64_t> ref, qry;
  const int32_t* code = batches->codes.data_ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i) (code[i] >= 0 && is_query_code[code[i]] ? qry : ref).push_back(i);
  if (ref.empty()) throw BadData("every cell is in a query batch: nothing is left to train on");
  return {torch::tensor(ref, torch::kInt64), torch::tensor(qry, torch::kInt64)};
}

// Loads the data set, splits off the query batches (their names are checked in any case) and
// preprocesses every modality; `info` receives the data summary of run.json. With
// `fit_on_reference` (a query-mapping run) the query cells are held out before preprocessing:
// only the reference cells choose the features and the scaling (docs/evaluation.md,
// "Protocols"). Without `hold_out` every cell is in the reference.
CellData load_and_preprocess(const RunConfig& cfg, HostServices& services, StageMeter& meter,
                             runfolder::DataSummary& info, QuerySplit& split, bool hold_out,
                             bool fit_on_reference) {
  meter.begin("load");
  const std::string source =
      cfg.dataset.params.has("path") ? cfg.dataset.params.get_string("path") : std::string();
  CellData data = [&] {
    const crash::ReadingFile reading(source);
    return load_dataset(*cfg.dataset.plugin, cfg.dataset.params, services);
  }();
  if (data.n_cells() == 0)
    throw BadData(cfg.dataset.plugin->label() + (source.empty() ? "" : " (" + source + ")") +
                  ": the data set has no cells");
  spdlog::info("loaded {} cells: {}", data.n_cells(), [&] {
    std::string s;
    for (const auto& m : data.modalities)
      s += (s.empty() ? "" : ", ") + m.name + " " + std::to_string(m.features.size()) + " features";
    return s;
  }());
  meter.finish();

  check_config_against_data(cfg, data);
  describe_columns(cfg, data);
  split = split_query(data, cfg.query_batches);
  if (!hold_out) split = split_query(data, {});
  info.n_reference = split.reference_ids.size(0);
  info.n_query = split.query_ids.size(0);
  const torch::Tensor fit_rows =
      fit_on_reference && split.query_ids.size(0) > 0 ? split.reference_ids : torch::Tensor();
  meter.begin("preprocess");
  info.n_cells = data.n_cells();
  for (Modality& m : data.modalities) {
    const size_t before = m.features.size();
    preprocess_modality(m, cfg.preprocess_for(m.name), data.batches(), fit_rows);
    spdlog::info("preprocessed {}: {} of {} features kept{}", m.name, m.features.size(), before,
                 fit_rows.defined() ? " (chosen on the reference cells)" : "");
    info.modalities.push_back(
        {m.name, static_cast<int64_t>(before), static_cast<int64_t>(m.features.size())});
  }
  const StageRecord& pre = meter.finish();
  spdlog::info("read and preprocessed in {:.2f} s",
               pre.wall_seconds + meter.stages().front().wall_seconds);
  return data;
}

uint64_t evaluator_needs(const PluginChoice& e) { return e.plugin->requirements(); }

// The configured evaluators, created up front so that a bad parameter or a data set lacking what
// an evaluator needs stops everything before the expensive part.
std::vector<std::unique_ptr<Evaluator>> make_evaluators(const RunConfig& cfg, const CellData& data,
                                                        HostServices& services) {
  std::vector<std::unique_ptr<Evaluator>> evaluators;
  for (const auto& e : cfg.evaluators)
    check_requirements(evaluator_needs(e), "evaluator '" + e.plugin->name() + "'", data);
  for (const auto& e : cfg.evaluators)
    evaluators.push_back(std::make_unique<Evaluator>(*e.plugin, e.params, services));
  return evaluators;
}

// The unintegrated representation (scIB's X_pre): PCA of the first modality, all cells; computed
// only when an evaluator asks for it.
torch::Tensor unintegrated_pca(const RunConfig& cfg, const CellData& data, StageMeter& meter) {
  if (std::none_of(cfg.evaluators.begin(), cfg.evaluators.end(), [](const PluginChoice& e) {
        return evaluator_needs(e) & SCSSL_NEEDS_UNINTEGRATED;
      }))
    return {};
  meter.begin("unintegrated_pca");
  const Matrix& x = data.modalities.front().X;
  torch::Tensor pcs = fit_pca(x, cfg.unintegrated_components).transform(x);
  meter.finish();
  return pcs;
}

// Scores one embedding: one neighbour search (or the given lists) serves every evaluator; each
// metric carries its evaluator's wall time; the study's aggregates follow. `searched` records the
// search; `per_cell`, when given, receives the per-cell scores the evaluators report.
std::vector<MetricRecord> score_embedding(std::vector<std::unique_ptr<Evaluator>>& evaluators,
                                          const RunConfig& cfg, const CellData& data,
                                          const torch::Tensor& embedding,
                                          const torch::Tensor& unintegrated, HostServices& services,
                                          NeighborCache& neighbors, StageMeter& meter,
                                          std::optional<runfolder::NeighborRecord>& searched,
                                          CellScores* per_cell) {
  // No training loop competes with OpenBLAS here, so the evaluators' own loops get every core.
  struct ThreadsFor {
    int saved = torch::get_num_threads();
    explicit ThreadsFor(int n) { torch::set_num_threads(n); }
    ~ThreadsFor() { torch::set_num_threads(saved); }
  } threads(cfg.threads > 0 ? cfg.threads
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const BlasThreads for_evaluators(one_thread);
  std::vector<MetricRecord> metrics;
  services.serve_neighbors(&neighbors);
  for (auto& evaluator : evaluators) {
    meter.begin("evaluate:" + evaluator->name());
    auto values = evaluator->evaluate(data, embedding, unintegrated, cfg.query_batches, cfg.device);
    const StageRecord& s = meter.finish();
    spdlog::info("{}: {} metric(s) in {:.2f} s", evaluator->name(), values.size(), s.wall_seconds);
    for (auto& v : values) {
      v.seconds = s.wall_seconds;
      if (!v.note.empty()) spdlog::warn("{}: {}", v.name, v.note);
      if (per_cell && v.per_cell.defined()) per_cell->add(v.name, v.per_cell);
      metrics.push_back(metric_record(v));
    }
  }
  services.serve_neighbors(nullptr);
  const auto aggregates = evaluation::scib_aggregates(metrics);
  metrics.insert(metrics.end(), aggregates.begin(), aggregates.end());
  if (neighbors.searched_k() > 0)
    searched = runfolder::NeighborRecord{
        neighbors.backend(), neighbors.searched_k(), neighbors.chosen_by(),
        neighbors.prediction().exact_seconds, neighbors.prediction().hnsw_seconds};
  return metrics;
}

// A folder of its own under the system's temporary folder, removed with this object.
class TemporaryFolder {
 public:
  explicit TemporaryFolder(const std::string& prefix) {
    std::string name = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (mkdtemp(name.data()) == nullptr)
      throw IoError("cannot make a temporary folder under " + fs::temp_directory_path().string());
    path_ = name;
  }
  ~TemporaryFolder() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The query as the method embeds it under evaluation.query_modality = "predicted"
// (docs/evaluation.md, "The query with a predicted modality"): the trained model, loaded again to
// embed with its RNA encoder alone, embeds the reference and the query; each query cell's second
// modality becomes the mean of its query_modality_k nearest reference cells' (cosine distance),
// in the reference's preprocessed values that the second encoder reads. The method never sees the
// query's measured second modality.
CellData with_predicted_modality(const RunConfig& cfg, Method& method, const CellData& train,
                                 CellData query, HostServices& services) {
  if (query.modalities.size() < 2)
    throw BadData("evaluation.query_modality = \"predicted\" needs a second modality to predict");
  Modality& second = query.modalities[1];
  second.X = Matrix::from_dense(torch::zeros({query.n_cells(), second.X.cols}), second.name);
  second.counts = Matrix();

  ParamSet rna_only_params = cfg.method.params;
  rna_only_params.set("predict_only_rna", true);
  Method rna_only(*cfg.method.plugin, rna_only_params, services);
  {
    const TemporaryFolder model("scssl-model");
    method.save(model.path());
    rna_only.load(model.path());
  }
  const Neighbors nn = knn_exact(rna_only.embed(train), rna_only.embed(query), cfg.query_modality_k,
                                 Distance::Cosine);
  const torch::Tensor predicted = train.modalities[1]
                                      .X.rows_dense(nn.indices.flatten())
                                      .to(torch::kFloat64)
                                      .view({query.n_cells(), nn.indices.size(1), -1})
                                      .mean(1)
                                      .to(torch::kFloat32);
  second.X = Matrix::from_dense(predicted, "predicted " + second.name);
  spdlog::info("query: {} predicted from {} reference neighbours (RNA-only embedding, cosine)",
               second.name, nn.indices.size(1));
  return query;
}

// The plugin whose code a stage runs ("<kind> plugin '<name>'"), if one does.
std::optional<std::string> stage_plugin(const RunConfig& cfg, const std::string& stage) {
  const std::string evaluate = "evaluate:";
  if (stage == "load") return cfg.dataset.plugin->label();
  if ((stage == "fit" || stage == "embed") && cfg.method.plugin) return cfg.method.plugin->label();
  if (stage == "augmentations_prepare" && !cfg.augmentations.empty()) {
    std::string names;
    for (const auto& a : cfg.augmentations)
      names += (names.empty() ? "" : ", ") + a.choice.plugin->label();
    return names;
  }
  if (stage.rfind(evaluate, 0) == 0)
    for (const auto& e : cfg.evaluators)
      if (e.plugin->name() == stage.substr(evaluate.size())) return e.plugin->label();
  return std::nullopt;
}

// run.json: what ran, with which plugins and versions, how it ended, and the cost of each stage
// (docs/run-folder.md).
struct RunRecord {
  std::string name;
  std::vector<const LoadedPlugin*> plugins;
  std::optional<runfolder::DataSummary> data;
  std::optional<runfolder::EmbeddingRecord> embedding;
  std::optional<runfolder::NeighborRecord> neighbors;
  std::chrono::system_clock::time_point started = std::chrono::system_clock::now();
  std::string stage;                  // the stage begun last
  std::optional<std::string> plugin;  // whose stage it is

  // The record as it stands: `status` running while the run goes on, then ok or failed (`error`).
  runfolder::RunRecord typed(const RunConfig& cfg, const RunSettings& settings,
                             const StageMeter& meter, runfolder::RunStatus status,
                             const std::string* error) const {
    const auto finished = std::chrono::system_clock::now();
    runfolder::RunRecord r;
    r.status = status;
    if (error) r.error = *error;
    if (status != runfolder::RunStatus::ok && !stage.empty()) {
      r.stage = stage;
      r.plugin = plugin;
    }
    r.name = name;
    r.config = cfg.config_path;
    r.command = settings.command_line;
    r.seed = cfg.seed;
    r.threads = torch::get_num_threads();
    r.started = iso_time(started);
    r.finished = status == runfolder::RunStatus::running ? "" : iso_time(finished);
    r.wall_seconds = std::chrono::duration<double>(finished - started).count();
    r.peak_rss_mb = 0;
    for (const auto& s : meter.stages()) {
      r.peak_rss_mb = std::max(r.peak_rss_mb, s.peak_rss_mb);
      r.stages.push_back({s.name, s.wall_seconds, s.peak_rss_mb, s.end_rss_mb});
    }
    r.host = hostname();
    r.versions = {SCSSL_VERSION, SCSSL_ABI_VERSION, TORCH_VERSION, blas_kernel_note(),
                  cfg.device == "cpu" ? distance_kernels() : "tensor on " + cfg.device};
    std::set<const LoadedPlugin*> listed;
    for (const auto* p : plugins)
      if (p && listed.insert(p).second) r.plugins.push_back(plugin_record(*p));
    r.data = data;
    r.embedding = embedding;
    r.neighbors = neighbors;
    return r;
  }

  void write(const fs::path& dir, const RunConfig& cfg, const RunSettings& settings,
             const StageMeter& meter, runfolder::RunStatus status,
             const std::string* error = nullptr) const {
    runfolder::write_run_record((dir / "run.json").string(),
                                typed(cfg, settings, meter, status, error));
  }

  // What run.json says if a plugin crashes the process from here on (crash_guard.hpp).
  void arm_crash_record(const fs::path& dir, const RunConfig& cfg, const RunSettings& settings,
                        const StageMeter& meter) const {
    const std::string placeholder = crash::kPlaceholder;
    const runfolder::Json json =
        typed(cfg, settings, meter, runfolder::RunStatus::failed, &placeholder);
    crash::arm_record((dir / "run.json").string(), runfolder::dump_json(json));
  }

  // From now on every stage of `meter` is recorded as it begins: run.json says running with the
  // stage and its plugin (what a parent process reports if this one is killed; docs/reliability.md)
  // and the crash record is armed with it.
  void track(StageMeter& meter, const fs::path& dir, const RunConfig& cfg,
             const RunSettings& settings) {
    meter.on_begin = [this, &meter, dir, &cfg, &settings](const std::string& name) {
      stage = name;
      plugin = stage_plugin(cfg, name);
      write(dir, cfg, settings, meter, runfolder::RunStatus::running);
      arm_crash_record(dir, cfg, settings, meter);
    };
  }
};

// Run-wide settings: the log file, progress display, thread count and seed.
void start_services(const RunConfig& cfg, const RunSettings& settings, HostServices& services) {
  install_progress(services, settings.show_progress);
  // One OpenMP thread unless asked: OpenBLAS runs its own pool on every core for the matrix
  // products, and a second OpenMP pool on top made training 2.7x slower on a 2-core machine.
  torch::set_num_threads(cfg.threads > 0 ? cfg.threads : 1);
  torch::manual_seed(cfg.seed);
  if (const std::string blas = blas_kernel_note(); !blas.empty()) spdlog::debug("{}", blas);
}

}  // namespace

RunOutcome execute_run(const RunConfig& cfg, const RunSettings& settings) {
  spdlog::debug("distance kernels: {}", distance_kernels());  // a wrong choice stops us here
  RunRecord record;
  record.name = cfg.name;
  record.plugins = {cfg.dataset.plugin, cfg.method.plugin};
  for (const auto& a : cfg.augmentations) record.plugins.push_back(a.choice.plugin);
  for (const auto& e : cfg.evaluators) record.plugins.push_back(e.plugin);
  RunOutcome out;
  out.run_dir = settings.run_dir.empty() ? create_run_directory(cfg.output_dir, cfg.name)
                                         : claim_run_directory(settings.run_dir);
  const fs::path dir(out.run_dir);
  RunLog log((dir / "run.log").string());
  spdlog::info("run folder: {}", out.run_dir);
  write_file_atomic((dir / "config.resolved.toml").string(), cfg.resolved_toml());

  HostServices services;
  start_services(cfg, settings, services);
  StageMeter meter;
  record.write(dir, cfg, settings, meter, runfolder::RunStatus::running);
  record.arm_crash_record(dir, cfg, settings, meter);
  record.track(meter, dir, cfg, settings);
  std::ostringstream history;  // series recorded by plugins (e.g. the training loss per epoch)
  history << "series,step,value\n";
  services.on_record = [&history](const std::string& series, int64_t step, double value) {
    history << series << "," << step << "," << runfolder::csv_number(value) << "\n";
  };

  std::exception_ptr failure;
  std::string error;
  try {
    if (!cfg.other_protocol_evaluators.empty())
      spdlog::warn(
          "evaluation.protocol is \"{}\": {} score(s) under the other protocol and "
          "will not run here; run again with --set evaluation.protocol={} for them",
          cfg.protocol,
          [&] {
            std::string s;
            for (const auto& e : cfg.other_protocol_evaluators)
              s += (s.empty() ? "" : ", ") + e.plugin->name();
            return s;
          }(),
          protocol_of(cfg.other_protocol_evaluators.front()));
    runfolder::DataSummary info;
    info.protocol = cfg.protocol;
    if (cfg.holds_out_query()) info.query_modality = cfg.query_modality;
    QuerySplit split;
    CellData data = load_and_preprocess(cfg, services, meter, info, split, cfg.holds_out_query(),
                                        /*fit_on_reference=*/true);
    Method method(*cfg.method.plugin, cfg.method.params, services);
    check_requirements(method.requirements(), "method '" + method.name() + "'", data,
                       counts_source(cfg));
    auto evaluators = make_evaluators(cfg, data, services);
    torch::Tensor unintegrated = unintegrated_pca(cfg, data, meter);
    record.data = info;
    const bool has_query = split.query_ids.size(0) > 0;
    CellData train = has_query ? data.select_cells(split.reference_ids) : data;
    CellDataView train_view(train);
    spdlog::info("protocol {}: training on {} cells{}", cfg.protocol, train.n_cells(),
                 has_query
                     ? ", " + std::to_string(split.query_ids.size(0)) + " query cells held out"
                     : std::string());

    meter.begin("augmentations_prepare");
    AugmentationPipeline pipeline(cfg.augmentations, train, services);
    pipeline.prepare(train_view.get());
    services.on_augment = [&](int modality, int view, torch::Tensor& batch,
                              const torch::Tensor& ids,
                              uint64_t seed) { pipeline.apply(modality, view, batch, ids, seed); };
    services.on_augmentation_count = [&](int modality) { return pipeline.count(modality); };
    meter.finish();

    if (cfg.train.epochs == 0)
      spdlog::warn(
          "train.epochs is 0: method '{}' runs no training epoch, so a method that learns its "
          "embedding embeds with its untrained, randomly initialised weights",
          method.name());
    TrainOptions options = cfg.train;
    if (options.checkpoint_every > 0) options.checkpoint_dir = (dir / "checkpoints").string();
    meter.begin("fit");
    {
      const BlasThreads for_augmentation(leave_one_core);
      method.fit(train_view.get(), options);
    }
    meter.finish();

    meter.begin("embed");
    // The reference and the query are embedded in separate passes, as the study did: a method
    // that embeds with batch statistics then standardises each set by its own.
    torch::Tensor embedding;
    if (has_query) {
      const torch::Tensor reference = method.embed(train);
      CellData query_cells = data.select_cells(split.query_ids);
      if (cfg.query_modality == kPredicted)
        query_cells = with_predicted_modality(cfg, method, train, std::move(query_cells), services);
      const torch::Tensor query = method.embed(query_cells);
      embedding = torch::empty({data.n_cells(), reference.size(1)}, reference.options());
      embedding.index_copy_(0, split.reference_ids, reference);
      embedding.index_copy_(0, split.query_ids, query);
    } else {
      embedding = method.embed(data);
    }
    meter.finish();

    meter.begin("write_embedding");
    const std::string key = "X_" + method.name();
    write_embedding_file((dir / "embedding.h5").string(), embedding, data.cell_names);
    std::string h5ad_source;
    if (cfg.write_h5ad && cfg.dataset.params.has("path") &&
        fs::path(cfg.dataset.params.get_string("path")).extension() == ".h5ad")
      h5ad_source = cfg.dataset.params.get_string("path");
    const std::string h5ad_copy =
        h5ad_source.empty() ? "" : (dir / fs::path(h5ad_source).filename()).string();
    auto write_h5ad_copy = [&](const CellScores& scores) {
      const crash::ReadingFile reading(h5ad_source);
      write_h5ad_with_embedding(h5ad_source, h5ad_copy, key, embedding, scores);
    };
    // With per-cell scores the copy waits for them, so that it is written once.
    if (!h5ad_copy.empty() && !cfg.per_cell_scores) write_h5ad_copy({});
    record.embedding = runfolder::EmbeddingRecord{
        embedding.size(1), "embedding.h5",
        h5ad_copy.empty() ? std::nullopt
                          : std::optional<std::string>(fs::path(h5ad_copy).filename().string()),
        key};
    meter.finish();
    if (cfg.save_model) method.save((dir / "model").string());

    CellScores per_cell;
    NeighborCache neighbors(embedding, cfg.neighbors);
    out.metrics =
        score_embedding(evaluators, cfg, data, embedding, unintegrated, services, neighbors, meter,
                        record.neighbors, cfg.per_cell_scores ? &per_cell : nullptr);
    if (cfg.per_cell_scores) {
      meter.begin("write_per_cell");
      write_file_atomic((dir / "per_cell.csv").string(), per_cell_csv(data.cell_names, per_cell));
      if (!h5ad_copy.empty()) write_h5ad_copy(per_cell);
      meter.finish();
    }
    write_file_atomic((dir / "metrics.json").string(), runfolder::metrics_json(out.metrics));
    write_file_atomic((dir / "metrics.csv").string(), runfolder::metrics_csv(out.metrics));
  } catch (const std::exception& e) {
    failure = std::current_exception();
    error = e.what();
    meter.finish();
    log.record_error(error);
  }

  write_file_atomic((dir / "history.csv").string(), history.str());
  record.write(dir, cfg, settings, meter,
               failure ? runfolder::RunStatus::failed : runfolder::RunStatus::ok,
               failure ? &error : nullptr);
  crash::disarm_record();
  if (failure) std::rethrow_exception(failure);
  return out;
}

std::string record_child_end(const std::string& run_dir, const RunConfig& cfg,
                             const isolation::ChildEnd& end) {
  const fs::path file = fs::path(run_dir) / "run.json";
  runfolder::RunRecord r;
  bool have = false;
  try {
    r = runfolder::read_run_record(file.string());
    have = true;
  } catch (const std::exception&) {
    // Never written, or cut off: the record is made afresh below.
  }
  if (have && r.status == runfolder::RunStatus::failed && r.error) return *r.error;
  if (!have) {
    r.name = cfg.name;
    r.config = cfg.config_path;
    r.seed = static_cast<int64_t>(cfg.seed);
    r.host = hostname();
  }
  char peak[32];
  std::snprintf(peak, sizeof peak, "%.0f", end.peak_rss_mb);
  std::string text = "the run's process was ended by " + isolation::signal_name(end.signal) +
                     (r.stage ? " during stage '" + *r.stage + "'" +
                                    (r.plugin ? " (" + *r.plugin + ")" : std::string())
                              : std::string(" before its first stage"));
  if (end.signal == SIGKILL)
    text += std::string("; SIGKILL cannot be caught: the kernel's out-of-memory killer sends it ") +
            "when memory runs out (the process had reached " + peak +
            " MB), and so can a user or a batch scheduler";
  r.status = runfolder::RunStatus::failed;
  r.error = text;
  r.finished = iso_time(std::chrono::system_clock::now());
  if (!(r.peak_rss_mb >= end.peak_rss_mb)) r.peak_rss_mb = end.peak_rss_mb;
  runfolder::write_run_record(file.string(), r);
  return text;
}

EvaluationOutcome execute_evaluation(const RunConfig& cfg, const EvaluationRequest& request,
                                     const RunSettings& settings) {
  if (request.obsm_keys.empty())
    throw InvalidArgument("evaluate needs at least one embedding (obsm key)");
  if (!cfg.dataset.params.has("path"))
    throw InvalidArgument(
        "evaluate reads embeddings from the data set's .h5ad file, but dataset plugin '" +
        cfg.dataset.plugin->name() + "' has no 'path'");
  const std::string source = cfg.dataset.params.get_string("path");
  spdlog::debug("distance kernels: {}", distance_kernels());  // a wrong choice stops us here
  EvaluationOutcome out;
  out.dir = create_run_directory(cfg.output_dir, cfg.name);
  const fs::path dir(out.dir);
  RunLog log((dir / "run.log").string());
  spdlog::info("evaluation folder: {}", out.dir);
  write_file_atomic((dir / "config.resolved.toml").string(), cfg.resolved_toml());

  HostServices services;
  start_services(cfg, settings, services);
  RunRecord summary;  // the folder's own run.json: the shared stages and how it all ended
  summary.name = cfg.name;
  summary.plugins = {cfg.dataset.plugin};
  for (const auto& e : cfg.evaluators) summary.plugins.push_back(e.plugin);
  StageMeter setup;
  summary.write(dir, cfg, settings, setup, runfolder::RunStatus::running);
  summary.arm_crash_record(dir, cfg, settings, setup);
  summary.track(setup, dir, cfg, settings);
  try {
    // The whole input is read and checked before anything is scored.
    runfolder::DataSummary info;
    QuerySplit split;
    CellData data = load_and_preprocess(cfg, services, setup, info, split, /*hold_out=*/true,
                                        /*fit_on_reference=*/false);
    auto read_key = [&](const std::string& key) {
      const crash::ReadingFile reading(source);
      anndata::Matrix m = anndata::read_obsm(source, key);
      if (m.rows != data.n_cells())
        throw BadData(source + ": obsm['" + key + "'] has " + std::to_string(m.rows) +
                      " rows but the data set has " + std::to_string(data.n_cells()) + " cells");
      return torch::from_blob(m.values.data(), {m.rows, m.cols}, torch::kFloat32).clone();
    };
    setup.begin("read_embeddings");
    std::vector<torch::Tensor> embeddings;
    for (const auto& key : request.obsm_keys) embeddings.push_back(read_key(key));
    // A stored neighbour graph belongs to one embedding.
    std::optional<Neighbors> given;
    if (!request.graph_key.empty()) {
      if (request.obsm_keys.size() != 1)
        throw InvalidArgument("--graph gives the neighbours of one embedding, but " +
                              std::to_string(request.obsm_keys.size()) +
                              " are to be scored; score them one at a time");
      const crash::ReadingFile reading(source);
      const anndata::CsrArrays graph = anndata::read_obsp(source, request.graph_key);
      given = lists_from_graph(graph.indptr, graph.indices, graph.values,
                               source + ": obsp['" + request.graph_key + "']");
      spdlog::info("neighbours from obsp['{}']: {} per cell (the cell itself included)",
                   request.graph_key, given->indices.size(1));
    }
    setup.finish();
    auto evaluators = make_evaluators(cfg, data, services);
    torch::Tensor unintegrated = request.unintegrated_key.empty()
                                     ? unintegrated_pca(cfg, data, setup)
                                     : read_key(request.unintegrated_key);
    summary.data = info;

    // One run-style folder per embedding, so that every tool reading runs reads these too.
    CellScores per_cell;  // of every embedding, named <obsm key>_<metric> for the .h5ad copy
    for (size_t i = 0; i < embeddings.size(); ++i) {
      const std::string& key = request.obsm_keys[i];
      const fs::path sub = dir / key;
      fs::create_directories(sub);
      RunRecord record = summary;
      record.name = cfg.name + "/" + key;
      record.started = std::chrono::system_clock::now();
      record.embedding =
          runfolder::EmbeddingRecord{embeddings[i].size(1), std::nullopt, source, key};
      StageMeter meter;
      CellScores scores;
      record.arm_crash_record(sub, cfg, settings, meter);
      record.track(meter, sub, cfg, settings);
      try {
        spdlog::info("scoring obsm['{}'] ({} dimensions)", key, embeddings[i].size(1));
        NeighborCache neighbors(embeddings[i], cfg.neighbors);
        if (given) neighbors.use_given(*given, "obsp['" + request.graph_key + "']");
        out.metrics.push_back(score_embedding(evaluators, cfg, data, embeddings[i], unintegrated,
                                              services, neighbors, meter, record.neighbors,
                                              cfg.per_cell_scores ? &scores : nullptr));
      } catch (const std::exception& e) {
        const std::string error = e.what();
        meter.finish();
        record.write(sub, cfg, settings, meter, runfolder::RunStatus::failed, &error);
        throw;
      }
      if (cfg.per_cell_scores) {
        write_file_atomic((sub / "per_cell.csv").string(), per_cell_csv(data.cell_names, scores));
        for (size_t j = 0; j < scores.names.size(); ++j)
          per_cell.add(key + "_" + scores.names[j], scores.values[j]);
      }
      write_file_atomic((sub / "metrics.json").string(),
                        runfolder::metrics_json(out.metrics.back()));
      write_file_atomic((sub / "metrics.csv").string(), runfolder::metrics_csv(out.metrics.back()));
      record.write(sub, cfg, settings, meter, runfolder::RunStatus::ok);
      crash::disarm_record();
    }
    if (cfg.per_cell_scores) {
      // The source with every embedding and its scores, ready for scanpy (docs/evaluation.md).
      setup.begin("write_per_cell");
      const std::string copy = (dir / fs::path(source).filename()).string();
      const crash::ReadingFile reading(source);
      write_h5ad_with_scores(source, copy, per_cell);
      setup.finish();
    }
    if (request.min_max_scale) out.scaled = evaluation::min_max_scaled(out.metrics);
    write_file_atomic((dir / "comparison.csv").string(),
                      comparison_csv(request.obsm_keys, out.metrics, out.scaled));
  } catch (const std::exception& e) {
    const std::string error = e.what();
    setup.finish();
    log.record_error(error);
    summary.write(dir, cfg, settings, setup, runfolder::RunStatus::failed, &error);
    throw;
  }
  summary.write(dir, cfg, settings, setup, runfolder::RunStatus::ok);
  crash::disarm_record();
  return out;
}

}  // namespace scssl::host
