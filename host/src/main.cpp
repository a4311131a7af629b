// scssl-host: the command-line front end. Subcommands: list, describe, run, evaluate, sweep,
// validate.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options.hpp>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <set>

#include "adapters.hpp"
#include "blas_kernels.hpp"
#include "config.hpp"
#include "fetch.hpp"
#include "registry.hpp"
#include "report.hpp"
#include "results.hpp"
#include "run.hpp"
#include "sweep.hpp"

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
    "  report DIR... -o OUT      per-data-set tables (CSV) and one HTML page from run/sweep folders\n"
    "  fetch MANIFEST.toml [--into DIR] [--force]  downloads and checks a catalog data set\n"
    "\n"
    "Plugins are looked up in every --plugins DIR, the folders of $SCSSL_PLUGIN_PATH (':'-separated)\n"
    "and the plugin folder next to this program.\n";

// Plugin folders: --plugins, then $SCSSL_PLUGIN_PATH, then the build or install folder next to
// the executable; each folder once.
std::vector<std::string> plugin_folders(const std::vector<std::string>& given, bool defaults) {
  std::vector<std::string> dirs = given;
  if (const char* env = std::getenv("SCSSL_PLUGIN_PATH")) {
    std::string path = env;
    for (size_t start = 0; start <= path.size();) {
      size_t colon = path.find(':', start);
      if (colon == std::string::npos) colon = path.size();
      if (colon > start) dirs.push_back(path.substr(start, colon - start));
      start = colon + 1;
    }
  }
  if (defaults) {
    std::error_code ec;
    const fs::path exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
    for (const fs::path candidate : {exe_dir / ".." / "plugins", exe_dir / ".." / SCSSL_PLUGIN_INSTALL_DIR})
      if (fs::is_directory(candidate, ec)) dirs.push_back(candidate.string());
  }
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const auto& d : dirs) {
    std::error_code ec;
    const std::string key = fs::weakly_canonical(d, ec).string();
    if (seen.insert(key).second) unique.push_back(d);
  }
  return unique;
}

void load_plugins(Registry& registry, const std::vector<std::string>& folders) {
  for (const auto& dir : folders) registry.add_directory(dir);
  for (const auto& r : registry.refusals()) spdlog::warn("plugin refused: {}", r);
  if (folders.empty()) spdlog::warn("no plugin folder given (use --plugins DIR)");
}

std::string requirement_names(uint64_t bits) {
  std::string out;
  auto add = [&](uint64_t bit, const char* name) {
    if (bits & bit) out += (out.empty() ? "" : ", ") + std::string(name);
  };
  add(SCSSL_NEEDS_BATCH, "batch labels");
  add(SCSSL_NEEDS_LABELS, "cell-type labels");
  add(SCSSL_NEEDS_SECOND_MODALITY, "a second modality");
  add(SCSSL_NEEDS_RAW_COUNTS, "raw counts");
  add(SCSSL_USES_AUGMENTATIONS, "augmentations (uses the configured pipeline)");
  add(SCSSL_NEEDS_UNINTEGRATED, "the PCA of the unintegrated data");
  add(SCSSL_NEEDS_QUERY_BATCHES, "held-out query batches (evaluation.query_batches)");
  return out.empty() ? "nothing special" : out;
}

int cmd_list(const Registry& registry) {
  for (scssl_kind kind : {SCSSL_KIND_DATASET, SCSSL_KIND_AUGMENTATION, SCSSL_KIND_METHOD,
                          SCSSL_KIND_EVALUATOR}) {
    auto plugins = registry.plugins(kind);
    std::cout << kind_name(kind) << "s:" << (plugins.empty() ? " (none)" : "") << "\n";
    for (const auto* p : plugins)
      std::printf("  %-20s %-8s %s\n", p->name().c_str(), p->info->version, p->info->summary);
    std::fflush(stdout);
  }
  return 0;
}

