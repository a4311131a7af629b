// scssl-sweep through `scssl-host sweep`: grid expansion with stable run ids, the local executor
// (one process per run), resume, failure isolation, validation before any run, combined configs
// and include groups, the Slurm job script, and the sweep and run folders it leaves checked
// against docs/schema/*.json.
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "json_schema.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::json_file;
using scssl::test::read_text;
using scssl::test::run_command;

namespace {

// A sweep over PCA and a one-epoch VICReg on the bundled Kang file, scored by annotation only.
std::string write_sweep(const std::string& dir, const std::string& extra = "") {
  const std::string path = dir + "/sweep.toml";
  std::ofstream(path)
      << "[sweep]\nname = \"smoke\"\nseeds = [0, 1]\nworkers = 2\n"
      << "set = [\"train.epochs=1\", 'evaluation.evaluators=[\"knn_annotation\"]']\n"
      << extra << "\n[[axis]]\nname = \"method\"\nconfigs = [\""
      << scssl::test::repo_file("configs/methods/pca.toml") << "\", \""
      << scssl::test::repo_file("configs/methods/vicreg.toml") << "\"]\n";
  return path;
}

std::vector<std::vector<std::string>> csv_rows(const std::string& path) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(read_text(path));
  for (std::string line; std::getline(in, line);) {
    rows.emplace_back();
    std::stringstream row(line);
    for (std::string c; std::getline(row, c, ',');) rows.back().push_back(c);
  }
  return rows;
}

// The plugins of a resolved run config's [[augmentation]] sections, in order.
std::vector<std::string> augmentation_plugins(const std::string& config) {
  const std::string text = read_text(config);
  const std::regex section("\\[\\[augmentation\\]\\][^\\[]*plugin = '(\\w+)'");
  std::vector<std::string> out;
  for (std::sregex_iterator m(text.begin(), text.end(), section), end; m != end; ++m)
    out.push_back((*m)[1].str());
  return out;
}

// Problems of a file against docs/schema/<schema>, one per line.
std::string schema_problems(const std::string& schema, const std::string& file) {
  return scssl::test::schema_problems(scssl::test::repo_file("docs/schema/" + schema), file);
}

}  // namespace

TEST(Sweep, RunsTheGridLocallyAndResumes) {
  const std::string dir = scssl::test::temp_dir("sweep");
  const std::string file = write_sweep(dir);
  auto first = run_command(scssl::test::host_command("sweep " + file + " --output " + dir));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("4 runs: 4 ok (0 of them complete before)"), std::string::npos)
      << first.output;
  const auto rows = csv_rows(dir + "/smoke/results.csv");
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0][0], "id");
  EXPECT_EQ(rows[0][2], "protocol");
  EXPECT_EQ(rows[0][4], "method");
  std::set<std::string> ids;
  for (size_t i = 1; i < rows.size(); ++i) {
    ids.insert(rows[i][0]);
    EXPECT_EQ(rows[i][2], "query_mapping") << "the config holds out stim107";
    EXPECT_EQ(rows[i][5], "ok");
    EXPECT_TRUE(fs::exists(dir + "/smoke/runs/" + rows[i][0] + "/metrics.csv")) << rows[i][0];
  }
  EXPECT_EQ(ids.size(), 4u) << "every grid point and seed has its own id";
  // PCA does not depend on the seed: both seeds give the same macro-F1.
  const auto macro_f1 = std::find(rows[0].begin(), rows[0].end(), "macro_f1") - rows[0].begin();
  EXPECT_EQ(rows[1][4], "pca");
  EXPECT_EQ(rows[1][macro_f1], rows[2][macro_f1]);
  const auto sweep = json_file(dir + "/smoke/sweep.json");
  ASSERT_EQ(sweep["runs"].size(), 4u);
  EXPECT_EQ(sweep["runs"][0]["labels"].begin().key(), "dataset") << "labels in their order";
  EXPECT_EQ(sweep["runs"][0]["labels"]["method"], "pca");
  EXPECT_EQ(sweep["runs"][0]["status"], "ok");
  EXPECT_TRUE(sweep["runs"][0]["error"].is_null());
  EXPECT_EQ(schema_problems("sweep.schema.json", dir + "/smoke/sweep.json"), "");
  for (size_t i = 1; i < rows.size(); ++i) {
    const std::string run = dir + "/smoke/runs/" + rows[i][0];
    EXPECT_EQ(schema_problems("run.schema.json", run + "/run.json"), "");
    EXPECT_EQ(schema_problems("metrics.schema.json", run + "/metrics.json"), "");
  }

  // Again: same ids, nothing rerun.
  auto second = run_command(scssl::test::host_command("sweep " + file + " --output " + dir));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("4 runs: 4 ok (4 of them complete before)"), std::string::npos)
      << second.output;
  const auto again = csv_rows(dir + "/smoke/results.csv");
  for (size_t i = 1; i < rows.size(); ++i) EXPECT_EQ(again[i][0], rows[i][0]);

  // A run whose process died mid-way leaves run.json saying "running": the next sweep reruns it and
  // keeps the old folder aside.
  const std::string killed = dir + "/smoke/runs/" + rows[1][0];
  auto record = json_file(killed + "/run.json");
  record["status"] = "running";
  std::ofstream(killed + "/run.json") << record.dump(2);
  auto third = run_command(scssl::test::host_command("sweep " + file + " --output " + dir));
  ASSERT_EQ(third.exit_code, 0) << third.output;
  EXPECT_NE(third.output.find("4 runs: 4 ok (3 of them complete before)"), std::string::npos)
      << third.output;
  EXPECT_EQ(json_file(killed + ".previous/run.json")["status"], "running");
  EXPECT_EQ(json_file(killed + "/run.json")["status"], "ok");

  // Every run was isolated (run.isolate is on in sweeps); turned off, the run ids stay the same.
  for (size_t i = 1; i < rows.size(); ++i)
    EXPECT_NE(read_text(dir + "/smoke/runs/" + rows[i][0] + "/config.resolved.toml")
                  .find("isolate = true"),
              std::string::npos);
  std::string text = read_text(file);
  text.replace(text.find("set = ["), 7, "set = [\"run.isolate=false\", ");
  std::ofstream(dir + "/not-isolated.toml") << text;
  auto fourth = run_command(scssl::test::host_command(
      "sweep " + dir + "/not-isolated.toml --dry-run --output " + dir + "/not-isolated"));
  ASSERT_EQ(fourth.exit_code, 0) << fourth.output;
  const auto planned = csv_rows(dir + "/not-isolated/smoke/results.csv");
  ASSERT_EQ(planned.size(), rows.size());
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(planned[i][0], rows[i][0]);
    EXPECT_NE(read_text(dir + "/not-isolated/smoke/configs/" + rows[i][0] + ".toml")
                  .find("isolate = false"),
              std::string::npos);
  }
}

