// What the evaluators write besides one number per metric (docs/evaluation.md, "Per-cell scores"):
// per-cell scores in per_cell.csv and as obs columns of an .h5ad copy, and what every metric
// gives on degenerate data (docs/metrics.md §5): its defined value, or NaN with a note in
// metrics.json and metrics.csv, never a crash.
#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "json_schema.hpp"
#include "scssl/anndata/anndata.hpp"
#include "scssl/anndata/hdf5.hpp"
#include "scssl/lisi.hpp"
#include "scssl/random.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::run_command;

namespace {

std::string degenerate(const std::string& name) {
  return scssl::test::repo_file("tests/data/degenerate/" + name);
}

// `scssl-host evaluate ARGS`; returns the result folder.
std::string evaluate(const std::string& args, const std::string& output) {
  auto r =
      run_command(scssl::test::host_command("--quiet evaluate " + args + " --output " + output));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  return std::regex_search(r.output, m, std::regex("results: (\\S+)")) ? m[1].str() : "";
}

struct PerCell {
  std::vector<std::string> columns;  // without "cell"
  std::vector<std::string> cells;
  std::map<std::string, std::vector<double>> values;
};

PerCell read_per_cell(const std::string& path) {
  PerCell t;
  std::istringstream in(scssl::test::read_text(path));
  std::string line;
  std::getline(in, line);
  std::stringstream header(line);
  std::string field;
  std::getline(header, field, ',');
  EXPECT_EQ(field, "cell");
  while (std::getline(header, field, ',')) t.columns.push_back(field);
  while (std::getline(in, line)) {
    std::stringstream row(line);
    std::getline(row, field, ',');
    t.cells.push_back(field);
    for (const auto& c : t.columns) {
      std::getline(row, field, ',');
      t.values[c].push_back(std::stod(field));  // "nan" parses as NaN
    }
  }
  return t;
}

double mean_of_finite(const std::vector<double>& v) {
  double sum = 0;
  int64_t n = 0;
  for (double x : v)
    if (std::isfinite(x)) sum += x, ++n;
  return n ? sum / static_cast<double>(n) : std::nan("");
}

// The mean over cell types of each type's mean of its cells' finite values (NaN types skipped).
double mean_over_types(const std::vector<double>& v, const std::vector<int32_t>& type) {
  std::map<int32_t, std::vector<double>> by_type;
  for (size_t i = 0; i < v.size(); ++i)
    if (type[i] >= 0 && std::isfinite(v[i])) by_type[type[i]].push_back(v[i]);
  std::vector<double> means;
  for (const auto& [t, values] : by_type) means.push_back(mean_of_finite(values));
  return mean_of_finite(means);
}

std::map<std::string, nlohmann::ordered_json> metrics_of(const std::string& dir) {
  std::map<std::string, nlohmann::ordered_json> out;
  for (const auto& m : scssl::test::json_file(dir + "/metrics.json"))
    if (m["evaluator"] != "aggregate") out[m["metric"].get<std::string>()] = m;
  return out;
}

std::vector<double> obs_column(const std::string& h5ad, const std::string& name) {
  using namespace scssl::h5;
  File f = File::open(h5ad);
  const Dataset d = f.root().group("obs").dataset(name);
  std::vector<double> v(static_cast<size_t>(d.shape().at(0)));
  d.read(NumType::Float64, v.data());
  return v;
}

const char* const kPerCellEvaluators =
    "ilisi,clisi,silhouette_label,silhouette_batch,isolated_labels,kbet,graph_connectivity";

}  // namespace

