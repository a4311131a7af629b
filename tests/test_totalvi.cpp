// totalVI: the two-component Gaussian mixture behind its empirical protein background prior, on
// hand-made data; then training through scssl-host on the bundled Triana RNA + ADT file (the
// validation ELBO falls, the KL warm-up, one seed = one embedding, a resumed run equals an
// uninterrupted one, a saved model embeds as the trained one) and the refusal of RNA-only data.
#include <cmath>
#include <numeric>

#include "../plugins/methods/totalvi/gaussian_mixture.hpp"
#include "support.hpp"

namespace {

const char* kConfig = "configs/methods/totalvi.toml";
const char* kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";
const char* kTriana = "datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad";

// All 250 cells train (no query held out), one thread, no evaluation.
const std::string kQuick =
    "--set evaluation.evaluators=[] --set evaluation.query_batches=[] --set run.threads=1";
// A few epochs set by the config rather than scvi-tools' rule (400 epochs on this file).
const std::string kShort = kQuick + " --set method.epochs_rule=config";

std::string run(const std::string& sets) {
  static const std::string out = scssl::test::temp_dir("totalvi");
  return scssl::test::run_config(kConfig, out, sets);
}

std::vector<double> normal_draws(scssl::Xoshiro256& rng, int n, double mean, double sd) {
  std::vector<double> x(n);
  for (double& v : x) v = mean + sd * scssl::StandardNormal::draw(rng);
  return x;
}

double mean_of(const std::vector<double>& x) {
  return std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
}

double variance_of(const std::vector<double>& x) {
  const double m = mean_of(x);
  double s = 0;
  for (double v : x) s += (v - m) * (v - m);
  return s / static_cast<double>(x.size());
}

// The Triana file with its matrices as counts, as the host's preprocessing leaves them.
scssl::CellData triana_with_counts() {
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& h5ad = scssl::test::plugins().get("h5ad", SCSSL_KIND_DATASET);
  scssl::ParamSet params = h5ad.default_params();
  params.set("path", scssl::test::repo_file(kTriana));
  params.set("batch_key", std::string("batch"));
  params.set("modality_key", std::string("modality"));
  scssl::CellData data = scssl::host::load_dataset(h5ad, params, services);
  for (auto& m : data.modalities) m.counts = m.X;
  return data;
}

}  // namespace

// ---- the Gaussian mixture of the background prior ----------------------------------------------

TEST(TotalviMixture, RecoversTwoWellSeparatedComponents) {
  scssl::Xoshiro256 rng(11);
  const std::vector<double> low = normal_draws(rng, 150, 0.5, 0.2);
  const std::vector<double> high = normal_draws(rng, 50, 4.0, 0.5);
  std::vector<double> x = high;
  x.insert(x.end(), low.begin(), low.end());
  const totalvi::MixtureFit fit = totalvi::fit_two_gaussians(x, rng);
  ASSERT_TRUE(fit.converged);
  // Seven standard deviations apart, every value belongs to its own component: the fit is each
  // group's mean and (biased) variance, plus reg_covar.
  EXPECT_NEAR(fit.mean[0], mean_of(low), 1e-6);
  EXPECT_NEAR(fit.mean[1], mean_of(high), 1e-6);
  EXPECT_NEAR(fit.variance[0], variance_of(low) + 1e-6, 1e-6);
  EXPECT_NEAR(fit.variance[1], variance_of(high) + 1e-6, 1e-6);
  EXPECT_NEAR(fit.weight[0], 0.75, 1e-6);
  EXPECT_NEAR(fit.weight[1], 0.25, 1e-6);
  EXPECT_NEAR(fit.mean[0], 0.5, 0.05);
  EXPECT_NEAR(fit.mean[1], 4.0, 0.2);
}

TEST(TotalviMixture, OnePointCloudKeepsTheDataMeanAndVariance) {
  scssl::Xoshiro256 rng(5);
  const std::vector<double> x = normal_draws(rng, 300, 1.0, 1.0);
  const totalvi::MixtureFit fit = totalvi::fit_two_gaussians(x, rng);
  EXPECT_TRUE(fit.converged);
  EXPECT_LE(fit.mean[0], fit.mean[1]);
  EXPECT_NEAR(fit.weight[0] + fit.weight[1], 1.0, 1e-9);
  // Every M-step keeps the first two moments of the data (less the variance floor).
  const double mixture_mean = fit.weight[0] * fit.mean[0] + fit.weight[1] * fit.mean[1];
  double second = 0;
  for (int k = 0; k < 2; ++k)
    second += fit.weight[k] * (fit.variance[k] - 1e-6 + fit.mean[k] * fit.mean[k]);
  EXPECT_NEAR(mixture_mean, mean_of(x), 1e-9);
  EXPECT_NEAR(second - mixture_mean * mixture_mean, variance_of(x), 1e-9);
}

