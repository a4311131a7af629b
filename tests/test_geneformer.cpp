// Geneformer (docs/method-spec.md §15): the rank-value encoding on cases worked out by hand and on
// the counts of the PyTorch fixture (tests/data/foundation/geneformer, tools/fixtures/
// make_foundation_fixtures.py), the masked-LM corruption, the network loaded from both checkpoint
// files against PyTorch's outputs, the whole zero-shot path against PyTorch's cell embedding,
// save and load, and the plugin through scssl-host: pretraining on the bundled Kang file,
// zero-shot with the fixture folder, the refusals.
#include <filesystem>
#include <fstream>
#include <map>

#include "../plugins/methods/geneformer/geneformer_model.hpp"
#include "../plugins/methods/geneformer/geneformer_tokenizer.hpp"
#include "scssl/gene_tokens.hpp"
#include "scssl/preprocess.hpp"
#include "scssl/tensor_file.hpp"
#include "support.hpp"

using scssl::test::run_command;

namespace {

const std::string kFixture = scssl::test::repo_file("tests/data/foundation/geneformer");
const std::string kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";

// The rows of one of the fixture's TSV files (header left out).
std::vector<std::pair<std::string, std::string>> tsv_rows(const std::string& file) {
  std::ifstream in(kFixture + "/" + file);
  std::vector<std::pair<std::string, std::string>> rows;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    rows.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return rows;
}

torch::Tensor expected(const scssl::TensorFile& f, const std::string& name) {
  const torch::Tensor* t = f.find(name);
  if (!t) throw std::runtime_error("forward.safetensors has no " + name);
  return *t;
}

const scssl::TensorFile& forward_file() {
  static const scssl::TensorFile f = scssl::read_tensor_file(kFixture + "/forward.safetensors");
  return f;
}

}  // namespace

// ---- the rank-value encoding -------------------------------------------------------------------

TEST(GeneformerTokenizer, RanksByValueOverMedianKeepingTiesInGeneOrder) {
  // Column 2 is unknown to the dictionary. Cell 0: 4/2, 2/1 and 6/3 tie at 2 and keep the
  // columns' order; column 1 is not expressed. Cell 1: 5 > 3 > 0.5.
  const torch::Tensor x = torch::tensor({{4.0, 0.0, 9.0, 2.0, 6.0}, {1.0, 5.0, 7.0, 0.0, 9.0}});
  const geneformer::GenePanel panel =
      geneformer::make_panel({10, 11, -1, 13, 14}, {2.0, 1.0, 1.0, 1.0, 3.0});
  EXPECT_EQ(panel.known_columns, 4);
  geneformer::TokenizerOptions o;
  const geneformer::Tokens t = geneformer::tokenize(x, panel, o);
  EXPECT_TRUE(t.ids.equal(torch::tensor({{10, 13, 14}, {11, 14, 10}}))) << t.ids;
  EXPECT_TRUE(t.attention_mask.equal(torch::ones({2, 3}, torch::kInt64)));
  // Truncation keeps the top-ranked genes; shorter cells are padded with 0 and masked.
  o.max_length = 2;
  const torch::Tensor y = torch::tensor({{4.0, 0.0, 9.0, 2.0, 6.0}, {0.0, 0.0, 1.0, 0.0, 3.0}});
  const geneformer::Tokens cut = geneformer::tokenize(y, panel, o);
  EXPECT_TRUE(cut.ids.equal(torch::tensor({{10, 13}, {14, 0}}))) << cut.ids;
  EXPECT_TRUE(cut.attention_mask.equal(torch::tensor({{1, 1}, {1, 0}})));
  // A cell of unknown genes alone is all padding, one position long.
  const geneformer::Tokens none =
      geneformer::tokenize(torch::tensor({{0.0, 0.0, 5.0, 0.0, 0.0}}), panel, o);
  EXPECT_TRUE(none.ids.equal(torch::zeros({1, 1}, torch::kInt64)));
  EXPECT_EQ(none.attention_mask.sum().item<int64_t>(), 0);
}

