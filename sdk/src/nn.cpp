#include "scssl/nn.hpp"

#include <torch/version.h>

#include <cmath>
#include <string>

namespace scssl::nn {

namespace {

// LibTorch warns once per process that nested tensors are a prototype, which says nothing to
// someone embedding cells; every other warning goes on to the handler that was installed. The
// handler's signature and namespace changed in LibTorch 2.
#if TORCH_VERSION_MAJOR >= 2
namespace warnings = c10::WarningUtils;
#else
namespace warnings = c10::Warning;
#endif

class QuietNestedTensorNote : public c10::WarningHandler {
 public:
  QuietNestedTensorNote() : next_(warnings::get_warning_handler()) {}
#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& warning) override {
    if (!is_note(warning.msg())) next_->process(warning);
  }
#else
  void process(const c10::SourceLocation& where, const std::string& message,
               bool verbatim) override {
    if (!is_note(message)) next_->process(where, message, verbatim);
  }
#endif

 private:
  static bool is_note(const std::string& message) {
    return message.find("nested tensors is in prototype") != std::string::npos;
  }
  c10::WarningHandler* next_;
};

}  // namespace

DomainBatchNormImpl::DomainBatchNormImpl(int64_t features, int64_t n_domains, bool affine,
                                         double eps)
    : features_(features), affine_(affine), eps_(eps) {
  norms_ = register_module("norms", torch::nn::ModuleList());
  for (int64_t d = 0; d < std::max<int64_t>(1, n_domains); ++d)
    norms_->push_back(torch::nn::BatchNorm1d(
        torch::nn::BatchNorm1dOptions(features).affine(affine).momentum(0.1).eps(eps)));
  seen_ = register_buffer("seen", torch::zeros({std::max<int64_t>(1, n_domains)}, torch::kUInt8));
}

torch::Tensor DomainBatchNormImpl::average_of_seen(const torch::Tensor& part) {
  torch::Tensor mean = torch::zeros({features_}, part.options());
  torch::Tensor var = torch::zeros({features_}, part.options());
  torch::Tensor weight = affine_ ? torch::zeros({features_}, part.options()) : torch::Tensor();
  torch::Tensor bias = affine_ ? torch::zeros({features_}, part.options()) : torch::Tensor();
  double n = 0;
  const torch::Tensor seen = seen_.cpu();
  for (size_t d = 0; d < norms_->size(); ++d) {
    if (seen[d].item<uint8_t>() == 0) continue;
    auto bn = norms_[d]->as<torch::nn::BatchNorm1d>();
    mean += bn->running_mean;
    var += bn->running_var;
    if (affine_) {
      weight += bn->weight;
      bias += bn->bias;
    }
    n += 1;
  }
  if (n == 0) {  // nothing trained yet: the statistics BatchNorm starts from
    var.fill_(1);
    if (affine_) weight.fill_(1);
    n = 1;
  }
  return torch::batch_norm(part, affine_ ? weight / n : torch::Tensor(),
                           affine_ ? bias / n : torch::Tensor(), mean / n, var / n, false, 0.1,
                           eps_, false);
}

torch::Tensor DomainBatchNormImpl::forward(const torch::Tensor& x, const torch::Tensor& domains) {
  if (norms_->size() == 1 || !domains.defined())
    return norms_[0]->as<torch::nn::BatchNorm1d>()->forward(x);
  torch::Tensor out = torch::empty_like(x);
  torch::Tensor d = domains.to(x.device());
  torch::Tensor present = std::get<0>(torch::_unique(d.cpu(), /*sorted=*/true));
  for (int64_t k = 0; k < present.size(0); ++k) {
    const int64_t domain = present[k].item<int64_t>();
    torch::Tensor rows = (d == domain).nonzero().flatten();
    torch::Tensor part = x.index_select(0, rows);
    torch::Tensor y;
    const bool known = domain >= 0 && domain < static_cast<int64_t>(norms_->size());
    if (known && is_training()) {
      auto bn = norms_[domain]->as<torch::nn::BatchNorm1d>();
      seen_[domain] = 1;
      // A lone row has no batch statistics; normalise it with the running ones instead.
      y = part.size(0) < 2 ? torch::batch_norm(part, bn->weight, bn->bias, bn->running_mean,
                                               bn->running_var, false, 0.1, eps_, false)
                           : bn->forward(part);
    } else if (known && seen_[domain].item<uint8_t>() != 0) {
      y = norms_[domain]->as<torch::nn::BatchNorm1d>()->forward(part);
    } else {
      y = average_of_seen(part);
    }
    out.index_copy_(0, rows, y);
  }
  return out;
}

