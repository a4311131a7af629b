// CLAIRE and Concerto: their losses and building blocks on hand-computed cases, then training
// through scssl-host on the bundled data (falling loss, one seed = one embedding, CLAIRE's
// refinement and its refusal of data without batches), and a saved model loaded again.
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>

#include "../plugins/methods/claire/claire_pairs.hpp"
#include "../plugins/methods/concerto/concerto_net.hpp"
#include "support.hpp"

using scssl::test::run_command;

namespace {

const char* kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";
const char* kTriana = "datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad";

torch::Tensor rows(std::initializer_list<std::initializer_list<float>> values) {
  std::vector<torch::Tensor> r;
  for (const auto& v : values) r.push_back(torch::tensor(std::vector<float>(v)));
  return torch::stack(r);
}

// Runs a config with overrides; returns the run folder (fails the test on error).
std::string run(const std::string& config, const std::string& sets) {
  static const std::string out = scssl::test::temp_dir("claire-concerto");
  return scssl::test::run_config(config, out, sets);
}

const std::string kQuick =
    "--set evaluation.evaluators=[] --set evaluation.query_batches=[] --set run.threads=1";
// Concerto's teacher costs O(cells x genes x token_dim): smaller tokens keep its tests short.
const std::string kQuickConcerto = kQuick + " --set method.token_dim=32";

}  // namespace

// ---- losses and building blocks
// -------------------------------------------------------------------

TEST(ClaireLoss, SymmetricMocoOnAHandComputedCase) {
  // One cell. Direction q0 -> k1: positive 1, bank negative 0. Direction q1 -> k0: positive 1,
  // bank negative 1. Temperature 0.5, so the logits are twice the cosines.
  const torch::Tensor q0 = rows({{1, 0}}), q1 = rows({{0, 1}});
  const torch::Tensor k0 = rows({{0, 1}}), k1 = rows({{1, 0}});
  const torch::Tensor bank = rows({{0, 1}});
  const double expected = 0.5 * (std::log(1 + std::exp(-2.0)) + std::log(2.0));
  EXPECT_NEAR(claire::symmetric_moco_loss(q0, q1, k0, k1, bank, 0.5).item<double>(), expected,
              1e-6);
  // Unnormalised inputs give the same value: the loss works on cosines.
  EXPECT_NEAR(claire::symmetric_moco_loss(3 * q0, q1, k0, 2 * k1, 5 * bank, 0.5).item<double>(),
              expected, 1e-6);
}

TEST(ConcertoLoss, NtXentBetweenStudentAndTeacherOnAHandComputedCase) {
  // Two cells with orthogonal outputs, equal in both networks: each of the 4 rows has its positive
  // at cosine 1 and two negatives at cosine 0; temperature 0.2.
  const torch::Tensor student = rows({{1, 0}, {0, 1}}), teacher = rows({{1, 0}, {0, 1}});
  EXPECT_NEAR(scssl::losses::nt_xent(student, teacher, 0.2).item<double>(),
              std::log(1 + 2 * std::exp(-5.0)), 1e-6);
}

TEST(ConcertoAttention, PoolsTokensAsTheFormulaSays) {
  concerto::AttentionPooling pool(2);
  torch::NoGradGuard no_grad;
  pool->projection->weight.copy_(torch::eye(2));
  pool->projection->bias.zero_();
  pool->context.copy_(rows({{1}, {0}}));
  const torch::Tensor table = torch::eye(2);
  const torch::Tensor ids = torch::tensor({0, 1}, torch::kInt64).view({1, 2});
  const torch::Tensor coeff = rows({{1, 2}});
  // Token 0 = (1, 0), u = (tanh 1, 0), score tanh 1; token 1 = (0, 2), u = (0, tanh 2), score 0.
  const double w0 = std::exp(std::tanh(1.0)) / (std::exp(std::tanh(1.0)) + 1), w1 = 1 - w0;
  const torch::Tensor out = pool->forward(table, ids, coeff, torch::Tensor());
  EXPECT_NEAR(out[0][0].item<double>(), std::tanh(w0), 1e-6);
  EXPECT_NEAR(out[0][1].item<double>(), std::tanh(2 * w1), 1e-6);
  // A masked token gets no weight.
  const torch::Tensor only_first = torch::tensor({true, false}).view({1, 2});
  const torch::Tensor masked = pool->forward(table, ids, coeff, only_first);
  EXPECT_NEAR(masked[0][0].item<double>(), std::tanh(1.0), 1e-6);
  EXPECT_NEAR(masked[0][1].item<double>(), 0.0, 1e-6);
}

