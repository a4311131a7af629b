// scssl-report through `scssl-host report`: tables that are the seed means of real runs, failed
// runs listed and not averaged, bad folders refused, the neighbours the UMAP maps start from, and
// the page opened in headless Chromium with its maps drawn.
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include "json_schema.hpp"
#include "report.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::read_text;
using scssl::test::run_command;

namespace {

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream in(line);
  for (std::string c; std::getline(in, c, ',');) cells.push_back(c);
  if (!line.empty() && line.back() == ',') cells.push_back("");
  return cells;
}

// A CSV as one map per line, column name -> text.
std::vector<std::map<std::string, std::string>> read_csv(const std::string& path) {
  std::istringstream in(read_text(path));
  std::string line;
  std::getline(in, line);
  const auto header = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const auto cells = split(line);
    std::map<std::string, std::string> row;
    for (size_t i = 0; i < header.size() && i < cells.size(); ++i) row[header[i]] = cells[i];
    rows.push_back(row);
  }
  return rows;
}

// metric -> value of a run's metrics.csv.
std::map<std::string, double> metrics_of(const std::string& run_dir) {
  std::map<std::string, double> out;
  for (const auto& row : read_csv(run_dir + "/metrics.csv"))
    out[row.at("metric")] = std::stod(row.at("value"));
  return out;
}

double fit_seconds_of(const std::string& run_dir) {
  const auto record = scssl::test::json_file(run_dir + "/run.json");
  for (const auto& stage : record["stages"])
    if (stage["stage"] == "fit") return stage["wall_seconds"].get<double>();
  ADD_FAILURE() << run_dir << " has no fit stage";
  return std::nan("");
}

double mean(double a, double b) { return (a + b) / 2; }
double sd(double a, double b) { return std::abs(a - b) / std::sqrt(2.0); }

const std::map<std::string, std::string>& row_of(
    const std::vector<std::map<std::string, std::string>>& rows, const std::string& column,
    const std::string& value) {
  for (const auto& r : rows)
    if (r.at(column) == value) return r;
  static const std::map<std::string, std::string> none;
  ADD_FAILURE() << "no row with " << column << " = " << value;
  return none;
}

double number(const std::map<std::string, std::string>& row, const std::string& column) {
  auto it = row.find(column);
  if (it == row.end()) {
    ADD_FAILURE() << "no column " << column;
    return std::nan("");
  }
  return std::stod(it->second);
}

const char* kDataset = "kang";

// Quick real runs (PCA and 2-epoch VICReg, seeds 0 and 1), each under both protocols as a sweep
// with `protocols` makes them, in a hand-written sweep folder with a failed and a pending entry,
// and the report made from it once for the whole suite.
class Report : public ::testing::Test {
 protected:
  static inline std::string sweep_dir, report_dir;
  // method -> run folders by seed: batch correction (in runs/) and query mapping (query_runs/)
  static inline std::map<std::string, std::vector<std::string>> runs, query_runs;

