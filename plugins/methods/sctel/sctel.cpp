// scTEL (Chen et al., 2024; github.com/142857cyy/scTEL): predicts a cell's surface proteins from
// its RNA with transformer-encoder blocks chained by LSTM cells (docs/method-spec.md §18,
// docs/methods/sctel.md). Supervised by the measured proteins (and, if asked, by cell types), not
// self-supervised. The embedding is the hidden state of the last LSTM cell, computed from RNA
// alone, so cells without proteins embed too.
#include <algorithm>
#include <filesystem>
#include <optional>
#include <tuple>

#include "scssl/loss_trainer.hpp"
#include "scssl/plugin.hpp"
#include "scssl/training.hpp"
#include "sctel_loss.hpp"

namespace {

using torch::nn::BatchNorm1d;
using torch::nn::Dropout;
using torch::nn::Linear;
using torch::nn::PReLU;
using torch::nn::PReLUOptions;

// What fixes the shapes of the network; saved with the weights.
struct Shape {
  int64_t genes = 0, proteins = 0, classes = 0;  // classes 0: no cell-type head
  int64_t hidden = 0, heads = 0, quantiles = 0;
  double dropout = 0, transformer_dropout = 0;
};

torch::nn::TransformerEncoderLayer encoder_layer(const Shape& s) {
  return torch::nn::TransformerEncoderLayer(
      torch::nn::TransformerEncoderLayerOptions(s.hidden, s.heads)
          .dim_feedforward(s.hidden)
          .dropout(s.transformer_dropout));
}

// Self-attention over tokens [b, tokens, width]; LibTorch's layer wants [tokens, b, width].
torch::Tensor attend(torch::nn::TransformerEncoderLayer& layer, const torch::Tensor& tokens) {
  return layer->forward(tokens.transpose(0, 1)).transpose(0, 1);
}

// scTEL's Input_TE: Linear(G, h) -> BN -> PReLU; each of the h values becomes a token through
// Linear(1, h) -> BN over the h tokens -> PReLU -> Dropout (one PReLU slope for both, as scTEL);
// one transformer layer over the tokens; Linear(h, 1) per token -> BN -> PReLU per token -> [b, h].
class InputBlockImpl : public torch::nn::Module {
 public:
  explicit InputBlockImpl(const Shape& s)
      : embed(register_module("embed", Linear(s.genes, s.hidden))),
        embed_norm(register_module("embed_norm", BatchNorm1d(s.hidden))),
        act(register_module("act", PReLU())),
        token(register_module("token", Linear(1, s.hidden))),
        token_norm(register_module("token_norm", BatchNorm1d(s.hidden))),
        token_dropout(register_module("token_dropout", Dropout(s.dropout))),
        attention(register_module("attention", encoder_layer(s))),
        out(register_module("out", Linear(s.hidden, 1))),
        out_norm(register_module("out_norm", BatchNorm1d(s.hidden))),
        out_act(register_module("out_act", PReLU(PReLUOptions().num_parameters(s.hidden)))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor v = act->forward(embed_norm->forward(embed->forward(x)));
    torch::Tensor t = token->forward(v.unsqueeze(-1));  // [b, h tokens, h]
    t = token_dropout->forward(act->forward(token_norm->forward(t)));
    t = out->forward(attend(attention, t));  // [b, h, 1]
    return out_act->forward(out_norm->forward(t)).squeeze(-1);
  }

  Linear embed;
  BatchNorm1d embed_norm;
  PReLU act;
  Linear token;
  BatchNorm1d token_norm;
  Dropout token_dropout;
  torch::nn::TransformerEncoderLayer attention;
  Linear out;
  BatchNorm1d out_norm;
  PReLU out_act;
};
TORCH_MODULE(InputBlock);

// scTEL's FF_TE: tokens through Linear(1, h) -> PReLU (no norm), one transformer layer,
// Linear(h, 1) per token -> BN -> PReLU per token -> Dropout -> [b, h].
class TokenBlockImpl : public torch::nn::Module {
 public:
  explicit TokenBlockImpl(const Shape& s)
      : token(register_module("token", Linear(1, s.hidden))),
        act(register_module("act", PReLU())),
        attention(register_module("attention", encoder_layer(s))),
        out(register_module("out", Linear(s.hidden, 1))),
        out_norm(register_module("out_norm", BatchNorm1d(s.hidden))),
        out_act(register_module("out_act", PReLU(PReLUOptions().num_parameters(s.hidden)))),
        dropout(register_module("dropout", Dropout(s.dropout))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor t = act->forward(token->forward(x.unsqueeze(-1)));
    t = out->forward(attend(attention, t));
    return dropout->forward(out_act->forward(out_norm->forward(t))).squeeze(-1);
  }

