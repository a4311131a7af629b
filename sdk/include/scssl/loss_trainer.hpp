// The training loop of the methods that learn from the cells themselves rather than from two
// augmented views (the generative models of docs/method-spec.md §12-13 and §17-19): one view per
// cell with its preprocessed values and, where asked, its raw counts; a held-out validation share
// whose loss is recorded every epoch; early stopping and reduce-on-plateau on a validation term;
// stages (pre-training, then joint training) that each checkpoint and resume; per-submodule
// learning rates. Deterministic for one seed on CPU, and a resumed run equals an uninterrupted one.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "scssl/cell_data.hpp"
#include "scssl/plugin.hpp"
#include "scssl/training.hpp"

namespace scssl {

// The raw counts the host keeps next to a modality's preprocessed values (same cells, same
// selected features; docs/method-spec.md §12.1). BadData naming `who` and the modality
// when there are none.
const Matrix& raw_counts(const CellData& data, int modality, const std::string& who);
// Total counts of every cell, float32 [n].
torch::Tensor library_sizes(const Matrix& counts);

// One mini-batch: the same cells in every used modality, on the training device.
struct CellBatch {
  torch::Tensor cell_ids;             // int64 [b], rows of the data given to fit() (CPU)
  torch::Tensor domains;              // int64 [b] batch codes, undefined without a batch column
  std::vector<torch::Tensor> x;       // with LossTrainerOptions::values: preprocessed values [b, g]
  std::vector<torch::Tensor> counts;  // with LossTrainerOptions::counts: raw counts [b, g]
  std::vector<torch::Tensor> library;  // with counts: total counts per cell, float32 [b, 1]
  int64_t epoch = 0;
  int64_t epochs = 0;
  int64_t step = 0;      // training steps taken before this one in this stage (0 for validation)
  bool training = true;  // false for validation batches (model in eval mode, no gradient)
};

// What the loss function returns for one batch.
struct StepLoss {
  torch::Tensor loss;  // scalar: minimised on training batches, averaged on validation batches
  // Further scalars to average over the epoch. history.csv gets "<stage>_loss", "<stage>_<name>",
  // "<stage>_validation_loss" and "<stage>_validation_<name>" per epoch, without the "<stage>_"
  // for the stage named "train" (e.g. "loss", "elbo", "validation_elbo").
  std::vector<std::pair<std::string, torch::Tensor>> terms;
};

struct LossTrainerOptions {
  // Names the history series, the checkpoint file (<stage>-checkpoint.pt) and the seeds; every
  // stage of a method has its own name.
  std::string stage = "train";
  int64_t epochs = 0;        // 0: TrainOptions::epochs
  double learning_rate = 0;  // 0: TrainOptions::learning_rate
  double adam_eps = 1e-8;
  bool amsgrad = false;
  // > 0: before each step the gradients are scaled down to at most this total L2 norm.
  double clip_grad_norm = 0;
  // Learning-rate factors of named submodules (a prefix of the parameter names, e.g. "critic"):
  // their parameters form their own Adam group with learning_rate * factor.
  std::vector<std::pair<std::string, double>> learning_rate_factors;
  bool values = true;   // fill CellBatch::x (a method that reads only counts turns it off)
  bool counts = false;  // fill CellBatch::counts and ::library (needs the host's raw counts)
  // Cells whose counts sum to zero in the first used modality have no library size: they are left
  // out of training and validation, with one logged line saying how many.
  bool drop_empty_cells = false;
  // The share of cells trained on; the others, drawn with the seed, are the validation cells.
  double train_fraction = 1.0;
  // A batch of fewer cells than this at the end of an epoch is dropped (BatchNorm needs 2).
  int64_t min_batch = 2;
  // The validation term watched by early stopping and reduce-on-plateau ("loss" or a term name).
  std::string monitor = "loss";
  int64_t early_stopping_patience = 0;  // epochs without improvement; 0 = never stop early
  double early_stopping_min_delta = 0;
  int64_t plateau_patience = 0;  // 0 = no reduce-on-plateau
  double plateau_factor = 0.6;
  double plateau_threshold = 0;  // absolute improvement that counts
  double min_learning_rate = 0;
  // At the end of the stage the model gets back the weights of the epoch with the lowest watched
  // value (the validation value where there is one), as the methods that keep their best model
  // do; with checkpoints that snapshot is saved too (<stage>-best.pt), so a resumed run ends alike.
  bool restore_best = false;
  // Called after every optimizer step (momentum updates, cluster targets); may be empty.
  std::function<void(const CellBatch&)> after_step;
  // Called at the start of every epoch before its first batch (e.g. DEC's target refresh);
  // returning false ends the stage there, as converged (checkpointed as finished).
  std::function<bool(int64_t epoch)> before_epoch;
};

struct LossTrainResult {
  std::vector<double> train_loss;       // per epoch trained in this call
  std::vector<double> validation_loss;  // per epoch, empty without validation cells
  int64_t epochs_run = 0;               // including epochs restored from a checkpoint
  bool stopped_early = false;
  int64_t best_epoch = -1;  // restore_best: the epoch (0-based) whose weights the model holds
};

class LossTrainer {
 public:
  // modalities: indexes into the data's modalities that the method uses, in order.
  LossTrainer(HostContext& host, const TrainOptions& train, std::vector<int> modalities,
              LossTrainerOptions options);

  // Trains every parameter of `model` that requires a gradient to minimise loss(batch). With
  // TrainOptions::resume_from pointing at a folder holding this stage's checkpoint, continues
  // after its epoch (and returns at once if the stage had finished).
  LossTrainResult fit(const CellData& data, torch::nn::Module& model,
                      const std::function<StepLoss(const CellBatch&)>& loss);

  torch::Device device() const { return device_; }

 private:
  // The batch of the given cells (rows of `data`); `domains` are the batch codes of every cell
  // (undefined without a batch column), taken once per fit() rather than once per batch.
  CellBatch batch_of(const CellData& data, const torch::Tensor& domains,
                     const torch::Tensor& cell_ids) const;

  HostContext& host_;
  TrainOptions train_;
  std::vector<int> modalities_;
  LossTrainerOptions options_;
  torch::Device device_;
};

}  // namespace scssl
