// The generative methods' foundations and scVI (docs/method-spec.md §12): the count likelihoods
// against the formulas evaluated by hand in long double, their normalisation and moments, their
// gradients against finite differences; the single-view trainer (validation split, empty cells,
// early stopping, reduce-on-plateau, learning-rate factors); the host's check that raw counts are
// counts; and scVI trained through scssl-host on the bundled Kang file.
#include <cmath>

#include "scssl/count_likelihoods.hpp"
#include "scssl/loss_trainer.hpp"
#include "support.hpp"

namespace lk = scssl::likelihoods;
using scssl::test::run_command;

namespace {

const char* kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";

torch::Tensor d(double v) { return torch::tensor(v, torch::kFloat64); }

// The formulas of docs/method-spec.md §12 written out in long double, eps included.
long double hand_log_nb(long double x, long double mu, long double theta) {
  const long double eps = 1e-8L;
  return theta * (std::log(theta + eps) - std::log(theta + mu + eps)) +
         x * (std::log(mu + eps) - std::log(theta + mu + eps)) + std::lgamma(x + theta) -
         std::lgamma(theta) - std::lgamma(x + 1);
}
long double sigmoid(long double v) { return 1 / (1 + std::exp(-v)); }

double nb(double x, double mu, double theta) {
  return lk::log_nb(d(x), d(mu), d(theta)).item<double>();
}

// Central differences of f at every element of `at` against autograd.
void expect_gradient_matches(const std::function<torch::Tensor(const torch::Tensor&)>& f,
                             torch::Tensor at, const std::string& what) {
  at = at.clone().set_requires_grad(true);
  f(at).sum().backward();
  const torch::Tensor analytic = at.grad().clone();
  const double h = 1e-6;
  for (int64_t i = 0; i < at.numel(); ++i) {
    torch::Tensor plus = at.detach().clone(), minus = at.detach().clone();
    plus.view(-1)[i] += h;
    minus.view(-1)[i] -= h;
    const double numeric = (f(plus).sum().item<double>() - f(minus).sum().item<double>()) / (2 * h);
    EXPECT_NEAR(analytic.view(-1)[i].item<double>(), numeric, 1e-5 * (1 + std::abs(numeric)))
        << what << " element " << i;
  }
}

}  // namespace

// ---- likelihoods ------------------------------------------------------------------------------

TEST(CountLikelihoods, NegativeBinomialMatchesTheFormula) {
  struct Case {
    double x, mu, theta;
  };
  // x = 0, ordinary values, large x, tiny and huge theta.
  for (const Case& c : {Case{0, 2, 3}, Case{5, 2.5, 0.7}, Case{1, 1e-3, 2}, Case{12000, 10000, 10},
                        Case{3, 4, 1e-6}, Case{0, 4, 1e-6}, Case{7, 5, 1e8}}) {
    const double expected = static_cast<double>(hand_log_nb(c.x, c.mu, c.theta));
    // theta (log(theta) - log(theta + mu)) cancels: in double its rounding grows with theta.
    EXPECT_NEAR(nb(c.x, c.mu, c.theta), expected, 1e-9 * (1 + std::abs(expected)) + 1e-14 * c.theta)
        << "x " << c.x << " mu " << c.mu << " theta " << c.theta;
  }
  // x = 0 reduces to theta log(theta / (theta + mu)).
  EXPECT_NEAR(nb(0, 2, 3), 3 * std::log(3.0 / 5.0), 1e-7);
  // A huge theta is a Poisson distribution.
  EXPECT_NEAR(nb(7, 5, 1e8), 7 * std::log(5.0) - 5 - std::lgamma(8.0), 1e-6);
}