  Linear token;
  PReLU act;
  torch::nn::TransformerEncoderLayer attention;
  Linear out;
  BatchNorm1d out_norm;
  PReLU out_act;
  Dropout dropout;
};
TORCH_MODULE(TokenBlock);

struct Output {
  torch::Tensor proteins;   // [b, P]
  torch::Tensor quantiles;  // [b, P, Q]
  torch::Tensor logits;     // [b, K], undefined without a cell-type head
  torch::Tensor embedding;  // the last LSTM cell's hidden state [b, h]
};

class SctelNetImpl : public torch::nn::Module {
 public:
  explicit SctelNetImpl(const Shape& s)
      : block1(register_module("block1", InputBlock(s))),
        block2(register_module("block2", TokenBlock(s))),
        block3(register_module("block3", TokenBlock(s))),
        cell1(register_module("cell1", torch::nn::LSTMCell(s.hidden, s.hidden))),
        cell2(register_module("cell2", torch::nn::LSTMCell(s.hidden, s.hidden))),
        cell3(register_module("cell3", torch::nn::LSTMCell(s.hidden, s.hidden))),
        fc1(register_module("fc1", Linear(s.hidden, s.hidden))),
        fc1_norm(register_module("fc1_norm", BatchNorm1d(s.hidden))),
        head_dropout(register_module("head_dropout", Dropout(s.dropout))),
        fc2(register_module("fc2", Linear(s.hidden, s.hidden / 2))),
        fc3(register_module("fc3", Linear(s.hidden / 2, s.proteins))),
        head_act(register_module("head_act", PReLU())),
        quantile_head(register_module("quantile_head", Linear(s.hidden, s.proteins * s.quantiles))),
        n_proteins_(s.proteins),
        n_quantiles_(s.quantiles) {
    if (s.classes > 0)
      cell_type_head = register_module("cell_type_head", Linear(s.hidden, s.classes));
  }

  Output forward(const torch::Tensor& x) {
    Output o;
    const auto [x3, h3, c3] = trunk(x);
    o.embedding = h3;
    // The protein head reads the last block's output, not the LSTM state; one PReLU slope for
    // its three activations, as scTEL.
    torch::Tensor p = head_dropout->forward(head_act->forward(fc1_norm->forward(fc1->forward(x3))));
    p = head_act->forward(fc2->forward(p));
    o.proteins = head_act->forward(fc3->forward(p));
    o.quantiles = quantile_head->forward(x3).view({-1, n_proteins_, n_quantiles_});
    if (cell_type_head) o.logits = cell_type_head->forward(c3);
    return o;
  }

  // The three blocks with an LSTM cell after each, (h, c) starting from zeros: the last block's
  // output and the last cell's (h, c).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> trunk(const torch::Tensor& x) {
    const torch::Tensor x1 = block1->forward(x);
    const auto state1 = cell1->forward(x1);
    const torch::Tensor x2 = block2->forward(x1);
    const auto state2 = cell2->forward(x2, state1);
    const torch::Tensor x3 = block3->forward(x2);
    const auto [h3, c3] = cell3->forward(x3, state2);
    return {x3, h3, c3};
  }

  InputBlock block1;
  TokenBlock block2, block3;
  torch::nn::LSTMCell cell1, cell2, cell3;
  Linear fc1;
  BatchNorm1d fc1_norm;
  Dropout head_dropout;
  Linear fc2, fc3;
  PReLU head_act;
  Linear quantile_head;
  Linear cell_type_head{nullptr};

 private:
  int64_t n_proteins_, n_quantiles_;
};
TORCH_MODULE(SctelNet);

