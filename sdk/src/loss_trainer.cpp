#include "scssl/loss_trainer.hpp"

#include "checkpoint_file.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>

namespace fs = std::filesystem;

namespace scssl {

namespace {

// What early stopping and reduce-on-plateau remember between epochs; checkpointed with the model.
struct StopState {
  double learning_rate = 0;
  double best_stop = std::numeric_limits<double>::infinity();
  int64_t bad_stop = 0;
  double best_plateau = std::numeric_limits<double>::infinity();
  int64_t bad_plateau = 0;
  bool stopped = false;
  double best_value = std::numeric_limits<double>::infinity();  // restore_best
  int64_t best_epoch = -1;
};

constexpr const char* kCheckpointSuffix = "-checkpoint.pt";

fs::path checkpoint_path(const std::string& dir, const std::string& stage) {
  return fs::path(dir) / (stage + kCheckpointSuffix);
}

bool has_any_checkpoint(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > std::strlen(kCheckpointSuffix) &&
        name.compare(name.size() - std::strlen(kCheckpointSuffix), std::string::npos,
                     kCheckpointSuffix) == 0)
      return true;
  }
  return false;
}

// A seed component per stage name that does not depend on the standard library (FNV-1a).
uint64_t stage_hash(const std::string& stage) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : stage) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

torch::Tensor to_tensor(const StopState& s) {
  return torch::tensor(
      {s.learning_rate, s.best_stop, double(s.bad_stop), s.best_plateau, double(s.bad_plateau),
       double(s.stopped), s.best_value, double(s.best_epoch)},
      torch::kFloat64);
}

StopState from_tensor(const torch::Tensor& t) {
  const torch::Tensor v = t.to(torch::kCPU, torch::kFloat64).contiguous();
  const double* d = v.data_ptr<double>();
  StopState s{d[0], d[1], static_cast<int64_t>(d[2]), d[3], static_cast<int64_t>(d[4]), d[5] != 0};
  if (v.numel() >= 8) {  // checkpoints written before restore_best existed have 6 values
    s.best_value = d[6];
    s.best_epoch = static_cast<int64_t>(d[7]);
  }
  return s;
}

// The model's parameters and buffers, copied (restore_best).
std::vector<torch::Tensor> snapshot(const torch::nn::Module& model) {
  std::vector<torch::Tensor> copy;
  for (const torch::Tensor& p : model.parameters()) copy.push_back(p.detach().clone());
  for (const torch::Tensor& b : model.buffers()) copy.push_back(b.detach().clone());
  return copy;
}

void restore(torch::nn::Module& model, const std::vector<torch::Tensor>& copy) {
  torch::NoGradGuard no_grad;
  size_t i = 0;
  for (torch::Tensor& p : model.parameters()) p.copy_(copy.at(i++));
  for (torch::Tensor& b : model.buffers()) b.copy_(copy.at(i++));
}

fs::path best_path(const std::string& dir, const std::string& stage) {
  return fs::path(dir) / (stage + "-best.pt");
}

// Written under a temporary name and renamed, as the checkpoints.
void write_best(const fs::path& file, const std::vector<torch::Tensor>& copy) {
  const fs::path partial = file.string() + ".partial";
  torch::save(copy, partial.string());
  fs::rename(partial, file);
}

// Sums of the loss and of every named term over the cells of an epoch's batches.
struct EpochSums {
  double cells = 0;
  double loss = 0;
  std::map<std::string, double> terms;
  std::vector<std::string> order;  // first-seen order, for stable history series

  void add(const StepLoss& step, int64_t batch_cells) {
    cells += batch_cells;
    loss += step.loss.item<double>() * batch_cells;
    for (const auto& [name, value] : step.terms) {
      if (!terms.count(name)) order.push_back(name);
      terms[name] += value.item<double>() * batch_cells;
    }
  }
  double mean(const std::string& name) const {
    return name == "loss" ? loss / cells : terms.at(name) / cells;
  }
};

std::string loss_line(int64_t epoch, int64_t epochs, double loss, double validation,
                      double cells_per_second) {
  char buf[160];
  if (std::isnan(validation))
    std::snprintf(buf, sizeof buf, "epoch %lld/%lld  loss %.4f  %.0f cells/s",
                  static_cast<long long>(epoch + 1), static_cast<long long>(epochs), loss,
                  cells_per_second);
  else
    std::snprintf(buf, sizeof buf, "epoch %lld/%lld  loss %.4f  validation %.4f  %.0f cells/s",
                  static_cast<long long>(epoch + 1), static_cast<long long>(epochs), loss,
                  validation, cells_per_second);
  return buf;
}