int cmd_describe(const Registry& registry, const std::string& name) {
  const LoadedPlugin* p = registry.find(name);
  if (p == nullptr) throw InvalidArgument("no plugin named '" + name + "' (see `scssl-host list`)");
  std::cout << p->name() << " (" << kind_name(p->kind()) << " plugin, version " << p->info->version
            << ")\n  " << p->info->summary << "\n  file: " << p->path << "\n";
  if (p->kind() == SCSSL_KIND_METHOD)
    std::cout << "  needs: "
              << requirement_names(static_cast<const scssl_method_table*>(p->info->table)->requirements)
              << "\n";
  if (p->kind() == SCSSL_KIND_EVALUATOR) {
    auto* t = static_cast<const scssl_evaluator_table*>(p->info->table);
    std::cout << "  needs: " << requirement_names(t->requirements) << "\n";
    std::cout << "metrics:\n";
    for (int64_t i = 0; i < t->n_metrics; ++i) {
      const auto& m = t->metrics[i];
      const char* groups[] = {"", "bio", "batch", "annotation", "modality", "other"};
      std::printf("  %-22s %-10s %-7s %s\n", m.name, groups[m.group],
                  m.higher_is_better ? "higher" : "lower", m.help ? m.help : "");
    }
  }
  std::cout << "parameters:" << (p->info->n_params == 0 ? " (none)" : "") << "\n";
  for (int64_t i = 0; i < p->info->n_params; ++i) {
    const auto& s = p->info->params[i];
    std::printf("  %-20s %-12s default %-12s %s\n", s.name, param_type_name(s.type),
                (s.default_text && *s.default_text) ? s.default_text : "\"\"", s.help ? s.help : "");
  }
  return 0;
}

