// scBERT (docs/method-spec.md §16): the tokens on cases worked out by hand, the masking of
// pretrain.py, the random features; the network loaded from a checkpoint written by PyTorch
// (tests/data/foundation/scbert, tools/fixtures/make_foundation_fixtures.py) against PyTorch's
// outputs, in whole batches and one cell at a time; and the plugin through scssl-host:
// pretraining on the bundled Kang file, zero-shot with the fixture folder, save and load, the
// refusals.
#include "../plugins/methods/scbert/scbert_model.hpp"
#include "../plugins/methods/scbert/scbert_tokenizer.hpp"
#include "scssl/tensor_file.hpp"
#include "support.hpp"

using scssl::test::run_command;

TEST(ScbertTokens, AreTheFlooredLog2ValuesClampedWithMissingGenesZeroAndAZeroAppended) {
  // The host's values are ln(1 + c); the tokens floor(log2(1 + c)) clamped to 5. Columns: c = 0,
  // 0.9, 1, 2.9, 3, 7, 30.9, 31, 5000.
  std::vector<float> counts = {0, 0.9f, 1, 2.9f, 3, 7, 30.9f, 31, 5000};
  std::vector<float> logged;
  for (float c : counts) logged.push_back(static_cast<float>(std::log1p(static_cast<double>(c))));
  const torch::Tensor x = torch::tensor(logged).view({1, 9});
  // Panel: every column in order, then a gene the data lacks, then column 5 again.
  const torch::Tensor t = scbert::tokenize(x, {0, 1, 2, 3, 4, 5, 6, 7, 8, -1, 5}, 5);
  EXPECT_TRUE(t.equal(torch::tensor({{0, 0, 1, 1, 2, 3, 4, 5, 5, 0, 3, 0}}, torch::kInt64))) << t;
  // Another bin_num clamps elsewhere; two cells keep their rows.
  const torch::Tensor two = torch::cat({x, torch::zeros({1, 9})});
  EXPECT_TRUE(scbert::tokenize(two, {8, 6, 0}, 3)
                  .equal(torch::tensor({{3, 3, 0, 0}, {0, 0, 0, 0}}, torch::kInt64)));
  // The panel is matched by symbol: the first column of a repeated symbol, -1 where absent.
  EXPECT_EQ(scbert::panel_columns({"CD3E", "MT-X", "LYZ"}, {"LYZ", "CD3E", "LYZ"}),
            (std::vector<int64_t>{1, -1, 0}));
}

TEST(ScbertTokens, MaskingChoosesCeilOfFifteenPercentOfTheNonZeroTokens) {
  // Cell 0: 20 non-zero tokens (ceil(3.0) = 3 chosen); cell 1: 7 (ceil(1.05) = 2); cell 2: none.
  torch::Tensor tokens = torch::zeros({3, 41}, torch::kInt64);
  for (int64_t p = 0; p < 20; ++p) tokens[0][2 * p] = 1 + p % 5;
  for (int64_t p = 0; p < 7; ++p) tokens[1][p] = 5;
  int64_t replaced = 0, kept = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const scbert::Masked m =
        scbert::mask_tokens(tokens, {seed, seed + 1000, seed + 2000}, 0.15, 0.9, 6);
    const torch::Tensor chosen = m.labels.ne(scbert::kIgnore);
    ASSERT_EQ(chosen[0].sum().item<int64_t>(), 3);
    ASSERT_EQ(chosen[1].sum().item<int64_t>(), 2);
    ASSERT_EQ(chosen[2].sum().item<int64_t>(), 0);
    // Only non-zero tokens are chosen, their labels are the tokens, the rest is untouched.
    ASSERT_TRUE(tokens.masked_select(chosen).ne(0).all().item<bool>());
    ASSERT_TRUE(m.labels.masked_select(chosen).equal(tokens.masked_select(chosen)));
    ASSERT_TRUE(m.input.masked_select(chosen.logical_not())
                    .equal(tokens.masked_select(chosen.logical_not())));
    const torch::Tensor after = m.input.masked_select(chosen);
    replaced += after.eq(6).sum().item<int64_t>();
    kept += after.eq(tokens.masked_select(chosen)).sum().item<int64_t>();
    ASSERT_TRUE(after.eq(6).logical_or(after.eq(tokens.masked_select(chosen))).all().item<bool>());
  }
  // 1000 chosen positions, about 90% replaced by the mask token.
  EXPECT_GT(replaced, 860);
  EXPECT_LT(replaced, 940);
  EXPECT_EQ(replaced + kept, 1000);
  // One seed, one draw; another seed, another.
  const auto draw = [&](uint64_t s) {
    return scbert::mask_tokens(tokens, {s, s, s}, 0.15, 0.9, 6);
  };
  EXPECT_TRUE(draw(5).input.equal(draw(5).input));
  EXPECT_FALSE(draw(5).labels.equal(draw(6).labels));
}