TEST(TotalviMixture, DegenerateInputs) {
  scssl::Xoshiro256 rng(1);
  // One distinct value: k-means finds one cluster, scikit-learn warns, totalVI falls back.
  EXPECT_FALSE(totalvi::fit_two_gaussians(std::vector<double>(8, 0.0), rng).converged);
  EXPECT_FALSE(totalvi::fit_two_gaussians({3.0}, rng).converged);
  EXPECT_FALSE(totalvi::fit_two_gaussians({}, rng).converged);
  // Two distinct values: each component collapses onto one, its variance held at reg_covar.
  const totalvi::MixtureFit two = totalvi::fit_two_gaussians({0, 5, 0, 5, 0}, rng);
  ASSERT_TRUE(two.converged);
  EXPECT_NEAR(two.mean[0], 0.0, 1e-9);
  EXPECT_NEAR(two.mean[1], 5.0, 1e-9);
  EXPECT_NEAR(two.variance[0], 1e-6, 1e-12);
  EXPECT_NEAR(two.weight[0], 0.6, 1e-9);
  // No convergence within the allowed iterations counts as a failure, as scikit-learn's warning.
  scssl::Xoshiro256 again(5);
  totalvi::MixtureOptions one_step;
  one_step.max_iterations = 1;
  EXPECT_FALSE(
      totalvi::fit_two_gaussians(normal_draws(again, 300, 1.0, 1.0), again, one_step).converged);
}

TEST(TotalviMixture, EmpiricalPriorPerBatch) {
  // Ten proteins. Batch 0: three identical cells, five low (background) and five high counts.
  // Batch 1: no cells. Batch 2: cells without any protein count.
  const std::vector<float> cell = {1, 1, 2, 2, 1, 30, 40, 30, 40, 35};
  torch::Tensor counts = torch::zeros({5, 10});
  for (int c = 0; c < 3; ++c) counts[c] = torch::tensor(cell);
  const torch::Tensor batches = torch::tensor({0, 0, 0, 2, 2}, torch::kInt64);
  const scssl::Matrix proteins = scssl::Matrix::from_dense(counts, "proteins");
  const totalvi::BackgroundPrior prior =
      totalvi::empirical_background_prior(proteins, batches, 3, 100, 7);
  std::vector<double> background;
  for (int p = 0; p < 5; ++p) background.push_back(std::log1p(cell[p]));
  // Every drawn cell has the same background: the batch's mean is its mean, and the scale is
  // sqrt(100 variances) / 100 (up to the high component's tiny share of the low values).
  EXPECT_NEAR(prior.mean[0], mean_of(background), 1e-6);
  EXPECT_NEAR(prior.scale[0], std::sqrt(variance_of(background) + 1e-6) / 10, 1e-6);
  EXPECT_EQ(prior.mean[1], 0.0);
  EXPECT_EQ(prior.scale[1], 1.0);
  EXPECT_EQ(prior.mean[2], 0.0);
  EXPECT_NEAR(prior.scale[2], 0.05 / 10, 1e-12);  // every cell falls back to (0, 0.05)
  // Fewer than five proteins: (0, 0.05) everywhere.
  const totalvi::BackgroundPrior few = totalvi::empirical_background_prior(
      scssl::Matrix::from_dense(counts.slice(1, 0, 4).contiguous(), "proteins"), batches, 3, 100,
      7);
  for (int b = 0; b < 3; ++b) {
    EXPECT_EQ(few.mean[b], 0.0);
    EXPECT_EQ(few.scale[b], 0.05);
  }
}

// ---- training through the host ------------------------------------------------------------------

