#include "config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace scssl::host {

namespace {

class ConfigReader {
 public:
  explicit ConfigReader(std::string file) : file_(std::move(file)) {}

  // Names where the offending value came from: its own file and line (an included file's too),
  // or the command line for a value given with --set.
  [[noreturn]] void fail(const std::string& key, const toml::node* node,
                         const std::string& message) const {
    std::string where = file_.empty() ? std::string("config") : file_;
    if (node && node->source().path && node->source().begin.line > 0)
      where = *node->source().path + ":" + std::to_string(node->source().begin.line);
    else if (node)
      where = "--set";  // override nodes carry no source file
    throw InvalidArgument(where + ": " + (key.empty() ? "" : "'" + key + "' ") + message);
  }

  ParamValue value_of(const std::string& key, const toml::node& node) const {
    if (auto v = node.as_boolean()) return v->get();
    if (auto v = node.as_integer()) return v->get();
    if (auto v = node.as_floating_point()) return v->get();
    if (auto v = node.as_string()) return v->get();
    if (auto arr = node.as_array()) {
      // A list of numbers is a float list; anything else must be a list of strings.
      const bool numbers =
          !arr->empty() && std::all_of(arr->begin(), arr->end(), [](const toml::node& item) {
            return item.is_integer() || item.is_floating_point();
          });
      if (numbers) {
        FloatList items;
        for (const auto& item : *arr)
          items.push_back(item.is_integer() ? static_cast<double>(item.as_integer()->get())
                                            : item.as_floating_point()->get());
        return items;
      }
      StringList items;
      for (const auto& item : *arr) {
        if (auto s = item.as_string())
          items.push_back(s->get());
        else
          fail(key, &item, "must be a list of strings or a list of numbers");
      }
      return items;
    }
    fail(key, &node, "has a value of an unsupported type (use a bool, number, string or list)");
  }

