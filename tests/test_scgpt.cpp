// scGPT (docs/method-spec.md §14): the tokenizer's bins against values worked out by hand from
// numpy's quantile and digitize, the sequences and masks it builds; the network loaded from a
// checkpoint written by PyTorch (tests/data/foundation/scgpt, tools/fixtures/
// make_foundation_fixtures.py) against PyTorch's outputs; and the plugin through scssl-host:
// pretraining on the bundled Kang file, zero-shot with the fixture checkpoint, the refusals.
#include "../plugins/methods/scgpt/scgpt_model.hpp"
#include "../plugins/methods/scgpt/scgpt_tokenizer.hpp"
#include "scssl/tensor_file.hpp"
#include "support.hpp"

using scssl::test::run_command;

namespace {

std::vector<float> bins_of(const std::vector<float>& values, int64_t n_bins, uint64_t seed = 1) {
  scssl::Xoshiro256 rng(seed);
  return scgpt::bin_values(values, n_bins, rng);
}

}  // namespace

TEST(ScgptTokenizer, BinsAreTheCellsQuantilesAsNumpyComputesThem) {
  // Edges at numpy.quantile(1..10, linspace(0, 1, 5)) = 1, 3.25, 5.5, 7.75, 10; a value's bin is
  // the number of edges at or below it, and the maximum, equal to the last edge alone, gets 5.
  EXPECT_EQ(bins_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 6),
            (std::vector<float>{1, 1, 1, 2, 2, 3, 3, 4, 4, 5}));
  // Order in the cell does not matter.
  EXPECT_EQ(bins_of({10, 1, 5.5f, 3.25f}, 6), (std::vector<float>{5, 1, 3, 2}));
  EXPECT_TRUE(bins_of({}, 51).empty());
}

TEST(ScgptTokenizer, TiesAreSpreadOverTheBinsTheirEdgesSpan) {
  // Every edge equals 7: each value draws one of the bins 1..50, and different seeds differ.
  const std::vector<float> same(2000, 7.0f);
  const std::vector<float> a = bins_of(same, 51, 1);
  EXPECT_EQ(*std::min_element(a.begin(), a.end()), 1);
  EXPECT_EQ(*std::max_element(a.begin(), a.end()), 50);
  for (float b : a) EXPECT_EQ(b, std::floor(b));
  EXPECT_EQ(a, bins_of(same, 51, 1));
  EXPECT_NE(a, bins_of(same, 51, 2));
  // With many distinct values the bins run from 1 to 50 and never decrease with the value.
  std::vector<float> ramp(500);
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = 0.5f + static_cast<float>(i);
  const std::vector<float> b = bins_of(ramp, 51);
  EXPECT_EQ(b.front(), 1);
  EXPECT_EQ(b.back(), 50);
  EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
}

