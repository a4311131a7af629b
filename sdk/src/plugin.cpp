#include "scssl/plugin.hpp"

namespace scssl {

// A host service is usable when the host's table is long enough to hold it and the host filled it
// in: an older host's shorter table simply lacks the newer services (scssl/abi.h, "Versioning").
#define SCSSL_HOST_OFFERS(api, field) \
  ((api) != nullptr && SCSSL_HAS_FIELD(api, scssl_host_api, field) && (api)->field != nullptr)

void HostContext::log(scssl_log_level level, const std::string& message) const {
  if (SCSSL_HOST_OFFERS(api_, log)) api_->log(api_->host_data, level, message.c_str());
}

void HostContext::progress(const std::string& stage, int64_t done, int64_t total,
                           const std::string& text) const {
  if (SCSSL_HOST_OFFERS(api_, progress))
    api_->progress(api_->host_data, stage.c_str(), done, total, text.c_str());
}

void HostContext::augment(int modality, int view, torch::Tensor& batch,
                          const torch::Tensor& cell_ids, uint64_t seed) const {
  if (!SCSSL_HOST_OFFERS(api_, augment)) return;
  batch = batch.to(torch::kCPU, torch::kFloat32).contiguous();
  torch::Tensor ids = cell_ids.to(torch::kCPU, torch::kInt64).contiguous();
  DLTensor b = to_dl(batch);
  DLTensor i = to_dl(ids);
  scssl_error error{};
  scssl_status status = api_->augment(api_->host_data, modality, view, &b, &i, seed, &error);
  if (status != SCSSL_OK) throw Error(status, error.message);
}

int HostContext::augmentation_count(int modality) const {
  if (!SCSSL_HOST_OFFERS(api_, augmentation_count)) return 0;
  return api_->augmentation_count(api_->host_data, modality);
}

void HostContext::record(const std::string& series, int64_t step, double value) const {
  if (SCSSL_HOST_OFFERS(api_, record)) api_->record(api_->host_data, series.c_str(), step, value);
}

std::pair<torch::Tensor, torch::Tensor> HostContext::neighbors(int64_t k) const {
  if (!SCSSL_HOST_OFFERS(api_, neighbors))
    throw Error(SCSSL_ERR_INTERNAL, "this host offers no neighbour lists");
  DLTensor indices{}, distances{};
  scssl_error error{};
  scssl_status status = api_->neighbors(api_->host_data, k, &indices, &distances, &error);
  if (status != SCSSL_OK) throw Error(status, error.message);
  return {from_dl(indices, nullptr, "neighbour indices"),
          from_dl(distances, nullptr, "neighbour distances")};
}

SparseGraph HostContext::connectivities(int64_t k) const {
  if (!SCSSL_HOST_OFFERS(api_, connectivities))
    throw Error(SCSSL_ERR_INTERNAL, "this host offers no neighbour connectivities");
  DLTensor indptr{}, indices{}, weights{};
  scssl_error error{};
  scssl_status status =
      api_->connectivities(api_->host_data, k, &indptr, &indices, &weights, &error);
  if (status != SCSSL_OK) throw Error(status, error.message);
  return {from_dl(indptr, nullptr, "connectivity indptr"),
          from_dl(indices, nullptr, "connectivity indices"),
          from_dl(weights, nullptr, "connectivity weights")};
}

torch::Tensor HostContext::shared(const std::string& key) const {
  if (!SCSSL_HOST_OFFERS(api_, shared_result)) return {};
  DLTensor value{};
  scssl_error error{};
  scssl_status status = api_->shared_result(api_->host_data, key.c_str(), &value, &error);
  if (status != SCSSL_OK) throw Error(status, error.message);
  return value.data ? from_dl(value, nullptr, "shared result '" + key + "'") : torch::Tensor();
}

void HostContext::share(const std::string& key, const torch::Tensor& value) const {
  if (!SCSSL_HOST_OFFERS(api_, share_result))
    return;  // an older host: every evaluator computes its own
  const torch::Tensor dense = value.to(torch::kCPU).contiguous();
  DLTensor v = to_dl(dense);
  scssl_error error{};
  scssl_status status = api_->share_result(api_->host_data, key.c_str(), &v, &error);
  if (status != SCSSL_OK) throw Error(status, error.message);
}

TrainOptions TrainOptions::from_c(const scssl_train_options& c) {
  TrainOptions o;
  o.epochs = c.epochs;
  o.batch_size = c.batch_size;
  o.learning_rate = c.learning_rate;
  o.weight_decay = c.weight_decay;
  o.step_schedule = c.step_schedule != 0;
  o.step_size = c.step_size;
  o.gamma = c.gamma;
  o.seed = c.seed;
  o.device = c.device ? c.device : "cpu";
  o.checkpoint_dir = c.checkpoint_dir ? c.checkpoint_dir : "";
  o.checkpoint_every = c.checkpoint_every;
  o.resume_from = c.resume_from ? c.resume_from : "";
  o.num_threads = c.num_threads;
  return o;
}

scssl_train_options TrainOptions::to_c() const {
  scssl_train_options c = make_sized<scssl_train_options>();
  c.epochs = epochs;
  c.batch_size = batch_size;
  c.learning_rate = learning_rate;
  c.weight_decay = weight_decay;
  c.step_schedule = step_schedule ? 1 : 0;
  c.step_size = step_size;
  c.gamma = gamma;
  c.seed = seed;
  c.device = device.c_str();
  c.checkpoint_dir = checkpoint_dir.c_str();
  c.checkpoint_every = checkpoint_every;
  c.resume_from = resume_from.c_str();
  c.num_threads = num_threads;
  return c;
}

void IMethod::save(const std::string& directory) const {
  throw InvalidArgument("this method cannot save a trained model (asked to save to " + directory +
                        ")");
}

void IMethod::load(const std::string& directory) {
  throw InvalidArgument("this method cannot load a trained model (asked to load from " + directory +
                        ")");
}

}  // namespace scssl