// Each per-cell column gives back its metric: the median (LISI), the mean (silhouette label) or
// the mean over cell types (the per-type scores), and the .h5ad copy holds the same columns.
TEST(PerCellScores, EvaluateWritesColumnsThatGiveBackEachMetric) {
  const std::string out = scssl::test::temp_dir("per-cell");
  const std::string data = degenerate("embeddings.h5ad");
  const std::string dir = evaluate(
      data + " -e X_pca -e X_duplicated --per-cell --evaluators " + kPerCellEvaluators, out);
  ASSERT_FALSE(dir.empty());
  const auto types = scssl::anndata::read_obs_categories(data, "cell_type").codes;
  for (const std::string key : {"X_pca", "X_duplicated"}) {
    SCOPED_TRACE(key);
    const PerCell t = read_per_cell(dir + "/" + key + "/per_cell.csv");
    ASSERT_EQ(t.cells.size(), types.size());
    EXPECT_EQ(std::set<std::string>(t.columns.begin(), t.columns.end()),
              (std::set<std::string>{"ilisi", "clisi", "silhouette_label", "silhouette_batch",
                                     "isolated_labels", "kbet", "graph_connectivity"}));
    auto metrics = metrics_of(dir + "/" + key);
    auto value = [&](const char* m) { return metrics.at(m)["value"].get<double>(); };
    for (const char* lisi : {"ilisi", "clisi"})
      EXPECT_NEAR(scssl::nanmedian(torch::tensor(t.values.at(lisi), torch::kFloat64)), value(lisi),
                  1e-12)
          << lisi;
    EXPECT_NEAR(mean_of_finite(t.values.at("silhouette_label")), value("silhouette_label"), 1e-12);
    for (const char* per_type :
         {"silhouette_batch", "isolated_labels", "kbet", "graph_connectivity"})
      EXPECT_NEAR(mean_over_types(t.values.at(per_type), types), value(per_type), 1e-12)
          << per_type;
    // A per-type score is one value for every cell of the type.
    std::map<int32_t, std::set<double>> kbet_of_type;
    for (size_t i = 0; i < types.size(); ++i) kbet_of_type[types[i]].insert(t.values.at("kbet")[i]);
    for (const auto& [type, values] : kbet_of_type) EXPECT_EQ(values.size(), 1u) << type;

    // The same numbers in the copy's obs, named <obsm key>_<metric>, next to the file's columns.
    const std::string copy = dir + "/embeddings.h5ad";
    for (const auto& c : t.columns) {
      const std::vector<double> column = obs_column(copy, key + "_" + c);
      ASSERT_EQ(column.size(), t.cells.size());
      for (size_t i = 0; i < column.size(); ++i)
        if (std::isnan(t.values.at(c)[i]))
          EXPECT_TRUE(std::isnan(column[i]));
        else
          EXPECT_NEAR(column[i], t.values.at(c)[i], 1e-15 + 1e-15 * std::abs(column[i]));
    }
    const auto summary = scssl::anndata::inspect(copy);
    for (const char* kept :
         {"batch", "cell_type", key == "X_pca" ? "X_pca_kbet" : "X_duplicated_ilisi"})
      EXPECT_NE(std::find(summary.obs_columns.begin(), summary.obs_columns.end(), kept),
                summary.obs_columns.end())
          << kept;
  }
  // The source is untouched.
  EXPECT_EQ(scssl::anndata::inspect(data).obs_columns.size(), 4u);
}

TEST(PerCellScores, ARunWritesThemIntoItsFolderAndItsH5adCopy) {
  const std::string out = scssl::test::temp_dir("per-cell-run");
  const std::string run = scssl::test::run_config(
      "configs/quickstart.toml", out,
      "--set 'dataset.path=\"" + degenerate("embeddings.h5ad") +
          "\"' --set method.n_components=10"
          " --set 'evaluation.evaluators=[\"ilisi\",\"kbet\",\"knn_annotation\"]'"
          " --set evaluation.per_cell_scores=true");
  ASSERT_FALSE(run.empty());
  const PerCell t = read_per_cell(run + "/per_cell.csv");
  EXPECT_EQ(t.columns, (std::vector<std::string>{"ilisi", "kbet"}));
  const std::vector<double> ilisi = obs_column(run + "/embeddings.h5ad", "X_pca_ilisi");
  ASSERT_EQ(ilisi.size(), t.cells.size());
  for (size_t i = 0; i < ilisi.size(); ++i) EXPECT_DOUBLE_EQ(ilisi[i], t.values.at("ilisi")[i]);
  EXPECT_EQ(scssl::anndata::read_obsm(run + "/embeddings.h5ad", "X_pca").cols, 10);
  EXPECT_NE(scssl::test::read_text(run + "/config.resolved.toml").find("per_cell_scores = true"),
            std::string::npos);
}