// Loads one plugin in a child process, so that a crash reports instead of killing the validator.
int cmd_validate(const std::string& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw InvalidArgument("'" + file + "' does not exist");
  std::fflush(stdout);
  const pid_t child = fork();
  if (child < 0) throw Error(SCSSL_ERR_INTERNAL, "cannot start a validation process");
  if (child == 0) {
    int code = 1;
    try {
      Registry registry;
      if (!registry.add_file(file)) {
        std::cout << "REFUSED " << registry.refusals().front() << "\n";
      } else {
        const LoadedPlugin& p = *registry.all().front();
        std::cout << "plugin " << p.name() << " " << p.info->version << " ("
                  << kind_name(p.kind()) << "), ABI " << p.info->abi_version << ", "
                  << p.info->n_params << " parameter(s) with valid defaults\n";
        const std::string expected = "libscssl-" + std::string(kind_name(p.kind())) + "-" + p.name();
        if (fs::path(file).stem().string() != expected)
          std::cout << "note: conventional file name would be " << expected << ".so\n";
        HostServices services;
        ParamSet params = p.default_params();
        // Instances are created and destroyed once with the defaults; data sets need real input.
        switch (p.kind()) {
          case SCSSL_KIND_AUGMENTATION: { Augmentation a(p, params, services); break; }
          case SCSSL_KIND_METHOD: { Method m(p, params, services); break; }
          case SCSSL_KIND_EVALUATOR: { Evaluator e(p, params, services); break; }
          default: break;
        }
        std::cout << "OK " << file << "\n";
        code = 0;
      }
    } catch (const std::exception& e) {
      std::cout << "FAILED " << file << ": " << e.what() << "\n";
    }
    std::cout.flush();
    _exit(code);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (WIFSIGNALED(status)) {
    std::cout << "FAILED " << file << ": the plugin crashed the validation process (signal "
              << WTERMSIG(status) << ")\n";
    return 1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int cmd_run(const Registry& registry, const std::vector<std::string>& args, bool quiet,
            const std::string& command_line) {
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
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  RunConfig cfg = load_run_config(config, sets, registry);
  if (!output.empty()) cfg.output_dir = output;
  RunOutcome outcome = execute_run(cfg, {command_line, !quiet, run_dir});
  std::cout << "\n" << metrics_table(outcome.metrics) << "\nrun folder: " << outcome.run_dir << "\n";
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

int cmd_evaluate(const Registry& registry, const std::vector<std::string>& args, bool quiet,
                 const std::string& command_line) {
  po::options_description opts("evaluate options");
  std::string data, config, output, name, batch_key, label_key, unintegrated;
  std::vector<std::string> embeddings, evaluators, query, sets;
  bool min_max = false;
  opts.add_options()("data", po::value(&data)->required(), "the .h5ad file")(
      "embedding,e", po::value(&embeddings)->composing()->required(), "obsm key to score (repeatable)")(
      "config", po::value(&config), "a run config whose [dataset], [preprocess] and [evaluation] are used")(
      "evaluators", po::value(&evaluators)->composing(),
      "comma-separated evaluators; default: every installed scIB metric; 'all': every evaluator")(
      "batch-key", po::value(&batch_key), "obs column of the batches")(
      "label-key", po::value(&label_key), "obs column of the cell types")(
      "query-batches", po::value(&query)->composing(), "held-out batches for annotation/modality")(
      "unintegrated-key", po::value(&unintegrated), "obsm key of the unintegrated PCA (PCR's X_pre)")(
      "min-max-scale", po::bool_switch(&min_max), "also scale metrics across the embeddings")(
      "name", po::value(&name), "name of the result folder (default: evaluate)")(
      "set", po::value(&sets)->composing(), "override one setting: section.key=value")(
      "output,o", po::value(&output), "folder for the result folder");
  po::positional_options_description pos;
  pos.add("data", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  po::notify(vm);

  std::vector<std::string> overrides;
  if (config.empty()) overrides.push_back("dataset.plugin=\"h5ad\"");
  overrides.push_back("dataset.path=" + toml_quote(data));
  if (vm.count("batch-key")) overrides.push_back("dataset.batch_key=" + toml_quote(batch_key));
  if (vm.count("label-key")) overrides.push_back("dataset.label_key=" + toml_quote(label_key));
  if (vm.count("query-batches")) overrides.push_back("evaluation.query_batches=" + toml_list(split_commas(query)));
  if (config.empty() || vm.count("name")) overrides.push_back("run.name=" + toml_quote(name.empty() ? "evaluate" : name));
  std::vector<std::string> chosen = split_commas(evaluators);
  if (chosen.empty() && config.empty()) chosen = {"scib"};
  if (chosen == std::vector<std::string>{"scib"} || chosen == std::vector<std::string>{"all"}) {
    const bool everything = chosen.front() == "all";
    chosen.clear();
    for (const auto* p : registry.plugins(SCSSL_KIND_EVALUATOR)) {
      const auto* t = static_cast<const scssl_evaluator_table*>(p->info->table);
      bool scib = false;
      for (int64_t i = 0; i < t->n_metrics; ++i)
        scib |= t->metrics[i].group == SCSSL_GROUP_BIO || t->metrics[i].group == SCSSL_GROUP_BATCH;
      if (everything || scib) chosen.push_back(p->name());
    }
  }
  if (!chosen.empty()) overrides.push_back("evaluation.evaluators=" + toml_list(chosen));
  overrides.insert(overrides.end(), sets.begin(), sets.end());

  RunConfig cfg = load_run_config(config, overrides, registry, ConfigUse::Evaluate);
  if (!output.empty()) cfg.output_dir = output;
  EvaluationOutcome outcome =
      execute_evaluation(cfg, {embeddings, unintegrated, min_max}, {command_line, !quiet});
  for (size_t i = 0; i < embeddings.size(); ++i) {
    std::cout << "\nobsm['" << embeddings[i] << "']\n" << metrics_table(outcome.metrics[i]);
    if (!outcome.scaled.empty())
      std::cout << "min-max scaled across the embeddings:\n" << metrics_table(outcome.scaled[i]);
  }
  std::cout << "\nresults: " << outcome.dir << "\n";
  return 0;
}

int cmd_sweep(const Registry& registry, const std::vector<std::string>& args,
              const std::vector<std::string>& plugin_dirs) {
  po::options_description opts("sweep options");
  std::string file;
  SweepOptions options;
  options.plugin_dirs = plugin_dirs;
  opts.add_options()("sweep", po::value(&file)->required(), "sweep file (TOML)")(
      "executor", po::value(&options.executor), "local or slurm (overrides the file)")(
      "workers", po::value(&options.workers), "local: runs at once (0: one per core)")(
      "dry-run", po::bool_switch(&options.dry_run), "plan and check the runs only (slurm: write the job script)")(
      "output,o", po::value(&options.output_dir), "folder for the sweep folder");
  po::positional_options_description pos;
  pos.add("sweep", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  SweepOutcome outcome = run_sweep(load_sweep(file), registry, options);
  int64_t ok = 0, failed = 0, pending = 0;
  for (const auto& r : outcome.runs) (r.status == "ok" ? ok : r.status == "failed" ? failed : pending)++;
  std::cout << "\n" << outcome.runs.size() << " runs: " << ok << " ok (" << outcome.skipped
            << " of them complete before), " << failed << " failed, " << pending << " not run\n";
  for (const auto& r : outcome.runs)
    if (r.status == "failed") std::cout << "  failed " << r.id << ": " << r.error << "\n";
  std::cout << "results: " << outcome.dir << "/results.csv\n";
  return failed > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  restart_with_native_blas_kernels(argv);
  // The logger passes everything; the terminal sink filters by --quiet/--verbose, so a run's log
  // file (added by the run) keeps debug lines either way.
  auto console_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console_sink->set_pattern("[%H:%M:%S] %^%l%$ %v");
  auto console = std::make_shared<spdlog::logger>("scssl", console_sink);
  console->set_level(spdlog::level::debug);
  spdlog::set_default_logger(console);

  std::string command_line;
  for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + std::string(argv[i]);

  std::vector<std::string> plugin_dirs;
  std::string command;
  bool quiet = false, verbose = false, no_defaults = false;
  po::options_description global("options");
  global.add_options()("help,h", "this help")("version", "print the version")(
      "plugins,p", po::value(&plugin_dirs)->composing(), "a folder of plugin libraries (repeatable)")(
      "no-default-plugins", po::bool_switch(&no_defaults), "ignore the plugin folder next to the program")(
      "quiet,q", po::bool_switch(&quiet), "only warnings and errors")(
      "verbose,v", po::bool_switch(&verbose), "debug output");
  po::options_description hidden;
  hidden.add_options()("command", po::value(&command))("args", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(global).add(hidden);
  po::positional_options_description pos;
  pos.add("command", 1).add("args", -1);

  try {
    po::variables_map vm;
    po::parsed_options parsed =
        po::command_line_parser(argc, argv).options(all).positional(pos).allow_unregistered().run();
    po::store(parsed, vm);
    po::notify(vm);
    if (vm.count("version")) {
      std::cout << "scssl-host " << SCSSL_VERSION << " (plugin ABI " << SCSSL_ABI_VERSION << ")\n";
      return 0;
    }
    if (vm.count("help") || command.empty()) {
      std::cout << kUsage << "\n" << global;
      return command.empty() && !vm.count("help") ? 2 : 0;
    }
    console_sink->set_level(quiet ? spdlog::level::warn : verbose ? spdlog::level::debug : spdlog::level::info);
    // Everything after the command belongs to it (its own options included); an unknown option
    // before the command is a usage error.
    std::vector<std::string> args = po::collect_unrecognized(parsed.options, po::include_positional);
    if (args.empty() || args.front() != command)
      throw po::error("unknown option '" + (args.empty() ? command : args.front()) + "' before the command");
    args.erase(args.begin());

    if (command == "fetch") return run_fetch(args);
    if (command == "report") return cmd_report(args);
    if (command == "validate") {
      if (args.size() != 1) throw po::error("validate takes one plugin file");
      return cmd_validate(args[0]);
    }
    Registry registry;
    load_plugins(registry, plugin_folders(plugin_dirs, !no_defaults));
    if (command == "list") {
      if (!args.empty()) throw po::error("list takes no arguments");
      return cmd_list(registry);
    }
    if (command == "describe") {
      if (args.size() != 1) throw po::error("describe takes one plugin name");
      return cmd_describe(registry, args[0]);
    }
    if (command == "run") return cmd_run(registry, args, quiet, command_line);
    if (command == "sweep") return cmd_sweep(registry, args, plugin_folders(plugin_dirs, !no_defaults));
    if (command == "evaluate") return cmd_evaluate(registry, args, quiet, command_line);
    throw po::error("unknown command '" + command + "' (see scssl-host --help)");
  } catch (const po::error& e) {
    spdlog::error("{}", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
