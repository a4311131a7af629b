// The seven generic SSL methods end to end through scssl-host: the training loss falls, one seed
// gives one embedding, a resumed run equals an uninterrupted one, DSBN and multimodal shapes.
#include <filesystem>
#include <regex>

#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::run_command;

namespace {

const char* kMethods[] = {"simclr", "moco", "simsiam", "nnclr", "byol", "vicreg", "barlowtwins"};

// Runs a method config with overrides; returns the run folder (fails the test on error).
std::string run(const std::string& config, const std::string& sets) {
  static const std::string out = scssl::test::temp_dir("methods");
  return scssl::test::run_config(config, out, sets);
}

// Few epochs, every cell in training, no evaluation: what the loss tests need.
// One thread: these tiny models gain nothing from more, and tests may share the cores.
const std::string kShort =
    "--set train.epochs=6 --set evaluation.evaluators=[] --set evaluation.query_batches=[] "
    "--set run.threads=1";

}  // namespace

class EveryMethod : public ::testing::TestWithParam<const char*> {};

TEST_P(EveryMethod, LossFallsOverAFewEpochs) {
  const std::string method = GetParam();
  // MoCo's first 8 steps (2048 keys / 256) contrast against the bank's random initial vectors,
  // which are easy negatives; its loss rises until the bank holds real keys (epoch 2 of 6 steps).
  const size_t from = method == "moco" ? 2 : 0;
  const std::string dir = run("configs/methods/" + method + ".toml", kShort);
  std::vector<double> l = scssl::test::run_series(dir);
  ASSERT_EQ(l.size(), 6u);
  EXPECT_LT(l.back(), l[from]) << method << ": loss went from " << l[from] << " to " << l.back();
}

INSTANTIATE_TEST_SUITE_P(Methods, EveryMethod, ::testing::ValuesIn(kMethods));

TEST(Training, SameSeedGivesIdenticalEmbeddings) {
  for (const char* m : {"vicreg", "moco"}) {
    const std::string config = std::string("configs/methods/") + m + ".toml";
    torch::Tensor a = scssl::test::run_embedding(run(config, kShort));
    torch::Tensor b = scssl::test::run_embedding(run(config, kShort));
    EXPECT_TRUE(a.equal(b)) << m;
    torch::Tensor c = scssl::test::run_embedding(run(config, kShort + " --set run.seed=1"));
    EXPECT_FALSE(a.equal(c)) << m << ": another seed should give another embedding";
  }
}

TEST(Training, ResumedRunEqualsUninterruptedRun) {
  const std::string config = "configs/methods/vicreg.toml";
  const std::string common =
      "--set evaluation.evaluators=[] --set evaluation.query_batches=[] "
      "--set train.checkpoint_every=2 --set run.threads=1";
  const std::string straight = run(config, common + " --set train.epochs=4");
  const std::string first_half = run(config, common + " --set train.epochs=2");
  ASSERT_TRUE(fs::exists(first_half + "/checkpoints/checkpoint.pt"));
  const std::string resumed =
      run(config,
          common + " --set train.epochs=4 --set train.resume_from=" + first_half + "/checkpoints");
  EXPECT_TRUE(scssl::test::run_embedding(straight).equal(scssl::test::run_embedding(resumed)));
  // The resumed run trained epochs 3 and 4 only.
  EXPECT_EQ(scssl::test::run_series(resumed).size(), 2u);
}

TEST(Training, DomainSpecificBatchNormTrainsAndChangesTheEmbedding) {
  const std::string config = "configs/methods/vicreg.toml";
  torch::Tensor plain = scssl::test::run_embedding(run(config, kShort));
  torch::Tensor dsbn = scssl::test::run_embedding(run(config, kShort + " --set method.dsbn=true"));
  EXPECT_EQ(dsbn.sizes(), plain.sizes());
  EXPECT_TRUE(torch::isfinite(dsbn).all().item<bool>());
  EXPECT_FALSE(dsbn.equal(plain));
}

