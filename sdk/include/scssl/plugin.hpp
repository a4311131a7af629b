// The C++ layer a plugin author writes against: derive from one of IDataset, IAugmentation,
// IMethod or IEvaluator, then register the class with SCSSL_PLUGIN. Everything here turns the C
// boundary of scssl/abi.h into torch::Tensor and exceptions, and back; no C++ object or exception
// ever crosses it.
//
//   class MyMethod final : public scssl::IMethod {
//    public:
//     static std::vector<scssl::ParamSpec> parameters() {
//       return {scssl::ParamSpec("dim", SCSSL_PARAM_INT, "32", "embedding size").at_least(1)};
//     }
//     MyMethod(const scssl::ParamSet& p, scssl::HostContext& host) : IMethod(host) { ... }
//     void fit(const scssl::CellData& train, const scssl::TrainOptions& o) override { ... }
//     torch::Tensor embed(const scssl::CellData& data) override { ... }
//   };
//   SCSSL_PLUGIN(MyMethod, "my_method", "0.1.0", "What it does, in one line")
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "scssl/abi.h"
#include "scssl/abi_sized.hpp"
#include "scssl/cell_data.hpp"
#include "scssl/fingerprint.hpp"
#include "scssl/knn.hpp"
#include "scssl/params.hpp"

namespace scssl {

// Services of the host: logging, progress, the augmentation pipeline. Which thread may call what
// is written next to each function of scssl_host_api in scssl/abi.h.
class HostContext {
 public:
  explicit HostContext(const scssl_host_api* api) : api_(api) {}
  void log(scssl_log_level level, const std::string& message) const;
  void debug(const std::string& m) const { log(SCSSL_LOG_DEBUG, m); }
  void info(const std::string& m) const { log(SCSSL_LOG_INFO, m); }
  void warn(const std::string& m) const { log(SCSSL_LOG_WARN, m); }
  void progress(const std::string& stage, int64_t done, int64_t total,
                const std::string& text = "") const;
  // Runs the configured augmentations of `modality` on one view (0 or 1) of a mini-batch, in
  // place.
  void augment(int modality, int view, torch::Tensor& batch, const torch::Tensor& cell_ids,
               uint64_t seed) const;
  int augmentation_count(int modality) const;
  // One point of a named series, kept by the host with the run's results (history.csv).
  void record(const std::string& series, int64_t step, double value) const;
  // Evaluators only: the shared k-nearest-neighbour lists of the embedding being evaluated
  // (self first). {indices int64 [n, k], distances float32 [n, k]}, valid during evaluate().
  std::pair<torch::Tensor, torch::Tensor> neighbors(int64_t k) const;
  // Evaluators only: the fuzzy connectivities of those k-neighbour lists (docs/metrics.md §1.3),
  // computed once per k for the embedding; valid during evaluate().
  SparseGraph connectivities(int64_t k) const;
  // Evaluators only: a result shared for this embedding by another evaluator under `key`, or an
  // undefined tensor; share() stores one (a copy). See scssl_host_api.share_result.
  torch::Tensor shared(const std::string& key) const;
  void share(const std::string& key, const torch::Tensor& value) const;

 private:
  const scssl_host_api* api_;
};

struct TrainOptions {
  int64_t epochs = 30;
  int64_t batch_size = 256;
  double learning_rate = 1e-4;
  double weight_decay = 1e-6;
  bool step_schedule = false;
  int64_t step_size = 10;
  double gamma = 0.1;
  uint64_t seed = 0;
  std::string device = "cpu";
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  std::string resume_from;
  int num_threads = 0;

