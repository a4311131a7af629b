// scButterfly: its CLR and adversarial pieces on hand-made cases, then training through scssl-host
// on the bundled Triana RNA + ADT file (every stage's losses fall, one seed = one embedding, a
// resumed run equals an uninterrupted one), a saved model loaded again, and its refusal of RNA-only
// data.
#include <cmath>
#include <filesystem>

#include "../plugins/methods/scbutterfly/scbutterfly_parts.hpp"
#include "scssl/nn.hpp"
#include "support.hpp"

using scssl::test::run_command;

namespace {

namespace fs = std::filesystem;

const char* kConfig = "configs/methods/scbutterfly.toml";
const char* kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";
const char* kTriana = "datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad";

// Runs the scButterfly config with overrides; returns the run folder (fails the test on error).
std::string run(const std::string& sets) {
  static const std::string out = scssl::test::temp_dir("scbutterfly");
  return scssl::test::run_config(kConfig, out, sets);
}

const std::string kQuick =
    "--set evaluation.evaluators=[] --set evaluation.query_batches=[] --set run.threads=1";

// Epochs of the two pre-training stages and of the translator stage (train.epochs).
std::string epochs(int rna, int adt, int translator = 0) {
  std::string sets = " --set method.pretrain_rna_epochs=" + std::to_string(rna) +
                     " --set method.pretrain_adt_epochs=" + std::to_string(adt);
  return translator > 0 ? sets + " --set train.epochs=" + std::to_string(translator) : sets;
}

}  // namespace

