// scBERT (Yang et al., Nature Machine Intelligence 2022; github.com/TencentAILabHealthcare/scBERT;
// docs/method-spec.md §16, docs/methods/scbert.md): a Performer over a fixed gene panel, one
// token per gene holding its binned expression, the gene's identity given by its position. Two
// modes: `pretrain` trains a model of the data set's own genes from scratch with scBERT's masked
// tokens, `zero_shot` loads the official panglao_pretrain.pth and trains nothing. Neither uses
// labels (the original's own downstream use, cell-type fine-tuning, does and is not built). The
// embedding is the mean of the final LayerNorm's output over the gene positions.
#include <filesystem>
#include <fstream>

#include "scbert_model.hpp"
#include "scbert_tokenizer.hpp"
#include "scssl/gene_tokens.hpp"
#include "scssl/loss_trainer.hpp"
#include "scssl/model_archive.hpp"
#include "scssl/plugin.hpp"
#include "scssl/tensor_file.hpp"

namespace {

namespace fs = std::filesystem;

constexpr const char* kPanelFile = "gene_panel.tsv";
constexpr const char* kStateDict = "model_state_dict.";  // utils.save_ckpt's key

// gene_panel.tsv: the header "position<TAB>gene_name", then one line per panel gene in sequence
// order, positions 0, 1, 2, ...
std::vector<std::string> read_panel(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw scssl::IoError("scbert: cannot read '" + path.string() + "'");
  std::vector<std::string> genes;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (number == 1) {
      if (line != "position\tgene_name")
        throw scssl::BadData("scbert: '" + path.string() +
                             "' does not start with the header line position<TAB>gene_name");
      continue;
    }
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    const std::string expected = std::to_string(genes.size());
    if (tab == std::string::npos || line.substr(0, tab) != expected || tab + 1 == line.size() ||
        line.find('\t', tab + 1) != std::string::npos)
      throw scssl::BadData("scbert: '" + path.string() + "' line " + std::to_string(number) +
                           " is not \"" + expected + "<TAB>gene symbol\"");
    genes.push_back(line.substr(tab + 1));
  }
  if (genes.empty()) throw scssl::BadData("scbert: '" + path.string() + "' lists no genes");
  return genes;
}

void write_panel(const fs::path& path, const std::vector<std::string>& genes) {
  std::ofstream out(path);
  out << "position\tgene_name\n";
  for (size_t i = 0; i < genes.size(); ++i) out << i << '\t' << genes[i] << '\n';
  if (!out) throw scssl::IoError("scbert: cannot write '" + path.string() + "'");
}

