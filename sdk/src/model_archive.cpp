#include "scssl/model_archive.hpp"

#include <filesystem>

#include "scssl/params.hpp"

namespace scssl {

void save_model(const std::string& directory, const std::string& who,
                const std::shared_ptr<torch::nn::Module>& model,
                const std::vector<int64_t>& shape) {
  if (!model) throw InvalidArgument(who + ": nothing to save, the method has not been trained");
  std::filesystem::create_directories(directory);
  torch::serialize::OutputArchive archive, weights;
  model->save(weights);
  archive.write("weights", weights);
  archive.write("shape", torch::tensor(shape, torch::kInt64));
  archive.save_to(directory + "/model.pt");
}

SavedModel::SavedModel(const std::string& directory, const std::string& who)
    : file_(directory + "/model.pt"), who_(who) {
  if (!std::filesystem::exists(file_)) throw IoError(who + ": no saved model at '" + file_ + "'");
  try {
    archive_.load_from(file_);
    torch::Tensor shape;
    archive_.read("shape", shape);
    shape = shape.contiguous();
    shape_.assign(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.numel());
  } catch (const c10::Error& e) {
    throw BadData(who + ": '" + file_ + "' is not a saved " + who + " model (" +
                  e.what_without_backtrace() + ")");
  }
}

void SavedModel::load_into(torch::nn::Module& model) {
  try {
    torch::serialize::InputArchive weights;
    archive_.read("weights", weights);
    model.load(weights);
  } catch (const c10::Error& e) {
    throw BadData(who_ + ": the weights in '" + file_ + "' do not fit the model (" +
                  e.what_without_backtrace() + ")");
  }
}

}  // namespace scssl