TEST(ScbertNetwork, RandomFeaturesAreScaledOrthogonalBlocks) {
  // 20 rows of width 8: two full orthogonal blocks and 4 rows of a third; every row scaled by the
  // norm of a Gaussian vector of width 8 (about sqrt(8)).
  const torch::Tensor p = scbert::gaussian_orthogonal_random_matrix(20, 8, 7);
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{20, 8}));
  const torch::Tensor norms = p.norm(2, 1, true);
  const torch::Tensor unit = p / norms;
  for (int64_t block = 0; block < 2; ++block) {
    const torch::Tensor b = unit.slice(0, 8 * block, 8 * block + 8);
    EXPECT_TRUE(torch::allclose(b.matmul(b.t()), torch::eye(8), 1e-5, 1e-5));
  }
  const torch::Tensor last = unit.slice(0, 16, 20);
  EXPECT_TRUE(torch::allclose(last.matmul(last.t()), torch::eye(4), 1e-5, 1e-5));
  EXPECT_NEAR(norms.pow(2).mean().item<double>(), 8.0, 3.0);
  EXPECT_TRUE(p.equal(scbert::gaussian_orthogonal_random_matrix(20, 8, 7)));
  EXPECT_FALSE(p.equal(scbert::gaussian_orthogonal_random_matrix(20, 8, 8)));
}

// ---- the network against PyTorch ---------------------------------------------------------

namespace {

const std::string kFixture = scssl::test::repo_file("tests/data/foundation/scbert");

scbert::ModelShape fixture_shape() {
  scbert::ModelShape s;
  s.num_tokens = 7;
  s.seq_len = 21;
  s.dim = 16;
  s.depth = 2;
  s.heads = 2;
  s.dim_head = 8;
  s.nb_features = 8;
  s.gene2vec = true;
  return s;
}

scssl::TensorNameMap state_dict() {
  scssl::TensorNameMap names;
  names.prefix = "model_state_dict.";
  return names;
}

torch::Tensor expected(const scssl::TensorFile& f, const std::string& name) {
  const torch::Tensor* t = f.find(name);
  if (!t) throw std::runtime_error("forward.safetensors has no " + name);
  return *t;
}

void expect_close(const torch::Tensor& ours, const torch::Tensor& theirs, const std::string& what) {
  ASSERT_EQ(ours.sizes(), theirs.sizes()) << what;
  EXPECT_LT((ours - theirs).abs().max().item<double>(), 1e-5) << what;
}

}  // namespace

TEST(ScbertNetwork, ItsForwardEqualsPyTorchsOnTheOfficialLayout) {
  torch::NoGradGuard no_grad;
  scbert::Model model(fixture_shape());
  const scssl::TensorFile file = scssl::read_tensor_file(kFixture + "/panglao_pretrain.pth");
  scssl::load_tensors(*model, file, state_dict());
  model->eval();
  // The float64 table stays float64 (as from_pretrained keeps it), the counter is the file's.
  EXPECT_EQ(model->positions.scalar_type(), torch::kFloat64);
  EXPECT_FALSE(model->positions.requires_grad());
  EXPECT_EQ(model->performer->calls_since_last_redraw.item<int64_t>(), 1);

  const scssl::TensorFile f = scssl::read_tensor_file(kFixture + "/forward.safetensors");
  const torch::Tensor tokens = expected(f, "tokens");
  scbert::Trace trace;
  const torch::Tensor enc = model->forward(tokens, scbert::KeyMax::Batch, &trace);
  expect_close(trace.embed, expected(f, "embed"), "embed");
  ASSERT_EQ(trace.layers.size(), 2u);
  expect_close(trace.layers[0], expected(f, "layer0_out"), "layer0_out");
  expect_close(trace.layers[1], expected(f, "layer1_out"), "layer1_out");
  expect_close(enc, expected(f, "encodings"), "encodings");
  expect_close(model->logits(enc), expected(f, "logits"), "logits");
  expect_close(enc.mean(1), expected(f, "emb_mean"), "emb_mean");
  expect_close(scbert::gene_mean(enc), expected(f, "emb_mean_genes"), "emb_mean_genes");
  {  // the path that keeps gradients computes the same
    torch::AutoGradMode with_gradients(true);
    expect_close(model->forward(tokens, scbert::KeyMax::Batch), expected(f, "encodings"),
                 "encodings with gradients");
  }

  // Per-cell maxima in one batch give what each cell gives alone, and that differs from the
  // batch's result: the whole-batch key maximum is reproduced, not approximated.
  const torch::Tensor alone = model->forward(tokens, scbert::KeyMax::Cell);
  expect_close(alone, expected(f, "encodings_one_by_one"), "encodings_one_by_one");
  expect_close(model->logits(alone), expected(f, "logits_one_by_one"), "logits_one_by_one");
  expect_close(alone.mean(1), expected(f, "emb_mean_one_by_one"), "emb_mean_one_by_one");
  for (int64_t b = 0; b < 3; ++b)
    expect_close(model->forward(tokens.slice(0, b, b + 1), scbert::KeyMax::Batch),
                 expected(f, "encodings_one_by_one").slice(0, b, b + 1), "a batch of one");
  EXPECT_GT((model->logits(alone) - expected(f, "logits")).abs().max().item<double>(), 1e-3);
  // No training call in eval mode: the counter stays.
  EXPECT_EQ(model->performer->calls_since_last_redraw.item<int64_t>(), 1);
}

