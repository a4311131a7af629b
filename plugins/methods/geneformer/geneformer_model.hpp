// Geneformer's network (docs/method-spec.md §15.2, docs/methods/geneformer.md): Hugging Face's
// BertForMaskedLM with its module and parameter names (bert.embeddings.*,
// bert.encoder.layer.{i}.*, cls.predictions.*), so that the official checkpoints load by name.
// Post-LayerNorm BERT with learned absolute positions, token type 0 everywhere and padding
// excluded from attention by an additive mask; the masked-LM decoder is tied to the word
// embeddings, as in the original. Header-only so that the tests build the same network.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "scssl/nn.hpp"

namespace geneformer {

// config.json's hidden_act values this network supports.
enum class Activation { Relu, Gelu, GeluTanh, Silu };

// false when `name` is not one of them.
inline bool parse_activation(const std::string& name, Activation& out) {
  if (name == "relu") {
    out = Activation::Relu;
  } else if (name == "gelu") {
    out = Activation::Gelu;
  } else if (name == "gelu_new" || name == "gelu_pytorch_tanh") {
    out = Activation::GeluTanh;
  } else if (name == "silu" || name == "swish") {
    out = Activation::Silu;
  } else {
    return false;
  }
  return true;
}

inline torch::Tensor activate(const torch::Tensor& x, Activation a) {
  switch (a) {
    case Activation::Relu:
      return torch::relu(x);
    case Activation::Gelu:
      return torch::gelu(x);
    case Activation::GeluTanh:
      return torch::gelu(x, "tanh");
    case Activation::Silu:
      return torch::silu(x);
  }
  return x;
}

// The fields of a BertConfig that shape the network.
struct ModelShape {
  int64_t vocab = 0;
  int64_t hidden = 128;
  int64_t heads = 4;
  int64_t intermediate = 256;
  int64_t layers = 4;
  int64_t max_positions = 512;
  int64_t type_vocab = 2;
  int64_t pad_id = 0;  // its word-embedding row gets no gradient (padding_idx)
  double hidden_dropout = 0.02;
  double attention_dropout = 0.02;
  double layer_norm_eps = 1e-12;
  Activation act = Activation::Relu;
  bool mlm_head = true;  // cls.predictions; embedding does not need it
};

// An empty module registered under `name`, to reproduce the original's nesting of names.
inline std::shared_ptr<torch::nn::Module> child(torch::nn::Module& parent,
                                                const std::string& name) {
  return parent.register_module(name, std::make_shared<torch::nn::Module>());
}

inline torch::nn::LayerNorm layer_norm(int64_t d, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(eps));
}

// bert.encoder.layer.{i}: attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
// intermediate.dense, output.{dense,LayerNorm}.
class LayerImpl : public torch::nn::Module {
 public:
  explicit LayerImpl(const ModelShape& s) : s_(s) {
    const int64_t d = s.hidden;
    auto attention = child(*this, "attention");
    auto self = child(*attention, "self");
    query = self->register_module("query", torch::nn::Linear(d, d));
    key = self->register_module("key", torch::nn::Linear(d, d));
    value = self->register_module("value", torch::nn::Linear(d, d));
    auto attention_output = child(*attention, "output");
    attention_dense = attention_output->register_module("dense", torch::nn::Linear(d, d));
    attention_norm =
        attention_output->register_module("LayerNorm", layer_norm(d, s.layer_norm_eps));
    intermediate = child(*this, "intermediate")
                       ->register_module("dense", torch::nn::Linear(d, s.intermediate));
    auto output = child(*this, "output");
    output_dense = output->register_module("dense", torch::nn::Linear(s.intermediate, d));
    output_norm = output->register_module("LayerNorm", layer_norm(d, s.layer_norm_eps));
  }

  // h [B, L, d]; additive_mask [B, 1, 1, L]: 0 at tokens, the lowest float at padding.
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& additive_mask) {
    const bool train = is_training();
    const int64_t b = h.size(0), l = h.size(1), d = h.size(2), dh = d / s_.heads;
    const auto split = [&](const torch::Tensor& t) {
      return t.view({b, l, s_.heads, dh}).transpose(1, 2);
    };
    const torch::Tensor q = split(query->forward(h)), k = split(key->forward(h)),
                        v = split(value->forward(h));
    const torch::Tensor scores =
        torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(dh)) + additive_mask;
    const torch::Tensor probs =
        torch::dropout(torch::softmax(scores, -1), s_.attention_dropout, train);
    const torch::Tensor context = torch::matmul(probs, v).transpose(1, 2).reshape({b, l, d});
    const torch::Tensor a = attention_norm->forward(
        torch::dropout(attention_dense->forward(context), s_.hidden_dropout, train) + h);
    const torch::Tensor f = output_dense->forward(activate(intermediate->forward(a), s_.act));
    return output_norm->forward(torch::dropout(f, s_.hidden_dropout, train) + a);
  }

  // The same layer for scssl::nn::fused_post_norm_layers (ReLU or erf GELU only).
  scssl::nn::PostNormLayer fused() const {
    return {torch::cat({query->weight, key->weight, value->weight}),
            torch::cat({query->bias, key->bias, value->bias}),
            attention_dense->weight,
            attention_dense->bias,
            attention_norm->weight,
            attention_norm->bias,
            intermediate->weight,
            intermediate->bias,
            output_dense->weight,
            output_dense->bias,
            output_norm->weight,
            output_norm->bias,
            s_.heads,
            s_.act == Activation::Gelu,
            s_.layer_norm_eps};
  }

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr}, attention_dense{nullptr},
      intermediate{nullptr}, output_dense{nullptr};
  torch::nn::LayerNorm attention_norm{nullptr}, output_norm{nullptr};

 private:
  ModelShape s_;
};
TORCH_MODULE(Layer);

