// scssl-host as a user runs it: subcommands and their --help, the quickstart end to end, the run
// folders checked against docs/schema/*.json, and bad input.
#include <algorithm>
#include <filesystem>
#include <regex>

#include <sstream>

#include "json_schema.hpp"
#include "scssl/knn.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::edited_copy;
using scssl::test::run_command;

namespace {

std::string quickstart() { return scssl::test::repo_file("configs/quickstart.toml"); }

// Problems of a run folder's file against docs/schema/<schema>, one per line ("" when it conforms).
std::string schema_problems(const std::string& schema, const std::string& file) {
  return scssl::test::schema_problems(scssl::test::repo_file("docs/schema/" + schema), file);
}

std::string run_folder_of(const std::string& output) {
  std::smatch m;
  return std::regex_search(output, m, std::regex("run folder: (\\S+)")) ? m[1].str() : "";
}

// A folder with a file that must survive every failed run.
struct OutputFolder {
  std::string dir = scssl::test::temp_dir("out");
  std::string sentinel = dir + "/earlier-results.txt";
  OutputFolder() { std::ofstream(sentinel) << "keep me\n"; }
  bool intact() const { return scssl::test::read_text(sentinel) == "keep me\n"; }
};

void expect_clean_failure(const std::string& args, const std::string& must_mention) {
  OutputFolder out;
  auto r = run_command(scssl::test::host_command("run " + args + " --output " + out.dir));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(must_mention), std::string::npos)
      << "expected the message to mention '" << must_mention << "':\n"
      << r.output;
  EXPECT_TRUE(out.intact());
}

// The cells of a data set outside one batch (reference) and in it (query), by index.
struct ReferenceAndQuery {
  std::vector<int64_t> reference, query;
};
ReferenceAndQuery split_off(const scssl::CellData& data, const std::string& query_batch) {
  const scssl::Column& batches = data.require_batches("the test");
  const auto it = std::find(batches.categories.begin(), batches.categories.end(), query_batch);
  if (it == batches.categories.end()) throw std::runtime_error("no batch " + query_batch);
  ReferenceAndQuery split;
  for (int64_t i = 0; i < data.n_cells(); ++i)
    (batches.codes[i].item<int32_t>() == it - batches.categories.begin() ? split.query
                                                                         : split.reference)
        .push_back(i);
  return split;
}

}  // namespace