TEST(ScbertNetwork, TrainingCallsCountAndRedrawTheFeaturesAtTheInterval) {
  scbert::ModelShape s = fixture_shape();
  s.redraw_interval = 2;
  scbert::Model model(s);
  scssl::load_tensors(*model, scssl::read_tensor_file(kFixture + "/panglao_pretrain.pth"),
                      state_dict());
  const torch::Tensor before =
      model->performer->named_buffers()["net.layers.0.0.fn.fast_attention.projection_matrix"]
          .clone();
  const torch::Tensor tokens = torch::zeros({1, 21}, torch::kInt64);
  model->train();
  model->performer->set_redraw_seed(11);
  model->forward(tokens, scbert::KeyMax::Batch);  // count 1 -> 2
  const auto projection = [&] {
    return model->performer->named_buffers()["net.layers.0.0.fn.fast_attention.projection_matrix"];
  };
  EXPECT_EQ(model->performer->calls_since_last_redraw.item<int64_t>(), 2);
  EXPECT_TRUE(projection().equal(before));
  model->forward(tokens, scbert::KeyMax::Batch);  // at the interval: redrawn, count 0
  EXPECT_EQ(model->performer->calls_since_last_redraw.item<int64_t>(), 0);
  EXPECT_FALSE(projection().equal(before));
  EXPECT_TRUE(
      projection().equal(scbert::gaussian_orthogonal_random_matrix(8, 8, scssl::splitmix64(11))));
}

TEST(ScbertNetwork, AWrongSizedCheckpointIsRefusedNamingTheTensorAndBothShapes) {
  scbert::ModelShape s = fixture_shape();
  s.nb_features = 12;  // the file's projections have 8 rows
  scbert::Model model(s);
  try {
    scssl::load_tensors(*model, scssl::read_tensor_file(kFixture + "/panglao_pretrain.pth"),
                        state_dict());
    FAIL() << "a checkpoint of other sizes loaded";
  } catch (const scssl::BadData& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("performer.net.layers.0.0.fn.fast_attention.projection_matrix"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("[8, 8]"), std::string::npos) << m;
    EXPECT_NE(m.find("[12, 8]"), std::string::npos) << m;
  }
}

// ---- through scssl-host ---------------------------------------------------------------------

namespace {

std::string scbert_run(const std::string& sets,
                       const std::string& config = "configs/methods/scbert.toml") {
  static const std::string out = scssl::test::temp_dir("scbert");
  return scssl::test::run_config(config, out,
                                 " --set run.threads=1 --set evaluation.evaluators=[]"
                                 " --set evaluation.query_batches=[] " +
                                     sets);
}

// A small model so that the runs take seconds.
const char* kSmall =
    "--set method.dim=16 --set method.depth=2 --set method.heads=2 --set method.dim_head=8 "
    "--set method.nb_features=8 --set preprocess.n_top_genes=128 --set train.epochs=3 "
    "--set train.batch_size=32 --set train.learning_rate=2e-3 ";

}  // namespace

TEST(ScbertTraining, TheMaskedLossFallsAndOneSeedGivesOneEmbedding) {
  const std::string a = scbert_run(std::string(kSmall) + "--set run.seed=3");
  const std::vector<double> loss = scssl::test::run_series(a, "loss");
  ASSERT_EQ(loss.size(), 3u);
  EXPECT_LT(loss.back(), loss.front());
  const std::vector<double> accuracy = scssl::test::run_series(a, "accuracy");
  ASSERT_EQ(accuracy.size(), 3u);
  EXPECT_GT(accuracy.back(), accuracy.front());
  const torch::Tensor e = scssl::test::run_embedding(a);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_EQ(e.size(1), 16);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  EXPECT_TRUE(
      e.equal(scssl::test::run_embedding(scbert_run(std::string(kSmall) + "--set run.seed=3"))));
  EXPECT_FALSE(
      e.equal(scssl::test::run_embedding(scbert_run(std::string(kSmall) + "--set run.seed=4"))));
}

