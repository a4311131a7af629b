#include "locations.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace scssl::host {

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
    for (const fs::path& candidate :
         {exe_dir / ".." / "plugins", exe_dir / ".." / SCSSL_PLUGIN_INSTALL_DIR})
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

std::string find_program(const std::string& name) {
  std::error_code ec;
  const fs::path beside = fs::read_symlink("/proc/self/exe", ec).parent_path() / name;
  if (!ec && access(beside.c_str(), X_OK) == 0) return beside.string();
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string d; std::getline(dirs, d, ':');)
    if (!d.empty() && access((fs::path(d) / name).c_str(), X_OK) == 0)
      return (fs::path(d) / name).string();
  return "";
}

}  // namespace scssl::host