TEST(CountLikelihoods, DistributionsSumToOneWithTheirMoments) {
  const torch::Tensor x = torch::arange(0, 4000, torch::kFloat64);
  const torch::Tensor p = torch::exp(lk::log_nb(x, d(6), d(1.5)));
  EXPECT_NEAR(p.sum().item<double>(), 1.0, 1e-6);
  EXPECT_NEAR((p * x).sum().item<double>(), 6.0, 1e-5);
  // Variance mu + mu^2 / theta.
  EXPECT_NEAR((p * (x - 6) * (x - 6)).sum().item<double>(), 6 + 36 / 1.5, 1e-4);

  const torch::Tensor zinb = torch::exp(lk::log_zinb(x, d(6), d(1.5), d(-0.4)));
  EXPECT_NEAR(zinb.sum().item<double>(), 1.0, 1e-6);
  // The zero-inflated mean is (1 - sigmoid(pi)) mu.
  EXPECT_NEAR((zinb * x).sum().item<double>(), (1 - sigmoid(-0.4L)) * 6, 1e-5);

  const torch::Tensor mix = torch::exp(lk::log_nb_mixture(x, d(2), d(40), d(3), d(0.7)));
  EXPECT_NEAR(mix.sum().item<double>(), 1.0, 1e-6);
  EXPECT_NEAR((mix * x).sum().item<double>(), sigmoid(0.7L) * 2 + (1 - sigmoid(0.7L)) * 40, 1e-4);
}

TEST(CountLikelihoods, ZeroInflationAndMixtureMatchTheFormulas) {
  const long double mu = 3.5, theta = 0.8, pi = 1.3;
  // A zero: a structural zero or an NB zero; a positive count: only the NB part.
  const long double zero =
      std::log(sigmoid(pi) + sigmoid(-pi) * std::exp(hand_log_nb(0, mu, theta)));
  const long double four = std::log(sigmoid(-pi)) + hand_log_nb(4, mu, theta);
  EXPECT_NEAR(lk::log_zinb(d(0), d(mu), d(theta), d(pi)).item<double>(), double(zero), 1e-9);
  EXPECT_NEAR(lk::log_zinb(d(4), d(mu), d(theta), d(pi)).item<double>(), double(four), 1e-9);

  const long double mu2 = 60, w = sigmoid(pi);
  for (long double x : {0.0L, 4.0L, 55.0L}) {
    const long double expected = std::log(w * std::exp(hand_log_nb(x, mu, theta)) +
                                          (1 - w) * std::exp(hand_log_nb(x, mu2, theta)));
    EXPECT_NEAR(lk::log_nb_mixture(d(x), d(mu), d(mu2), d(theta), d(pi)).item<double>(),
                double(expected), 1e-9)
        << "x " << double(x);
  }
}

TEST(CountLikelihoods, GradientsMatchFiniteDifferences) {
  const torch::Tensor x = torch::tensor({0.0, 1.0, 4.0, 30.0}, torch::kFloat64);
  const torch::Tensor mu = torch::tensor({0.5, 2.0, 3.0, 25.0}, torch::kFloat64);
  const torch::Tensor theta = torch::tensor({0.3, 1.0, 5.0, 40.0}, torch::kFloat64);
  const torch::Tensor pi = torch::tensor({-1.0, 0.2, 2.0, 0.0}, torch::kFloat64);
  expect_gradient_matches([&](const torch::Tensor& m) { return lk::log_nb(x, m, theta); }, mu,
                          "NB d/dmu");
  expect_gradient_matches([&](const torch::Tensor& t) { return lk::log_nb(x, mu, t); }, theta,
                          "NB d/dtheta");
  expect_gradient_matches([&](const torch::Tensor& p) { return lk::log_zinb(x, mu, theta, p); }, pi,
                          "ZINB d/dpi");
  expect_gradient_matches([&](const torch::Tensor& m) { return lk::log_zinb(x, m, theta, pi); }, mu,
                          "ZINB d/dmu");
  expect_gradient_matches(
      [&](const torch::Tensor& m) { return lk::log_nb_mixture(x, mu, m, theta, pi); }, mu * 4,
      "mixture d/dmu2");
  expect_gradient_matches(
      [&](const torch::Tensor& p) { return lk::log_nb_mixture(x, mu, mu * 4, theta, p); }, pi,
      "mixture d/dpi");
}

