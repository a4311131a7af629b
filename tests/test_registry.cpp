// The plugin registry against fixture plugins built as real shared libraries (tests/fixtures).
#include <algorithm>

#include "support.hpp"

using namespace scssl;
using namespace scssl::host;

namespace {

struct Fixtures : ::testing::Test {
  static void SetUpTestSuite() {
    registry = new Registry;
    registry->add_directory(SCSSL_TEST_FIXTURE_DIR);
  }
  static std::string refusal_of(const std::string& file_part) {
    for (const auto& r : registry->refusals())
      if (r.find(file_part) != std::string::npos) return r;
    return "";
  }
  static Registry* registry;
};
Registry* Fixtures::registry = nullptr;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_F(Fixtures, GoodPluginIsAccepted) {
  const LoadedPlugin& p = registry->get("fixture_good", SCSSL_KIND_EVALUATOR);
  EXPECT_EQ(std::string(p.info->version), "0.1.0");
  EXPECT_TRUE(contains(p.path, "libfixture-good.so"));
  EXPECT_EQ(p.default_params().get_float("scale"), 1.0);
}

TEST_F(Fixtures, WrongAbiIsRefusedNamingFileAndBothVersions) {
  const std::string r = refusal_of("libfixture-wrong-abi.so");
  EXPECT_TRUE(contains(r, "built for scssl ABI version " + std::to_string(SCSSL_ABI_VERSION + 998)))
      << r;
  EXPECT_TRUE(contains(r, "this host uses version " + std::to_string(SCSSL_ABI_VERSION))) << r;
  EXPECT_EQ(registry->find("fixture_wrong_abi"), nullptr);
}

TEST_F(Fixtures, MissingEntryPointIsRefused) {
  const std::string r = refusal_of("libfixture-no-entry.so");
  EXPECT_TRUE(contains(r, "has no entry point 'scssl_plugin_entry'")) << r;
}

TEST_F(Fixtures, NonLibraryFileIsRefused) {
  const std::string r = refusal_of("libfixture-not-a-library.so");
  EXPECT_TRUE(contains(r, "cannot be loaded as a shared library")) << r;
}

TEST_F(Fixtures, DuplicateNameIsRefusedNamingTheFirstFile) {
  // Files load in sorted order: libfixture-good.so, then libfixture-later-duplicate.so.
  const std::string r = refusal_of("libfixture-later-duplicate.so");
  EXPECT_TRUE(contains(r, "plugin name 'fixture_good' is already taken by")) << r;
  EXPECT_TRUE(contains(r, "libfixture-good.so")) << r;
  EXPECT_EQ(std::count_if(registry->refusals().begin(), registry->refusals().end(),
                          [](const std::string& s) { return contains(s, "fixture_good"); }),
            1);
}

TEST_F(Fixtures, OtherPluginsStillLoadBesideBrokenOnes) {
  EXPECT_EQ(registry->all().size(), 2u);  // fixture_good and fixture_throws
  EXPECT_EQ(registry->refusals().size(), 4u);
}

TEST_F(Fixtures, UnknownPluginErrorListsAvailable) {
  try {
    registry->get("nope", SCSSL_KIND_EVALUATOR);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), "no evaluator plugin named 'nope'; available: fixture_good"))
        << e.what();
  }
  try {
    registry->get("fixture_good", SCSSL_KIND_METHOD);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), "'fixture_good' is a evaluator plugin")) << e.what();
  }
}

TEST_F(Fixtures, ExceptionsInsidePluginsArriveAsMessages) {
  HostServices services;
  const LoadedPlugin& p = registry->get("fixture_throws", SCSSL_KIND_METHOD);
  ParamSet params = p.default_params();
  Method method(p, params, services);
  CellData data;
  data.cell_names = {"a", "b"};
  CellDataView view(data);
  try {
    method.fit(view.get(), TrainOptions{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "training method 'fixture_throws': fit exploded on purpose");
    EXPECT_EQ(e.status(), SCSSL_ERR_INTERNAL);
  }
  EXPECT_THROW(method.embed(data), Error);
  params.set("throw_in_constructor", true);
  try {
    Method failing(p, params, services);
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "creating method plugin 'fixture_throws': constructor refused"))
        << e.what();
  }
}

TEST_F(Fixtures, EvaluatorResultsCarryTheirDeclaredMetadata) {
  HostServices services;
  const LoadedPlugin& p = registry->get("fixture_good", SCSSL_KIND_EVALUATOR);
  ParamSet params = p.default_params();
  params.set("scale", 2.0);
  Evaluator evaluator(p, params, services);
  CellData data;
  data.cell_names = {"a", "b"};
  torch::Tensor embedding = torch::tensor({{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}});
  auto metrics = evaluator.evaluate(data, embedding, {}, {});
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_EQ(metrics[0].name, "dimension");
  EXPECT_EQ(metrics[0].value, 3.0);
  EXPECT_EQ(metrics[0].group, SCSSL_GROUP_OTHER);
  EXPECT_DOUBLE_EQ(metrics[1].value, 7.0);  // 2 * mean(1..6)
}

TEST(Registry, MissingFolderIsAnError) {
  Registry r;
  EXPECT_THROW(r.add_directory("/nonexistent/plugins"), InvalidArgument);
}

TEST(Registry, BuiltPluginsOfEveryFoundationKindAreFound) {
  const Registry& r = scssl::test::plugins();
  EXPECT_TRUE(r.refusals().empty()) << r.refusals().front();
  for (auto [name, kind] : {std::pair{"h5ad", SCSSL_KIND_DATASET},
                            std::pair{"synthetic", SCSSL_KIND_DATASET},
                            std::pair{"pca", SCSSL_KIND_METHOD},
                            std::pair{"knn_annotation", SCSSL_KIND_EVALUATOR}})
    EXPECT_NO_THROW(r.get(name, kind)) << name;
}
