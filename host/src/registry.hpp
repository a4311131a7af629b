// The plugin registry: finds plugin libraries and judges each by its plugin note (ABI version,
// build fingerprint, kind, name, parameter schema, metrics) before any of its code runs; a broken
// file is refused with one line while the rest still load. A plugin's code is loaded on first
// use (LoadedPlugin::code()), so `list` and `describe` never run it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "scssl/abi.h"
#include "scssl/params.hpp"
#include "scssl/plugin_meta.hpp"

namespace boost::dll {
class shared_library;
}

namespace scssl::host {

using scssl::kind_name;

// A plugin's code once loaded: the library (kept loaded while anything holds it), the description
// its entry point returned and its function table, checked against the note.
struct PluginCode {
  std::shared_ptr<boost::dll::shared_library> library;
  const scssl_plugin_info* info = nullptr;
  const void* table = nullptr;
};

class LoadedPlugin {
 public:
  std::string path;    // absolute path of the library
  std::string folder;  // the plugin folder it was found in ("" for a single file)
  PluginMeta meta;     // from the plugin note, checked

  const std::string& name() const { return meta.name; }
  scssl_kind kind() const { return static_cast<scssl_kind>(meta.kind); }
  uint64_t requirements() const { return meta.requirements; }
  // The parameter schema's defaults (checked when the plugin was accepted).
  ParamSet default_params() const;
  // "<kind> plugin '<name>'", for messages.
  std::string label() const;
  // Loads the library on first use (its static initialisers and entry point run then). Throws
  // InvalidArgument naming the file when it cannot be loaded, its code does not match its note,
  // or its function table lacks a function.
  const PluginCode& code() const;

 private:
  mutable std::mutex loading_;
  mutable std::unique_ptr<PluginCode> code_;
};

class Registry {
 public:
  // Adds every shared library in a folder (not recursive, sorted by file name). A missing folder
  // is an InvalidArgument error; a broken file inside it is only refused.
  void add_directory(const std::string& directory);
  // Adds one file; returns false and records the refusal when it is not an acceptable plugin.
  bool add_file(const std::string& path, const std::string& folder = "");

  const LoadedPlugin* find(const std::string& name) const;
  // The plugin of that name and kind, or InvalidArgument naming what is available and where
  // plugins were looked for.
  const LoadedPlugin& get(const std::string& name, scssl_kind kind) const;
  std::vector<const LoadedPlugin*> plugins(scssl_kind kind) const;
  std::vector<const LoadedPlugin*> all() const;

  // One line per refused file: "<file>: <reason>".
  const std::vector<std::string>& refusals() const { return refusals_; }
  const std::vector<std::string>& folders() const { return folders_; }

 private:
  std::map<std::string, std::unique_ptr<LoadedPlugin>> by_name_;
  std::vector<std::string> refusals_;
  std::vector<std::string> folders_;
};

// This host's build fingerprint (LibTorch, C++ library, compiler).
BuildFingerprint host_fingerprint();

// Why a file is not an acceptable plugin, judged from its bytes alone ("" if it is), with its
// description in `meta`. Nothing of the file runs.
std::string check_plugin_file(const std::string& path, PluginMeta& meta);

}  // namespace scssl::host
