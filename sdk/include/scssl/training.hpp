// The training loop every SSL method plugin uses (docs/method-spec.md §0.4): shuffled mini-batches
// straight from the sparse matrix, two augmented views per cell through the host's augmentation
// pipeline, Adam (or SGD with momentum) with a constant or step learning-rate schedule, progress,
// checkpoints and resume.
// Deterministic for one seed on CPU: every random draw is seeded from (seed, epoch, step).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/plugin.hpp"

namespace scssl {

// One mini-batch: the same cells in two views, per modality, on the training device.
struct TrainBatch {
  torch::Tensor cell_ids;            // int64 [b], rows of the training data (CPU)
  torch::Tensor domains;             // int64 [b] batch codes, or undefined without a batch column
  std::vector<torch::Tensor> view0;  // per used modality: float32 [b, features]
  std::vector<torch::Tensor> view1;
  int64_t epoch = 0;
  int64_t epochs = 0;
  int64_t step = 0;  // global step
};

struct TrainCallbacks {
  // The loss of one mini-batch (the trainer runs backward and the optimizer step).
  std::function<torch::Tensor(const TrainBatch&)> loss;
  // Called after every optimizer step (momentum encoders, memory banks); may be empty.
  std::function<void(const TrainBatch&)> after_step;
};

struct TrainResult {
  std::vector<double> epoch_loss;  // mean loss of every epoch trained in this call
  int64_t first_epoch = 0;         // > 0 when resumed from a checkpoint
};

// The optimiser that Trainer::fit steps (docs/method-spec.md §0.4). Both use train.learning_rate
// and add train.weight_decay to the gradient as an L2 term.
struct OptimizerChoice {
  enum class Kind { adam, sgd };
  Kind kind = Kind::adam;  // Adam with LibTorch's defaults: betas (0.9, 0.999), eps 1e-8
  double momentum = 0.9;   // SGD only: heavy-ball momentum, no dampening, not Nesterov
};

class Trainer {
 public:
  // modalities: indexes into train.modalities that the method uses, in order.
  Trainer(HostContext& host, const TrainOptions& options, std::vector<int> modalities,
          OptimizerChoice optimizer = {});

  // Trains every parameter of `model` that requires a gradient. `model` is saved to and restored
  // from checkpoints with its buffers (memory banks, momentum copies).
  TrainResult fit(const CellData& train, torch::nn::Module& model, const TrainCallbacks& callbacks);

  torch::Device device() const { return device_; }

 private:
  HostContext& host_;
  TrainOptions options_;
  std::vector<int> modalities_;
  OptimizerChoice optimizer_;
  torch::Device device_;
};

// Parses "cpu", "cuda", "cuda:1"; InvalidArgument if CUDA is asked for but not available.
torch::Device parse_device(const std::string& text);

// Mixes values into a 64-bit seed (splitmix64), so streams for (seed, epoch, step, view) differ.
uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

// Domain codes (int64) of the training cells from the batch column, or undefined.
torch::Tensor batch_codes(const CellData& data);
// Number of batch categories (1 without a batch column).
int64_t batch_count(const CellData& data);

}  // namespace scssl
