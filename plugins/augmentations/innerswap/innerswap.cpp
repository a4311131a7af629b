// innerswap: int(G * fraction) // 2 random gene pairs per cell (drawn with replacement) exchange
// their values inside the cell (docs/method-spec.md §0.6).
//
// The swaps are applied one after another, so the result is always a permutation of the cell's
// values. The Python references assign all pairs at once with numpy/torch fancy indexing, which
// drops and duplicates values where pairs share a gene; only those overlapping cases differ.

#include "scssl/graphs.hpp"
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
    // The swaps act on each row in place, in the order drawn, from the row's own stream.
    torch::Tensor rows = batch.contiguous().to(torch::kFloat);
    float* data = rows.data_ptr<float>();
    const uint64_t seed = scssl::draw_seed(rng);
    at::parallel_for(0, cells, 8, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        scssl::Xoshiro256 stream = scssl::row_stream(seed, c);
        float* row = data + c * genes;
        for (int64_t p = 0; p < pairs; ++p) {
          const int64_t a = scssl::uniform_below(stream, genes);
          std::swap(row[a], row[scssl::uniform_below(stream, genes)]);
        }
      }
    });
    if (!rows.is_same(batch)) batch.copy_(rows);
  }

 private:
  double fraction_;
};

}  // namespace

SCSSL_PLUGIN(InnerSwap, "innerswap", "1.0.0",
             "Swap the values of int(G*fraction)//2 random gene pairs within each cell")