// Every scIB metric on every degenerate input: a value in its range, or NaN with a note that
// says why, in metrics.json (schema-checked) and metrics.csv.
TEST(DegenerateData, EveryMetricGivesItsDefinedValueOrNaNWithANote) {
  const std::string out = scssl::test::temp_dir("degenerate");
  struct Case {
    std::string file, key;
    std::set<std::string> undefined;  // the metrics that must be NaN here
  };
  const std::vector<Case> cases = {
      {"one_batch.h5ad", "X_pca", {"ilisi", "silhouette_batch", "kbet", "pcr_comparison"}},
      {"one_label.h5ad", "X_pca", {"clisi"}},
      {"missing_labels.h5ad", "X_pca", {}},
      {"one_cell_type.h5ad", "X_pca", {}},
      {"embeddings.h5ad", "X_duplicated", {}},
      {"embeddings.h5ad", "X_constant_column", {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file + " " + c.key);
    const std::string dir =
        evaluate(degenerate(c.file) + " -e " + c.key + " --unintegrated-key X_pca", out);
    ASSERT_FALSE(dir.empty());
    const std::string sub = dir + "/" + c.key;
    EXPECT_EQ(scssl::test::schema_problems(
                  scssl::test::repo_file("docs/schema/metrics.schema.json"), sub + "/metrics.json"),
              "");
    const auto metrics = metrics_of(sub);
    EXPECT_EQ(metrics.size(), 10u);
    const std::string csv = scssl::test::read_text(sub + "/metrics.csv");
    for (const auto& [name, m] : metrics) {
      SCOPED_TRACE(name);
      if (c.undefined.count(name)) {
        EXPECT_TRUE(m["value"].is_null());
        ASSERT_TRUE(m.contains("note"));
        const std::string note = m["note"].get<std::string>();
        EXPECT_GT(note.size(), 20u);
        EXPECT_NE(csv.find(note), std::string::npos) << csv;
        continue;
      }
      ASSERT_TRUE(m["value"].is_number()) << m.dump();
      const double v = m["value"].get<double>();
      EXPECT_GE(v, name == "leiden_ari" ? -1.0 : 0.0);
      EXPECT_LE(v, 1.0);
    }
    if (c.file == "one_label.h5ad") {
      EXPECT_DOUBLE_EQ(metrics.at("silhouette_label")["value"], 0.5);
    }
  }
}

// The lone cell of a type of its own: its silhouette is 0 by definition (width 0.5), its type is
// connected (1), and kBET leaves the type out (fewer than 10 cells).
TEST(DegenerateData, ACellTypeWithOneCellHasItsDefinedPerCellValues) {
  const std::string out = scssl::test::temp_dir("lonely");
  const std::string dir = evaluate(
      degenerate("one_cell_type.h5ad") + " -e X_pca --per-cell --evaluators " + kPerCellEvaluators,
      out);
  ASSERT_FALSE(dir.empty());
  const PerCell t = read_per_cell(dir + "/X_pca/per_cell.csv");
  EXPECT_DOUBLE_EQ(t.values.at("silhouette_label")[7], 0.5);
  EXPECT_DOUBLE_EQ(t.values.at("graph_connectivity")[7], 1.0);
  EXPECT_TRUE(std::isnan(t.values.at("kbet")[7]));
  EXPECT_TRUE(std::isnan(t.values.at("silhouette_batch")[7]));
}

TEST(DegenerateData, NoCellsIsOneClearError) {
  const std::string out = scssl::test::temp_dir("no-cells");
  auto r = run_command(scssl::test::host_command("--quiet evaluate " + degenerate("no_cells.h5ad") +
                                                 " -e X_pca --output " + out));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("no cells"), std::string::npos) << r.output;
}

