// scGPT (Cui et al., 2024; github.com/bowang-lab/scGPT; docs/method-spec.md §14,
// docs/methods/scgpt.md): a transformer over a cell's expressed genes, each token a gene embedding
// plus its binned expression. Three modes: `pretrain` trains a model of the data set's own genes
// from scratch with scGPT's masked-value objective (expression decoder and GEPC), `zero_shot`
// embeds with a checkpoint and trains nothing, `fine_tune` continues a checkpoint with scGPT's
// integration recipe (masked values, GEPC, ECS, the adversarial batch discriminator, DSBN), which
// uses batch labels. No mode uses cell types. The embedding is the <cls> token's output,
// L2-normalised.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "scgpt_model.hpp"
#include "scgpt_tokenizer.hpp"
#include "scssl/gene_tokens.hpp"
#include "scssl/loss_trainer.hpp"
#include "scssl/model_archive.hpp"
#include "scssl/plugin.hpp"
#include "scssl/tensor_file.hpp"

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr double kMaskValue = -1;  // scGPT's mask_value

Json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw scssl::IoError("scgpt: cannot read '" + path.string() + "'");
  try {
    return Json::parse(in);
  } catch (const Json::exception& e) {
    throw scssl::BadData("scgpt: '" + path.string() + "' is not JSON: " + e.what());
  }
}

// vocab.json: {"<gene symbol or special token>": id, ...}.
std::unordered_map<std::string, int64_t> read_vocabulary(const fs::path& path) {
  const Json json = read_json(path);
  if (!json.is_object() || json.empty())
    throw scssl::BadData("scgpt: '" + path.string() + "' is not a vocabulary (token -> id)");
  std::unordered_map<std::string, int64_t> vocabulary;
  for (const auto& [token, id] : json.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw scssl::BadData("scgpt: '" + path.string() + "': the id of '" + token +
                           "' is not a non-negative integer");
    vocabulary.emplace(token, id.get<int64_t>());
  }
  return vocabulary;
}

int64_t token_id(const std::unordered_map<std::string, int64_t>& vocabulary,
                 const std::string& token, const fs::path& file) {
  const auto it = vocabulary.find(token);
  if (it == vocabulary.end())
    throw scssl::BadData("scgpt: '" + file.string() + "' has no token " + token);
  return it->second;
}

// An integer or number member of args.json, with the default where it is absent.
template <class T>
T arg(const Json& args, const char* key, T fallback, const fs::path& file) {
  if (!args.contains(key)) return fallback;
  if (!args[key].is_number())
    throw scssl::BadData("scgpt: '" + file.string() + "': " + key + " is not a number");
  return args[key].get<T>();
}