  template <class T>
  T get(const toml::table& table, const std::string& section, const std::string& key,
        T fallback) const {
    const toml::node* node = table.get(key);
    if (!node) return fallback;
    ParamValue v = value_of(section + "." + key, *node);
    if constexpr (std::is_same_v<T, double>) {
      if (auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
    }
    if constexpr (std::is_same_v<T, StringList>) {
      if (auto* one = std::get_if<std::string>(&v)) return StringList{*one};
    }
    if (auto* t = std::get_if<T>(&v)) return *t;
    fail(section + "." + key, node,
         std::string("has the wrong type (expected ") +
             (std::is_same_v<T, bool>          ? "a bool"
              : std::is_same_v<T, int64_t>     ? "an integer"
              : std::is_same_v<T, double>      ? "a number"
              : std::is_same_v<T, std::string> ? "a string"
                                               : "a list of strings") +
             ")");
  }

  // Refuses keys of a section that are not in `known` (tables listed in `subtables` are allowed).
  void only(const toml::table& table, const std::string& section,
            const std::set<std::string>& known) const {
    for (const auto& [k, node] : table) {
      const std::string key(k.str());
      if (!known.count(key)) {
        std::string list;
        for (const auto& n : known) list += (list.empty() ? "" : ", ") + n;
        fail(section.empty() ? key : section + "." + key, &node,
             "is not a known setting" + (list.empty() ? std::string() : " (known: " + list + ")"));
      }
    }
  }

  // A plugin section: `plugin = "name"` plus that plugin's parameters.
  PluginChoice plugin(const toml::table& table, const std::string& section, scssl_kind kind,
                      const Registry& registry, const std::set<std::string>& reserved,
                      const std::string& fixed_name = "") const {
    std::string name = fixed_name;
    if (name.empty()) {
      const toml::node* node = table.get("plugin");
      if (!node || !node->is_string()) fail(section + ".plugin", node, "must name a plugin");
      name = node->as_string()->get();
    }
    PluginChoice choice;
    try {
      choice.plugin = &registry.get(name, kind);
    } catch (const Error& e) {
      fail("", table.get("plugin"), "[" + section + "] " + e.what());
    }
    choice.params = choice.plugin->default_params();
    for (const auto& [k, node] : table) {
      const std::string key(k.str());
      if (key == "plugin" || reserved.count(key)) continue;
      try {
        choice.params.set(key, value_of(section + "." + key, node));
      } catch (const InvalidArgument& e) {
        fail("", &node, e.what());
      }
    }
    try {
      choice.params.check_required();
    } catch (const InvalidArgument& e) {
      fail("", table.get("plugin"), "[" + section + "] " + e.what());
    }
    return choice;
  }

 private:
  std::string file_;
};

// Copies src into dst; tables merge key by key, anything else (arrays included) replaces.
void merge_into(toml::table& dst, const toml::table& src) {
  for (const auto& [k, node] : src) {
    toml::node* existing = dst.get(k);
    if (existing && existing->is_table() && node.is_table())
      merge_into(*existing->as_table(), *node.as_table());
    else
      dst.insert_or_assign(k, node);
  }
}

// merge_into, except that an [[augmentation]] list of src is appended to dst's instead of
// replacing it: the files of an include group (docs/config-reference.md, "include").
void merge_concatenating_augmentations(toml::table& dst, toml::table src) {
  toml::array* own = dst.get("augmentation") ? dst.get("augmentation")->as_array() : nullptr;
  const toml::array* more = src.get("augmentation") ? src.get("augmentation")->as_array() : nullptr;
  if (own && more && own->is_array_of_tables() && more->is_array_of_tables()) {
    for (const auto& entry : *more) own->push_back(entry);
    src.erase("augmentation");
  }
  merge_into(dst, src);
}

// Adds to dst what only src has (recursively); dst's own nodes stay, with their line numbers.
void fill_missing(toml::table& dst, const toml::table& src) {
  for (const auto& [k, node] : src) {
    toml::node* existing = dst.get(k);
    if (!existing)
      dst.insert(k, node);
    else if (existing->is_table() && node.is_table())
      fill_missing(*existing->as_table(), *node.as_table());
  }
}

bool is_path_key(std::string_view k) {
  return k == "path" || (k.size() > 5 && k.substr(k.size() - 5) == "_path");
}

// Relative file paths in a file's [dataset] section are relative to that file.
void anchor_dataset_paths(toml::table& file, const fs::path& dir) {
  toml::table* dataset = file["dataset"].as_table();
  if (!dataset) return;
  for (auto& [k, node] : *dataset) {
    if (!is_path_key(k.str()) || !node.is_string()) continue;
    const std::string p = node.as_string()->get();
    if (!p.empty() && fs::path(p).is_relative())
      *node.as_string() = fs::absolute(dir / p).lexically_normal().string();
  }
}

// Parses a config file with its `include = [...]` files (paths relative to the including file):
// included files apply in order, later ones over earlier ones, and the file's own settings last.
// An item that is a list of files is a group: merged in order like includes, except that their
// [[augmentation]] lists are concatenated (docs/config-reference.md, "include").
toml::table parse_with_includes(const fs::path& path, std::vector<std::string>& chain) {
  const std::string key = fs::weakly_canonical(path).string();
  if (std::find(chain.begin(), chain.end(), key) != chain.end())
    throw InvalidArgument(path.string() + ": includes itself (through " + chain.back() + ")");
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw InvalidArgument(chain.empty() ? "config file '" + path.string() + "' does not exist"
                                        : chain.back() + ": included file '" + path.string() +
                                              "' does not exist");
  toml::table own;
  try {
    own = toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    throw InvalidArgument(path.string() + ":" + std::to_string(e.source().begin.line) + ": " +
                          std::string(e.description()));
  }
  anchor_dataset_paths(own, fs::absolute(path).parent_path());
  if (const toml::node* inc = own.get("include")) {
    const std::string must = path.string() +
                             ": 'include' must be a list of file names and groups of file names "
                             "(a group: [\"a.toml\", \"b.toml\"])";
    const toml::array* items = inc->as_array();
    if (!items) throw InvalidArgument(must);
    auto included_file = [&](const toml::node& name) {
      if (!name.is_string()) throw InvalidArgument(must);
      return parse_with_includes(path.parent_path() / name.as_string()->get(), chain);
    };
    toml::table included;
    chain.push_back(key);
    for (const auto& item : *items) {
      const toml::array* group = item.as_array();
      if (!group) {
        merge_into(included, included_file(item));
        continue;
      }
      if (group->empty()) throw InvalidArgument(path.string() + ": 'include' has an empty group");
      toml::table merged;
      for (const auto& name : *group)
        merge_concatenating_augmentations(merged, included_file(name));
      merge_into(included, merged);
    }
    chain.pop_back();
    own.erase("include");
    fill_missing(own, included);
  }
  return own;
}

toml::table& subtable(toml::table& root, const std::string& key) {
  if (!root.contains(key)) root.insert(key, toml::table{});
  if (auto* t = root.get(key)->as_table()) return *t;
  throw InvalidArgument("override: '" + key + "' is not a section");
}

// The entry of an array of tables (`[[augmentation]]`) whose `plugin` is `name`; it must be one.
toml::table& entry_by_plugin(toml::array& entries, const std::string& section,
                             const std::string& name, const std::string& text) {
  toml::table* found = nullptr;
  for (auto& e : entries) {
    toml::table* t = e.as_table();
    if (!t || t->get("plugin") == nullptr || t->get("plugin")->value_or(std::string()) != name)
      continue;
    if (found)
      throw InvalidArgument("--set '" + text + "': several [[" + section +
                            "]] sections use plugin '" + name +
                            "'; change them in the config file");
    found = t;
  }
  if (!found)
    throw InvalidArgument("--set '" + text + "': no [[" + section + "]] section uses plugin '" +
                          name + "'");
  return *found;
}

// "a.b.c=value" -> root[a][b][c] = value (TOML syntax, or a bare string when it does not parse).
// In an array of tables the entry is named by its plugin: "augmentation.mask.fraction=0.5".
void apply_override(toml::table& root, const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw InvalidArgument("--set '" + text + "': expected section.key=value");
  const std::string path = text.substr(0, eq);
  const std::string value = text.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  toml::table* table = &root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::array* entries = table->get(parts[i]) ? table->get(parts[i])->as_array() : nullptr;
    if (entries && entries->is_array_of_tables() && i + 2 < parts.size()) {
      table = &entry_by_plugin(*entries, parts[i], parts[i + 1], text);
      ++i;
      continue;
    }
    table = &subtable(*table, parts[i]);
  }
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    parsed.insert("v", value);
  }
  table->insert_or_assign(parts.back(), *parsed.get("v"));
}

