// scTEL: its loss and training targets on hand-computed cases, then training through scssl-host
// on the bundled Triana RNA + ADT file with a tiny network (falling loss, one seed = one
// embedding, a resumed run equal to an uninterrupted one, the cell-type head), a saved model
// loaded again and embedding from RNA alone, and the refusal of RNA-only data.
#include "../plugins/methods/sctel/sctel_loss.hpp"
#include "support.hpp"

using scssl::test::run_command;

namespace {

namespace fs = std::filesystem;

const char* kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";
const char* kTriana = "datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad";
const char* kConfig = "configs/methods/sctel_cpu.toml";

// All 250 cells train (no query batch); h = 16 keeps every run to a second or two.
const std::string kQuick =
    "--set evaluation.evaluators=[] --set evaluation.query_batches=[] --set run.threads=1 "
    "--set method.hidden_size=16 --set method.heads=2";

std::string run(const std::string& sets) {
  static const std::string out = scssl::test::temp_dir("sctel");
  return scssl::test::run_config(kConfig, out, sets);
}

torch::Tensor rows(std::initializer_list<std::initializer_list<float>> values) {
  std::vector<torch::Tensor> r;
  for (const auto& v : values) r.push_back(torch::tensor(std::vector<float>(v)));
  return torch::stack(r);
}

}  // namespace

// ---- loss and targets
// -----------------------------------------------------------------------------

TEST(SctelLoss, PinballAndProteinLossOnAHandComputedCase) {
  const torch::Tensor q = torch::tensor({0.1f, 0.9f});
  const torch::Tensor truth = rows({{1, 1}});
  // Protein 0: predictions 3 and -1. Quantile 0.1 lies 2 above the truth: (1 - 0.1)·2 = 1.8;
  // quantile 0.9 lies 2 below: 0.9·2 = 1.8. Protein 1: both 0.5, 0.5 below: 0.1·0.5 = 0.05 and
  // 0.9·0.5 = 0.45, mean 0.25.
  const torch::Tensor quantiles = torch::tensor({3.f, -1.f, 0.5f, 0.5f}).view({1, 2, 2});
  const torch::Tensor p = sctel::pinball(quantiles, truth, q);
  EXPECT_NEAR(p[0][0].item<double>(), 1.8, 1e-6);
  EXPECT_NEAR(p[0][1].item<double>(), 0.25, 1e-6);
  // A prediction at the truth costs nothing.
  EXPECT_EQ(sctel::pinball(torch::ones({1, 2, 2}), truth, q).abs().sum().item<double>(), 0.0);

  // Point predictions 2 and 0 (squared errors 1 and 1); only protein 0 was measured. scTEL
  // averages over both entries: ((1 + 1.8) + 0) / 2.
  const torch::Tensor point = rows({{2, 0}});
  const torch::Tensor observed = rows({{1, 0}});
  EXPECT_NEAR(sctel::protein_loss(point, quantiles, truth, observed, q).item<double>(), 1.4, 1e-6);
}

TEST(SctelTargets, StandardisesWithinEachBatchAndMasksUnmeasuredProteins) {
  // Cells 0-1 in batch 0, cells 2-3 in batch 1, cell 4 without a batch (its own group 2).
  const scssl::Matrix x =
      scssl::Matrix::from_dense(rows({{1, 0}, {3, 0}, {5, 2}, {7, 4}, {9, 1}}), "test matrix");
  const torch::Tensor groups =
      sctel::groups_of(torch::tensor({0, 0, 1, 1, -1}, torch::kInt64), 5, 2);
  EXPECT_TRUE(groups.equal(torch::tensor({0, 0, 1, 1, 2}, torch::kInt64)));
  EXPECT_TRUE(sctel::groups_of(torch::Tensor(), 3, 1).equal(torch::zeros({3}, torch::kInt64)));

  // Two values a ± 1 have sd sqrt(2) with n - 1 in the denominator: ∓1/sqrt(2). A feature
  // constant within its batch, and the one-cell group, become 0.
  const sctel::GroupScaling s = sctel::group_scaling(x, groups, 3);
  const double r = 1 / std::sqrt(2.0);
  const torch::Tensor expected =
      torch::tensor({-r, 0.0, r, 0.0, -r, -r, r, r, 0.0, 0.0}, torch::kFloat32).view({5, 2});
  EXPECT_TRUE(torch::allclose(s.apply(x.dense, groups), expected, 1e-6, 1e-6))
      << s.apply(x.dense, groups);

  // Protein 1 is zero in every cell of batch 0: not measured there.
  EXPECT_TRUE(sctel::observed_proteins(x, groups, 3).equal(rows({{1, 0}, {1, 1}, {1, 1}})));
}

// ---- training through scssl-host
// ---------------------------------------------------------------------------

