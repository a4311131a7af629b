#include "sweep.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "config.hpp"
#include "locations.hpp"
#include "runfolder/files.hpp"
#include "runfolder/metrics.hpp"

namespace fs = std::filesystem;

namespace scssl::sweep {

using host::RunConfig;
using runfolder::RunStatus;
using runfolder::write_file_atomic;

namespace {

std::string where(const std::string& file, const toml::node* node) {
  if (node && node->source().begin.line > 0)
    return file + ":" + std::to_string(node->source().begin.line);
  return file;
}

[[noreturn]] void fail(const std::string& file, const toml::node* node, const std::string& key,
                       const std::string& message) {
  throw InvalidArgument(where(file, node) + ": " + key + " " + message);
}

// A TOML literal for a value (strings quoted), and a short label for tables.
std::string literal(const toml::node& node) {
  std::ostringstream out;
  node.visit([&](const auto& v) { out << v; });
  return out.str();
}
std::string label_of(const toml::node& node) {
  if (const auto* s = node.as_string()) return s->get();
  return literal(node);
}

std::vector<std::string> string_list(const std::string& file, const toml::table& t,
                                     const std::string& key, const std::string& section) {
  std::vector<std::string> out;
  const toml::node* node = t.get(key);
  if (!node) return out;
  const toml::array* arr = node->as_array();
  if (!arr) fail(file, node, section + "." + key, "must be a list of strings");
  for (const auto& item : *arr) {
    if (!item.is_string()) fail(file, &item, section + "." + key, "must be a list of strings");
    out.push_back(item.as_string()->get());
  }
  return out;
}

void only(const std::string& file, const toml::table& t, const std::string& section,
          const std::vector<std::string>& known) {
  for (const auto& [k, node] : t)
    if (std::find(known.begin(), known.end(), std::string(k.str())) == known.end())
      fail(file, &node,
           section.empty() ? std::string(k.str()) : section + "." + std::string(k.str()),
           "is not a sweep setting");
}

// FNV-1a, 64 bits: stable across compilers and runs, unlike std::hash.
std::string short_hash(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string(buf, 12);
}

// Status of a run folder from its run.json: pending without one, else what it says (running, ok,
// or failed with the error); a run.json that cannot be read is a failed run.
void read_status(PlannedRun& run) {
  const fs::path file = fs::path(run.dir) / "run.json";
  if (!fs::exists(file)) return;
  try {
    const runfolder::RunRecord record = runfolder::read_run_record(file.string());
    run.status = record.status;
    run.error = record.error.value_or("");
  } catch (const std::exception& e) {
    run.status = RunStatus::failed;
    run.error = e.what();
  }
}

bool finished(const PlannedRun& run) {
  return run.status == RunStatus::ok || run.status == RunStatus::failed;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The command line of one run process.
std::vector<std::string> run_command(const SweepOptions& options, const PlannedRun& run) {
  std::vector<std::string> args = {options.host, "--quiet", "--no-default-plugins"};
  for (const auto& d : options.plugin_dirs) {
    args.push_back("--plugins");
    args.push_back(d);
  }
  args.insert(args.end(), {"run", run.config, "--run-dir", run.dir});
  return args;
}

void write_sweep_files(const SweepSpec& spec, const fs::path& dir,
                       const std::vector<PlannedRun>& runs) {
  runfolder::SweepRecord record;
  record.name = spec.name;
  record.sweep_file = spec.path;
  for (const auto& a : spec.axes) record.axes.push_back(a.name);
  for (const PlannedRun& r : runs)
    record.runs.push_back({r.id, fs::relative(r.dir, dir).string(), r.seed, r.protocol, r.labels,
                           r.status,
                           r.error.empty() ? std::nullopt : std::optional<std::string>(r.error)});
  runfolder::write_sweep_record((dir / "sweep.json").string(), record);

  // results.csv: one row per run, its labels and every metric it reported.
  std::vector<std::map<std::string, double>> metrics;
  std::vector<std::string> columns;
  for (const auto& r : runs) {
    metrics.emplace_back();
    if (r.status == RunStatus::ok)
      for (const auto& m : runfolder::read_metrics_csv((fs::path(r.dir) / "metrics.csv").string()))
        metrics.back()[m.metric] = m.value;
    for (const auto& [name, value] : metrics.back())
      if (std::find(columns.begin(), columns.end(), name) == columns.end()) columns.push_back(name);
  }
  std::ostringstream csv;
  csv << "id,seed,protocol";
  if (!runs.empty())
    for (const auto& [name, value] : runs.front().labels) csv << "," << runfolder::csv_field(name);
  csv << ",status,error";
  for (const auto& c : columns) csv << "," << c;
  csv << "\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const PlannedRun& r = runs[i];
    csv << r.id << "," << r.seed << "," << r.protocol;
    for (const auto& [name, value] : r.labels) csv << "," << runfolder::csv_field(value);
    csv << "," << runfolder::status_name(r.status) << "," << runfolder::csv_field(r.error);
    for (const auto& c : columns) {
      auto it = metrics[i].find(c);
      csv << "," << (it == metrics[i].end() ? "" : runfolder::csv_number(it->second));
    }
    csv << "\n";
  }
  write_file_atomic((dir / "results.csv").string(), csv.str());
}

// Local executor: each run in its own process (a crashing plugin costs that run only), `workers`
// at a time, each process's BLAS limited to its share of the cores.
void run_local(std::vector<PlannedRun*>& todo, int64_t workers, const SweepOptions& options,
               const fs::path& logs, const std::function<void()>& on_update) {
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const std::string blas_threads = std::to_string(std::max<int64_t>(1, cores / workers));
  std::map<pid_t, PlannedRun*> running;
  size_t next = 0;
  while (next < todo.size() || !running.empty()) {
    while (next < todo.size() && static_cast<int64_t>(running.size()) < workers) {
      PlannedRun* run = todo[next++];
      const std::vector<std::string> args = run_command(options, *run);
      const std::string log = (logs / (run->id + ".log")).string();
      const pid_t pid = fork();
      if (pid < 0) throw IoError("cannot start a run process (fork failed)");
      if (pid == 0) {
        const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
          dup2(fd, STDOUT_FILENO);
          dup2(fd, STDERR_FILENO);
        }
        setenv("OPENBLAS_NUM_THREADS", blas_threads.c_str(), 1);
        std::vector<char*> argv;
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        execv(argv[0], argv.data());
        _exit(127);
      }
      spdlog::info("run {} started ({})", run->id, [&] {
        std::string s;
        for (const auto& [k, v] : run->labels) s += (s.empty() ? "" : ", ") + k + " " + v;
        return s + ", seed " + std::to_string(run->seed);
      }());
      running[pid] = run;
    }
    int status = 0;
    const pid_t done = waitpid(-1, &status, 0);
    if (done < 0) break;
    auto it = running.find(done);
    if (it == running.end()) continue;
    PlannedRun* run = it->second;
    running.erase(it);
    run->status = RunStatus::pending;
    read_status(*run);
    if (!finished(*run)) {
      const bool started = run->status == RunStatus::running;
      run->status = RunStatus::failed;
      run->error = WIFSIGNALED(status)
                       ? "the run process crashed (signal " + std::to_string(WTERMSIG(status)) + ")"
                       : "the run process ended (exit " + std::to_string(WEXITSTATUS(status)) +
                             ") without results";
      if (started) run->error += " while run.json still said running";
      run->error += "; see " + (logs / (run->id + ".log")).string();
    }
    if (run->status == RunStatus::ok)
      spdlog::info("run {} finished", run->id);
    else
      spdlog::warn("run {} failed: {}", run->id, run->error);
    on_update();
  }
}

std::string command_output(const std::string& command, int* exit_code) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw IoError("cannot run: " + command);
  char buf[4096];
  while (size_t got = fread(buf, 1, sizeof buf, pipe)) out.append(buf, got);
  const int status = pclose(pipe);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string d; std::getline(dirs, d, ':');)
    if (!d.empty() && access((fs::path(d) / program).c_str(), X_OK) == 0) return true;
  return false;
}