// The defaults train the 250 cells for scvi-tools' 400 epochs (train.epochs is not used), the
// validation ELBO falls and the KL weight rises over int(0.75 x 250) = 187 steps (one step per
// epoch: 225 training cells in batches of 256).
TEST(TotalviTraining, DefaultsFollowScviToolsAndTheValidationElboFalls) {
  const std::string dir = run(kQuick + " --set train.epochs=3");
  const std::vector<double> elbo = scssl::test::run_series(dir, "validation_elbo");
  ASSERT_EQ(elbo.size(), 400u);
  for (double v : elbo) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LT(elbo.back(), elbo.front() / 10);
  EXPECT_LT(*std::min_element(elbo.end() - 50, elbo.end()),
            *std::min_element(elbo.begin() + 100, elbo.begin() + 150));
  const std::vector<double> loss = scssl::test::run_series(dir, "loss");
  EXPECT_LT(loss.back(), loss.front());
  const std::vector<double> kl_weight = scssl::test::run_series(dir, "kl_weight");
  ASSERT_EQ(kl_weight.size(), 400u);
  EXPECT_EQ(kl_weight[0], 0.0);
  EXPECT_NEAR(kl_weight[100], 100.0 / 187, 1e-6);  // history.csv keeps float precision
  EXPECT_EQ(kl_weight[187], 1.0);
  const torch::Tensor embedding = scssl::test::run_embedding(dir);
  EXPECT_EQ(embedding.sizes(), torch::IntArrayRef({250, 20}));
  EXPECT_TRUE(torch::isfinite(embedding).all().item<bool>());
}

TEST(TotalviTraining, OneSeedGivesOneEmbedding) {
  const std::string sets = kShort + " --set train.epochs=3";
  const torch::Tensor a = scssl::test::run_embedding(run(sets));
  EXPECT_TRUE(a.equal(scssl::test::run_embedding(run(sets))));
  EXPECT_FALSE(a.equal(scssl::test::run_embedding(run(sets + " --set run.seed=1"))));
}

TEST(TotalviTraining, ResumedRunEqualsUninterruptedRun) {
  const std::string common = kShort + " --set train.checkpoint_every=2";
  const std::string straight = run(common + " --set train.epochs=4");
  const std::string first_half = run(common + " --set train.epochs=2");
  const std::string resumed =
      run(common + " --set train.epochs=4 --set train.resume_from=" + first_half + "/checkpoints");
  EXPECT_TRUE(scssl::test::run_embedding(straight).equal(scssl::test::run_embedding(resumed)));
  // The resumed run trained epochs 3 and 4 only, and its validation ELBO is the straight run's.
  const std::vector<double> tail = scssl::test::run_series(resumed, "validation_elbo");
  const std::vector<double> full = scssl::test::run_series(straight, "validation_elbo");
  ASSERT_EQ(tail.size(), 2u);
  ASSERT_EQ(full.size(), 4u);
  EXPECT_EQ(tail[1], full[3]);
}

TEST(TotalviTraining, SavedModelEmbedsAsTheTrainedOne) {
  const scssl::CellData data = triana_with_counts();
  scssl::CellDataView view(data);
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("totalvi", SCSSL_KIND_METHOD);
  scssl::ParamSet params = plugin.default_params();
  params.set("epochs_rule", std::string("config"));
  params.set("n_hidden", int64_t{32});
  scssl::TrainOptions options;
  options.epochs = 2;
  options.learning_rate = 4e-3;
  scssl::host::Method trained(plugin, params, services);
  trained.fit(view.get(), options);
  const std::string dir = scssl::test::temp_dir("totalvi-saved");
  trained.save(dir);
  // Another instance, with other defaults: the saved shape wins.
  scssl::host::Method loaded(plugin, plugin.default_params(), services);
  loaded.load(dir);
  const torch::Tensor a = trained.embed(data);
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({250, 20}));
  EXPECT_TRUE(a.equal(loaded.embed(data)));
}

// A held-out batch, whose one-hot weights never trained, is embedded as a cell of the trained
// batches' mean one-hot: with one training batch, as a cell of that batch.
TEST(TotalviTraining, AHeldOutBatchReadsTheTrainedBatchesOneHot) {
  const scssl::CellData data = triana_with_counts();
  const torch::Tensor codes = data.batches()->codes;
  const scssl::CellData reference = data.select_cells((codes == 0).nonzero().flatten());
  scssl::CellDataView view(reference);
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("totalvi", SCSSL_KIND_METHOD);
  scssl::ParamSet params = plugin.default_params();
  params.set("epochs_rule", std::string("config"));
  params.set("n_hidden", int64_t{32});
  scssl::TrainOptions options;
  options.epochs = 2;
  scssl::host::Method method(plugin, params, services);
  method.fit(view.get(), options);
  scssl::CellData relabelled = data;
  for (auto& column : relabelled.columns)
    if (column.name == data.batch_key) column.codes = torch::zeros_like(codes);
  const torch::Tensor query = (codes == 1).nonzero().flatten();
  ASSERT_GT(query.numel(), 0);
  const torch::Tensor as_query = method.embed(data).index_select(0, query);
  EXPECT_TRUE(as_query.equal(method.embed(relabelled).index_select(0, query)));
}