TEST(ScButterflyParts, CentredLogRatioOfTheNonZeroCounts) {
  // Row 1: the non-zero counts 1 and 4 have geometric mean 2; the zero stays 0. Row 2: equal
  // counts are all at their geometric mean. Row 3: no counts at all.
  const torch::Tensor counts =
      torch::tensor({1.0, 4.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0}, torch::kFloat64).view({3, 3});
  const double l = std::log(2.0);
  const torch::Tensor expected =
      torch::tensor({-l, l, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, torch::kFloat64).view({3, 3});
  EXPECT_TRUE(scbutterfly::centred_log_ratio(counts).allclose(expected));
}

TEST(ScButterflyParts, SoftTargetsFollowScButterflysBands) {
  const torch::Tensor u = torch::tensor({0.95f, 0.7f, 0.35f, 0.1f});
  EXPECT_TRUE(scbutterfly::soft_targets(u).allclose(torch::tensor({0.95f, 0.8f, 0.2f, 0.1f})));
}

TEST(ScButterflyParts, GradientReversalNegatesAndScalesTheGradientItReadsLate) {
  const torch::Tensor x = torch::tensor({1.0f, 2.0f}).requires_grad_(true);
  const torch::Tensor scale = torch::zeros({}, torch::kFloat64);
  const torch::Tensor y = scssl::nn::reverse_gradient(x, scale);
  EXPECT_TRUE(y.equal(x.detach()));
  // Set after the forward pass, as the plugin's threshold does: the backward pass reads 3.
  scale.fill_(3.0);
  (y * torch::tensor({5.0f, 7.0f})).sum().backward();
  EXPECT_TRUE(x.grad().allclose(torch::tensor({-15.0f, -21.0f})));

  // A scale of 0 lets no gradient through.
  const torch::Tensor x2 = torch::tensor({1.0f, 2.0f}).requires_grad_(true);
  scssl::nn::reverse_gradient(x2, torch::zeros({}, torch::kFloat64)).sum().backward();
  EXPECT_TRUE(x2.grad().equal(torch::zeros({2})));
}

TEST(ScButterflyTraining, EveryStagesReconstructionFalls) {
  const std::string dir = run(kQuick + epochs(15, 15, 15));
  for (const char* series :
       {"pretrain_rna_reconstruction", "pretrain_adt_reconstruction", "translator_reconstruction",
        "translator_validation_reconstruction", "translator_adt_reconstruction"}) {
    const std::vector<double> l = scssl::test::run_series(dir, series);
    ASSERT_EQ(l.size(), 15u) << series;
    EXPECT_LT(l.back(), l.front()) << series << ": went from " << l.front() << " to " << l.back();
  }
  // The discriminators are trained: their loss is recorded and finite.
  const std::vector<double> d = scssl::test::run_series(dir, "translator_discriminator");
  ASSERT_EQ(d.size(), 15u);
  for (double v : d) EXPECT_TRUE(std::isfinite(v));
}

TEST(ScButterflyTraining, OneSeedGivesOneEmbedding) {
  const std::string sets = kQuick + epochs(3, 3, 3);
  const torch::Tensor a = scssl::test::run_embedding(run(sets));
  EXPECT_EQ(a.size(0), 250);
  EXPECT_EQ(a.size(1), 128);
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
  EXPECT_TRUE(a.equal(scssl::test::run_embedding(run(sets))));
  EXPECT_FALSE(a.equal(scssl::test::run_embedding(run(sets + " --set run.seed=1"))));
  // The ADT head's means embed too, and differ from the RNA head's.
  const torch::Tensor adt =
      scssl::test::run_embedding(run(sets + " --set method.embedding=\\\"adt\\\""));
  EXPECT_EQ(adt.sizes(), a.sizes());
  EXPECT_FALSE(adt.equal(a));
  // With the host's log-normalised ADT values instead of CLR the model learns something else.
  const torch::Tensor host =
      scssl::test::run_embedding(run(sets + " --set method.adt_input=\\\"host\\\""));
  EXPECT_TRUE(torch::isfinite(host).all().item<bool>());
  EXPECT_FALSE(host.equal(a));
}

TEST(ScButterflyTraining, ResumedRunEqualsUninterruptedRun) {
  const std::string common = kQuick + " --set train.checkpoint_every=1" + epochs(2, 2);
  const std::string straight = run(common + " --set train.epochs=4");
  const std::string first_half = run(common + " --set train.epochs=2");
  for (const char* stage : {"pretrain_rna", "pretrain_adt", "translator"})
    ASSERT_TRUE(fs::exists(first_half + "/checkpoints/" + stage + "-checkpoint.pt")) << stage;
  const std::string resumed =
      run(common + " --set train.epochs=4 --set train.resume_from=" + first_half + "/checkpoints");
  EXPECT_TRUE(scssl::test::run_embedding(straight).equal(scssl::test::run_embedding(resumed)));
  // The finished pre-training stages were restored, not trained again; the translator trained
  // its epochs 3 and 4 only.
  EXPECT_TRUE(scssl::test::run_series(resumed, "pretrain_rna_loss").empty());
  EXPECT_EQ(scssl::test::run_series(resumed, "translator_loss").size(), 2u);
}

TEST(ScButterflyTraining, SavedModelEmbedsAsTrained) {
  // The file stores raw counts in X; the host would keep them as the raw counts that CLR reads.
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kTriana));
  ASSERT_EQ(data.modalities.size(), 2u);
  data.modalities[1].counts = data.modalities[1].X;
  scssl::CellDataView view(data);
  scssl::TrainOptions options;
  options.epochs = 2;
  options.batch_size = 64;
  options.learning_rate = 1e-3;
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("scbutterfly", SCSSL_KIND_METHOD);
  scssl::ParamSet params = plugin.default_params();
  params.set("pretrain_rna_epochs", int64_t{1});
  params.set("pretrain_adt_epochs", int64_t{1});
  params.set("embedding", std::string("mean"));
  scssl::host::Method trained(plugin, params, services);
  trained.fit(view.get(), options);
  const std::string dir = scssl::test::temp_dir("scbutterfly-saved");
  trained.save(dir);
  scssl::host::Method loaded(plugin, params, services);
  loaded.load(dir);
  const torch::Tensor embedding = trained.embed(data);
  EXPECT_EQ(embedding.size(0), 250);
  EXPECT_EQ(embedding.size(1), 128);
  EXPECT_TRUE(embedding.equal(loaded.embed(data)));
}

TEST(ScButterflyTraining, RefusesRnaOnlyDataInOneSentence) {
  auto r = run_command(
      scssl::test::host_command("--quiet run " + scssl::test::repo_file(kConfig) + " --output " +
                                scssl::test::temp_dir("scbutterfly-refuse") + " " + kQuick +
                                " --set dataset.path=" + scssl::test::repo_file(kKang)));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("method 'scbutterfly' needs two modalities (e.g. RNA and ADT), but the "
                          "data set has 1"),
            std::string::npos)
      << r.output;

  // Called directly, the plugin refuses too, naming itself.
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kKang));
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("scbutterfly", SCSSL_KIND_METHOD);
  scssl::host::Method method(plugin, plugin.default_params(), services);
  scssl::CellDataView view(data);
  try {
    method.fit(view.get(), scssl::TrainOptions{});
    ADD_FAILURE() << "scbutterfly trained on RNA alone";
  } catch (const scssl::Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "scbutterfly needs paired RNA and ADT (two modalities), but the data set has 1"),
              std::string::npos)
        << e.what();
  }
}