TEST(GeneformerTokenizer, ColumnsOfOneTokenAreSummedAndV2WrapsWithClsAndEos) {
  // Columns 0 and 2 are one gene (two symbols of one Ensembl id): 1 + 3 = 4 beats column 1's 3.
  const geneformer::GenePanel panel = geneformer::make_panel({7, 8, 7}, {1.0, 1.0, 1.0});
  EXPECT_EQ(panel.known_columns, 3);
  EXPECT_EQ(panel.tokens, (std::vector<int64_t>{7, 8}));
  geneformer::TokenizerOptions o;
  o.cls_id = 2;
  o.eos_id = 3;
  o.max_length = 4;
  const geneformer::Tokens t = geneformer::tokenize(torch::tensor({{1.0, 3.0, 3.0}}), panel, o);
  EXPECT_TRUE(t.ids.equal(torch::tensor({{2, 7, 8, 3}}))) << t.ids;
  o.max_length = 3;  // room for one gene between the two special tokens
  EXPECT_TRUE(geneformer::tokenize(torch::tensor({{1.0, 3.0, 3.0}}), panel, o)
                  .ids.equal(torch::tensor({{2, 7, 3}})));
}

TEST(GeneformerTokenizer, TheFixturesCountsGiveItsInputIds) {
  // Column j of raw_counts is row j of gene_name_id_dict.tsv, token j + 2; Geneformer divides by
  // the cell's total counts (n_counts) and scales to 10,000 before dividing by the median.
  const auto medians = tsv_rows("gene_median_dictionary.tsv");
  const auto names = tsv_rows("gene_name_id_dict.tsv");
  ASSERT_EQ(names.size(), 38u);
  std::map<std::string, double> median_of;
  for (const auto& [id, m] : medians) median_of[id] = std::stod(m);
  std::vector<int64_t> tokens;
  std::vector<double> column_medians;
  for (size_t j = 0; j < names.size(); ++j) {
    tokens.push_back(static_cast<int64_t>(j) + 2);
    column_medians.push_back(median_of.at(names[j].second));
  }
  const scssl::TensorFile& f = forward_file();
  const torch::Tensor counts = expected(f, "raw_counts").to(torch::kFloat64);
  const torch::Tensor normalised =
      counts / expected(f, "n_counts").to(torch::kFloat64).unsqueeze(1) * 1e4;
  geneformer::TokenizerOptions o;
  const geneformer::Tokens t =
      geneformer::tokenize(normalised, geneformer::make_panel(tokens, column_medians), o);
  EXPECT_TRUE(t.ids.equal(expected(f, "input_ids"))) << t.ids;
  EXPECT_TRUE(t.attention_mask.equal(expected(f, "attention_mask")));
}

