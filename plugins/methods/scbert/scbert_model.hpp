// scBERT's network (docs/method-spec.md §16, docs/methods/scbert.md): the PerformerLM of the
// performer_pytorch copy vendored by scBERT, with the module, parameter and buffer names of its
// state dict, so that panglao_pretrain.pth loads by name. Token embedding + a position (gene)
// table, pre-LayerNorm Performer blocks with FAVOR+ softmax-kernel attention and GELU
// feed-forward, a final LayerNorm and the token classifier. Header-only so that the tests build
// the same network.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "scssl/params.hpp"
#include "scssl/random.hpp"

namespace scbert {

struct ModelShape {
  int64_t num_tokens = 7;  // bin_num + 2: bins 0..bin_num, then the mask token
  int64_t seq_len = 0;     // panel genes + the appended token
  int64_t dim = 200;
  int64_t depth = 6;
  int64_t heads = 10;
  int64_t dim_head = 64;
  int64_t nb_features = 266;  // random features per head: int(dim_head ln dim_head) officially
  int64_t ff_mult = 4;
  // true: the frozen float64 gene2vec table of the official model; false: a learned float32 one.
  bool gene2vec = false;
  int64_t redraw_interval = 1000;  // training calls between fresh projections; 0 = never
  uint64_t seed = 0;               // the first projections
};

// How the key feature map's stabilising maximum is taken. scBERT's copy subtracts ONE maximum
// over the whole batch (all cells, heads, positions, features), so that through the +1e-4 term a
// cell's output depends on the other cells of its batch; Cell takes it per cell, which gives every
// cell the output it has in a batch of one (as scBERT's predict.py runs cells).
enum class KeyMax { Batch, Cell };

// performer_pytorch's gaussian_orthogonal_random_matrix with scaling 0: blocks of orthonormal
// rows (Q^T of the QR decomposition of a square Gaussian matrix), the last block cut to the rows
// left, each row scaled by the norm of an independent Gaussian vector. float32 [rows, cols].
inline torch::Tensor gaussian_orthogonal_random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  scssl::Xoshiro256 rng(seed);
  const auto gaussian = [&rng](int64_t r, int64_t c) {
    torch::Tensor t = torch::empty({r, c}, torch::kFloat64);
    double* p = t.data_ptr<double>();
    for (int64_t i = 0; i < r * c; ++i) p[i] = scssl::StandardNormal::draw(rng);
    return t;
  };
  std::vector<torch::Tensor> blocks;
  for (int64_t done = 0; done < rows; done += cols) {
    const torch::Tensor q = std::get<0>(torch::linalg_qr(gaussian(cols, cols), "reduced")).t();
    blocks.push_back(q.slice(0, 0, std::min(cols, rows - done)));
  }
  const torch::Tensor multiplier = gaussian(rows, cols).norm(2, 1, /*keepdim=*/true);
  return (torch::cat(blocks) * multiplier).to(torch::kFloat32);
}

// softmax_kernel of performer_pytorch on t [B, L, H, dh] (tokens before heads, the layout the
// projections give, so that every product below is one matrix product), projection [m, dh] ->
// [B, L, H, m]: m^-1/2 (exp(c t P^T - c^2 |t|^2 / 2 - max) + 1e-4) with c = dh^-1/4; the maximum
// per position and head for queries, as `key_max` says for keys.
inline torch::Tensor softmax_kernel(const torch::Tensor& t, const torch::Tensor& projection,
                                    bool query, KeyMax key_max) {
  const double c = std::pow(static_cast<double>(t.size(-1)), -0.25);
  const double ratio = std::pow(static_cast<double>(projection.size(0)), -0.5);
  std::vector<int64_t> shape = t.sizes().vec();
  shape.back() = projection.size(0);
  const torch::Tensor dash = t.reshape({-1, t.size(-1)}).mm(projection.t()).mul_(c).view(shape);
  const torch::Tensor diag = t.pow(2).sum(-1, /*keepdim=*/true) * (c * c / 2.0);
  const torch::Tensor max = query                     ? std::get<0>(dash.max(-1, /*keepdim=*/true))
                            : key_max == KeyMax::Cell ? dash.amax({1, 2, 3}, /*keepdim=*/true)
                                                      : dash.max();
  // Without gradients (embedding) in place: at 16,907 tokens these are the largest tensors.
  if (!torch::GradMode::is_enabled())
    return dash.sub_(diag).sub_(max).exp_().add_(1e-4).mul_(ratio);
  return ratio * (torch::exp(dash - diag - max) + 1e-4);
}