TEST(ScbertTraining, ZeroShotEmbedsWithTheOfficialFolderLayout) {
  // 15 of the fixture panel's 20 genes are among Kang's (CD3G, CD4, CD8B, CD19, CD79A are not).
  const std::string dir =
      scbert_run("--set method.checkpoint=" + kFixture, "configs/methods/scbert_zero_shot.toml");
  const torch::Tensor e = scssl::test::run_embedding(dir);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_EQ(e.size(1), 16);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  EXPECT_GT(e.std(0).min().item<double>(), 0);  // the cells differ
  const std::string log = scssl::test::read_text(dir + "/run.log");
  EXPECT_NE(log.find("15 of the panel's 20 genes are among the data's 1267 features"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("2 Performer blocks of width 16 (2 heads of 8, 8 random features)"),
            std::string::npos)
      << log;
  EXPECT_TRUE(scssl::test::run_series(dir).empty());  // nothing trained
}

TEST(ScbertTraining, ASavedModelEmbedsTheSame) {
  scssl::CellData data = scssl::test::load_h5ad(
      scssl::test::repo_file("datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad"));
  scssl::CellDataView view(data);
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin = scssl::test::plugins().get("scbert", SCSSL_KIND_METHOD);
  scssl::ParamSet params = plugin.default_params();
  params.set("mode", std::string("zero_shot"));
  params.set("checkpoint", kFixture);
  scssl::host::Method trained(plugin, params, services);
  trained.fit(view.get(), scssl::TrainOptions{});
  const torch::Tensor embedding = trained.embed(data);
  EXPECT_EQ(embedding.sizes(), (std::vector<int64_t>{1556, 16}));

  const std::string dir = scssl::test::temp_dir("scbert-saved");
  trained.save(dir);
  EXPECT_NE(scssl::test::read_text(dir + "/gene_panel.tsv").find("19\tGNLY\n"), std::string::npos);
  scssl::host::Method loaded(plugin, plugin.default_params(), services);
  loaded.load(dir);
  EXPECT_TRUE(embedding.equal(loaded.embed(data)));

  // Features that are not the panel's symbols (Ensembl ids, say) share no gene with it.
  scssl::CellData ids = data;
  for (auto& f : ids.modalities[0].features) f = "ENSG-" + f;
  try {
    loaded.embed(ids);
    ADD_FAILURE() << "data without a panel gene was embedded";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("none of the data's 1267 features is in the model's gene panel of 20"),
              std::string::npos)
        << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

TEST(ScbertTraining, RefusalsNameTheThingInOneSentence) {
  const auto refuse = [](const std::string& config, const std::string& sets) {
    return run_command(scssl::test::host_command(
        "run " + scssl::test::repo_file(config) + " --output " +
        scssl::test::temp_dir("scbert-refuse") + " --set evaluation.evaluators=[] " + sets));
  };
  const std::string zero_shot = "configs/methods/scbert_zero_shot.toml";
  auto r = refuse(zero_shot, "");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("mode \"zero_shot\" needs method.checkpoint"), std::string::npos)
      << r.output;
  r = refuse(zero_shot, "--set method.checkpoint=/nonexistent/scbert");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("cannot read '/nonexistent/scbert/gene_panel.tsv'"), std::string::npos)
      << r.output;
  // A folder whose panel does not fit the checkpoint's position table.
  const std::string folder = scssl::test::temp_dir("scbert-short-panel");
  std::filesystem::copy_file(kFixture + "/panglao_pretrain.pth", folder + "/panglao_pretrain.pth");
  {
    std::ofstream panel(folder + "/gene_panel.tsv");
    panel << "position\tgene_name\n0\tCD3E\n1\tLYZ\n";
  }
  r = refuse(zero_shot, "--set method.checkpoint=" + folder);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("lists 2 genes, but the checkpoint's position table has 21 rows"),
            std::string::npos)
      << r.output;
  {
    std::ofstream panel(folder + "/gene_panel.tsv");
    panel << "position\tgene_name\n0\tCD3E\n2\tLYZ\n";
  }
  r = refuse(zero_shot, "--set method.checkpoint=" + folder);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("line 3 is not \"1<TAB>gene symbol\""), std::string::npos) << r.output;
  // A weights file that is not scBERT's.
  r = refuse(zero_shot, "--set method.checkpoint=" + kFixture +
                            " --set method.weights_file=../scgpt/best_model.pt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("has no 2-d tensor 'token_emb.weight', so it is not a scBERT"),
            std::string::npos)
      << r.output;
  r = refuse("configs/methods/scbert.toml", "--set preprocess.scale=true --set train.epochs=1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("needs the log-normalised values (turn off scaling"), std::string::npos)
      << r.output;
}
