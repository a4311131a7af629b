#include "registry.hpp"

#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "plugin_file.hpp"
#include "scssl/abi_sized.hpp"
#include "scssl/fingerprint.hpp"

namespace fs = std::filesystem;

namespace scssl::host {

BuildFingerprint host_fingerprint() {
  const scssl_build_fingerprint own = SCSSL_BUILD_FINGERPRINT;
  return {own.torch_version, own.cxx_stdlib, own.compiler};
}

ParamSet LoadedPlugin::default_params() const { return ParamSet::defaults(meta.params, label()); }

std::string LoadedPlugin::label() const {
  return std::string(kind_name(kind())) + " plugin '" + name() + "'";
}

namespace {

// The functions every table of the kind must offer, within the size its plugin declared.
std::string table_problem(scssl_kind kind, const void* table) {
  auto instance_ok = [](const scssl_instance_table& t) { return t.create && t.destroy; };
  switch (kind) {
    case SCSSL_KIND_DATASET: {
      const auto t = read_sized(static_cast<const scssl_dataset_table*>(table));
      return t.load ? "" : "its dataset table has no load function";
    }
    case SCSSL_KIND_AUGMENTATION: {
      const auto t = read_sized(static_cast<const scssl_augmentation_table*>(table));
      return instance_ok(t.instance) && t.prepare && t.apply
                 ? ""
                 : "its augmentation table lacks create, destroy, prepare or apply";
    }
    case SCSSL_KIND_METHOD: {
      const auto t = read_sized(static_cast<const scssl_method_table*>(table));
      return instance_ok(t.instance) && t.fit && t.embed && t.save && t.load
                 ? ""
                 : "its method table lacks create, destroy, fit, embed, save or load";
    }
    case SCSSL_KIND_EVALUATOR: {
      const auto t = read_sized(static_cast<const scssl_evaluator_table*>(table));
      return instance_ok(t.instance) && t.evaluate
                 ? ""
                 : "its evaluator table lacks create, destroy or evaluate";
    }
  }
  return "unknown plugin kind";
}

// The first line where two notes differ, as "note: ... / code: ...".
std::string first_difference(const std::string& note, const std::string& code) {
  std::istringstream a(note), b(code);
  std::string la, lb;
  while (true) {
    const bool more_a = static_cast<bool>(std::getline(a, la));
    const bool more_b = static_cast<bool>(std::getline(b, lb));
    if (!more_a && !more_b) return "";
    if (!more_a) la = "(nothing)";
    if (!more_b) lb = "(nothing)";
    if (la != lb) return "the note has '" + la + "' where the code has '" + lb + "'";
  }
}

}  // namespace

const PluginCode& LoadedPlugin::code() const {
  std::lock_guard<std::mutex> lock(loading_);
  if (code_) return *code_;
  auto refuse = [&](const std::string& reason) { return InvalidArgument(path + ": " + reason); };
  auto loaded = std::make_unique<PluginCode>();
  try {
    // rtld_now: a plugin with unresolved symbols is refused now, not when a function is called.
    loaded->library = std::make_shared<boost::dll::shared_library>(
        fs::path(path), boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    throw refuse(std::string("cannot be loaded as a shared library (") + e.what() + ")");
  }
  if (!loaded->library->has(SCSSL_ENTRY_POINT))
    throw refuse(std::string("has no entry point '") + SCSSL_ENTRY_POINT +
                 "'; is it built with SCSSL_PLUGIN?");
  loaded->info = loaded->library->get<const scssl_plugin_info*()>(SCSSL_ENTRY_POINT)();
  PluginMeta live;
  try {
    live = meta_from_info(loaded->info);
  } catch (const std::exception& e) {
    throw refuse(e.what());
  }
  const std::string difference = first_difference(meta_to_note(meta), meta_to_note(live));
  if (!difference.empty())
    throw refuse("its plugin note does not match its code (" + difference +
                 "); rebuild it so that scssl_add_plugin() writes the note again");
  loaded->table = loaded->info->table;
  if (std::string reason = table_problem(kind(), loaded->table); !reason.empty())
    throw refuse(reason);
  code_ = std::move(loaded);
  return *code_;
}

std::string check_plugin_file(const std::string& path, PluginMeta& meta) {
  PluginFileFacts facts;
  try {
    facts = inspect_plugin_file(path);
  } catch (const Error& e) {
    return e.what();
  }
  if (!facts.problem.empty()) return facts.problem;
  if (!facts.elf) return "is not a shared library (it does not start with an ELF header)";
  if (!facts.shared_library) return "is an ELF file but not a shared library";
  if (!facts.has_note)
    return facts.exports_entry
               ? std::string(
                     "has no plugin note, so it was built for scssl ABI 1 or without "
                     "scssl_add_plugin(); rebuild it against this SDK (ABI ") +
                     std::to_string(SCSSL_ABI_VERSION) + ") with scssl_add_plugin()"
               : std::string(
                     "is a shared library but not a scssl plugin (no plugin note, no "
                     "entry point '") +
                     SCSSL_ENTRY_POINT + "')";
  try {
    meta = meta_from_note(facts.note);
  } catch (const std::exception& e) {
    return std::string("its plugin note cannot be read: ") + e.what();
  }
  return meta_problem(meta, host_fingerprint());
}

void Registry::add_directory(const std::string& directory) {
  std::error_code ec;
  if (!fs::is_directory(directory, ec))
    throw InvalidArgument("plugin folder '" + directory + "' does not exist");
  folders_.push_back(fs::absolute(directory).lexically_normal().string());
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(directory, ec)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".so" || ext == ".dylib" || ext == ".dll"))
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) add_file(f.string(), folders_.back());
}

