// Helpers shared by the test suites: the plugin registry of this build, data files, subprocesses.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "adapters.hpp"
#include "registry.hpp"
#include "scssl/h5.hpp"

namespace scssl::test {

// The registry over the plugins built in this tree (loaded once per test program).
inline const host::Registry& plugins() {
  static host::Registry* registry = [] {
    auto* r = new host::Registry;
    r->add_directory(SCSSL_TEST_PLUGIN_DIR);
    return r;
  }();
  return *registry;
}

inline std::string repo_file(const std::string& relative) {
  return std::string(SCSSL_SOURCE_DIR) + "/" + relative;
}

// A file of ../shared (present on development machines and in CI, not in a user's checkout);
// "" when absent, and the caller skips with a message.
inline std::string shared_file(const std::string& relative) {
  const std::string path = std::string(SCSSL_SHARED_DIR) + "/" + relative;
  return std::filesystem::exists(path) ? path : "";
}

inline CellData load_h5ad(const std::string& path, const std::string& batch_key = "batch",
                          const std::string& label_key = "cell_type") {
  host::HostServices services;
  const host::LoadedPlugin& p = plugins().get("h5ad", SCSSL_KIND_DATASET);
  ParamSet params = p.default_params();
  params.set("path", path);
  params.set("batch_key", batch_key);
  params.set("label_key", label_key);
  return host::load_dataset(p, params, services);
}

// obsm/<key> of an .h5ad as float32 [n, d].
inline torch::Tensor read_obsm(const std::string& path, const std::string& key) {
  int64_t rows = 0, cols = 0;
  std::vector<float> values = h5::read_obsm_array(path, key, rows, cols);
  return torch::from_blob(values.data(), {rows, cols}, torch::kFloat32).clone();
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its output.
inline CommandResult run_command(const std::string& command) {
  CommandResult r{-1, ""};
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// A fresh empty folder under the system temp folder, removed at the end of the test program.
inline std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("scssl-test-" + std::to_string(getpid()) + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace scssl::test