TEST(GeneformerTokenizer, MaskingChoosesTokensAsHuggingFacesCollator) {
  // 20 cells of 500 tokens, the last 100 of each padding: about 15% of the 8000 tokens are
  // chosen; of those 80% become <mask> (1), 10% a random gene token, 10% stay.
  geneformer::Tokens t{torch::randint(2, 50, {20, 500}, torch::kInt64),
                       torch::ones({20, 500}, torch::kInt64)};
  t.ids.slice(1, 400).fill_(0);
  t.attention_mask.slice(1, 400).fill_(0);
  std::vector<uint64_t> seeds;
  for (uint64_t b = 0; b < 20; ++b) seeds.push_back(100 + b);
  const geneformer::MaskedTokens m = geneformer::mask_tokens(t, 0.15, 1, 2, 50, seeds);
  const torch::Tensor chosen = m.labels.ne(-100);
  const double n = chosen.sum().item<double>();
  EXPECT_NEAR(n / 8000, 0.15, 0.015);
  EXPECT_FALSE(chosen.slice(1, 400).any().item<bool>());  // padding is never chosen
  EXPECT_TRUE(m.labels.masked_select(chosen).equal(t.ids.masked_select(chosen)));
  const torch::Tensor input = m.input.masked_select(chosen);
  EXPECT_NEAR(input.eq(1).sum().item<double>() / n, 0.8, 0.04);
  const double same = input.eq(t.ids.masked_select(chosen)).sum().item<double>() / n;
  EXPECT_NEAR(same, 0.1 + 0.1 / 48, 0.03);  // kept, or replaced by the same token by chance
  EXPECT_TRUE(input.ge(1).all().item<bool>() && input.lt(50).all().item<bool>());
  EXPECT_TRUE(
      m.input.masked_select(chosen.logical_not()).equal(t.ids.masked_select(chosen.logical_not())));
  // One seed, one corruption; another seed, another.
  EXPECT_TRUE(geneformer::mask_tokens(t, 0.15, 1, 2, 50, seeds).input.equal(m.input));
  seeds[0] = 7;
  EXPECT_FALSE(geneformer::mask_tokens(t, 0.15, 1, 2, 50, seeds).input.equal(m.input));
}

// ---- the network against PyTorch ---------------------------------------------------------------

namespace {

geneformer::ModelShape fixture_shape() {
  geneformer::ModelShape s;  // config.json of the fixture
  s.vocab = 40;
  s.hidden = 16;
  s.heads = 4;
  s.intermediate = 32;
  s.layers = 2;
  s.max_positions = 64;
  s.type_vocab = 2;
  s.layer_norm_eps = 1e-12;
  s.act = geneformer::Activation::Relu;
  return s;
}

// As the plugin reads official weights: the int64 position_ids and the tied decoder skipped.
scssl::TensorNameMap official_names() {
  scssl::TensorNameMap names;
  names.ignored_prefixes = {"bert.embeddings.position_ids", "cls.predictions.decoder."};
  return names;
}

// Equal within 1e-5 at the tokens (attention_mask 1); [B, L, d].
void expect_close_at_tokens(const torch::Tensor& ours, const torch::Tensor& theirs,
                            const torch::Tensor& attention_mask, const std::string& what) {
  ASSERT_EQ(ours.sizes(), theirs.sizes()) << what;
  const torch::Tensor keep = attention_mask.to(torch::kBool).unsqueeze(2).expand_as(ours);
  const double diff = (ours - theirs).abs().masked_select(keep).max().item<double>();
  EXPECT_LT(diff, 1e-5) << what;
}

}  // namespace

TEST(GeneformerNetwork, BothCheckpointFilesReproducePyTorchsForwardPass) {
  torch::NoGradGuard no_grad;
  const scssl::TensorFile& f = forward_file();
  const torch::Tensor ids = expected(f, "input_ids"), mask = expected(f, "attention_mask");
  // Both files through the fused inference kernel, one also through the layers that train.
  struct Case {
    const char* weights;
    bool fused;
  };
  for (const Case c : {Case{"pytorch_model.bin", true}, Case{"model.safetensors", true},
                       Case{"model.safetensors", false}}) {
    const std::string weights = std::string(c.weights) + (c.fused ? " (fused)" : " (own layers)");
    geneformer::Model model(fixture_shape());
    scssl::load_tensors(*model, scssl::read_tensor_file(kFixture + "/" + c.weights),
                        official_names());
    model->eval();
    model->fused_inference = c.fused;
    const std::vector<torch::Tensor> hidden = model->forward(ids, mask);
    ASSERT_EQ(hidden.size(), 3u);
    for (size_t i = 0; i < hidden.size(); ++i)
      expect_close_at_tokens(hidden[i], expected(f, "hidden_states." + std::to_string(i)), mask,
                             weights + " hidden_states." + std::to_string(i));
    expect_close_at_tokens(model->mlm_logits(hidden[2]), expected(f, "mlm_logits"), mask,
                           weights + " mlm_logits");
    // EmbExtractor's cell embedding: the second-to-last layer, mean over the tokens.
    const torch::Tensor m = mask.to(torch::kFloat32).unsqueeze(2);
    EXPECT_TRUE(
        torch::allclose((hidden[1] * m).sum(1) / m.sum(1), expected(f, "cell_embedding"), 0, 1e-5))
        << weights;
    // Stopping after the first layer gives the same states.
    const std::vector<torch::Tensor> upto = model->forward(ids, mask, 1);
    ASSERT_EQ(upto.size(), 2u);
    EXPECT_TRUE(upto[1].equal(hidden[1]));
  }
}