bool Registry::add_file(const std::string& path, const std::string& folder) {
  auto plugin = std::make_unique<LoadedPlugin>();
  plugin->path = fs::absolute(path).lexically_normal().string();
  plugin->folder = folder;
  if (std::string reason = check_plugin_file(path, plugin->meta); !reason.empty()) {
    refusals_.push_back(path + ": " + reason);
    return false;
  }
  auto it = by_name_.find(plugin->name());
  if (it != by_name_.end()) {
    refusals_.push_back(path + ": plugin name '" + plugin->name() + "' is already taken by " +
                        it->second->path);
    return false;
  }
  by_name_[plugin->name()] = std::move(plugin);
  return true;
}

const LoadedPlugin* Registry::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second.get();
}

const LoadedPlugin& Registry::get(const std::string& name, scssl_kind kind) const {
  const LoadedPlugin* p = find(name);
  if (p != nullptr && p->kind() == kind) return *p;
  std::string available;
  for (const auto* q : plugins(kind)) available += (available.empty() ? "" : ", ") + q->name();
  std::string message = std::string("no ") + kind_name(kind) + " plugin named '" + name + "'";
  if (p != nullptr) message += " ('" + name + "' is a " + kind_name(p->kind()) + " plugin)";
  message += available.empty() ? "; none is loaded" : "; available: " + available;
  if (p == nullptr) {
    std::string searched;
    for (const auto& f : folders_) searched += (searched.empty() ? "" : ", ") + f;
    message +=
        ". Plugins are looked up in --plugins DIR, $SCSSL_PLUGIN_PATH and the folder next "
        "to scssl-host" +
        (searched.empty() ? std::string(" (no folder was searched)")
                          : " (searched: " + searched + ")");
    if (!refusals_.empty())
      message += "; " + std::to_string(refusals_.size()) +
                 " file(s) there were refused (see `scssl-host list`)";
  }
  throw InvalidArgument(message);
}

std::vector<const LoadedPlugin*> Registry::plugins(scssl_kind kind) const {
  std::vector<const LoadedPlugin*> out;
  for (const auto& [name, p] : by_name_)
    if (p->kind() == kind) out.push_back(p.get());
  return out;
}

std::vector<const LoadedPlugin*> Registry::all() const {
  std::vector<const LoadedPlugin*> out;
  for (const auto& [name, p] : by_name_) out.push_back(p.get());
  return out;
}

}  // namespace scssl::host
