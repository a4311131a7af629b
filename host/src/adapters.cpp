#include "adapters.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include <boost/dll/shared_library.hpp>

#include "crash_guard.hpp"

namespace scssl::host {

HostServices::HostServices() {
  on_log = [](scssl_log_level level, const std::string& message) {
    switch (level) {
      case SCSSL_LOG_DEBUG:
        spdlog::debug(message);
        break;
      case SCSSL_LOG_INFO:
        spdlog::info(message);
        break;
      case SCSSL_LOG_WARN:
        spdlog::warn(message);
        break;
      default:
        spdlog::error(message);
        break;
    }
  };
  on_progress = [](const std::string&, int64_t, int64_t, const std::string&) {};
  on_augment = [](int, int, torch::Tensor&, const torch::Tensor&, uint64_t) {};
  on_augmentation_count = [](int) { return 0; };
  on_record = [](const std::string&, int64_t, double) {};

  api_ = make_sized<scssl_host_api>();
  api_.abi_version = SCSSL_ABI_VERSION;
  api_.abi_minor = SCSSL_ABI_MINOR;
  api_.host_data = this;
  api_.log = [](void* self, int32_t level, const char* message) {
    static_cast<HostServices*>(self)->on_log(static_cast<scssl_log_level>(level), message);
  };
  api_.progress = [](void* self, const char* stage, int64_t done, int64_t total, const char* text) {
    static_cast<HostServices*>(self)->on_progress(stage, done, total, text ? text : "");
  };
  api_.augment = [](void* self, int32_t modality, int32_t view, DLTensor* batch,
                    const DLTensor* ids, uint64_t seed, scssl_error* error) {
    return detail::guarded(error, [&] {
      torch::Tensor b = from_dl(*batch, nullptr, "augmentation batch");
      torch::Tensor i = from_dl(*ids, nullptr, "augmentation cell ids");
      torch::Tensor target = b;
      static_cast<HostServices*>(self)->on_augment(modality, view, b, i, seed);
      if (!b.is_same(target)) target.copy_(b);
    });
  };
  api_.augmentation_count = [](void* self, int32_t modality) {
    return static_cast<int32_t>(static_cast<HostServices*>(self)->on_augmentation_count(modality));
  };
  api_.record = [](void* self, const char* series, int64_t step, double value) {
    static_cast<HostServices*>(self)->on_record(series, step, value);
  };
  api_.neighbors = [](void* self, int64_t k, DLTensor* indices, DLTensor* distances,
                      scssl_error* error) {
    return detail::guarded(error, [&] {
      auto* services = static_cast<HostServices*>(self);
      if (!services->on_neighbors)
        throw Error(SCSSL_ERR_INTERNAL, "neighbour lists are only offered during evaluation");
      if (k < 1) throw InvalidArgument("neighbour lists need k >= 1");
      const Neighbors& nn = services->on_neighbors(k);
      *indices = to_dl(nn.indices);
      *distances = to_dl(nn.distances);
    });
  };
  api_.connectivities = [](void* self, int64_t k, DLTensor* indptr, DLTensor* indices,
                           DLTensor* weights, scssl_error* error) {
    return detail::guarded(error, [&] {
      auto* services = static_cast<HostServices*>(self);
      if (!services->on_connectivities)
        throw Error(SCSSL_ERR_INTERNAL, "connectivities are only offered during evaluation");
      if (k < 2) throw InvalidArgument("connectivities need k >= 2");
      const SparseGraph& graph = services->on_connectivities(k);
      *indptr = to_dl(graph.indptr);
      *indices = to_dl(graph.indices);
      *weights = to_dl(graph.weights);
    });
  };
  api_.share_result = [](void* self, const char* key, const DLTensor* value, scssl_error* error) {
    return detail::guarded(error, [&] {
      auto* services = static_cast<HostServices*>(self);
      if (!services->shared_results) return;  // outside an embedding's evaluation nothing is kept
      (*services->shared_results)[key] =
          from_dl(*value, nullptr, std::string("shared result '") + key + "'").clone();
    });
  };
  api_.shared_result = [](void* self, const char* key, DLTensor* value, scssl_error* error) {
    return detail::guarded(error, [&] {
      auto* services = static_cast<HostServices*>(self);
      *value = DLTensor{};
      if (!services->shared_results) return;
      auto it = services->shared_results->find(key);
      if (it != services->shared_results->end()) *value = to_dl(it->second);
    });
  };
}

void HostServices::serve_neighbors(NeighborCache* cache) {
  if (!cache) {
    on_neighbors = nullptr;
    on_connectivities = nullptr;
    shared_results = nullptr;
    return;
  }
  shared_results = &cache->shared_results;
  on_neighbors = [cache](int64_t k) -> const Neighbors& { return cache->get(k); };
  on_connectivities = [cache](int64_t k) -> const SparseGraph& { return cache->connectivities(k); };
}

void check_status(scssl_status status, const scssl_error& error, const std::string& doing) {
  if (status == SCSSL_OK) return;
  std::string message(error.message, strnlen(error.message, sizeof error.message));
  if (message.empty()) message = "failed without a message (status " + std::to_string(status) + ")";
  throw Error(status, doing + ": " + message);
}

namespace {

// The plugin's table in this host's layout: functions its (older) build did not have are NULL.
template <class Table>
Table table_of(const LoadedPlugin& plugin, scssl_kind kind) {
  if (plugin.kind() != kind)
    throw InvalidArgument(plugin.label() + " is not a " + kind_name(kind) + " plugin");
  return read_sized(static_cast<const Table*>(plugin.code().table));
}

scssl_instance create(const scssl_instance_table& table, const LoadedPlugin& plugin,
                      const ParamSet& params, HostServices& services) {
  scssl_instance instance = nullptr;
  scssl_error error{};
  const crash::PluginCall call(plugin.label(), plugin.path, "create");
  check_status(table.create(params.c_view(), services.api(), &instance, &error), error,
               "creating " + plugin.label());
  return instance;
}

}  // namespace

CellData load_dataset(const LoadedPlugin& plugin, const ParamSet& params, HostServices& services) {
  const auto table = table_of<scssl_dataset_table>(plugin, SCSSL_KIND_DATASET);
  scssl_cell_data* out = nullptr;
  scssl_error error{};
  const crash::PluginCall call(plugin.label(), plugin.path, "load");
  check_status(table.load(params.c_view(), services.api(), &out, &error), error,
               "loading data with " + plugin.label());
  return import_owned(out, plugin.code().library);
}

Augmentation::Augmentation(const LoadedPlugin& plugin, const ParamSet& params,
                           HostServices& services)
    : table_(table_of<scssl_augmentation_table>(plugin, SCSSL_KIND_AUGMENTATION)),
      name_(plugin.name()) {
  library_ = plugin.code().library;
  label_ = plugin.label();
  path_ = plugin.path;
  instance_ = create(table_.instance, plugin, params, services);
}

Augmentation::~Augmentation() {
  if (!instance_) return;
  const crash::PluginCall call(label_, path_, "destroy");
  table_.instance.destroy(instance_);
}

void Augmentation::prepare(const scssl_cell_data* train, int modality) {
  scssl_error error{};
  const crash::PluginCall call(label_, path_, "prepare");
  check_status(table_.prepare(instance_, train, modality, &error), error,
               "preparing augmentation '" + name_ + "'");
}

void Augmentation::apply(torch::Tensor& batch, const torch::Tensor& cell_ids, int view,
                         uint64_t seed) {
  DLTensor b = to_dl(batch);
  DLTensor i = to_dl(cell_ids);
  scssl_error error{};
  const crash::PluginCall call(label_, path_, "apply");
  check_status(table_.apply(instance_, &b, &i, view, seed, &error), error,
               "applying augmentation '" + name_ + "'");
}

Method::Method(const LoadedPlugin& plugin, const ParamSet& params, HostServices& services)
    : table_(table_of<scssl_method_table>(plugin, SCSSL_KIND_METHOD)),
      name_(plugin.name()),
      requirements_(plugin.requirements()) {
  library_ = plugin.code().library;
  label_ = plugin.label();
  path_ = plugin.path;
  instance_ = create(table_.instance, plugin, params, services);
}

Method::~Method() {
  if (!instance_) return;
  const crash::PluginCall call(label_, path_, "destroy");
  table_.instance.destroy(instance_);
}

void Method::fit(const scssl_cell_data* train, const TrainOptions& options) {
  scssl_train_options c = options.to_c();
  scssl_error error{};
  const crash::PluginCall call(label_, path_, "fit");
  check_status(table_.fit(instance_, train, &c, &error), error, "training method '" + name_ + "'");
}

torch::Tensor Method::embed(const CellData& data) {
  CellDataView view(data);
  DLManagedTensor* out = nullptr;
  scssl_error error{};
  const crash::PluginCall call(label_, path_, "embed");
  check_status(table_.embed(instance_, view.get(), &out, &error), error,
               "embedding with method '" + name_ + "'");
  torch::Tensor embedding = import_managed(out, library_, "embedding of method '" + name_ + "'");
  if (embedding.dim() != 2 || embedding.size(0) != data.n_cells() ||
      embedding.scalar_type() != torch::kFloat32)
    throw BadData("method '" + name_ +
                  "' returned an embedding that is not float32 with one row per cell");
  if (!torch::isfinite(embedding).all().item<bool>())
    throw BadData("method '" + name_ + "' returned an embedding with NaN or infinite values");
  return embedding;
}

void Method::save(const std::string& directory) {
  scssl_error error{};
  const crash::PluginCall call(label_, path_, "save");
  check_status(table_.save(instance_, directory.c_str(), &error), error,
               "saving method '" + name_ + "'");
}

void Method::load(const std::string& directory) {
  scssl_error error{};
  const crash::PluginCall call(label_, path_, "load");
  check_status(table_.load(instance_, directory.c_str(), &error), error,
               "loading method '" + name_ + "'");
}

Evaluator::Evaluator(const LoadedPlugin& plugin, const ParamSet& params, HostServices& services)
    : table_(table_of<scssl_evaluator_table>(plugin, SCSSL_KIND_EVALUATOR)),
      name_(plugin.name()),
      metrics_(plugin.meta.metrics) {
  library_ = plugin.code().library;
  label_ = plugin.label();
  path_ = plugin.path;
  instance_ = create(table_.instance, plugin, params, services);
}

Evaluator::~Evaluator() {
  if (!instance_) return;
  const crash::PluginCall call(label_, path_, "destroy");
  table_.instance.destroy(instance_);
}

std::vector<MetricValue> Evaluator::evaluate(const CellData& data, const torch::Tensor& embedding,
                                             const torch::Tensor& unintegrated,
                                             const std::vector<std::string>& query_batches,
                                             const std::string& device) {
  CellDataView view(data);
  torch::Tensor emb = embedding.to(torch::kCPU, torch::kFloat32).contiguous();
  torch::Tensor pre = unintegrated.defined()
                          ? unintegrated.to(torch::kCPU, torch::kFloat32).contiguous()
                          : torch::Tensor();
  std::vector<const char*> queries;
  for (const auto& q : query_batches) queries.push_back(q.c_str());
  scssl_eval_context context = make_sized<scssl_eval_context>();
  context.data = view.get();
  context.embedding = to_dl(emb);
  context.unintegrated = to_dl(pre);
  context.n_query_batches = static_cast<int64_t>(queries.size());
  context.query_batches = queries.data();
  context.device = device.c_str();

  // Per-cell values and notes may come before or after their metric's value.
  struct Collector {
    const std::vector<MetricRule>* metrics;
    const std::string* evaluator;
    int64_t n_cells;
    std::vector<MetricValue> values;
    std::map<std::string, torch::Tensor> per_cell;
    std::map<std::string, std::string> notes;
    std::string problem;  // the first thing the evaluator got wrong
    // The declared spec of `name`; nullptr (and the problem kept) for an undeclared one.
    const MetricRule* declared(const char* name) {
      for (const MetricRule& spec : *metrics)
        if (spec.name == name) return &spec;
      if (problem.empty())
        problem = "reported metric '" + std::string(name) + "', which it does not declare";
      return nullptr;
    }
  } collector{&metrics_, &name_, data.n_cells(), {}, {}, {}, {}};
  scssl_metric_sink sink = make_sized<scssl_metric_sink>();
  sink.sink_data = &collector;
  sink.report = [](void* data, const char* name, double value) {
    auto* c = static_cast<Collector*>(data);
    const MetricRule* spec = c->declared(name);
    if (spec)
      c->values.push_back({*c->evaluator,
                           name,
                           value,
                           static_cast<scssl_metric_group>(spec->group),
                           spec->higher_is_better,
                           std::nan(""),
                           {},
                           {}});
  };
  sink.report_cells = [](void* data, const char* name, const DLTensor* values) {
    auto* c = static_cast<Collector*>(data);
    if (!c->declared(name)) return;
    // No exception may cross back into the plugin: a problem is kept and raised afterwards.
    try {
      const torch::Tensor v = from_dl(*values, nullptr, "per-cell values").to(torch::kFloat64);
      if (v.dim() != 1 || v.size(0) != c->n_cells)
        throw BadData("its " + std::to_string(v.dim()) + "-d tensor of " +
                      std::to_string(v.numel()) + " values is not one value per cell (" +
                      std::to_string(c->n_cells) + ")");
      c->per_cell[name] = v.clone();
    } catch (const std::exception& e) {
      if (c->problem.empty())
        c->problem = "reported per-cell values of '" + std::string(name) +
                     "' that cannot be used: " + e.what();
    }
  };
  sink.note = [](void* data, const char* name, const char* text) {
    auto* c = static_cast<Collector*>(data);
    if (!c->declared(name)) return;
    std::string line(text);  // one line in every result file
    std::replace_if(
        line.begin(), line.end(), [](char ch) { return ch == '\n' || ch == '\r'; }, ' ');
    std::string& note = c->notes[name];
    note += (note.empty() ? "" : " ") + line;
  };
  scssl_error error{};
  const crash::PluginCall call(label_, path_, "evaluate");
  check_status(table_.evaluate(instance_, &context, &sink, &error), error,
               "evaluating with '" + name_ + "'");
  if (!collector.problem.empty())
    throw Error(SCSSL_ERR_INTERNAL, "evaluator '" + name_ + "' " + collector.problem);
  for (MetricValue& v : collector.values) {
    if (auto it = collector.per_cell.find(v.name); it != collector.per_cell.end())
      v.per_cell = it->second;
    if (auto it = collector.notes.find(v.name); it != collector.notes.end()) v.note = it->second;
  }
  return std::move(collector.values);
}

}  // namespace scssl::host
