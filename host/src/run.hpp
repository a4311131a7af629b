// One run end to end: data set -> preprocessing -> augmentations -> method -> evaluators -> run
// directory. See docs/user-guide.md for what the run directory holds.
#pragma once

#include <string>
#include <vector>

#include "adapters.hpp"
#include "config.hpp"
#include "registry.hpp"

namespace scssl::host {

struct RunOutcome {
  std::string run_dir;
  std::vector<MetricValue> metrics;
};

struct RunSettings {
  std::string command_line;  // recorded in run.json
  bool show_progress = true;  // progress lines on the terminal
};

// Runs everything; on failure the run directory keeps what was written so far plus run.json with
// status "failed" and the error, and the error is rethrown.
RunOutcome execute_run(const RunConfig& config, const Registry& registry,
                       const RunSettings& settings);

// Cells whose batch is one of `query_batches` (query) and the others (reference). Throws BadData
// naming a query batch the data does not have.
void split_query(const CellData& data, const std::vector<std::string>& query_batches,
                 torch::Tensor& reference_ids, torch::Tensor& query_ids);

}  // namespace scssl::host
