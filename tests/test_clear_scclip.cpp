// The single-cell contrastive methods CLEAR and scCLIP through scssl-host: CLEAR's queue, scCLIP's
// fixed-scale CLIP loss and embedding options, falling losses, one seed -> one embedding, and
// scCLIP's refusal of data without a second modality.
#include <cmath>
#include <regex>

#include "scssl/losses.hpp"
#include "support.hpp"

using scssl::test::run_command;

namespace {

const std::string kClear = "configs/methods/clear.toml";
const std::string kScclip = "configs/methods/scclip.toml";

// Every cell in training, no evaluation, one thread (tests share the cores); few epochs.
const std::string kTrainOnly =
    "--set evaluation.evaluators=[] --set evaluation.query_batches=[] --set run.threads=1 "
    "--set run.write_h5ad=false";

// Runs a config with overrides; returns the run folder (fails the test on error).
std::string run(const std::string& config, const std::string& sets) {
  static const std::string out = scssl::test::temp_dir("clear_scclip");
  return scssl::test::run_config(config, out, kTrainOnly + " " + sets);
}

// One tensor of a saved model (run.save_model), by its path of module names, e.g. {"queue",
// "bank"}.
torch::Tensor saved_tensor(const std::string& run_dir, const std::vector<std::string>& path) {
  torch::serialize::InputArchive file;
  file.load_from(run_dir + "/model/model.pt");
  std::vector<torch::serialize::InputArchive> levels(path.size());
  file.read("weights", levels[0]);
  for (size_t i = 1; i < path.size(); ++i) levels[i - 1].read(path[i - 1], levels[i]);
  torch::Tensor t;
  levels.back().read(path.back(), t);
  return t;
}

const std::string kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";

}  // namespace

TEST(Clear, QueueWrapsAndHoldsUnitKeys) {
  // 1556 cells in batches of 256: 6 steps. A queue of 1000 takes 256, 512, 768, then only 232
  // rows of the fourth batch (the rest is dropped) and wraps to 0; steps 5 and 6 leave it at 512.
  const std::string dir =
      run(kClear, "--set train.epochs=1 --set method.queue_size=1000 --set run.save_model=true");
  EXPECT_EQ(saved_tensor(dir, {"queue", "pointer"}).item<int64_t>(), 512);
  torch::Tensor queue = saved_tensor(dir, {"queue", "bank"});
  ASSERT_EQ(queue.sizes(), (std::vector<int64_t>{1000, 128}));
  EXPECT_TRUE(torch::allclose(queue.norm(2, 1), torch::ones({1000}), 1e-5, 1e-5));
}

TEST(Clear, ConstantMomentumOfOneKeepsTheKeyEncoderAtItsStart) {
  // With momentum 1 the key encoder never moves, however long the query encoder trains.
  const std::string sets =
      "--set method.momentum=1.0 --set run.save_model=true --set train.epochs=";
  const std::string one = run(kClear, sets + "1"), two = run(kClear, sets + "2");
  const std::vector<std::string> key_weight = {"key", "encoder0", "fc1", "weight"};
  const std::vector<std::string> query_weight = {"online", "encoder0", "fc1", "weight"};
  EXPECT_TRUE(saved_tensor(one, key_weight).equal(saved_tensor(two, key_weight)));
  EXPECT_FALSE(saved_tensor(one, query_weight).equal(saved_tensor(two, query_weight)));
}

TEST(Clear, LossFallsOverAFewEpochs) {
  // The first epoch (6 steps) contrasts against the queue's random initial rows, easy negatives;
  // from the second on the queue holds real keys.
  std::vector<double> l = scssl::test::run_series(run(kClear, "--set train.epochs=6"));
  ASSERT_EQ(l.size(), 6u);
  EXPECT_LT(l.back(), l[1]) << "loss went from " << l[1] << " to " << l.back();
}