toml::array to_toml_list(const StringList& items) {
  toml::array arr;
  for (const auto& s : items) arr.push_back(s);
  return arr;
}

void put(toml::table& t, const std::string& key, const ParamValue& v) {
  switch (v.index()) {
    case 0:
      t.insert_or_assign(key, std::get<bool>(v));
      break;
    case 1:
      t.insert_or_assign(key, std::get<int64_t>(v));
      break;
    case 2:
      t.insert_or_assign(key, std::get<double>(v));
      break;
    case 3:
      t.insert_or_assign(key, std::get<std::string>(v));
      break;
    case 4:
      t.insert_or_assign(key, to_toml_list(std::get<StringList>(v)));
      break;
    default: {
      toml::array arr;
      for (double x : std::get<FloatList>(v)) arr.push_back(x);
      t.insert_or_assign(key, arr);
    }
  }
}

toml::table plugin_table(const PluginChoice& c, bool with_name) {
  toml::table t;
  if (with_name) t.insert("plugin", c.plugin->name());
  for (const auto& [k, v] : c.params.values()) put(t, k, v);
  return t;
}

PreprocessOptions read_preprocess(const ConfigReader& r, const toml::table& t,
                                  const std::string& section, PreprocessOptions o) {
  o.normalize = r.get(t, section, "normalize", o.normalize);
  o.target_sum = r.get(t, section, "target_sum", o.target_sum);
  o.log1p = r.get(t, section, "log1p", o.log1p);
  o.n_top_genes = r.get(t, section, "n_top_genes", o.n_top_genes);
  o.batch_aware = r.get(t, section, "batch_aware", o.batch_aware);
  o.scale = r.get(t, section, "scale", o.scale);
  o.scale_max = r.get(t, section, "scale_max", o.scale_max);
  if (!(o.target_sum > 0)) r.fail(section + ".target_sum", t.get("target_sum"), "must be positive");
  if (o.n_top_genes < 0)
    r.fail(section + ".n_top_genes", t.get("n_top_genes"), "must be 0 (all) or more");
  if (!(o.scale_max > 0)) r.fail(section + ".scale_max", t.get("scale_max"), "must be positive");
  return o;
}

