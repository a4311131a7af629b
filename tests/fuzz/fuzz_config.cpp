// libFuzzer target for the run-config loader (host/src/config.cpp, docs/config-reference.md):
// whatever the bytes of a config file, load_run_config returns a configuration or throws one
// scssl::Error; never a crash, undefined behaviour or another exception. A configuration it
// accepts must survive a round trip: its resolved TOML (what config.resolved.toml holds) loads
// again to the same resolved TOML. The plugins' schemas come from their notes (nothing of a plugin
// runs), read from the folder in $SCSSL_FUZZ_PLUGINS; the shipped configs are copied next to the
// input so that its `include`s resolve. Built and run by tools/fuzz.sh.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "config.hpp"
#include "registry.hpp"

namespace fs = std::filesystem;
using scssl::host::ConfigUse;
using scssl::host::load_run_config;
using scssl::host::Registry;

namespace {

Registry g_registry;
fs::path g_input, g_resolved;

void require(bool ok) {
  if (!ok) __builtin_trap();
}

void write(const fs::path& path, const char* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data, static_cast<std::streamsize>(size));
  require(static_cast<bool>(out));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* plugins = std::getenv("SCSSL_FUZZ_PLUGINS");
  const char* configs = std::getenv("SCSSL_FUZZ_CONFIGS");
  if (!plugins || !configs) {
    std::cerr << "fuzz_config needs SCSSL_FUZZ_PLUGINS (a folder of built plugins) and "
                 "SCSSL_FUZZ_CONFIGS (the repository's configs/ folder); tools/fuzz.sh sets both\n";
    std::exit(2);
  }
  g_registry.add_directory(plugins);
  const char* tmp = std::getenv("TMPDIR");
  const fs::path work =
      fs::path(tmp ? tmp : "/tmp") / ("scssl-fuzz-config-" + std::to_string(getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  fs::copy(configs, work / "configs", fs::copy_options::recursive);
  g_input = work / "configs" / "experiments" / "fuzz-input.toml";
  g_resolved = work / "configs" / "experiments" / "fuzz-resolved.toml";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write(g_input, reinterpret_cast<const char*>(data), size);
  for (ConfigUse use : {ConfigUse::Run, ConfigUse::Evaluate}) {
    std::string resolved;
    try {
      resolved = load_run_config(g_input.string(), {}, g_registry, use).resolved_toml();
    } catch (const scssl::Error&) {
      continue;
    }
    write(g_resolved, resolved.data(), resolved.size());
    // Any refusal of our own output is a bug, so nothing is caught here.
    require(load_run_config(g_resolved.string(), {}, g_registry, use).resolved_toml() == resolved);
  }
  return 0;
}