class Scgpt final : public scssl::IMethod {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("mode", SCSSL_PARAM_STRING, "pretrain",
                         "pretrain: train on this data set from scratch (masked values + GEPC); "
                         "zero_shot: embed with the checkpoint, no training; fine_tune: scGPT's "
                         "integration fine-tuning of the checkpoint (uses batch labels)")
            .one_of({"pretrain", "zero_shot", "fine_tune"}),
        {"checkpoint", SCSSL_PARAM_STRING, "",
         "zero_shot, fine_tune: an official scGPT folder (args.json, vocab.json, weights) or the "
         "model folder of a scgpt run (run.save_model)"},
        {"weights_file", SCSSL_PARAM_STRING, "best_model.pt",
         "the weights in an official folder (torch.save or safetensors)"},
        scssl::ParamSpec("d_model", SCSSL_PARAM_INT, "128", "pretrain: token embedding size")
            .at_least(1),
        scssl::ParamSpec("n_layers", SCSSL_PARAM_INT, "4", "pretrain: transformer layers")
            .at_least(1),
        scssl::ParamSpec("n_heads", SCSSL_PARAM_INT, "4",
                         "pretrain: attention heads (must divide d_model)")
            .at_least(1),
        scssl::ParamSpec("d_hid", SCSSL_PARAM_INT, "128", "pretrain: feed-forward width")
            .at_least(1),
        scssl::ParamSpec("dropout", SCSSL_PARAM_FLOAT, "0.2", "pretrain: dropout everywhere")
            .at_least(0)
            .below(1),
        scssl::ParamSpec("n_bins", SCSSL_PARAM_INT, "51",
                         "pretrain: value bins (0 for unexpressed, 1..n_bins-1 for the rest)")
            .at_least(3),
        scssl::ParamSpec("max_length", SCSSL_PARAM_INT, "1200",
                         "tokens per cell including <cls>; longer cells keep a random subset")
            .at_least(2),
        scssl::ParamSpec("mask_ratio", SCSSL_PARAM_FLOAT, "0.4",
                         "pretrain: share of every cell's tokens whose value is masked")
            .above(0)
            .below(1),
        {"gepc", SCSSL_PARAM_BOOL, "true",
         "pretrain, fine_tune: add GEPC, the values predicted from the cell embedding"},
        scssl::ParamSpec("ecs_threshold", SCSSL_PARAM_FLOAT, "0.8",
                         "fine_tune: elastic cell similarity pushes cosine similarities above "
                         "this towards it (0: no ECS)")
            .at_least(0)
            .below(1),
        scssl::ParamSpec("ecs_weight", SCSSL_PARAM_FLOAT, "10", "fine_tune: weight of ECS")
            .at_least(0),
        scssl::ParamSpec("dab_weight", SCSSL_PARAM_FLOAT, "1",
                         "fine_tune: weight of the batch discriminator behind gradient reversal")
            .at_least(0),
        {"dsbn", SCSSL_PARAM_BOOL, "true",
         "fine_tune: batch normalisation of the tokens per batch (domain-specific)"},
        scssl::fused_attention_param(),
    };
  }

  Scgpt(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        zero_shot_(p.get_string("mode") == "zero_shot"),
        fine_tune_(p.get_string("mode") == "fine_tune"),
        checkpoint_(p.get_string("checkpoint")),
        weights_file_(p.get_string("weights_file")),
        max_length_(p.get_int("max_length")),
        mask_ratio_(p.get_float("mask_ratio")),
        gepc_(p.get_bool("gepc")),
        ecs_threshold_(p.get_float("ecs_threshold")),
        ecs_weight_(p.get_float("ecs_weight")),
        dab_weight_(p.get_float("dab_weight")),
        dsbn_(p.get_bool("dsbn")),
        fused_attention_(p.get_bool("fused_attention")) {
    shape_.d_model = p.get_int("d_model");
    shape_.layers = p.get_int("n_layers");
    shape_.heads = p.get_int("n_heads");
    shape_.d_hid = p.get_int("d_hid");
    shape_.dropout = dropout_ = p.get_float("dropout");
    tokens_.n_bins = p.get_int("n_bins");
    if ((zero_shot_ || fine_tune_) && checkpoint_.empty())
      throw scssl::InvalidArgument("scgpt: mode \"" + p.get_string("mode") +
                                   "\" needs method.checkpoint, the folder of a scGPT model");
    if (!zero_shot_ && shape_.d_model % shape_.heads != 0)
      throw scssl::InvalidArgument("scgpt: n_heads (" + std::to_string(shape_.heads) +
                                   ") must divide d_model (" + std::to_string(shape_.d_model) +
                                   ")");
  }

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    seed_ = options.seed;
    const int rna = scssl::rna_modality(train);
    require_expression(train.modalities[rna].X);
    if (zero_shot_) {
      load_pretrained(fs::path(checkpoint_));
      return;
    }
    if (fine_tune_) {
      fine_tune(train, options);
      return;
    }
    // The vocabulary of a model trained from scratch: the data set's genes, then the specials.
    vocabulary_ = train.modalities[rna].features;
    const auto genes = static_cast<int64_t>(vocabulary_.size());
    for (const char* special : {"<pad>", "<cls>", "<eoc>"}) vocabulary_.emplace_back(special);
    shape_.vocab = genes + 3;
    shape_.pad_id = genes;
    tokens_.pad_id = genes;
    tokens_.cls_id = genes + 1;
    tokens_.cls_value = 0;  // as in scGPT's training
    tokens_.max_length = max_length_;
    torch::manual_seed(scssl::mix_seed(options.seed, 0x5c97));
    net_ = scgpt::Model(shape_);

    train_masked(train, options, scssl::LossTrainerOptions{}, 0x70c);
  }

  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("scgpt: embed() called before fit() or load()");
    const int rna = scssl::rna_modality(data);
    const scssl::Matrix& x = data.modalities[rna].X;
    require_expression(x);
    const std::vector<int64_t> gene_ids = gene_tokens(data.modalities[rna].features);
    // With DSBN every cell is normalised with its batch's statistics (a batch the model has not
    // seen with the average of those it has).
    const torch::Tensor domains = shape_.dsbn ? scssl::batch_codes(data) : torch::Tensor();
    net_->eval();
    net_->fused_inference = fused_attention_;
    torch::NoGradGuard no_grad;
    const torch::Device device = net_->encoder->embedding->weight.device();
    std::vector<torch::Tensor> parts;
    constexpr int64_t kChunk = 64;
    for (int64_t begin = 0; begin < data.n_cells(); begin += kChunk) {
      const torch::Tensor ids =
          torch::arange(begin, std::min(data.n_cells(), begin + kChunk), torch::kInt64);
      const scgpt::Tokens t =
          tokenize(x.rows_dense(ids), ids, gene_ids, scssl::mix_seed(seed_, 0xe3b));
      const torch::Tensor batch =
          domains.defined() ? domains.index_select(0, ids).to(device) : torch::Tensor();
      // Passes of bounded attention size: 64 cells of an official model's 1200 tokens would
      // need 3 GB of attention scores at once.
      for (const scssl::TokenPass& p :
           scssl::attention_passes(t.padding.logical_not(), shape_.heads)) {
        const auto part = [&](const torch::Tensor& v) {
          return v.slice(0, p.begin, p.end).slice(1, 0, p.length).to(device);
        };
        const torch::Tensor cell =
            net_->forward(part(t.genes), part(t.values), part(t.padding),
                          batch.defined() ? batch.slice(0, p.begin, p.end) : batch)
                .cell;
        parts.push_back(torch::nn::functional::normalize(
                            cell, torch::nn::functional::NormalizeFuncOptions().dim(1))
                            .cpu());
      }
    }
    return torch::cat(parts);
  }

  void save(const std::string& directory) const override {
    const scgpt::ModelShape& s = shape_;
    scssl::save_model(directory, "scgpt", net_.ptr(),
                      {s.vocab, s.d_model, s.heads, s.d_hid, s.layers, s.pad_id,
                       s.explicit_zero_prob, s.with_decoders, s.n_batches, s.batch_labels, s.dsbn,
                       s.dab, tokens_.n_bins, tokens_.max_length, tokens_.cls_id,
                       tokens_.include_zero_genes, static_cast<int64_t>(seed_)});
    // The vocabulary and the two values the integers cannot hold.
    Json vocabulary = Json::object();
    for (size_t i = 0; i < vocabulary_.size(); ++i)
      if (!vocabulary_[i].empty()) vocabulary[vocabulary_[i]] = i;
    std::ofstream(fs::path(directory) / "vocab.json") << vocabulary.dump();
    std::ofstream(fs::path(directory) / "tokens.json")
        << Json{{"pad_value", tokens_.pad_value}, {"cls_value", tokens_.cls_value}}.dump();
  }

  void load(const std::string& directory) override {
    scssl::SavedModel saved(directory, "scgpt");
    const auto& v = saved.shape();
    if (v.size() != 17)
      throw scssl::BadData("scgpt: '" + directory + "/model.pt' is not an scgpt model");
    shape_ = scgpt::ModelShape{v[0],      v[1],      v[2], v[3],      v[4],       0.0,       v[5],
                               v[6] != 0, v[7] != 0, v[8], v[9] != 0, v[10] != 0, v[11] != 0};
    tokens_.n_bins = v[12];
    tokens_.max_length = v[13];
    tokens_.cls_id = v[14];
    tokens_.include_zero_genes = v[15] != 0;
    tokens_.pad_id = v[5];
    seed_ = static_cast<uint64_t>(v[16]);
    set_vocabulary(read_vocabulary(fs::path(directory) / "vocab.json"));
    const Json values = read_json(fs::path(directory) / "tokens.json");
    tokens_.pad_value = values.value("pad_value", -2.0);
    tokens_.cls_value = values.value("cls_value", 0.0);
    net_ = scgpt::Model(shape_);
    saved.load_into(*net_);
  }

 private:
  // The bins are ranks within a cell, so normalising and log-transforming do not change them;
  // values below zero (scaled data) have no such meaning.
  static void require_expression(const scssl::Matrix& x) {
    scssl::require_expression_values(
        x, "scgpt", "scGPT bins each cell's expression by rank, which needs non-negative values");
  }

  // A checkpoint folder: official (args.json) or saved by this plugin (model.pt).
  void load_pretrained(const fs::path& folder) {
    if (fs::exists(folder / "args.json")) {
      net_ = scgpt::Model(read_official_args(folder));
      scssl::load_tensors(*net_, official_weights(folder), official_names(false));
      host_.info("scgpt: loaded " + std::to_string(shape_.layers) + " layers of width " +
                 std::to_string(shape_.d_model) + " from '" + folder.string() + "'");
    } else if (fs::exists(folder / "model.pt")) {
      load(folder.string());
    } else {
      throw scssl::IoError("scgpt: '" + folder.string() +
                           "' holds neither an official scGPT model (args.json) nor a saved "
                           "scgpt model (model.pt)");
    }
  }

  // scGPT's integration fine-tuning (docs/method-spec.md §14.3): the checkpoint's network with
  // batch-label inputs to the decoders, DSBN and the batch discriminator added; every tensor of
  // the checkpoint that fits by name and shape is carried over, as scGPT's loader does.
  void fine_tune(const scssl::CellData& train, const scssl::TrainOptions& options) {
    const int64_t batches = scssl::batch_count(train);
    if (batches < 2)
      throw scssl::BadData(
          "scgpt: fine_tune learns to remove batch effects and needs batch "
          "labels with at least two batches (dataset.batch_key); the data has " +
          std::to_string(batches));
    const fs::path folder(checkpoint_);
    scssl::TensorFile source;
    scssl::TensorNameMap names;
    if (fs::exists(folder / "args.json")) {
      read_official_args(folder);
      source = official_weights(folder);
      names = official_names(true);
    } else {
      load_pretrained(folder);
      source.path = (folder / "model.pt").string();
      for (const auto& item : net_->named_parameters())
        source.tensors.emplace_back(item.key(), item.value());
      for (const auto& item : net_->named_buffers())
        source.tensors.emplace_back(item.key(), item.value());
    }
    shape_.with_decoders = true;
    shape_.explicit_zero_prob = true;
    shape_.n_batches = batches;
    shape_.batch_labels = true;
    shape_.dsbn = dsbn_;
    shape_.dab = dab_weight_ > 0;
    shape_.dropout = dropout_;
    tokens_.cls_value = 0;  // as in scGPT's training
    tokens_.include_zero_genes = true;
    tokens_.max_length = max_length_;
    torch::manual_seed(scssl::mix_seed(options.seed, 0xf1e7));
    net_ = scgpt::Model(shape_);
    names.partial = true;
    const std::vector<std::string> loaded = scssl::load_tensors(*net_, source, names);
    host_.info("scgpt: fine_tune starts from " + std::to_string(loaded.size()) + " of the " +
               std::to_string(net_->named_parameters().size() + net_->named_buffers().size()) +
               " tensors of the network, taken from '" + folder.string() + "'");

    scssl::LossTrainerOptions o;
    o.train_fraction = 0.9;
    o.monitor = "mse";
    o.restore_best = true;  // scGPT keeps the model of the lowest validation MSE
    o.adam_eps = 1e-4;      // scGPT's, with mixed precision
    o.clip_grad_norm = 1.0;
    train_masked(train, options, o, 0xf7e);
  }

  // Trains net_ on masked values: the expression decoder's and GEPC's squared errors, with the
  // explicit zero probabilities, ECS and the batch discriminator where the network has them
  // (fine-tuning, docs/method-spec.md §14.3). `salt` separates the modes' random streams.
  void train_masked(const scssl::CellData& train, const scssl::TrainOptions& options,
                    const scssl::LossTrainerOptions& o, uint64_t salt) {
    const int rna = scssl::rna_modality(train);
    scssl::LossTrainer trainer(host_, options, {rna}, o);
    scgpt::Model net = net_;
    const std::vector<int64_t> gene_ids = gene_tokens(train.modalities[rna].features);
    const bool ecs = fine_tune_ && ecs_threshold_ > 0 && ecs_weight_ > 0;
    trainer.fit(train, *net, [&](const scssl::CellBatch& b) {
      const uint64_t draw = scssl::mix_seed(seed_, salt, static_cast<uint64_t>(b.epoch),
                                            static_cast<uint64_t>(b.step) * 2 + !b.training);
      const scgpt::Tokens t = tokenize(b.x[0], b.cell_ids, gene_ids, draw);
      torch::Tensor masked;
      const torch::Tensor input = scgpt::mask_values(t, mask_ratio_, kMaskValue, draw, masked);
      const torch::Device device = trainer.device();
      masked = masked.to(device);
      const torch::Tensor target = t.values.to(device);
      const torch::Tensor domains = b.domains.defined() ? b.domains.to(device) : torch::Tensor();
      const scgpt::Output out =
          net->forward(t.genes.to(device), input.to(device), t.padding.to(device), domains);
      scssl::StepLoss step{torch::zeros({}, target.options()), {}};
      const auto add = [&](const char* name, const torch::Tensor& term) {
        step.loss = step.loss + term;
        step.terms.emplace_back(name, term.detach());
      };
      const scgpt::Prediction expr = net->expression(out, domains);
      add("mse", masked_mse(expr.value, target, masked));
      if (expr.zero_prob.defined())
        add("zero_nll", masked_bernoulli(expr.zero_prob, target, masked));
      if (gepc_) {
        const scgpt::Prediction g = net->gepc(out, domains);
        add("gepc", masked_mse(g.value, target, masked));
        if (g.zero_prob.defined())
          add("gepc_zero_nll", masked_bernoulli(g.zero_prob, target, masked));
      }
      if (ecs) add("ecs", ecs_weight_ * elastic_cell_similarity(out.cell));
      if (!net->grad_reverse_discriminator.is_empty())
        add("dab", dab_weight_ * torch::nn::functional::cross_entropy(
                                     net->grad_reverse_discriminator->forward(out.cell), domains));
      return step;
    });
  }

  // args.json of an official folder: the network's sizes and the tokens' settings (also the
  // vocabulary). Returns the shape of the encoder-only network.
  scgpt::ModelShape read_official_args(const fs::path& folder) {
    const fs::path args_file = folder / "args.json";
    const Json args = read_json(args_file);
    const auto vocabulary = read_vocabulary(folder / "vocab.json");
    const std::string pad_token = args.value("pad_token", std::string("<pad>"));
    int64_t largest = 0;
    for (const auto& [token, id] : vocabulary) largest = std::max(largest, id);
    shape_.vocab = largest + 1;
    shape_.d_model = arg<int64_t>(args, "embsize", 512, args_file);
    shape_.heads = arg<int64_t>(args, "nheads", 8, args_file);
    shape_.d_hid = arg<int64_t>(args, "d_hid", 512, args_file);
    shape_.layers = arg<int64_t>(args, "nlayers", 12, args_file);
    shape_.pad_id = token_id(vocabulary, pad_token, folder / "vocab.json");
    shape_.with_decoders = false;  // embedding needs the encoder alone
    tokens_.n_bins = arg<int64_t>(args, "n_bins", 51, args_file);
    tokens_.pad_value = arg<double>(args, "pad_value", -2.0, args_file);
    tokens_.cls_value = tokens_.pad_value;  // as scGPT's embed_data
    tokens_.pad_id = shape_.pad_id;
    tokens_.cls_id = token_id(vocabulary, "<cls>", folder / "vocab.json");
    tokens_.max_length = max_length_;
    if (shape_.heads < 1 || shape_.d_model % shape_.heads != 0)
      throw scssl::BadData("scgpt: '" + args_file.string() + "': nheads does not divide embsize");
    set_vocabulary(vocabulary);
    return shape_;
  }

  scssl::TensorFile official_weights(const fs::path& folder) const {
    return scssl::read_tensor_file((folder / weights_file_).string());
  }

  // How an official file's names become ours. The encoder alone (zero-shot) skips the heads;
  // fine-tuning takes whatever fits.
  static scssl::TensorNameMap official_names(bool with_heads) {
    scssl::TensorNameMap names;
    // Flash-attention checkpoints pack the same [q; k; v] projection under other names.
    names.renames = {{"self_attn._impl.Wqkv.", "self_attn.in_proj_"},
                     {"self_attn.Wqkv.", "self_attn.in_proj_"},
                     {"self_attn._impl.out_proj.", "self_attn.out_proj."},
                     {"dsbn.bns.", "dsbn.norms."}};
    names.ignored_prefixes = {"cls_decoder.", "flag_encoder.", "bn."};
    if (!with_heads)
      for (const char* head :
           {"decoder.", "mvc_decoder.", "grad_reverse_discriminator.", "dsbn.", "batch_encoder."})
        names.ignored_prefixes.emplace_back(head);
    return names;
  }

  void set_vocabulary(const std::unordered_map<std::string, int64_t>& vocabulary) {
    vocabulary_.assign(static_cast<size_t>(shape_.vocab), std::string());
    for (const auto& [token, id] : vocabulary)
      if (id < shape_.vocab) vocabulary_[static_cast<size_t>(id)] = token;
  }

  // Every feature's token, -1 for those the vocabulary lacks; refuses data sharing no gene with it.
  std::vector<int64_t> gene_tokens(const std::vector<std::string>& features) {
    std::unordered_map<std::string, int64_t> ids;
    for (size_t i = 0; i < vocabulary_.size(); ++i)
      if (!vocabulary_[i].empty() && vocabulary_[i][0] != '<')
        ids.emplace(vocabulary_[i], static_cast<int64_t>(i));
    std::vector<int64_t> tokens;
    int64_t known = 0;
    for (const auto& f : features) {
      const auto it = ids.find(f);
      tokens.push_back(it == ids.end() ? -1 : it->second);
      known += it != ids.end();
    }
    if (known == 0)
      throw scssl::BadData("scgpt: none of the data's " + std::to_string(features.size()) +
                           " features is in the model's vocabulary (scGPT expects gene symbols)");
    if (known < static_cast<int64_t>(features.size()) && !coverage_reported_) {
      host_.info("scgpt: " + std::to_string(known) + " of " + std::to_string(features.size()) +
                 " genes are in the vocabulary; the others are left out");
      coverage_reported_ = true;
    }
    return tokens;
  }

  scgpt::Tokens tokenize(const torch::Tensor& x, const torch::Tensor& cell_ids,
                         const std::vector<int64_t>& gene_ids, uint64_t seed) const {
    return scgpt::tokenize(x, gene_ids, scssl::cell_seeds(cell_ids, seed), tokens_);
  }

  // scGPT's criterion_neg_log_bernoulli: the negative log-likelihood of "expressed" (target > 0)
  // under the predicted probability, averaged over the masked tokens.
  static torch::Tensor masked_bernoulli(const torch::Tensor& probability,
                                        const torch::Tensor& target, const torch::Tensor& masked) {
    const double eps = std::numeric_limits<float>::epsilon();  // as torch's Bernoulli clamps
    const torch::Tensor m = masked.to(torch::kFloat32);
    return torch::binary_cross_entropy(probability.clamp(eps, 1 - eps),
                                       target.gt(0).to(torch::kFloat32), m, at::Reduction::Sum) /
           m.sum().clamp_min(1);
  }

  // scGPT's elastic cell similarity: mean over all pairs (the diagonal counted as 0) of
  // 1 - (relu(cos) - threshold)^2.
  torch::Tensor elastic_cell_similarity(const torch::Tensor& cell) const {
    const torch::Tensor n = torch::nn::functional::normalize(
        cell, torch::nn::functional::NormalizeFuncOptions().dim(1));
    torch::Tensor cos = torch::mm(n, n.t());
    cos = torch::relu(
        cos.masked_fill(torch::eye(cos.size(0), cos.options().dtype(torch::kBool)), 0.0));
    return (1 - (cos - ecs_threshold_).pow(2)).mean();
  }

  // scGPT's masked_mse_loss: the squared error summed over masked tokens, over their number.
  static torch::Tensor masked_mse(const torch::Tensor& prediction, const torch::Tensor& target,
                                  const torch::Tensor& masked) {
    const torch::Tensor m = masked.to(torch::kFloat32);
    return (prediction * m - target * m).pow(2).sum() / m.sum().clamp_min(1);
  }

  bool zero_shot_, fine_tune_;
  std::string checkpoint_, weights_file_;
  int64_t max_length_;
  double mask_ratio_;
  bool gepc_;
  double ecs_threshold_, ecs_weight_, dab_weight_;
  bool dsbn_;
  bool fused_attention_;
  double dropout_ = 0.2;
  bool coverage_reported_ = false;
  uint64_t seed_ = 0;
  scgpt::ModelShape shape_;
  scgpt::TokenizerOptions tokens_;
  std::vector<std::string> vocabulary_;  // token of every id ("" where unused)
  scgpt::Model net_{nullptr};
};

}  // namespace

SCSSL_PLUGIN(Scgpt, "scgpt", "1.0.0",
             "scGPT: transformer over binned gene expression; pretrain (masked values + GEPC on "
             "this data set, no labels), zero_shot (a checkpoint, no labels) or fine_tune (scGPT's "
             "integration recipe, uses batch labels, no cell types); embedding = <cls> output, "
             "L2-normalised")
