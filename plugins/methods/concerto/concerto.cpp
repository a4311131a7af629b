// Concerto (Yang et al., Nature Machine Intelligence 2022): an attention teacher and an MLP
// student, both trained by gradient, contrasted with NT-Xent; the networks' dropout is the
// augmentation (docs/method-spec.md §10). Unimodal, or RNA + protein with one teacher and one
// student per modality. The embedding is the teacher's pooled output before its projection head.

#include <filesystem>

#include "concerto_net.hpp"
#include "scssl/losses.hpp"
#include "scssl/plugin.hpp"
#include "scssl/training.hpp"

namespace {

class Concerto final : public scssl::IMethod {
 public:
  static uint64_t requirements() { return SCSSL_USES_AUGMENTATIONS; }
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("teacher", SCSSL_PARAM_STRING, "original",
                  "\"original\": tokens = gene embedding x expression of the expressed genes "
                  "(Concerto); \"reference\": tokens = embedding of the binned standardised value "
                  "(scSSL-Bench)")
            .one_of({"original", "reference"}),
        ParamSpec("token_dim", SCSSL_PARAM_INT, "128",
                  "size of the tokens, of both networks and the embedding")
            .at_least(1),
        ParamSpec("bins", SCSSL_PARAM_INT, "10",
                  "value bins of the \"reference\" teacher (its vocabulary)")
            .at_least(2),
        ParamSpec("dropout", SCSSL_PARAM_FLOAT, "0.2",
                  "dropout before both projection heads (the augmentation)")
            .at_least(0)
            .below(1),
        ParamSpec("temperature", SCSSL_PARAM_FLOAT, "0.2", "NT-Xent temperature").above(0),
        ParamSpec("head_layers", SCSSL_PARAM_INT, "1",
                  "linear layers of both projection heads; 2 is what lightly 1.5.10 built for the "
                  "reference's one-layer SimCLR head")
            .at_least(1),
        {"multimodal", SCSSL_PARAM_BOOL, "false",
         "train on the first two modalities (e.g. RNA + ADT), one teacher and student each"},
        ParamSpec("integrate", SCSSL_PARAM_STRING, "add", "multimodal fusion: add | mean | concat")
            .one_of({"add", "mean", "concat"}),
        {"predict_only_rna", SCSSL_PARAM_BOOL, "false",
         "multimodal: embed with the first modality's teacher only"},
    };
  }

  Concerto(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        token_dim_(p.get_int("token_dim")),
        bins_(p.get_int("bins")),
        dropout_(p.get_float("dropout")),
        temperature_(p.get_float("temperature")),
        head_layers_(p.get_int("head_layers")),
        multimodal_(p.get_bool("multimodal")),
        only_rna_(p.get_bool("predict_only_rna")),
        original_teacher_(p.get_string("teacher") == "original"),
        integrate_(p.get_string("integrate")) {}

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    const std::vector<int> used = used_modalities(train);
    std::vector<int64_t> features;
    for (int m : used) features.push_back(train.modalities[m].X.cols);
    scssl::Trainer trainer(host_, options, used);
    device_ = trainer.device();
    build(features);
    scssl::TrainCallbacks callbacks;
    // Student on view 0, teacher on view 1; both networks learn.
    callbacks.loss = [this](const scssl::TrainBatch& b) {
      return scssl::losses::nt_xent(net_->student(b.view0), net_->teacher(b.view1), temperature_);
    };
    trainer.fit(train, *net_, callbacks);
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("concerto: embed() called before fit() or load()");
    const std::vector<int> used = used_modalities(data);
    const size_t n_used = only_rna_ ? 1 : used.size();
    torch::NoGradGuard no_grad;
    net_->eval();
    std::vector<torch::Tensor> blocks;
    // Smaller blocks than the other methods: the teacher holds [block, features, token_dim].
    constexpr int64_t kBlock = 64;
    for (int64_t begin = 0; begin < data.n_cells(); begin += kBlock) {
      const int64_t end = std::min(data.n_cells(), begin + kBlock);
      std::vector<torch::Tensor> x;
      for (size_t k = 0; k < n_used; ++k)
        x.push_back(data.modalities[used[k]].X.slice_dense(begin, end).to(device_));
      blocks.push_back(net_->teacher_embedding(x).cpu());
    }
    return torch::cat(blocks, 0);
  }

  void save(const std::string& directory) const override {
    if (!net_)
      throw scssl::InvalidArgument("concerto: nothing to save, the method has not been trained");
    std::filesystem::create_directories(directory);
    torch::serialize::OutputArchive archive, weights;
    net_->save(weights);
    archive.write("weights", weights);
    archive.write("features", torch::tensor(features_, torch::kInt64));
    archive.save_to(directory + "/model.pt");
  }

  void load(const std::string& directory) override {
    const std::string file = directory + "/model.pt";
    if (!std::filesystem::exists(file))
      throw scssl::IoError("concerto: no saved model at '" + file + "'");
    torch::serialize::InputArchive archive, weights;
    archive.load_from(file);
    torch::Tensor features;
    archive.read("features", features);
    build(std::vector<int64_t>(features.data_ptr<int64_t>(),
                               features.data_ptr<int64_t>() + features.numel()));
    archive.read("weights", weights);
    net_->load(weights);
    net_->eval();
  }

 private:
  std::vector<int> used_modalities(const scssl::CellData& data) const {
    if (!multimodal_) return {0};
    if (data.modalities.size() < 2)
      throw scssl::BadData(
          "concerto: multimodal = true needs two modalities (e.g. RNA and ADT), but the data set "
          "has " +
          std::to_string(data.modalities.size()));
    return {0, 1};
  }

  void build(const std::vector<int64_t>& features) {
    features_ = features;
    net_ = concerto::ConcertoNet(features, token_dim_, bins_, original_teacher_, dropout_,
                                 integrate_, head_layers_);
    net_->to(device_);
  }

  int64_t token_dim_, bins_;
  double dropout_, temperature_;
  int64_t head_layers_;
  bool multimodal_, only_rna_, original_teacher_;
  std::string integrate_;
  torch::Device device_{torch::kCPU};
  std::vector<int64_t> features_;
  concerto::ConcertoNet net_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(Concerto, "concerto", "1.0.0",
             "Concerto: attention teacher vs MLP student, NT-Xent, dropout as augmentation")