// Slurm executor: one job array over the runs not complete yet; submitted with sbatch and
// followed with squeue until it leaves the queue; sacct (where accounting runs) names the state
// of a task that left no results.
void run_slurm(std::vector<PlannedRun*>& todo, const SweepSpec& spec, const SweepOptions& options,
               const fs::path& dir, const std::function<void()>& on_update) {
  const fs::path slurm = dir / "slurm";
  fs::create_directories(slurm);
  std::ostringstream list;
  for (const auto* run : todo) list << run->config << "\t" << run->dir << "\n";
  write_file_atomic((slurm / "runs.tsv").string(), list.str());
  // The array task reads its run's config and folder into these shell variables.
  PlannedRun from_task;
  from_task.config = "$config";
  from_task.dir = "$run_dir";
  std::ostringstream job;
  job << "#!/bin/bash\n"
      << "# Written by scssl-sweep: one array task per run of " << spec.name << ".\n"
      << "#SBATCH --job-name=scssl-" << spec.name << "\n"
      << "#SBATCH --array=0-" << todo.size() - 1
      << (spec.slurm.max_parallel > 0 ? "%" + std::to_string(spec.slurm.max_parallel) : "") << "\n"
      << "#SBATCH --output=" << (dir / "logs" / "slurm-%A_%a.log").string() << "\n"
      << "#SBATCH --cpus-per-task=" << spec.slurm.cpus_per_task << "\n";
  if (!spec.slurm.partition.empty()) job << "#SBATCH --partition=" << spec.slurm.partition << "\n";
  if (!spec.slurm.mem.empty()) job << "#SBATCH --mem=" << spec.slurm.mem << "\n";
  if (!spec.slurm.time.empty()) job << "#SBATCH --time=" << spec.slurm.time << "\n";
  for (const auto& e : spec.slurm.extra) job << "#SBATCH " << e << "\n";
  job << "set -euo pipefail\n"
      << "IFS=$'\\t' read -r config run_dir < <(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" "
      << shell_quote((slurm / "runs.tsv").string()) << ")\n"
      << "export OPENBLAS_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n"
      << "exec";
  for (const auto& a : run_command(options, from_task))
    job << " " << (a[0] == '$' ? "\"" + a + "\"" : shell_quote(a));
  job << "\n";
  const fs::path script = slurm / "job.sh";
  write_file_atomic(script.string(), job.str());
  fs::permissions(script, fs::perms::owner_exec, fs::perm_options::add);
  if (options.dry_run) {
    spdlog::info("dry run: wrote {} ({} runs); submit it with: sbatch {}", script.string(),
                 todo.size(), script.string());
    return;
  }
  if (!on_path("sbatch"))
    throw InvalidArgument(
        "the slurm executor needs 'sbatch', which is not on PATH (no Slurm here?); "
        "run on this machine with --executor local (or executor = \"local\")");
  int code = 0;
  std::string out =
      command_output("sbatch --parsable " + shell_quote(script.string()) + " 2>&1", &code);
  if (code != 0) throw IoError("sbatch refused the job array: " + out);
  const std::string job_id = out.substr(0, out.find_first_of(";\n"));
  spdlog::info("submitted Slurm job array {} ({} runs)", job_id, todo.size());
  size_t last_done = 0;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    out = command_output("squeue -h -j " + job_id + " -o %i 2>/dev/null", &code);
    size_t done = 0;
    for (auto* run : todo) {
      if (!finished(*run)) read_status(*run);
      if (finished(*run)) ++done;
    }
    if (done != last_done) {
      spdlog::info("{} of {} runs finished", done, todo.size());
      last_done = done;
      on_update();
    }
    if (code == 0 && out.find_first_not_of(" \n") == std::string::npos) break;
  }
  const std::string states =
      command_output("sacct -n -P -j " + job_id + " -o JobID,State 2>/dev/null", &code);
  for (size_t i = 0; i < todo.size(); ++i) {
    PlannedRun* run = todo[i];
    read_status(*run);
    if (finished(*run)) continue;
    run->status = RunStatus::failed;
    std::string state = "unknown";
    std::istringstream lines(states);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind(job_id + "_" + std::to_string(i) + "|", 0) == 0)
        state = line.substr(line.find('|') + 1);
    run->error = "Slurm task " + job_id + "_" + std::to_string(i) + " left no results (state " +
                 state + "); see " + (dir / "logs").string();
  }
  on_update();
}