// Non-causal linear attention of q', k' [B, L, H, m] and v [B, L, H, dh] -> [B, L, H, dh]:
// (q' (k'^T v)) / (q' . sum_n k'_n), per cell and head.
inline torch::Tensor linear_attention(const torch::Tensor& q, const torch::Tensor& k,
                                      const torch::Tensor& v) {
  const torch::Tensor qh = q.permute({0, 2, 1, 3});  // [B, H, L, m]
  const torch::Tensor context = torch::matmul(k.permute({0, 2, 3, 1}), v.permute({0, 2, 1, 3}));
  const torch::Tensor denominator = torch::matmul(qh, k.sum(1).unsqueeze(-1));  // [B, H, L, 1]
  return (torch::matmul(qh, context) / denominator).permute({0, 2, 1, 3});
}

// "fast_attention": the projection buffer and the FAVOR+ attention it defines.
class FastAttentionImpl : public torch::nn::Module {
 public:
  FastAttentionImpl(int64_t dim_head, int64_t nb_features, uint64_t seed)
      : projection_matrix(register_buffer(
            "projection_matrix", gaussian_orthogonal_random_matrix(nb_features, dim_head, seed))) {}
  torch::Tensor forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        KeyMax key_max) {
    return linear_attention(softmax_kernel(q, projection_matrix, true, key_max),
                            softmax_kernel(k, projection_matrix, false, key_max), v);
  }
  void redraw(uint64_t seed) {
    torch::NoGradGuard no_grad;
    projection_matrix.copy_(gaussian_orthogonal_random_matrix(projection_matrix.size(0),
                                                              projection_matrix.size(1), seed));
  }
  torch::Tensor projection_matrix;
};
TORCH_MODULE(FastAttention);

// Multi-head self-attention with bias-free q/k/v projections; heads are contiguous column blocks
// of dim_head ('b n (h d) -> b h n d' in the original; kept as [B, L, H, d] here).
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t dim, int64_t heads, int64_t dim_head, int64_t nb_features,
                    uint64_t seed)
      : fast_attention(
            register_module("fast_attention", FastAttention(dim_head, nb_features, seed))),
        to_q(register_module("to_q", linear(dim, heads * dim_head, false))),
        to_k(register_module("to_k", linear(dim, heads * dim_head, false))),
        to_v(register_module("to_v", linear(dim, heads * dim_head, false))),
        to_out(register_module("to_out", linear(heads * dim_head, dim, true))),
        heads_(heads) {}

  torch::Tensor forward(const torch::Tensor& x, KeyMax key_max) {
    const int64_t b = x.size(0), n = x.size(1);
    const auto split = [&](const torch::Tensor& t) { return t.view({b, n, heads_, -1}); };
    const torch::Tensor out = fast_attention->forward(
        split(to_q->forward(x)), split(to_k->forward(x)), split(to_v->forward(x)), key_max);
    return to_out->forward(out.reshape({b, n, -1}));
  }

  FastAttention fast_attention;
  torch::nn::Linear to_q, to_k, to_v, to_out;

 private:
  static torch::nn::Linear linear(int64_t in, int64_t out, bool bias) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
  }
  int64_t heads_;
};
TORCH_MODULE(SelfAttention);

