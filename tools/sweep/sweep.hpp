// scssl-sweep (also `scssl-host sweep`): a grid of runs (axes x seeds) with stable run ids, each
// run one `scssl-host run` process on this machine or a task of a Slurm job array, resumable,
// collected into sweep.json and results.csv. See docs/sweeps.md for the sweep file and
// docs/run-folder.md for the folders it reads and writes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "registry.hpp"
#include "runfolder/records.hpp"

namespace scssl::sweep {

// One axis of the grid: either config files layered onto every run (label = file stem), or the
// values of one setting ("section.key").
struct SweepAxis {
  std::string name;
  std::string key;  // empty for a config-file axis
  // Config-file axis: per value, the files a run includes (absolute paths). With `combine = k`
  // each value is k of the listed files, in their order, included as one group whose
  // [[augmentation]] lists are concatenated (docs/sweeps.md, "Combining configs").
  std::vector<std::vector<std::string>> configs;
  std::vector<std::string> values;  // TOML literals (setting axis)
  std::vector<std::string> labels;
  std::string where;  // "file:line" of its key or configs, for errors

  size_t size() const { return key.empty() ? configs.size() : values.size(); }
};

struct SlurmOptions {
  std::string partition;
  int64_t cpus_per_task = 1;
  std::string mem;
  std::string time;
  int64_t max_parallel = 0;        // %N throttle of the job array; 0: none
  std::vector<std::string> extra;  // further #SBATCH options, verbatim
};

struct SweepSpec {
  std::string path;
  std::string name;
  std::string base;  // absolute path of the run config every run starts from ("" for none)
  std::vector<std::string> layers;  // config files applied over every run, after the axes
  std::vector<int64_t> seeds{0};
  // Evaluation protocols every grid point runs under, each its own run (docs/evaluation.md,
  // "Protocols"); empty: the protocol of the run config.
  std::vector<std::string> protocols;
  std::string output_dir = "sweeps";
  std::string executor = "local";  // "local" | "slurm"
  int64_t workers = 0;             // local: processes at once; 0: the number of cores
  std::vector<std::string> set;    // overrides for every run
  std::vector<SweepAxis> axes;
  SlurmOptions slurm;
};

// Reads and checks a sweep file; errors name the file, the line and the key.
SweepSpec load_sweep(const std::string& path);

struct PlannedRun {
  std::string id;  // 12 hex digits of a hash of the resolved config: equal configs, equal ids
  int64_t seed = 0;
  std::string protocol;
  std::vector<std::pair<std::string, std::string>> labels;  // dataset, method, then each axis
  std::string config;  // the run's resolved config (written into the sweep folder)
  std::string dir;     // the run folder
  runfolder::RunStatus status = runfolder::RunStatus::pending;
  std::string error;
};

struct SweepOptions {
  std::string executor;  // overrides the file's when not empty
  int64_t workers = -1;  // overrides the file's when >= 0
  bool dry_run = false;  // plan and validate only (slurm: and write the job script)
  std::string output_dir;
  std::vector<std::string> plugin_dirs;  // passed on to every run process
  std::string host;                      // the scssl-host program every run process starts
};

struct SweepOutcome {
  std::string dir;
  std::vector<PlannedRun> runs;
  int64_t skipped = 0;  // complete before this call
};

// Expands the grid, validating every run's config before anything runs, then runs what is not
// complete yet and writes sweep.json and results.csv into <output_dir>/<name>/.
SweepOutcome run_sweep(const SweepSpec& spec, const host::Registry& registry,
                       const SweepOptions& options);

}  // namespace scssl::sweep