TEST(ConcertoTeacher, BothVariantsGiveOneVectorPerCell) {
  const torch::Tensor x = torch::rand({8, 20}) * (torch::rand({8, 20}) > 0.5);
  for (bool original : {true, false}) {
    concerto::Teacher teacher(20, 16, 10, original);
    const torch::Tensor out = teacher->forward(x);
    EXPECT_EQ(out.sizes(), torch::IntArrayRef({8, 16}));
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>()) << original;
  }
}

// head_layers (docs/method-spec.md §10): the study asked lightly 1.5.10 for a one-layer SimCLR head
// and got two layers, Linear(no bias) -> BN -> ReLU -> Linear(no bias) -> BN; 1 (the default) is
// the Linear -> BN it meant.
TEST(ConcertoHeads, HeadLayersGiveTheLayersOfLightlysHead) {
  using Shapes = std::map<std::string, std::vector<int64_t>>;
  const Shapes one = {{"0.weight", {16, 32}}, {"1.weight", {16}}, {"1.bias", {16}}};
  Shapes two = one;
  two.insert({{"3.weight", {16, 16}}, {"4.weight", {16}}, {"4.bias", {16}}});
  for (const int64_t layers : {int64_t{1}, int64_t{2}}) {
    // Two modalities of 20 and 10 features, concatenated: the heads take 2 x 16 values.
    concerto::ConcertoNet net(std::vector<int64_t>{20, 10}, 16, 10, true, 0.2, "concat", layers);
    for (const char* head : {"student_head.", "teacher_head."}) {
      Shapes shapes;
      for (const auto& p : net->named_parameters())
        if (p.key().rfind(head, 0) == 0)
          shapes[p.key().substr(std::strlen(head))] = p.value().sizes().vec();
      EXPECT_EQ(shapes, layers == 1 ? one : two) << head << " with head_layers = " << layers;
    }
    if (layers == 2) {
      EXPECT_TRUE(net->named_modules()["student_head.2"]->as<torch::nn::ReLU>() != nullptr);
    }
  }
  // The plugin builds what head_layers asks for: the saved model has the second linear layer.
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kTriana));
  scssl::CellDataView view(data);
  scssl::TrainOptions options;
  options.epochs = 1;
  options.batch_size = 64;
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("concerto", SCSSL_KIND_METHOD);
  scssl::ParamSet params = plugin.default_params();
  params.set("token_dim", int64_t{16});
  params.set("head_layers", int64_t{2});
  scssl::host::Method method(plugin, params, services);
  method.fit(view.get(), options);
  const std::string dir = scssl::test::temp_dir("concerto-head");
  method.save(dir);
  torch::serialize::InputArchive archive, weights, head, second;
  archive.load_from(dir + "/model.pt");
  archive.read("weights", weights);
  weights.read("student_head", head);
  EXPECT_TRUE(head.try_read("3", second));
}

TEST(ClaireViews, InterpolationWeightsLieBetweenAlphaAndOne) {
  auto rng = at::make_generator<at::CPUGeneratorImpl>(7);
  const torch::Tensor w = claire::interpolation_weights(20000, 0.3, /*uniform=*/true, rng);
  EXPECT_GE(w.min().item<double>(), 0.3);
  EXPECT_LE(w.max().item<double>(), 1.0);
  EXPECT_NEAR(w.mean().item<double>(), 0.65, 0.01);
  EXPECT_TRUE(
      claire::interpolation_weights(5, 0.3, /*uniform=*/false, rng).eq(0.3f).all().item<bool>());
}

TEST(ClaireViews, MixTheCellWithItsNeighbourAndThePartnerWithItsNeighbour) {
  // Batch A = cells 0, 1; batch B = cells 2, 3. Cell 0's only partner is cell 2.
  const scssl::Matrix x = scssl::Matrix::from_dense(
      rows({{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}}), "x");
  const scssl::NeighborGraph within = scssl::NeighborGraph::from_lists({{1}, {0}, {3}, {2}});
  const scssl::NeighborGraph partners = scssl::NeighborGraph::from_lists({{2}, {}, {0}, {}});
  auto rng = at::make_generator<at::CPUGeneratorImpl>(3);
  const torch::Tensor cells = torch::tensor({0, 1}, torch::kInt64);
  const claire::PairViews v = claire::make_pair_views(x, cells, within, partners, 0.5, true, rng);
  const float l0 = v.lambda0[0].item<float>(), l1 = v.lambda1[0].item<float>();
  EXPECT_TRUE(v.view0[0].allclose(torch::tensor({l0, 1 - l0, 0.f, 0.f})));
  EXPECT_TRUE(v.view1[0].allclose(torch::tensor({0.f, 0.f, l1, 1 - l1})));
  EXPECT_EQ(v.partner[0].item<int64_t>(), 2);
  EXPECT_EQ(v.partner[1].item<int64_t>(), 1);  // no partner: the cell stands for itself
  for (const torch::Tensor& l : {v.lambda0, v.lambda1}) {
    EXPECT_GE(l.min().item<float>(), 0.5f);
    EXPECT_LE(l.max().item<float>(), 1.0f);
  }
}

