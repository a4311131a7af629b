// The plugin registry: finds plugin libraries, reads their self-description without creating
// anything, and refuses broken ones with one line each while the rest still load.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "scssl/abi.h"
#include "scssl/params.hpp"

namespace boost::dll {
class shared_library;
}

namespace scssl::host {

const char* kind_name(scssl_kind kind);  // "dataset", "augmentation", "method", "evaluator"

// One loaded plugin library. The library stays loaded while anything holds `library`.
struct LoadedPlugin {
  std::string path;
  const scssl_plugin_info* info = nullptr;
  std::shared_ptr<boost::dll::shared_library> library;

  std::string name() const { return info->name; }
  scssl_kind kind() const { return static_cast<scssl_kind>(info->kind); }
  // The parameter schema's defaults (checked when the plugin was accepted).
  ParamSet default_params() const;
  // "<kind> plugin '<name>'", for messages.
  std::string label() const;
};

class Registry {
 public:
  // Loads every shared library in a folder (not recursive, sorted by file name). A missing folder
  // is an InvalidArgument error; a broken file inside it is only refused.
  void add_directory(const std::string& directory);
  // Loads one file; returns false and records the refusal when it is not an acceptable plugin.
  bool add_file(const std::string& path);

  const LoadedPlugin* find(const std::string& name) const;
  // The plugin of that name and kind, or InvalidArgument naming what is available.
  const LoadedPlugin& get(const std::string& name, scssl_kind kind) const;
  std::vector<const LoadedPlugin*> plugins(scssl_kind kind) const;
  std::vector<const LoadedPlugin*> all() const;

  // One line per refused file: "<file>: <reason>".
  const std::vector<std::string>& refusals() const { return refusals_; }

 private:
  std::map<std::string, std::unique_ptr<LoadedPlugin>> by_name_;
  std::vector<std::string> refusals_;
};

// Checks a plugin's self-description: magic, ABI version, kind, name, table, parameter schema.
// Returns "" if acceptable, else the reason (one sentence naming both versions where relevant).
std::string check_info(const scssl_plugin_info* info);

}  // namespace scssl::host
