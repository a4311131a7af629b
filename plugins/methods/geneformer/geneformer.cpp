// Geneformer (Theodoris et al., Nature 2023; huggingface.co/ctheodoris/Geneformer;
// docs/method-spec.md §15, docs/methods/geneformer.md): a BERT over each cell's genes in the
// order of their expression relative to the gene's median over a corpus (the rank-value
// encoding). Two modes: `pretrain` trains a small model of the data set's own genes from scratch
// with the masked-LM objective, `zero_shot` loads an official checkpoint folder and trains
// nothing. Neither uses labels. The embedding is the mean over a cell's gene tokens of the
// second-to-last layer's output, as Geneformer's EmbExtractor does by default.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "geneformer_model.hpp"
#include "geneformer_tokenizer.hpp"
#include "scssl/gene_tokens.hpp"
#include "scssl/loss_trainer.hpp"
#include "scssl/model_archive.hpp"
#include "scssl/plugin.hpp"
#include "scssl/tensor_file.hpp"

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Rows = std::vector<std::pair<std::string, std::string>>;

constexpr int64_t kFirstGene = 2;  // a model trained here: <pad> 0, <mask> 1, then the genes

Json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw scssl::IoError("geneformer: cannot read '" + path.string() + "'");
  try {
    return Json::parse(in);
  } catch (const Json::exception& e) {
    throw scssl::BadData("geneformer: '" + path.string() + "' is not JSON: " + e.what());
  }
}

// The dictionaries' TSV layout (docs/methods/geneformer.md): a header line, then one entry per
// line as two tab-separated columns.
Rows read_tsv(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw scssl::IoError("geneformer: cannot read '" + path.string() + "'");
  Rows rows;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (number == 1 || line.empty()) continue;  // the header
    const size_t tab = line.find('\t');
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos || tab == 0)
      throw scssl::BadData("geneformer: '" + path.string() + "' line " + std::to_string(number) +
                           " is not two tab-separated columns");
    rows.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return rows;
}

void write_tsv(const fs::path& path, const std::string& header, const Rows& rows) {
  std::ofstream out(path);
  out << header << '\n';
  for (const auto& [key, value] : rows) out << key << '\t' << value << '\n';
  if (!out) throw scssl::IoError("geneformer: cannot write '" + path.string() + "'");
}

std::string number_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);
  return text;
}

// ENSG00000139618 or ENSMUSG00000017167.3: an Ensembl gene id, with its version when it has one.
bool is_ensembl_id(const std::string& s) {
  if (s.rfind("ENS", 0) != 0) return false;
  size_t i = 3;
  while (i < s.size() && std::isupper(static_cast<unsigned char>(s[i])) && s[i] != 'G') ++i;
  if (i >= s.size() || s[i] != 'G') return false;
  const size_t digits = ++i;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  return i - digits >= 6 && (i == s.size() || s[i] == '.');
}

// Token and median dictionaries (keyed by Ensembl id, or by the data's own gene names for a model
// trained here) and the optional symbol -> Ensembl id map, with the rows as read, so that a saved
// model writes them back unchanged.
struct Dictionaries {
  Rows token_rows, median_rows, name_rows;
  std::unordered_map<std::string, int64_t> token_of;
  std::unordered_map<std::string, double> median_of;
  std::unordered_map<std::string, std::string> id_of;

  static constexpr const char* kTokens = "token_dictionary.tsv";
  static constexpr const char* kMedians = "gene_median_dictionary.tsv";
  static constexpr const char* kNames = "gene_name_id_dict.tsv";

