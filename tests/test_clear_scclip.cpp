// The single-cell contrastive methods CLEAR and scCLIP through scssl-host: CLEAR's queue, its
// options for the original build (encoder, embedding, SGD) and clear_original.toml, the crossover
// augmentation with many donors, scCLIP's fixed-scale CLIP loss and embedding options, falling
// losses, one seed -> one embedding, and scCLIP's refusal of data without a second modality.
#include <cmath>
#include <regex>
#include <set>

#include "scssl/losses.hpp"
#include "support.hpp"

using scssl::test::run_command;

namespace {

const std::string kClear = "configs/methods/clear.toml";
const std::string kClearOriginal = "configs/methods/clear_original.toml";
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

// Equal up to rounding. Two runs that differ in a setting that does not touch the numbers can
// still differ in the last bits: BLAS takes other code paths for other memory alignments.
bool nearly_equal(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::allclose(a, b, 1e-4, 1e-5);
}

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
  const std::vector<std::string> key_weight = {"key", "encoder", "fc1", "weight"};
  const std::vector<std::string> query_weight = {"query", "encoder", "fc1", "weight"};
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

TEST(Clear, OriginalEncoderHasNoBatchNormAndAReluOnItsOutput) {
  // Without BatchNorm nothing depends on the other cells: embedding in training mode with batch
  // statistics ("bench") gives the evaluation-mode embedding. The shared encoder is the control.
  const std::string one = "--set train.epochs=1 --set method.encoder=";
  const std::string bench = " --set method.embedding_mode=bench";
  auto embedding = [&](const std::string& sets) {
    return scssl::test::run_embedding(run(kClear, one + sets));
  };
  const torch::Tensor original = embedding("original");
  EXPECT_TRUE(nearly_equal(original, embedding("original" + bench)));
  EXPECT_GE(original.min().item<float>(), 0.0f);  // the ReLU on the output
  EXPECT_TRUE((original == 0).any().item<bool>());
  const torch::Tensor no_bn = embedding("no_bn");
  EXPECT_TRUE(nearly_equal(no_bn, embedding("no_bn" + bench)));
  EXPECT_LT(no_bn.min().item<float>(), 0.0f);  // no ReLU on the output
  EXPECT_FALSE(torch::allclose(embedding("shared"), embedding("shared" + bench), 1e-2, 1e-2));
  // Domain-specific BatchNorm needs BatchNorm.
  const std::string out = scssl::test::temp_dir("clear-dsbn");
  auto r = run_command(
      scssl::test::host_command("--quiet run " + scssl::test::repo_file(kClear) + " --output " +
                                out + " --set method.encoder=original --set method.dsbn=true"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("dsbn = true needs encoder = \"shared\""), std::string::npos) << r.output;
}

TEST(Clear, KeyEmbeddingComesFromTheMomentumEncoder) {
  // With momentum 1 the key encoder keeps its initial weights (no BatchNorm statistics move in
  // CLEAR's encoder), so its embedding is the same after one and two epochs; the query's is not.
  const std::string sets = "--set method.encoder=original --set method.momentum=1.0 ";
  const torch::Tensor key1 = scssl::test::run_embedding(
      run(kClear, sets + "--set method.embedding=key --set train.epochs=1"));
  const torch::Tensor key2 = scssl::test::run_embedding(
      run(kClear, sets + "--set method.embedding=key --set train.epochs=2"));
  const torch::Tensor query1 =
      scssl::test::run_embedding(run(kClear, sets + "--set train.epochs=1"));
  EXPECT_TRUE(nearly_equal(key1, key2));
  EXPECT_FALSE(torch::allclose(key1, query1, 1e-2, 1e-2));
}

TEST(Clear, NormalizedEmbeddingIsTheEmbeddingScaledToUnitLength) {
  const std::string sets = "--set train.epochs=1";
  const torch::Tensor raw = scssl::test::run_embedding(run(kClear, sets));
  const torch::Tensor unit =
      scssl::test::run_embedding(run(kClear, sets + " --set method.normalize_embedding=true"));
  EXPECT_TRUE(torch::allclose(unit.norm(2, 1), torch::ones({unit.size(0)}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(unit, raw / raw.norm(2, 1, true), 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(raw.norm(2, 1), torch::ones({raw.size(0)}), 1e-2, 1e-2));
}

TEST(Clear, SgdTakesGradientStepsWithMomentum) {
  // One step per epoch (batches of 1024 of the 1556 cells); momentum 1 keeps the key encoder at
  // the initial weights, so query - key is what the optimiser has moved.
  const double lr = 1e-3;
  auto moved = [&](const std::string& sets) {
    const std::string dir = run(kClear,
                                "--set train.batch_size=1024 --set method.momentum=1.0 "
                                "--set train.learning_rate=1e-3 --set run.save_model=true " +
                                    sets);
    return saved_tensor(dir, {"query", "encoder", "fc1", "weight"}) -
           saved_tensor(dir, {"key", "encoder", "fc1", "weight"});
  };
  const std::string sgd = "--set method.optimizer=sgd --set method.sgd_momentum=";
  // The first heavy-ball step is a plain gradient step; from the second on the momentum counts.
  const torch::Tensor sgd_first = moved(sgd + "0.9 --set train.epochs=1");
  EXPECT_TRUE(torch::allclose(sgd_first, moved(sgd + "0 --set train.epochs=1"), 1e-3, 1e-8));
  EXPECT_FALSE(torch::allclose(moved(sgd + "0.9 --set train.epochs=2"),
                               moved(sgd + "0 --set train.epochs=2"), 0.1, 1e-7));
  // Adam's first step moves every weight by at most the learning rate, most by nearly exactly it;
  // a gradient step moves each by lr x its gradient, which varies from weight to weight.
  const torch::Tensor adam = moved("--set train.epochs=1").abs();
  EXPECT_LE(adam.max().item<double>(), lr * (1 + 1e-4));
  EXPECT_GT(adam.median().item<double>(), 0.99 * lr);
  const torch::Tensor sgd_abs = sgd_first.abs();
  EXPECT_GT(sgd_abs.max().item<double>(), 3 * sgd_abs.median().item<double>());
}

TEST(Clear, OriginalConfigTurnsOnEveryOptionOfTheOriginal) {
  const std::string dir = run(kClearOriginal, "--set train.epochs=1");
  // The resolved config, as the host writes it (strings in single quotes).
  const std::string config = scssl::test::read_text(dir + "/config.resolved.toml");
  for (const char* setting :
       {"encoder = 'original'", "embedding = 'key'", "normalize_embedding = true",
        "optimizer = 'sgd'", "sgd_momentum = 0.9", "learning_rate = 0.005", "batch_size = 512",
        "sigma = 0.5", "donors = 'many'"})
    EXPECT_NE(config.find(setting), std::string::npos) << setting << " not in\n" << config;
  // CLEAR's embedding: the key encoder's ReLU output, L2-normalised.
  const torch::Tensor e = scssl::test::run_embedding(dir);
  EXPECT_TRUE(torch::allclose(e.norm(2, 1), torch::ones({e.size(0)}), 1e-5, 1e-5));
  EXPECT_GE(e.min().item<float>(), 0.0f);
}

TEST(CrossOver, ManyDonorsGiveEveryCopiedGeneItsOwnOtherCell) {
  // 30 cells x 40 genes, every value different (cell i, gene g holds 1 + 40 i + g), stored dense
  // and as CSR with each row's indices in reverse order; both must give the same views.
  const int64_t n = 30, genes = 40, copied = 10;  // int(0.25 * 40)
  const torch::Tensor x = (torch::arange(n * genes, torch::kFloat32) + 1).reshape({n, genes});
  const torch::Tensor reversed = torch::arange(genes - 1, -1, -1, torch::kInt32).repeat({n});
  const scssl::Matrix csr = scssl::Matrix::csr(torch::arange(0, n * genes + 1, genes), reversed,
                                               x.flip(1).flatten(), n, genes, "reversed CSR");
  const torch::Tensor ids = torch::arange(n, torch::kInt64).repeat({4});
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("crossover", SCSSL_KIND_AUGMENTATION);
  scssl::ParamSet params = plugin.default_params();
  params.set("donors", std::string("many"));
  std::vector<torch::Tensor> views;
  for (const scssl::Matrix& m : {scssl::Matrix::from_dense(x, "dense"), csr}) {
    scssl::CellData data;
    for (int64_t i = 0; i < n; ++i) data.cell_names.push_back("cell" + std::to_string(i));
    data.modalities.push_back({"RNA", std::vector<std::string>(genes, "g"), m, {}});
    const scssl::CellDataView view(std::move(data));
    scssl::host::Augmentation crossover(plugin, params, services);
    crossover.prepare(view.get(), 0);
    torch::Tensor batch = x.index_select(0, ids).contiguous();
    crossover.apply(batch, ids, 0, 5);
    views.push_back(batch);
  }
  EXPECT_TRUE(views[0].equal(views[1]));
  for (int64_t r = 0; r < ids.size(0); ++r) {
    const int64_t cell = ids[r].item<int64_t>();
    const torch::Tensor changed = (views[0][r] != x[cell]).nonzero().flatten();
    ASSERT_EQ(changed.numel(), copied);
    // Value v sits at gene (v - 1) % genes of cell (v - 1) / genes: the same gene of a donor.
    const torch::Tensor v = views[0][r].index_select(0, changed).to(torch::kInt64) - 1;
    EXPECT_TRUE(torch::equal(v.remainder(genes), changed));
    const torch::Tensor donors = v.div(genes, "floor");
    EXPECT_FALSE((donors == cell).any().item<bool>());
    // Ten independent donors out of 29 repeat some, but are far from all one cell.
    EXPECT_GT(
        std::set<int64_t>(donors.data_ptr<int64_t>(), donors.data_ptr<int64_t>() + copied).size(),
        3u);
  }
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
