// scGPT's network (docs/method-spec.md §14, docs/methods/scgpt.md) with the module and parameter
// names of the official TransformerModel, so that its checkpoints load by name: gene embedding +
// LayerNorm, the continuous value encoder, post-norm transformer layers, the expression decoder
// and the cell-embedding ("MVC", GEPC) decoder; for the integration fine-tuning also the batch
// label encoder, domain-specific batch normalisation and the adversarial batch discriminator.
// Header-only so that the tests build the same network.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "scssl/nn.hpp"

namespace scgpt {

struct ModelShape {
  int64_t vocab = 0;
  int64_t d_model = 128;
  int64_t heads = 4;
  int64_t d_hid = 128;
  int64_t layers = 4;
  double dropout = 0.2;
  int64_t pad_id = 0;  // the <pad> token: its embedding row gets no gradient
  bool explicit_zero_prob = false;
  // The expression and GEPC decoders; embedding needs neither.
  bool with_decoders = true;
  // The integration fine-tuning (docs/method-spec.md §14.3): batches known to the model, their
  // label embedding appended to the decoders' inputs, domain-specific batch normalisation of the
  // tokens, the gradient-reversed batch discriminator on the cell embedding.
  int64_t n_batches = 0;
  bool batch_labels = false;
  bool dsbn = false;
  bool dab = false;
};

// A token table, then LayerNorm: the genes ("encoder", with the <pad> row) and the batch labels
// ("batch_encoder", pad_id < 0).
class GeneEncoderImpl : public torch::nn::Module {
 public:
  GeneEncoderImpl(int64_t vocab, int64_t d, int64_t pad_id)
      : embedding(register_module(
            "embedding", torch::nn::Embedding(
                             pad_id >= 0 ? torch::nn::EmbeddingOptions(vocab, d).padding_idx(pad_id)
                                         : torch::nn::EmbeddingOptions(vocab, d)))),
        enc_norm(
            register_module("enc_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))) {
    if (pad_id < 0) return;
    // The official initialisation of the gene table.
    torch::NoGradGuard no_grad;
    embedding->weight.uniform_(-0.1, 0.1);
  }
  torch::Tensor forward(const torch::Tensor& genes) {
    return enc_norm->forward(embedding->forward(genes));
  }
  torch::nn::Embedding embedding;
  torch::nn::LayerNorm enc_norm;
};
TORCH_MODULE(GeneEncoder);

// A binned value as a vector: Linear(1, d) -> ReLU -> Linear(d, d) -> LayerNorm -> dropout, on
// the value clamped at 512 from above.
class ValueEncoderImpl : public torch::nn::Module {
 public:
  ValueEncoderImpl(int64_t d, double dropout)
      : linear1(register_module("linear1", torch::nn::Linear(1, d))),
        linear2(register_module("linear2", torch::nn::Linear(d, d))),
        norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        dropout_(dropout) {}
  torch::Tensor forward(const torch::Tensor& values) {
    torch::Tensor x = torch::relu(linear1->forward(values.unsqueeze(-1).clamp_max(512.0)));
    x = norm->forward(linear2->forward(x));
    return torch::dropout(x, dropout_, is_training());
  }
  torch::nn::Linear linear1, linear2;
  torch::nn::LayerNorm norm;

 private:
  double dropout_;
};
TORCH_MODULE(ValueEncoder);

// torch.nn.MultiheadAttention's parameters (packed [q; k; v] input projection, out_proj) on
// batch-first input; padded keys get no attention.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t d, int64_t heads, double dropout)
      : in_proj_weight(register_parameter("in_proj_weight", torch::empty({3 * d, d}))),
        in_proj_bias(register_parameter("in_proj_bias", torch::zeros({3 * d}))),
        out_proj(register_module("out_proj", torch::nn::Linear(d, d))),
        heads_(heads),
        dropout_(dropout) {
    torch::nn::init::xavier_uniform_(in_proj_weight);
    torch::NoGradGuard no_grad;
    out_proj->bias.zero_();
  }