TEST(GeneformerNetwork, PassesOfBoundedAttentionSizeGiveTheSameStates) {
  // Lengths 3, 1, 5, 2 with one head and room for 25 floats: rows 0-1 (2 x 3^2 = 18), row 2
  // alone (5^2 = 25; with row 3, 2 x 25), row 3 cut to its own length.
  const torch::Tensor mask = torch::tensor(
      {{1, 1, 1, 0, 0}, {1, 0, 0, 0, 0}, {1, 1, 1, 1, 1}, {1, 1, 0, 0, 0}}, torch::kInt64);
  const std::vector<scssl::TokenPass> p = scssl::attention_passes(mask, 1, 25);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_TRUE(p[0].begin == 0 && p[0].end == 2 && p[0].length == 3);
  EXPECT_TRUE(p[1].begin == 2 && p[1].end == 3 && p[1].length == 5);
  EXPECT_TRUE(p[2].begin == 3 && p[2].end == 4 && p[2].length == 2);
  EXPECT_EQ(scssl::attention_passes(mask, 1, 1000, 3).size(), 2u);  // at most 3 cells a pass
  EXPECT_EQ(scssl::attention_passes(torch::zeros({2, 4}, torch::kInt64), 4).front().length, 1);
  // The fixture's cells (lengths 16, 11, 6, 14) in passes {0}, {1, 2} cut to 11, {3} cut to 14
  // give PyTorch's states.
  torch::NoGradGuard no_grad;
  const scssl::TensorFile& f = forward_file();
  const torch::Tensor ids = expected(f, "input_ids"), am = expected(f, "attention_mask");
  geneformer::Model model(fixture_shape());
  scssl::load_tensors(*model, scssl::read_tensor_file(kFixture + "/model.safetensors"),
                      official_names());
  model->eval();
  const std::vector<scssl::TokenPass> passes = scssl::attention_passes(am, 4, 4 * 16 * 16);
  ASSERT_EQ(passes.size(), 3u);
  EXPECT_EQ(passes[1].length, 11);
  for (const scssl::TokenPass& q : passes) {
    const auto part = [&](const torch::Tensor& v) {
      return v.slice(0, q.begin, q.end).slice(1, 0, q.length);
    };
    expect_close_at_tokens(model->forward(part(ids), part(am)).back(),
                           part(expected(f, "hidden_states.2")), part(am), "pass");
  }
}

TEST(GeneformerNetwork, AWrongSizedCheckpointIsRefusedNamingTheTensorAndBothShapes) {
  geneformer::ModelShape s = fixture_shape();
  s.intermediate = 48;  // the file's is 32
  geneformer::Model model(s);
  try {
    scssl::load_tensors(*model, scssl::read_tensor_file(kFixture + "/model.safetensors"),
                        official_names());
    FAIL() << "a checkpoint of other sizes loaded";
  } catch (const scssl::BadData& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("bert.encoder.layer.0.intermediate.dense."), std::string::npos) << m;
    EXPECT_NE(m.find("32"), std::string::npos) << m;
    EXPECT_NE(m.find("48"), std::string::npos) << m;
  }
}

// ---- the plugin in this process
// ------------------------------------------------------------------