  static TrainOptions from_c(const scssl_train_options& c);
  // A C view; its strings point into this object.
  scssl_train_options to_c() const;
};

struct EvalContext {
  const CellData& data;
  torch::Tensor embedding;     // float32 [n_cells, d]
  torch::Tensor unintegrated;  // float32 [n_cells, p], may be undefined
  std::vector<std::string> query_batches;
  // Where the heavy metric kernels run (run.device): pass it to knn_exact, knn_self and the
  // silhouettes. CPU under a host older than ABI 2.2.
  torch::Device device = torch::kCPU;
};

class MetricSink {
 public:
  explicit MetricSink(const scssl_metric_sink* sink) : sink_(sink) {}
  void report(const std::string& name, double value) const {
    sink_->report(sink_->sink_data, name.c_str(), value);
  }
  // The per-cell values behind `name`: float [n_cells], NaN where a cell has none. A host older
  // than ABI 2.1 has no place for them; they are then dropped.
  void report_cells(const std::string& name, const torch::Tensor& values) const {
    if (!SCSSL_HAS_FIELD(sink_, scssl_metric_sink, report_cells) || !sink_->report_cells) return;
    const torch::Tensor v = values.to(torch::kCPU, torch::kFloat64).contiguous();
    const DLTensor dl = to_dl(v);
    sink_->report_cells(sink_->sink_data, name.c_str(), &dl);
  }
  // One sentence on `name` for the result files: why it is NaN, or what it left out.
  void note(const std::string& name, const std::string& text) const {
    if (!SCSSL_HAS_FIELD(sink_, scssl_metric_sink, note) || !sink_->note) return;
    sink_->note(sink_->sink_data, name.c_str(), text.c_str());
  }
  // NaN for `name`, with the reason.
  void undefined(const std::string& name, const std::string& why) const {
    note(name, why);
    report(name, std::numeric_limits<double>::quiet_NaN());
  }

 private:
  const scssl_metric_sink* sink_;
};

// ---- the four interfaces ------------------------------------------------------------------------
// Each plugin class may define `static std::vector<ParamSpec> parameters()`; the string literals
// in it must have static storage. The host checks every value against the schema (type, bounds,
// choices) before the constructor runs, so constructors need not repeat those checks.

class IDataset {
 public:
  static constexpr scssl_kind kind = SCSSL_KIND_DATASET;
  static std::vector<ParamSpec> parameters() { return {}; }
  static uint64_t requirements() { return 0; }
  virtual ~IDataset() = default;
  virtual CellData load(const ParamSet& params, HostContext& host) = 0;
};

class IAugmentation {
 public:
  static constexpr scssl_kind kind = SCSSL_KIND_AUGMENTATION;
  static std::vector<ParamSpec> parameters() { return {}; }
  static uint64_t requirements() { return 0; }
  explicit IAugmentation(HostContext& host) : host_(host) {}
  virtual ~IAugmentation() = default;
  // Once, on the training cells; `train` stays valid until this object dies.
  virtual void prepare(const CellData& train, int modality) { (void)train, (void)modality; }
  // Transforms a whole mini-batch [b, features] of one view (0 or 1) in place; cell_ids are rows
  // of the training data. Draw every random number from `rng`.
  virtual void apply(torch::Tensor& batch, const torch::Tensor& cell_ids, int view,
                     torch::Generator& rng) = 0;

 protected:
  HostContext& host_;
};

class IMethod {
 public:
  static constexpr scssl_kind kind = SCSSL_KIND_METHOD;
  static std::vector<ParamSpec> parameters() { return {}; }
  // scssl_requirement bits; SCSSL_USES_AUGMENTATIONS lets a config give [[augmentation]] sections.
  static uint64_t requirements() { return 0; }
  explicit IMethod(HostContext& host) : host_(host) {}
  virtual ~IMethod() = default;
  // `train` stays valid until this object dies.
  virtual void fit(const CellData& train, const TrainOptions& options) = 0;
  virtual torch::Tensor embed(const CellData& data) = 0;
  virtual void save(const std::string& directory) const;
  virtual void load(const std::string& directory);

 protected:
  HostContext& host_;
};

class IEvaluator {
 public:
  static constexpr scssl_kind kind = SCSSL_KIND_EVALUATOR;
  static std::vector<ParamSpec> parameters() { return {}; }
  static uint64_t requirements() { return 0; }  // SCSSL_NEEDS_UNINTEGRATED, ..._QUERY_BATCHES
  // Every evaluator defines `static std::vector<MetricSpec> metrics()`.
  explicit IEvaluator(HostContext& host) : host_(host) {}
  virtual ~IEvaluator() = default;
  virtual void evaluate(const EvalContext& context, const MetricSink& sink) = 0;

