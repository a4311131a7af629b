// Concerto's networks (Yang et al., Nature Machine Intelligence 2022; docs/method-spec.md §10),
// kept apart from the plugin so that tests can check them on hand-made cases.
//
// Teacher, per modality: every feature of a cell becomes a token a_t = c_t * E[id_t], the tokens
// are pooled by attention with a learned context vector, and the pooled vector is batch-normalised.
//   "original" (Concerto): id_t = the feature itself (a learned embedding per gene) and c_t = the
//              batch-normalised expression value; only expressed features are tokens.
//   "reference" (scSSL-Bench): id_t = the cell's standardised value of the feature, rectified and
//              truncated to an integer bin 0..bins-1; c_t = 1; every feature is a token.
// Student, per modality: BN -> Linear -> ReLU -> BN. Both fuse their modalities (add | mean |
// concat), apply dropout and a projection head of `head_layers` linear layers: (Linear -> BN ->
// ReLU) x (head_layers - 1), then Linear -> BN, every linear without bias.
#pragma once

#include <torch/torch.h>

#include <limits>
#include <string>
#include <vector>

#include "scssl/nn.hpp"

namespace concerto {

// u_t = tanh(W a_t + b), w = softmax_t(u_t . context) over the tokens in `mask`, output
// tanh(sum_t w_t a_t). Because a_t = c_t E[id_t], W a_t = c_t (E W^T)[id_t] and the pooled sum is
// (scattered weights) x E: the cost is O(tokens * dim) instead of O(tokens * dim^2).
class AttentionPoolingImpl : public torch::nn::Module {
 public:
  explicit AttentionPoolingImpl(int64_t dim)
      : projection(register_module("projection", torch::nn::Linear(dim, dim))),
        context(register_parameter("context", torch::empty({dim, 1}))) {
    torch::nn::init::xavier_uniform_(context);
  }

  // table [V, d]; ids int64 [b, T] into the table; coeff [b, T]; mask bool [b, T] or undefined
  // (every token counts). Returns [b, d].
  torch::Tensor forward(const torch::Tensor& table, const torch::Tensor& ids,
                        const torch::Tensor& coeff, const torch::Tensor& mask) {
    const int64_t b = ids.size(0), t = ids.size(1), d = table.size(1);
    const torch::Tensor projected = torch::matmul(table, projection->weight.t());  // [V, d]
    const torch::Tensor u =
        torch::tanh(projected.index_select(0, ids.flatten()).view({b, t, d}) * coeff.unsqueeze(2) +
                    projection->bias);
    torch::Tensor score = torch::matmul(u, context).squeeze(2);  // [b, t]
    if (mask.defined()) score = score.masked_fill(~mask, -std::numeric_limits<float>::infinity());
    const torch::Tensor weight = torch::softmax(score, 1);
    const torch::Tensor per_entry =
        torch::zeros({b, table.size(0)}, table.options()).scatter_add(1, ids, weight * coeff);
    return torch::tanh(torch::matmul(per_entry, table));
  }

  torch::nn::Linear projection;
  torch::Tensor context;
};
TORCH_MODULE(AttentionPooling);

class TeacherImpl : public torch::nn::Module {
 public:
  TeacherImpl(int64_t features, int64_t dim, int64_t bins, bool original)
      : original_(original),
        bins_(bins),
        attention_(register_module("attention", AttentionPooling(dim))),
        output_norm_(register_module("output_norm", torch::nn::BatchNorm1d(dim))) {
    if (original_) {
      // Keras' Embedding initialiser, as the original's TensorFlow code.
      table_ =
          register_parameter("gene_embedding", torch::empty({features, dim}).uniform_(-0.05, 0.05));
      value_norm_ = register_module("value_norm", torch::nn::BatchNorm1d(1));
    } else {
      table_ = register_parameter("bin_embedding", torch::randn({bins, dim}));  // torch's default
      input_norm_ = register_module("input_norm", torch::nn::BatchNorm1d(features));
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), g = x.size(1);
    torch::Tensor ids, coeff, mask;
    if (original_) {
      ids = torch::arange(g, x.options().dtype(torch::kInt64)).expand({b, g});
      mask = x > 0;
      mask = mask | ~mask.any(1, /*keepdim=*/true);  // a cell without expression keeps all tokens
      const torch::Tensor values =
          value_norm_->forward(x.masked_select(mask).unsqueeze(1)).squeeze(1);
      coeff = torch::zeros_like(x).masked_scatter(mask, values);
    } else {
      // Truncation towards zero of the rectified value, clamped to the vocabulary (the reference
      // would index out of range above bins - 1).
      ids = torch::relu(input_norm_->forward(x)).floor().clamp_max(bins_ - 1).to(torch::kInt64);
      coeff = torch::ones_like(x);
    }
    return output_norm_->forward(attention_->forward(table_, ids, coeff, mask));
  }