// evaluation.query_modality = "predicted" needs a query, and a model of two modalities that can
// embed with its RNA encoder alone and with both (docs/evaluation.md, "The query with a predicted
// modality").
void check_predicted_query_modality(const ConfigReader& r, const toml::node* node,
                                    const RunConfig& cfg) {
  const std::string what = "is \"predicted\", which ";
  if (!cfg.holds_out_query())
    r.fail("evaluation.query_modality", node,
           what + "needs evaluation.protocol = \"query_mapping\" (a held-out query)");
  const ParamSet& p = cfg.method.params;
  if (!p.has("multimodal") || !p.has("predict_only_rna"))
    r.fail("evaluation.query_modality", node,
           what +
               "needs a method with the parameters 'multimodal' and 'predict_only_rna' (the "
               "seven generic SSL methods and concerto have them); method '" +
               cfg.method.plugin->name() + "' lacks them");
  if (!p.get_bool("multimodal"))
    r.fail("evaluation.query_modality", node,
           what + "needs a model of two modalities: set method.multimodal = true");
  if (p.get_bool("predict_only_rna"))
    r.fail("evaluation.query_modality", node,
           what + "embeds the query through both encoders: set method.predict_only_rna = false");
}

// A device name LibTorch knows ("cpu", "cuda", "cuda:1") that this build and machine can use.
void check_device(const ConfigReader& r, const std::string& key, const toml::node* node,
                  const std::string& text) {
  std::optional<torch::Device> device;
  try {
    device.emplace(text);
  } catch (const c10::Error&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda()))
    r.fail(key, node, "must be \"cpu\", \"cuda\" or \"cuda:N\" (got \"" + text + "\")");
  if (device->is_cpu()) return;
  if (!at::hasCUDA())
    r.fail(key, node,
           "is \"" + text +
               "\", but this build's LibTorch has no CUDA (Debian's libtorch is CPU-only); build "
               "against a CUDA LibTorch (docs/gpu.md) or use \"cpu\"");
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (count == 0 || (device->has_index() && device->index() >= count))
    r.fail(key, node,
           "is \"" + text + "\", but " +
               (count == 0 ? std::string("no CUDA device is visible")
                           : std::to_string(count) + " CUDA device(s) are visible") +
               " (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
}

const std::set<std::string> kPreprocessKeys = {
    "normalize", "target_sum", "log1p", "n_top_genes", "batch_aware", "scale", "scale_max"};

toml::table preprocess_table(const PreprocessOptions& o) {
  return toml::table{
      {"normalize", o.normalize},     {"target_sum", o.target_sum},   {"log1p", o.log1p},
      {"n_top_genes", o.n_top_genes}, {"batch_aware", o.batch_aware}, {"scale", o.scale},
      {"scale_max", o.scale_max}};
}

}  // namespace

