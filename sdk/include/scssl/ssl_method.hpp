// The shared skeleton of the generic SSL methods (docs/method-spec.md §0): per modality an encoder
// and a projector (and a predictor where the method has one), multimodal fusion (add | mean |
// concat | clip), domain-specific batch normalisation, training through scssl::Trainer, and the
// embedding (encoder output in eval mode, or the projector's or predictor's output when
// keep_projector is set). A method plugin derives from SslMethod and supplies its heads and its
// loss.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "scssl/nn.hpp"
#include "scssl/plugin.hpp"
#include "scssl/training.hpp"

namespace scssl {

// Parameters every SSL method has; a method's parameters() returns these plus its own.
std::vector<scssl::ParamSpec> ssl_parameters();
// `clip_z_gradient`, for the methods whose reference gave the projector terms of the CLIP loss no
// gradient (SimSiam, NNCLR, BYOL, MoCo; docs/method-spec.md §0.5); such a method adds it to
// ssl_parameters() and may override SslMethod::clip_z_stand_ins.
scssl::ParamSpec clip_z_gradient_parameter();

// Which output of the network an embedding is made of (docs/method-spec.md §0.4).
enum class SslOutput { encoder, projector, predictor };

// Outputs of one view through a network, fused across modalities.
struct ViewOutput {
  torch::Tensor h;                    // encoder outputs, fused
  torch::Tensor z;                    // projector outputs, fused
  torch::Tensor p;                    // predictor outputs, fused (undefined without a predictor)
  std::vector<torch::Tensor> z_each;  // per modality, before fusion (CLIP)
  std::vector<torch::Tensor> p_each;
};

// Encoder + projector (+ predictor) for each modality.
class SslNetworkImpl : public torch::nn::Module {
 public:
  SslNetworkImpl(const std::vector<int64_t>& in_features, int64_t encoder_hidden,
                 int64_t hidden_dim, double dropout, int64_t n_domains, std::string integrate,
                 const std::function<torch::nn::Sequential(int64_t)>& make_projector,
                 const std::function<torch::nn::Sequential(int64_t)>& make_predictor);
  ViewOutput forward(const std::vector<torch::Tensor>& x, const torch::Tensor& domains);
  // The chosen output of every modality (or of the first only), fused, for the embedding.
  torch::Tensor represent(const std::vector<torch::Tensor>& x, const torch::Tensor& domains,
                          SslOutput output, bool only_first_modality);
  size_t modalities() const { return encoders_.size(); }
  bool has_predictor() const { return !predictors_.empty(); }

 private:
  torch::Tensor fuse(const std::vector<torch::Tensor>& parts) const;
  std::string integrate_;
  std::vector<nn::Encoder> encoders_;
  std::vector<torch::nn::Sequential> projectors_;
  std::vector<torch::nn::Sequential> predictors_;
};
TORCH_MODULE(SslNetwork);

class SslMethod : public IMethod {
 public:
  static uint64_t requirements() { return SCSSL_USES_AUGMENTATIONS; }
  SslMethod(const ParamSet& params, HostContext& host);

  void fit(const CellData& train, const TrainOptions& options) final;
  torch::Tensor embed(const CellData& data) final;
  void save(const std::string& directory) const final;
  void load(const std::string& directory) final;

 protected:
  // The projector of one modality, given the encoder output size h.
  virtual torch::nn::Sequential make_projector(int64_t h) = 0;
  // The predictor, given the projector's output size; an empty Sequential means none.
  virtual torch::nn::Sequential make_predictor(int64_t) { return torch::nn::Sequential(); }
  // Output size of the projector built by make_projector(h).
  virtual int64_t projector_out(int64_t h) const = 0;
  // Creates the method's extra state (target network, memory bank) in model(); called once the
  // online network exists, before training or loading.
  virtual void build() {}
  // The method's objective on one batch; not used with integrate = "clip".
  virtual torch::Tensor loss(const TrainBatch& batch) = 0;
  // After each optimizer step (momentum updates, memory banks).
  virtual void after_step(const TrainBatch&) {}
  // integrate = "clip" with clip_z_gradient = false (docs/method-spec.md §0.5): per view, the
  // outputs that stand in the projector term of the CLIP loss instead of the online projections,
  // per modality, as the reference computed them; an empty vector keeps that view's online
  // projections with their gradient. The stand-ins are detached. `online(view)` runs the online
  // network on a view once per step. Default: the online projections themselves (SimSiam).
  using OnlineView = std::function<const ViewOutput&(int view)>;
  virtual std::array<std::vector<torch::Tensor>, 2> clip_z_stand_ins(const TrainBatch& batch,
                                                                     const OnlineView& online);
  // With keep_projector: embed the predictor's output instead of the projector's.
  virtual bool embed_predictor() const { return false; }

  // A new network of the online network's architecture with its weights, frozen (no gradient);
  // for momentum targets.
  SslNetwork make_frozen_copy();
  torch::nn::Module& model() { return *model_; }
  SslNetwork& online() { return online_; }
  int64_t hidden_dim() const { return hidden_dim_; }
  int64_t fused_projector_out() const;
  int64_t epochs() const { return epochs_; }

 private:
  void build_networks(const std::vector<int64_t>& in_features, int64_t n_domains);
  std::vector<int> used_modalities(const CellData& data) const;
  std::vector<torch::Tensor> inputs(const CellData& data, const torch::Tensor& ids) const;
  torch::Tensor clip_loss(const TrainBatch& batch);

  int64_t hidden_dim_, encoder_hidden_;
  double dropout_;
  bool keep_projector_, dsbn_, multimodal_, only_rna_, bench_embedding_, clip_z_gradient_;
  std::string integrate_;
  int64_t epochs_ = 0;
  std::vector<int64_t> in_features_;
  int64_t n_domains_ = 1;
  torch::Device device_{torch::kCPU};
  std::shared_ptr<torch::nn::Module> model_;
  SslNetwork online_{nullptr};
  torch::Tensor logit_scale_;
};

}  // namespace scssl
