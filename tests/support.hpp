// Helpers shared by the test suites: the plugin registry of this build, data files, subprocesses.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "adapters.hpp"
#include "registry.hpp"
#include "scssl/anndata/anndata.hpp"
#include "scssl/anndata/hdf5.hpp"  // for suites that edit fixture files directly (test_cli)

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

// A dense anndata::Matrix as a float32 [rows, cols] tensor (a copy).
inline torch::Tensor to_tensor(const anndata::Matrix& m) {
  torch::Tensor t = torch::empty({m.rows, m.cols}, torch::kFloat32);
  std::copy(m.values.begin(), m.values.end(), t.data_ptr<float>());
  return t;
}

// obsm/<key> of an .h5ad as float32 [n, d].
inline torch::Tensor read_obsm(const std::string& path, const std::string& key) {
  return to_tensor(anndata::read_obsm(path, key));
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The message of the scssl::Error `fn` throws, checking its status; "(no error)" if none.
inline std::string error_of(const std::function<void()>& fn,
                            scssl_status status = SCSSL_ERR_BAD_DATA) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    return e.what();
  }
  return "(no error)";
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

// The scssl-host of this build with its plugin folder, then `args` (a shell command line).
inline std::string host_command(const std::string& args) {
  return std::string(SCSSL_TEST_HOST) + " --plugins " + SCSSL_TEST_PLUGIN_DIR + " " + args;
}

// `scssl-host --quiet run CONFIG --output OUTPUT SETS` with CONFIG relative to the repository;
// returns the run folder ("" and a test failure when the run fails).
inline std::string run_config(const std::string& config, const std::string& output,
                              const std::string& sets) {
  auto r = run_command(
      host_command("--quiet run " + repo_file(config) + " --output " + output + " " + sets));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  return std::regex_search(r.output, m, std::regex("run folder: (\\S+)")) ? m[1].str() : "";
}

// A copy of a .h5ad file of the repository with a CSR X whose values (X/data) `edit` changes; it
// also gets X/indptr, which says where each cell's values are, and X/indices, their features.
using XEdit = std::function<void(std::vector<float>& data, const std::vector<int64_t>& indptr,
                                 const std::vector<int64_t>& indices)>;
inline std::string edited_copy(
    const std::string& name, const XEdit& edit,
    const std::string& source = "tests/data/reference/triana_rna_adt.h5ad") {
  const std::string path = temp_dir(name) + "/" + name + ".h5ad";
  std::filesystem::copy_file(repo_file(source), path,
                             std::filesystem::copy_options::overwrite_existing);
  h5::File f = h5::File::open(path, h5::File::Mode::ReadWrite);
  const h5::Group x = f.root().group("X");
  std::vector<float> data = x.dataset("data").read_vector<float>();
  edit(data, x.dataset("indptr").read_vector<int64_t>(),
       x.dataset("indices").read_vector<int64_t>());
  x.remove("data");
  x.write("data", h5::NumType::Float32, data.data(), {static_cast<int64_t>(data.size())});
  f.flush();
  return path;
}

// The embedding of a run folder (embedding.h5).
inline torch::Tensor run_embedding(const std::string& run_dir) {
  return to_tensor(anndata::read_embedding_h5(run_dir + "/embedding.h5"));
}

// One series of a run's history.csv (e.g. "loss", one value per epoch).
inline std::vector<double> run_series(const std::string& run_dir,
                                      const std::string& name = "loss") {
  std::vector<double> out;
  std::istringstream in(read_text(run_dir + "/history.csv"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + ",", 0) == 0) out.push_back(std::stod(line.substr(line.rfind(',') + 1)));
  return out;
}

}  // namespace scssl::test