namespace {

scssl::host::HostServices& services() {
  static scssl::host::HostServices s;
  return s;
}

const scssl::host::LoadedPlugin& plugin() {
  return scssl::test::plugins().get("geneformer", SCSSL_KIND_METHOD);
}

scssl::ParamSet zero_shot_params() {
  scssl::ParamSet p = plugin().default_params();
  p.set("mode", std::string("zero_shot"));
  p.set("checkpoint", kFixture);
  return p;
}

// The Kang cells preprocessed as the host does by default (normalize_total, log1p; all 1267
// genes are highly variable enough to be kept).
const scssl::CellData& kang() {
  static const scssl::CellData data = [] {
    scssl::CellData d = scssl::test::load_h5ad(scssl::test::repo_file(kKang));
    scssl::preprocess_modality(d.modalities[0], scssl::PreprocessOptions{}, d.batches());
    return d;
  }();
  return data;
}

}  // namespace

TEST(GeneformerPlugin, ZeroShotGivesPyTorchsCellEmbeddingFromTheHostsLog1pValues) {
  // The fixture's four cells as the host hands them over: symbols as feature names, values
  // log1p(count / total * 10,000). The plugin maps symbols to Ensembl ids, undoes log1p, ranks,
  // runs the network and pools.
  const scssl::TensorFile& f = forward_file();
  scssl::CellData data;
  scssl::Modality rna;
  rna.name = "RNA";
  for (const auto& [name, id] : tsv_rows("gene_name_id_dict.tsv")) rna.features.push_back(name);
  const torch::Tensor counts = expected(f, "raw_counts");
  rna.X = scssl::Matrix::from_dense(
      torch::log1p(counts / expected(f, "n_counts").unsqueeze(1) * 1e4), "fixture");
  data.modalities.push_back(rna);
  data.cell_names = {"a", "b", "c", "d"};
  scssl::host::Method method(plugin(), zero_shot_params(), services());
  scssl::CellDataView view(data);
  method.fit(view.get(), scssl::TrainOptions{});
  const torch::Tensor e = method.embed(data);
  EXPECT_TRUE(torch::allclose(e, expected(f, "cell_embedding"), 0, 1e-5))
      << (e - expected(f, "cell_embedding")).abs().max();
}

TEST(GeneformerPlugin, ASavedModelEmbedsTheSame) {
  const scssl::CellData& data = kang();
  scssl::TrainOptions options;
  options.epochs = 1;
  options.batch_size = 64;
  options.learning_rate = 1e-3;
  scssl::ParamSet pretrain = plugin().default_params();
  pretrain.set("d_model", int64_t{16});
  pretrain.set("n_layers", int64_t{1});
  pretrain.set("d_hid", int64_t{16});
  pretrain.set("max_length", int64_t{32});
  for (const scssl::ParamSet& params : {pretrain, zero_shot_params()}) {
    scssl::host::Method trained(plugin(), params, services());
    scssl::CellDataView view(data);
    trained.fit(view.get(), options);
    const std::string dir = scssl::test::temp_dir("geneformer-saved");
    trained.save(dir);
    for (const char* file : {"model.pt", "token_dictionary.tsv", "gene_median_dictionary.tsv"})
      EXPECT_TRUE(std::filesystem::exists(dir + "/" + file)) << file;
    scssl::host::Method loaded(plugin(), plugin().default_params(), services());
    loaded.load(dir);
    const torch::Tensor e = trained.embed(data);
    EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
    EXPECT_TRUE(e.equal(loaded.embed(data))) << params.get_string("mode");
  }
}

// ---- through scssl-host ----------------------------------------------------------------------

namespace {

std::string geneformer_run(const std::string& sets,
                           const std::string& config = "configs/methods/geneformer.toml") {
  static const std::string out = scssl::test::temp_dir("geneformer");
  return scssl::test::run_config(config, out,
                                 " --set run.threads=1 --set evaluation.evaluators=[]"
                                 " --set evaluation.query_batches=[] " +
                                     sets);
}

// A small model so that the runs take seconds.
const char* kSmall =
    "--set method.d_model=32 --set method.n_layers=2 --set method.n_heads=4 --set method.d_hid=64 "
    "--set preprocess.n_top_genes=128 --set method.max_length=32 --set train.epochs=3 "
    "--set train.learning_rate=3e-3 ";

}  // namespace