TEST(Training, MultimodalEmbeddingSizes) {
  // 250 cells (RNA + ADT); 152 reference cells, so batches of 64.
  const std::string config = "configs/methods/vicreg.toml";
  const std::string base =
      "--set train.epochs=2 --set train.batch_size=64 --set method.multimodal=true "
      "--set run.threads=1 --set dataset.path=" +
      scssl::test::repo_file("datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad") +
      " --set evaluation.query_batches=[\\\"PBMC_200AB\\\"]";
  EXPECT_EQ(scssl::test::run_embedding(run(config, base + " --set method.integrate=add")).size(1),
            64);
  EXPECT_EQ(scssl::test::run_embedding(run(config, base + " --set method.integrate=mean")).size(1),
            64);
  EXPECT_EQ(
      scssl::test::run_embedding(run(config, base + " --set method.integrate=concat")).size(1),
      128);
  EXPECT_EQ(scssl::test::run_embedding(run(config, base + " --set method.integrate=clip")).size(1),
            128);
  EXPECT_EQ(
      scssl::test::run_embedding(
          run(config, base + " --set method.integrate=concat --set method.predict_only_rna=true"))
          .size(1),
      64);
}

TEST(Training, ClipIntegrationWorksForMethodsWithBanks) {
  const std::string data =
      "--set dataset.path=" +
      scssl::test::repo_file("datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad") +
      " --set evaluation.query_batches=[\\\"PBMC_200AB\\\"] --set train.epochs=2 --set "
      "train.batch_size=64"
      " --set method.multimodal=true --set method.integrate=clip --set run.threads=1";
  for (const char* m : {"moco", "nnclr", "byol"})
    EXPECT_EQ(scssl::test::run_embedding(run(std::string("configs/methods/") + m + ".toml", data))
                  .size(1),
              128)
        << m;
}

TEST(Training, MultimodalOnUnimodalDataIsRefused) {
  auto r =
      run_command(std::string(SCSSL_TEST_HOST) + " --plugins " + SCSSL_TEST_PLUGIN_DIR +
                  " --quiet run " + scssl::test::repo_file("configs/methods/simclr.toml") +
                  " --output " + scssl::test::temp_dir("refuse") + " --set method.multimodal=true");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("needs two modalities"), std::string::npos) << r.output;
}

// embedding_mode = "bench" (docs/methods.md): in a query-mapping run the reference and the query
// are embedded apart, 256 cells at a time in training mode. The encoder ends in BatchNorm, so
// every full block of 256 comes out with the same per-dimension mean (BatchNorm's shift), be it
// reference or query; with running statistics ("eval") the shifted query batch shows its shift.
// Embedding does not change the trained model: the saved models are the same.
TEST(Embedding, BenchModeStandardisesReferenceAndQueryApart) {
  const std::string config = "configs/methods/vicreg.toml";
  const std::string common =
      "--set train.epochs=2 --set evaluation.evaluators=[] --set run.threads=1 "
      "--set run.save_model=true --set evaluation.protocol=query_mapping";
  const std::string eval_dir = run(config, common + " --set method.embedding_mode=eval");
  const std::string bench_dir = run(config, common + " --set method.embedding_mode=bench");
  const scssl::CellData data = scssl::test::load_h5ad(
      scssl::test::repo_file("datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad"));
  const scssl::Column* batches = data.batches();
  ASSERT_NE(batches, nullptr);
  const int32_t query_code = static_cast<int32_t>(
      std::find(batches->categories.begin(), batches->categories.end(), "stim107") -
      batches->categories.begin());
  std::vector<int64_t> reference, query;
  for (int64_t i = 0; i < data.n_cells(); ++i)
    (batches->codes[i].item<int32_t>() == query_code ? query : reference).push_back(i);
  ASSERT_GE(query.size(), 256u);
  auto first_block_mean = [](const torch::Tensor& e, const std::vector<int64_t>& ids) {
    return e.index_select(0, torch::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + 256)))
        .mean(0);
  };
  const torch::Tensor bench = scssl::test::run_embedding(bench_dir);
  const torch::Tensor eval = scssl::test::run_embedding(eval_dir);
  EXPECT_LT((first_block_mean(bench, reference) - first_block_mean(bench, query))
                .abs()
                .max()
                .item<float>(),
            1e-3);
  EXPECT_GT(
      (first_block_mean(eval, reference) - first_block_mean(eval, query)).abs().max().item<float>(),
      0.05);
  EXPECT_TRUE(scssl::test::read_text(eval_dir + "/model/model.pt") ==
              scssl::test::read_text(bench_dir + "/model/model.pt"))
      << "embedding in bench mode changed the saved model";
}