const PreprocessOptions& RunConfig::preprocess_for(const std::string& modality) const {
  auto it = preprocess_by_modality.find(modality);
  return it == preprocess_by_modality.end() ? preprocess : it->second;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                          const Registry& registry, ConfigUse use) {
  RunConfig cfg;
  toml::table root;
  if (!path.empty()) {
    std::vector<std::string> chain;
    root = parse_with_includes(path, chain);
    cfg.config_path = fs::absolute(path).lexically_normal().string();
    cfg.config_dir = fs::path(cfg.config_path).parent_path().string();
  } else {
    cfg.config_dir = fs::current_path().string();
  }
  for (const auto& o : overrides) apply_override(root, o);

  ConfigReader r(path);
  r.only(root, "",
         {"run", "dataset", "preprocess", "method", "train", "augmentation", "evaluation"});
  static const toml::table empty;
  auto section = [&](const std::string& name) -> const toml::table& {
    const toml::node* node = root.get(name);
    if (!node) return empty;
    if (!node->is_table()) r.fail(name, node, "must be a section ([" + name + "])");
    return *node->as_table();
  };

  const toml::table& run = section("run");
  r.only(
      run, "run",
      {"name", "output_dir", "seed", "threads", "write_h5ad", "save_model", "isolate", "device"});
  cfg.name = r.get(run, "run", "name", cfg.name);
  if (cfg.name.empty() || cfg.name.find('/') != std::string::npos || cfg.name[0] == '.')
    r.fail("run.name", run.get("name"),
           "must be a plain folder name (no '/', not starting with '.')");
  cfg.output_dir = r.get(run, "run", "output_dir", cfg.output_dir);
  const int64_t seed = r.get(run, "run", "seed", int64_t{0});
  if (seed < 0) r.fail("run.seed", run.get("seed"), "must not be negative");
  cfg.seed = static_cast<uint64_t>(seed);
  cfg.threads = static_cast<int>(r.get(run, "run", "threads", int64_t{0}));
  if (cfg.threads < 0)
    r.fail("run.threads", run.get("threads"), "must be 0 (default: one OpenMP thread) or more");
  cfg.write_h5ad = r.get(run, "run", "write_h5ad", cfg.write_h5ad);
  cfg.save_model = r.get(run, "run", "save_model", cfg.save_model);
  if (run.get("isolate")) cfg.isolate = r.get(run, "run", "isolate", false);
  cfg.device = r.get(run, "run", "device", cfg.device);
  check_device(r, "run.device", run.get("device"), cfg.device);
  cfg.neighbors.device = torch::Device(cfg.device);

  if (!root.get("dataset")) r.fail("dataset", nullptr, "section is missing");
  cfg.dataset = r.plugin(section("dataset"), "dataset", SCSSL_KIND_DATASET, registry, {});
  // Paths from files were anchored to their file when read; those given with --set are
  // relative to the working directory.
  for (const auto& [k, v] : cfg.dataset.params.values()) {
    if (!is_path_key(k) || v.index() != 3) continue;
    const std::string& p = std::get<std::string>(v);
    if (!p.empty() && fs::path(p).is_relative())
      cfg.dataset.params.set(k, fs::absolute(p).lexically_normal().string());
  }

  const toml::table& pre = section("preprocess");
  std::set<std::string> pre_known = kPreprocessKeys;
  for (const auto& [k, node] : pre)
    if (node.is_table()) pre_known.insert(std::string(k.str()));
  r.only(pre, "preprocess", pre_known);
  cfg.preprocess = read_preprocess(r, pre, "preprocess", cfg.preprocess);
  for (const auto& [k, node] : pre) {
    if (!node.is_table()) continue;
    const std::string modality(k.str());
    r.only(*node.as_table(), "preprocess." + modality, kPreprocessKeys);
    cfg.preprocess_by_modality[modality] =
        read_preprocess(r, *node.as_table(), "preprocess." + modality, cfg.preprocess);
  }

  // Scoring stored embeddings needs no method: a run config's training sections are ignored.
  if (use == ConfigUse::Evaluate) {
    root.erase("method");
    root.erase("train");
    root.erase("augmentation");
  }
  if (use == ConfigUse::Run) {
    if (!root.get("method")) r.fail("method", nullptr, "section is missing");
    cfg.method = r.plugin(section("method"), "method", SCSSL_KIND_METHOD, registry, {});
  }

  const toml::table& train = section("train");
  r.only(train, "train",
         {"epochs", "batch_size", "learning_rate", "weight_decay", "schedule", "step_size", "gamma",
          "device", "checkpoint_every", "resume_from"});
  TrainOptions& t = cfg.train;
  t.epochs = r.get(train, "train", "epochs", t.epochs);
  t.batch_size = r.get(train, "train", "batch_size", t.batch_size);
  t.learning_rate = r.get(train, "train", "learning_rate", t.learning_rate);
  t.weight_decay = r.get(train, "train", "weight_decay", t.weight_decay);
  const std::string schedule = r.get(train, "train", "schedule", std::string("constant"));
  if (schedule != "constant" && schedule != "step")
    r.fail("train.schedule", train.get("schedule"), "must be \"constant\" or \"step\"");
  t.step_schedule = schedule == "step";
  t.step_size = r.get(train, "train", "step_size", t.step_size);
  t.gamma = r.get(train, "train", "gamma", t.gamma);
  t.device = r.get(train, "train", "device", cfg.device);
  check_device(r, "train.device", train.get("device"), t.device);
  t.checkpoint_every = r.get(train, "train", "checkpoint_every", t.checkpoint_every);
  t.resume_from = r.get(train, "train", "resume_from", t.resume_from);
  if (!t.resume_from.empty() && fs::path(t.resume_from).is_relative())
    t.resume_from = fs::absolute(t.resume_from).lexically_normal().string();
  if (t.epochs < 0) r.fail("train.epochs", train.get("epochs"), "must not be negative");
  if (t.batch_size < 2) r.fail("train.batch_size", train.get("batch_size"), "must be at least 2");
  if (!(t.learning_rate > 0))
    r.fail("train.learning_rate", train.get("learning_rate"), "must be positive");
  if (t.weight_decay < 0)
    r.fail("train.weight_decay", train.get("weight_decay"), "must not be negative");
  if (!(t.gamma > 0)) r.fail("train.gamma", train.get("gamma"), "must be positive");
  if (t.step_size < 1) r.fail("train.step_size", train.get("step_size"), "must be at least 1");
  if (t.checkpoint_every < 0)
    r.fail("train.checkpoint_every", train.get("checkpoint_every"), "must be 0 (none) or more");
  t.seed = cfg.seed;
  t.num_threads = cfg.threads;

  if (const toml::node* augs = root.get("augmentation")) {
    const toml::array* arr = augs->as_array();
    if (!arr || !arr->is_array_of_tables())
      r.fail("augmentation", augs, "must be a list of [[augmentation]] sections");
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::table& a = *arr->get(i)->as_table();
      const std::string s = "augmentation[" + std::to_string(i) + "]";
      AugmentationChoice choice;
      choice.choice =
          r.plugin(a, s, SCSSL_KIND_AUGMENTATION, registry, {"modality", "probability"});
      choice.modality = r.get(a, s, "modality", choice.modality);
      choice.probability = r.get(a, s, "probability", choice.probability);
      if (choice.probability < 0 || choice.probability > 1)
        r.fail(s + ".probability", a.get("probability"), "must be between 0 and 1");
      cfg.augmentations.push_back(std::move(choice));
    }
    if (use == ConfigUse::Run && !arr->empty() &&
        !(cfg.method.plugin->requirements() & SCSSL_USES_AUGMENTATIONS))
      r.fail("augmentation", augs,
             "is given, but method '" + cfg.method.plugin->name() +
                 "' does not use augmentations (it does not declare SCSSL_USES_AUGMENTATIONS); "
                 "remove the [[augmentation]] sections");
  }

  const toml::table& eval = section("evaluation");
  const StringList names = r.get(eval, "evaluation", "evaluators", StringList{});
  std::set<std::string> eval_known = {
      "evaluators",       "query_batches",           "protocol",  "query_modality",
      "query_modality_k", "unintegrated_components", "neighbors", "exact_max_cells",
      "hnsw_build",       "per_cell_scores"};
  for (const auto& n : names) eval_known.insert(n);
  // A section for an evaluator that is not in the list is most likely a list that left it out.
  for (const auto& [k, node] : eval) {
    const std::string key(k.str());
    if (node.is_table() && !eval_known.count(key))
      r.fail("evaluation." + key, &node,
             "configures evaluator '" + key +
                 "', which evaluation.evaluators does not list; add '" + key +
                 "' to evaluation.evaluators or remove the [evaluation." + key + "] section");
  }
  r.only(eval, "evaluation", eval_known);
  cfg.query_batches = r.get(eval, "evaluation", "query_batches", StringList{});
  cfg.per_cell_scores = r.get(eval, "evaluation", "per_cell_scores", cfg.per_cell_scores);
  cfg.unintegrated_components =
      r.get(eval, "evaluation", "unintegrated_components", cfg.unintegrated_components);
  cfg.neighbors.backend = r.get(eval, "evaluation", "neighbors", cfg.neighbors.backend);
  if (cfg.neighbors.backend != "auto" && cfg.neighbors.backend != "exact" &&
      cfg.neighbors.backend != "hnsw")
    r.fail("evaluation.neighbors", eval.get("neighbors"),
           "must be \"auto\", \"exact\" or \"hnsw\"");
  if (cfg.neighbors.backend == "hnsw" && !hnsw_available())
    r.fail("evaluation.neighbors", eval.get("neighbors"),
           "\"hnsw\" is not available: this build has no hnswlib (use \"exact\")");
  cfg.neighbors.exact_max_cells =
      r.get(eval, "evaluation", "exact_max_cells", cfg.neighbors.exact_max_cells);
  if (cfg.neighbors.exact_max_cells < 0)
    r.fail("evaluation.exact_max_cells", eval.get("exact_max_cells"), "must not be negative");
  const std::string hnsw_build = r.get(eval, "evaluation", "hnsw_build", std::string("parallel"));
  if (hnsw_build != "parallel" && hnsw_build != "sequential")
    r.fail("evaluation.hnsw_build", eval.get("hnsw_build"),
           "must be \"parallel\" or \"sequential\"");
  cfg.neighbors.hnsw_build =
      hnsw_build == "sequential" ? HnswBuild::Sequential : HnswBuild::Parallel;
  cfg.protocol = r.get(eval, "evaluation", "protocol",
                       std::string(cfg.query_batches.empty() ? kBatchCorrection : kQueryMapping));
  if (cfg.protocol != kBatchCorrection && cfg.protocol != kQueryMapping)
    r.fail("evaluation.protocol", eval.get("protocol"),
           "must be \"batch_correction\" (train on every cell, score integration) or "
           "\"query_mapping\" (hold the query batches out, score annotation)");
  if (cfg.holds_out_query() && cfg.query_batches.empty())
    r.fail("evaluation.query_batches", eval.get("query_batches"),
           "must name the held-out batches: evaluation.protocol is \"query_mapping\"");
  cfg.query_modality = r.get(eval, "evaluation", "query_modality", cfg.query_modality);
  if (cfg.query_modality != kMeasured && cfg.query_modality != kPredicted)
    r.fail("evaluation.query_modality", eval.get("query_modality"),
           "must be \"measured\" (embed the query's second modality as read) or \"predicted\" "
           "(predict it from the query's reference neighbours)");
  cfg.query_modality_k = r.get(eval, "evaluation", "query_modality_k", cfg.query_modality_k);
  if (cfg.query_modality_k < 1)
    r.fail("evaluation.query_modality_k", eval.get("query_modality_k"), "must be at least 1");
  // Stored embeddings were made elsewhere: how a run embeds its query does not apply.
  if (use == ConfigUse::Run && cfg.query_modality == kPredicted)
    check_predicted_query_modality(r, eval.get("query_modality"), cfg);
  for (const auto& n : names) {
    const toml::node* node = eval.get(n);
    if (node && !node->is_table())
      r.fail("evaluation." + n, node, "must be a section of that evaluator's parameters");
    PluginChoice e = r.plugin(node ? *node->as_table() : empty, "evaluation." + n,
                              SCSSL_KIND_EVALUATOR, registry, {}, n);
    cfg.evaluator_order.push_back(n);
    if ((e.plugin->requirements() & SCSSL_NEEDS_QUERY_BATCHES) && cfg.query_batches.empty())
      r.fail("evaluation.query_batches", eval.get("query_batches"),
             "must name the held-out batches: evaluator '" + n + "' needs them");
    // Stored embeddings were made elsewhere, under whatever protocol: every evaluator applies.
    if (use == ConfigUse::Run && protocol_of(e) != cfg.protocol)
      cfg.other_protocol_evaluators.push_back(std::move(e));
    else
      cfg.evaluators.push_back(std::move(e));
  }
  if (cfg.evaluators.empty() && !cfg.other_protocol_evaluators.empty())
    r.fail("evaluation.evaluators", eval.get("evaluators"),
           "has no evaluator that scores under evaluation.protocol = \"" + cfg.protocol +
               "\"; the ones listed score under \"" +
               protocol_of(cfg.other_protocol_evaluators.front()) + "\" (set that protocol)");
  return cfg;
}

