// scssl-host: the command-line front end over the engine library. Its own commands are list,
// describe, validate, run and evaluate; sweep, report and fetch are programs of their own
// (scssl-sweep, scssl-report, scssl-fetch) that it starts with the same words, git-style.
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>

#include "adapters.hpp"
#include "aggregates.hpp"
#include "blas_kernels.hpp"
#include "cli.hpp"
#include "config.hpp"
#include "crash_guard.hpp"
#include "isolation.hpp"
#include "locations.hpp"
#include "plugin_commands.hpp"
#include "registry.hpp"
#include "resources.hpp"
#include "results.hpp"
#include "run.hpp"
#include "runfolder/files.hpp"

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace scssl;
using namespace scssl::host;

namespace {

const char* kUsage =
    "Usage: scssl-host [--plugins DIR]... [--quiet|--verbose] <command> [args]\n"
    "\n"
    "Commands:\n"
    "  list                      plugins found, by kind, with versions\n"
    "  describe NAME             a plugin's summary and every parameter\n"
    "  run CONFIG.toml [--set section.key=value]... [--output DIR]\n"
    "                            one run end to end; prints the results and the run folder\n"
    "  evaluate DATA.h5ad --embedding KEY [--embedding KEY]... [options]\n"
    "                            scores embeddings stored in obsm (from any tool) with the\n"
    "                            evaluators; writes the same result files as a run\n"
    "  sweep SWEEP.toml [--executor local|slurm] [--workers N] [--dry-run] [--output DIR]\n"
    "                            a grid of runs (resumable), collected into results.csv\n"
    "  validate FILE.so          checks one plugin library (for plugin authors' CI)\n"
    "  report DIR... -o OUT      per-data-set tables (CSV) and one HTML page from run/sweep "
    "folders\n"
    "  fetch MANIFEST.toml [--into DIR] [--force]  downloads and checks a catalog data set\n"
    "\n"
    "`scssl-host COMMAND --help` lists the options of one command. sweep, report and fetch are "
    "the\n"
    "programs scssl-sweep, scssl-report and scssl-fetch, found next to this program or on PATH.\n"
    "\n"
    "Plugins are looked up in every --plugins DIR, the folders of $SCSSL_PLUGIN_PATH "
    "(':'-separated)\n"
    "and the plugin folder next to this program.\n";

// The plugins, loaded on first use, so that `COMMAND --help` loads none.
class Plugins {
 public:
  explicit Plugins(std::vector<std::string> folders) : folders_(std::move(folders)) {}
  const Registry& get() {
    if (!loaded_) load_plugins(registry_, folders_);
    loaded_ = true;
    return registry_;
  }

 private:
  std::vector<std::string> folders_;
  Registry registry_;
  bool loaded_ = false;
};

const char* kRunUsage =
    "Usage: scssl-host run CONFIG.toml [--set section.key=value]... [--output DIR]\n"
    "\n"
    "One run end to end: data set, preprocessing, augmentations, method, evaluators. Prints the\n"
    "metrics and the run folder (docs/run-folder.md).";

// With run.isolate, the pipeline runs in a child process (this program again, with the same
// words); the parent waits and, when a signal ended the child, says so in the run folder's
// run.json. `argv` is every word after the program name.
int cmd_run(Plugins& plugins, const std::vector<std::string>& argv,
            const std::vector<std::string>& args, bool quiet, const std::string& command_line) {
  po::options_description opts("run options");
  std::string config;
  std::vector<std::string> sets;
  std::string output, run_dir;
  opts.add_options()("config", po::value(&config)->required(), "run configuration (TOML)")(
      "set", po::value(&sets)->composing(), "override one setting: section.key=value")(
      "output,o", po::value(&output), "folder for the run directory (overrides run.output_dir)")(
      "run-dir", po::value(&run_dir), "exactly this new or empty run folder (used by sweeps)");
  po::positional_options_description pos;
  pos.add("config", 1);
  po::variables_map vm;
  if (!cli::parse_command(args, opts, pos, vm, kRunUsage)) return 0;
  quiet = quiet || vm["quiet"].as<bool>();
  RunConfig cfg = load_run_config(config, sets, plugins.get());
  if (!output.empty()) cfg.output_dir = output;
  if (isolation::is_child()) {
    cfg.isolate = true;
  } else if (cfg.isolate.value_or(false)) {
    // The folder is made here, so that the parent knows it; the child claims it, empty.
    const std::string dir = run_dir.empty()
                                ? runfolder::create_run_directory(cfg.output_dir, cfg.name)
                                : runfolder::claim_run_directory(run_dir);
    std::vector<std::string> child_args = argv;
    if (run_dir.empty()) child_args.insert(child_args.end(), {"--run-dir", dir});
    const isolation::ChildEnd end = isolation::run_child(child_args);
    if (end.signal == 0) return end.exit_code;
    spdlog::error("{}; recorded in {}", record_child_end(dir, cfg, end), dir + "/run.json");
    return 128 + end.signal;
  }
  cfg.isolate = cfg.isolate.value_or(false);
  RunOutcome outcome = execute_run(cfg, {command_line, !quiet, run_dir});
  std::cout << "\n"
            << metrics_table(outcome.metrics) << "\nrun folder: " << outcome.run_dir << "\n";
  return 0;
}

// A TOML string literal, for settings built from command-line arguments.
std::string toml_quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string toml_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + toml_quote(items[i]);
  return out + "]";
}