class Sctel final : public scssl::IMethod {
 public:
  static uint64_t requirements() { return SCSSL_NEEDS_SECOND_MODALITY; }
  static std::vector<scssl::ParamSpec> parameters() {
    using scssl::ParamSpec;
    return {
        ParamSpec("hidden_size", SCSSL_PARAM_INT, "512",
                  "h: width of every block, number of tokens per block, LSTM size and embedding "
                  "size (scTEL: 512); the cost per cell grows with h^3")
            .at_least(2),
        ParamSpec("heads", SCSSL_PARAM_INT, "4",
                  "attention heads of the transformer layers; must divide hidden_size (scTEL: 4)")
            .at_least(1),
        ParamSpec("dropout", SCSSL_PARAM_FLOAT, "0.15",
                  "dropout of the token embedding, the blocks' outputs and the protein head "
                  "(scTEL: 0.15)")
            .at_least(0)
            .below(1),
        ParamSpec("transformer_dropout", SCSSL_PARAM_FLOAT, "0.2",
                  "dropout inside the transformer layers (scTEL fixes 0.2)")
            .at_least(0)
            .below(1),
        ParamSpec("quantiles", SCSSL_PARAM_FLOAT_LIST, "0.1,0.25,0.75,0.9",
                  "quantiles of the protein values predicted next to the mean and trained with "
                  "the pinball loss (scTEL's)")
            .above(0)
            .below(1)
            .nonempty(),
        {"use_labels", SCSSL_PARAM_BOOL, "false",
         "also train a cell-type classifier on the last LSTM cell state (needs dataset.label_key; "
         "labels then shape the embedding)"},
        ParamSpec("standardize", SCSSL_PARAM_STRING, "batch",
                  "\"batch\": genes and protein targets to zero mean and unit variance within "
                  "every batch, as scTEL; \"none\": as the host hands them over")
            .one_of({"batch", "none"}),
        ParamSpec("validation_fraction", SCSSL_PARAM_FLOAT, "0.1",
                  "share of the training cells held out to watch the loss (scTEL: 0.1); 0: watch "
                  "the training loss")
            .at_least(0)
            .below(1),
        ParamSpec("early_stopping_patience", SCSSL_PARAM_INT, "12",
                  "stop after this many epochs without a lower validation loss (scTEL: 12); 0: "
                  "never")
            .at_least(0),
        ParamSpec("plateau_patience", SCSSL_PARAM_INT, "5",
                  "multiply the learning rate by plateau_factor once more than this many epochs "
                  "in a row bring no lower validation loss (5: at the 6th); 0: never")
            .at_least(0),
        ParamSpec("plateau_factor", SCSSL_PARAM_FLOAT, "0.1",
                  "learning-rate factor of reduce-on-plateau (scTEL: 0.1)")
            .above(0)
            .at_most(1),
    };
  }

  Sctel(const scssl::ParamSet& p, scssl::HostContext& host)
      : IMethod(host),
        hidden_(p.get_int("hidden_size")),
        heads_(p.get_int("heads")),
        dropout_(p.get_float("dropout")),
        transformer_dropout_(p.get_float("transformer_dropout")),
        quantiles_(p.get_float_list("quantiles")),
        use_labels_(p.get_bool("use_labels")),
        standardize_(p.get_string("standardize") == "batch"),
        validation_fraction_(p.get_float("validation_fraction")),
        early_stopping_patience_(p.get_int("early_stopping_patience")),
        plateau_patience_(p.get_int("plateau_patience")),
        plateau_factor_(p.get_float("plateau_factor")) {
    if (hidden_ % heads_ != 0)
      throw scssl::InvalidArgument("sctel: heads = " + std::to_string(heads_) +
                                   " must divide hidden_size = " + std::to_string(hidden_));
  }