TEST(ClaireRefinement, DropsTheMinorityComponentOfPairSimilarities) {
  std::vector<double> sims;
  for (int i = 0; i < 20; ++i) sims.push_back(0.85 + 0.005 * i);  // most pairs: close
  for (int i = 0; i < 5; ++i) sims.push_back(0.05 + 0.02 * i);    // a few: far apart
  const torch::Tensor keep = claire::gmm_majority_mask(torch::tensor(sims), 0.5);
  EXPECT_TRUE(keep.slice(0, 0, 20).all().item<bool>());
  EXPECT_FALSE(keep.slice(0, 20).any().item<bool>());
  // Nothing to separate: everything is kept.
  EXPECT_TRUE(claire::gmm_majority_mask(torch::full({6}, 0.7), 0.5).all().item<bool>());
}

TEST(ClairePairs, UniquePairsRoundTripThroughTheGraph) {
  const scssl::NeighborGraph g = scssl::NeighborGraph::from_lists({{2, 3}, {}, {0}, {0}});
  const torch::Tensor pairs = claire::unique_pairs(g);
  EXPECT_TRUE(pairs.equal(torch::tensor({0, 2, 0, 3}, torch::kInt64).view({2, 2})));
  const scssl::NeighborGraph kept = claire::graph_of_pairs(pairs, torch::tensor({false, true}), 4);
  EXPECT_EQ(kept.neighbors(0), std::vector<int64_t>{3});
  EXPECT_EQ(kept.degree(2), 0);
}

// ---- training through the host ------------------------------------------------------------------

TEST(ClaireTraining, LossFallsAndRefinementDropsPairsAfterWarmUp) {
  const std::string dir = run("configs/methods/claire.toml",
                              kQuick + " --set train.epochs=6 --set method.refine_epoch=3");
  const std::vector<double> loss = scssl::test::run_series(dir, "loss");
  ASSERT_EQ(loss.size(), 6u);
  // Epoch 1 contrasts against the queue's random initial keys (easy negatives); from epoch 2 on
  // the queue holds real keys.
  EXPECT_LT(loss.back(), loss[1]);
  const std::vector<double> pairs = scssl::test::run_series(dir, "mnn_pairs");
  ASSERT_EQ(pairs.size(), 6u);
  EXPECT_GT(pairs[0], 0);
  EXPECT_EQ(pairs[2], pairs[0]);  // warm-up: every pair
  EXPECT_LT(pairs[3], pairs[0]);  // refined at the start of epoch 4 (0-based 3)
  EXPECT_GT(pairs[3], 0);
  EXPECT_EQ(pairs[5], pairs[3]);
}

TEST(ClaireTraining, SameSeedGivesIdenticalEmbeddings) {
  const std::string sets = kQuick + " --set train.epochs=3 --set method.refine_epoch=1";
  const torch::Tensor a = scssl::test::run_embedding(run("configs/methods/claire.toml", sets));
  const torch::Tensor b = scssl::test::run_embedding(run("configs/methods/claire.toml", sets));
  EXPECT_EQ(a.size(1), 128);
  EXPECT_TRUE(a.equal(b));
  EXPECT_FALSE(a.equal(
      scssl::test::run_embedding(run("configs/methods/claire.toml", sets + " --set run.seed=1"))));
  // Rows are L2-normalised, as CLAIRE's latl2 embedding.
  EXPECT_TRUE(a.norm(2, 1).allclose(torch::ones({a.size(0)}), 1e-4, 1e-4));
}

TEST(ClaireTraining, RefusesDataWithoutBatchesInTheHostAndInThePlugin) {
  auto r = run_command(std::string(SCSSL_TEST_HOST) + " --plugins " + SCSSL_TEST_PLUGIN_DIR +
                       " --quiet run " + scssl::test::repo_file("configs/methods/claire.toml") +
                       " --output " + scssl::test::temp_dir("claire-refuse") +
                       " --set dataset.batch_key=\\\"\\\" --set evaluation.query_batches=[]" +
                       " --set evaluation.evaluators=[]");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("'claire' needs categorical batch labels"), std::string::npos)
      << r.output;

  // Called directly, the plugin refuses too, naming itself.
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kKang), "", "cell_type");
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin = scssl::test::plugins().get("claire", SCSSL_KIND_METHOD);
  scssl::host::Method method(plugin, plugin.default_params(), services);
  scssl::CellDataView view(data);
  try {
    method.fit(view.get(), scssl::TrainOptions{});
    ADD_FAILURE() << "claire trained without batch labels";
  } catch (const scssl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("claire needs batch labels"), std::string::npos)
        << e.what();
  }
}

