// A trained model on disk: <directory>/model.pt holds the module's parameters and buffers plus
// the integers that shape it (gene count, batches, layer sizes), so that load() can rebuild the
// same architecture before reading the weights.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

namespace scssl {

// InvalidArgument naming `who` when `model` is null (nothing trained yet).
void save_model(const std::string& directory, const std::string& who,
                const std::shared_ptr<torch::nn::Module>& model, const std::vector<int64_t>& shape);

class SavedModel {
 public:
  // IoError naming `who` when there is no model.pt; BadData when it is not one.
  SavedModel(const std::string& directory, const std::string& who);
  const std::vector<int64_t>& shape() const { return shape_; }
  // Reads the weights into a module built from shape(); BadData when they do not fit it.
  void load_into(torch::nn::Module& model);

 private:
  std::string file_, who_;
  torch::serialize::InputArchive archive_;
  std::vector<int64_t> shape_;
};

}  // namespace scssl