// float32 [cells, genes] takes the fused path (one pass computing values and derivatives); double
// takes the tensor formulas. Both must agree, with theta per gene and per element.
TEST(CountLikelihoods, TheFusedPathAgreesWithTheFormulas) {
  torch::manual_seed(1);
  const int64_t cells = 9, genes = 7;
  // Mostly zeros, some small and some large counts.
  torch::Tensor x = torch::where(torch::rand({cells, genes}) < 0.6, torch::zeros({cells, genes}),
                                 torch::floor(torch::rand({cells, genes}) * 40));
  x[0][0] = 3000;
  const torch::Tensor mu = torch::rand({cells, genes}) * 20 + 0.01;
  const torch::Tensor pi = torch::randn({cells, genes});
  for (const torch::Tensor& theta :
       {torch::rand({genes}) * 5 + 0.05, torch::rand({cells, genes}) * 5 + 0.05}) {
    for (bool zinb : {false, true}) {
      auto evaluate = [&](torch::ScalarType type) {
        auto leaf = [&](const torch::Tensor& v) { return v.to(type).clone().requires_grad_(); };
        torch::Tensor m = leaf(mu), t = leaf(theta), p = leaf(pi);
        const torch::Tensor xv = x.to(type);
        torch::Tensor v = zinb ? lk::log_zinb(xv, m, t, p) : lk::log_nb(xv, m, t);
        (v * torch::linspace(0.5, 1.5, cells * genes).reshape({cells, genes}).to(type))
            .sum()
            .backward();
        return std::vector<torch::Tensor>{v.detach(), m.grad(), t.grad(),
                                          zinb ? p.grad() : torch::zeros({1}, type)};
      };
      const auto fused = evaluate(torch::kFloat32), formulas = evaluate(torch::kFloat64);
      const char* names[] = {"value", "d/dmu", "d/dtheta", "d/dpi"};
      for (size_t k = 0; k < fused.size(); ++k)
        EXPECT_TRUE(torch::allclose(fused[k].to(torch::kFloat64), formulas[k], 2e-4, 2e-4))
            << names[k] << (zinb ? " ZINB" : " NB") << " theta " << theta.sizes()
            << "\nmax difference "
            << (fused[k].to(torch::kFloat64) - formulas[k]).abs().max().item<double>();
    }
  }
}

TEST(CountLikelihoods, GaussianKlTerms) {
  EXPECT_NEAR(lk::kl_standard_normal(d(1), d(2)).item<double>(), 0.5 * (2 + 1 - 1 - std::log(2.0)),
              1e-12);
  EXPECT_NEAR(lk::kl_normal(d(1), d(2), d(0), d(1)).item<double>(),
              lk::kl_standard_normal(d(1), d(2)).item<double>(), 1e-12);
  // KL(N(0.5, 0.25) || N(-1, 4)) = log(2 / 0.5) + (0.25 + 2.25) / 8 - 0.5.
  EXPECT_NEAR(lk::kl_normal(d(0.5), d(0.25), d(-1), d(4)).item<double>(),
              std::log(4.0) + 2.5 / 8 - 0.5, 1e-12);
  EXPECT_NEAR(lk::kl_normal(d(0.3), d(0.7), d(0.3), d(0.7)).item<double>(), 0.0, 1e-12);
}

// ---- the single-view trainer ------------------------------------------------------------------

namespace {

// Ten cells, one feature; counts equal to the cell index (cell 0 has none).
scssl::CellData ten_cells() {
  scssl::CellData data;
  for (int i = 0; i < 10; ++i) data.cell_names.push_back("c" + std::to_string(i));
  scssl::Modality m;
  m.name = "RNA";
  m.features = {"g"};
  const torch::Tensor values = torch::arange(10, torch::kFloat32).unsqueeze(1);
  m.X = scssl::Matrix::from_dense(values, "X");
  m.counts = scssl::Matrix::from_dense(values, "counts");
  data.modalities.push_back(m);
  return data;
}

struct Toy : torch::nn::Module {
  torch::Tensor w = register_parameter("w", torch::zeros({1}));
  torch::nn::Linear critic = register_module("critic", torch::nn::Linear(1, 1));
};

struct Recorder {
  scssl::host::HostServices services;
  std::map<std::string, std::vector<double>> series;
  std::vector<std::string> logs;
  Recorder() {
    services.on_record = [this](const std::string& s, int64_t, double v) {
      series[s].push_back(v);
    };
    services.on_log = [this](scssl_log_level, const std::string& m) { logs.push_back(m); };
    services.on_progress = [](const std::string&, int64_t, int64_t, const std::string&) {};
  }
};

}  // namespace