// CLAIRE builds its own views and does not declare SCSSL_USES_AUGMENTATIONS, so the host refuses
// a config that gives it [[augmentation]] sections, before any data is read.
TEST(ClaireTraining, RefusesConfiguredAugmentations) {
  const std::string dir = scssl::test::temp_dir("claire-augmentations");
  const std::string config = dir + "/claire_with_mask.toml";
  std::ofstream(config) << "include = [\"" << scssl::test::repo_file("configs/methods/claire.toml")
                        << "\", \""
                        << scssl::test::repo_file("configs/augmentations/only_mask.toml")
                        << "\"]\n";
  auto r = run_command(std::string(SCSSL_TEST_HOST) + " --plugins " + SCSSL_TEST_PLUGIN_DIR +
                       " --quiet run " + config + " --output " + dir + "/runs");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("method 'claire' does not use augmentations"), std::string::npos)
      << r.output;
}

TEST(ConcertoTraining, LossFallsAndOneSeedGivesOneEmbedding) {
  for (const char* teacher : {"original", "reference"}) {
    const std::string sets =
        kQuickConcerto + " --set train.epochs=3 --set method.teacher=" + teacher;
    const std::string dir = run("configs/methods/concerto.toml", sets);
    const std::vector<double> loss = scssl::test::run_series(dir, "loss");
    ASSERT_EQ(loss.size(), 3u);
    EXPECT_LT(loss.back(), loss.front()) << teacher;
    const torch::Tensor a = scssl::test::run_embedding(dir);
    EXPECT_EQ(a.size(1), 32);
    EXPECT_TRUE(a.equal(scssl::test::run_embedding(run("configs/methods/concerto.toml", sets))))
        << teacher;
    if (std::string(teacher) == "original") {
      EXPECT_FALSE(a.equal(scssl::test::run_embedding(
          run("configs/methods/concerto.toml", sets + " --set run.seed=1"))));
    }
  }
}

TEST(ConcertoTraining, MultimodalRnaAndProteinTrains) {
  const std::string config = "configs/methods/concerto_multimodal.toml";
  const std::string dir = run(config, kQuickConcerto + " --set train.epochs=4");
  const std::vector<double> loss = scssl::test::run_series(dir, "loss");
  ASSERT_EQ(loss.size(), 4u);
  EXPECT_LT(loss.back(), loss.front());
  EXPECT_EQ(scssl::test::run_embedding(dir).size(1), 32);
  EXPECT_EQ(scssl::test::run_embedding(
                run(config, kQuickConcerto + " --set train.epochs=1 --set method.integrate=concat"))
                .size(1),
            64);
  EXPECT_EQ(scssl::test::run_embedding(
                run(config, kQuickConcerto + " --set train.epochs=1 --set method.integrate=concat"
                                             " --set method.predict_only_rna=true"))
                .size(1),
            32);
}

TEST(ConcertoTraining, MultimodalOnUnimodalDataIsRefused) {
  auto r = run_command(std::string(SCSSL_TEST_HOST) + " --plugins " + SCSSL_TEST_PLUGIN_DIR +
                       " --quiet run " + scssl::test::repo_file("configs/methods/concerto.toml") +
                       " --output " + scssl::test::temp_dir("concerto-refuse") +
                       " --set method.multimodal=true");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("concerto: multimodal = true needs two modalities"), std::string::npos)
      << r.output;
}

TEST(SaveAndLoad, ALoadedModelGivesTheSameEmbedding) {
  // Small and fast: the 250 Triana cells (two batches), one epoch, raw values.
  scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(kTriana));
  scssl::CellDataView view(data);
  scssl::TrainOptions options;
  options.epochs = 1;
  options.batch_size = 64;
  scssl::host::HostServices services;
  for (const char* name : {"claire", "concerto"}) {
    const scssl::host::LoadedPlugin& plugin = scssl::test::plugins().get(name, SCSSL_KIND_METHOD);
    scssl::ParamSet params = plugin.default_params();
    if (std::string(name) == "concerto") params.set("token_dim", int64_t{16});
    scssl::host::Method trained(plugin, params, services);
    trained.fit(view.get(), options);
    const std::string dir = scssl::test::temp_dir(std::string("saved-") + name);
    trained.save(dir);
    scssl::host::Method loaded(plugin, params, services);
    loaded.load(dir);
    EXPECT_TRUE(trained.embed(data).equal(loaded.embed(data))) << name;
  }
}