  // x [B, L, d]; padding [B, L] bool, true where the token is padding.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& padding) {
    const int64_t b = x.size(0), l = x.size(1), d = x.size(2), dh = d / heads_;
    const auto qkv = torch::nn::functional::linear(x, in_proj_weight, in_proj_bias)
                         .view({b, l, 3, heads_, dh})
                         .permute({2, 0, 3, 1, 4});  // [3, B, h, L, dh]
    torch::Tensor scores =
        torch::matmul(qkv[0], qkv[1].transpose(-2, -1)) / std::sqrt(static_cast<double>(dh));
    scores =
        scores.masked_fill(padding.view({b, 1, 1, l}), -std::numeric_limits<float>::infinity());
    torch::Tensor attention = torch::dropout(torch::softmax(scores, -1), dropout_, is_training());
    const torch::Tensor out = torch::matmul(attention, qkv[2]).transpose(1, 2).reshape({b, l, d});
    return out_proj->forward(out);
  }

  torch::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj;

 private:
  int64_t heads_;
  double dropout_;
};
TORCH_MODULE(SelfAttention);

// torch.nn.TransformerEncoderLayer as scGPT uses it: post-norm, ReLU feed-forward, LayerNorm eps
// 1e-5, dropout after attention, inside and after the feed-forward.
class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(int64_t d, int64_t heads, int64_t d_hid, double dropout)
      : self_attn(register_module("self_attn", SelfAttention(d, heads, dropout))),
        linear1(register_module("linear1", torch::nn::Linear(d, d_hid))),
        linear2(register_module("linear2", torch::nn::Linear(d_hid, d))),
        norm1(register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        norm2(register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})))),
        dropout_(dropout) {}

  torch::Tensor forward(torch::Tensor x, const torch::Tensor& padding) {
    const bool train = is_training();
    x = norm1->forward(x + torch::dropout(self_attn->forward(x, padding), dropout_, train));
    const torch::Tensor ff =
        linear2->forward(torch::dropout(torch::relu(linear1->forward(x)), dropout_, train));
    return norm2->forward(x + torch::dropout(ff, dropout_, train));
  }

  // The same layer for scssl::nn::fused_post_norm_layers.
  scssl::nn::PostNormLayer fused(int64_t heads) const {
    return {self_attn->in_proj_weight,
            self_attn->in_proj_bias,
            self_attn->out_proj->weight,
            self_attn->out_proj->bias,
            norm1->weight,
            norm1->bias,
            linear1->weight,
            linear1->bias,
            linear2->weight,
            linear2->bias,
            norm2->weight,
            norm2->bias,
            heads,
            /*gelu=*/false,
            1e-5};
  }

  SelfAttention self_attn;
  torch::nn::Linear linear1, linear2;
  torch::nn::LayerNorm norm1, norm2;

 private:
  double dropout_;
};
TORCH_MODULE(EncoderLayer);

// Linear(in, d) -> LeakyReLU -> Linear(d, d) -> LeakyReLU -> Linear(d, 1), named as
// nn.Sequential numbers its children (0, 2, 4).
inline torch::nn::Sequential value_head(int64_t in, int64_t d) {
  return torch::nn::Sequential(torch::nn::Linear(in, d), torch::nn::LeakyReLU(),
                               torch::nn::Linear(d, d), torch::nn::LeakyReLU(),
                               torch::nn::Linear(d, 1));
}

struct Prediction {
  torch::Tensor value;      // [B, L]
  torch::Tensor zero_prob;  // [B, L], only with explicit_zero_prob
};