TEST(LossTrainer, SplitsTrainingAndValidationCellsAndLeavesOutEmptyCells) {
  Recorder rec;
  scssl::HostContext host(rec.services.api());
  scssl::TrainOptions train;
  train.epochs = 2;
  train.batch_size = 3;
  train.seed = 4;
  scssl::LossTrainerOptions o;
  o.counts = true;
  o.drop_empty_cells = true;
  o.train_fraction = 0.75;
  o.min_batch = 1;
  scssl::LossTrainer trainer(host, train, {0}, o);
  Toy toy;
  std::vector<std::vector<int64_t>> seen_train(2), seen_validation(2);
  trainer.fit(ten_cells(), toy, [&](const scssl::CellBatch& b) {
    // Every batch carries the counts and their totals.
    EXPECT_TRUE(b.counts[0].equal(b.x[0]));
    EXPECT_TRUE(b.library[0].equal(b.counts[0].sum(1, true)));
    auto& seen = b.training ? seen_train[b.epoch] : seen_validation[b.epoch];
    for (int64_t i = 0; i < b.cell_ids.size(0); ++i) seen.push_back(b.cell_ids[i].item<int64_t>());
    return scssl::StepLoss{(toy.w * b.x[0]).pow(2).mean(), {}};
  });
  // Cell 0 has no counts: 9 cells, ceil(0.75 x 9) = 7 train, 2 validate, the same every epoch.
  for (int e = 0; e < 2; ++e) {
    std::sort(seen_train[e].begin(), seen_train[e].end());
    std::sort(seen_validation[e].begin(), seen_validation[e].end());
    EXPECT_EQ(seen_train[e].size(), 7u);
    EXPECT_EQ(seen_validation[e].size(), 2u);
    std::vector<int64_t> all = seen_train[e];
    all.insert(all.end(), seen_validation[e].begin(), seen_validation[e].end());
    std::sort(all.begin(), all.end());
    EXPECT_EQ(all, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  }
  EXPECT_EQ(seen_train[0], seen_train[1]);
  EXPECT_EQ(seen_validation[0], seen_validation[1]);
  EXPECT_EQ(rec.series["validation_loss"].size(), 2u);
  EXPECT_TRUE(std::any_of(rec.logs.begin(), rec.logs.end(), [](const std::string& m) {
    return m.find("1 of 10 cells have no counts") != std::string::npos;
  }));
}

TEST(LossTrainer, StopsEarlyAndReducesTheLearningRateOnAPlateau) {
  Recorder rec;
  scssl::HostContext host(rec.services.api());
  scssl::TrainOptions train;
  train.epochs = 50;
  train.batch_size = 5;
  train.learning_rate = 0.1;
  scssl::LossTrainerOptions o;
  o.stage = "flat";
  o.train_fraction = 0.8;
  o.early_stopping_patience = 6;
  o.plateau_patience = 2;
  o.plateau_factor = 0.5;
  scssl::LossTrainer trainer(host, train, {0}, o);
  Toy toy;
  // A loss that no step can improve: epoch 1 sets the best value, then nothing is better.
  const scssl::LossTrainResult r = trainer.fit(ten_cells(), toy, [&](const scssl::CellBatch& b) {
    return scssl::StepLoss{(toy.w * 0).sum() + b.x[0].mean() * 0 + 1, {{"elbo", torch::ones({})}}};
  });
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.epochs_run, 7);  // the best epoch and 6 without improvement
  EXPECT_EQ(rec.series["flat_learning_rate"],
            (std::vector<double>{0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05}));
  EXPECT_EQ(rec.series["flat_validation_elbo"].size(), 7u);
}

