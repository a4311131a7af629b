// random_projection: embeds cells by a seeded Gaussian random projection of the preprocessed
// matrix (Johnson-Lindenstrauss). A baseline with no training, and a complete example of a
// method plugin: a parameter schema with bounds, a check of its input, fit/embed, save/load.
#include <filesystem>

#include <scssl/plugin.hpp>

namespace {

class RandomProjection final : public scssl::IMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    // The host checks every value against these bounds (with the config file and line) before
    // the constructor runs, so the constructor does not repeat them.
    return {scssl::ParamSpec("dim", SCSSL_PARAM_INT, "32", "size of the embedding").at_least(1),
            scssl::ParamSpec("seed", SCSSL_PARAM_INT, "0", "seed of the projection matrix")
                .at_least(0)};
  }

  RandomProjection(const scssl::ParamSet& params, scssl::HostContext& host)
      : IMethod(host), dim_(params.get_int("dim")), seed_(params.get_int("seed")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions&) override {
    const int64_t features = train.modalities.at(0).X.cols;
    torch::manual_seed(static_cast<uint64_t>(seed_));
    // Entries N(0, 1/dim) keep expected squared distances unchanged.
    projection_ = torch::randn({features, dim_}) / std::sqrt(static_cast<double>(dim_));
    host_.info("random_projection: " + std::to_string(features) + " features -> " +
               std::to_string(dim_) + " dimensions");
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    const scssl::Matrix& x = data.modalities.at(0).X;
    if (!projection_.defined()) throw scssl::InvalidArgument("random_projection: embed before fit");
    if (x.cols != projection_.size(0))
      throw scssl::BadData("random_projection: fitted on " + std::to_string(projection_.size(0)) +
                           " features, got " + std::to_string(x.cols));
    // Densify a block of rows at a time: the whole cells x genes matrix never is.
    torch::Tensor out = torch::empty({x.rows, dim_});
    for (int64_t begin = 0; begin < x.rows; begin += 4096) {
      const int64_t end = std::min(x.rows, begin + 4096);
      out.slice(0, begin, end).copy_(torch::matmul(x.slice_dense(begin, end), projection_));
    }
    return out;
  }

  void save(const std::string& directory) const override {
    std::filesystem::create_directories(directory);
    torch::save(projection_, directory + "/projection.pt");
  }

  void load(const std::string& directory) override {
    torch::load(projection_, directory + "/projection.pt");
  }

 private:
  int64_t dim_;
  int64_t seed_;
  torch::Tensor projection_;
};

}  // namespace

SCSSL_PLUGIN(RandomProjection, "random_projection", "0.1.0",
             "Seeded Gaussian random projection of the preprocessed matrix (no training)")