TEST(Scclip, ClipLossWithScclipsFixedScale) {
  // a = (e1, e2), b = (e1, (1, 1) / sqrt 2) after normalisation; scale s = exp(1).
  const torch::Tensor a = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({2, 2});
  const torch::Tensor b = torch::tensor({1.0f, 0.0f, 1.0f, 1.0f}).view({2, 2});
  const double s = std::exp(1.0), c = s / std::sqrt(2.0);
  // Rows of s a b^T: (s, c) with target 0, (0, c) with target 1.
  const double a_to_b =
      0.5 * ((std::log(std::exp(s) + std::exp(c)) - s) + (std::log(1 + std::exp(c)) - c));
  // Rows of s b a^T: (s, 0) with target 0, (c, c) with target 1.
  const double b_to_a = 0.5 * ((std::log(std::exp(s) + 1) - s) + std::log(2.0));
  EXPECT_NEAR(scssl::losses::clip(a, b, torch::ones({1})).item<double>(), 0.5 * (a_to_b + b_to_a),
              1e-6);
}

TEST(Scclip, LogitScaleStaysFixedUnlessLearned) {
  const std::string sets = "--set train.epochs=3 --set run.save_model=true";
  EXPECT_EQ(saved_tensor(run(kScclip, sets), {"logit_scale"}).item<float>(), 1.0f);
  EXPECT_NE(
      saved_tensor(run(kScclip, sets + " --set method.learn_logit_scale=true"), {"logit_scale"})
          .item<float>(),
      1.0f);
}

TEST(Scclip, LossFallsOverAFewEpochs) {
  std::vector<double> l = scssl::test::run_series(run(kScclip, "--set train.epochs=6"));
  ASSERT_EQ(l.size(), 6u);
  EXPECT_LT(l.back(), l.front()) << "loss went from " << l.front() << " to " << l.back();
}

TEST(Scclip, EmbeddingOptions) {
  const std::string sets = "--set train.epochs=2 --set method.embedding=";
  // Each modality's projection is L2-normalised (128-d); concat keeps both halves.
  torch::Tensor concat = scssl::test::run_embedding(run(kScclip, sets + "concat"));
  ASSERT_EQ(concat.size(1), 256);
  const torch::Tensor ones = torch::ones({concat.size(0)});
  EXPECT_TRUE(torch::allclose(concat.slice(1, 0, 128).norm(2, 1), ones, 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(concat.slice(1, 128).norm(2, 1), ones, 1e-4, 1e-4));
  torch::Tensor mean = scssl::test::run_embedding(run(kScclip, sets + "mean"));
  EXPECT_TRUE(
      torch::allclose(mean, 0.5 * (concat.slice(1, 0, 128) + concat.slice(1, 128)), 1e-5, 1e-5));
  torch::Tensor rna = scssl::test::run_embedding(run(kScclip, sets + "rna"));
  EXPECT_TRUE(torch::allclose(rna, concat.slice(1, 0, 128), 1e-5, 1e-5));
  // Without the projector, the encoders' outputs (hidden_dim 128 each).
  EXPECT_EQ(
      scssl::test::run_embedding(run(kScclip, sets + "concat --set method.keep_projector=false"))
          .size(1),
      256);
}

TEST(ClearAndScclip, SameSeedGivesIdenticalEmbeddings) {
  for (const std::string& config : {kClear, kScclip}) {
    const std::string sets = "--set train.epochs=2";
    torch::Tensor a = scssl::test::run_embedding(run(config, sets));
    EXPECT_TRUE(a.equal(scssl::test::run_embedding(run(config, sets)))) << config;
    EXPECT_FALSE(a.equal(scssl::test::run_embedding(run(config, sets + " --set run.seed=1"))))
        << config << ": another seed should give another embedding";
  }
}

TEST(Scclip, RefusesDataWithoutASecondModality) {
  const std::string out = scssl::test::temp_dir("scclip-refuses");
  auto r = run_command(
      scssl::test::host_command("--quiet run " + scssl::test::repo_file(kScclip) + " --output " +
                                out + " --set dataset.path=" + scssl::test::repo_file(kKang) +
                                " --set evaluation.query_batches=[\\\"stim107\\\"]"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("method 'scclip' needs two modalities (e.g. RNA and ADT)"),
            std::string::npos)
      << r.output;
}