TEST(GeneformerTraining, TheMaskedLossFallsAndOneSeedGivesOneEmbedding) {
  const std::string a = geneformer_run(std::string(kSmall) + "--set run.seed=3");
  const std::vector<double> loss = scssl::test::run_series(a, "loss");
  ASSERT_EQ(loss.size(), 3u);
  EXPECT_LT(loss.back(), loss.front() - 0.05);
  const std::vector<double> accuracy = scssl::test::run_series(a, "accuracy");
  ASSERT_EQ(accuracy.size(), 3u);
  EXPECT_GT(accuracy.back(), accuracy.front());
  const torch::Tensor e = scssl::test::run_embedding(a);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_EQ(e.size(1), 32);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  EXPECT_TRUE(e.equal(
      scssl::test::run_embedding(geneformer_run(std::string(kSmall) + "--set run.seed=3"))));
  EXPECT_FALSE(e.equal(
      scssl::test::run_embedding(geneformer_run(std::string(kSmall) + "--set run.seed=4"))));
}

TEST(GeneformerTraining, ZeroShotEmbedsWithTheFixtureFolder) {
  // The fixture's gene_name_id_dict.tsv maps 21 of Kang's symbols (CD3E, ..., VIM) to the ids
  // its token dictionary knows.
  const std::string dir = geneformer_run("--set method.checkpoint=" + kFixture,
                                         "configs/methods/geneformer_zero_shot.toml");
  const torch::Tensor e = scssl::test::run_embedding(dir);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_EQ(e.size(1), 16);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  const std::string log = scssl::test::read_text(dir + "/run.log");
  EXPECT_NE(log.find("21 of 1267 genes are in the token dictionary (0 by their own name, 21 "
                     "through gene_name_id_dict.tsv)"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("model.safetensors"), std::string::npos) << log;
  EXPECT_TRUE(scssl::test::run_series(dir, "loss").empty());  // nothing trained
  // The older file holds the same weights.
  const torch::Tensor bin = scssl::test::run_embedding(geneformer_run(
      "--set method.checkpoint=" + kFixture + " --set method.weights_file=pytorch_model.bin",
      "configs/methods/geneformer_zero_shot.toml"));
  EXPECT_TRUE(torch::allclose(bin, e, 0, 1e-6));
}

TEST(GeneformerTraining, RefusesZeroShotWithoutACheckpointOrADictionaryAndScaledValues) {
  const auto refuse = [](const std::string& config, const std::string& sets) {
    return run_command(scssl::test::host_command(
        "run " + scssl::test::repo_file(config) + " --output " +
        scssl::test::temp_dir("geneformer-refuse") + " --set evaluation.evaluators=[] " + sets));
  };
  auto r = refuse("configs/methods/geneformer_zero_shot.toml", "");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("geneformer: mode \"zero_shot\" needs method.checkpoint"),
            std::string::npos)
      << r.output;
  // A folder without the median dictionary.
  const std::string folder = scssl::test::temp_dir("geneformer-no-medians");
  for (const char* file : {"config.json", "model.safetensors", "token_dictionary.tsv"})
    std::filesystem::copy_file(kFixture + "/" + file, folder + "/" + file);
  r = refuse("configs/methods/geneformer_zero_shot.toml", "--set method.checkpoint=" + folder);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("geneformer: cannot read '" + folder + "/gene_median_dictionary.tsv'"),
            std::string::npos)
      << r.output;
  r = refuse("configs/methods/geneformer.toml", "--set preprocess.scale=true");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("geneformer: the preprocessed values have negative entries"),
            std::string::npos)
      << r.output;
}
