#include "augmentation_pipeline.hpp"

#include <ATen/CPUGeneratorImpl.h>

namespace scssl::host {

AugmentationPipeline::AugmentationPipeline(const std::vector<AugmentationChoice>& choices,
                                           const CellData& train, HostServices& services) {
  for (const auto& c : choices) {
    const int modality = train.modality_index(c.modality);
    if (modality < 0)
      throw InvalidArgument("augmentation '" + c.choice.plugin->name() +
                            "' is configured for modality '" + c.modality +
                            "', which the data set does not have");
    steps_.push_back({std::make_unique<Augmentation>(*c.choice.plugin, c.choice.params, services),
                      modality, c.probability});
  }
}

void AugmentationPipeline::prepare(const scssl_cell_data* train_view) {
  for (auto& s : steps_) s.augmentation->prepare(train_view, s.modality);
}

void AugmentationPipeline::apply(int modality, int view, torch::Tensor& batch,
                                 const torch::Tensor& cell_ids, uint64_t seed) {
  uint64_t step_seed = seed;
  for (auto& s : steps_) {
    // splitmix64 step: independent, reproducible streams for each augmentation of the chain.
    step_seed += 0x9e3779b97f4a7c15ULL;
    if (s.modality != modality || s.probability <= 0) continue;
    if (s.probability >= 1) {
      s.augmentation->apply(batch, cell_ids, view, step_seed);
      continue;
    }
    auto rng = at::make_generator<at::CPUGeneratorImpl>(step_seed);
    torch::Tensor chosen = (torch::rand({batch.size(0)}, rng) < s.probability).nonzero().flatten();
    if (chosen.numel() == 0) continue;
    torch::Tensor rows = batch.index_select(0, chosen).contiguous();
    torch::Tensor ids = cell_ids.index_select(0, chosen).contiguous();
    s.augmentation->apply(rows, ids, view, step_seed ^ 0x5bd1e995ULL);
    batch.index_copy_(0, chosen, rows);
  }
}

int AugmentationPipeline::count(int modality) const {
  int n = 0;
  for (const auto& s : steps_) n += s.modality == modality;
  return n;
}

}  // namespace scssl::host