// "a,b" and repeated options alike become one list.
std::vector<std::string> split_commas(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values)
    for (size_t start = 0; start <= v.size();) {
      size_t comma = v.find(',', start);
      if (comma == std::string::npos) comma = v.size();
      if (comma > start) out.push_back(v.substr(start, comma - start));
      start = comma + 1;
    }
  return out;
}

const char* kEvaluateUsage =
    "Usage: scssl-host evaluate DATA.h5ad --embedding KEY [--embedding KEY]... [options]\n"
    "\n"
    "Scores embeddings stored in the file's obsm (made by any tool) with the evaluators; writes "
    "one\n"
    "run-style result folder per embedding and comparison.csv (docs/evaluation.md).";

int cmd_evaluate(Plugins& plugins, const std::vector<std::string>& argv,
                 const std::vector<std::string>& args, bool quiet,
                 const std::string& command_line) {
  po::options_description opts("evaluate options");
  std::string data, config, output, name, batch_key, label_key, unintegrated, graph, device;
  std::vector<std::string> embeddings, evaluators, query, sets;
  bool min_max = false, per_cell = false;
  opts.add_options()("data", po::value(&data)->required(), "the .h5ad file")(
      "embedding,e", po::value(&embeddings)->composing()->required(),
      "obsm key to score (repeatable)")(
      "config", po::value(&config),
      "a run config whose [dataset], [preprocess] and [evaluation] are used")(
      "evaluators", po::value(&evaluators)->composing(),
      "comma-separated evaluators; default 'scib': the evaluators of the study's ten scIB metrics; "
      "'all': every installed evaluator")("batch-key", po::value(&batch_key),
                                          "obs column of the batches")(
      "label-key", po::value(&label_key), "obs column of the cell types")(
      "query-batches", po::value(&query)->composing(), "held-out batches for annotation/modality")(
      "unintegrated-key", po::value(&unintegrated),
      "obsm key of the unintegrated PCA (PCR's X_pre)")("min-max-scale", po::bool_switch(&min_max),
                                                        "also scale metrics across the embeddings")(
      "device", po::value(&device),
      "where the neighbour searches and silhouettes run: cpu (default), cuda, cuda:N "
      "(run.device)")(
      "graph", po::value(&graph),
      "obsp key of a stored neighbour graph to use instead of searching (scanpy: distances)")(
      "per-cell", po::bool_switch(&per_cell),
      "also write per-cell scores: per_cell.csv and obs columns of an .h5ad copy "
      "(evaluation.per_cell_scores)")("name", po::value(&name),
                                      "name of the result folder (default: evaluate)")(
      "set", po::value(&sets)->composing(), "override one setting: section.key=value")(
      "output,o", po::value(&output), "folder for the result folder");
  po::positional_options_description pos;
  pos.add("data", 1);
  po::variables_map vm;
  if (!cli::parse_command(args, opts, pos, vm, kEvaluateUsage)) return 0;
  quiet = quiet || vm["quiet"].as<bool>();
  const Registry& registry = plugins.get();

  std::vector<std::string> overrides;
  if (config.empty()) overrides.push_back("dataset.plugin=\"h5ad\"");
  overrides.push_back("dataset.path=" + toml_quote(data));
  if (vm.count("batch-key")) overrides.push_back("dataset.batch_key=" + toml_quote(batch_key));
  if (vm.count("label-key")) overrides.push_back("dataset.label_key=" + toml_quote(label_key));
  if (per_cell) overrides.push_back("evaluation.per_cell_scores=true");
  if (vm.count("device")) overrides.push_back("run.device=" + toml_quote(device));
  if (vm.count("query-batches"))
    overrides.push_back("evaluation.query_batches=" + toml_list(split_commas(query)));
  if (config.empty() || vm.count("name"))
    overrides.push_back("run.name=" + toml_quote(name.empty() ? "evaluate" : name));
  std::vector<std::string> chosen = split_commas(evaluators);
  if (chosen.empty() && config.empty()) chosen = {"scib"};
  if (chosen == std::vector<std::string>{"scib"} || chosen == std::vector<std::string>{"all"}) {
    const bool everything = chosen.front() == "all";
    chosen.clear();
    for (const auto* p : registry.plugins(SCSSL_KIND_EVALUATOR)) {
      // The study's suite is defined by metric name, like its aggregates: a third-party metric in
      // the bio or batch group runs only when asked for.
      bool scib = false;
      for (const MetricRule& m : p->meta.metrics)
        for (const auto* names :
             {&evaluation::kBioConservationMetrics, &evaluation::kBatchCorrectionMetrics})
          scib |= std::find(names->begin(), names->end(), m.name) != names->end();
      if (everything || scib) chosen.push_back(p->name());
    }
  }
  if (!chosen.empty()) overrides.push_back("evaluation.evaluators=" + toml_list(chosen));
  overrides.insert(overrides.end(), sets.begin(), sets.end());

  RunConfig cfg = load_run_config(config, overrides, registry, ConfigUse::Evaluate);
  if (!output.empty()) cfg.output_dir = output;
  if (isolation::is_child()) {
    cfg.isolate = true;
  } else if (cfg.isolate.value_or(false)) {
    // The child's crash handler records a crash in the result folder's run.json; the parent only
    // says how the child ended.
    const isolation::ChildEnd end = isolation::run_child(argv);
    if (end.signal == 0) return end.exit_code;
    spdlog::error(
        "the evaluation's process was ended by {} (its result folder's run.json says "
        "where, unless the signal was SIGKILL)",
        isolation::signal_name(end.signal));
    return 128 + end.signal;
  }
  cfg.isolate = cfg.isolate.value_or(false);
  EvaluationOutcome outcome = execute_evaluation(cfg, {embeddings, unintegrated, min_max, graph},
                                                 {command_line, !quiet, ""});
  for (size_t i = 0; i < embeddings.size(); ++i) {
    std::cout << "\nobsm['" << embeddings[i] << "']\n" << metrics_table(outcome.metrics[i]);
    if (!outcome.scaled.empty())
      std::cout << "min-max scaled across the embeddings:\n" << metrics_table(outcome.scaled[i]);
  }
  std::cout << "\nresults: " << outcome.dir << "\n";
  return 0;
}

