// One checkpoint file of the SDK's training loops (Trainer, LossTrainer): the model, the
// optimiser, the last epoch trained and, optionally, a loop's own state as a tensor.
#pragma once

#include <torch/torch.h>

#include <filesystem>

namespace scssl::detail {

// Written under a temporary name and renamed: a crash mid-save keeps the previous checkpoint.
void write_checkpoint(const std::filesystem::path& file, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, int64_t epoch,
                      const torch::Tensor& state = {});

// Restores model and optimiser and returns the epoch; `state` (if given) receives the loop's
// state. BadData naming the file when it does not fit the model.
int64_t read_checkpoint(const std::filesystem::path& file, torch::nn::Module& model,
                        torch::optim::Optimizer& optimizer, const torch::Device& device,
                        torch::Tensor* state = nullptr);

}  // namespace scssl::detail
