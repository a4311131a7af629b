// modality_prediction against the reference case
// (tests/data/reference/triana_rna_adt.h5ad.modality.json).
#include <nlohmann/json.hpp>

#include "support.hpp"

using namespace scssl;

namespace {
std::map<std::string, double> run(const CellData& data, const torch::Tensor& embedding,
                                  const std::vector<std::string>& query) {
  host::HostServices services;
  const host::LoadedPlugin& p = test::plugins().get("modality_prediction", SCSSL_KIND_EVALUATOR);
  host::Evaluator e(p, p.default_params(), services);
  std::map<std::string, double> out;
  for (const auto& m : e.evaluate(data, embedding, {}, query)) out[m.name] = m.value;
  return out;
}
}  // namespace

TEST(ModalityPrediction, TrianaMatchesReference) {
  const std::string dir = test::repo_file("tests/data/reference/");
  const std::string h5ad = dir + "triana_rna_adt.h5ad";
  CellData data = test::load_h5ad(h5ad);
  ASSERT_EQ(data.modality_index("ADT"), 1);
  auto expected = nlohmann::json::parse(
      test::read_text(dir + "triana_rna_adt.h5ad.modality.json"))["embeddings"]["X_batchcentered"];
  auto got = run(data, test::read_obsm(h5ad, "X_batchcentered"), {"PBMC_200AB"});
  for (const char* m : {"pearson_mean", "pearson_min", "pearson_max"})
    EXPECT_NEAR(got.at(m), expected[m].get<double>(), 1e-4) << m;
}

TEST(ModalityPrediction, UnimodalDataIsRefusedWithAClearMessage) {
  CellData data = test::load_h5ad(test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad"));
  try {
    run(data, torch::zeros({data.n_cells(), 2}), {"stim107"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no modality 'ADT'"), std::string::npos) << e.what();
  }
}