TEST(ScgptTokenizer, SequencesStartWithClsAndHoldTheExpressedKnownGenes) {
  // Cell 0 expresses genes 0, 2 (unknown to the vocabulary) and 3; cell 1 only gene 1.
  const torch::Tensor x = torch::tensor({{4.0f, 0.0f, 9.0f, 2.0f}, {0.0f, 3.0f, 0.0f, 0.0f}});
  scgpt::TokenizerOptions o;
  o.n_bins = 51;
  o.cls_id = 90;
  o.pad_id = 91;
  o.pad_value = -2;
  o.cls_value = 0;
  const scgpt::Tokens t = scgpt::tokenize(x, {10, 11, -1, 13}, {7, 8}, o);
  ASSERT_EQ(t.genes.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(t.genes.equal(torch::tensor({{90, 10, 13}, {90, 11, 91}})));
  EXPECT_TRUE(t.padding.equal(torch::tensor({{false, false, false}, {false, false, true}})));
  // Two values: the larger gets the top bin, the smaller the first. One value equals every edge
  // and draws any bin.
  EXPECT_TRUE(t.values[0].equal(torch::tensor({0.0f, 50.0f, 1.0f}))) << t.values;
  const float lone = t.values[1][1].item<float>();
  EXPECT_TRUE(lone >= 1 && lone <= 50 && lone == std::floor(lone)) << lone;
  EXPECT_EQ(t.values[1][0].item<float>(), 0.0f);
  EXPECT_EQ(t.values[1][2].item<float>(), -2.0f);
}

TEST(ScgptTokenizer, FineTuningTokensIncludeTheUnexpressedGenesWithBinZero) {
  const torch::Tensor x = torch::tensor({{4.0f, 0.0f, 9.0f, 2.0f}});
  scgpt::TokenizerOptions o;
  o.cls_id = 90;
  o.pad_id = 91;
  o.include_zero_genes = true;
  const scgpt::Tokens t = scgpt::tokenize(x, {10, 11, -1, 13}, {7}, o);
  EXPECT_TRUE(t.genes.equal(torch::tensor({{90, 10, 11, 13}})));
  EXPECT_TRUE(t.values.equal(torch::tensor({{0.0f, 50.0f, 0.0f, 1.0f}}))) << t.values;
  EXPECT_FALSE(t.padding.any().item<bool>());
}

TEST(ScgptTokenizer, LongCellsKeepARandomSubsetAndMasksSpareThePadding) {
  const torch::Tensor x = torch::arange(1, 101, torch::kFloat32).view({1, 100});
  std::vector<int64_t> ids(100);
  std::iota(ids.begin(), ids.end(), 0);
  scgpt::TokenizerOptions o;
  o.cls_id = 100;
  o.pad_id = 101;
  o.max_length = 21;
  const scgpt::Tokens a = scgpt::tokenize(x, ids, {1}, o);
  EXPECT_EQ(a.genes.size(1), 21);
  EXPECT_EQ(a.genes[0][0].item<int64_t>(), 100);
  const torch::Tensor kept = a.genes[0].slice(0, 1);
  EXPECT_EQ(std::get<0>(at::_unique(kept)).numel(), 20);
  EXPECT_FALSE(kept.equal(torch::arange(20, torch::kInt64)));  // not simply the first genes
  EXPECT_FALSE(kept.equal(scgpt::tokenize(x, ids, {2}, o).genes[0].slice(0, 1)));
  // Masking: int(n x 0.4) of the n non-padding tokens of each row.
  const torch::Tensor two = torch::arange(1, 10, torch::kFloat32)
                                .view({1, 9})
                                .repeat({2, 1})
                                .mul(torch::tensor({{1.0f}, {0.0f}}));
  two[1][0] = 1.0f;  // the second cell expresses one gene
  const scgpt::Tokens t = scgpt::tokenize(two, {0, 1, 2, 3, 4, 5, 6, 7, 8}, {1, 2}, o);
  torch::Tensor masked;
  const torch::Tensor v = scgpt::mask_values(t, 0.4, -1, 5, masked);
  EXPECT_EQ(masked[0].sum().item<int64_t>(), 4);  // 10 tokens
  EXPECT_EQ(masked[1].sum().item<int64_t>(), 0);  // 2 tokens: int(0.8) = 0
  EXPECT_FALSE(masked.logical_and(t.padding).any().item<bool>());
  EXPECT_TRUE(v.masked_select(masked).eq(-1).all().item<bool>());
  EXPECT_TRUE(
      v.masked_select(masked.logical_not()).equal(t.values.masked_select(masked.logical_not())));
}

// ---- the network against PyTorch ---------------------------------------------------------

namespace {

const std::string kFixture = scssl::test::repo_file("tests/data/foundation/scgpt");

// The fixture's network (d = 16, 2 layers, 4 heads, feed-forward 32, explicit zero
// probabilities), loaded from `weights`; the classifier head, which scgpt never builds, is skipped.
scgpt::Model fixture_model(const std::string& weights, bool with_decoders) {
  scgpt::ModelShape s;
  s.vocab = 33;
  s.d_model = 16;
  s.heads = 4;
  s.d_hid = 32;
  s.layers = 2;
  s.pad_id = 30;
  s.explicit_zero_prob = true;
  s.with_decoders = with_decoders;
  scgpt::Model model(s);
  scssl::TensorNameMap names;
  names.renames = {{"self_attn.Wqkv.", "self_attn.in_proj_"}};
  names.ignored_prefixes = {"cls_decoder."};
  if (!with_decoders) names.ignored_prefixes = {"cls_decoder.", "decoder.", "mvc_decoder."};
  scssl::load_tensors(*model, scssl::read_tensor_file(kFixture + "/" + weights), names);
  model->eval();
  return model;
}

torch::Tensor expected(const scssl::TensorFile& f, const std::string& name) {
  const torch::Tensor* t = f.find(name);
  if (!t) throw std::runtime_error("forward.safetensors has no " + name);
  return *t;
}

// Equal within 1e-5 at the tokens that are not padding ([B, L] or [B, L, d]).
void expect_close_at_tokens(const torch::Tensor& ours, const torch::Tensor& theirs,
                            const torch::Tensor& padding, const std::string& what) {
  ASSERT_EQ(ours.sizes(), theirs.sizes()) << what;
  torch::Tensor keep = padding.logical_not();
  if (ours.dim() == 3) keep = keep.unsqueeze(2).expand_as(ours);
  const double diff = (ours - theirs).abs().masked_select(keep).max().item<double>();
  EXPECT_LT(diff, 1e-5) << what;
}

}  // namespace

TEST(ScgptNetwork, ItsForwardEqualsPyTorchsOnTheOfficialLayout) {
  torch::NoGradGuard no_grad;
  const scssl::TensorFile f = scssl::read_tensor_file(kFixture + "/forward.safetensors");
  const torch::Tensor genes = expected(f, "gene_ids"), values = expected(f, "values");
  const torch::Tensor padding = expected(f, "src_key_padding_mask").to(torch::kBool);
  // Both files through the fused inference kernel, one also through the layers that train.
  struct Case {
    const char* weights;
    bool fused;
  };
  for (const Case c : {Case{"best_model.pt", true}, Case{"best_model_flash.pt", true},
                       Case{"best_model.pt", false}}) {
    const std::string weights = std::string(c.weights) + (c.fused ? " (fused)" : " (own layers)");
    scgpt::Model model = fixture_model(c.weights, true);
    model->fused_inference = c.fused;
    const scgpt::Output out = model->forward(genes, values, padding);
    expect_close_at_tokens(out.hidden, expected(f, "transformer_output"), padding, weights);
    EXPECT_TRUE(torch::allclose(out.cell, expected(f, "cell_emb_raw"), 0, 1e-5)) << weights;
    const scgpt::Prediction expr = model->decoder->forward(out.hidden);
    expect_close_at_tokens(expr.value, expected(f, "expr_pred"), padding, "expression decoder");
    expect_close_at_tokens(expr.zero_prob, expected(f, "expr_zero_probs"), padding, "zero probs");
    const scgpt::Prediction mvc = model->mvc_decoder->forward(out.cell, out.gene_tokens);
    expect_close_at_tokens(mvc.value, expected(f, "mvc_pred"), padding, "GEPC decoder");
    expect_close_at_tokens(mvc.zero_prob, expected(f, "mvc_zero_probs"), padding, "GEPC zeros");
  }
  // The encoder alone (zero-shot) gives the zero-shot embedding.
  const scgpt::Output out = fixture_model("best_model.pt", false)->forward(genes, values, padding);
  EXPECT_TRUE(torch::allclose(torch::nn::functional::normalize(
                                  out.cell, torch::nn::functional::NormalizeFuncOptions().dim(1)),
                              expected(f, "cell_emb"), 0, 1e-5));
}

TEST(ScgptNetwork, AWrongSizedCheckpointIsRefusedNamingTheTensor) {
  scgpt::ModelShape s;
  s.vocab = 33;
  s.d_model = 16;
  s.heads = 4;
  s.d_hid = 64;  // the file's feed-forward is 32 wide
  s.layers = 2;
  s.pad_id = 30;
  s.with_decoders = false;
  scgpt::Model model(s);
  scssl::TensorNameMap names;
  names.ignored_prefixes = {"cls_decoder.", "decoder.", "mvc_decoder."};
  try {
    scssl::load_tensors(*model, scssl::read_tensor_file(kFixture + "/best_model.pt"), names);
    FAIL() << "a checkpoint of other sizes loaded";
  } catch (const scssl::BadData& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("transformer_encoder.layers.0.linear1.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("32"), std::string::npos) << m;
    EXPECT_NE(m.find("64"), std::string::npos) << m;
  }
}

// ---- through scssl-host ---------------------------------------------------------------------

namespace {

std::string scgpt_run(const std::string& sets,
                      const std::string& config = "configs/methods/scgpt.toml") {
  static const std::string out = scssl::test::temp_dir("scgpt");
  return scssl::test::run_config(config, out,
                                 " --set run.threads=1 --set evaluation.evaluators=[]"
                                 " --set evaluation.query_batches=[] " +
                                     sets);
}

// A small model so that the runs take seconds.
const char* kSmall =
    "--set method.d_model=32 --set method.n_layers=2 --set method.n_heads=4 --set method.d_hid=32 "
    "--set preprocess.n_top_genes=128 --set method.max_length=65 --set train.epochs=3 "
    "--set train.learning_rate=1e-3 ";

}  // namespace

TEST(ScgptTraining, TheMaskedLossFallsAndOneSeedGivesOneEmbedding) {
  const std::string a = scgpt_run(std::string(kSmall) + "--set run.seed=3");
  const std::vector<double> mse = scssl::test::run_series(a, "mse");
  ASSERT_EQ(mse.size(), 3u);
  EXPECT_LT(mse.back(), mse.front());
  EXPECT_EQ(scssl::test::run_series(a, "gepc").size(), 3u);
  const torch::Tensor e = scssl::test::run_embedding(a);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_EQ(e.size(1), 32);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  EXPECT_TRUE(torch::allclose(e.norm(2, 1), torch::ones({1556}), 1e-5, 1e-5));
  EXPECT_TRUE(
      e.equal(scssl::test::run_embedding(scgpt_run(std::string(kSmall) + "--set run.seed=3"))));
  EXPECT_FALSE(
      e.equal(scssl::test::run_embedding(scgpt_run(std::string(kSmall) + "--set run.seed=4"))));
}

TEST(ScgptTraining, ZeroShotEmbedsWithAnOfficialCheckpointFolder) {
  // The fixture's vocabulary knows 30 symbols, some of them among Kang's genes.
  const std::string dir = scgpt_run(
      "--set method.mode=zero_shot --set method.checkpoint=" + kFixture + " --set train.epochs=1");
  const torch::Tensor e = scssl::test::run_embedding(dir);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_EQ(e.size(1), 16);
  EXPECT_TRUE(torch::allclose(e.norm(2, 1), torch::ones({1556}), 1e-5, 1e-5));
  const std::string log = scssl::test::read_text(dir + "/run.log");
  EXPECT_NE(log.find("genes are in the vocabulary"), std::string::npos) << log;
  EXPECT_TRUE(scssl::test::run_series(dir, "mse").empty());  // nothing trained
}

TEST(ScgptTraining, FineTuningContinuesAPretrainedModelWithTheIntegrationRecipe) {
  const std::string pretrained = scgpt_run(std::string(kSmall) + "--set run.save_model=true");
  const std::string tuned =
      scgpt_run(std::string(kSmall) + "--set method.mode=fine_tune --set train.epochs=3 " +
                "--set method.max_length=129 --set method.checkpoint=" + pretrained + "/model");
  // Every tensor of the pretrained network is carried over; the new parts start fresh.
  const std::string log = scssl::test::read_text(tuned + "/run.log");
  EXPECT_NE(log.find("fine_tune starts from"), std::string::npos) << log;
  for (const char* term :
       {"mse", "zero_nll", "gepc", "gepc_zero_nll", "ecs", "dab", "validation_mse"})
    EXPECT_EQ(scssl::test::run_series(tuned, term).size(), 3u) << term;
  const std::vector<double> mse = scssl::test::run_series(tuned, "mse");
  EXPECT_LT(mse.back(), mse.front());
  const torch::Tensor e = scssl::test::run_embedding(tuned);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  EXPECT_FALSE(e.equal(scssl::test::run_embedding(pretrained)));
  // An official folder works as the starting point too: what fits by name and shape is taken.
  const std::string official = scgpt_run(
      "--set method.mode=fine_tune --set train.epochs=1 --set method.checkpoint=" + kFixture);
  EXPECT_NE(scssl::test::read_text(official + "/run.log").find("fine_tune starts from"),
            std::string::npos);
  EXPECT_EQ(scssl::test::run_embedding(official).size(1), 16);
}

TEST(ScgptTraining, RefusesZeroShotWithoutACheckpointAndScaledValues) {
  const auto refuse = [](const std::string& sets) {
    return run_command(scssl::test::host_command(
        "run " + scssl::test::repo_file("configs/methods/scgpt.toml") + " --output " +
        scssl::test::temp_dir("scgpt-refuse") + " --set evaluation.evaluators=[] " + sets));
  };
  auto r = refuse("--set method.mode=zero_shot");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("mode \"zero_shot\" needs method.checkpoint"), std::string::npos)
      << r.output;
  r = refuse("--set method.mode=zero_shot --set method.checkpoint=/nonexistent/scgpt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'/nonexistent/scgpt' holds neither an official scGPT model "
                          "(args.json) nor a saved scgpt model (model.pt)"),
            std::string::npos)
      << r.output;
  r = refuse("--set method.mode=fine_tune --set method.checkpoint=" + kFixture +
             " --set dataset.batch_key=\"\" --set evaluation.query_batches=[]");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("fine_tune learns to remove batch effects and needs batch labels"),
            std::string::npos)
      << r.output;
  r = refuse("--set preprocess.scale=true");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("needs non-negative values (turn off scaling"), std::string::npos)
      << r.output;
}
