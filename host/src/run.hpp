// One run end to end: data set -> preprocessing -> augmentations -> method -> evaluators -> run
// directory. See docs/user-guide.md for what the run directory holds.
#pragma once

#include <string>
#include <vector>

#include "adapters.hpp"
#include "config.hpp"
#include "isolation.hpp"
#include "registry.hpp"
#include "runfolder/metrics.hpp"

namespace scssl::host {

struct RunOutcome {
  std::string run_dir;
  std::vector<runfolder::MetricRecord> metrics;  // aggregates included
};

struct RunSettings {
  std::string command_line;   // recorded in run.json
  bool show_progress = true;  // progress lines on the terminal
  std::string run_dir;  // exactly this (new or empty) folder instead of <output_dir>/<name>-<time>
};

// Runs everything; on failure the run directory keeps what was written so far plus run.json with
// status "failed" and the error, and the error is rethrown.
RunOutcome execute_run(const RunConfig& config, const RunSettings& settings);

// After the child process of an isolated run (run.isolate) was ended by a signal: the sentence
// that says how, which run.json in `run_dir` then holds. A crash the child's own handler recorded
// is kept as it wrote it; a run.json that still says running (SIGKILL, from the out-of-memory
// killer or a user, cannot be caught) becomes failed, naming the signal and the stage and plugin
// that were under way.
std::string record_child_end(const std::string& run_dir, const RunConfig& config,
                             const isolation::ChildEnd& end);

// `scssl-host evaluate`: scores embeddings already stored in the data set's .h5ad (obsm keys).
struct EvaluationRequest {
  std::vector<std::string> obsm_keys;
  std::string unintegrated_key;  // obsm key of scIB's X_pre; "": PCA of the preprocessed data
  bool min_max_scale = false;    // also scale each metric across the embeddings
  std::string graph_key;         // obsp key of a stored neighbour graph; "": search
};

struct EvaluationOutcome {
  std::string dir;
  std::vector<std::vector<runfolder::MetricRecord>> metrics;  // per embedding, aggregates included
  std::vector<std::vector<runfolder::MetricRecord>>
      scaled;  // per embedding; empty unless min_max_scale
};

// Reads and checks every embedding first, then writes <output_dir>/<name>-<time>/ holding
// config.resolved.toml, run.log, run.json, comparison.csv and one folder per obsm key with the
// files a run writes (metrics.json, metrics.csv, run.json). A failure keeps what was written,
// records the error in run.json and rethrows.
EvaluationOutcome execute_evaluation(const RunConfig& config, const EvaluationRequest& request,
                                     const RunSettings& settings);

// Cells whose batch is one of `query_batches` (query) and the others (reference). Throws BadData
// naming a query batch the data does not have.
void split_query(const CellData& data, const std::vector<std::string>& query_batches,
                 torch::Tensor& reference_ids, torch::Tensor& query_ids);

}  // namespace scssl::host
