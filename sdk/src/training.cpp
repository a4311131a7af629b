#include "scssl/training.hpp"

#include "checkpoint_file.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <future>

namespace fs = std::filesystem;

namespace scssl {

namespace {

constexpr const char* kCheckpointFile = "checkpoint.pt";

std::string format_loss_line(int64_t epoch, int64_t epochs, double loss, double cells_per_second) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "epoch %lld/%lld  loss %.4f  %.0f cells/s",
                static_cast<long long>(epoch + 1), static_cast<long long>(epochs), loss,
                cells_per_second);
  return buf;
}

// Returns the epoch the checkpoint was written after.
int64_t load_checkpoint(const std::string& dir, torch::nn::Module& model,
                        torch::optim::Optimizer& opt, const torch::Device& device) {
  const fs::path file = fs::path(dir) / kCheckpointFile;
  if (!fs::exists(file))
    throw InvalidArgument("train.resume_from: no checkpoint at '" + file.string() + "'");
  return detail::read_checkpoint(file, model, opt, device);
}

}  // namespace

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t x = seed;
  for (uint64_t v : {a, b, c}) {
    x += 0x9e3779b97f4a7c15ULL + v;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
  }
  return x;
}

torch::Device parse_device(const std::string& text) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(text);
  } catch (const c10::Error&) {
    throw InvalidArgument("train.device '" + text + "' is not a device (use \"cpu\" or \"cuda\")");
  }
  if (device.is_cuda() && !torch::cuda::is_available())
    throw InvalidArgument("train.device is '" + text +
                          "' but this LibTorch has no usable CUDA device; use \"cpu\"");
  return device;
}

torch::Tensor batch_codes(const CellData& data) {
  const Column* b = data.batches();
  if (b == nullptr || !b->categorical) return {};
  return b->codes.to(torch::kInt64);
}

int64_t batch_count(const CellData& data) {
  const Column* b = data.batches();
  return b && b->categorical ? std::max<int64_t>(1, static_cast<int64_t>(b->categories.size())) : 1;
}

Trainer::Trainer(HostContext& host, const TrainOptions& options, std::vector<int> modalities,
                 OptimizerChoice optimizer)
    : host_(host),
      options_(options),
      modalities_(std::move(modalities)),
      optimizer_(optimizer),
      device_(parse_device(options.device)) {}