TEST(SctelTraining, LossFallsOnTheTrianaFile) {
  const std::string dir = run(kQuick + " --set train.epochs=8");
  const std::vector<double> loss = scssl::test::run_series(dir, "loss");
  ASSERT_EQ(loss.size(), 8u);
  EXPECT_LT(loss.back(), loss.front());
  // The protein loss is the whole loss without labels; 25 of the 250 cells validate.
  EXPECT_EQ(scssl::test::run_series(dir, "protein"), loss);
  EXPECT_EQ(scssl::test::run_series(dir, "validation_loss").size(), 8u);
  const torch::Tensor e = scssl::test::run_embedding(dir);
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{250, 16}));
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
}

TEST(SctelTraining, OneSeedGivesOneEmbedding) {
  const std::string sets = kQuick + " --set train.epochs=2";
  const torch::Tensor a = scssl::test::run_embedding(run(sets));
  const torch::Tensor b = scssl::test::run_embedding(run(sets));
  EXPECT_TRUE(a.equal(b));
  const torch::Tensor c = scssl::test::run_embedding(run(sets + " --set run.seed=1"));
  EXPECT_FALSE(a.equal(c)) << "another seed should give another embedding";
}

TEST(SctelTraining, ResumedRunEqualsUninterruptedRun) {
  const std::string common = kQuick + " --set train.checkpoint_every=2";
  const std::string straight = run(common + " --set train.epochs=4");
  const std::string first_half = run(common + " --set train.epochs=2");
  ASSERT_TRUE(fs::exists(first_half + "/checkpoints/train-checkpoint.pt"));
  const std::string resumed =
      run(common + " --set train.epochs=4 --set train.resume_from=" + first_half + "/checkpoints");
  EXPECT_TRUE(scssl::test::run_embedding(straight).equal(scssl::test::run_embedding(resumed)));
  EXPECT_EQ(scssl::test::run_series(resumed).size(), 2u);  // epochs 3 and 4 only
}

TEST(SctelTraining, CellTypeHeadTrainsWithLabels) {
  const std::string dir = run(kQuick + " --set train.epochs=3 --set method.use_labels=true");
  const std::vector<double> ce = scssl::test::run_series(dir, "cell_type");
  ASSERT_EQ(ce.size(), 3u);
  EXPECT_GT(ce.front(), 0);
  EXPECT_LT(ce.back(), ce.front());
}

TEST(SctelTraining, RnaOnlyDataIsRefusedInOneSentence) {
  auto r = run_command(
      scssl::test::host_command("--quiet run " + scssl::test::repo_file(kConfig) + " --output " +
                                scssl::test::temp_dir("sctel-refuse") + " " + kQuick +
                                " --set dataset.path=" + scssl::test::repo_file(kKang)));
  EXPECT_NE(r.exit_code, 0);
  const std::string sentence =
      "method 'sctel' needs two modalities (e.g. RNA and ADT), but the data set has 1";
  EXPECT_NE(r.output.find(sentence), std::string::npos) << r.output;

  // Called directly, the plugin refuses too, in one sentence naming itself.
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kKang));
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin = scssl::test::plugins().get("sctel", SCSSL_KIND_METHOD);
  scssl::host::Method method(plugin, plugin.default_params(), services);
  scssl::CellDataView view(data);
  try {
    method.fit(view.get(), scssl::TrainOptions{});
    ADD_FAILURE() << "sctel trained without proteins";
  } catch (const scssl::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("sctel needs measured proteins as a second modality"), std::string::npos)
        << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    EXPECT_EQ(what.find(". "), std::string::npos) << what;
  }
}

TEST(SctelModel, ALoadedModelEmbedsTheSameAndNeedsNoProteins) {
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kTriana));
  scssl::CellDataView view(data);
  scssl::TrainOptions options;
  options.epochs = 1;
  options.batch_size = 32;
  options.learning_rate = 1e-3;
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin = scssl::test::plugins().get("sctel", SCSSL_KIND_METHOD);
  scssl::ParamSet params = plugin.default_params();
  params.set("hidden_size", int64_t{16});
  params.set("heads", int64_t{2});
  scssl::host::Method trained(plugin, params, services);
  trained.fit(view.get(), options);
  const torch::Tensor embedding = trained.embed(data);
  EXPECT_EQ(embedding.sizes(), (std::vector<int64_t>{250, 16}));

  const std::string dir = scssl::test::temp_dir("sctel-saved");
  trained.save(dir);
  scssl::host::Method loaded(plugin, params, services);
  loaded.load(dir);
  EXPECT_TRUE(embedding.equal(loaded.embed(data)));

  // A query without proteins: the RNA alone gives the same embedding.
  scssl::CellData rna_only = data;
  rna_only.modalities.resize(1);
  EXPECT_TRUE(embedding.equal(loaded.embed(rna_only)));
}
