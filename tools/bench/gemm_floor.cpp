// scssl-bench-gemm: the time the BLAS needs for the matrix products of one training epoch of a
// multilayer perceptron, measured on the spot with the same LibTorch and BLAS as scssl-host. It is
// the floor that tools/bench_training.sh compares an epoch with (docs/performance.md, "Training").
//
// Per step, view and layer (in -> out) with batch B: the forward product (B x in x out), the
// weight gradient (in x B x out) and, except for the first layer, whose input needs no gradient,
// the input gradient (B x out x in). With GRAM = D, also per step and view a Gram matrix z^T z of
// a B x D matrix (VICReg's covariance term) and the two products of its gradient.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "blas_kernels.hpp"
#include "resources.hpp"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: scssl-bench-gemm BATCH STEPS VIEWS LAYERS [GRAM]\n"
               "  LAYERS: the widths, comma-separated, e.g. 2000,128,64,64,256\n"
               "  GRAM: the width D of a B x D matrix whose Gram matrix each view forms\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // The same memory policy and OpenBLAS kernels as scssl-host, which may restart itself to get
  // them.
  scssl::host::reuse_freed_memory();
  scssl::host::restart_with_native_blas_kernels(argv);
  if (argc != 5 && argc != 6) return usage();
  const int64_t gram = argc == 6 ? std::atoll(argv[5]) : 0;
  const int64_t batch = std::atoll(argv[1]), steps = std::atoll(argv[2]),
                views = std::atoll(argv[3]);
  std::vector<int64_t> widths;
  std::stringstream list(argv[4]);
  for (std::string w; std::getline(list, w, ',');) widths.push_back(std::atoll(w.c_str()));
  if (batch < 1 || steps < 1 || views < 1 || widths.size() < 2 || gram < 0) return usage();

  torch::manual_seed(0);
  struct Layer {
    torch::Tensor x, w, grad_out;
  };
  std::vector<Layer> layers;
  for (size_t l = 0; l + 1 < widths.size(); ++l)
    layers.push_back({torch::randn({batch, widths[l]}), torch::randn({widths[l + 1], widths[l]}),
                      torch::randn({batch, widths[l + 1]})});
  const torch::Tensor z = torch::randn({batch, gram}), grad_gram = torch::randn({gram, gram});
  double flops = 0;
  auto epoch = [&] {
    for (int64_t s = 0; s < steps * views; ++s) {
      if (gram > 0) {
        torch::mm(z.t(), z);          // forward
        torch::mm(z, grad_gram);      // gradient through the left factor
        torch::mm(z, grad_gram.t());  // and through the right one
      }
      for (size_t l = 0; l < layers.size(); ++l) {
        const Layer& L = layers[l];
        torch::mm(L.x, L.w.t());                // forward
        torch::mm(L.grad_out.t(), L.x);         // weight gradient
        if (l > 0) torch::mm(L.grad_out, L.w);  // input gradient
      }
    }
  };
  flops += 3 * 2.0 * batch * gram * gram * steps * views;
  for (size_t l = 0; l < layers.size(); ++l)
    flops += 2.0 * batch * widths[l] * widths[l + 1] * (l > 0 ? 3 : 2) * steps * views;
  epoch();  // warm up the BLAS's threads and buffers
  double best = 1e300;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    epoch();
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("%.3f s for %.1f GFLOP (%.1f GFLOP/s)\n", best, flops / 1e9, flops / 1e9 / best);
  return 0;
}