const char* protocol_of(const PluginChoice& evaluator) {
  return evaluator.plugin->requirements() & SCSSL_NEEDS_QUERY_BATCHES ? kQueryMapping
                                                                      : kBatchCorrection;
}

std::string RunConfig::resolved_toml() const {
  toml::table root;
  root.insert("run", toml::table{{"name", name},
                                 {"output_dir", output_dir},
                                 {"seed", static_cast<int64_t>(seed)},
                                 {"threads", threads},
                                 {"write_h5ad", write_h5ad},
                                 {"save_model", save_model}});
  if (isolate) root["run"].as_table()->insert("isolate", *isolate);
  // Only when not the CPU: where it runs does not change what a run is, so that sweep run ids
  // stay as they were.
  if (device != "cpu") root["run"].as_table()->insert("device", device);
  root.insert("dataset", plugin_table(dataset, true));
  toml::table pre = preprocess_table(preprocess);
  for (const auto& [m, o] : preprocess_by_modality) pre.insert(m, preprocess_table(o));
  root.insert("preprocess", pre);
  if (method.plugin) {
    root.insert("method", plugin_table(method, true));
    root.insert("train", toml::table{{"epochs", train.epochs},
                                     {"batch_size", train.batch_size},
                                     {"learning_rate", train.learning_rate},
                                     {"weight_decay", train.weight_decay},
                                     {"schedule", train.step_schedule ? "step" : "constant"},
                                     {"step_size", train.step_size},
                                     {"gamma", train.gamma},
                                     {"device", train.device},
                                     {"checkpoint_every", train.checkpoint_every},
                                     {"resume_from", train.resume_from}});
    if (!augmentations.empty()) {
      toml::array augs;
      for (const auto& a : augmentations) {
        toml::table t = plugin_table(a.choice, true);
        t.insert("modality", a.modality);
        t.insert("probability", a.probability);
        augs.push_back(t);
      }
      root.insert("augmentation", augs);
    }
  }
  toml::table eval;
  for (const auto* list : {&evaluators, &other_protocol_evaluators})
    for (const auto& e : *list) eval.insert(e.plugin->name(), plugin_table(e, false));
  eval.insert("evaluators", to_toml_list(evaluator_order));
  eval.insert("query_batches", to_toml_list(query_batches));
  eval.insert("protocol", protocol);
  eval.insert("query_modality", query_modality);
  eval.insert("query_modality_k", query_modality_k);
  eval.insert("unintegrated_components", unintegrated_components);
  eval.insert("neighbors", neighbors.backend);
  eval.insert("exact_max_cells", neighbors.exact_max_cells);
  // Only when not the default, so that existing sweep run ids stay.
  if (neighbors.hnsw_build == HnswBuild::Sequential) eval.insert("hnsw_build", "sequential");
  // Only when on: it adds files, not a different result, so existing sweep run ids stay.
  if (per_cell_scores) eval.insert("per_cell_scores", true);
  root.insert("evaluation", eval);
  std::ostringstream out;
  out << "# Resolved configuration: every setting of this run, defaults included.\n"
      << root << "\n";
  return out.str();
}

}  // namespace scssl::host
