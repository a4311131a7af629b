#include "registry.hpp"

#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <filesystem>
#include <set>

namespace fs = std::filesystem;

namespace scssl::host {

const char* kind_name(scssl_kind kind) {
  switch (kind) {
    case SCSSL_KIND_DATASET: return "dataset";
    case SCSSL_KIND_AUGMENTATION: return "augmentation";
    case SCSSL_KIND_METHOD: return "method";
    case SCSSL_KIND_EVALUATOR: return "evaluator";
  }
  return "unknown";
}

ParamSet LoadedPlugin::default_params() const {
  return ParamSet::defaults(info->params, info->n_params, label());
}

std::string LoadedPlugin::label() const {
  return std::string(kind_name(kind())) + " plugin '" + name() + "'";
}

namespace {

bool valid_name(const char* name) {
  if (name == nullptr || name[0] == '\0') return false;
  for (const char* c = name; *c; ++c)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return false;
  return true;
}

bool nonempty(const char* s) { return s != nullptr && s[0] != '\0'; }

std::string check_table(const scssl_plugin_info* info) {
  auto instance_ok = [](const scssl_instance_table& t) { return t.create && t.destroy; };
  switch (info->kind) {
    case SCSSL_KIND_DATASET: {
      auto* t = static_cast<const scssl_dataset_table*>(info->table);
      return t->load ? "" : "its dataset table has no load function";
    }
    case SCSSL_KIND_AUGMENTATION: {
      auto* t = static_cast<const scssl_augmentation_table*>(info->table);
      return instance_ok(t->instance) && t->prepare && t->apply
                 ? ""
                 : "its augmentation table lacks create, destroy, prepare or apply";
    }
    case SCSSL_KIND_METHOD: {
      auto* t = static_cast<const scssl_method_table*>(info->table);
      return instance_ok(t->instance) && t->fit && t->embed && t->save && t->load
                 ? ""
                 : "its method table lacks create, destroy, fit, embed, save or load";
    }
    case SCSSL_KIND_EVALUATOR: {
      auto* t = static_cast<const scssl_evaluator_table*>(info->table);
      if (!instance_ok(t->instance) || !t->evaluate)
        return "its evaluator table lacks create, destroy or evaluate";
      if (t->n_metrics <= 0 || t->metrics == nullptr) return "it declares no metrics";
      std::set<std::string> seen;
      for (int64_t i = 0; i < t->n_metrics; ++i) {
        const scssl_metric_spec& m = t->metrics[i];
        if (!valid_name(m.name)) return "metric " + std::to_string(i) + " has an invalid name";
        if (!seen.insert(m.name).second)
          return "metric '" + std::string(m.name) + "' is declared twice";
        if (m.group < SCSSL_GROUP_BIO || m.group > SCSSL_GROUP_OTHER)
          return "metric '" + std::string(m.name) + "' has unknown group " +
                 std::to_string(m.group);
      }
      return "";
    }
  }
  return "unknown plugin kind " + std::to_string(info->kind);
}

}  // namespace

std::string check_info(const scssl_plugin_info* info) {
  if (info == nullptr) return "its entry point returned no plugin description";
  if (info->magic != SCSSL_MAGIC) return "its entry point does not return a scssl plugin description";
  if (info->abi_version != SCSSL_ABI_VERSION)
    return "built for scssl ABI version " + std::to_string(info->abi_version) +
           ", this host uses version " + std::to_string(SCSSL_ABI_VERSION) +
           "; rebuild the plugin against this SDK";
  if (info->kind < SCSSL_KIND_DATASET || info->kind > SCSSL_KIND_EVALUATOR)
    return "unknown plugin kind " + std::to_string(info->kind);
  if (!valid_name(info->name))
    return "plugin name '" + std::string(info->name ? info->name : "") +
           "' is not made of lower-case letters, digits and '_'";
  if (!nonempty(info->version)) return "plugin '" + std::string(info->name) + "' has no version";
  if (!nonempty(info->summary)) return "plugin '" + std::string(info->name) + "' has no summary";
  if (info->table == nullptr) return "plugin '" + std::string(info->name) + "' has no function table";
  if (info->n_params < 0 || (info->n_params > 0 && info->params == nullptr))
    return "plugin '" + std::string(info->name) + "' has a malformed parameter schema";
  for (int64_t i = 0; i < info->n_params; ++i) {
    const scssl_param_spec& p = info->params[i];
    if (!valid_name(p.name))
      return "parameter " + std::to_string(i) + " of '" + info->name + "' has an invalid name";
    if (p.type < SCSSL_PARAM_BOOL || p.type > SCSSL_PARAM_STRING_LIST)
      return "parameter '" + std::string(p.name) + "' has unknown type " + std::to_string(p.type);
  }
  try {
    ParamSet::defaults(info->params, info->n_params, std::string("plugin '") + info->name + "'");
  } catch (const std::exception& e) {
    return e.what();
  }
  return check_table(info);
}

void Registry::add_directory(const std::string& directory) {
  std::error_code ec;
  if (!fs::is_directory(directory, ec))
    throw InvalidArgument("plugin folder '" + directory + "' does not exist");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(directory, ec)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".so" || ext == ".dylib" || ext == ".dll"))
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) add_file(f.string());
}

bool Registry::add_file(const std::string& path) {
  auto refuse = [&](const std::string& reason) {
    refusals_.push_back(path + ": " + reason);
    return false;
  };
  auto plugin = std::make_unique<LoadedPlugin>();
  plugin->path = fs::absolute(path).lexically_normal().string();
  try {
    // rtld_now: a plugin with unresolved symbols is refused now, not when a function is called.
    plugin->library = std::make_shared<boost::dll::shared_library>(
        fs::path(path), boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    return refuse(std::string("cannot be loaded as a shared library (") + e.what() + ")");
  }
  if (!plugin->library->has(SCSSL_ENTRY_POINT))
    return refuse(std::string("has no entry point '") + SCSSL_ENTRY_POINT +
                  "'; is it built with SCSSL_PLUGIN?");
  auto entry = plugin->library->get<const scssl_plugin_info*()>(SCSSL_ENTRY_POINT);
  plugin->info = entry();
  if (std::string reason = check_info(plugin->info); !reason.empty()) return refuse(reason);
  auto it = by_name_.find(plugin->name());
  if (it != by_name_.end())
    return refuse("plugin name '" + plugin->name() + "' is already taken by " + it->second->path);
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
  message += available.empty() ? "; none is loaded (check --plugins)"
                               : "; available: " + available;
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