TEST(LossTrainer, RestoreBestKeepsTheBestEpochsWeightsAlsoAfterAResume) {
  // Each training step raises w by Adam's learning rate (0.01); the validation value
  // (w - 0.021)^2 is lowest after epoch 2 (w = 0.02) of 5.
  const auto fit = [](int64_t epochs, const std::string& checkpoints, const std::string& resume,
                      Recorder& rec) {
    scssl::HostContext host(rec.services.api());
    scssl::TrainOptions train;
    train.epochs = epochs;
    train.batch_size = 10;
    train.learning_rate = 0.01;
    train.weight_decay = 0;
    train.checkpoint_dir = checkpoints;
    train.checkpoint_every = checkpoints.empty() ? 0 : 1;
    train.resume_from = resume;
    scssl::LossTrainerOptions o;
    o.stage = "best";
    o.train_fraction = 0.8;
    o.restore_best = true;
    scssl::LossTrainer trainer(host, train, {0}, o);
    auto toy = std::make_shared<Toy>();
    const scssl::LossTrainResult r = trainer.fit(ten_cells(), *toy, [&](const scssl::CellBatch& b) {
      const torch::Tensor loss = b.training ? -toy->w.sum() : (toy->w - 0.021).pow(2).sum();
      return scssl::StepLoss{loss + b.x[0].mean() * 0, {}};
    });
    return std::make_pair(r, toy->w.item<double>());
  };
  Recorder whole;
  const auto [r, w] = fit(5, "", "", whole);
  EXPECT_EQ(r.epochs_run, 5);
  EXPECT_EQ(r.best_epoch, 1);
  EXPECT_NEAR(w, 0.02, 1e-6);
  EXPECT_TRUE(std::any_of(whole.logs.begin(), whole.logs.end(), [](const std::string& m) {
    return m.find("kept the weights of epoch 2 of 5") != std::string::npos;
  }));
  // Stopped after 3 epochs (the best snapshot on disk), resumed to 5: the same weights.
  const std::string dir = scssl::test::temp_dir("restore-best");
  Recorder first, second;
  EXPECT_NEAR(fit(3, dir, "", first).second, 0.02, 1e-6);
  EXPECT_TRUE(std::filesystem::exists(dir + "/best-best.pt"));
  const auto [resumed, resumed_w] = fit(5, dir, dir, second);
  EXPECT_EQ(resumed.best_epoch, 1);
  EXPECT_EQ(resumed_w, w);
  // Without the snapshot the resumed run refuses, naming the file.
  std::filesystem::remove(dir + "/best-best.pt");
  Recorder third;
  try {
    fit(5, "", dir, third);
    ADD_FAILURE() << "resumed without the best weights";
  } catch (const scssl::BadData& e) {
    EXPECT_NE(std::string(e.what()).find("best-best.pt' is missing"), std::string::npos)
        << e.what();
  }
}

TEST(LossTrainer, LearningRateFactorsGiveSubmodulesTheirOwnRate) {
  Recorder rec;
  scssl::HostContext host(rec.services.api());
  scssl::TrainOptions train;
  train.epochs = 1;
  train.batch_size = 10;
  train.learning_rate = 0.01;
  train.weight_decay = 0;
  scssl::LossTrainerOptions o;
  o.learning_rate_factors = {{"critic", 5.0}};
  scssl::LossTrainer trainer(host, train, {0}, o);
  Toy toy;
  const torch::Tensor critic_before = toy.critic->bias.detach().clone();
  trainer.fit(ten_cells(), toy, [&](const scssl::CellBatch& b) {
    return scssl::StepLoss{(toy.w - 1).pow(2).sum() + toy.critic->forward(b.x[0]).mean(), {}};
  });
  // Adam's first step moves every parameter by its learning rate.
  EXPECT_NEAR(toy.w.item<double>(), 0.01, 1e-6);
  EXPECT_NEAR((toy.critic->bias - critic_before).abs().item<double>(), 0.05, 1e-6);
}

// The trainer's Adam updates every parameter in one pass; it must follow LibTorch's Adam.
TEST(LossTrainer, ItsAdamStepsAsLibTorchsAdam) {
  Recorder rec;
  scssl::HostContext host(rec.services.api());
  scssl::TrainOptions train;
  train.epochs = 3;
  train.batch_size = 5;
  train.learning_rate = 0.05;
  train.weight_decay = 0.01;
  scssl::LossTrainerOptions o;
  o.adam_eps = 0.01;
  scssl::LossTrainer trainer(host, train, {0}, o);
  torch::manual_seed(3);
  const torch::Tensor target = torch::randn({3, 4}), start = torch::randn({3, 4});
  struct Weights : torch::nn::Module {
    torch::Tensor w;
  } model;
  model.w = model.register_parameter("w", start.clone());
  // A loss whose gradient does not depend on the batch: 2 x 3 steps of Adam from `start`.
  trainer.fit(ten_cells(), model, [&](const scssl::CellBatch&) {
    return scssl::StepLoss{(model.w - target).pow(3).abs().sum(), {}};
  });
  torch::Tensor w = start.clone().requires_grad_();
  torch::optim::Adam reference({w}, torch::optim::AdamOptions(0.05).eps(0.01).weight_decay(0.01));
  for (int step = 0; step < 6; ++step) {
    reference.zero_grad();
    (w - target).pow(3).abs().sum().backward();
    reference.step();
  }
  EXPECT_TRUE(torch::allclose(model.w, w.detach(), 1e-5, 1e-6))
      << (model.w - w).abs().max().item<double>();
  EXPECT_FALSE(torch::allclose(model.w, start));
}