// Replaces the axis's configs by every combination of k of them, each in the order listed, in
// lexicographic order of their positions ((1, 2), (1, 3), ..., (2, 3), ...); a combination's
// label joins its configs' labels with " + ".
void combine(SweepAxis& axis, size_t k) {
  std::vector<std::vector<std::string>> configs;
  std::vector<std::string> labels;
  std::vector<size_t> pick(k);
  for (size_t i = 0; i < k; ++i) pick[i] = i;
  const size_t n = axis.configs.size();
  while (true) {
    configs.emplace_back();
    labels.emplace_back();
    for (size_t i : pick) {
      configs.back().push_back(axis.configs[i].front());
      labels.back() += (labels.back().empty() ? "" : " + ") + axis.labels[i];
    }
    // The next combination: advance the last position that can still move.
    size_t i = k;
    while (i > 0 && pick[i - 1] == n - k + i - 1) --i;
    if (i == 0) break;
    ++pick[i - 1];
    for (size_t j = i; j < k; ++j) pick[j] = pick[j - 1] + 1;
  }
  axis.configs = std::move(configs);
  axis.labels = std::move(labels);
}

}  // namespace

SweepSpec load_sweep(const std::string& path) {
  SweepSpec spec;
  spec.path = fs::absolute(path).lexically_normal().string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw InvalidArgument("sweep file '" + path + "' does not exist");
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw InvalidArgument(path + ":" + std::to_string(e.source().begin.line) + ": " +
                          std::string(e.description()));
  }
  const fs::path here = fs::path(spec.path).parent_path();
  auto file_of = [&](const std::string& f) {
    return fs::absolute(here / f).lexically_normal().string();
  };
  only(path, root, "", {"sweep", "axis", "slurm"});

  const toml::table* sweep = root.get("sweep") ? root.get("sweep")->as_table() : nullptr;
  if (!sweep) fail(path, root.get("sweep"), "[sweep]", "section is missing");
  only(
      path, *sweep, "sweep",
      {"name", "base", "layers", "seeds", "protocols", "output_dir", "executor", "workers", "set"});
  spec.name = sweep->get("name") && sweep->get("name")->is_string()
                  ? sweep->get("name")->as_string()->get()
                  : "";
  if (spec.name.empty() || spec.name.find('/') != std::string::npos || spec.name[0] == '.')
    fail(path, sweep->get("name"), "sweep.name", "must be a plain folder name");
  if (const toml::node* b = sweep->get("base")) {
    if (!b->is_string()) fail(path, b, "sweep.base", "must be a run config file name");
    spec.base = file_of(b->as_string()->get());
    if (!fs::is_regular_file(spec.base, ec))
      fail(path, b, "sweep.base", "names a file that does not exist: " + spec.base);
  }
  if (const toml::node* s = sweep->get("seeds")) {
    const toml::array* arr = s->as_array();
    if (!arr || arr->empty()) fail(path, s, "sweep.seeds", "must be a non-empty list of seeds");
    spec.seeds.clear();
    for (const auto& v : *arr) {
      if (!v.is_integer() || v.as_integer()->get() < 0)
        fail(path, &v, "sweep.seeds", "must hold non-negative integers");
      spec.seeds.push_back(v.as_integer()->get());
    }
  }
  if (const toml::node* p = sweep->get("protocols")) {
    const toml::array* arr = p->as_array();
    if (!arr || arr->empty())
      fail(path, p, "sweep.protocols", "must be a non-empty list of evaluation protocols");
    for (const auto& v : *arr) {
      const std::string name = v.is_string() ? v.as_string()->get() : "";
      if (name != host::kBatchCorrection && name != host::kQueryMapping)
        fail(path, &v, "sweep.protocols", "must hold \"batch_correction\" or \"query_mapping\"");
      if (std::find(spec.protocols.begin(), spec.protocols.end(), name) != spec.protocols.end())
        fail(path, &v, "sweep.protocols", "names \"" + name + "\" twice");
      spec.protocols.push_back(name);
    }
  }
  if (const toml::node* o = sweep->get("output_dir")) {
    if (!o->is_string()) fail(path, o, "sweep.output_dir", "must be a folder name");
    spec.output_dir = o->as_string()->get();
  }
  if (const toml::node* e = sweep->get("executor")) {
    spec.executor = e->is_string() ? e->as_string()->get() : "";
    if (spec.executor != "local" && spec.executor != "slurm")
      fail(path, e, "sweep.executor", "must be \"local\" or \"slurm\"");
  }
  if (const toml::node* w = sweep->get("workers")) {
    if (!w->is_integer() || w->as_integer()->get() < 0)
      fail(path, w, "sweep.workers", "must be 0 (one per core) or more");
    spec.workers = w->as_integer()->get();
  }
  spec.set = string_list(path, *sweep, "set", "sweep");
  for (const auto& f : string_list(path, *sweep, "layers", "sweep")) {
    spec.layers.push_back(file_of(f));
    if (!fs::is_regular_file(spec.layers.back(), ec))
      fail(path, sweep->get("layers"), "sweep.layers",
           "names a file that does not exist: " + spec.layers.back());
  }

  if (const toml::node* axes = root.get("axis")) {
    const toml::array* arr = axes->as_array();
    if (!arr || !arr->is_array_of_tables())
      fail(path, axes, "axis", "must be a list of [[axis]] sections");
    for (const auto& node : *arr) {
      const toml::table& t = *node.as_table();
      SweepAxis axis;
      const toml::node* defining = t.get("key")       ? t.get("key")
                                   : t.get("configs") ? t.get("configs")
                                                      : &node;
      axis.where = where(path, defining);
      only(path, t, "axis", {"name", "configs", "combine", "key", "values", "labels"});
      axis.name =
          t.get("name") && t.get("name")->is_string() ? t.get("name")->as_string()->get() : "";
      if (axis.name.empty()) fail(path, &node, "axis.name", "is missing");
      if (axis.name == "seed" || axis.name == "id" || axis.name == "status" || axis.name == "error")
        fail(path, t.get("name"), "axis.name",
             "'" + axis.name + "' is reserved for a results column");
      for (const auto& a : spec.axes)
        if (a.name == axis.name)
          fail(path, t.get("name"), "axis.name", "'" + axis.name + "' is used twice");
      const bool by_config = t.contains("configs"),
                 by_key = t.contains("key") || t.contains("values");
      if (by_config == by_key)
        fail(path, &node, "axis '" + axis.name + "'",
             "needs either configs = [...] or key = \"...\" with values = [...]");
      if (by_config) {
        for (const auto& f : string_list(path, t, "configs", "axis")) {
          axis.configs.push_back({file_of(f)});
          if (!fs::is_regular_file(axis.configs.back().front(), ec))
            fail(path, t.get("configs"), "axis '" + axis.name + "'",
                 "names a file that does not exist: " + axis.configs.back().front());
          axis.labels.push_back(fs::path(f).stem().string());
        }
      } else {
        const toml::node* key = t.get("key");
        if (!key || !key->is_string() || key->as_string()->get().find('.') == std::string::npos)
          fail(path, key ? key : &node, "axis '" + axis.name + "'",
               "needs key = \"section.setting\"");
        axis.key = key->as_string()->get();
        const toml::array* values = t.get("values") ? t.get("values")->as_array() : nullptr;
        if (!values) fail(path, &node, "axis '" + axis.name + "'", "needs values = [...]");
        for (const auto& v : *values) {
          axis.values.push_back(literal(v));
          axis.labels.push_back(label_of(v));
        }
      }
      const size_t n = axis.size();
      if (n == 0) fail(path, &node, "axis '" + axis.name + "'", "has no values");
      if (t.contains("labels")) {
        axis.labels = string_list(path, t, "labels", "axis");
        if (axis.labels.size() != n)
          fail(path, t.get("labels"), "axis '" + axis.name + "'",
               by_config ? "needs one label per config" : "needs one label per value");
      }
      if (const toml::node* c = t.get("combine")) {
        if (!by_config)
          fail(path, c, "axis '" + axis.name + "'",
               "combine needs configs = [...]: the values of one setting cannot be combined");
        const int64_t k = c->is_integer() ? c->as_integer()->get() : 0;
        if (k < 1 || k > static_cast<int64_t>(n))
          fail(path, c, "axis '" + axis.name + "'",
               "combine must be an integer from 1 to the number of configs (" + std::to_string(n) +
                   ")");
        combine(axis, static_cast<size_t>(k));
      }
      spec.axes.push_back(std::move(axis));
    }
  }

  if (const toml::node* s = root.get("slurm")) {
    if (!s->is_table()) fail(path, s, "slurm", "must be a section ([slurm])");
    const toml::table& t = *s->as_table();
    only(path, t, "slurm", {"partition", "cpus_per_task", "mem", "time", "max_parallel", "extra"});
    auto text = [&](const char* key, std::string& out) {
      if (const toml::node* v = t.get(key)) {
        if (!v->is_string()) fail(path, v, std::string("slurm.") + key, "must be a string");
        out = v->as_string()->get();
      }
    };
    auto number = [&](const char* key, int64_t& out, int64_t min) {
      if (const toml::node* v = t.get(key)) {
        if (!v->is_integer() || v->as_integer()->get() < min)
          fail(path, v, std::string("slurm.") + key,
               "must be an integer >= " + std::to_string(min));
        out = v->as_integer()->get();
      }
    };
    text("partition", spec.slurm.partition);
    text("mem", spec.slurm.mem);
    text("time", spec.slurm.time);
    number("cpus_per_task", spec.slurm.cpus_per_task, 1);
    number("max_parallel", spec.slurm.max_parallel, 0);
    spec.slurm.extra = string_list(path, t, "extra", "slurm");
  }
  return spec;
}