TEST(Cli, ListShowsThePluginsByKind) {
  auto r = run_command(scssl::test::host_command("list"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* s :
       {"datasets:", "h5ad", "synthetic", "methods:", "pca", "evaluators:", "knn_annotation"})
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
}

TEST(Cli, DescribeShowsEveryParameterWithTypeAndDefault) {
  auto r = run_command(scssl::test::host_command("describe pca"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("n_components\\s+int\\s+default 50")))
      << r.output;
  EXPECT_NE(run_command(scssl::test::host_command("describe no_such_plugin")).exit_code, 0);
}

TEST(Cli, ValidateAcceptsAGoodPluginAndRefusesABrokenOne) {
  auto good = run_command(
      scssl::test::host_command("validate " SCSSL_TEST_FIXTURE_DIR "/libfixture-good.so"));
  EXPECT_EQ(good.exit_code, 0) << good.output;
  auto bad = run_command(
      scssl::test::host_command("validate " SCSSL_TEST_FIXTURE_DIR "/libfixture-abi1.so"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("ABI 1"), std::string::npos) << bad.output;
}

// metrics.csv without its sixth column (the evaluators' wall times, which vary run to run).
std::string metric_values(const std::string& csv_path) {
  std::istringstream in(scssl::test::read_text(csv_path));
  std::string out;
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> fields;
    std::istringstream row(line);
    for (std::string f; std::getline(row, f, ',');) fields.push_back(f);
    if (fields.size() > 5) fields.erase(fields.begin() + 5);
    for (const auto& f : fields) out += f + ",";
    out += "\n";
  }
  return out;
}

TEST(Cli, QuickstartRunsEndToEndAndRepeatsWithTheSameSeed) {
  OutputFolder out;
  auto first = run_command(
      scssl::test::host_command("--quiet run " + quickstart() + " --output " + out.dir));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto second = run_command(
      scssl::test::host_command("--quiet run " + quickstart() + " --output " + out.dir));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  const std::string a = run_folder_of(first.output), b = run_folder_of(second.output);
  ASSERT_FALSE(a.empty());
  ASSERT_NE(a, b) << "a second run must not reuse the first run's folder";
  EXPECT_TRUE(out.intact());
  for (const char* f : {"config.resolved.toml", "metrics.json", "metrics.csv", "embedding.h5",
                        "run.json", "run.log", "kang2018_pbmc_ctrl_stim_4samples.h5ad"})
    EXPECT_TRUE(fs::exists(a + "/" + f)) << f;
  // The quick start's config is a batch-correction run: the scIB suite, no annotation.
  const std::string metrics = scssl::test::read_text(a + "/metrics.csv");
  EXPECT_NE(metrics.find("ilisi,ilisi,batch"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("knn_annotation"), std::string::npos) << metrics;
  EXPECT_EQ(metric_values(a + "/metrics.csv"), metric_values(b + "/metrics.csv"));
  // The copied .h5ad carries the embedding where anndata looks for it.
  torch::Tensor emb = scssl::test::read_obsm(a + "/kang2018_pbmc_ctrl_stim_4samples.h5ad", "X_pca");
  EXPECT_EQ(emb.size(0), 1556);
  EXPECT_EQ(emb.size(1), 50);
  const std::string run = scssl::test::read_text(a + "/run.json");
  EXPECT_NE(run.find("\"status\": \"ok\""), std::string::npos);
  EXPECT_NE(run.find("\"stage\": \"preprocess\""), std::string::npos);
  EXPECT_NE(run.find("\"libtorch\""), std::string::npos);
  // The documented run-folder format (docs/run-folder.md).
  EXPECT_EQ(schema_problems("run.schema.json", a + "/run.json"), "");
  EXPECT_EQ(schema_problems("metrics.schema.json", a + "/metrics.json"), "");
  const auto record = scssl::test::json_file(a + "/run.json");
  EXPECT_EQ(record["embedding"]["file"], "embedding.h5");
  EXPECT_EQ(record["versions"]["distance_kernels"], scssl::distance_kernels());
  EXPECT_EQ(record["neighbors"]["chosen_by"], "size") << "1556 cells are always searched exactly";
  EXPECT_EQ(record["data"]["n_cells"], 1556);
  EXPECT_EQ(record["data"]["protocol"], "batch_correction");
  EXPECT_EQ(record["data"]["n_query"], 0);
  const auto records = scssl::test::json_file(a + "/metrics.json");
  EXPECT_EQ(records.back()["metric"], "total");
  EXPECT_TRUE(records.back()["seconds"].is_null()) << "aggregates have no time: null, not NaN";
  // The resolved config reproduces the run.
  auto again = run_command(
      scssl::test::host_command("--quiet run " + a + "/config.resolved.toml --output " + out.dir));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(metric_values(a + "/metrics.csv"),
            metric_values(run_folder_of(again.output) + "/metrics.csv"));
  // Its second run, as tools/quickstart.sh makes it: stim107 held out, annotation only.
  auto query = run_command(
      scssl::test::host_command("--quiet run " + quickstart() +
                                " --set evaluation.protocol=query_mapping --output " + out.dir));
  ASSERT_EQ(query.exit_code, 0) << query.output;
  const std::string q = run_folder_of(query.output);
  const std::string query_metrics = scssl::test::read_text(q + "/metrics.csv");
  EXPECT_NE(query_metrics.find("knn_annotation,macro_f1,annotation"), std::string::npos)
      << query_metrics;
  EXPECT_EQ(query_metrics.find("ilisi"), std::string::npos) << query_metrics;
  const auto query_record = scssl::test::json_file(q + "/run.json");
  EXPECT_EQ(query_record["data"]["protocol"], "query_mapping");
  EXPECT_EQ(query_record["data"]["n_query"], 306);
  EXPECT_EQ(schema_problems("run.schema.json", q + "/run.json"), "");
}

TEST(Cli, ADistanceKernelPathTheCpuCannotRunIsRefusedBeforeTheRunFolder) {
  OutputFolder out;
  auto r = run_command("SCSSL_DISTANCE_KERNELS=avx1024 " +
                       scssl::test::host_command("run " + quickstart() + " --output " + out.dir));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("SCSSL_DISTANCE_KERNELS=avx1024"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("blas"), std::string::npos) << "the paths it can run: " << r.output;
  EXPECT_TRUE(out.intact());
  EXPECT_EQ(std::distance(fs::directory_iterator(out.dir), fs::directory_iterator()), 1)
      << "no run folder";
}

TEST(Cli, MissingConfigFile) {
  expect_clean_failure("/nonexistent/run.toml", "/nonexistent/run.toml");
}

TEST(Cli, MissingDataFile) {
  expect_clean_failure(quickstart() + " --set dataset.path=/nonexistent/data.h5ad",
                       "/nonexistent/data.h5ad");
}

TEST(Cli, MissingObsKey) {
  expect_clean_failure(quickstart() + " --set dataset.label_key=celltype", "celltype");
}

TEST(Cli, NotAnHdf5File) {
  const std::string path = scssl::test::temp_dir("text") + "/notes.h5ad";
  std::ofstream(path) << "these are notes, not data\n";
  expect_clean_failure(quickstart() + " --set dataset.path=" + path, "notes.h5ad");
}

TEST(Cli, TruncatedFile) {
  const std::string path = scssl::test::temp_dir("trunc") + "/truncated.h5ad";
  fs::copy_file(scssl::test::repo_file("tests/data/reference/triana_rna_adt.h5ad"), path);
  fs::resize_file(path, fs::file_size(path) / 2);
  expect_clean_failure(quickstart() + " --set dataset.path=" + path, "truncated.h5ad");
}

TEST(Cli, NaNInX) {
  const std::string path =
      edited_copy("with_nan", [](std::vector<float>& d, auto&, auto&) { d[5] = NAN; });
  expect_clean_failure(quickstart() + " --set dataset.path=" + path, "NaN");
}

TEST(Cli, NegativeCounts) {
  const std::string path =
      edited_copy("negative", [](std::vector<float>& d, auto&, auto&) { d[7] = -3; });
  expect_clean_failure(
      quickstart() + " --set dataset.path=" + path + " --set evaluation.query_batches=PBMC_200AB",
      "negative");
}

TEST(Cli, UnknownPlugin) {
  expect_clean_failure(quickstart() + " --set method.plugin=nope", "no method plugin named 'nope'");
}

TEST(Cli, UnknownParameter) {
  expect_clean_failure(quickstart() + " --set method.n_comps=3", "unknown parameter 'n_comps'");
}

TEST(Cli, ParameterOfTheWrongType) {
  expect_clean_failure(quickstart() + " --set method.n_components=many", "'n_components'");
}

TEST(Cli, UnknownHnswBuild) {
  expect_clean_failure(quickstart() + " --set evaluation.hnsw_build=fast", "evaluation.hnsw_build");
}

TEST(Cli, DeviceThatIsNotOneIsRefused) {
  expect_clean_failure(quickstart() + " --set run.device=tpu", "run.device");
}

// This test suite runs on a CPU-only LibTorch (CI has no GPU): a CUDA device is refused when the
// config is read, naming the setting, before anything runs.
TEST(Cli, CudaDeviceWithoutCudaIsRefusedBeforeTheRun) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has a CUDA device";
  expect_clean_failure(quickstart() + " --set run.device=cuda", "run.device");
  expect_clean_failure(quickstart() + " --set train.device=cuda:1", "train.device");
}

TEST(Cli, UnknownQueryBatch) {
  expect_clean_failure(quickstart() + " --set evaluation.query_batches=[\\\"stim999\\\"]",
                       "stim999");
}

TEST(Cli, EvaluatorNeedingQueryBatchesIsRefusedBeforeAnyRun) {
  OutputFolder out;
  auto r = run_command(scssl::test::host_command(
      "run " + quickstart() + " --set evaluation.query_batches=[] --output " + out.dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("must name the held-out batches"), std::string::npos) << r.output;
  // Refused while reading the config: no run folder was created.
  EXPECT_EQ(std::distance(fs::directory_iterator(out.dir), fs::directory_iterator()), 1);
}

// A query-mapping run (docs/evaluation.md, "Protocols") holds the query batch out before
// preprocessing. Moving every value of the query cells to other genes changes neither the genes
// chosen nor the trained model, so the reference cells' embedding stays the same to the bit.
// Under batch_correction the same change reaches the reference cells: the test can tell.
TEST(Protocol, QueryCellsInfluenceNeitherGeneSelectionNorTraining) {
  const std::string kang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";
  const ReferenceAndQuery cells =
      split_off(scssl::test::load_h5ad(scssl::test::repo_file(kang)), "stim107");
  const std::string changed = edited_copy(
      "kang_query_moved",
      [&](std::vector<float>& d, const std::vector<int64_t>& indptr, auto&) {
        for (int64_t cell : cells.query)
          std::reverse(d.begin() + indptr[cell], d.begin() + indptr[cell + 1]);
      },
      kang);
  const torch::Tensor ref_ids = torch::tensor(cells.reference),
                      query_ids = torch::tensor(cells.query);
  const std::string out = scssl::test::temp_dir("protocol");
  for (const std::string method : {"pca", "vicreg"}) {
    const std::string common =
        " --set preprocess.n_top_genes=400 --set run.threads=1"
        " --set train.epochs=2 --set evaluation.evaluators=[]";
    auto embedding = [&](const std::string& sets) {
      return scssl::test::run_embedding(
          scssl::test::run_config("configs/methods/" + method + ".toml", out, common + sets));
    };
    const std::string moved = " --set dataset.path=" + changed;
    const std::string mapping = " --set evaluation.protocol=query_mapping";
    const torch::Tensor a = embedding(mapping), b = embedding(mapping + moved);
    EXPECT_TRUE(a.index_select(0, ref_ids).equal(b.index_select(0, ref_ids))) << method;
    EXPECT_FALSE(a.index_select(0, query_ids).equal(b.index_select(0, query_ids))) << method;
    const std::string correction = " --set evaluation.protocol=batch_correction";
    const torch::Tensor c = embedding(correction), d = embedding(correction + moved);
    EXPECT_FALSE(c.index_select(0, ref_ids).equal(d.index_select(0, ref_ids))) << method;
  }
}

// evaluation.query_modality = "predicted" (docs/evaluation.md, "The query with a predicted
// modality"): the query is embedded with proteins predicted from its reference neighbours, so its
// measured proteins never reach the embedding. Changing them leaves the embedding the same to the
// bit, while the same change moves the query's embedding in a "measured" run (the test can tell).
// The reference is embedded as in a measured run; the query is not.
TEST(Protocol, APredictedQueryModalityNeverReadsTheQuerysMeasuredProteins) {
  const std::string triana = "datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad";
  const scssl::CellData data = scssl::test::load_h5ad(scssl::test::repo_file(triana));
  ASSERT_EQ(data.modalities.size(), 2u);
  ASSERT_EQ(data.modalities[1].name, "ADT");
  // The file's features are the RNA genes, then the proteins (datasets/triana_rna_adt/README.md).
  const auto first_protein = static_cast<int64_t>(data.modalities[0].features.size());
  const ReferenceAndQuery cells = split_off(data, "PBMC_200AB");
  const std::string changed = edited_copy(
      "triana_query_proteins_changed",
      [&](std::vector<float>& d, const std::vector<int64_t>& indptr,
          const std::vector<int64_t>& indices) {
        for (int64_t cell : cells.query)
          for (int64_t e = indptr[cell]; e < indptr[cell + 1]; ++e)
            if (indices[e] >= first_protein) d[e] = 3 * d[e] + 1;
      },
      triana);
  const std::string out = scssl::test::temp_dir("predicted-modality");
  auto run = [&](const std::string& query_modality, const std::string& path) {
    return scssl::test::run_config(
        "configs/methods/vicreg.toml", out,
        " --set dataset.path=" + path +
            " --set evaluation.query_batches=PBMC_200AB"
            " --set 'evaluation.evaluators=[\"knn_annotation\"]' --set method.multimodal=true"
            " --set train.batch_size=64 --set train.epochs=2 --set run.threads=1"
            " --set evaluation.query_modality=" +
            query_modality);
  };
  const std::string original = scssl::test::repo_file(triana);
  const std::string predicted = run("predicted", original);
  const torch::Tensor a = scssl::test::run_embedding(predicted),
                      b = scssl::test::run_embedding(run("predicted", changed));
  EXPECT_TRUE(a.equal(b)) << "the query's measured proteins reached the embedding";
  const torch::Tensor c = scssl::test::run_embedding(run("measured", original)),
                      d = scssl::test::run_embedding(run("measured", changed));
  const torch::Tensor ref_ids = torch::tensor(cells.reference),
                      query_ids = torch::tensor(cells.query);
  EXPECT_FALSE(c.index_select(0, query_ids).equal(d.index_select(0, query_ids)));
  EXPECT_TRUE(a.index_select(0, ref_ids).equal(c.index_select(0, ref_ids)));
  EXPECT_FALSE(a.index_select(0, query_ids).equal(c.index_select(0, query_ids)));

  const auto record = scssl::test::json_file(predicted + "/run.json");
  EXPECT_EQ(record["data"]["query_modality"], "predicted");
  EXPECT_EQ(schema_problems("run.schema.json", predicted + "/run.json"), "");
  const std::string metrics = scssl::test::read_text(predicted + "/metrics.csv");
  EXPECT_NE(metrics.find("knn_annotation,macro_f1,annotation"), std::string::npos) << metrics;
  EXPECT_NE(scssl::test::read_text(predicted + "/run.log").find("ADT predicted from 5 reference"),
            std::string::npos);
}

TEST(Cli, APredictedQueryModalityNeedsAModelOfTwoModalities) {
  expect_clean_failure(quickstart() +
                           " --set evaluation.query_modality=predicted"
                           " --set evaluation.protocol=query_mapping",
                       "method 'pca' lacks them");
  expect_clean_failure(scssl::test::repo_file("configs/methods/vicreg.toml") +
                           " --set evaluation.query_modality=predicted",
                       "set method.multimodal = true");
  expect_clean_failure(quickstart() + " --set evaluation.query_modality=predicted",
                       "needs evaluation.protocol = \"query_mapping\"");
}

TEST(Cli, UsageErrorsExitWithTwo) {
  EXPECT_EQ(run_command(scssl::test::host_command("frobnicate")).exit_code, 2);
  EXPECT_EQ(run_command(scssl::test::host_command("describe")).exit_code, 2);
  EXPECT_EQ(run_command(scssl::test::host_command("list extra")).exit_code, 2);
  EXPECT_EQ(run_command(std::string(SCSSL_TEST_HOST) + " --no-such-option list").exit_code, 2);
}

// `evaluate` scores stored obsm embeddings with the same evaluators as a run, one run-style folder
// per embedding, plus a comparison table (here with min-max scaling across the two).
TEST(Cli, EvaluateScoresStoredEmbeddings) {
  OutputFolder out;
  const std::string data = scssl::test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad");
  auto r = run_command(scssl::test::host_command(
      "--quiet evaluate " + data +
      " -e X_pca -e X_batchcentered --unintegrated-key X_pca"
      " --evaluators ilisi,silhouette_label,pcr_comparison --min-max-scale --output " +
      out.dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("results: (\\S+)"))) << r.output;
  const std::string dir = m[1].str();
  for (const char* f :
       {"config.resolved.toml", "run.json", "run.log", "comparison.csv", "X_pca/metrics.csv",
        "X_pca/metrics.json", "X_pca/run.json", "X_batchcentered/metrics.csv"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  EXPECT_TRUE(out.intact());
  // Centring each batch mixes the batches: iLISI rises; PCR against X_pca itself is 0.
  auto value = [&](const std::string& key, const std::string& metric) {
    std::istringstream in(scssl::test::read_text(dir + "/" + key + "/metrics.csv"));
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> cells;
      std::stringstream row(line);
      for (std::string c; std::getline(row, c, ',');) cells.push_back(c);
      if (cells.size() >= 5 && cells[1] == metric) return std::stod(cells[4]);
    }
    ADD_FAILURE() << metric << " missing for " << key;
    return 0.0;
  };
  EXPECT_GT(value("X_batchcentered", "ilisi"), value("X_pca", "ilisi"));
  EXPECT_NEAR(value("X_pca", "pcr_comparison"), 0.0, 1e-9);
  const std::string comparison = scssl::test::read_text(dir + "/comparison.csv");
  EXPECT_EQ(comparison.rfind("embedding,", 0), 0u) << comparison;
  EXPECT_NE(comparison.find("ilisi_scaled"), std::string::npos) << comparison;
  EXPECT_NE(comparison.find("\nX_batchcentered,"), std::string::npos) << comparison;
  EXPECT_NE(scssl::test::read_text(dir + "/X_pca/run.json").find("\"backend\": \"exact\""),
            std::string::npos);
  for (const char* f : {"run.json", "X_pca/run.json", "X_batchcentered/run.json"})
    EXPECT_EQ(schema_problems("run.schema.json", dir + "/" + f), "");
  EXPECT_EQ(schema_problems("metrics.schema.json", dir + "/X_pca/metrics.json"), "");
  EXPECT_TRUE(scssl::test::json_file(dir + "/X_pca/run.json")["embedding"]["file"].is_null());
}

TEST(Cli, EvaluateNamesAMissingObsmKeyAndTheKeysThereAre) {
  OutputFolder out;
  const std::string data = scssl::test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad");
  auto r =
      run_command(scssl::test::host_command("evaluate " + data + " -e X_scvi --output " + out.dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("obsm['X_scvi'] does not exist"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("X_batchcentered"), std::string::npos) << r.output;
  EXPECT_TRUE(out.intact());
}

// `evaluate --graph`: the neighbours stored in obsp (scanpy's layout) instead of a search. The
// fixture's graph is the exact 15-neighbour graph of X_pca, so the graph metrics agree with a
// search; a metric needing more neighbours than stored is refused with both numbers.
TEST(Cli, EvaluateTakesAStoredNeighbourGraph) {
  OutputFolder out;
  const std::string data = scssl::test::repo_file("tests/data/degenerate/embeddings.h5ad");
  auto score = [&](const std::string& extra) {
    auto r = run_command(scssl::test::host_command(
        "--quiet evaluate " + data + " -e X_pca --evaluators graph_connectivity --output " +
        out.dir + " " + extra));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::smatch m;
    EXPECT_TRUE(std::regex_search(r.output, m, std::regex("results: (\\S+)"))) << r.output;
    return m[1].str() + "/X_pca";
  };
  const std::string given = score("--graph distances"), searched = score("");
  auto connectivity = [](const std::string& dir) {
    for (const auto& m : scssl::test::json_file(dir + "/metrics.json"))
      if (m["metric"] == "graph_connectivity") return m["value"].get<double>();
    return -1.0;
  };
  EXPECT_DOUBLE_EQ(connectivity(given), connectivity(searched));
  const auto record = scssl::test::json_file(given + "/run.json")["neighbors"];
  EXPECT_EQ(record["backend"], "given");
  EXPECT_EQ(record["chosen_by"], "obsp");
  EXPECT_EQ(record["k"], 15);
  EXPECT_EQ(schema_problems("run.schema.json", given + "/run.json"), "");

  auto refused = [&](const std::string& args, const std::string& must_mention) {
    auto r = run_command(scssl::test::host_command("--quiet evaluate " + data + " " + args +
                                                   " --output " + out.dir));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(must_mention), std::string::npos) << r.output;
  };
  refused("-e X_pca --graph distances --evaluators ilisi",
          "needs 90 neighbours per cell (the cell itself included), but");
  refused("-e X_pca --graph distances --evaluators ilisi", "obsp['distances'] holds 15");
  refused("-e X_pca --graph connectivities --evaluators ilisi",
          "obsp['connectivities'] does not exist (obsp keys: distances)");
  refused("-e X_pca -e X_duplicated --graph distances", "score them one at a time");
  EXPECT_TRUE(out.intact());
}

TEST(Cli, EvaluateWithoutEmbeddingIsAUsageError) {
  const std::string data = scssl::test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad");
  auto r = run_command(scssl::test::host_command("evaluate " + data));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("embedding"), std::string::npos) << r.output;
}

// The checker itself refuses what the schemas rule out, so that the checks above can fail.
TEST(Cli, RunFolderSchemaCheckerFindsProblems) {
  const scssl::test::SchemaChecker checker(
      scssl::test::json_file(scssl::test::repo_file("docs/schema/metrics.schema.json")));
  const auto bad = nlohmann::ordered_json::parse(
      R"([{"evaluator": "e", "metric": "m", "group": "biology", "higher_is_better": true, "value": "0.5",
          "seconds": null, "extra": 1}])");
  const auto problems = checker.check(bad);
  std::string all;
  for (const auto& p : problems) all += p + "\n";
  EXPECT_EQ(problems.size(), 3u) << all;
  EXPECT_NE(all.find("$[0].group"), std::string::npos) << all;
  EXPECT_NE(all.find("$[0].value"), std::string::npos) << all;
  EXPECT_NE(all.find("'extra'"), std::string::npos) << all;
}

// `COMMAND --help` prints that command's own options (not the global usage) and exits with 0; the
// same for the tool programs started directly.
TEST(Cli, EveryCommandAnswersHelpWithItsOwnOptions) {
  const fs::path bin = fs::path(SCSSL_TEST_HOST).parent_path();
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"evaluate",
       {"Usage: scssl-host evaluate", "--unintegrated-key", "--min-max-scale", "--embedding",
        "--evaluators", "--query-batches", "--batch-key", "--label-key"}},
      {"run", {"Usage: scssl-host run", "--set", "--output", "--run-dir"}},
      {"validate", {"Usage: scssl-host validate FILE.so"}},
      {"list", {"Usage: scssl-host list"}},
      {"describe", {"Usage: scssl-host describe NAME"}},
      {"sweep", {"Usage: scssl-sweep", "--executor", "--workers", "--dry-run", "--plugins"}},
      {"report",
       {"Usage: scssl-report", "--min-max-scale", "--rows", "--layout-cells", "--title",
        "--assets"}},
      {"fetch", {"Usage: scssl-fetch", "--into", "--force"}}};
  for (const auto& [command, expected] : cases) {
    if (command == "fetch" && !fs::exists(bin / "scssl-fetch"))
      continue;  // built only with libcurl
    for (const std::string& line : {scssl::test::host_command(command + " --help"),
                                    (bin / ("scssl-" + command)).string() + " --help"}) {
      if (line.find("scssl-" + command + " --help") != std::string::npos &&
          !fs::exists(bin / ("scssl-" + command)))
        continue;  // list, run, ... are scssl-host's own
      auto r = run_command(line);
      EXPECT_EQ(r.exit_code, 0) << line << "\n" << r.output;
      for (const auto& e : expected)
        EXPECT_NE(r.output.find(e), std::string::npos) << line << ": no " << e << "\n" << r.output;
      EXPECT_EQ(r.output.find("Commands:"), std::string::npos)
          << line << " printed the global usage";
      EXPECT_NE(r.output.find("--quiet"), std::string::npos) << line;
    }
  }
}

// sweep, report and fetch are programs of their own; scssl-host starts them and passes the exit
// code.
TEST(Cli, ToolCommandsForwardToTheirPrograms) {
  auto r = run_command(scssl::test::host_command("report /nonexistent/runs -o /nonexistent/out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/runs"), std::string::npos) << r.output;
  r = run_command(scssl::test::host_command("sweep"));
  EXPECT_EQ(r.exit_code, 2) << "a usage error of scssl-sweep: " << r.output;
  const fs::path bin = fs::path(SCSSL_TEST_HOST).parent_path();
  for (const char* program : {"scssl-sweep", "scssl-report"}) {
    r = run_command((bin / program).string() + " --version");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find(std::string(program) + " " SCSSL_VERSION), std::string::npos)
        << r.output;
  }
}