// w2(gelu(w1(x))) with the exact (erf) GELU.
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, int64_t mult)
      : w1(register_module("w1", torch::nn::Linear(dim, dim * mult))),
        w2(register_module("w2", torch::nn::Linear(dim * mult, dim))) {}
  torch::Tensor forward(const torch::Tensor& x) { return w2->forward(torch::gelu(w1->forward(x))); }
  torch::nn::Linear w1, w2;
};
TORCH_MODULE(FeedForward);

// The original wraps the feed-forward in Chunk(1, ...), one more "fn." in its names.
class ChunkImpl : public torch::nn::Module {
 public:
  ChunkImpl(int64_t dim, int64_t mult) : fn(register_module("fn", FeedForward(dim, mult))) {}
  FeedForward fn;
};
TORCH_MODULE(Chunk);

// PreLayerNorm(dim, SelfAttention): "layers.{i}.0".
class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(const ModelShape& s, uint64_t seed)
      : norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.dim})))),
        fn(register_module("fn", SelfAttention(s.dim, s.heads, s.dim_head, s.nb_features, seed))) {}
  torch::Tensor forward(const torch::Tensor& x, KeyMax key_max) {
    return fn->forward(norm->forward(x), key_max);
  }
  torch::nn::LayerNorm norm;
  SelfAttention fn;
};
TORCH_MODULE(AttentionBlock);

// PreLayerNorm(dim, Chunk(1, FeedForward)): "layers.{i}.1".
class FeedForwardBlockImpl : public torch::nn::Module {
 public:
  explicit FeedForwardBlockImpl(const ModelShape& s)
      : norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.dim})))),
        fn(register_module("fn", Chunk(s.dim, s.ff_mult))) {}
  torch::Tensor forward(const torch::Tensor& x) { return fn->fn->forward(norm->forward(x)); }
  torch::nn::LayerNorm norm;
  Chunk fn;
};
TORCH_MODULE(FeedForwardBlock);

// "performer": the blocks ("net.layers") and the count of training calls since the projections
// were last drawn.
class PerformerImpl : public torch::nn::Module {
 public:
  explicit PerformerImpl(const ModelShape& s)
      : net(register_module("net", std::make_shared<torch::nn::Module>())),
        calls_since_last_redraw(
            register_buffer("calls_since_last_redraw", torch::zeros({}, torch::kInt64))),
        redraw_interval_(s.redraw_interval) {
    auto layers = net->register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < s.depth; ++i) {
      attention_.push_back(AttentionBlock(s, scssl::splitmix64(s.seed + static_cast<uint64_t>(i))));
      feed_forward_.push_back(FeedForwardBlock(s));
      torch::nn::ModuleList layer;
      layer->push_back(attention_.back());
      layer->push_back(feed_forward_.back());
      layers->push_back(layer);
    }
  }

  // Where the next redraw's projections come from (the training loop sets it per step).
  void set_redraw_seed(uint64_t seed) { redraw_seed_ = seed; }

  torch::Tensor forward(torch::Tensor x, KeyMax key_max,
                        std::vector<torch::Tensor>* layer_outputs = nullptr) {
    if (is_training()) check_redraw();
    for (size_t i = 0; i < attention_.size(); ++i) {
      x = x + attention_[i]->forward(x, key_max);
      x = x + feed_forward_[i]->forward(x);
      if (layer_outputs) layer_outputs->push_back(x);
    }
    return x;
  }

  std::shared_ptr<torch::nn::Module> net;
  torch::Tensor calls_since_last_redraw;

 private:
  // check_redraw_projections of the original, called once per training forward pass: at the
  // interval, fresh projections for every layer and the count back to 0; else the count + 1.
  void check_redraw() {
    torch::NoGradGuard no_grad;
    if (redraw_interval_ > 0 && calls_since_last_redraw.item<int64_t>() >= redraw_interval_) {
      for (size_t i = 0; i < attention_.size(); ++i)
        attention_[i]->fn->fast_attention->redraw(
            scssl::splitmix64(redraw_seed_ + static_cast<uint64_t>(i)));
      calls_since_last_redraw.zero_();
      return;
    }
    calls_since_last_redraw.add_(1);
  }

  std::vector<AttentionBlock> attention_;
  std::vector<FeedForwardBlock> feed_forward_;
  int64_t redraw_interval_;
  uint64_t redraw_seed_ = 0;
};
TORCH_MODULE(Performer);