  static void SetUpTestSuite() {
    sweep_dir = scssl::test::temp_dir("report-sweep");
    const std::string evaluators =
        " --set "
        "'evaluation.evaluators=[\"knn_annotation\",\"silhouette_label\",\"silhouette_batch\","
        "\"graph_connectivity\"]'";
    std::string entries;
    for (const std::string method : {"pca", "vicreg"})
      for (int seed : {0, 1})
        for (const std::string protocol : {"batch_correction", "query_mapping"}) {
          const bool query = protocol == "query_mapping";
          const std::string config = scssl::test::repo_file("configs/methods/" + method + ".toml");
          auto r = run_command(scssl::test::host_command(
              "--quiet run " + config + evaluators + " --set run.seed=" + std::to_string(seed) +
              " --set evaluation.protocol=" + protocol + " --set train.epochs=2 --output " +
              sweep_dir + (query ? "/query_runs" : "/runs")));
          ASSERT_EQ(r.exit_code, 0) << r.output;
          std::smatch m;
          ASSERT_TRUE(std::regex_search(r.output, m, std::regex("run folder: (\\S+)"))) << r.output;
          (query ? query_runs : runs)[method].push_back(m[1].str());
          const std::string rel = fs::relative(m[1].str(), sweep_dir).string();
          entries += "    {\"id\": \"" + method + std::to_string(seed) + protocol +
                     "\", \"dir\": \"" + rel + "\", \"seed\": " + std::to_string(seed) +
                     ", \"protocol\": \"" + protocol + "\", \"labels\": {\"dataset\": \"" +
                     kDataset + "\", \"method\": \"" + method + "\", \"augmentation\": \"" +
                     (method == "pca" ? "none" : "clear") +
                     "\"}, \"status\": \"ok\", \"error\": null},\n";
        }
    entries +=
        "    {\"id\": \"failed\", \"dir\": \"runs/never\", \"seed\": 2, \"labels\": {\"dataset\": "
        "\"kang\", "
        "\"method\": \"vicreg\", \"augmentation\": \"clear\"}, \"status\": \"failed\", \"error\": "
        "\"training diverged: loss is NaN\"},\n"
        "    {\"id\": \"later\", \"dir\": \"runs/later\", \"seed\": 3, \"labels\": {\"dataset\": "
        "\"kang\", "
        "\"method\": \"pca\", \"augmentation\": \"none\"}, \"status\": \"pending\", \"error\": "
        "null}\n";
    std::ofstream(sweep_dir + "/sweep.json")
        << "{\"name\": \"report-test\", \"axes\": [\"method\", \"augmentation\"], \"runs\": [\n"
        << entries << "]}\n";
    report_dir = sweep_dir + "/report";
    auto r = run_command(scssl::test::host_command("--quiet report " + sweep_dir + " --output " +
                                                   report_dir +
                                                   " --layout-cells 300 --title 'Report test'"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
};

TEST_F(Report, ScibTableHoldsTheSeedMeansOfTheRuns) {
  const auto rows = read_csv(report_dir + "/scib_kang.csv");
  ASSERT_EQ(rows.size(), 2u);
  for (const std::string method : {"pca", "vicreg"}) {
    const auto& row = row_of(rows, "method", method);
    EXPECT_EQ(row.at("augmentation"), method == "pca" ? "none" : "clear");
    EXPECT_EQ(row.at("n_runs"), "2");  // the failed and the pending run are not averaged
    const auto a = metrics_of(runs[method][0]), b = metrics_of(runs[method][1]);
    for (const char* metric : {"silhouette_label", "silhouette_batch", "graph_connectivity",
                               "bio_conservation", "batch_correction", "total"}) {
      EXPECT_NEAR(number(row, std::string(metric) + "_mean"), mean(a.at(metric), b.at(metric)),
                  1e-12)
          << method << " " << metric;
      EXPECT_NEAR(number(row, std::string(metric) + "_sd"), sd(a.at(metric), b.at(metric)), 1e-12)
          << method << " " << metric;
    }
  }
  // Best Total first.
  EXPECT_GE(number(rows[0], "total_mean"), number(rows[1], "total_mean"));
}

TEST_F(Report, AnnotationAndComputeTables) {
  const auto annotation = read_csv(report_dir + "/annotation_kang.csv");
  const auto compute = read_csv(report_dir + "/compute.csv");
  for (const std::string method : {"pca", "vicreg"}) {
    // Annotation comes from the query-mapping runs alone.
    const auto a = metrics_of(query_runs[method][0]), b = metrics_of(query_runs[method][1]);
    const auto& row = row_of(annotation, "method", method);
    EXPECT_EQ(row.at("n_runs"), "2");
    EXPECT_NEAR(number(row, "macro_f1_mean"), mean(a.at("macro_f1"), b.at("macro_f1")), 1e-12);
    const auto& cost = row_of(compute, "method", method);
    EXPECT_EQ(cost.at("dataset"), kDataset);
    double fit = 0;
    for (const auto* set : {&runs, &query_runs})
      for (const auto& dir : set->at(method)) fit += fit_seconds_of(dir) / 4;
    EXPECT_NEAR(number(cost, "fit_seconds_mean"), fit, 1e-9);
    EXPECT_GT(number(cost, "peak_rss_mb_max"), 0);
  }
  EXPECT_FALSE(fs::exists(report_dir + "/modality_kang.csv")) << "no modality metric was computed";
}

TEST_F(Report, FailedAndPendingRunsAreListedWithTheirError) {
  const auto all = read_csv(report_dir + "/runs.csv");
  ASSERT_EQ(all.size(), 10u);  // 2 methods x 2 seeds x 2 protocols, one failed, one pending
  EXPECT_EQ(std::count_if(all.begin(), all.end(),
                          [](const auto& r) { return r.at("protocol") == "query_mapping"; }),
            4);
  const auto& failed = row_of(all, "seed", "2");
  EXPECT_EQ(failed.at("status"), "failed");
  EXPECT_EQ(failed.at("error"), "training diverged: loss is NaN");
  EXPECT_EQ(row_of(all, "seed", "3").at("status"), "pending");
  const std::string html = read_text(report_dir + "/report.html");
  EXPECT_NE(html.find("training diverged: loss is NaN"), std::string::npos);
}

TEST_F(Report, PageIsSelfContained) {
  const std::string html = read_text(report_dir + "/report.html");
  EXPECT_NE(html.find("<title>Report test</title>"), std::string::npos);
  for (const char* external : {"<script src", "<link", "src=\"http", "sourceMappingURL"})
    EXPECT_EQ(html.find(external), std::string::npos) << external;
  EXPECT_NE(html.find("vegaEmbed"), std::string::npos);
}

// A run whose folder lost its metrics is a failed row, not a crash.
TEST_F(Report, RunFolderWithoutMetricsIsListedAsFailed) {
  const std::string dir = scssl::test::temp_dir("report-broken");
  fs::copy(runs["pca"][0], dir + "/pca-run", fs::copy_options::recursive);
  fs::copy(runs["vicreg"][0], dir + "/vicreg-run", fs::copy_options::recursive);
  fs::remove(dir + "/vicreg-run/metrics.csv");
  // A run whose process died leaves run.json saying "running".
  fs::copy(runs["vicreg"][1], dir + "/died", fs::copy_options::recursive);
  auto record = scssl::test::json_file(dir + "/died/run.json");
  record["status"] = "running";
  std::ofstream(dir + "/died/run.json") << record.dump(2);
  auto r = run_command(
      scssl::test::host_command("--quiet report " + dir + " -o " + dir + "/out --layout-cells 0"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto all = read_csv(dir + "/out/runs.csv");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(row_of(all, "seed", "1").at("status"), "running");
  EXPECT_NE(row_of(all, "seed", "1").at("error").find("still says running"), std::string::npos);
  const auto& broken = row_of(all, "dir", dir + "/vicreg-run");
  EXPECT_EQ(broken.at("status"), "failed");
  EXPECT_NE(broken.at("error").find("metrics.csv"), std::string::npos);
  EXPECT_EQ(read_csv(dir + "/out/scib_kang2018_pbmc_ctrl_stim_4samples.csv").size(), 1u);
}

// Without sweep.json, labels come from each run's resolved config.
TEST_F(Report, PlainRunFoldersAreGroupedByTheirConfig) {
  const std::string out = scssl::test::temp_dir("report-plain");
  auto r = run_command(scssl::test::host_command("--quiet report " + sweep_dir + "/runs -o " + out +
                                                 " --layout-cells 0 --min-max-scale"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto rows = read_csv(out + "/scib_kang2018_pbmc_ctrl_stim_4samples.csv");
  ASSERT_EQ(rows.size(), 2u);
  // Scaled across the four runs: (x - min) / (max - min), then the seed mean.
  std::vector<double> values;
  for (const auto& [method, dirs] : runs)
    for (const auto& d : dirs) values.push_back(metrics_of(d).at("silhouette_label"));
  const double lo = *std::min_element(values.begin(), values.end());
  const double hi = *std::max_element(values.begin(), values.end());
  for (const std::string method : {"pca", "vicreg"}) {
    const auto& row = row_of(rows, "method", method);
    EXPECT_EQ(row.at("n_runs"), "2");
    const auto a = metrics_of(runs[method][0]), b = metrics_of(runs[method][1]);
    EXPECT_NEAR(number(row, "silhouette_label_scaled_mean"),
                mean((a.at("silhouette_label") - lo) / (hi - lo),
                     (b.at("silhouette_label") - lo) / (hi - lo)),
                1e-12);
    for (const char* c :
         {"total_scaled_mean", "bio_conservation_scaled_mean", "batch_correction_scaled_mean"}) {
      EXPECT_GE(number(row, c), 0.0) << c;
      EXPECT_LE(number(row, c), 1.0) << c;
    }
  }
}

// A run reached twice (through its sweep and through the sweep's runs/ folder) counts once.
TEST_F(Report, ARunGivenTwiceCountsOnce) {
  const std::string out = scssl::test::temp_dir("report-twice");
  auto r = run_command(scssl::test::host_command("--quiet report " + sweep_dir + " " + sweep_dir +
                                                 "/runs -o " + out + " --layout-cells 0"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_csv(out + "/runs.csv").size(), 10u);
  EXPECT_EQ(row_of(read_csv(out + "/scib_kang.csv"), "method", "vicreg").at("n_runs"), "2");
}

// `evaluate` writes a folder of per-embedding runs: each obsm key is a row.
TEST_F(Report, EvaluateResultsAreRowsByEmbedding) {
  const std::string out = scssl::test::temp_dir("report-evaluate");
  const std::string data = scssl::test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad");
  auto e = run_command(scssl::test::host_command(
      "--quiet evaluate " + data + " -e X_pca -e X_batchcentered --unintegrated-key X_pca" +
      " --evaluators ilisi,silhouette_label --output " + out + "/eval"));
  ASSERT_EQ(e.exit_code, 0) << e.output;
  auto r = run_command(scssl::test::host_command("--quiet report " + out + "/eval -o " + out +
                                                 "/report --layout-cells 100"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto rows = read_csv(out + "/report/scib_kang_ctrl_stim.csv");
  ASSERT_EQ(rows.size(), 2u);
  row_of(rows, "method", "pca");
  row_of(rows, "method", "batchcentered");
  // Both embeddings got a plot (the obs columns come from the evaluated file).
  const std::string html = read_text(out + "/report/report.html");
  EXPECT_EQ(html.find("No embedding plot"), std::string::npos);
}

TEST(ReportInput, AFolderThatIsNoRunIsOneClearError) {
  const std::string empty = scssl::test::temp_dir("report-empty");
  auto r = run_command(scssl::test::host_command("report " + empty + " -o " + empty + "/out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("'" + empty + "' is not a run folder"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(empty + "/out"));
  auto missing =
      run_command(scssl::test::host_command("report /nonexistent/sweep -o " + empty + "/out"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("/nonexistent/sweep"), std::string::npos) << missing.output;
  EXPECT_EQ(run_command(scssl::test::host_command("report -o " + empty + "/out")).exit_code, 2)
      << "no folder given";
}

TEST(ReportInput, ABrokenSweepFileNamesIt) {
  const std::string dir = scssl::test::temp_dir("report-badsweep");
  std::ofstream(dir + "/sweep.json") << "{\"runs\": [";
  auto r = run_command(scssl::test::host_command("report " + dir + " -o " + dir + "/out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(dir + "/sweep.json"), std::string::npos) << r.output;
}

// The neighbours a map starts from: each cell first, then by distance, ties to the lower index.
TEST(MapNeighbours, ExactAndInOrderWithTheCellFirst) {
  // Five cells on a line at 0, 1, 3, 3 and 10 (two dimensions, the second always 0).
  const std::vector<float> x = {0, 0, 1, 0, 3, 0, 3, 0, 10, 0};
  std::vector<int32_t> idx;
  std::vector<float> dist;
  scssl::report::nearest_neighbors(x, 5, 2, 3, idx, dist);
  const std::vector<int32_t> expected = {0, 1, 2, 1, 0, 2, 2, 3, 1, 3, 2, 1, 4, 2, 3};
  EXPECT_EQ(idx, expected);
  const std::vector<float> expected_dist = {0, 1, 3, 0, 1, 2, 0, 0, 2, 0, 0, 2, 0, 7, 7};
  EXPECT_EQ(dist, expected_dist);
  // k is capped at the number of cells.
  scssl::report::nearest_neighbors(x, 2, 2, 15, idx, dist);
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1, 1, 0}));
}

// The page as a browser sees it: every chart drawn, no script error.
TEST_F(Report, ChartsRenderInHeadlessChromium) {
  if (run_command("command -v chromium").exit_code != 0)
    GTEST_SKIP()
        << "chromium is not installed (Debian: apt-get install chromium), so the page was not "
           "opened; the charts' rendering is NOT checked";
  const std::string profile = scssl::test::temp_dir("report-chromium");
  // Virtual time lets the page's asynchronous rendering finish before the DOM is dumped.
  auto r = run_command(
      "(timeout 180 chromium --headless --disable-gpu --no-sandbox --user-data-dir=" + profile +
      " --virtual-time-budget=60000 --dump-dom file://" + report_dir + "/report.html 2>/dev/null)");
  ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 2000);
  const std::string& dom = r.output;
  const size_t body = dom.find("<body");
  ASSERT_NE(body, std::string::npos) << dom.substr(0, 2000);
  const std::string attributes = dom.substr(body, dom.find('>', body) - body);
  // scIB table, Bio-vs-Batch scatter, annotation, augmentation, compute, two embedding maps.
  EXPECT_NE(attributes.find("data-charts=\"7\""), std::string::npos) << attributes;
  EXPECT_NE(attributes.find("data-rendered=\"7\""), std::string::npos) << attributes;
  // Both maps' UMAP layouts were computed in the page and drawn, 300 cells each.
  EXPECT_NE(attributes.find("data-maps=\"2\""), std::string::npos) << attributes;
  EXPECT_NE(attributes.find("data-maps-drawn=\"2\""), std::string::npos) << attributes;
  EXPECT_NE(dom.find("UMAP of 300 of 1556 cells"), std::string::npos) << "no map subtitle";
  EXPECT_NE(attributes.find("data-done=\"true\""), std::string::npos) << attributes;
  EXPECT_EQ(attributes.find("data-errors"), std::string::npos) << attributes;
  EXPECT_EQ(dom.find("class=\"report-error\""), std::string::npos)
      << dom.substr(dom.find("class=\"report-error\""), 1000);
  size_t svgs = 0;
  for (size_t at = 0; (at = dom.find("<svg", at)) != std::string::npos; ++at) ++svgs;
  EXPECT_GE(svgs, 7u);
  EXPECT_NE(dom.find("class=\"mark-symbol"), std::string::npos) << "no drawn points";
}

}  // namespace