 protected:
  HostContext& host_;
};

// ---- the machinery behind SCSSL_PLUGIN
// -------------------------------------------------------------
namespace detail {

// Runs f; turns any exception into a status and a message for the C side.
template <class F>
scssl_status guarded(scssl_error* error, F&& f) noexcept {
  auto fail = [&](scssl_status status, const char* what) {
    if (error) std::snprintf(error->message, sizeof error->message, "%s", what);
    return status;
  };
  try {
    f();
    return SCSSL_OK;
  } catch (const Error& e) {
    return fail(e.status(), e.what());
  } catch (const c10::Error& e) {
    return fail(SCSSL_ERR_INTERNAL, e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(SCSSL_ERR_INTERNAL, e.what());
  } catch (...) {
    return fail(SCSSL_ERR_INTERNAL, "unknown exception");
  }
}

template <class T>
struct Instance {
  Instance(const scssl_params* p, const scssl_host_api* api)
      : host(api), params(ParamSet::from_c(p)), object(std::make_unique<T>(params, host)) {}
  HostContext host;
  ParamSet params;
  std::unique_ptr<T> object;
  std::unique_ptr<CellData> kept;  // data given to prepare()/fit(), valid while this lives
};

template <class T>
T& object_of(scssl_instance self) {
  return *static_cast<Instance<T>*>(self)->object;
}

template <class T>
scssl_instance_table instance_table() {
  return {[](const scssl_params* p, const scssl_host_api* api, scssl_instance* out,
             scssl_error* e) { return guarded(e, [&] { *out = new Instance<T>(p, api); }); },
          [](scssl_instance self) { delete static_cast<Instance<T>*>(self); }};
}

template <class T>
const void* table_of() {
  if constexpr (T::kind == SCSSL_KIND_DATASET) {
    static const scssl_dataset_table table{sizeof(scssl_dataset_table),
                                           [](const scssl_params* p, const scssl_host_api* api,
                                              scssl_cell_data** out, scssl_error* e) {
                                             return guarded(e, [&] {
                                               HostContext host(api);
                                               ParamSet params = ParamSet::from_c(p);
                                               T dataset;
                                               CellData data = dataset.load(params, host);
                                               data.validate("data set");
                                               *out = CellDataView::export_owned(std::move(data));
                                             });
                                           }};
    return &table;
  } else if constexpr (T::kind == SCSSL_KIND_AUGMENTATION) {
    static const scssl_augmentation_table table{
        sizeof(scssl_augmentation_table), instance_table<T>(),
        [](scssl_instance self, const scssl_cell_data* d, int32_t modality, scssl_error* e) {
          return guarded(e, [&] {
            auto* inst = static_cast<Instance<T>*>(self);
            inst->kept = std::make_unique<CellData>(import_borrowed(d));
            inst->object->prepare(*inst->kept, modality);
          });
        },
        [](scssl_instance self, DLTensor* batch, const DLTensor* ids, int32_t view, uint64_t seed,
           scssl_error* e) {
          return guarded(e, [&] {
            torch::Tensor b = from_dl(*batch, nullptr, "augmentation batch");
            torch::Tensor i = from_dl(*ids, nullptr, "augmentation cell ids");
            torch::Tensor before = b;
            auto rng = at::make_generator<at::CPUGeneratorImpl>(seed);
            object_of<T>(self).apply(b, i, view, rng);
            // apply() may rebind the tensor; the result must land in the caller's buffer.
            if (!b.is_same(before)) before.copy_(b);
          });
        }};
    return &table;
  } else if constexpr (T::kind == SCSSL_KIND_METHOD) {
    static const scssl_method_table table{
        sizeof(scssl_method_table),
        instance_table<T>(),
        [](scssl_instance self, const scssl_cell_data* d, const scssl_train_options* o,
           scssl_error* e) {
          return guarded(e, [&] {
            auto* inst = static_cast<Instance<T>*>(self);
            inst->kept = std::make_unique<CellData>(import_borrowed(d));
            inst->object->fit(*inst->kept, TrainOptions::from_c(read_sized(o)));
          });
        },
        [](scssl_instance self, const scssl_cell_data* d, DLManagedTensor** out, scssl_error* e) {
          return guarded(e, [&] {
            CellData data = import_borrowed(d);
            torch::Tensor emb = object_of<T>(self).embed(data).to(torch::kCPU, torch::kFloat32);
            if (emb.dim() != 2 || emb.size(0) != data.n_cells())
              throw Error(SCSSL_ERR_INTERNAL, "embed() must return one row per cell");
            *out = export_managed(emb.contiguous());
          });
        },
        [](scssl_instance self, const char* dir, scssl_error* e) {
          return guarded(e, [&] { object_of<T>(self).save(dir); });
        },
        [](scssl_instance self, const char* dir, scssl_error* e) {
          return guarded(e, [&] { object_of<T>(self).load(dir); });
        }};
    return &table;
  } else {
    static_assert(T::kind == SCSSL_KIND_EVALUATOR, "unknown plugin kind");
    static const scssl_evaluator_table table{
        sizeof(scssl_evaluator_table), instance_table<T>(),
        [](scssl_instance self, const scssl_eval_context* given, const scssl_metric_sink* sink,
           scssl_error* e) {
          return guarded(e, [&] {
            const scssl_eval_context copy = read_sized(given);
            const scssl_eval_context* c = &copy;
            CellData data = import_borrowed(c->data);
            EvalContext context{data,
                                from_dl(c->embedding, nullptr, "embedding"),
                                from_dl(c->unintegrated, nullptr, "unintegrated representation"),
                                {}};
            for (int64_t i = 0; i < c->n_query_batches; ++i)
              context.query_batches.emplace_back(c->query_batches[i]);
            if (SCSSL_HAS_FIELD(c, scssl_eval_context, device) && c->device && *c->device)
              context.device = torch::Device(c->device);
            object_of<T>(self).evaluate(context, MetricSink(sink));
          });
        }};
    return &table;
  }
}

inline std::vector<scssl_param_spec> c_specs(const std::vector<ParamSpec>& specs) {
  std::vector<scssl_param_spec> out;
  for (const auto& s : specs) out.push_back(s.c_spec());
  return out;
}

template <class T>
std::vector<scssl_metric_spec> metric_specs() {
  std::vector<scssl_metric_spec> out;
  if constexpr (T::kind == SCSSL_KIND_EVALUATOR)
    for (const MetricSpec& m : T::metrics()) out.push_back(m.c_spec());
  return out;
}

template <class T>
const scssl_plugin_info* plugin_info(const char* name, const char* version, const char* summary) {
  static_assert(std::is_base_of_v<IDataset, T> || std::is_base_of_v<IAugmentation, T> ||
                    std::is_base_of_v<IMethod, T> || std::is_base_of_v<IEvaluator, T>,
                "SCSSL_PLUGIN needs a class derived from one of the four interfaces");
  static const std::vector<ParamSpec> specs = T::parameters();
  static const std::vector<scssl_param_spec> params = c_specs(specs);
  static const std::vector<scssl_metric_spec> metrics = metric_specs<T>();
  static const scssl_plugin_info info{SCSSL_MAGIC,
                                      SCSSL_ABI_VERSION,
                                      sizeof(scssl_plugin_info),
                                      SCSSL_ABI_MINOR,
                                      T::kind,
                                      name,
                                      version,
                                      summary,
                                      SCSSL_BUILD_FINGERPRINT,
                                      T::requirements(),
                                      params.empty() ? nullptr : params.data(),
                                      static_cast<int64_t>(params.size()),
                                      metrics.empty() ? nullptr : metrics.data(),
                                      static_cast<int64_t>(metrics.size()),
                                      table_of<T>()};
  return &info;
}

}  // namespace detail
}  // namespace scssl

// Registers one plugin class; use it once per shared library, at namespace scope.
#define SCSSL_PLUGIN(Class, name, version, summary)                           \
  extern "C" SCSSL_EXPORT const scssl_plugin_info* scssl_plugin_entry(void) { \
    return ::scssl::detail::plugin_info<Class>(name, version, summary);       \
  }
