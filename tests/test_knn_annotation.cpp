// knn_annotation against the reference cases (tests/data/reference, within 1e-4).
#include <nlohmann/json.hpp>

#include "support.hpp"

using namespace scssl;

namespace {

struct Case {
  std::string h5ad;
  std::vector<std::string> query_batches;
};

void check_against_reference(const std::string& h5ad, const std::string& json_path,
                             const std::vector<std::string>& query) {
  CellData data = test::load_h5ad(h5ad);
  torch::Tensor embedding = test::read_obsm(h5ad, "X_batchcentered");
  host::HostServices services;
  const host::LoadedPlugin& p = test::plugins().get("knn_annotation", SCSSL_KIND_EVALUATOR);
  host::Evaluator evaluator(p, p.default_params(), services);
  auto metrics = evaluator.evaluate(data, embedding, {}, query);
  auto expected =
      nlohmann::json::parse(test::read_text(json_path))["embeddings"]["X_batchcentered"];
  std::map<std::string, double> got;
  for (const auto& m : metrics) got[m.name] = m.value;
  EXPECT_NEAR(got.at("macro_f1"), expected["exclude"]["macro_f1"].get<double>(), 1e-4);
  EXPECT_NEAR(got.at("accuracy"), expected["exclude"]["accuracy"].get<double>(), 1e-4);
  EXPECT_NEAR(got.at("macro_f1_in"), expected["include"]["macro_f1"].get<double>(), 1e-4);
  EXPECT_NEAR(got.at("accuracy_in"), expected["include"]["accuracy"].get<double>(), 1e-4);
}

}  // namespace

TEST(KnnAnnotation, KangCtrlStimMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_against_reference(dir + "kang_ctrl_stim.h5ad", dir + "kang_ctrl_stim.h5ad.annotation.json",
                          {"stim107"});
}

TEST(KnnAnnotation, TrianaMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  check_against_reference(dir + "triana_rna_adt.h5ad", dir + "triana_rna_adt.h5ad.annotation.json",
                          {"PBMC_200AB"});
}

TEST(KnnAnnotation, Kang8DonorsMatchesReference) {
  const std::string h5ad = test::shared_file("reference/kang_8donors.h5ad");
  if (h5ad.empty()) GTEST_SKIP() << "../shared/reference/kang_8donors.h5ad not present, skipped";
  check_against_reference(h5ad,
                          test::repo_file("tests/data/reference/kang_8donors.h5ad.annotation.json"),
                          {"donor_1039", "donor_107"});
}

// A cell type only in the query is predicted as something else: it counts with F1 = 0 in the
// "_in" variant and is removed in the default one.
TEST(KnnAnnotation, OneSidedCellTypesAreExcludedOnlyInTheDefaultVariant) {
  CellData data;
  for (int i = 0; i < 8; ++i) data.cell_names.push_back("c" + std::to_string(i));
  Column batch{
      "batch", true, torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kInt32), {"ref", "qry"}, {}};
  Column label{"cell_type",
               true,
               torch::tensor({0, 0, 1, 1, 0, 1, 2, 2}, torch::kInt32),
               {"A", "B", "C"},
               {}};
  data.columns = {batch, label};
  data.batch_key = "batch";
  data.label_key = "cell_type";
  // Type A near 0, B near 10, the query-only type C near 10 as well.
  torch::Tensor emb =
      torch::tensor({{0.f}, {0.1f}, {10.f}, {10.1f}, {0.05f}, {10.05f}, {9.9f}, {10.2f}});
  host::HostServices services;
  const host::LoadedPlugin& p = test::plugins().get("knn_annotation", SCSSL_KIND_EVALUATOR);
  ParamSet params = p.default_params();
  params.set("k", int64_t{1});
  host::Evaluator evaluator(p, params, services);
  std::map<std::string, double> got;
  for (const auto& m : evaluator.evaluate(data, emb, {}, {"qry"})) got[m.name] = m.value;
  EXPECT_DOUBLE_EQ(got["accuracy"], 1.0);  // A and B cells of the query, both right
  EXPECT_DOUBLE_EQ(got["macro_f1"], 1.0);
  EXPECT_DOUBLE_EQ(got["accuracy_in"], 0.5);  // the two C cells are called B
  // F1: A = 1, B = 2*1/(2+2+0) = 0.5, C = 0 -> mean 0.5
  EXPECT_DOUBLE_EQ(got["macro_f1_in"], 0.5);
}

TEST(KnnAnnotation, MissingQueryBatchesIsAClearError) {
  CellData data = test::load_h5ad(test::repo_file("tests/data/reference/triana_rna_adt.h5ad"));
  host::HostServices services;
  const host::LoadedPlugin& p = test::plugins().get("knn_annotation", SCSSL_KIND_EVALUATOR);
  host::Evaluator evaluator(p, p.default_params(), services);
  torch::Tensor emb = torch::zeros({data.n_cells(), 2});
  try {
    evaluator.evaluate(data, emb, {}, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("set evaluation.query_batches"), std::string::npos);
  }
  EXPECT_THROW(evaluator.evaluate(data, emb, {}, {"no_such_batch"}), Error);
}