// The expression decoder ("decoder"): a value per token from its transformer output (with the
// batch label's embedding appended: in = 2d).
class ExprDecoderImpl : public torch::nn::Module {
 public:
  ExprDecoderImpl(int64_t in, int64_t d, bool explicit_zero_prob)
      : fc(register_module("fc", value_head(in, d))) {
    if (explicit_zero_prob) zero_logit = register_module("zero_logit", value_head(in, d));
  }
  Prediction forward(const torch::Tensor& h) {
    Prediction p{fc->forward(h).squeeze(-1), {}};
    if (!zero_logit.is_empty()) p.zero_prob = torch::sigmoid(zero_logit->forward(h).squeeze(-1));
    return p;
  }
  torch::nn::Sequential fc, zero_logit{nullptr};
};
TORCH_MODULE(ExprDecoder);

// The "inner product" cell-embedding decoder ("mvc_decoder", GEPC): a value per gene from the
// cell embedding (with the batch label's embedding appended: in = 2d) and the gene's token
// embedding.
class MvcDecoderImpl : public torch::nn::Module {
 public:
  MvcDecoderImpl(int64_t in, int64_t d, bool explicit_zero_prob)
      : gene2query(register_module("gene2query", torch::nn::Linear(d, d))),
        W(register_module("W", torch::nn::Linear(torch::nn::LinearOptions(d, in).bias(false)))) {
    if (explicit_zero_prob)
      W_zero_logit = register_module("W_zero_logit", torch::nn::Linear(d, in));
  }
  // cell [B, in], gene_tokens [B, L, d]
  Prediction forward(const torch::Tensor& cell, const torch::Tensor& gene_tokens) {
    const torch::Tensor query = torch::sigmoid(gene2query->forward(gene_tokens));
    const torch::Tensor c = cell.unsqueeze(2);
    Prediction p{torch::bmm(W->forward(query), c).squeeze(2), {}};
    if (!W_zero_logit.is_empty())
      p.zero_prob = torch::sigmoid(torch::bmm(W_zero_logit->forward(query), c).squeeze(2));
    return p;
  }
  torch::nn::Linear gene2query, W, W_zero_logit{nullptr};
};
TORCH_MODULE(MvcDecoder);

// The batch discriminator ("grad_reverse_discriminator"): two blocks of Linear -> LeakyReLU ->
// LayerNorm, then Linear to the batches, on the cell embedding with its gradient reversed.
class DiscriminatorImpl : public torch::nn::Module {
 public:
  DiscriminatorImpl(int64_t d, int64_t n_batches)
      : _decoder(register_module("_decoder", torch::nn::Sequential())),
        out_layer(register_module("out_layer", torch::nn::Linear(d, n_batches))) {
    for (int i = 0; i < 2; ++i) {
      _decoder->push_back(torch::nn::Linear(d, d));
      _decoder->push_back(torch::nn::LeakyReLU());
      _decoder->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    }
  }
  torch::Tensor forward(const torch::Tensor& cell) {
    return out_layer->forward(
        _decoder->forward(scssl::nn::reverse_gradient(cell, torch::ones({}))));
  }
  torch::nn::Sequential _decoder;
  torch::nn::Linear out_layer;
};
TORCH_MODULE(Discriminator);

struct Output {
  torch::Tensor hidden;       // transformer output [B, L, d]
  torch::Tensor gene_tokens;  // the gene encoder's output [B, L, d] (GEPC's queries)
  torch::Tensor cell;         // the <cls> position's output [B, d], not normalised
};