TrainResult Trainer::fit(const CellData& train, torch::nn::Module& model,
                         const TrainCallbacks& callbacks) {
  const int64_t n = train.n_cells();
  const int64_t batch_size = options_.batch_size;
  const int64_t steps = n / batch_size;  // drop_last, as the reference
  if (steps < 1)
    throw BadData("train.batch_size " + std::to_string(batch_size) + " is larger than the " +
                  std::to_string(n) + " training cells");
  model.to(device_);
  std::vector<torch::Tensor> params;
  for (auto& p : model.parameters())
    if (p.requires_grad()) params.push_back(p);
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (optimizer_.kind == OptimizerChoice::Kind::sgd)
    optimizer =
        std::make_unique<torch::optim::SGD>(params, torch::optim::SGDOptions(options_.learning_rate)
                                                        .momentum(optimizer_.momentum)
                                                        .weight_decay(options_.weight_decay));
  else
    optimizer = std::make_unique<torch::optim::Adam>(
        params,
        torch::optim::AdamOptions(options_.learning_rate).weight_decay(options_.weight_decay));

  TrainResult result;
  if (!options_.resume_from.empty()) {
    result.first_epoch = load_checkpoint(options_.resume_from, model, *optimizer, device_) + 1;
    host_.info("resumed from " + options_.resume_from + " after epoch " +
               std::to_string(result.first_epoch));
  }
  const torch::Tensor domains = batch_codes(train);
  const int64_t total_steps = steps * options_.epochs;
  for (int64_t epoch = result.first_epoch; epoch < options_.epochs; ++epoch) {
    const double lr =
        options_.step_schedule
            ? options_.learning_rate *
                  std::pow(options_.gamma, epoch / std::max<int64_t>(1, options_.step_size))
            : options_.learning_rate;
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
    // Dropout and other draws inside the model come from the global generator: reseed per epoch
    // so that a resumed run continues exactly as an uninterrupted one.
    torch::manual_seed(mix_seed(options_.seed, epoch, 1));
    auto order_rng = at::make_generator<at::CPUGeneratorImpl>(mix_seed(options_.seed, epoch, 2));
    const torch::Tensor order = torch::randperm(n, order_rng, torch::kInt64);
    model.train();
    double loss_sum = 0;
    const auto start = std::chrono::steady_clock::now();
    // The two augmented views of step s, made on a second thread while step s - 1 trains: the
    // augmentations draw from their own seeded generators, so the result does not depend on it.
    auto prepare = [&, epoch](int64_t s) {
      TrainBatch batch;
      batch.cell_ids = order.slice(0, s * batch_size, (s + 1) * batch_size).contiguous();
      if (domains.defined()) batch.domains = domains.index_select(0, batch.cell_ids);
      batch.epoch = epoch;
      batch.epochs = options_.epochs;
      batch.step = epoch * steps + s;
      for (size_t k = 0; k < modalities_.size(); ++k) {
        const int m = modalities_[k];
        torch::Tensor x = train.modalities.at(m).X.rows_dense(batch.cell_ids);
        torch::Tensor v0 = x.clone(), v1 = x;
        host_.augment(m, 0, v0, batch.cell_ids, mix_seed(options_.seed, epoch, s, 2 * k + 3));
        host_.augment(m, 1, v1, batch.cell_ids, mix_seed(options_.seed, epoch, s, 2 * k + 4));
        batch.view0.push_back(v0);
        batch.view1.push_back(v1);
      }
      return batch;
    };
    std::future<TrainBatch> next = std::async(std::launch::async, prepare, 0);
    for (int64_t s = 0; s < steps; ++s) {
      TrainBatch batch = next.get();
      if (s + 1 < steps) next = std::async(std::launch::async, prepare, s + 1);
      if (batch.domains.defined()) batch.domains = batch.domains.to(device_);
      for (auto& v : batch.view0) v = v.to(device_);
      for (auto& v : batch.view1) v = v.to(device_);
      torch::Tensor loss = callbacks.loss(batch);
      if (!torch::isfinite(loss).item<bool>())
        throw BadData("the training loss became " + std::to_string(loss.item<double>()) +
                      " at epoch " + std::to_string(epoch + 1) + "; try a smaller learning rate");
      optimizer->zero_grad();
      loss.backward();
      optimizer->step();
      if (callbacks.after_step) callbacks.after_step(batch);
      loss_sum += loss.item<double>();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      host_.progress("train", epoch * steps + s + 1, total_steps,
                     format_loss_line(epoch, options_.epochs, loss_sum / (s + 1),
                                      (s + 1) * batch_size / std::max(seconds, 1e-9)));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double mean_loss = loss_sum / steps;
    result.epoch_loss.push_back(mean_loss);
    host_.record("loss", epoch, mean_loss);
    host_.record("learning_rate", epoch, lr);
    host_.record("cells_per_second", epoch, steps * batch_size / std::max(seconds, 1e-9));
    host_.debug(format_loss_line(epoch, options_.epochs, mean_loss,
                                 steps * batch_size / std::max(seconds, 1e-9)));
    const bool last = epoch + 1 == options_.epochs;
    if (!options_.checkpoint_dir.empty() && options_.checkpoint_every > 0 &&
        ((epoch + 1) % options_.checkpoint_every == 0 || last))
      detail::write_checkpoint(fs::path(options_.checkpoint_dir) / kCheckpointFile, model,
                               *optimizer, epoch);
  }
  model.eval();
  return result;
}

}  // namespace scssl