struct Trace {  // intermediate results, for the tests
  torch::Tensor embed;
  std::vector<torch::Tensor> layers;
};

class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(const ModelShape& s)
      : token_emb(register_module("token_emb", torch::nn::Embedding(s.num_tokens, s.dim))),
        pos_emb(register_module("pos_emb", std::make_shared<torch::nn::Module>())),
        performer(register_module("performer", Performer(s))),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.dim})))),
        to_out(register_module("to_out", torch::nn::Linear(s.dim, s.num_tokens))),
        shape_(s) {
    // "pos_emb.emb.weight": gene2vec as nn.Embedding.from_pretrained keeps it (float64, frozen;
    // the file gives its values) or a learned table initialised as nn.Embedding's, N(0, 1).
    auto emb = pos_emb->register_module("emb", std::make_shared<torch::nn::Module>());
    positions = s.gene2vec ? emb->register_parameter(
                                 "weight", torch::zeros({s.seq_len, s.dim}, torch::kFloat64),
                                 /*requires_grad=*/false)
                           : emb->register_parameter("weight", torch::randn({s.seq_len, s.dim}));
  }

  // tokens int64 [B, L], L <= seq_len -> the final LayerNorm's output [B, L, dim] ("encodings").
  torch::Tensor forward(const torch::Tensor& tokens, KeyMax key_max, Trace* trace = nullptr) {
    const int64_t length = tokens.size(1);
    if (length > shape_.seq_len)
      throw scssl::InvalidArgument("scbert: a sequence of " + std::to_string(length) +
                                   " tokens is longer than the model's " +
                                   std::to_string(shape_.seq_len));
    const torch::Tensor table = positions.slice(0, 0, length);
    torch::Tensor x = token_emb->forward(tokens);
    // The original adds the float64 table in place to the float32 embeddings: the sum is formed
    // in float64 and rounded once.
    x = table.scalar_type() == torch::kFloat64 ? (x.to(torch::kFloat64) + table).to(torch::kFloat32)
                                               : x + table;
    if (trace) trace->embed = x;
    x = performer->forward(x, key_max, trace ? &trace->layers : nullptr);
    return norm->forward(x);
  }

  // The token logits [..., num_tokens] of encodings.
  torch::Tensor logits(const torch::Tensor& encodings) { return to_out->forward(encodings); }

  const ModelShape& shape() const { return shape_; }

  torch::nn::Embedding token_emb;
  std::shared_ptr<torch::nn::Module> pos_emb;
  Performer performer;
  torch::nn::LayerNorm norm;
  torch::nn::Linear to_out;
  torch::Tensor positions;  // pos_emb.emb.weight

 private:
  ModelShape shape_;
};
TORCH_MODULE(Model);

// Cells per embedding pass: about 2^20 floats (4 MiB) for the widest [cells, L, ...] tensors.
inline int64_t embed_chunk(const ModelShape& s) {
  const int64_t widest = std::max(s.heads * std::max(s.nb_features, s.dim_head), s.ff_mult * s.dim);
  return std::max<int64_t>(1, (int64_t{1} << 20) / (s.seq_len * widest));
}

// The cell embedding: the mean of the encodings over the gene positions (all but the appended
// last token).
inline torch::Tensor gene_mean(const torch::Tensor& encodings) {
  return encodings.slice(1, 0, encodings.size(1) - 1).mean(1);
}

}  // namespace scbert