SweepOutcome run_sweep(const SweepSpec& spec, const host::Registry& registry,
                       const SweepOptions& options) {
  const std::string executor = options.executor.empty() ? spec.executor : options.executor;
  if (executor != "local" && executor != "slurm")
    throw InvalidArgument("unknown executor '" + executor + "' (expected local or slurm)");
  const fs::path dir =
      fs::absolute(fs::path(options.output_dir.empty() ? spec.output_dir : options.output_dir) /
                   spec.name)
          .lexically_normal();
  const fs::path plan = dir / "configs", runs_dir = dir / "runs", logs = dir / "logs";
  // The layers of one grid point, as a config file that includes them (a temporary file: nothing
  // is written into the sweep folder before every run has been validated).
  const fs::path recipe_file =
      fs::temp_directory_path() / ("scssl-sweep-" + std::to_string(getpid()) + ".toml");
  std::vector<std::string> resolved;  // each run's resolved config, written once all are valid

  // Every grid point is resolved and validated before any run starts.
  std::vector<PlannedRun> runs;
  std::vector<size_t> choice(spec.axes.size(), 0);
  for (bool more = true; more;) {
    std::string recipe = "include = [";
    std::vector<std::vector<std::string>> includes;  // one include item each: a file or a group
    if (!spec.base.empty()) includes.push_back({spec.base});
    std::vector<std::string> overrides = spec.set;
    std::vector<std::pair<std::string, std::string>> labels;
    std::string point;
    for (size_t a = 0; a < spec.axes.size(); ++a) {
      const SweepAxis& axis = spec.axes[a];
      if (axis.key.empty())
        includes.push_back(axis.configs[choice[a]]);
      else
        overrides.push_back(axis.key + "=" + axis.values[choice[a]]);
      labels.emplace_back(axis.name, axis.labels[choice[a]]);
      point += (point.empty() ? "" : ", ") + axis.name + " = " + axis.labels[choice[a]] + " (" +
               axis.where + ")";
    }
    for (const auto& layer : spec.layers) includes.push_back({layer});
    for (size_t i = 0; i < includes.size(); ++i) {
      toml::array item;
      for (const auto& file : includes[i]) item.push_back(file);
      std::ostringstream quoted;
      if (item.size() == 1)
        quoted << *item.front().as_string();
      else
        quoted << item;
      recipe += (i ? ", " : "") + quoted.str();
    }
    recipe += "]\n";
    std::ofstream(recipe_file) << recipe;
    // Each seed under each protocol (or under the config's own when the sweep names none).
    std::vector<std::pair<int64_t, std::string>> replicates;
    for (int64_t seed : spec.seeds)
      for (const std::string& protocol :
           spec.protocols.empty() ? std::vector<std::string>{""} : spec.protocols)
        replicates.emplace_back(seed, protocol);
    for (const auto& [seed, protocol] : replicates) {
      std::vector<std::string> with_seed = overrides;
      with_seed.push_back("run.seed=" + std::to_string(seed));
      if (!protocol.empty()) with_seed.push_back("evaluation.protocol=\"" + protocol + "\"");
      RunConfig cfg;
      try {
        cfg = host::load_run_config(recipe_file.string(), with_seed, registry);
      } catch (const std::exception& e) {
        fs::remove(recipe_file);
        // Errors about the temporary layering file are about the grid point itself.
        std::string message = e.what();
        const std::string prefix = recipe_file.string() + ": ";
        if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
        throw InvalidArgument(spec.path + ": the run with " + (point.empty() ? "no axes" : point) +
                              " is not valid: " + message);
      }
      // The id hashes everything that shapes the result, not where or how it is run.
      cfg.name = "run";
      cfg.output_dir = "";
      cfg.config_path.clear();
      const std::optional<bool> isolate = cfg.isolate;
      cfg.isolate.reset();
      PlannedRun run;
      run.id = short_hash(cfg.resolved_toml());
      // Isolated unless the sweep says otherwise: a crash or an out-of-memory kill then costs one
      // run, recorded in its run.json.
      cfg.isolate = isolate.value_or(true);
      run.seed = seed;
      run.protocol = cfg.protocol;
      run.labels = {
          {"dataset", cfg.dataset.params.has("path")
                          ? fs::path(cfg.dataset.params.get_string("path")).stem().string()
                          : cfg.dataset.plugin->name()},
          {"method", cfg.method.plugin->name()}};
      for (const auto& l : labels) {
        auto it = std::find_if(run.labels.begin(), run.labels.end(),
                               [&](const auto& p) { return p.first == l.first; });
        if (it != run.labels.end())
          it->second = l.second;
        else
          run.labels.push_back(l);
      }
      cfg.name = run.id;
      cfg.output_dir = runs_dir.string();
      run.config = (plan / (run.id + ".toml")).string();
      run.dir = (runs_dir / run.id).string();
      for (const auto& other : runs)
        if (other.id == run.id) {
          fs::remove(recipe_file);
          throw InvalidArgument(spec.path + ": two grid points give the same run (" + point +
                                "); remove the duplicate value");
        }
      resolved.push_back(cfg.resolved_toml());
      read_status(run);
      runs.push_back(std::move(run));
    }
    fs::remove(recipe_file);
    // Next grid point (the last axis varies fastest).
    more = false;
    for (size_t a = spec.axes.size(); a-- > 0;) {
      if (++choice[a] < spec.axes[a].size()) {
        more = true;
        break;
      }
      choice[a] = 0;
    }
  }

  for (const auto& d : {plan, runs_dir, logs}) fs::create_directories(d);
  for (size_t i = 0; i < runs.size(); ++i) write_file_atomic(runs[i].config, resolved[i]);

  SweepOutcome out;
  out.dir = dir.string();
  std::vector<PlannedRun*> todo;
  for (auto& r : runs) {
    if (r.status == RunStatus::ok) {
      ++out.skipped;
      continue;
    }
    // An earlier attempt that failed or was killed is kept aside, not mixed with the new one.
    if (!options.dry_run && fs::exists(r.dir)) {
      const fs::path previous = r.dir + ".previous";
      fs::remove_all(previous);
      fs::rename(r.dir, previous);
    }
    r.status = RunStatus::pending;
    r.error.clear();
    todo.push_back(&r);
  }
  spdlog::info("sweep {}: {} runs, {} complete already, {} to run ({} executor); folder {}",
               spec.name, runs.size(), out.skipped, todo.size(), executor, dir.string());
  auto update = [&] { write_sweep_files(spec, dir, runs); };
  update();
  if (!todo.empty()) {
    if (executor == "local" && options.dry_run) {
      spdlog::info("dry run: {} runs planned, none started", todo.size());
    } else if (executor == "local") {
      const int64_t workers = options.workers >= 0 ? options.workers : spec.workers;
      run_local(todo,
                workers > 0 ? workers : std::max<int64_t>(1, std::thread::hardware_concurrency()),
                options, logs, update);
    } else {
      run_slurm(todo, spec, options, dir, update);
    }
  }
  update();
  out.runs = runs;
  return out;
}

}  // namespace scssl::sweep