class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(const ModelShape& s) : s_(s) {
    const int64_t d = s.hidden;
    auto bert = child(*this, "bert");
    auto embeddings = child(*bert, "embeddings");
    word_embeddings = embeddings->register_module(
        "word_embeddings",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(s.vocab, d).padding_idx(s.pad_id)));
    position_embeddings = embeddings->register_module("position_embeddings",
                                                      torch::nn::Embedding(s.max_positions, d));
    token_type_embeddings =
        embeddings->register_module("token_type_embeddings", torch::nn::Embedding(s.type_vocab, d));
    embedding_norm = embeddings->register_module("LayerNorm", layer_norm(d, s.layer_norm_eps));
    auto list = child(*bert, "encoder")->register_module("layer", torch::nn::ModuleList());
    for (int64_t i = 0; i < s.layers; ++i) {
      layers_.push_back(Layer(s));
      list->push_back(layers_.back());
    }
    if (s.mlm_head) {
      auto predictions = child(*child(*this, "cls"), "predictions");
      auto transform = child(*predictions, "transform");
      transform_dense = transform->register_module("dense", torch::nn::Linear(d, d));
      transform_norm = transform->register_module("LayerNorm", layer_norm(d, s.layer_norm_eps));
      // The decoder's bias; its weight is word_embeddings.weight (tied).
      decoder_bias = predictions->register_parameter("bias", torch::zeros({s.vocab}));
    }
    init_weights(0.02);
  }

  // BertPreTrainedModel._init_weights: weights normal(0, range), biases 0, LayerNorm 1 and 0, the
  // padding row of the word embeddings 0.
  void init_weights(double range) {
    torch::NoGradGuard no_grad;
    for (auto& p : named_parameters()) {
      const std::string& name = p.key();
      const auto ends_with = [&](const std::string& tail) {
        return name.size() >= tail.size() &&
               name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
      };
      if (ends_with("LayerNorm.weight"))
        p.value().fill_(1.0);
      else if (ends_with("bias"))
        p.value().zero_();
      else
        p.value().normal_(0.0, range);
    }
    word_embeddings->weight[s_.pad_id].zero_();
  }

  // hidden_states[0..upto]: [0] the embedding output, [i] the output of layer i. upto < 0: all
  // layers. ids int64 [B, L] with L <= max_positions; attention_mask [B, L], 1 at tokens.
  std::vector<torch::Tensor> forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                                     int64_t upto = -1) {
    const int64_t l = ids.size(1);
    const torch::Tensor positions = torch::arange(l, ids.options().dtype(torch::kInt64));
    // Token type 0 everywhere, as Geneformer feeds none.
    torch::Tensor e = word_embeddings->forward(ids) + token_type_embeddings->weight[0] +
                      position_embeddings->forward(positions);
    std::vector<torch::Tensor> hidden{
        torch::dropout(embedding_norm->forward(e), s_.hidden_dropout, is_training())};
    // get_extended_attention_mask: (1 - mask) * finfo(float32).min, broadcast over heads and
    // queries, so that a cell of padding alone still gets finite (uniform) attention.
    const torch::Tensor additive = (1.0 - attention_mask.to(torch::kFloat32))
                                       .mul(std::numeric_limits<float>::lowest())
                                       .view({ids.size(0), 1, 1, l});
    const auto last = upto < 0 ? s_.layers : std::min(upto, s_.layers);
    const bool fusable = s_.act == Activation::Relu || s_.act == Activation::Gelu;
    if (fused_inference && fusable && scssl::nn::fused_inference_possible(*this) &&
        !attention_mask.eq(0).all(1).any().item<bool>()) {
      std::vector<scssl::nn::PostNormLayer> fused;
      for (int64_t i = 0; i < last; ++i) fused.push_back(layers_[static_cast<size_t>(i)]->fused());
      for (torch::Tensor& h :
           scssl::nn::fused_post_norm_layers(hidden.back(), attention_mask.eq(0), fused))
        hidden.push_back(std::move(h));
      return hidden;
    }
    for (int64_t i = 0; i < last; ++i)
      hidden.push_back(layers_[static_cast<size_t>(i)]->forward(hidden.back(), additive));
    return hidden;
  }

  // The masked-LM logits [..., vocab] of last-layer hidden states [..., d].
  torch::Tensor mlm_logits(const torch::Tensor& h) {
    const torch::Tensor t = transform_norm->forward(activate(transform_dense->forward(h), s_.act));
    return torch::nn::functional::linear(t, word_embeddings->weight, decoder_bias);
  }

  const ModelShape& shape() const { return s_; }

  // Embedding (evaluation mode, no gradients) through LibTorch's fused inference kernel on nested
  // tensors, which skips the padding; false, or an activation the kernel lacks: the layers that
  // train.
  bool fused_inference = true;
  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr},
      token_type_embeddings{nullptr};
  torch::nn::LayerNorm embedding_norm{nullptr}, transform_norm{nullptr};
  torch::nn::Linear transform_dense{nullptr};
  torch::Tensor decoder_bias;

 private:
  ModelShape s_;
  std::vector<Layer> layers_;
};
TORCH_MODULE(Model);

}  // namespace geneformer