class Scbert final : public scssl::IMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("mode", SCSSL_PARAM_STRING, "pretrain",
                         "pretrain: train on this data set from scratch (masked tokens); "
                         "zero_shot: embed with the checkpoint folder's model, no training")
            .one_of({"pretrain", "zero_shot"}),
        {"checkpoint", SCSSL_PARAM_STRING, "",
         "zero_shot: folder with the weights and gene_panel.tsv (position<TAB>gene_name)"},
        {"weights_file", SCSSL_PARAM_STRING, "panglao_pretrain.pth",
         "zero_shot: the weights in the checkpoint folder (torch.save or safetensors)"},
        scssl::ParamSpec("dim", SCSSL_PARAM_INT, "64", "pretrain: token embedding size")
            .at_least(1),
        scssl::ParamSpec("depth", SCSSL_PARAM_INT, "2", "pretrain: Performer blocks").at_least(1),
        scssl::ParamSpec("heads", SCSSL_PARAM_INT, "4", "pretrain: attention heads").at_least(1),
        scssl::ParamSpec("dim_head", SCSSL_PARAM_INT, "16", "pretrain: width of every head")
            .at_least(1),
        scssl::ParamSpec("nb_features", SCSSL_PARAM_INT, "64",
                         "pretrain: random features of the softmax kernel per head")
            .at_least(1),
        scssl::ParamSpec("bin_num", SCSSL_PARAM_INT, "5",
                         "pretrain: largest expression class (floor(log2(1 + x)) clamped)")
            .at_least(1),
        scssl::ParamSpec("mask_prob", SCSSL_PARAM_FLOAT, "0.15",
                         "pretrain: share of every cell's non-zero tokens that are predicted")
            .above(0)
            .below(1),
        scssl::ParamSpec("replace_prob", SCSSL_PARAM_FLOAT, "0.9",
                         "pretrain: share of the predicted tokens replaced by the mask token")
            .at_least(0)
            .at_most(1),
        scssl::ParamSpec("feature_redraw_interval", SCSSL_PARAM_INT, "1000",
                         "pretrain: training steps between fresh random features (0: never)")
            .at_least(0),
        scssl::ParamSpec("embed_batch_size", SCSSL_PARAM_INT, "0",
                         "cells per forward pass when embedding (0: by the model's size)")
            .at_least(0),
    };
  }

  Scbert(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        zero_shot_(p.get_string("mode") == "zero_shot"),
        checkpoint_(p.get_string("checkpoint")),
        weights_file_(p.get_string("weights_file")),
        mask_prob_(p.get_float("mask_prob")),
        replace_prob_(p.get_float("replace_prob")),
        embed_batch_size_(p.get_int("embed_batch_size")) {
    shape_.dim = p.get_int("dim");
    shape_.depth = p.get_int("depth");
    shape_.heads = p.get_int("heads");
    shape_.dim_head = p.get_int("dim_head");
    shape_.nb_features = p.get_int("nb_features");
    shape_.num_tokens = p.get_int("bin_num") + 2;
    shape_.redraw_interval = p.get_int("feature_redraw_interval");
    if (zero_shot_ && checkpoint_.empty())
      throw scssl::InvalidArgument(
          "scbert: mode \"zero_shot\" needs method.checkpoint, the folder of a scBERT model");
  }

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    seed_ = options.seed;
    const int rna = scssl::rna_modality(train);
    require_expression(train.modalities[rna].X);
    if (zero_shot_) {
      load_checkpoint(fs::path(checkpoint_));
      net_->to(scssl::parse_device(options.device));
      panel_columns(train.modalities[rna].features);  // refuses data sharing no gene, logs coverage
      return;
    }
    // The panel of a model trained from scratch: the data set's (selected) genes.
    panel_ = train.modalities[rna].features;
    shape_.seq_len = static_cast<int64_t>(panel_.size()) + 1;
    shape_.gene2vec = false;
    shape_.seed = scssl::mix_seed(options.seed, 0x9e0);
    torch::manual_seed(scssl::mix_seed(options.seed, 0x5cbe));
    net_ = scbert::Model(shape_);

    scssl::LossTrainer trainer(host_, options, {rna}, scssl::LossTrainerOptions{});
    scbert::Model net = net_;
    const std::vector<int64_t> columns = panel_columns(train.modalities[rna].features);
    const int64_t bin_num = shape_.num_tokens - 2, mask_token = shape_.num_tokens - 1;
    trainer.fit(train, *net, [&](const scssl::CellBatch& b) {
      const auto epoch = static_cast<uint64_t>(b.epoch), step = static_cast<uint64_t>(b.step);
      const uint64_t draw = scssl::mix_seed(seed_, 0x3a5c, epoch, step * 2 + !b.training);
      const torch::Tensor tokens = scbert::tokenize(b.x[0], columns, bin_num).cpu();
      const scbert::Masked m = scbert::mask_tokens(tokens, scssl::cell_seeds(b.cell_ids, draw),
                                                   mask_prob_, replace_prob_, mask_token);
      const torch::Device device = trainer.device();
      net->performer->set_redraw_seed(scssl::mix_seed(seed_, 0x7ed, epoch, step));
      const torch::Tensor encodings = net->forward(m.input.to(device), scbert::KeyMax::Batch);
      const torch::Tensor labels = m.labels.to(device).view({-1});
      const torch::Tensor chosen = labels.ne(scbert::kIgnore).nonzero().squeeze(1);
      if (chosen.numel() == 0)  // no cell of the batch expresses a panel gene
        return scssl::StepLoss{encodings.sum() * 0, {}};
      const torch::Tensor logits =
          net->logits(encodings.reshape({-1, encodings.size(2)}).index_select(0, chosen));
      const torch::Tensor target = labels.index_select(0, chosen);
      const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, target);
      const torch::Tensor accuracy =
          logits.detach().argmax(1).eq(target).to(torch::kFloat32).mean();
      return scssl::StepLoss{loss, {{"accuracy", accuracy}}};
    });
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("scbert: embed() called before fit() or load()");
    const int rna = scssl::rna_modality(data);
    const scssl::Matrix& x = data.modalities[rna].X;
    require_expression(x);
    const std::vector<int64_t> columns = panel_columns(data.modalities[rna].features);
    net_->eval();
    torch::NoGradGuard no_grad;
    const torch::Device device = net_->token_emb->weight.device();
    const scbert::ModelShape& s = net_->shape();
    const int64_t chunk = embed_batch_size_ > 0 ? embed_batch_size_ : scbert::embed_chunk(s);
    const int64_t bin_num = s.num_tokens - 2;
    std::vector<torch::Tensor> parts;
    for (int64_t begin = 0; begin < data.n_cells(); begin += chunk) {
      const int64_t end = std::min(data.n_cells(), begin + chunk);
      const torch::Tensor ids = torch::arange(begin, end, torch::kInt64);
      const torch::Tensor tokens = scbert::tokenize(x.rows_dense(ids).to(device), columns, bin_num);
      // Each cell as in a batch of one, so that no cell's embedding depends on its neighbours.
      parts.push_back(
          scbert::gene_mean(net_->forward(tokens, scbert::KeyMax::Cell)).to(torch::kCPU));
      host_.progress("embed", end, data.n_cells());
    }
    return torch::cat(parts);
  }

  void save(const std::string& directory) const override {
    const scbert::ModelShape& s = shape_;
    scssl::save_model(directory, "scbert", net_.ptr(),
                      {s.num_tokens, s.seq_len, s.dim, s.depth, s.heads, s.dim_head, s.nb_features,
                       s.ff_mult, s.gene2vec, s.redraw_interval, static_cast<int64_t>(s.seed)});
    write_panel(fs::path(directory) / kPanelFile, panel_);
  }

  void load(const std::string& directory) override {
    scssl::SavedModel saved(directory, "scbert");
    const auto& v = saved.shape();
    if (v.size() != 11)
      throw scssl::BadData("scbert: '" + directory + "/model.pt' is not an scbert model");
    shape_ = scbert::ModelShape{v[0],
                                v[1],
                                v[2],
                                v[3],
                                v[4],
                                v[5],
                                v[6],
                                v[7],
                                v[8] != 0,
                                v[9],
                                static_cast<uint64_t>(v[10])};
    panel_ = read_panel(fs::path(directory) / kPanelFile);
    if (static_cast<int64_t>(panel_.size()) + 1 != shape_.seq_len)
      throw scssl::BadData("scbert: '" + directory + "/" + kPanelFile + "' lists " +
                           std::to_string(panel_.size()) + " genes, but the model has " +
                           std::to_string(shape_.seq_len - 1));
    net_ = scbert::Model(shape_);
    saved.load_into(*net_);
  }

 private:
  // The tokens are floor(log2(1 + normalised count)), read from the host's log1p values; values
  // below zero (scaled data) are no such thing.
  static void require_expression(const scssl::Matrix& x) {
    scssl::require_expression_values(x, "scbert",
                                     "scBERT's tokens are floor(log2(1 + normalised count)), which "
                                     "needs the log-normalised values");
  }

  // The data column of every panel gene (-1 where the data lacks it); refuses data sharing no
  // gene with the panel and logs the coverage once.
  std::vector<int64_t> panel_columns(const std::vector<std::string>& features) {
    std::vector<int64_t> columns = scbert::panel_columns(panel_, features);
    const auto found = static_cast<size_t>(
        std::count_if(columns.begin(), columns.end(), [](int64_t c) { return c >= 0; }));
    if (found == 0)
      throw scssl::BadData("scbert: none of the data's " + std::to_string(features.size()) +
                           " features is in the model's gene panel of " +
                           std::to_string(panel_.size()) + " (scBERT expects gene symbols)");
    if (found < panel_.size() && !coverage_reported_) {
      host_.info("scbert: " + std::to_string(found) + " of the panel's " +
                 std::to_string(panel_.size()) + " genes are among the data's " +
                 std::to_string(features.size()) + " features; the others are 0 in every cell");
      coverage_reported_ = true;
    }
    return columns;
  }

  // The official layout: gene_panel.tsv and a torch.save'd dict whose "model_state_dict" holds
  // PerformerLM's tensors (or a plain state dict, or safetensors). The sizes come from the
  // shapes: dim and the classes from token_emb, the sequence from the position table, the
  // blocks counted, dim_head and nb_features from the projection matrix, the heads from to_q.
  void load_checkpoint(const fs::path& folder) {
    panel_ = read_panel(folder / kPanelFile);
    const fs::path weights = folder / weights_file_;
    const scssl::TensorFile file = scssl::read_tensor_file(weights.string());
    scssl::TensorNameMap names;
    for (const auto& [name, tensor] : file.tensors)
      if (name.rfind(kStateDict, 0) == 0) names.prefix = kStateDict;
    const auto find = [&](const std::string& name) {
      const torch::Tensor* t = file.find(names.prefix + name);
      return t ? t : file.find(names.prefix + "module." + name);
    };
    const auto shape_of = [&](const std::string& name, int64_t dims) {
      const torch::Tensor* t = find(name);
      if (!t || t->dim() != dims)
        throw scssl::BadData("scbert: '" + weights.string() + "' has no " + std::to_string(dims) +
                             "-d tensor '" + names.prefix + name +
                             "', so it is not a scBERT (PerformerLM) checkpoint");
      return t->sizes().vec();
    };
    const std::string block = "performer.net.layers.0.";
    const auto tokens = shape_of("token_emb.weight", 2);
    const auto positions = shape_of("pos_emb.emb.weight", 2);
    const auto q = shape_of(block + "0.fn.to_q.weight", 2);
    const auto projection = shape_of(block + "0.fn.fast_attention.projection_matrix", 2);
    const auto w1 = shape_of(block + "1.fn.fn.w1.weight", 2);
    shape_.num_tokens = tokens[0];
    shape_.dim = tokens[1];
    shape_.seq_len = positions[0];
    shape_.depth = 0;
    while (find("performer.net.layers." + std::to_string(shape_.depth) + ".0.fn.to_q.weight"))
      ++shape_.depth;
    shape_.nb_features = projection[0];
    shape_.dim_head = projection[1];
    shape_.heads = q[0] / shape_.dim_head;
    shape_.ff_mult = w1[0] / shape_.dim;
    shape_.gene2vec = true;
    if (shape_.num_tokens < 3 || q[0] % shape_.dim_head != 0 || w1[0] % shape_.dim != 0)
      throw scssl::BadData(
          "scbert: '" + weights.string() + "' has shapes no PerformerLM has (token classes " +
          std::to_string(shape_.num_tokens) + ", to_q rows " + std::to_string(q[0]) +
          ", head width " + std::to_string(shape_.dim_head) + ")");
    if (static_cast<int64_t>(panel_.size()) + 1 != shape_.seq_len)
      throw scssl::BadData("scbert: '" + (folder / kPanelFile).string() + "' lists " +
                           std::to_string(panel_.size()) + " genes, but the checkpoint's " +
                           "position table has " + std::to_string(shape_.seq_len) +
                           " rows (one per gene plus the appended token)");
    net_ = scbert::Model(shape_);
    scssl::load_tensors(*net_, file, names);
    host_.info("scbert: loaded " + std::to_string(shape_.depth) + " Performer blocks of width " +
               std::to_string(shape_.dim) + " (" + std::to_string(shape_.heads) + " heads of " +
               std::to_string(shape_.dim_head) + ", " + std::to_string(shape_.nb_features) +
               " random features) and a panel of " + std::to_string(panel_.size()) +
               " genes from '" + folder.string() + "'");
  }

  bool zero_shot_;
  std::string checkpoint_, weights_file_;
  double mask_prob_, replace_prob_;
  int64_t embed_batch_size_;
  bool coverage_reported_ = false;
  uint64_t seed_ = 0;
  scbert::ModelShape shape_;
  std::vector<std::string> panel_;  // gene symbol of every position
  scbert::Model net_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(Scbert, "scbert", "1.0.0",
             "scBERT: Performer over a gene panel's binned expression; pretrain (masked tokens "
             "on this data set) or zero_shot (the official panglao_pretrain.pth); uses no labels "
             "in these modes; embedding = mean final-LayerNorm output over the gene positions")
