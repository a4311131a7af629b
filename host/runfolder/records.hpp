// The typed records of a run folder (run.json) and of a sweep folder (sweep.json), with their JSON
// form. The layout and every field are documented in docs/run-folder.md; the JSON Schemas are
// docs/schema/run.schema.json and docs/schema/sweep.schema.json.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runfolder/json.hpp"

namespace scssl::runfolder {

// How a run stands. run.json says running while the run is under way (a run.json that still says
// so after the process ended means the process died), then ok or failed; pending is a sweep's word
// for a run that has not started.
enum class RunStatus { running, ok, failed, pending };

const char* status_name(RunStatus status);
RunStatus status_from_name(const std::string& name, const std::string& what);
void to_json(Json& j, const RunStatus& s);
void from_json(const Json& j, RunStatus& s);

struct PluginRecord {
  std::string kind, name, version, path;
};

struct ModalitySummary {
  std::string name;
  int64_t features_in = 0, features_kept = 0;
};

// The evaluation protocols (docs/evaluation.md, "Protocols"): train on every cell and score
// integration, or hold the query batches out and score annotation and missing modalities.
inline constexpr const char* kBatchCorrection = "batch_correction";
inline constexpr const char* kQueryMapping = "query_mapping";
// How a query-mapping run embeds the query's second modality (docs/evaluation.md, "The query
// with a predicted modality"): as measured, or predicted from the query's reference neighbours.
inline constexpr const char* kMeasured = "measured";
inline constexpr const char* kPredicted = "predicted";

// The data as the run saw it, after preprocessing.
struct DataSummary {
  int64_t n_cells = 0;
  std::vector<ModalitySummary> modalities;
  int64_t n_reference = 0, n_query = 0;
  // "batch_correction" or "query_mapping" for a run; none for `evaluate` and older run folders.
  std::optional<std::string> protocol;
  // "measured" or "predicted" for a query-mapping run; none otherwise and in older run folders.
  std::optional<std::string> query_modality;
};

struct EmbeddingRecord {
  int64_t dim = 0;
  std::optional<std::string> file;  // "embedding.h5" in the run folder (runs; not `evaluate`)
  std::optional<std::string> h5ad;  // a run: its copy's file name; `evaluate`: the file it read
  std::string obsm_key;
};

struct NeighborRecord {
  std::string backend;  // "exact", "hnsw" or "given" (a stored graph)
  int64_t k = 0;
  std::string chosen_by;  // "config", "size", "measured" or "obsp" ("" in older run folders)
  // With "measured": the predicted seconds of each backend (NaN otherwise).
  double predicted_exact_seconds = std::nan(""), predicted_hnsw_seconds = std::nan("");
};

struct StageTiming {
  std::string stage;
  double wall_seconds = std::nan(""), peak_rss_mb = std::nan(""), end_rss_mb = std::nan("");
};

struct Versions {
  std::string scssl;
  int64_t abi = 0;
  std::string libtorch, blas;
  std::string distance_kernels;  // the SDK's distance-kernel path (docs/performance.md)
};

// run.json.
struct RunRecord {
  RunStatus status = RunStatus::running;
  std::optional<std::string> error;  // set when failed
  // While running: the stage under way and the plugin whose stage it is; when failed: where it
  // failed. Unset when the run ended well, or when the stage belongs to no plugin.
  std::optional<std::string> stage, plugin;
  std::string name, config, command;
  int64_t seed = 0, threads = 0;
  std::string started, finished;  // ISO 8601 local time with offset
  double wall_seconds = std::nan(""), peak_rss_mb = std::nan("");
  std::string host;
  Versions versions;
  std::vector<PluginRecord> plugins;
  std::optional<DataSummary> data;
  std::optional<EmbeddingRecord> embedding;
  std::optional<NeighborRecord> neighbors;
  std::vector<StageTiming> stages;
};

void to_json(Json& j, const PluginRecord& p);
void from_json(const Json& j, PluginRecord& p);
void to_json(Json& j, const ModalitySummary& m);
void from_json(const Json& j, ModalitySummary& m);
void to_json(Json& j, const DataSummary& d);
void from_json(const Json& j, DataSummary& d);
void to_json(Json& j, const EmbeddingRecord& e);
void from_json(const Json& j, EmbeddingRecord& e);
void to_json(Json& j, const NeighborRecord& n);
void from_json(const Json& j, NeighborRecord& n);
void to_json(Json& j, const StageTiming& s);
void from_json(const Json& j, StageTiming& s);
void to_json(Json& j, const Versions& v);
void from_json(const Json& j, Versions& v);
void to_json(Json& j, const RunRecord& r);
void from_json(const Json& j, RunRecord& r);

// One run of a sweep in sweep.json.
struct SweepRun {
  std::string id;   // 12 hex digits of a hash of the run's resolved config
  std::string dir;  // the run folder, relative to the sweep folder
  int64_t seed = 0;
  std::string protocol;  // the run's evaluation.protocol ("" in older sweep folders)
  std::vector<std::pair<std::string, std::string>> labels;  // dataset, method, then each axis
  RunStatus status = RunStatus::pending;
  std::optional<std::string> error;
};

// sweep.json.
struct SweepRecord {
  std::string name, sweep_file;
  std::vector<std::string> axes;
  std::vector<SweepRun> runs;
};

void to_json(Json& j, const SweepRun& r);
void from_json(const Json& j, SweepRun& r);
void to_json(Json& j, const SweepRecord& s);
void from_json(const Json& j, SweepRecord& s);

// Reads and writes the files; reading errors are BadData naming the file and the field.
RunRecord read_run_record(const std::string& path);
void write_run_record(const std::string& path, const RunRecord& record);
SweepRecord read_sweep_record(const std::string& path);
void write_sweep_record(const std::string& path, const SweepRecord& record);

}  // namespace scssl::runfolder