EncoderImpl::EncoderImpl(int64_t in_features, int64_t hidden, int64_t out_features, double dropout,
                         int64_t n_domains)
    : out_features_(out_features) {
  fc1_ = register_module("fc1", torch::nn::Linear(in_features, hidden));
  bn1_ = register_module("bn1", DomainBatchNorm(hidden, n_domains));
  fc2_ = register_module("fc2", torch::nn::Linear(hidden, out_features));
  bn2_ = register_module("bn2", DomainBatchNorm(out_features, n_domains));
  dropout_ = register_module("dropout", torch::nn::Dropout(dropout));
}

torch::Tensor EncoderImpl::forward(const torch::Tensor& x, const torch::Tensor& domains) {
  torch::Tensor h = torch::relu(bn1_->forward(fc1_->forward(x), domains));
  return dropout_->forward(bn2_->forward(fc2_->forward(h), domains));
}

torch::nn::Sequential make_head(const std::vector<HeadBlock>& blocks) {
  torch::nn::Sequential head;
  for (const auto& b : blocks) {
    head->push_back(torch::nn::Linear(torch::nn::LinearOptions(b.in, b.out).bias(!b.batch_norm)));
    if (b.batch_norm)
      head->push_back(
          torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(b.out).affine(b.affine)));
    if (b.relu) head->push_back(torch::nn::ReLU());
  }
  return head;
}

void copy_weights(torch::nn::Module& to, const torch::nn::Module& from) {
  torch::NoGradGuard no_grad;
  auto src = from.named_parameters(true);
  for (auto& p : to.named_parameters(true)) p.value().copy_(src[p.key()]);
  auto src_buffers = from.named_buffers(true);
  for (auto& b : to.named_buffers(true)) b.value().copy_(src_buffers[b.key()]);
}

void momentum_update(torch::nn::Module& to, const torch::nn::Module& from, double m) {
  torch::NoGradGuard no_grad;
  auto src = from.named_parameters(true);
  for (auto& p : to.named_parameters(true)) p.value().mul_(m).add_(src[p.key()], 1.0 - m);
}

double cosine_momentum(double base, int64_t epoch, int64_t epochs) {
  if (epochs <= 0) return base;
  const double pi = 3.14159265358979323846;
  // Spans `epochs` and reaches 1 only after the last one; lightly divides by epochs - 1 instead
  // (docs/method-spec.md §0.7, "Differences").
  return 1.0 - (1.0 - base) * (std::cos(pi * epoch / epochs) + 1.0) / 2.0;
}

bool fused_inference_possible(const torch::nn::Module& module) {
  return !module.is_training() && !torch::GradMode::is_enabled();
}

std::vector<torch::Tensor> fused_post_norm_layers(const torch::Tensor& x,
                                                  const torch::Tensor& padding,
                                                  const std::vector<PostNormLayer>& layers) {
  TORCH_CHECK(!torch::GradMode::is_enabled(), "fused_post_norm_layers: inference only");
  const bool ragged = padding.defined() && padding.any().item<bool>();
  TORCH_CHECK(!ragged || !padding.all(1).any().item<bool>(),
              "fused_post_norm_layers: a row without tokens");
  // The kernel's masks changed meaning between LibTorch versions; nested tensors need none.
  QuietNestedTensorNote quiet;
  const warnings::WarningHandlerGuard guard(&quiet);
  torch::Tensor h = ragged ? at::_nested_tensor_from_mask(x, padding.logical_not()) : x;
  std::vector<torch::Tensor> outputs;
  for (const PostNormLayer& l : layers) {
    h = at::_transformer_encoder_layer_fwd(
        h, x.size(2), l.heads, l.qkv_weight, l.qkv_bias, l.out_weight, l.out_bias, l.gelu,
        /*norm_first=*/false, l.eps, l.norm1_weight, l.norm1_bias, l.norm2_weight, l.norm2_bias,
        l.ff1_weight, l.ff1_bias, l.ff2_weight, l.ff2_bias);
    outputs.push_back(ragged ? at::nested_to_padded_tensor(h, 0.0, x.sizes()) : h);
  }
  return outputs;
}

}  // namespace scssl::nn