// Adam with LibTorch's update rule and state (so checkpoints are the same), computed in one pass
// per parameter instead of about eight tensor operations: for a model whose parameters are large
// matrices (scVI's decoder: 2 x 2000 x 128) the separate passes were a noticeable part of a step
// (docs/performance.md, "Training: scVI"). Float32 CPU tensors without AMSGrad; anything else
// takes LibTorch's own step.
class OnePassAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;

  torch::Tensor step(LossClosure closure = nullptr) override {
    for (const auto& group : param_groups_)
      for (const auto& p : group.params())
        if (p.grad().defined() && !fusable(p, group)) return torch::optim::Adam::step(closure);
    torch::NoGradGuard no_grad;
    for (auto& group : param_groups_) {
      const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
      const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        auto& slot = state_[c10::guts::to_string(p.unsafeGetTensorImpl())];
        if (!slot) {
          auto fresh = std::make_unique<torch::optim::AdamParamState>();
          fresh->step(0);
          fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
          slot = std::move(fresh);
        }
        auto& state = static_cast<torch::optim::AdamParamState&>(*slot);
        state.step(state.step() + 1);
        const double correction1 = 1 - std::pow(beta1, state.step());
        const double correction2 = 1 - std::pow(beta2, state.step());
        update(p.data_ptr<float>(), p.grad().data_ptr<float>(), state.exp_avg().data_ptr<float>(),
               state.exp_avg_sq().data_ptr<float>(), p.numel(),
               {static_cast<float>(beta1), static_cast<float>(beta2),
                static_cast<float>(o.weight_decay()), static_cast<float>(o.eps()),
                static_cast<float>(o.lr() / correction1),
                static_cast<float>(1 / std::sqrt(correction2))});
      }
    }
    return {};
  }

 private:
  struct Constants {
    float beta1, beta2, weight_decay, eps, step_size, inv_sqrt_correction2;
  };

  static bool fusable(const torch::Tensor& p, const torch::optim::OptimizerParamGroup& group) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    const torch::Tensor& g = p.grad();
    return !o.amsgrad() && p.device().is_cpu() && p.scalar_type() == torch::kFloat32 &&
           g.scalar_type() == torch::kFloat32 && p.is_contiguous() && g.is_contiguous() &&
           !g.is_sparse();
  }

  static void update(float* p, const float* grad, float* m, float* v, int64_t n, Constants c) {
    at::parallel_for(0, n, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float g = grad[i] + c.weight_decay * p[i];
        m[i] = c.beta1 * m[i] + (1 - c.beta1) * g;
        v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g;
        p[i] -= c.step_size * m[i] / (std::sqrt(v[i]) * c.inv_sqrt_correction2 + c.eps);
      }
    });
  }
};

}  // namespace

const Matrix& raw_counts(const CellData& data, int modality, const std::string& who) {
  const Modality& m = data.modalities.at(modality);
  if (m.counts.empty())
    throw BadData(who + " needs the raw counts of modality '" + m.name +
                  "', but the data set has none");
  return m.counts;
}

torch::Tensor library_sizes(const Matrix& counts) {
  if (!counts.is_csr()) return counts.dense.sum(1);
  torch::Tensor totals = torch::zeros({counts.rows}, torch::kFloat64);
  double* t = totals.data_ptr<double>();
  const int64_t* p = counts.indptr.data_ptr<int64_t>();
  const float* v = counts.values.data_ptr<float>();
  for (int64_t r = 0; r < counts.rows; ++r)
    for (int64_t k = p[r]; k < p[r + 1]; ++k) t[r] += v[k];
  return totals.to(torch::kFloat32);
}

LossTrainer::LossTrainer(HostContext& host, const TrainOptions& train, std::vector<int> modalities,
                         LossTrainerOptions options)
    : host_(host),
      train_(train),
      modalities_(std::move(modalities)),
      options_(std::move(options)),
      device_(parse_device(train.device)) {
  if (options_.epochs <= 0) options_.epochs = train_.epochs;
  if (options_.learning_rate <= 0) options_.learning_rate = train_.learning_rate;
}