// ---- raw counts and scVI through the host ------------------------------------------------------

namespace {

std::string scvi_run(const std::string& sets,
                     const std::string& config = "configs/methods/scvi.toml") {
  static const std::string out = scssl::test::temp_dir("scvi");
  return scssl::test::run_config(
      config, out,
      " --set run.threads=1 --set evaluation.evaluators=[]"
      " --set evaluation.query_batches=[] --set method.epochs_rule=config"
      " --set train.epochs=6 " +
          sets);
}

}  // namespace

TEST(ScviTraining, TheValidationElboFallsAndOneSeedGivesOneEmbedding) {
  const std::string a = scvi_run("--set run.seed=3");
  const std::vector<double> elbo = scssl::test::run_series(a, "validation_elbo");
  ASSERT_EQ(elbo.size(), 6u);
  EXPECT_LT(elbo.back(), elbo.front());
  EXPECT_EQ(scssl::test::run_series(a, "kl").size(), 6u);
  const torch::Tensor e = scssl::test::run_embedding(a);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_EQ(e.size(1), 10);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  EXPECT_TRUE(e.equal(scssl::test::run_embedding(scvi_run("--set run.seed=3"))));
  EXPECT_FALSE(e.equal(scssl::test::run_embedding(scvi_run("--set run.seed=4"))));
}

TEST(ScviTraining, TheStudysEightLayerNbModelTrains) {
  const std::string dir = scvi_run("", "configs/methods/scvi_study.toml");
  const torch::Tensor e = scssl::test::run_embedding(dir);
  EXPECT_EQ(e.size(1), 30);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
  const std::vector<double> loss = scssl::test::run_series(dir, "loss");
  EXPECT_LT(loss.back(), loss.front());
  EXPECT_NE(scssl::test::read_text(dir + "/run.log").find("hard to train"), std::string::npos);
}

TEST(ScviTraining, AResumedRunEqualsAnUninterruptedOne) {
  const std::string common = "--set train.checkpoint_every=1 --set run.seed=2";
  const std::string straight = scvi_run(common);
  const std::string first = scvi_run(common + " --set train.epochs=3");
  const std::string resumed =
      scvi_run(common + " --set train.resume_from=" + first + "/checkpoints");
  EXPECT_TRUE(scssl::test::run_embedding(straight).equal(scssl::test::run_embedding(resumed)));
  EXPECT_EQ(scssl::test::run_series(resumed).size(), 3u);
}

TEST(ScviTraining, CellsWithoutCountsAreLeftOutOfTrainingButEmbedded) {
  // The first three cells lose every count.
  const std::string path = scssl::test::edited_copy(
      "kang_empty_cells",
      [](std::vector<float>& v, const std::vector<int64_t>& indptr, auto&) {
        std::fill(v.begin(), v.begin() + indptr[3], 0.0f);
      },
      kKang);
  const std::string dir = scvi_run("--set dataset.path=" + path);
  EXPECT_NE(scssl::test::read_text(dir + "/run.log").find("3 of 1556 cells have no counts"),
            std::string::npos);
  const torch::Tensor e = scssl::test::run_embedding(dir);
  EXPECT_EQ(e.size(0), 1556);
  EXPECT_TRUE(torch::isfinite(e).all().item<bool>());
}

TEST(ScviTraining, RefusesValuesThatAreNotCountsSayingWhereItLooked) {
  const std::string path = scssl::test::edited_copy(
      "kang_not_counts", [](std::vector<float>& v, auto&, auto&) { v[10] = 0.5f; }, kKang);
  auto r = run_command(
      scssl::test::host_command("run " + scssl::test::repo_file("configs/methods/scvi.toml") +
                                " --output " + scssl::test::temp_dir("scvi-refuse") +
                                " --set dataset.path=" + path + " --set evaluation.evaluators=[]"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("method 'scvi' needs raw counts, but modality 'RNA' read from X "
                          "(dataset.layer = \"\") holds 0.500000"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("set dataset.layer to the matrix holding the raw counts"),
            std::string::npos);
}
