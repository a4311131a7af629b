// The chain of augmentation plugins of a run, one chain per modality. Each augmentation is applied
// with its probability per cell: the selected rows of a mini-batch go through the plugin together.
#pragma once

#include <memory>
#include <vector>

#include "adapters.hpp"
#include "config.hpp"

namespace scssl::host {

class AugmentationPipeline {
 public:
  AugmentationPipeline(const std::vector<AugmentationChoice>& choices, const CellData& train,
                       HostServices& services);
  // Builds graphs etc. once; `train_view` must outlive the pipeline.
  void prepare(const scssl_cell_data* train_view);
  void apply(int modality, int view, torch::Tensor& batch, const torch::Tensor& cell_ids,
             uint64_t seed);
  int count(int modality) const;

 private:
  struct Step {
    std::unique_ptr<Augmentation> augmentation;
    int modality;
    double probability;
  };
  std::vector<Step> steps_;
};

}  // namespace scssl::host
