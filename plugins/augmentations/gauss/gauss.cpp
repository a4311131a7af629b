// gauss: adds N(0, sigma^2) noise to exactly int(fraction * G) distinct random genes of every
// cell (methods.md §0.6). The defaults are the bench's CLEAR-style pipeline (0.8, 0.2); CLEAR's
// own code ignored its sigma argument and always used 0.5.

#include "scssl/graphs.hpp"
#include "scssl/plugin.hpp"

namespace {

class Gauss final : public scssl::IAugmentation {
 public:
  static std::vector<scssl_param_spec> parameters() {
    return {{"fraction", SCSSL_PARAM_FLOAT, "0.8",
             "share of genes that get noise, in [0, 1]; int(fraction * genes) genes per cell"},
            {"sigma", SCSSL_PARAM_FLOAT, "0.2",
             "standard deviation of the noise, >= 0 (CLEAR's code hard-coded 0.5)"}};
  }

  Gauss(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host),
        fraction_(params.get_float("fraction")),
        sigma_(params.get_float("sigma")) {
    if (!(fraction_ >= 0 && fraction_ <= 1))
      throw scssl::InvalidArgument("gauss: parameter 'fraction' must be between 0 and 1, got " +
                                   scssl::format_param(fraction_));
    if (!(sigma_ >= 0) || std::isinf(sigma_))
      throw scssl::InvalidArgument("gauss: parameter 'sigma' must be a finite number >= 0, got " +
                                   scssl::format_param(sigma_));
  }

  void apply(torch::Tensor& batch, const torch::Tensor&, int, torch::Generator& rng) override {
    if (batch.dim() != 2) throw scssl::BadData("gauss: the batch must be a [cells, genes] matrix");
    const int64_t cells = batch.size(0), genes = batch.size(1);
    const int64_t count = static_cast<int64_t>(fraction_ * static_cast<double>(genes));
    if (cells == 0) return;
    torch::Tensor picked = scssl::random_subsets(cells, genes, count, rng);
    torch::Tensor noise = torch::randn({cells, count}, rng, batch.options()) * sigma_;
    batch.scatter_add_(1, picked, noise);
  }

 private:
  double fraction_;
  double sigma_;
};

}  // namespace

SCSSL_PLUGIN(Gauss, "gauss", "1.0.0",
             "Gaussian noise N(0, sigma^2) on int(fraction*G) random genes per cell")