class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(const ModelShape& s)
      : encoder(register_module("encoder", GeneEncoder(s.vocab, s.d_model, s.pad_id))),
        value_encoder(register_module("value_encoder", ValueEncoder(s.d_model, s.dropout))),
        transformer_encoder(
            register_module("transformer_encoder", std::make_shared<torch::nn::Module>())),
        decoder(s.with_decoders ? register_module("decoder", ExprDecoder(decoder_in(s), s.d_model,
                                                                         s.explicit_zero_prob))
                                : ExprDecoder(nullptr)),
        mvc_decoder(s.with_decoders
                        ? register_module("mvc_decoder", MvcDecoder(decoder_in(s), s.d_model,
                                                                    s.explicit_zero_prob))
                        : MvcDecoder(nullptr)),
        shape_(s) {
    if (s.batch_labels)
      batch_encoder = register_module("batch_encoder", GeneEncoder(s.n_batches, s.d_model, -1));
    // scGPT's DomainSpecificBatchNorm1d: no affine weights, eps 6.1e-5.
    if (s.dsbn)
      dsbn = register_module("dsbn",
                             scssl::nn::DomainBatchNorm(s.d_model, s.n_batches, false, 6.1e-5));
    if (s.dab)
      grad_reverse_discriminator =
          register_module("grad_reverse_discriminator", Discriminator(s.d_model, s.n_batches));
    auto list = transformer_encoder->register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < s.layers; ++i) {
      layers_.push_back(EncoderLayer(s.d_model, s.heads, s.d_hid, s.dropout));
      list->push_back(layers_.back());
    }
  }

  // genes int64 [B, L] (token ids, <cls> first), values float32 [B, L], padding bool [B, L];
  // domains int64 [B] batch codes (used with dsbn).
  Output forward(const torch::Tensor& genes, const torch::Tensor& values,
                 const torch::Tensor& padding, const torch::Tensor& domains = {}) {
    Output out;
    out.gene_tokens = encoder->forward(genes);
    torch::Tensor h = out.gene_tokens + value_encoder->forward(values);
    // Every cell's tokens with its own batch's statistics ([B, d, L] per feature).
    if (!dsbn.is_empty()) h = dsbn->forward(h.transpose(1, 2), domains).transpose(1, 2);
    if (fused_inference && scssl::nn::fused_inference_possible(*this)) {
      std::vector<scssl::nn::PostNormLayer> fused;
      for (const auto& layer : layers_) fused.push_back(layer->fused(shape_.heads));
      h = scssl::nn::fused_post_norm_layers(h, padding, fused).back();
    } else {
      for (auto& layer : layers_) h = layer->forward(h, padding);
    }
    out.hidden = h;
    out.cell = h.select(1, 0);
    return out;
  }

  // The expression decoder's and GEPC's predictions; with batch labels, each cell's label
  // embedding is appended to every token's output and to the cell embedding.
  Prediction expression(const Output& out, const torch::Tensor& domains) {
    if (batch_encoder.is_empty()) return decoder->forward(out.hidden);
    const torch::Tensor label = batch_encoder->forward(domains).unsqueeze(1);
    return decoder->forward(
        torch::cat({out.hidden, label.expand({-1, out.hidden.size(1), -1})}, 2));
  }
  Prediction gepc(const Output& out, const torch::Tensor& domains) {
    if (batch_encoder.is_empty()) return mvc_decoder->forward(out.cell, out.gene_tokens);
    return mvc_decoder->forward(torch::cat({out.cell, batch_encoder->forward(domains)}, 1),
                                out.gene_tokens);
  }

  const ModelShape& shape() const { return shape_; }

  // Embedding (evaluation mode, no gradients) through LibTorch's fused inference kernel on nested
  // tensors, which skips the padding; false: the layers that train.
  bool fused_inference = true;
  GeneEncoder encoder;
  ValueEncoder value_encoder;
  std::shared_ptr<torch::nn::Module> transformer_encoder;
  ExprDecoder decoder;
  MvcDecoder mvc_decoder;
  GeneEncoder batch_encoder{nullptr};
  scssl::nn::DomainBatchNorm dsbn{nullptr};
  Discriminator grad_reverse_discriminator{nullptr};

 private:
  static int64_t decoder_in(const ModelShape& s) {
    return s.batch_labels ? 2 * s.d_model : s.d_model;
  }

  ModelShape shape_;
  std::vector<EncoderLayer> layers_;
};
TORCH_MODULE(Model);

}  // namespace scgpt
