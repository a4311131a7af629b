// scssl-bench-foundation: cells per second and FLOPs per cell of the foundation models' embedding
// networks (docs/performance.md, "Foundation models"), built with random weights from the plugins'
// own headers at the CPU sizes the configs ship and at the official sizes, so that a figure needs
// no checkpoint. Cells are batched as the plugins batch them (passes whose attention scores stay
// under a budget; scBERT's a few cells at a time). Token lengths are drawn uniformly from
// [min-length, length] (default: every cell at the full length, the worst case; --ragged: from a
// quarter of the length).
//
// --attention picks the transformer layers of scGPT and Geneformer as the plugins'
// `fused_attention` does: `fused` (LibTorch's inference kernel on nested tensors, the default) or
// `own` (the layers that train); `fused` is first compared with `own` on a few cells.
//   scssl-bench-foundation MODEL SIZE [--cells N] [--length L] [--min-length L | --ragged]
//                          [--attention fused|own]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "../../plugins/methods/geneformer/geneformer_model.hpp"
#include "../../plugins/methods/scbert/scbert_model.hpp"
#include "../../plugins/methods/scgpt/scgpt_model.hpp"
#include "blas_kernels.hpp"
#include "resources.hpp"
#include "scssl/gene_tokens.hpp"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: scssl-bench-foundation MODEL SIZE [--cells N] [--length L] "
               "[--min-length L | --ragged] [--attention fused|own]\n"
               "  MODEL SIZE: scgpt cpu|official, geneformer cpu|v1-10m|v2-104m, "
               "scbert cpu|official\n");
  return 2;
}

// The sizes of one transformer, for the FLOP count and the network.
struct Spec {
  int64_t width, layers, heads, ff, length, vocab;
  int64_t dim_head = 0, features = 0;  // scBERT's Performer
};

// Multiply-adds x 2 of the matrix products of one cell's embedding pass of `length` tokens; the
// element-wise work (softmax, LayerNorm, activations) is left out.
double flops_per_cell(const std::string& model, const Spec& s, int64_t length) {
  const double l = static_cast<double>(length), d = static_cast<double>(s.width);
  if (model == "scbert") {
    const double inner = static_cast<double>(s.heads * s.dim_head);
    const double per_head = 2.0 * s.features * s.dim_head;  // one token's feature map
    const double layer = 2 * l * d * inner * 4              // q, k, v, out
                         + l * s.heads * per_head * 2       // q' and k'
                         + 2 * l * s.heads * per_head       // k'^T v, then q' (k'^T v)
                         + 2 * l * d * s.ff * 2;            // feed-forward
    return s.layers * layer;
  }
  const double layer = 2 * l * d * d * 4        // q, k, v, out
                       + 2 * 2 * l * l * d      // scores, weighted values
                       + 2 * l * d * s.ff * 2;  // feed-forward
  // scGPT's value encoder adds a d x d product per token.
  return s.layers * layer + (model == "scgpt" ? 2 * l * d * d : 0.0);
}