 private:
  bool original_;
  int64_t bins_;
  AttentionPooling attention_;
  torch::nn::BatchNorm1d output_norm_;
  torch::nn::BatchNorm1d value_norm_{nullptr}, input_norm_{nullptr};
  torch::Tensor table_;
};
TORCH_MODULE(Teacher);

class ConcertoNetImpl : public torch::nn::Module {
 public:
  ConcertoNetImpl(const std::vector<int64_t>& features, int64_t dim, int64_t bins,
                  bool original_teacher, double dropout, std::string integrate, int64_t head_layers)
      : integrate_(std::move(integrate)),
        dropout_(register_module("dropout", torch::nn::Dropout(dropout))) {
    for (size_t m = 0; m < features.size(); ++m) {
      const std::string k = std::to_string(m);
      students_.push_back(register_module(
          "student" + k, torch::nn::Sequential(torch::nn::BatchNorm1d(features[m]),
                                               torch::nn::Linear(features[m], dim),
                                               torch::nn::ReLU(), torch::nn::BatchNorm1d(dim))));
      teachers_.push_back(
          register_module("teacher" + k, Teacher(features[m], dim, bins, original_teacher)));
    }
    const int64_t fused =
        integrate_ == "concat" ? dim * static_cast<int64_t>(features.size()) : dim;
    // The reference asked lightly for SimCLRProjectionHead(num_layers = 1), meaning Linear -> BN;
    // lightly 1.5.10 always builds two layers (head_layers = 2).
    std::vector<scssl::nn::HeadBlock> head;
    for (int64_t l = 0; l < head_layers; ++l)
      head.push_back({l == 0 ? fused : dim, dim, true, l + 1 < head_layers});
    student_head_ = register_module("student_head", scssl::nn::make_head(head));
    teacher_head_ = register_module("teacher_head", scssl::nn::make_head(head));
  }

  torch::Tensor student(const std::vector<torch::Tensor>& x) {
    std::vector<torch::Tensor> parts;
    for (size_t m = 0; m < students_.size(); ++m) parts.push_back(students_[m]->forward(x.at(m)));
    return student_head_->forward(dropout_->forward(fuse(parts)));
  }
  torch::Tensor teacher(const std::vector<torch::Tensor>& x) {
    return teacher_head_->forward(dropout_->forward(teacher_embedding(x)));
  }
  // The pooled, normalised teacher outputs of the given modalities (the first x.size()), fused.
  torch::Tensor teacher_embedding(const std::vector<torch::Tensor>& x) {
    std::vector<torch::Tensor> parts;
    for (size_t m = 0; m < x.size(); ++m) parts.push_back(teachers_.at(m)->forward(x[m]));
    return fuse(parts);
  }

 private:
  torch::Tensor fuse(const std::vector<torch::Tensor>& parts) const {
    if (parts.size() == 1) return parts[0];
    if (integrate_ == "add") return parts[0] + parts[1];
    if (integrate_ == "mean") return (parts[0] + parts[1]) / 2;
    return torch::cat(parts, 1);
  }

  std::string integrate_;
  torch::nn::Dropout dropout_;
  std::vector<torch::nn::Sequential> students_;
  std::vector<Teacher> teachers_;
  torch::nn::Sequential student_head_{nullptr}, teacher_head_{nullptr};
};
TORCH_MODULE(ConcertoNet);

}  // namespace concerto