TEST(TotalviTraining, RefusesRnaOnlyDataInTheHostAndInThePlugin) {
  const auto r = scssl::test::run_command(scssl::test::host_command(
      "--quiet run " + scssl::test::repo_file(kConfig) + " --output " +
      scssl::test::temp_dir("totalvi-refuse") +
      " --set dataset.path=" + scssl::test::repo_file(kKang) + " " + kQuick));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("method 'totalvi' needs two modalities (e.g. RNA and ADT)"),
            std::string::npos)
      << r.output;

  // Called directly, the plugin refuses too, in one sentence naming itself and the protein.
  scssl::CellData kang = scssl::test::load_h5ad(scssl::test::repo_file(kKang));
  for (auto& m : kang.modalities) m.counts = m.X;
  scssl::CellDataView view(kang);
  scssl::host::HostServices services;
  const scssl::host::LoadedPlugin& plugin =
      scssl::test::plugins().get("totalvi", SCSSL_KIND_METHOD);
  scssl::host::Method method(plugin, plugin.default_params(), services);
  try {
    method.fit(view.get(), scssl::TrainOptions{});
    ADD_FAILURE() << "totalvi trained on RNA alone";
  } catch (const scssl::Error& e) {
    EXPECT_NE(std::string(e.what()).find("totalvi needs a protein (ADT) modality next to RNA"),
              std::string::npos)
        << e.what();
  }
}

// embed_proteins = false (the missing-modality task): the embedding never reads the proteins.
// The query batch is held out of training, so changing its proteins changes nothing when they are
// not read, and changes the query's embedding when they are.
TEST(TotalviTraining, WithoutProteinsTheQueryEmbeddingIgnoresItsProteins) {
  const scssl::CellData data = triana_with_counts();
  const scssl::Column& batches = data.require_batches("the test");
  const auto query_code =
      std::find(batches.categories.begin(), batches.categories.end(), "PBMC_200AB") -
      batches.categories.begin();
  const int64_t genes = static_cast<int64_t>(data.modalities[0].features.size());
  // The file's features are the RNA genes, then the proteins: reverse each query cell's proteins.
  const std::string changed = scssl::test::edited_copy(
      "triana_query_proteins",
      [&](std::vector<float>& v, const std::vector<int64_t>& indptr,
          const std::vector<int64_t>& indices) {
        for (int64_t cell = 0; cell < data.n_cells(); ++cell) {
          if (batches.codes[cell].item<int32_t>() != query_code) continue;
          auto first =
              std::find_if(indices.begin() + indptr[cell], indices.begin() + indptr[cell + 1],
                           [&](int64_t j) { return j >= genes; });
          std::reverse(v.begin() + (first - indices.begin()), v.begin() + indptr[cell + 1]);
        }
      },
      kTriana);
  const std::string mapping =
      "--set evaluation.evaluators=[] --set run.threads=1 --set method.epochs_rule=config"
      " --set train.epochs=3 --set evaluation.protocol=query_mapping";
  auto embedding = [&](const std::string& sets) {
    return scssl::test::run_embedding(run(mapping + sets));
  };
  std::vector<int64_t> query;
  for (int64_t cell = 0; cell < data.n_cells(); ++cell)
    if (batches.codes[cell].item<int32_t>() == query_code) query.push_back(cell);
  const torch::Tensor q = torch::tensor(query);
  const std::string moved = " --set dataset.path=" + changed;
  const std::string rna_only = " --set method.embed_proteins=false";
  EXPECT_TRUE(
      embedding(rna_only).index_select(0, q).equal(embedding(rna_only + moved).index_select(0, q)));
  EXPECT_FALSE(embedding("").index_select(0, q).equal(embedding(moved).index_select(0, q)));
}
