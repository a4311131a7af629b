// scssl-fetch: downloads and checks one catalog data set (docs/datasets.md). `scssl-host fetch ...`
// forwards here with the same words.
#include "cli.hpp"
#include "fetch.hpp"

namespace po = boost::program_options;
using namespace scssl;

namespace {

const char* kUsage =
    "Usage: scssl-fetch MANIFEST.toml [--into DIR] [--force]\n"
    "\n"
    "Downloads the file of one catalog data set (datasets/*.toml), checks its SHA-256 and that it\n"
    "opens with the manifest's keys, and writes <name>.dataset.toml beside it for run configs to\n"
    "include (docs/datasets.md).";

int fetch_command(const std::vector<std::string>& args) {
  std::string manifest, into;
  bool force = false;
  po::options_description opts("fetch options");
  opts.add_options()("manifest", po::value(&manifest)->required(),
                     "the data set's manifest (TOML)")(
      "into", po::value(&into), "folder for the file (default: <manifest folder>/<name>)")(
      "force", po::bool_switch(&force), "replace a file that is there but differs");
  po::positional_options_description pos;
  pos.add("manifest", 1);
  po::variables_map vm;
  if (!cli::parse_command(args, opts, pos, vm, kUsage)) return 0;
  return fetch::fetch_dataset(manifest, into, force);
}

}  // namespace

int main(int argc, char** argv) { return cli::tool_main(argc, argv, "scssl-fetch", fetch_command); }