CellBatch LossTrainer::batch_of(const CellData& data, const torch::Tensor& domains,
                                const torch::Tensor& cell_ids) const {
  CellBatch batch;
  batch.cell_ids = cell_ids;
  if (domains.defined()) batch.domains = domains.index_select(0, cell_ids).to(device_);
  for (int m : modalities_) {
    if (options_.values)
      batch.x.push_back(data.modalities.at(m).X.rows_dense(cell_ids).to(device_));
    if (!options_.counts) continue;
    torch::Tensor counts = raw_counts(data, m, "this method").rows_dense(cell_ids);
    batch.library.push_back(counts.sum(1, /*keepdim=*/true).to(device_));
    batch.counts.push_back(counts.to(device_));
  }
  return batch;
}

LossTrainResult LossTrainer::fit(const CellData& data, torch::nn::Module& model,
                                 const std::function<StepLoss(const CellBatch&)>& loss) {
  const std::string& stage = options_.stage;
  const std::string prefix = stage == "train" ? "" : stage + "_";
  // The cells that can be trained on.
  torch::Tensor cells = torch::arange(data.n_cells(), torch::kInt64);
  if (options_.drop_empty_cells && !modalities_.empty()) {
    const Modality& first = data.modalities.at(modalities_.front());
    const torch::Tensor nonempty =
        library_sizes(raw_counts(data, modalities_.front(), "this method")) > 0;
    cells = cells.masked_select(nonempty);
    const int64_t dropped = data.n_cells() - cells.size(0);
    if (dropped > 0)
      host_.info(std::to_string(dropped) + " of " + std::to_string(data.n_cells()) +
                 " cells have no counts in the " + std::to_string(first.features.size()) +
                 " features of modality '" + first.name +
                 "' and are left out of training (they are still embedded)");
  }
  // The validation cells: a seeded draw, the rest trains (ceil, as scvi-tools' data splitter).
  const int64_t n = cells.size(0);
  const int64_t n_train = std::min<int64_t>(
      n, static_cast<int64_t>(std::ceil(options_.train_fraction * static_cast<double>(n))));
  auto split_rng = at::make_generator<at::CPUGeneratorImpl>(mix_seed(train_.seed, 0x5b1170));
  const torch::Tensor shuffled =
      cells.index_select(0, torch::randperm(n, split_rng, torch::kInt64));
  const torch::Tensor train_cells = shuffled.slice(0, 0, n_train);
  const torch::Tensor validation_cells = shuffled.slice(0, n_train, n);
  const int64_t batch_size = train_.batch_size;
  if (n_train < options_.min_batch)
    throw BadData(stage + ": only " + std::to_string(n_train) +
                  " cells to train on; a mini-batch needs at least " +
                  std::to_string(options_.min_batch));
  int64_t steps = (n_train + batch_size - 1) / batch_size;
  if (n_train % batch_size != 0 && n_train % batch_size < options_.min_batch) --steps;

  // Adam over the trainable parameters; submodules with a learning-rate factor get their group.
  model.to(device_);
  std::vector<torch::Tensor> plain;
  std::vector<std::vector<torch::Tensor>> factored(options_.learning_rate_factors.size());
  for (const auto& item : model.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    size_t group = 0;
    for (; group < factored.size(); ++group)
      if (item.key().rfind(options_.learning_rate_factors[group].first, 0) == 0) break;
    (group < factored.size() ? factored[group] : plain).push_back(item.value());
  }
  auto adam = [&](double factor) {
    return std::make_unique<torch::optim::AdamOptions>(options_.learning_rate * factor);
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> group_factor;
  auto add_group = [&](std::vector<torch::Tensor> params, double factor) {
    if (params.empty()) return;
    auto o = adam(factor);
    o->eps(options_.adam_eps).weight_decay(train_.weight_decay).amsgrad(options_.amsgrad);
    groups.emplace_back(std::move(params), std::move(o));
    group_factor.push_back(factor);
  };
  add_group(plain, 1.0);
  for (size_t g = 0; g < factored.size(); ++g)
    add_group(factored[g], options_.learning_rate_factors[g].second);
  if (groups.empty()) throw InvalidArgument(stage + ": the model has no trainable parameter");
  OnePassAdam optimizer(groups, torch::optim::AdamOptions(options_.learning_rate)
                                    .eps(options_.adam_eps)
                                    .weight_decay(train_.weight_decay)
                                    .amsgrad(options_.amsgrad));

  StopState state;
  state.learning_rate = options_.learning_rate;
  LossTrainResult result;
  int64_t first_epoch = 0;
  if (!train_.resume_from.empty()) {
    const fs::path file = checkpoint_path(train_.resume_from, stage);
    if (fs::exists(file)) {
      torch::Tensor saved;
      first_epoch = detail::read_checkpoint(file, model, optimizer, device_, &saved) + 1;
      state = from_tensor(saved);
      host_.info("resumed " + stage + " from " + file.string() + " after epoch " +
                 std::to_string(first_epoch));
    } else if (!has_any_checkpoint(train_.resume_from)) {
      // A later stage may start fresh after an earlier one finished; no checkpoint at all means
      // the folder is not one.
      throw InvalidArgument("train.resume_from: no checkpoint in '" + train_.resume_from + "'");
    }
  }
  result.epochs_run = first_epoch;
  std::vector<torch::Tensor> best;  // restore_best: the weights of state.best_epoch
  if (options_.restore_best && state.best_epoch >= 0) {
    const fs::path file = best_path(train_.resume_from, stage);
    if (!fs::exists(file))
      throw BadData(stage + ": '" + file.string() + "' is missing: it holds the weights of epoch " +
                    std::to_string(state.best_epoch + 1) + ", the best so far");
    torch::load(best, file.string());
  }
  const auto finish = [&] {
    if (options_.restore_best && state.best_epoch >= 0) {
      if (state.best_epoch + 1 != result.epochs_run) {
        restore(model, best);
        host_.info(stage + ": kept the weights of epoch " + std::to_string(state.best_epoch + 1) +
                   " of " + std::to_string(result.epochs_run) + ", whose " + options_.monitor +
                   " was the lowest (" + std::to_string(state.best_value) + ")");
      }
      result.best_epoch = state.best_epoch;
    }
    model.eval();
    return result;
  };
  if (state.stopped) {
    result.stopped_early = true;
    return finish();
  }

  const int64_t epochs = options_.epochs;
  const torch::Tensor domains = batch_codes(data);
  const bool has_validation = validation_cells.size(0) > 0;
  for (int64_t epoch = first_epoch; epoch < epochs; ++epoch) {
    const double schedule =
        train_.step_schedule
            ? std::pow(train_.gamma, epoch / std::max<int64_t>(1, train_.step_size))
            : 1.0;
    for (size_t g = 0; g < optimizer.param_groups().size(); ++g)
      optimizer.param_groups()[g].options().set_lr(state.learning_rate * schedule *
                                                   group_factor[g]);
    if (options_.before_epoch && !options_.before_epoch(epoch)) {
      state.stopped = true;
      result.stopped_early = true;
      if (!train_.checkpoint_dir.empty() && train_.checkpoint_every > 0)
        detail::write_checkpoint(checkpoint_path(train_.checkpoint_dir, stage), model, optimizer,
                                 epoch - 1, to_tensor(state));
      break;
    }
    // Dropout and sampling inside the model draw from the global generator: reseeded per stage
    // and epoch so that a resumed run continues exactly as an uninterrupted one.
    const uint64_t stage_seed = stage_hash(stage);
    torch::manual_seed(mix_seed(train_.seed, stage_seed, epoch, 1));
    auto order_rng =
        at::make_generator<at::CPUGeneratorImpl>(mix_seed(train_.seed, stage_seed, epoch, 2));
    const torch::Tensor order =
        train_cells.index_select(0, torch::randperm(n_train, order_rng, torch::kInt64));
    model.train();
    EpochSums train_sums;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      CellBatch batch = batch_of(
          data, domains, order.slice(0, s * batch_size, std::min(n_train, (s + 1) * batch_size)));
      batch.epoch = epoch;
      batch.epochs = epochs;
      batch.step = epoch * steps + s;
      StepLoss step = loss(batch);
      if (!torch::isfinite(step.loss).item<bool>())
        throw BadData(stage + ": the training loss became " +
                      std::to_string(step.loss.item<double>()) + " at epoch " +
                      std::to_string(epoch + 1) + "; try a smaller learning rate");
      optimizer.zero_grad();
      step.loss.backward();
      if (options_.clip_grad_norm > 0)
        torch::nn::utils::clip_grad_norm_(model.parameters(), options_.clip_grad_norm);
      optimizer.step();
      if (options_.after_step) options_.after_step(batch);
      train_sums.add(step, batch.cell_ids.size(0));
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      host_.progress(stage, epoch * steps + s + 1, epochs * steps,
                     loss_line(epoch, epochs, train_sums.mean("loss"), NAN,
                               train_sums.cells / std::max(seconds, 1e-9)));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    EpochSums validation_sums;
    if (has_validation) {
      model.eval();
      torch::NoGradGuard no_grad;
      for (int64_t begin = 0; begin < validation_cells.size(0); begin += batch_size) {
        CellBatch batch =
            batch_of(data, domains,
                     validation_cells.slice(
                         0, begin, std::min(validation_cells.size(0), begin + batch_size)));
        batch.epoch = epoch;
        batch.epochs = epochs;
        batch.step = epoch * steps;
        batch.training = false;
        validation_sums.add(loss(batch), batch.cell_ids.size(0));
      }
      model.train();
    }

    const double train_loss = train_sums.mean("loss");
    result.train_loss.push_back(train_loss);
    host_.record(prefix + "loss", epoch, train_loss);
    for (const auto& name : train_sums.order)
      host_.record(prefix + name, epoch, train_sums.mean(name));
    double validation_loss = NAN;
    if (has_validation) {
      validation_loss = validation_sums.mean("loss");
      result.validation_loss.push_back(validation_loss);
      host_.record(prefix + "validation_loss", epoch, validation_loss);
      for (const auto& name : validation_sums.order)
        host_.record(prefix + "validation_" + name, epoch, validation_sums.mean(name));
    }
    host_.record(prefix + "learning_rate", epoch, state.learning_rate * schedule);
    host_.record(prefix + "cells_per_second", epoch, train_sums.cells / std::max(seconds, 1e-9));
    host_.debug(stage + " " +
                loss_line(epoch, epochs, train_loss, validation_loss,
                          train_sums.cells / std::max(seconds, 1e-9)));

    // Early stopping and reduce-on-plateau watch the validation value where there is one.
    const EpochSums& watched = has_validation ? validation_sums : train_sums;
    if (options_.monitor != "loss" && !watched.terms.count(options_.monitor))
      throw InvalidArgument(stage + ": the monitored term '" + options_.monitor +
                            "' is not among the loss terms");
    const double value = watched.mean(options_.monitor);
    if (options_.early_stopping_patience > 0) {
      if (value < state.best_stop - options_.early_stopping_min_delta) {
        state.best_stop = value;
        state.bad_stop = 0;
      } else if (++state.bad_stop >= options_.early_stopping_patience) {
        state.stopped = true;
        host_.info(stage + ": stopped early after epoch " + std::to_string(epoch + 1) + ": " +
                   options_.monitor + " did not improve for " + std::to_string(state.bad_stop) +
                   " epochs");
      }
    }
    if (options_.plateau_patience > 0) {
      if (value < state.best_plateau - options_.plateau_threshold) {
        state.best_plateau = value;
        state.bad_plateau = 0;
      } else if (++state.bad_plateau > options_.plateau_patience) {
        state.learning_rate =
            std::max(state.learning_rate * options_.plateau_factor, options_.min_learning_rate);
        state.bad_plateau = 0;
      }
    }
    if (options_.restore_best && value < state.best_value) {
      state.best_value = value;
      state.best_epoch = epoch;
      best = snapshot(model);
      if (!train_.checkpoint_dir.empty() && train_.checkpoint_every > 0)
        write_best(best_path(train_.checkpoint_dir, stage), best);
    }
    result.epochs_run = epoch + 1;
    const bool last = epoch + 1 == epochs || state.stopped;
    if (!train_.checkpoint_dir.empty() && train_.checkpoint_every > 0 &&
        ((epoch + 1) % train_.checkpoint_every == 0 || last))
      detail::write_checkpoint(checkpoint_path(train_.checkpoint_dir, stage), model, optimizer,
                               epoch, to_tensor(state));
    if (state.stopped) {
      result.stopped_early = true;
      break;
    }
  }
  return finish();
}

}  // namespace scssl
