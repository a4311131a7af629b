// mask: picks exactly int(fraction * G) distinct genes of every cell (docs/method-spec.md §0.6).
// Two conventions exist and both are offered: CLEAR sets the picked genes to 0 ("zero"); the
// scSSL-Bench code multiplies by the pick, i.e. keeps only those genes ("keep").

#include "scssl/graphs.hpp"
#include "scssl/plugin.hpp"

namespace {

class Mask final : public scssl::IAugmentation {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("fraction", SCSSL_PARAM_FLOAT, "0.2",
                         "share of genes picked per cell; int(fraction * genes) genes are picked")
            .at_least(0)
            .at_most(1),
        scssl::ParamSpec("mode", SCSSL_PARAM_STRING, "zero",
                         "\"zero\": set the picked genes to 0 (CLEAR); \"keep\": keep only the "
                         "picked genes and set all others to 0 (scSSL-Bench code)")
            .one_of({"zero", "keep"})};
  }

  Mask(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host),
        fraction_(params.get_float("fraction")),
        keep_(params.get_string("mode") == "keep") {}

  void apply(torch::Tensor& batch, const torch::Tensor&, int, torch::Generator& rng) override {
    if (batch.dim() != 2) throw scssl::BadData("mask: the batch must be a [cells, genes] matrix");
    const int64_t cells = batch.size(0), genes = batch.size(1);
    const int64_t count = static_cast<int64_t>(fraction_ * static_cast<double>(genes));
    if (cells == 0) return;
    torch::Tensor picked = scssl::random_subsets(cells, genes, count, rng);
    if (keep_) {
      torch::Tensor kept = batch.gather(1, picked);
      batch.zero_();
      batch.scatter_(1, picked, kept);
    } else {
      batch.scatter_(1, picked, 0.0);
    }
  }

 private:
  double fraction_;
  bool keep_;
};

}  // namespace

SCSSL_PLUGIN(Mask, "mask", "1.0.0",
             "Random gene masking: zero int(fraction*G) genes per cell, or keep only them")
