// scssl-sweep: runs a sweep file's grid of runs (docs/sweeps.md). `scssl-host sweep ...` forwards
// here with the same words.
#include <iostream>

#include "cli.hpp"
#include "locations.hpp"
#include "sweep.hpp"

namespace po = boost::program_options;
using namespace scssl;

namespace {

const char* kUsage =
    "Usage: scssl-sweep SWEEP.toml [--executor local|slurm] [--workers N] [--dry-run] [--output "
    "DIR]\n"
    "                   [--plugins DIR]... [--no-default-plugins]\n"
    "\n"
    "Runs a grid of runs (axes x seeds), each as one `scssl-host run` process on this machine or\n"
    "as a task of a Slurm job array. Every run's config is checked before any run starts; runs\n"
    "that finished before are skipped. Writes <output>/<name>/ with sweep.json and results.csv\n"
    "(docs/sweeps.md, docs/run-folder.md).";

int sweep_command(const std::vector<std::string>& args) {
  po::options_description opts("sweep options");
  std::string file;
  std::vector<std::string> plugin_dirs;
  bool no_defaults = false;
  sweep::SweepOptions options;
  opts.add_options()("sweep", po::value(&file)->required(), "sweep file (TOML)")(
      "executor", po::value(&options.executor), "local or slurm (overrides the file)")(
      "workers", po::value(&options.workers), "local: runs at once (0: one per core)")(
      "dry-run", po::bool_switch(&options.dry_run),
      "plan and check the runs only (slurm: write the job script)")(
      "output,o", po::value(&options.output_dir), "folder for the sweep folder")(
      "plugins,p", po::value(&plugin_dirs)->composing(),
      "a folder of plugin libraries (repeatable)")("no-default-plugins",
                                                   po::bool_switch(&no_defaults),
                                                   "ignore the plugin folder next to the program");
  po::positional_options_description pos;
  pos.add("sweep", 1);
  po::variables_map vm;
  if (!cli::parse_command(args, opts, pos, vm, kUsage)) return 0;

  options.plugin_dirs = host::plugin_folders(plugin_dirs, !no_defaults);
  options.host = host::find_program("scssl-host");
  if (options.host.empty())
    throw IoError(
        "scssl-sweep starts every run with scssl-host, which is neither next to this program nor "
        "on PATH");
  host::Registry registry;
  host::load_plugins(registry, options.plugin_dirs);
  const sweep::SweepOutcome outcome = sweep::run_sweep(sweep::load_sweep(file), registry, options);
  int64_t ok = 0, failed = 0, pending = 0;
  for (const auto& r : outcome.runs)
    (r.status == runfolder::RunStatus::ok       ? ok
     : r.status == runfolder::RunStatus::failed ? failed
                                                : pending)++;
  std::cout << "\n"
            << outcome.runs.size() << " runs: " << ok << " ok (" << outcome.skipped
            << " of them complete before), " << failed << " failed, " << pending << " not run\n";
  for (const auto& r : outcome.runs)
    if (r.status == runfolder::RunStatus::failed)
      std::cout << "  failed " << r.id << ": " << r.error << "\n";
  std::cout << "results: " << outcome.dir << "/results.csv\n";
  return failed > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) { return cli::tool_main(argc, argv, "scssl-sweep", sweep_command); }