// docs/metrics.md §1.6: proportional per stratum, at least one of each, rows sorted, repeatable.
TEST(SubSampling, StratifiedSampleIsProportionalAndSeeded) {
  std::vector<int32_t> strata;
  for (int i = 0; i < 900; ++i) strata.push_back(0);
  for (int i = 0; i < 97; ++i) strata.push_back(1);
  for (int i = 0; i < 3; ++i) strata.push_back(2);
  strata[10] = -1;  // takes no part
  const auto a = scssl::stratified_sample(strata, 100, 7);
  EXPECT_EQ(a, scssl::stratified_sample(strata, 100, 7));
  EXPECT_NE(a, scssl::stratified_sample(strata, 100, 8));
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  std::map<int32_t, int> count;
  for (int64_t i : a) ++count[strata[i]];
  EXPECT_EQ(count[-1], 0);
  EXPECT_EQ(count[0], 90);  // 100 x 899 / 999 = 89.99: the largest remainder
  EXPECT_EQ(count[1], 10);  // 9.71
  EXPECT_EQ(count[2], 1);   // 0.30, raised to one
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), a.size());
  EXPECT_EQ(scssl::stratified_sample(strata, 0, 7).size(), 999u);
  EXPECT_EQ(scssl::stratified_sample(strata, 5000, 7).size(), 999u);
}

// The sampled silhouettes and kBET: noted as such, per-cell values only where computed, the same
// result for the same seed, and close to the exact one.
TEST(SubSampling, SampledMetricsAreNotedAndRepeatable) {
  const std::string out = scssl::test::temp_dir("sampled");
  const std::string data = degenerate("embeddings.h5ad") + " -e X_pca --per-cell --evaluators " +
                           "silhouette_label,silhouette_batch,isolated_labels,kbet";
  const std::string sampled =
      " --set evaluation.silhouette_label.max_cells=120"
      " --set evaluation.silhouette_batch.max_cells=120"
      " --set evaluation.isolated_labels.max_cells=120 --set evaluation.kbet.tested_cells=20";
  const std::string exact = evaluate(data, out) + "/X_pca";
  const std::string first = evaluate(data + sampled, out) + "/X_pca";
  const std::string again = evaluate(data + sampled, out) + "/X_pca";
  const std::string other = evaluate(data + sampled +
                                         " --set evaluation.kbet.seed=3"
                                         " --set evaluation.silhouette_label.seed=3",
                                     out) +
                            "/X_pca";
  auto m_exact = metrics_of(exact), m_first = metrics_of(first), m_again = metrics_of(again),
       m_other = metrics_of(other);
  for (const char* name : {"silhouette_label", "silhouette_batch", "isolated_labels", "kbet"}) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(m_exact.at(name).contains("note"));
    ASSERT_TRUE(m_first.at(name).contains("note"));
    EXPECT_NE(m_first.at(name)["note"].get<std::string>().find("stratified sample of"),
              std::string::npos);
    EXPECT_EQ(m_first.at(name)["value"], m_again.at(name)["value"]);
    EXPECT_NEAR(m_first.at(name)["value"].get<double>(), m_exact.at(name)["value"].get<double>(),
                0.1);
  }
  EXPECT_NE(m_first.at("silhouette_label")["value"], m_other.at("silhouette_label")["value"]);
  EXPECT_NE(m_first.at("kbet")["note"].get<std::string>().find("evaluation.kbet.tested_cells"),
            std::string::npos);
  const PerCell t = read_per_cell(first + "/per_cell.csv");
  int64_t computed = 0;
  for (double v : t.values.at("silhouette_label")) computed += std::isfinite(v);
  EXPECT_GE(computed, 120);
  EXPECT_LE(computed, 125);  // at least one cell of every type
  EXPECT_NE(m_first.at("silhouette_label")["note"].get<std::string>().find(
                std::to_string(computed) + " of 240 cells"),
            std::string::npos);
}
