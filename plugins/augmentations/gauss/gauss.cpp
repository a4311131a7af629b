// gauss: adds N(0, sigma^2) noise to exactly int(fraction * G) distinct random genes of every
// cell (docs/method-spec.md §0.6). The defaults are the bench's CLEAR-style pipeline (0.8, 0.2);
// CLEAR's own code ignored its sigma argument and always used 0.5.

#include "scssl/graphs.hpp"
#include "scssl/plugin.hpp"

namespace {

class Gauss final : public scssl::IAugmentation {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("fraction", SCSSL_PARAM_FLOAT, "0.8",
                             "share of genes that get noise; int(fraction * genes) genes per cell")
                .at_least(0)
                .at_most(1),
            scssl::ParamSpec("sigma", SCSSL_PARAM_FLOAT, "0.2",
                             "standard deviation of the noise (CLEAR's code hard-coded 0.5)")
                .at_least(0)};
  }

  Gauss(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host),
        fraction_(params.get_float("fraction")),
        sigma_(params.get_float("sigma")) {}

  void apply(torch::Tensor& batch, const torch::Tensor&, int, torch::Generator& rng) override {
    if (batch.dim() != 2) throw scssl::BadData("gauss: the batch must be a [cells, genes] matrix");
    const int64_t cells = batch.size(0), genes = batch.size(1);
    const int64_t count = static_cast<int64_t>(fraction_ * static_cast<double>(genes));
    // The genes are picked and their noise added in one pass over each row, from the row's own
    // stream, rather than through index and noise tensors (docs/performance.md, "Training").
    torch::Tensor rows = batch.contiguous().to(torch::kFloat);
    float* data = rows.data_ptr<float>();
    scssl::for_each_random_subset(
        cells, genes, count, rng, [&](int64_t r, const int64_t* picked, scssl::Xoshiro256& stream) {
          float* row = data + r * genes;
          for (int64_t i = 0; i < count; ++i)
            row[picked[i]] += static_cast<float>(sigma_ * scssl::StandardNormal::draw(stream));
        });
    if (!rows.is_same(batch)) batch.copy_(rows);
  }

 private:
  double fraction_;
  double sigma_;
};

}  // namespace

SCSSL_PLUGIN(Gauss, "gauss", "1.0.0",
             "Gaussian noise N(0, sigma^2) on int(fraction*G) random genes per cell")
