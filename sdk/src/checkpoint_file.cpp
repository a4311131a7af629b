#include "checkpoint_file.hpp"

#include "scssl/params.hpp"

namespace fs = std::filesystem;

namespace scssl::detail {

void write_checkpoint(const fs::path& file, torch::nn::Module& model,
                      torch::optim::Optimizer& optimizer, int64_t epoch,
                      const torch::Tensor& state) {
  fs::create_directories(file.parent_path());
  torch::serialize::OutputArchive archive, model_archive, optimizer_archive;
  model.save(model_archive);
  optimizer.save(optimizer_archive);
  archive.write("model", model_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("epoch", torch::tensor(epoch));
  if (state.defined()) archive.write("state", state);
  const fs::path tmp = file.parent_path() / ("." + file.filename().string() + ".tmp");
  archive.save_to(tmp.string());
  fs::rename(tmp, file);
}

int64_t read_checkpoint(const fs::path& file, torch::nn::Module& model,
                        torch::optim::Optimizer& optimizer, const torch::Device& device,
                        torch::Tensor* state) {
  torch::serialize::InputArchive archive, model_archive, optimizer_archive;
  try {
    archive.load_from(file.string(), device);
    archive.read("model", model_archive);
    archive.read("optimizer", optimizer_archive);
    model.load(model_archive);
    optimizer.load(optimizer_archive);
    torch::Tensor epoch;
    archive.read("epoch", epoch);
    if (state) archive.read("state", *state);
    return epoch.item<int64_t>();
  } catch (const c10::Error& e) {
    throw BadData("checkpoint '" + file.string() +
                  "' does not fit this method and configuration (" + e.what_without_backtrace() +
                  ")");
  }
}

}  // namespace scssl::detail