// `protocols` runs every grid point and seed under each protocol: the scIB evaluators in the
// batch-correction runs (trained on every cell), annotation in the query-mapping runs.
TEST(Sweep, ProtocolsRunEachGridPointUnderEach) {
  const std::string dir = scssl::test::temp_dir("sweep-protocols");
  const std::string path = dir + "/sweep.toml";
  std::ofstream(path)
      << "[sweep]\nname = \"both\"\nprotocols = [\"batch_correction\", "
         "\"query_mapping\"]\n"
      << "set = ['evaluation.evaluators=[\"knn_annotation\", \"silhouette_batch\"]']\n"
      << "base = \"" << scssl::test::repo_file("configs/methods/pca.toml") << "\"\n";
  auto r = run_command(scssl::test::host_command("sweep " + path + " --output " + dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto sweep = json_file(dir + "/both/sweep.json");
  ASSERT_EQ(sweep["runs"].size(), 2u);
  for (const auto& run : sweep["runs"]) {
    const std::string folder = dir + "/both/" + run["dir"].get<std::string>();
    const std::string metrics = read_text(folder + "/metrics.csv");
    const bool query = run["protocol"] == "query_mapping";
    EXPECT_EQ(metrics.find("macro_f1") != std::string::npos, query) << metrics;
    EXPECT_EQ(metrics.find("silhouette_batch") != std::string::npos, !query) << metrics;
    const auto record = json_file(folder + "/run.json");
    EXPECT_EQ(record["data"]["protocol"], run["protocol"]);
    EXPECT_EQ(record["data"]["n_query"], query ? 306 : 0);
  }
  EXPECT_NE(sweep["runs"][0]["protocol"], sweep["runs"][1]["protocol"]);
  EXPECT_EQ(schema_problems("sweep.schema.json", dir + "/both/sweep.json"), "");
}

TEST(Sweep, AFailingRunIsRecordedAndTheOthersGoOn) {
  const std::string dir = scssl::test::temp_dir("sweep-failing");
  // The second data file does not exist: only the run itself can find that out.
  const std::string file = write_sweep(
      dir,
      "\n[[axis]]\nname = \"data\"\nkey = \"dataset.path\"\nvalues = [\"" +
          scssl::test::repo_file("datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad") +
          "\", \"/nonexistent/cells.h5ad\"]\n");
  auto r = run_command(scssl::test::host_command("sweep " + file + " --output " + dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("8 runs: 4 ok"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("4 failed"), std::string::npos) << r.output;
  const std::string results = read_text(dir + "/smoke/results.csv");
  EXPECT_NE(results.find("/nonexistent/cells.h5ad"), std::string::npos) << "the error is recorded";
}

TEST(Sweep, AnUnknownParameterIsRefusedBeforeAnyRunWithItsLine) {
  const std::string dir = scssl::test::temp_dir("sweep-bad");
  const std::string file = dir + "/bad.toml";
  std::ofstream(file)
      << "[sweep]\nname = \"bad\"\n\n[[axis]]\nname = \"width\"\nkey = \"method.hidden_dimz\"\n"
      << "values = [8, 16]\n\n[[axis]]\nname = \"method\"\nconfigs = [\""
      << scssl::test::repo_file("configs/methods/vicreg.toml") << "\"]\n";
  auto r = run_command(scssl::test::host_command("sweep " + file + " --output " + dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("hidden_dimz"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bad.toml:6"), std::string::npos) << "names the axis line: " << r.output;
  EXPECT_FALSE(fs::exists(dir + "/bad")) << "nothing is written before every run is valid";

  std::ofstream(file) << "[sweep]\nname = \"bad\"\nseeds = [0, -1]\n";
  r = run_command(scssl::test::host_command("sweep " + file + " --output " + dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("bad.toml:3: sweep.seeds"), std::string::npos) << r.output;
}

TEST(Sweep, SlurmDryRunWritesAJobArrayAndMissingSbatchSuggestsLocal) {
  const std::string dir = scssl::test::temp_dir("sweep-slurm");
  const std::string file = write_sweep(dir, "\n[slurm]\npartition = \"debug\"\nmax_parallel = 2\n");
  auto r = run_command(
      scssl::test::host_command("sweep " + file + " --executor slurm --dry-run --output " + dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string job = read_text(dir + "/smoke/slurm/job.sh");
  EXPECT_NE(job.find("#SBATCH --array=0-3%2"), std::string::npos) << job;
  EXPECT_NE(job.find("#SBATCH --partition=debug"), std::string::npos) << job;
  EXPECT_EQ(csv_rows(dir + "/smoke/slurm/runs.tsv").size(), 4u);

  r = run_command("env PATH=/nonexistent " +
                  scssl::test::host_command("sweep " + file + " --executor slurm --output " + dir));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("needs 'sbatch'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--executor local"), std::string::npos) << r.output;
}

// configs/experiments/augmentation_pairs.toml: `combine = 2` makes every pair of the six
// augmentations, each pair's [[augmentation]] lists concatenated in the order the axis lists them
// (graph augmentation first, then mask, gauss, innerswap, crossover: docs/sweeps.md).
TEST(Sweep, CombineMakesEveryPairWithTheirAugmentationListsConcatenatedInOrder) {
  const std::string out = scssl::test::temp_dir("sweep-pairs");
  auto r = run_command(scssl::test::host_command(
      "--quiet sweep " + scssl::test::repo_file("configs/experiments/augmentation_pairs.toml") +
      " --dry-run --output " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto sweep = json_file(out + "/augmentation_pairs/sweep.json");
  const std::vector<std::string> order = {"mnn",   "bbknn",     "mask",
                                          "gauss", "innerswap", "crossover"};
  std::vector<std::string> pairs;
  for (size_t i = 0; i < order.size(); ++i)
    for (size_t j = i + 1; j < order.size(); ++j) pairs.push_back(order[i] + " + " + order[j]);
  ASSERT_EQ(pairs.size(), 15u);
  // 15 pairs x 3 seeds x 2 protocols, in grid order: each pair's six runs follow one another.
  ASSERT_EQ(sweep["runs"].size(), 15u * 3 * 2);
  std::map<std::pair<int64_t, std::string>, std::vector<std::string>> labels_by_replicate;
  for (size_t i = 0; i < sweep["runs"].size(); ++i) {
    const auto& run = sweep["runs"][i];
    const std::string label = run["labels"]["augmentation"];
    EXPECT_EQ(label, pairs[i / 6]) << i;
    labels_by_replicate[{run["seed"].get<int64_t>(), run["protocol"].get<std::string>()}].push_back(
        label);
    const std::vector<std::string> expected = {label.substr(0, label.find(" + ")),
                                               label.substr(label.find(" + ") + 3)};
    EXPECT_EQ(augmentation_plugins(out + "/augmentation_pairs/configs/" +
                                   run["id"].get<std::string>() + ".toml"),
              expected)
        << label << ": the pair replaces the base config's pipeline, in the listed order";
  }
  ASSERT_EQ(labels_by_replicate.size(), 6u) << "three seeds under two protocols";
  for (const auto& [replicate, labels] : labels_by_replicate) EXPECT_EQ(labels, pairs);
}

// An include group ([a, b] inside `include`) concatenates its files' [[augmentation]] lists
// (docs/config-reference.md, "include"); a plain include still replaces them.
TEST(Sweep, AnIncludeGroupConcatenatesAugmentationLists) {
  const std::string dir = scssl::test::temp_dir("sweep-group");
  const std::string vicreg = scssl::test::repo_file("configs/methods/vicreg.toml");
  auto aug = [](const std::string& name) {
    return "\"" + scssl::test::repo_file("configs/augmentations/" + name + ".toml") + "\"";
  };
  const std::map<std::string, std::string> includes = {
      {"appended", "[[\"" + vicreg + "\", " + aug("only_mnn") + "]]"},
      {"pair", "[\"" + vicreg + "\", [" + aug("only_gauss") + ", " + aug("only_mask") + "]]"},
      {"replaced", "[\"" + vicreg + "\", " + aug("only_gauss") + ", " + aug("only_mask") + "]"}};
  const std::map<std::string, std::vector<std::string>> expected = {
      {"appended", {"mask", "gauss", "innerswap", "crossover", "mnn"}},
      {"pair", {"gauss", "mask"}},
      {"replaced", {"mask"}}};
  for (const auto& [name, include] : includes) {
    std::ofstream(dir + "/" + name + ".toml") << "include = " << include << "\n";
    std::ofstream(dir + "/" + name + "-sweep.toml")
        << "[sweep]\nname = \"" << name << "\"\nbase = \"" << name << ".toml\"\n";
    auto r = run_command(scssl::test::host_command("--quiet sweep " + dir + "/" + name +
                                                   "-sweep.toml --dry-run --output " + dir));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto sweep = json_file(dir + "/" + name + "/sweep.json");
    EXPECT_EQ(augmentation_plugins(dir + "/" + name + "/configs/" +
                                   sweep["runs"][0]["id"].get<std::string>() + ".toml"),
              expected.at(name))
        << name;
  }
  std::ofstream(dir + "/empty.toml") << "include = [\"" << vicreg << "\", []]\n";
  std::ofstream(dir + "/empty-sweep.toml") << "[sweep]\nname = \"empty\"\nbase = \"empty.toml\"\n";
  auto r = run_command(scssl::test::host_command("sweep " + dir + "/empty-sweep.toml --dry-run"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("empty.toml: 'include' has an empty group"), std::string::npos)
      << r.output;
}

TEST(Sweep, CombineIsRefusedWhereItCannotApplyWithItsLine) {
  const std::string dir = scssl::test::temp_dir("sweep-combine-bad");
  const std::string file = dir + "/bad.toml";
  const std::string configs = "configs = [\"" + scssl::test::repo_file("configs/methods/pca.toml") +
                              "\", \"" + scssl::test::repo_file("configs/methods/vicreg.toml") +
                              "\"]\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"key = \"method.hidden_dim\"\nvalues = [8, 16]\ncombine = 2\n",
       "bad.toml:8: axis 'a' combine needs configs"},
      {configs + "combine = 3\n",
       "bad.toml:7: axis 'a' combine must be an integer from 1 to the "
       "number of configs (2)"},
      {configs + "combine = \"two\"\n", "bad.toml:7: axis 'a' combine must be an integer"},
      {configs + "labels = [\"pca\"]\ncombine = 2\n", "needs one label per config"}};
  for (const auto& [axis, message] : cases) {
    std::ofstream(file) << "[sweep]\nname = \"bad\"\n\n[[axis]]\nname = \"a\"\n" << axis;
    auto r = run_command(scssl::test::host_command("sweep " + file + " --output " + dir));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_NE(r.output.find(message), std::string::npos) << axis << "\n" << r.output;
    EXPECT_FALSE(fs::exists(dir + "/bad"));
  }
}

// Every experiment of configs/experiments/ expands and validates (a dry run starts nothing).
TEST(Sweep, EveryExperimentFileIsValid) {
  const std::string out = scssl::test::temp_dir("sweep-experiments");
  int files = 0;
  for (const auto& e : fs::directory_iterator(scssl::test::repo_file("configs/experiments"))) {
    if (e.path().extension() != ".toml") continue;
    ++files;
    auto r = run_command(scssl::test::host_command("--quiet sweep " + e.path().string() +
                                                   " --dry-run --output " + out));
    EXPECT_EQ(r.exit_code, 0) << e.path().filename() << ":\n" << r.output;
  }
  EXPECT_GE(files, 10);
}
