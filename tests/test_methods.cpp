// The seven generic SSL methods end to end through scssl-host: the training loss falls, one seed
// gives one embedding, a resumed run equals an uninterrupted one, DSBN and multimodal shapes; and
// the switches that reproduce the study's code (CLIP terms without gradient, MoCo's momentum
// span, BYOL's predictor embedding).
#include <filesystem>
#include <functional>
#include <map>
#include <regex>

#include "scssl/ssl_method.hpp"
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

const char* kTriana = "datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad";

// The parameters and buffers of a run's saved SSL model (run.save_model), by dotted name.
std::map<std::string, torch::Tensor> saved_model(const std::string& run_dir) {
  torch::serialize::InputArchive archive, weights;
  archive.load_from(run_dir + "/model/model.pt");
  archive.read("weights", weights);
  std::map<std::string, torch::Tensor> out;
  std::function<void(torch::serialize::InputArchive&, const std::string&)> walk =
      [&](torch::serialize::InputArchive& a, const std::string& prefix) {
        for (const std::string& key : a.keys()) {
          torch::Tensor t;
          torch::serialize::InputArchive child;
          if (a.try_read(key, t))
            out[prefix + key] = t;
          else if (a.try_read(key, child))
            walk(child, prefix + key + ".");
        }
      };
  walk(weights, "");
  return out;
}

// A method whose predictor passes no gradient back: its encoders and projectors learn from the
// CLIP loss's projector terms alone.
class DetachedPredictor final : public scssl::SslMethod {
 public:
  using SslMethod::model;
  using SslMethod::SslMethod;

 protected:
  int64_t projector_out(int64_t h) const override { return h; }
  torch::nn::Sequential make_projector(int64_t h) override {
    return torch::nn::Sequential(torch::nn::Linear(h, h));
  }
  torch::nn::Sequential make_predictor(int64_t out) override {
    return torch::nn::Sequential(torch::nn::Functional([](torch::Tensor z) { return z.detach(); }),
                                 torch::nn::Linear(out, out));
  }
  torch::Tensor loss(const scssl::TrainBatch&) override {
    throw scssl::InvalidArgument("only integrate = clip is tested");
  }
};

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

// Both kinds of CLIP terms train the methods with banks and momentum copies and SimSiam; the
// study's (clip_z_gradient = false) learn something else.
TEST(Training, ClipIntegrationWorksWithAndWithoutProjectorGradient) {
  const std::string data =
      "--set dataset.path=" + scssl::test::repo_file(kTriana) +
      " --set evaluation.query_batches=[\\\"PBMC_200AB\\\"] --set train.epochs=2 --set "
      "train.batch_size=64"
      " --set method.multimodal=true --set method.integrate=clip --set run.threads=1";
  for (const char* m : {"moco", "nnclr", "byol", "simsiam"}) {
    const std::string config = std::string("configs/methods/") + m + ".toml";
    const torch::Tensor all = scssl::test::run_embedding(run(config, data));
    const torch::Tensor study =
        scssl::test::run_embedding(run(config, data + " --set method.clip_z_gradient=false"));
    EXPECT_EQ(all.size(1), 128) << m;
    ASSERT_EQ(study.sizes(), all.sizes()) << m;
    EXPECT_TRUE(torch::isfinite(study).all().item<bool>()) << m;
    EXPECT_FALSE(study.equal(all)) << m << ": clip_z_gradient had no effect";
  }
}