  void index(const fs::path& folder) {
    for (const auto& [key, value] : token_rows) {
      char* end = nullptr;
      const long long id = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || id < 0)
        throw scssl::BadData("geneformer: '" + (folder / kTokens).string() + "': the token of '" +
                             key + "' is not a non-negative integer");
      token_of[key] = id;
    }
    for (const auto& [key, value] : median_rows) {
      char* end = nullptr;
      const double median = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !std::isfinite(median) || median <= 0)
        throw scssl::BadData("geneformer: '" + (folder / kMedians).string() + "': the median of '" +
                             key + "' is not a positive number");
      median_of[key] = median;
    }
    for (const auto& [name, id] : name_rows) id_of.emplace(name, id);
  }

  void read(const fs::path& folder) {
    token_rows = read_tsv(folder / kTokens);
    median_rows = read_tsv(folder / kMedians);
    if (fs::exists(folder / kNames)) name_rows = read_tsv(folder / kNames);
    index(folder);
  }

  void write(const fs::path& folder) const {
    write_tsv(folder / kTokens, "ensembl_id\ttoken_id", token_rows);
    write_tsv(folder / kMedians, "ensembl_id\tmedian", median_rows);
    if (!name_rows.empty()) write_tsv(folder / kNames, "gene_name\tensembl_id", name_rows);
  }

  // The token of a special entry such as "<pad>", -1 when absent.
  int64_t special(const std::string& name) const {
    const auto it = token_of.find(name);
    return it == token_of.end() ? -1 : it->second;
  }
};

// A config.json member: an integer / number, the default where it is absent.
template <class T>
T config_value(const Json& config, const char* key, T fallback, const fs::path& file) {
  if (!config.contains(key) || config[key].is_null()) return fallback;
  if (!config[key].is_number())
    throw scssl::BadData("geneformer: '" + file.string() + "': " + key + " is not a number");
  return config[key].get<T>();
}