  void fit(const scssl::CellData& train, const scssl::TrainOptions& options) override {
    if (train.modalities.size() < 2)
      throw scssl::BadData(
          "sctel needs measured proteins as a second modality (RNA + ADT) to train on, but the "
          "data set has " +
          std::to_string(train.modalities.size()) + " modality");
    const scssl::Matrix& rna = train.modalities[0].X;
    const scssl::Matrix& protein = train.modalities[1].X;
    Shape s = shape_from_params();
    s.genes = rna.cols;
    s.proteins = protein.cols;
    if (use_labels_) {
      const scssl::Column& labels = train.require_labels("sctel");
      labels_ = labels.codes.to(torch::kInt64);
      s.classes = static_cast<int64_t>(labels.categories.size());
    }

    n_batches_ = scssl::batch_count(train);
    const torch::Tensor groups =
        sctel::groups_of(scssl::batch_codes(train), train.n_cells(), n_batches_);
    const torch::Tensor observed = sctel::observed_proteins(protein, groups, n_batches_ + 1);
    report_unobserved(observed, groups, protein.cols);

    // The initial weights come from the run's seed; the LSTM cells keep theirs unless
    // use_labels trains them (docs/methods/sctel.md).
    torch::manual_seed(scssl::mix_seed(options.seed, 0x5c7e1));
    build(s);

    scssl::LossTrainerOptions o;
    o.train_fraction = 1.0 - validation_fraction_;
    o.early_stopping_patience = early_stopping_patience_;
    o.plateau_patience = plateau_patience_;
    o.plateau_factor = plateau_factor_;
    scssl::LossTrainer trainer(host_, options, {0, 1}, o);
    device_ = trainer.device();
    net_->to(device_);
    // Statistics of all cells given to fit(), validation cells included, as scTEL scales before
    // it splits.
    std::optional<sctel::GroupScaling> genes, proteins;
    if (standardize_) {
      genes = sctel::group_scaling(rna, groups, n_batches_ + 1).to(device_);
      proteins = sctel::group_scaling(protein, groups, n_batches_ + 1).to(device_);
    }
    const torch::Tensor measured = observed.to(device_);
    const torch::Tensor quantiles = torch::tensor(quantiles_, torch::kFloat32).to(device_);
    trainer.fit(train, *net_, [&](const scssl::CellBatch& b) {
      const torch::Tensor g = sctel::groups_of(b.domains, b.cell_ids.size(0), n_batches_, device_);
      const torch::Tensor x = genes ? genes->apply(b.x[0], g) : b.x[0];
      const torch::Tensor y = proteins ? proteins->apply(b.x[1], g) : b.x[1];
      const torch::Tensor seen = measured.index_select(0, g);
      const Output out = net_->forward(x);
      const torch::Tensor mse = ((out.proteins - y).pow(2) * seen).mean();
      const torch::Tensor protein_loss =
          sctel::protein_loss(out.proteins, out.quantiles, y, seen, quantiles);
      scssl::StepLoss step{protein_loss, {{"protein", protein_loss}, {"mse", mse}}};
      if (out.logits.defined()) {
        const torch::Tensor ce = cell_type_loss(out.logits, b.cell_ids);
        step.loss = step.loss + ce;
        step.terms.emplace_back("cell_type", ce);
      }
      return step;
    });
  }

  // RNA only, in evaluation mode, each batch standardised by its own statistics as in training.
  torch::Tensor embed(const scssl::CellData& data) override {
    if (!net_) throw scssl::InvalidArgument("sctel: embed() called before fit() or load()");
    const scssl::Matrix& rna = data.modalities.at(0).X;
    if (rna.cols != shape_.genes)
      throw scssl::BadData("sctel: the model was trained on " + std::to_string(shape_.genes) +
                           " genes, but the first modality has " + std::to_string(rna.cols));
    const int64_t n_batches = scssl::batch_count(data);
    const torch::Tensor groups =
        sctel::groups_of(scssl::batch_codes(data), data.n_cells(), n_batches);
    std::optional<sctel::GroupScaling> scaling;
    if (standardize_) scaling = sctel::group_scaling(rna, groups, n_batches + 1).to(device_);
    torch::NoGradGuard no_grad;
    net_->eval();
    // Every cell holds [h, h] tokens and heads x [h, h] attention weights: blocks of about 4M
    // token values, at most 256 cells.
    const int64_t block =
        std::clamp<int64_t>((int64_t{1} << 22) / (shape_.hidden * shape_.hidden), 1, 256);
    std::vector<torch::Tensor> out;
    for (int64_t begin = 0; begin < rna.rows; begin += block) {
      const int64_t end = std::min(rna.rows, begin + block);
      torch::Tensor x = rna.slice_dense(begin, end).to(device_);
      if (scaling) x = scaling->apply(x, groups.slice(0, begin, end).to(device_));
      out.push_back(std::get<1>(net_->trunk(x)).cpu());
    }
    return torch::cat(out, 0);
  }