// sweep, report and fetch: the program scssl-<command> with the same words and the global options
// that concern it. Returns only when the program cannot be started.
int forward(const std::string& command, const std::vector<std::string>& args, bool quiet,
            bool verbose, const std::vector<std::string>& plugin_dirs, bool no_defaults) {
  const std::string program = find_program("scssl-" + command);
  if (program.empty())
    throw IoError("`scssl-host " + command + "` runs the program scssl-" + command +
                  ", which is neither next to scssl-host nor on PATH (build or install it)");
  std::vector<std::string> argv = {program};
  if (quiet) argv.push_back("--quiet");
  if (verbose) argv.push_back("--verbose");
  if (command == "sweep") {
    for (const auto& d : plugin_dirs) argv.insert(argv.end(), {"--plugins", d});
    if (no_defaults) argv.push_back("--no-default-plugins");
  }
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> c_argv;
  for (auto& a : argv) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::cout.flush();
  execv(program.c_str(), c_argv.data());
  throw IoError("cannot start " + program + ": " + std::strerror(errno));
}

}  // namespace

int main(int argc, char** argv) {
  reuse_freed_memory();
  crash::install_handlers();
  restart_with_native_blas_kernels(argv);
  cli::install_console_logger();

  std::string command_line;
  for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + std::string(argv[i]);

  std::vector<std::string> plugin_dirs;
  std::string command;
  bool quiet = false, verbose = false, no_defaults = false;
  po::options_description global("options");
  global.add_options()("help,h", "this help")("version", "print the version")(
      "plugins,p", po::value(&plugin_dirs)->composing(),
      "a folder of plugin libraries (repeatable)")("no-default-plugins",
                                                   po::bool_switch(&no_defaults),
                                                   "ignore the plugin folder next to the program")(
      "quiet,q", po::bool_switch(&quiet), "only warnings and errors")(
      "verbose,v", po::bool_switch(&verbose), "debug output");
  // The words before the command are scssl-host's own options; the command and every word after
  // it belong to the command (so that `run --help` is the command's help).
  int at = 1;
  while (at < argc && argv[at][0] == '-')
    at += (std::string(argv[at]) == "--plugins" || std::string(argv[at]) == "-p") ? 2 : 1;
  at = std::min(at, argc);
  if (at < argc) command = argv[at];
  std::vector<std::string> args(argv + std::min(at + 1, argc), argv + argc);

  return cli::guarded([&]() -> int {
    po::variables_map vm;
    po::store(po::command_line_parser(std::vector<std::string>(argv + 1, argv + at))
                  .options(global)
                  .run(),
              vm);
    po::notify(vm);
    if (vm.count("version")) {
      std::cout << "scssl-host " << SCSSL_VERSION << " (plugin ABI " << SCSSL_ABI_VERSION << ")\n";
      return 0;
    }
    if (vm.count("help") || command.empty()) {
      std::cout << kUsage << "\n" << global;
      return command.empty() && !vm.count("help") ? 2 : 0;
    }
    cli::set_console_level(quiet, verbose);

    if (command == "sweep" || command == "report" || command == "fetch")
      return forward(command, args, quiet, verbose, plugin_dirs, no_defaults);
    Plugins plugins(plugin_folders(plugin_dirs, !no_defaults));
    po::options_description none("options");
    po::positional_options_description one_name, one_file;
    one_name.add("name", 1);
    one_file.add("file", 1);
    po::variables_map cvm;
    if (command == "list") {
      if (!cli::parse_command(
              args, none, {}, cvm,
              "Usage: scssl-host list\n\nThe plugins found, by kind, with versions."))
        return 0;
      return cmd_list(plugins.get());
    }
    if (command == "describe") {
      std::string name;
      po::options_description opts("describe options");
      opts.add_options()("name", po::value(&name), "the plugin's name (as `list` shows it)");
      if (!cli::parse_command(args, opts, one_name, cvm,
                              "Usage: scssl-host describe NAME\n\nA plugin's summary, needs, "
                              "metrics and every parameter."))
        return 0;
      if (name.empty()) throw po::error("describe takes one plugin name");
      return cmd_describe(plugins.get(), name);
    }
    if (command == "validate") {
      std::string file;
      po::options_description opts("validate options");
      opts.add_options()("file", po::value(&file), "the plugin library (.so) to check");
      if (!cli::parse_command(
              args, opts, one_file, cvm,
              "Usage: scssl-host validate FILE.so\n\nChecks one plugin library in a child "
              "process and creates one instance with the defaults (for plugin authors' CI)."))
        return 0;
      if (file.empty()) throw po::error("validate takes one plugin file");
      return cmd_validate(file);
    }
    const std::vector<std::string> all_words(argv + 1, argv + argc);
    if (command == "run") return cmd_run(plugins, all_words, args, quiet, command_line);
    if (command == "evaluate") return cmd_evaluate(plugins, all_words, args, quiet, command_line);
    throw po::error("unknown command '" + command + "' (see scssl-host --help)");
  });
}
