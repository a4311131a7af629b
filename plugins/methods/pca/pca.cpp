// PCA: the linear, unintegrated baseline of the study (docs/method-spec.md §20). Fitted on the
// training cells, then every cell is projected onto the same components.
#include <filesystem>

#include "scssl/pca.hpp"
#include "scssl/plugin.hpp"

namespace {

class Pca final : public scssl::IMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("n_components", SCSSL_PARAM_INT, "50",
                             "number of principal components (clipped to cells - 1 and features)")
                .at_least(1),
            {"modality", SCSSL_PARAM_STRING, "RNA",
             "modality to decompose; the first one if the data set has no such modality"}};
  }

  Pca(const scssl::ParamSet& params, scssl::HostContext& host)
      : IMethod(host),
        n_components_(params.get_int("n_components")),
        modality_(params.get_string("modality")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions&) override {
    model_ = scssl::fit_pca(matrix(train), n_components_);
    if (model_.n_components() < n_components_)
      host_.warn("pca: only " + std::to_string(model_.n_components()) +
                 " components are possible on this data (asked for " +
                 std::to_string(n_components_) + ")");
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!model_.components.defined()) throw scssl::InvalidArgument("pca: embed() before fit()");
    return model_.transform(matrix(data));
  }

  void save(const std::string& directory) const override {
    std::filesystem::create_directories(directory);
    torch::save(
        std::vector<torch::Tensor>{model_.mean, model_.components, model_.explained_variance},
        directory + "/pca.pt");
  }

  void load(const std::string& directory) override {
    std::vector<torch::Tensor> parts;
    torch::load(parts, directory + "/pca.pt");
    if (parts.size() != 3) throw scssl::BadData(directory + "/pca.pt is not a saved PCA model");
    model_ = {parts[0], parts[1], parts[2]};
  }

 private:
  const scssl::Matrix& matrix(const scssl::CellData& data) const {
    const int m = data.modality_index(modality_);
    return data.modalities.at(m < 0 ? 0 : m).X;
  }

  int64_t n_components_;
  std::string modality_;
  scssl::PcaModel model_;
};

}  // namespace

SCSSL_PLUGIN(Pca, "pca", "1.0.0",
             "Principal component analysis of the preprocessed matrix (unintegrated baseline)")