// clip_z_gradient = false (docs/method-spec.md §0.5): the projector terms of the CLIP loss carry no
// gradient. With a predictor that passes none back either, the encoders and projectors get a
// gradient only with the switch on; the predictors and the logit scale get one either way.
TEST(Training, ClipProjectorTermsWithoutGradientLeaveTheProjectorsWithoutGradient) {
  const scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kTriana));
  ASSERT_EQ(data.modalities.size(), 2u);
  std::vector<scssl::ParamSpec> specs = scssl::ssl_parameters();
  specs.push_back(scssl::clip_z_gradient_parameter());
  for (const bool z_gradient : {true, false}) {
    scssl::host::HostServices services;
    scssl::HostContext host(services.api());
    scssl::ParamSet params = scssl::ParamSet::defaults(specs, "test");
    params.set("multimodal", true);
    params.set("integrate", std::string("clip"));
    params.set("clip_z_gradient", z_gradient);
    DetachedPredictor method(params, host);
    scssl::TrainOptions options;
    options.epochs = 1;
    options.batch_size = 64;
    options.num_threads = 1;
    method.fit(data, options);
    // The gradients of the last step are still held by the parameters.
    for (const auto& p : method.model().named_parameters()) {
      const bool has_gradient =
          p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0;
      const bool z_branch = p.key().find("encoder") != std::string::npos ||
                            p.key().find("projector") != std::string::npos;
      EXPECT_EQ(has_gradient, z_branch ? z_gradient : true)
          << p.key() << " with clip_z_gradient = " << z_gradient;
    }
  }
}

// momentum_epochs (docs/method-spec.md §0.7): MoCo's key network follows the cosine schedule of
// that many epochs, as the study's spanned 200 whatever it trained. One step per epoch, so after
// epoch 1 key = m(1) key0 + (1 - m(1)) online1, with key0 and online1 from a run that stops after
// epoch 0 (the same seed trains the same first epoch); 1 - m(1) is fitted over every parameter.
TEST(Training, MocoMomentumEpochsSetTheCosineSpan) {
  const std::string common = kShort +
                             " --set run.save_model=true --set train.batch_size=1024"
                             " --set train.learning_rate=1e-2 --set train.weight_decay=0"
                             " --set method.momentum=0.5";
  for (const int64_t span : {int64_t{0}, int64_t{200}}) {
    const std::string sets = common + " --set method.momentum_epochs=" + std::to_string(span);
    const auto first =
        saved_model(run("configs/methods/moco.toml", sets + " --set train.epochs=1"));
    const auto second =
        saved_model(run("configs/methods/moco.toml", sets + " --set train.epochs=2"));
    double moved = 0, step = 0;
    int64_t compared = 0;
    for (const auto& [name, online] : first) {
      const bool parameter = std::regex_search(name, std::regex("\\.(weight|bias)$"));
      if (name.rfind("online.", 0) != 0 || !parameter) continue;
      const std::string key = "key." + name.substr(7);
      const torch::Tensor key0 = first.at(key), diff = online - key0;
      moved += ((second.at(key) - key0) * diff).sum().item<double>();
      step += (diff * diff).sum().item<double>();
      ++compared;
    }
    ASSERT_GT(compared, 0);
    ASSERT_GT(step, 0);
    // span 0: the two epochs trained.
    const double expected = 1 - scssl::nn::cosine_momentum(0.5, 1, span > 0 ? span : 2);
    EXPECT_NEAR(moved / step, expected, 1e-4) << "momentum_epochs = " << span;
  }
}

// embed_predictor (docs/method-spec.md §5): with keep_projector the study's BYOL embedded the
// predictor's output. The same training embedded both ways: the second embedding is the saved
// predictor applied to the first (the projector's output).
TEST(Embedding, ByolEmbedPredictorGivesThePredictorOutput) {
  const std::string sets =
      kShort + " --set train.epochs=2 --set method.keep_projector=true --set run.save_model=true";
  const torch::Tensor z = scssl::test::run_embedding(run("configs/methods/byol.toml", sets));
  const std::string dir =
      run("configs/methods/byol.toml", sets + " --set method.embed_predictor=true");
  const auto saved = saved_model(dir);
  torch::nn::Sequential predictor =
      scssl::nn::make_head({{64, 256, true, true}, {256, 64, false, false}});
  torch::NoGradGuard no_grad;
  for (auto& p : predictor->named_parameters())
    p.value().copy_(saved.at("online.predictor0." + p.key()));
  for (auto& b : predictor->named_buffers())
    b.value().copy_(saved.at("online.predictor0." + b.key()));
  predictor->eval();
  const torch::Tensor p = scssl::test::run_embedding(dir);
  ASSERT_EQ(p.sizes(), z.sizes());
  EXPECT_FALSE(p.equal(z));
  EXPECT_TRUE(torch::allclose(p, predictor->forward(z), 1e-4, 1e-4));
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