class Geneformer final : public scssl::IMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("mode", SCSSL_PARAM_STRING, "pretrain",
                         "pretrain: train on this data set from scratch (masked LM); zero_shot: "
                         "embed with the checkpoint folder's model, no training")
            .one_of({"pretrain", "zero_shot"}),
        {"checkpoint", SCSSL_PARAM_STRING, "",
         "zero_shot: folder with config.json, the weights and the TSV dictionaries"},
        {"weights_file", SCSSL_PARAM_STRING, "",
         "zero_shot: the weights in the checkpoint folder; empty: model.safetensors if present, "
         "else pytorch_model.bin"},
        scssl::ParamSpec("d_model", SCSSL_PARAM_INT, "128", "pretrain: hidden size").at_least(1),
        scssl::ParamSpec("n_layers", SCSSL_PARAM_INT, "4", "pretrain: BERT layers").at_least(1),
        scssl::ParamSpec("n_heads", SCSSL_PARAM_INT, "4",
                         "pretrain: attention heads (must divide d_model)")
            .at_least(1),
        scssl::ParamSpec("d_hid", SCSSL_PARAM_INT, "256", "pretrain: feed-forward width")
            .at_least(1),
        scssl::ParamSpec("dropout", SCSSL_PARAM_FLOAT, "0.02",
                         "pretrain: dropout of hidden states and attention weights")
            .at_least(0)
            .below(1),
        scssl::ParamSpec("max_length", SCSSL_PARAM_INT, "2048",
                         "tokens per cell: the top-ranked genes (2048 for V1 models, 4096 for V2)")
            .at_least(1),
        scssl::ParamSpec("mask_ratio", SCSSL_PARAM_FLOAT, "0.15",
                         "pretrain: chance of each token to be chosen for the masked-LM loss")
            .above(0)
            .below(1),
        scssl::ParamSpec("emb_layer", SCSSL_PARAM_INT, "-1",
                         "-1: the second-to-last layer's output (EmbExtractor's default); 0: the "
                         "last layer's")
            .at_least(-1)
            .at_most(0),
        scssl::ParamSpec("emb_mode", SCSSL_PARAM_STRING, "cell",
                         "cell: mean over the gene tokens; cls: the <cls> token (V2 dictionaries)")
            .one_of({"cell", "cls"}),
        scssl::fused_attention_param(),
    };
  }

  Geneformer(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        zero_shot_(p.get_string("mode") == "zero_shot"),
        checkpoint_(p.get_string("checkpoint")),
        weights_file_(p.get_string("weights_file")),
        max_length_(p.get_int("max_length")),
        mask_ratio_(p.get_float("mask_ratio")),
        emb_layer_(p.get_int("emb_layer")),
        emb_cls_(p.get_string("emb_mode") == "cls"),
        fused_attention_(p.get_bool("fused_attention")) {
    shape_.hidden = p.get_int("d_model");
    shape_.layers = p.get_int("n_layers");
    shape_.heads = p.get_int("n_heads");
    shape_.intermediate = p.get_int("d_hid");
    shape_.hidden_dropout = shape_.attention_dropout = p.get_float("dropout");
    if (zero_shot_ && checkpoint_.empty())
      throw scssl::InvalidArgument(
          "geneformer: mode \"zero_shot\" needs method.checkpoint, the folder of a Geneformer "
          "model");
    if (!zero_shot_ && shape_.hidden % shape_.heads != 0)
      throw scssl::InvalidArgument("geneformer: n_heads (" + std::to_string(shape_.heads) +
                                   ") must divide d_model (" + std::to_string(shape_.hidden) + ")");
    if (!zero_shot_ && emb_cls_)
      throw scssl::InvalidArgument(
          "geneformer: emb_mode \"cls\" needs a <cls> token, which only official V2 "
          "dictionaries have (mode \"zero_shot\")");
  }

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    seed_ = options.seed;
    const int rna = scssl::rna_modality(train);
    require_expression(train.modalities[rna].X);
    if (zero_shot_) {
      load_checkpoint(fs::path(checkpoint_));
      return;
    }
    build_vocabulary(train.modalities[rna]);
    shape_.vocab = static_cast<int64_t>(dictionaries_.token_rows.size());
    shape_.max_positions = max_length_;
    shape_.pad_id = 0;
    tokens_ = geneformer::TokenizerOptions{max_length_, 0, -1, -1};
    mask_id_ = 1;
    torch::manual_seed(scssl::mix_seed(options.seed, 0x6e7f));
    net_ = geneformer::Model(shape_);
    host_.info("geneformer: vocabulary of " + std::to_string(shape_.vocab - kFirstGene) +
               " genes + <pad>, <mask>; the top " + std::to_string(max_length_) +
               " ranked genes of each cell are its tokens");

    scssl::LossTrainer trainer(host_, options, {rna}, scssl::LossTrainerOptions{});
    geneformer::Model net = net_;
    const geneformer::GenePanel panel = gene_panel(train.modalities[rna].features);
    trainer.fit(train, *net, [&](const scssl::CellBatch& b) {
      const uint64_t draw = scssl::mix_seed(seed_, 0x3a5c, static_cast<uint64_t>(b.epoch),
                                            static_cast<uint64_t>(b.step) * 2 + !b.training);
      const geneformer::Tokens t = geneformer::tokenize(torch::expm1(b.x[0].cpu()), panel, tokens_);
      const geneformer::MaskedTokens m = geneformer::mask_tokens(
          t, mask_ratio_, mask_id_, kFirstGene, shape_.vocab, scssl::cell_seeds(b.cell_ids, draw));
      // The loss of HF's BertForMaskedLM: cross-entropy over the chosen positions only. The
      // cells run in passes of a bounded attention size; each cell's result is the same.
      const torch::Device device = trainer.device();
      std::vector<torch::Tensor> rows, targets;
      for (const scssl::TokenPass& p : scssl::attention_passes(t.attention_mask, shape_.heads)) {
        const auto part = [&](const torch::Tensor& v) {
          return v.slice(0, p.begin, p.end).slice(1, 0, p.length).to(device);
        };
        const torch::Tensor h = net->forward(part(m.input), part(t.attention_mask)).back();
        const torch::Tensor labels = part(m.labels), chosen = labels.ne(-100);
        rows.push_back(h.index({chosen}));
        targets.push_back(labels.masked_select(chosen));
      }
      const torch::Tensor labels = torch::cat(targets);
      if (labels.numel() == 0) return scssl::StepLoss{net->decoder_bias.sum() * 0, {}};
      const torch::Tensor logits = net->mlm_logits(torch::cat(rows));
      const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, labels);
      const torch::Tensor accuracy = logits.argmax(-1).eq(labels).to(torch::kFloat32).mean();
      return scssl::StepLoss{loss, {{"accuracy", accuracy.detach()}}};
    });
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("geneformer: embed() called before fit() or load()");
    const int rna = scssl::rna_modality(data);
    const scssl::Matrix& x = data.modalities[rna].X;
    require_expression(x);
    const geneformer::GenePanel panel = gene_panel(data.modalities[rna].features);
    const int64_t layer = shape_.layers + emb_layer_;  // EmbExtractor's layer_to_quant
    net_->eval();
    net_->fused_inference = fused_attention_;
    torch::NoGradGuard no_grad;
    const torch::Device device = net_->word_embeddings->weight.device();
    std::vector<torch::Tensor> parts;
    int64_t empty = 0;
    constexpr int64_t kChunk = 64;
    for (int64_t begin = 0; begin < data.n_cells(); begin += kChunk) {
      const int64_t end = std::min(data.n_cells(), begin + kChunk);
      const geneformer::Tokens t =
          geneformer::tokenize(torch::expm1(x.slice_dense(begin, end)), panel, tokens_);
      for (const scssl::TokenPass& p : scssl::attention_passes(t.attention_mask, shape_.heads)) {
        const torch::Tensor ids = t.ids.slice(0, p.begin, p.end).slice(1, 0, p.length);
        const torch::Tensor mask = t.attention_mask.slice(0, p.begin, p.end).slice(1, 0, p.length);
        const torch::Tensor h = net_->forward(ids.to(device), mask.to(device), layer)[layer].cpu();
        if (emb_cls_) {
          parts.push_back(h.select(1, 0));
          continue;
        }
        // The gene tokens: not padding, not <cls> or <eos>.
        torch::Tensor genes = mask.to(torch::kFloat32);
        if (tokens_.cls_id >= 0) genes = genes * ids.ne(tokens_.cls_id);
        if (tokens_.eos_id >= 0) genes = genes * ids.ne(tokens_.eos_id);
        const torch::Tensor count = genes.sum(1, true);
        empty += count.eq(0).sum().item<int64_t>();
        parts.push_back((h * genes.unsqueeze(-1)).sum(1) / count.clamp_min(1));
      }
    }
    if (empty > 0)
      host_.warn("geneformer: " + std::to_string(empty) +
                 " cells express no gene of the dictionary; their embedding is 0");
    return torch::cat(parts);
  }

  void save(const std::string& directory) const override {
    const geneformer::ModelShape& s = shape_;
    scssl::save_model(
        directory, "geneformer", net_.ptr(),
        {s.vocab, s.hidden, s.heads, s.intermediate, s.layers, s.max_positions, s.type_vocab,
         s.pad_id, static_cast<int64_t>(s.act), s.mlm_head, mask_id_, tokens_.cls_id,
         tokens_.eos_id, tokens_.max_length, emb_layer_, emb_cls_, static_cast<int64_t>(seed_)});
    // The three floating-point settings the integers cannot hold, and the dictionaries.
    std::ofstream(fs::path(directory) / "geneformer.json") << Json{
        {"layer_norm_eps", s.layer_norm_eps},
        {"hidden_dropout_prob", s.hidden_dropout},
        {"attention_probs_dropout_prob", s.attention_dropout}}.dump();
    dictionaries_.write(directory);
  }

  void load(const std::string& directory) override {
    scssl::SavedModel saved(directory, "geneformer");
    const auto& v = saved.shape();
    if (v.size() != 17)
      throw scssl::BadData("geneformer: '" + directory + "/model.pt' is not a geneformer model");
    shape_ = geneformer::ModelShape{};
    shape_.vocab = v[0];
    shape_.hidden = v[1];
    shape_.heads = v[2];
    shape_.intermediate = v[3];
    shape_.layers = v[4];
    shape_.max_positions = v[5];
    shape_.type_vocab = v[6];
    shape_.pad_id = v[7];
    shape_.act = static_cast<geneformer::Activation>(v[8]);
    shape_.mlm_head = v[9] != 0;
    mask_id_ = v[10];
    tokens_ = geneformer::TokenizerOptions{v[13], v[7], v[11], v[12]};
    emb_layer_ = v[14];
    emb_cls_ = v[15] != 0;
    seed_ = static_cast<uint64_t>(v[16]);
    const Json settings = read_json(fs::path(directory) / "geneformer.json");
    shape_.layer_norm_eps = settings.value("layer_norm_eps", 1e-12);
    shape_.hidden_dropout = settings.value("hidden_dropout_prob", 0.02);
    shape_.attention_dropout = settings.value("attention_probs_dropout_prob", 0.02);
    dictionaries_ = Dictionaries{};
    dictionaries_.read(directory);
    net_ = geneformer::Model(shape_);
    saved.load_into(*net_);
  }

 private:
  // The tokenizer needs the normalised counts, which are expm1 of the host's log1p values; values
  // below zero (scaled data) are not of that kind.
  static void require_expression(const scssl::Matrix& x) {
    scssl::require_expression_values(
        x, "geneformer",
        "Geneformer ranks each cell's normalised counts, recovered as expm1 of the log1p values");
  }

  // A model of the data set's genes: tokens <pad> 0, <mask> 1, gene j -> j + 2; the median of a
  // gene is that of its non-zero normalised counts over the training cells, as Geneformer's
  // gene_median_dictionary holds for its corpus.
  void build_vocabulary(const scssl::Modality& m) {
    const std::vector<double> medians = nonzero_medians(m.X);
    dictionaries_ = Dictionaries{};
    dictionaries_.token_rows = {{"<pad>", "0"}, {"<mask>", "1"}};
    for (size_t j = 0; j < m.features.size(); ++j) {
      dictionaries_.token_rows.emplace_back(m.features[j],
                                            std::to_string(static_cast<int64_t>(j) + kFirstGene));
      dictionaries_.median_rows.emplace_back(m.features[j], number_text(medians[j]));
    }
    dictionaries_.index({});
  }

  // numpy.median of expm1 over each column's non-zero entries; 1 for a column without any (its
  // gene never enters a training sequence, and any positive median keeps it usable later).
  static std::vector<double> nonzero_medians(const scssl::Matrix& x) {
    std::vector<std::vector<float>> columns(static_cast<size_t>(x.cols));
    if (x.is_csr()) {
      const torch::Tensor idx = x.indices.to(torch::kCPU, torch::kInt64).contiguous();
      const torch::Tensor val =
          torch::expm1(x.values.to(torch::kCPU, torch::kFloat32)).contiguous();
      const int64_t* j = idx.data_ptr<int64_t>();
      const float* v = val.data_ptr<float>();
      for (int64_t k = 0; k < idx.numel(); ++k)
        if (v[k] > 0) columns[static_cast<size_t>(j[k])].push_back(v[k]);
    } else {
      const torch::Tensor d = torch::expm1(x.dense.to(torch::kCPU, torch::kFloat32)).contiguous();
      const float* v = d.data_ptr<float>();
      for (int64_t i = 0; i < x.rows; ++i)
        for (int64_t j = 0; j < x.cols; ++j)
          if (v[i * x.cols + j] > 0) columns[static_cast<size_t>(j)].push_back(v[i * x.cols + j]);
    }
    std::vector<double> medians;
    for (auto& c : columns) {
      if (c.empty()) {
        medians.push_back(1.0);
        continue;
      }
      std::sort(c.begin(), c.end());
      const size_t h = c.size() / 2;
      medians.push_back(c.size() % 2 ? c[h] : (static_cast<double>(c[h - 1]) + c[h]) / 2);
    }
    return medians;
  }

  // The official folder: config.json (a BertConfig), the weights, the TSV dictionaries.
  void load_checkpoint(const fs::path& folder) {
    const fs::path config_file = folder / "config.json";
    const Json c = read_json(config_file);
    dictionaries_ = Dictionaries{};
    dictionaries_.read(folder);
    shape_ = geneformer::ModelShape{};
    shape_.vocab = config_value<int64_t>(c, "vocab_size", 0, config_file);
    shape_.hidden = config_value<int64_t>(c, "hidden_size", 768, config_file);
    shape_.heads = config_value<int64_t>(c, "num_attention_heads", 12, config_file);
    shape_.intermediate = config_value<int64_t>(c, "intermediate_size", 3072, config_file);
    shape_.layers = config_value<int64_t>(c, "num_hidden_layers", 12, config_file);
    shape_.max_positions = config_value<int64_t>(c, "max_position_embeddings", 512, config_file);
    shape_.type_vocab = config_value<int64_t>(c, "type_vocab_size", 2, config_file);
    shape_.layer_norm_eps = config_value<double>(c, "layer_norm_eps", 1e-12, config_file);
    shape_.hidden_dropout = config_value<double>(c, "hidden_dropout_prob", 0.1, config_file);
    shape_.attention_dropout =
        config_value<double>(c, "attention_probs_dropout_prob", 0.1, config_file);
    const std::string act = c.value("hidden_act", std::string("gelu"));
    if (!geneformer::parse_activation(act, shape_.act))
      throw scssl::BadData("geneformer: '" + config_file.string() + "': hidden_act \"" + act +
                           "\" is not supported (relu, gelu, gelu_new, silu)");
    if (c.value("position_embedding_type", std::string("absolute")) != "absolute")
      throw scssl::BadData("geneformer: '" + config_file.string() +
                           "': only absolute position embeddings are supported");
    if (shape_.vocab < 1 || shape_.layers < 1 || shape_.heads < 1 ||
        shape_.hidden % shape_.heads != 0 || shape_.type_vocab < 1 || shape_.max_positions < 1)
      throw scssl::BadData("geneformer: '" + config_file.string() +
                           "' does not describe a BERT (vocab_size, hidden_size divisible by "
                           "num_attention_heads, num_hidden_layers, max_position_embeddings)");

    const fs::path token_file = folder / Dictionaries::kTokens;
    shape_.pad_id = dictionaries_.special("<pad>");
    mask_id_ = dictionaries_.special("<mask>");
    if (shape_.pad_id < 0 || mask_id_ < 0)
      throw scssl::BadData("geneformer: '" + token_file.string() +
                           "' lacks the <pad> or <mask> token");
    for (const auto& [gene, token] : dictionaries_.token_of)
      if (token >= shape_.vocab)
        throw scssl::BadData("geneformer: '" + token_file.string() + "' gives '" + gene +
                             "' token " + std::to_string(token) + ", but the model has " +
                             std::to_string(shape_.vocab) + " tokens (vocab_size)");
    tokens_ = geneformer::TokenizerOptions{std::min(max_length_, shape_.max_positions),
                                           shape_.pad_id, dictionaries_.special("<cls>"),
                                           dictionaries_.special("<eos>")};
    if (emb_cls_ && tokens_.cls_id < 0)
      throw scssl::BadData("geneformer: emb_mode \"cls\" needs a <cls> token, and '" +
                           token_file.string() + "' has none");
    if (max_length_ > shape_.max_positions)
      host_.info("geneformer: max_length " + std::to_string(max_length_) + " is cut to the " +
                 std::to_string(shape_.max_positions) + " positions the model has");

    fs::path weights = folder / weights_file_;
    if (weights_file_.empty())
      weights = fs::exists(folder / "model.safetensors") ? folder / "model.safetensors"
                                                         : folder / "pytorch_model.bin";
    const scssl::TensorFile file = scssl::read_tensor_file(weights.string());
    // A fine-tuned classifier keeps bert.* but has no masked-LM head; embedding needs none.
    shape_.mlm_head = file.find("cls.predictions.bias") != nullptr;
    net_ = geneformer::Model(shape_);
    scssl::TensorNameMap names;
    // position_ids: an int64 buffer of older files; the decoder: tied to the word embeddings
    // (safetensors files leave it out); pooler and classifier: heads this model does not build.
    names.ignored_prefixes = {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids",
                              "cls.predictions.decoder.", "bert.pooler.", "classifier."};
    scssl::load_tensors(*net_, file, names);
    const torch::Tensor* decoder = file.find("cls.predictions.decoder.weight");
    if (decoder && !decoder->equal(net_->word_embeddings->weight.detach()))
      host_.warn("geneformer: '" + weights.string() +
                 "' has a masked-LM decoder that differs from the word embeddings; the tied "
                 "embeddings are used (the cell embedding does not depend on it)");
    host_.info("geneformer: loaded " + std::to_string(shape_.layers) + " layers of width " +
               std::to_string(shape_.hidden) + " from '" + weights.string() + "'");
  }

  // Every feature's token and median: the feature itself when the dictionary has it (Ensembl ids,
  // or a model trained here), an Ensembl id without its version, or the id that
  // gene_name_id_dict.tsv gives a symbol. Logs the coverage once; refuses data sharing no gene
  // with the dictionary.
  geneformer::GenePanel gene_panel(const std::vector<std::string>& features) {
    const Dictionaries& d = dictionaries_;
    std::vector<int64_t> tokens;
    std::vector<double> medians;
    int64_t direct = 0, by_name = 0;
    for (const auto& f : features) {
      std::string key = f;
      bool named = false;
      if (!d.token_of.count(key)) {
        if (is_ensembl_id(f)) {
          key = f.substr(0, f.find('.'));
        } else if (const auto it = d.id_of.find(f); it != d.id_of.end()) {
          key = it->second;
          named = true;
        }
      }
      const auto token = d.token_of.find(key);
      const auto median = d.median_of.find(key);
      // Special entries (<pad>, <mask>, <cls>, <eos>) are no genes.
      const bool known = token != d.token_of.end() && median != d.median_of.end() && !key.empty() &&
                         key.front() != '<';
      tokens.push_back(known ? token->second : -1);
      medians.push_back(known ? median->second : 1.0);
      if (known) ++(named ? by_name : direct);
    }
    const auto n = static_cast<int64_t>(features.size());
    if (direct + by_name == 0)
      throw scssl::BadData("geneformer: none of the data's " + std::to_string(n) +
                           " features is in the token dictionary (Geneformer expects Ensembl ids, "
                           "or symbols with gene_name_id_dict.tsv in the checkpoint folder)");
    if (!coverage_reported_) {
      host_.info("geneformer: " + std::to_string(direct + by_name) + " of " + std::to_string(n) +
                 " genes are in the token dictionary (" + std::to_string(direct) +
                 " by their own name, " + std::to_string(by_name) +
                 " through gene_name_id_dict.tsv)" +
                 (direct + by_name < n ? "; the others are left out" : ""));
      coverage_reported_ = true;
    }
    return geneformer::make_panel(tokens, medians);
  }

  bool zero_shot_;
  std::string checkpoint_, weights_file_;
  int64_t max_length_;
  double mask_ratio_;
  int64_t emb_layer_;
  bool emb_cls_;
  bool fused_attention_;
  bool coverage_reported_ = false;
  uint64_t seed_ = 0;
  int64_t mask_id_ = 1;
  geneformer::ModelShape shape_;
  geneformer::TokenizerOptions tokens_;
  Dictionaries dictionaries_;
  geneformer::Model net_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(Geneformer, "geneformer", "1.0.0",
             "Geneformer: BERT over each cell's genes ranked by expression / corpus median; "
             "pretrain (masked LM on this data set) or zero_shot (an official checkpoint); uses "
             "no labels; embedding = mean of the second-to-last layer over the gene tokens")
