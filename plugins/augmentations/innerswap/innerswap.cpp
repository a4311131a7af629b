// innerswap: int(G * fraction) // 2 random gene pairs per cell (drawn with replacement) exchange
// their values inside the cell (docs/method-spec.md §0.6).
//
// The swaps are applied one after another, so the result is always a permutation of the cell's
// values. The Python references assign all pairs at once with numpy/torch fancy indexing, which
// drops and duplicates values where pairs share a gene; only those overlapping cases differ.

#include "scssl/plugin.hpp"

namespace {

class InnerSwap final : public scssl::IAugmentation {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {scssl::ParamSpec("fraction", SCSSL_PARAM_FLOAT, "0.1",
                             "share of genes involved: int(genes * fraction) // 2 pairs per cell")
                .at_least(0)
                .at_most(1)};
  }

  InnerSwap(const scssl::ParamSet& params, scssl::HostContext& host)
      : IAugmentation(host), fraction_(params.get_float("fraction")) {}

  void apply(torch::Tensor& batch, const torch::Tensor&, int, torch::Generator& rng) override {
    if (batch.dim() != 2)
      throw scssl::BadData("innerswap: the batch must be a [cells, genes] matrix");
    const int64_t cells = batch.size(0), genes = batch.size(1);
    const int64_t pairs = static_cast<int64_t>(static_cast<double>(genes) * fraction_) / 2;
    if (cells == 0 || pairs == 0) return;
    torch::Tensor ends = torch::randint(0, genes, {cells, pairs, 2}, rng, torch::kInt64);
    // Compose the transpositions into one column permutation per cell. This touches only
    // cells * pairs integers; the values then move in a single gather.
    torch::Tensor order = torch::arange(genes, torch::kInt64).repeat({cells, 1}).contiguous();
    int64_t* o = order.data_ptr<int64_t>();
    const int64_t* e = ends.data_ptr<int64_t>();
    for (int64_t c = 0; c < cells; ++c) {
      int64_t* row = o + c * genes;
      const int64_t* pair = e + c * pairs * 2;
      for (int64_t p = 0; p < pairs; ++p) std::swap(row[pair[2 * p]], row[pair[2 * p + 1]]);
    }
    batch.copy_(batch.gather(1, order));
  }

 private:
  double fraction_;
};

}  // namespace

SCSSL_PLUGIN(InnerSwap, "innerswap", "1.0.0",
             "Swap the values of int(G*fraction)//2 random gene pairs within each cell")
