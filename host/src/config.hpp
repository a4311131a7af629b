// Run configuration: a TOML file plus `--set key=value` overrides, validated against the loaded
// plugins' schemas before anything runs. See docs/config-reference.md.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "neighbors.hpp"
#include "registry.hpp"
#include "runfolder/records.hpp"
#include "scssl/params.hpp"
#include "scssl/plugin.hpp"
#include "scssl/preprocess.hpp"

namespace scssl::host {

using runfolder::kBatchCorrection;
using runfolder::kMeasured;
using runfolder::kPredicted;
using runfolder::kQueryMapping;

// A plugin and its complete parameters (defaults filled in, types checked).
struct PluginChoice {
  const LoadedPlugin* plugin = nullptr;
  ParamSet params;
};

struct AugmentationChoice {
  PluginChoice choice;
  std::string modality = "RNA";
  double probability = 0.5;  // chance that a cell's view goes through this augmentation
};

// The protocol an evaluator scores under: query_mapping for those that need held-out query
// batches (annotation, missing modality), batch_correction for the rest (the scIB metrics).
const char* protocol_of(const PluginChoice& evaluator);

struct RunConfig {
  std::string config_path;  // the file it came from ("" for none)
  std::string config_dir;   // folder that relative dataset paths are resolved against

  std::string name = "run";
  std::string output_dir = "runs";
  uint64_t seed = 0;
  int threads = 0;  // OpenMP threads; 0: one (OpenBLAS uses every core on its own)
  // Where training, embedding and the heavy metric kernels run: "cpu", "cuda" or "cuda:N"
  // (train.device defaults to it).
  std::string device = "cpu";
  bool write_h5ad = true;
  bool save_model = false;
  // Runs the pipeline in a child process (docs/reliability.md). Unset: the command's default,
  // off for `run` and `evaluate`, on in sweeps; unset leaves it out of the resolved TOML, so
  // that sweep run ids do not depend on it.
  std::optional<bool> isolate;

  PluginChoice dataset;
  PreprocessOptions preprocess;                                     // for every modality...
  std::map<std::string, PreprocessOptions> preprocess_by_modality;  // ...unless overridden
  PluginChoice method;  // no plugin when read for evaluation
  TrainOptions train;
  std::vector<AugmentationChoice> augmentations;
  std::vector<std::string> query_batches;
  // "batch_correction": train on every cell, scIB evaluators; "query_mapping": the query batches
  // are held out before preprocessing, annotation and modality evaluators (docs/evaluation.md,
  // "Protocols"). Default: query_mapping when query_batches is set.
  std::string protocol;
  // How a query_mapping run embeds the query's second modality: "measured" (as read) or
  // "predicted" (the mean of its query_modality_k nearest reference cells' values, nearest in
  // the model's RNA-only embedding by cosine distance; docs/evaluation.md, "The query with a
  // predicted modality").
  std::string query_modality = kMeasured;
  int64_t query_modality_k = 5;
  std::vector<PluginChoice> evaluators;                 // those that score under `protocol`
  std::vector<PluginChoice> other_protocol_evaluators;  // listed, but for the other protocol
  std::vector<std::string> evaluator_order;             // every listed evaluator, as written
  int64_t unintegrated_components = 50;
  NeighborOptions neighbors;
  // Write the evaluators' per-cell scores (per_cell.csv, and obs columns of the .h5ad copy).
  bool per_cell_scores = false;

  const PreprocessOptions& preprocess_for(const std::string& modality) const;
  bool holds_out_query() const { return protocol == kQueryMapping; }
  // The configuration with every default written out, as TOML.
  std::string resolved_toml() const;
};

// What a config is read for: a run (method and training required) or `scssl-host evaluate`
// (scoring stored embeddings: [method], [train] and [[augmentation]] are ignored).
enum class ConfigUse { Run, Evaluate };

// Reads a run config; `overrides` are "section.key=value" strings (value in TOML syntax, or a
// bare string). Every error names the file, the key and, where known, the line.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                          const Registry& registry, ConfigUse use = ConfigUse::Run);

}  // namespace scssl::host