bool pick_spec(const std::string& model, const std::string& size, Spec& s) {
  // The CPU sizes are those of configs/methods/{scgpt,geneformer,scbert}.toml on Kang (1267 genes,
  // all kept); the official ones those of scGPT's whole-human model, Geneformer-V1-10M and
  // V2-104M, and panglao_pretrain.pth.
  if (model == "scgpt" && size == "cpu")
    s = {128, 4, 4, 128, 513, 515};
  else if (model == "scgpt" && size == "official")
    s = {512, 12, 8, 512, 1200, 60697};
  else if (model == "geneformer" && size == "cpu")
    s = {128, 4, 4, 256, 512, 1269};
  else if (model == "geneformer" && size == "v1-10m")
    s = {256, 6, 4, 512, 2048, 25426};
  else if (model == "geneformer" && size == "v2-104m")
    s = {768, 12, 12, 3072, 4096, 20275};
  else if (model == "scbert" && size == "cpu")
    s = {64, 2, 4, 256, 1268, 7, 16, 64};
  else if (model == "scbert" && size == "official")
    s = {200, 6, 10, 800, 16907, 7, 64, 266};
  else
    return false;
  return true;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A batch of cells: token ids below `vocab` (0 = padding) and their lengths.
struct Batch {
  torch::Tensor ids, padding, lengths;
};

Batch make_batch(int64_t cells, int64_t min_length, int64_t length, int64_t vocab) {
  Batch b;
  b.lengths = min_length >= length ? torch::full({cells}, length, torch::kInt64)
                                   : torch::randint(min_length, length + 1, {cells});
  b.padding = torch::arange(length).unsqueeze(0) >= b.lengths.unsqueeze(1);
  b.ids = torch::randint(1, vocab, {cells, length}).masked_fill(b.padding, 0);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  // The same memory policy and OpenBLAS kernels as scssl-host, which may restart itself to get
  // them.
  scssl::host::reuse_freed_memory();
  scssl::host::restart_with_native_blas_kernels(argv);
  if (argc < 3) return usage();
  const std::string model = argv[1], size = argv[2];
  Spec s{};
  if (!pick_spec(model, size, s)) return usage();
  int64_t cells = 0, length = s.length, min_length = -1;
  std::string attention = "fused";
  bool ragged = false;
  for (int i = 3; i < argc; ++i) {
    const std::string key = argv[i];
    if (key == "--ragged") {
      ragged = true;
      continue;
    }
    if (i + 1 == argc) return usage();
    const std::string value = argv[++i];
    if (key == "--cells")
      cells = std::atoll(value.c_str());
    else if (key == "--length")
      length = std::atoll(value.c_str());
    else if (key == "--min-length")
      min_length = std::atoll(value.c_str());
    else if (key == "--attention")
      attention = value;
    else
      return usage();
  }
  if (length < 2 || (attention != "own" && attention != "fused")) return usage();
  if (ragged) min_length = length / 4;
  if (min_length < 0 || min_length > length) min_length = length;
  s.length = length;
  if (model == "scbert") {  // Performer attention, no fused kernel; no padding: the whole panel
    attention = "performer";
    min_length = length;
  }
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;

  // A pass of B cells (the plugins' batching) -> the cell embeddings; `variant` picks the layers.
  std::function<torch::Tensor(const Batch&, const std::string&)> embed;
  int64_t chunk = 64;
  std::shared_ptr<torch::nn::Module> net;
  if (model == "scgpt") {
    scgpt::ModelShape shape;
    shape.vocab = s.vocab;
    shape.d_model = s.width;
    shape.heads = s.heads;
    shape.d_hid = s.ff;
    shape.layers = s.layers;
    shape.with_decoders = false;
    scgpt::Model m(shape);
    net = m.ptr();
    embed = [m](const Batch& b, const std::string& variant) mutable {
      m->fused_inference = variant == "fused";
      return m->forward(b.ids, (b.ids % 51).to(torch::kFloat32), b.padding).cell;
    };
  } else if (model == "geneformer") {
    geneformer::ModelShape shape;
    shape.vocab = s.vocab;
    shape.hidden = s.width;
    shape.heads = s.heads;
    shape.intermediate = s.ff;
    shape.layers = s.layers;
    shape.max_positions = s.length;
    shape.mlm_head = false;
    geneformer::Model m(shape);
    net = m.ptr();
    // The embedding layer: the second-to-last, as the plugin's default.
    embed = [m, s](const Batch& b, const std::string& variant) mutable {
      m->fused_inference = variant == "fused";
      const torch::Tensor mask = b.padding.logical_not().to(torch::kInt64);
      const torch::Tensor h = m->forward(b.ids, mask, s.layers - 1).back();
      const torch::Tensor genes = mask.to(torch::kFloat32).unsqueeze(-1);
      return (h * genes).sum(1) / genes.sum(1);
    };
  } else {
    scbert::ModelShape shape;
    shape.seq_len = s.length;
    shape.dim = s.width;
    shape.depth = s.layers;
    shape.heads = s.heads;
    shape.dim_head = s.dim_head;
    shape.nb_features = s.features;
    scbert::Model m(shape);
    net = m.ptr();
    chunk = scbert::embed_chunk(shape);
    embed = [m](const Batch& b, const std::string&) mutable {
      return scbert::gene_mean(m->forward(b.ids % 7, scbert::KeyMax::Cell));
    };
  }
  net->eval();
  if (cells <= 0) cells = model == "scbert" && size == "official" ? 2 : 64;

  const Batch all = make_batch(cells, min_length, length, s.vocab);
  // The fused layers against the own ones on a few cells first, with unequal lengths.
  if (attention == "fused") {
    const int64_t short_length = std::min<int64_t>(length, 256);  // enough to see a difference
    const Batch check =
        make_batch(4, std::max<int64_t>(2, short_length / 2), short_length, s.vocab);
    const double diff = (embed(check, "fused") - embed(check, "own")).abs().max().item<double>();
    std::printf("check: fused differs from own by at most %.2e\n", diff);
    if (!(diff < 1e-4)) return 1;
  }
  double flops = 0;
  for (int64_t c = 0; c < cells; ++c)
    flops += flops_per_cell(model, s, all.lengths[c].item<int64_t>());
  // The passes: the plugins' budget on the attention scores.
  std::vector<scssl::TokenPass> passes;
  if (model == "scbert") {
    for (int64_t c = 0; c < cells; c += chunk)
      passes.push_back({c, std::min(cells, c + chunk), length});
  } else {
    for (int64_t begin = 0; begin < cells; begin += chunk) {
      const int64_t end = std::min(cells, begin + chunk);
      for (scssl::TokenPass p :
           scssl::attention_passes(all.padding.slice(0, begin, end).logical_not(), s.heads)) {
        p.begin += begin;
        p.end += begin;
        passes.push_back(p);
      }
    }
  }
  const auto pass_of = [&](const scssl::TokenPass& p) {
    return Batch{all.ids.slice(0, p.begin, p.end).slice(1, 0, p.length),
                 all.padding.slice(0, p.begin, p.end).slice(1, 0, p.length),
                 {}};
  };
  embed(pass_of(passes.front()), attention);  // warm up the BLAS's threads and buffers
  const auto start = Clock::now();
  for (const scssl::TokenPass& p : passes) embed(pass_of(p), attention);
  const double elapsed = seconds_since(start);
  std::printf(
      "%s %s attention=%s cells=%lld tokens=%lld-%lld passes=%zu: %.3f s, %.2f cells/s, "
      "%.2f GFLOP/cell, %.1f GFLOP/s\n",
      model.c_str(), size.c_str(), attention.c_str(), static_cast<long long>(cells),
      static_cast<long long>(min_length), static_cast<long long>(length), passes.size(), elapsed,
      cells / elapsed, flops / cells / 1e9, flops / 1e9 / elapsed);
  return 0;
}