  void save(const std::string& directory) const override {
    if (!net_)
      throw scssl::InvalidArgument("sctel: nothing to save, the method has not been trained");
    std::filesystem::create_directories(directory);
    torch::serialize::OutputArchive archive, weights;
    net_->save(weights);
    archive.write("weights", weights);
    archive.write("shape", torch::tensor({shape_.genes, shape_.proteins, shape_.classes,
                                          shape_.hidden, shape_.heads, shape_.quantiles}));
    archive.save_to(directory + "/model.pt");
  }

  void load(const std::string& directory) override {
    const std::string file = directory + "/model.pt";
    if (!std::filesystem::exists(file))
      throw scssl::IoError("sctel: no saved model at '" + file + "'");
    torch::serialize::InputArchive archive, weights;
    archive.load_from(file);
    torch::Tensor t;
    archive.read("shape", t);
    const torch::Tensor v = t.to(torch::kInt64).contiguous();
    const int64_t* d = v.data_ptr<int64_t>();
    Shape s = shape_from_params();
    s.genes = d[0];
    s.proteins = d[1];
    s.classes = d[2];
    s.hidden = d[3];
    s.heads = d[4];
    s.quantiles = d[5];
    build(s);
    archive.read("weights", weights);
    net_->load(weights);
    net_->eval();
  }

 private:
  Shape shape_from_params() const {
    Shape s;
    s.hidden = hidden_;
    s.heads = heads_;
    s.quantiles = static_cast<int64_t>(quantiles_.size());
    s.dropout = dropout_;
    s.transformer_dropout = transformer_dropout_;
    return s;
  }

  void build(const Shape& s) {
    shape_ = s;
    net_ = SctelNet(s);
    net_->to(device_);
  }

  // Cross-entropy over the cells of the batch that have a label; 0 when none has.
  torch::Tensor cell_type_loss(const torch::Tensor& logits, const torch::Tensor& cell_ids) const {
    const torch::Tensor codes = labels_.index_select(0, cell_ids).to(logits.device());
    const torch::Tensor known = codes >= 0;
    if (!known.any().item<bool>()) return logits.sum() * 0;
    return torch::nn::functional::cross_entropy(logits.index({known}), codes.index({known}));
  }

  // One log line when some batch has proteins that are zero in all its cells (left out of the
  // loss).
  void report_unobserved(const torch::Tensor& observed, const torch::Tensor& groups,
                         int64_t proteins) const {
    const torch::Tensor has_cells = torch::bincount(groups, {}, n_batches_ + 1) > 0;
    const int64_t pairs = ((1 - observed).sum(1) * has_cells).sum().item<int64_t>();
    if (pairs == 0) return;
    host_.info("sctel: " + std::to_string(pairs) + " (batch, protein) pairs of the " +
               std::to_string(proteins) +
               " proteins are zero in every cell of the batch and are left out of the protein "
               "loss");
  }

  int64_t hidden_, heads_;
  double dropout_, transformer_dropout_;
  std::vector<double> quantiles_;
  bool use_labels_, standardize_;
  double validation_fraction_;
  int64_t early_stopping_patience_, plateau_patience_;
  double plateau_factor_;

  torch::Device device_{torch::kCPU};
  Shape shape_;
  SctelNet net_{nullptr};
  int64_t n_batches_ = 1;
  torch::Tensor labels_;  // int64 codes of the training cells, with use_labels
};

}  // namespace

SCSSL_PLUGIN(Sctel, "sctel", "1.0.0",
             "scTEL: transformer-encoder + LSTM protein predictor from RNA; supervised by the "
             "measured proteins (not self-supervised), embeds the last LSTM hidden state")
