// C++ adapters over loaded plugins: each call goes through the plugin's C function table, turns a
// status + message into an exception, and keeps the library alive while its results live.
#pragma once

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "registry.hpp"
#include "scssl/cell_data.hpp"
#include "scssl/knn.hpp"
#include "neighbors.hpp"
#include "scssl/plugin.hpp"

namespace scssl::host {

// The services every plugin instance receives (scssl_host_api), routed to C++ callbacks.
class HostServices {
 public:
  HostServices();
  HostServices(const HostServices&) = delete;
  HostServices& operator=(const HostServices&) = delete;

  // Log lines from plugins; default: spdlog at the matching level.
  std::function<void(scssl_log_level, const std::string&)> on_log;
  std::function<void(const std::string& stage, int64_t done, int64_t total, const std::string&)>
      on_progress;
  // The augmentation pipeline per modality; default: none.
  std::function<void(int modality, int view, torch::Tensor& batch, const torch::Tensor& ids,
                     uint64_t seed)>
      on_augment;
  std::function<int(int modality)> on_augmentation_count;
  std::function<void(const std::string& series, int64_t step, double value)> on_record;
  // Neighbour lists for evaluators (see NeighborCache); default: none offered.
  std::function<const Neighbors&(int64_t k)> on_neighbors;
  std::function<const SparseGraph&(int64_t k)> on_connectivities;
  // Results evaluators share about the embedding being scored; none outside evaluation.
  std::map<std::string, torch::Tensor>* shared_results = nullptr;
  // Routes on_neighbors, on_connectivities and shared_results to `cache`, the services of one
  // embedding (nullptr: stop offering them).
  void serve_neighbors(NeighborCache* cache);

  const scssl_host_api* api() const { return &api_; }

 private:
  scssl_host_api api_{};
};

// Throws scssl::Error with the plugin's message, prefixed by what was being done.
void check_status(scssl_status status, const scssl_error& error, const std::string& doing);

CellData load_dataset(const LoadedPlugin& plugin, const ParamSet& params, HostServices& services);

class Augmentation {
 public:
  Augmentation(const LoadedPlugin& plugin, const ParamSet& params, HostServices& services);
  ~Augmentation();
  Augmentation(const Augmentation&) = delete;
  Augmentation& operator=(const Augmentation&) = delete;
  // `train` must outlive this object (the plugin may keep pointers into it).
  void prepare(const scssl_cell_data* train, int modality);
  void apply(torch::Tensor& batch, const torch::Tensor& cell_ids, int view, uint64_t seed);
  const std::string& name() const { return name_; }

 private:
  std::shared_ptr<boost::dll::shared_library> library_;
  scssl_augmentation_table table_;  // in this host's layout (read_sized)
  std::string label_, path_;        // for crash reports
  scssl_instance instance_ = nullptr;
  std::string name_;
};

class Method {
 public:
  Method(const LoadedPlugin& plugin, const ParamSet& params, HostServices& services);
  ~Method();
  Method(const Method&) = delete;
  Method& operator=(const Method&) = delete;
  uint64_t requirements() const { return requirements_; }
  // `train` must outlive this object.
  void fit(const scssl_cell_data* train, const TrainOptions& options);
  torch::Tensor embed(const CellData& data);
  void save(const std::string& directory);
  void load(const std::string& directory);
  const std::string& name() const { return name_; }

 private:
  std::shared_ptr<boost::dll::shared_library> library_;
  scssl_method_table table_;  // in this host's layout (read_sized)
  std::string label_, path_;  // for crash reports
  scssl_instance instance_ = nullptr;
  std::string name_;
  uint64_t requirements_;
};

struct MetricValue {
  std::string evaluator;
  std::string name;
  double value;
  scssl_metric_group group;
  bool higher_is_better;
  double seconds = std::nan("");  // wall time of the evaluator that reported it
  torch::Tensor per_cell;         // float64 [n_cells] when the evaluator gave them (ABI 2.1)
  std::string note;               // why it is NaN, or what it left out; "" when none
};

class Evaluator {
 public:
  Evaluator(const LoadedPlugin& plugin, const ParamSet& params, HostServices& services);
  ~Evaluator();
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;
  // `device`: where the evaluator should run its heavy kernels (run.device).
  std::vector<MetricValue> evaluate(const CellData& data, const torch::Tensor& embedding,
                                    const torch::Tensor& unintegrated,
                                    const std::vector<std::string>& query_batches,
                                    const std::string& device = "cpu");
  const std::string& name() const { return name_; }

 private:
  std::shared_ptr<boost::dll::shared_library> library_;
  scssl_evaluator_table table_;  // in this host's layout (read_sized)
  std::string label_, path_;     // for crash reports
  scssl_instance instance_ = nullptr;
  std::string name_;
  std::vector<MetricRule> metrics_;  // what the plugin note declares
};

}  // namespace scssl::host
