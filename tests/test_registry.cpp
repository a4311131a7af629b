// The plugin registry against fixture plugins built as real shared libraries (tests/fixtures).
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "support.hpp"

using namespace scssl;
using namespace scssl::host;

namespace {

std::string marker_file() {
  return (std::filesystem::temp_directory_path() /
          ("scssl-fixture-marker-" + std::to_string(getpid())))
      .string();
}

struct Fixtures : ::testing::Test {
  static void SetUpTestSuite() {
    std::filesystem::remove(marker_file());
    setenv("SCSSL_FIXTURE_MARKER", marker_file().c_str(), 1);
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
  EXPECT_EQ(p.meta.version, "0.1.0");
  EXPECT_TRUE(contains(p.path, "libfixture-good.so"));
  EXPECT_EQ(p.folder, SCSSL_TEST_FIXTURE_DIR);
  EXPECT_EQ(p.default_params().get_float("scale"), 1.0);
  EXPECT_EQ(p.meta.torch_version, host_fingerprint().torch_version);
}

// Every refusal branch of the registry, each with the sentence it must give. The ones judged
// from the plugin note must not run the plugin's code: those fixtures leave a marker file when
// they are loaded, and none may appear.
struct Refusal {
  const char* file;
  const char* says;
};

const Refusal kNoteRefusals[] = {
    {"libfixture-not-a-library.so",
     "is not a shared library (it does not start with an ELF header)"},
    {"libfixture-no-entry.so",
     "is a shared library but not a scssl plugin (no plugin note, no entry point "
     "'scssl_plugin_entry')"},
    {"libfixture-abi1.so", "has no plugin note, so it was built for scssl ABI 1"},
    {"libfixture-c-malformed-note.so", "its plugin note cannot be read: line 1 is not the header"},
    {"libfixture-c-future-abi.so",
     "built for scssl ABI version 3, this host uses version 2; rebuild the plugin against this "
     "SDK"},
    {"libfixture-c-modified-header.so", "it was built against a modified scssl/abi.h"},
    {"libfixture-c-foreign-torch.so",
     "built with LibTorch 2.3.0, libstdc++ cxx11-abi, gcc 13.2.0, but this host uses LibTorch "},
    {"libfixture-c-foreign-stdlib.so",
     "built with no LibTorch, libc++, clang 17.0.1, but this host uses"},
    {"libfixture-c-bad-kind.so", "unknown plugin kind 9"},
    {"libfixture-c-bad-name.so",
     "plugin name 'Bad-Name' is not made of lower-case letters, digits and '_'"},
    {"libfixture-c-no-version.so", "plugin 'c_no_version' has no version"},
    {"libfixture-c-no-table.so", "plugin 'c_no_table' has no function table"},
    {"libfixture-c-bad-schema.so",
     "plugin 'c_bad_schema' has a malformed parameter schema: parameter 'scale' has a minimum (0) "
     "above its maximum (-1)"},
    {"libfixture-c-bad-default.so",
     "has a malformed parameter schema: its default breaks its own schema"},
    {"libfixture-c-no-metrics.so", "plugin 'c_no_metrics' declares no metrics"},
    {"libfixture-c-duplicate-metric.so", "metric 'mean_norm' is declared twice"},
};

TEST_F(Fixtures, EveryNoteRefusalIsOneSentenceAndRunsNoCode) {
  for (const Refusal& r : kNoteRefusals) {
    const std::string refusal = refusal_of(std::string("/") + r.file);
    EXPECT_TRUE(contains(refusal, r.says)) << r.file << " -> " << refusal;
    EXPECT_EQ(std::count(refusal.begin(), refusal.end(), '\n'), 0) << refusal;
  }
  EXPECT_FALSE(std::filesystem::exists(marker_file())) << "a refused plugin's code ran";
}

TEST_F(Fixtures, CodeRefusalsComeWhenThePluginIsFirstUsed) {
  const std::pair<const char*, const char*> cases[] = {
      {"c_missing_function", "its evaluator table lacks create, destroy or evaluate"},
      {"c_unresolved", "cannot be loaded as a shared library"},
  };
  for (const auto& [name, says] : cases) {
    const LoadedPlugin* p = registry->find(name);
    ASSERT_NE(p, nullptr) << name;  // the note is fine
    try {
      p->code();
      FAIL() << name;
    } catch (const InvalidArgument& e) {
      EXPECT_TRUE(contains(e.what(), says)) << e.what();
      EXPECT_TRUE(contains(e.what(), p->path)) << e.what();
    }
  }
  // A note taken from another plugin: accepted on its own, refused once the code disagrees.
  Registry single;
  ASSERT_TRUE(
      single.add_file(std::string(SCSSL_TEST_FIXTURE_DIR) + "/libfixture-c-note-mismatch.so"));
  try {
    single.all().front()->code();
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(),
                         "its plugin note does not match its code (the note has 'name c_mean_norm' "
                         "where the code has 'name c_note_mismatch')"))
        << e.what();
  }
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
  // fixture_good, fixture_throws, c_mean_norm, c_newer_minor, c_crash, c_killed,
  // c_missing_function and c_unresolved (the last two are refused when their code loads). The
  // note-mismatch library carries c_mean_norm's note, so in the folder it is refused as a second
  // c_mean_norm.
  EXPECT_EQ(registry->all().size(), 8u);
  EXPECT_EQ(registry->refusals().size(), std::size(kNoteRefusals) + 2);
}

TEST_F(Fixtures, UnknownPluginErrorListsAvailableAndWhereItLooked) {
  try {
    registry->get("nope", SCSSL_KIND_METHOD);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), "no method plugin named 'nope'; available: fixture_throws"))
        << e.what();
    EXPECT_TRUE(contains(e.what(), "--plugins DIR, $SCSSL_PLUGIN_PATH")) << e.what();
    EXPECT_TRUE(contains(e.what(), std::string("searched: ") + SCSSL_TEST_FIXTURE_DIR)) << e.what();
  }
  try {
    registry->get("fixture_good", SCSSL_KIND_METHOD);
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), "'fixture_good' is a evaluator plugin")) << e.what();
  }
}

TEST_F(Fixtures, PlainCPluginRuns) {
  HostServices services;
  const LoadedPlugin& p = registry->get("c_mean_norm", SCSSL_KIND_EVALUATOR);
  EXPECT_EQ(p.meta.torch_version, "");  // plain C: shares no LibTorch with the host
  ParamSet params = p.default_params();
  params.set("scale", 2.0);
  Evaluator evaluator(p, params, services);
  CellData data;
  data.cell_names = {"a", "b"};
  torch::Tensor embedding = torch::tensor({{3.f, 4.f}, {0.f, 1.f}});
  auto metrics = evaluator.evaluate(data, embedding, {}, {});
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0].name, "mean_norm");
  EXPECT_DOUBLE_EQ(metrics[0].value, 2.0 * (5.0 + 1.0) / 2.0);
  // Its schema is the host's to enforce: scale must be above 0, mode one of {plain, scaled}.
  EXPECT_THROW(params.set("scale", 0.0), InvalidArgument);
  try {
    params.set("mode", std::string("fancy"));
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_TRUE(contains(e.what(), "must be one of {plain, scaled}, got \"fancy\"")) << e.what();
  }
}

TEST_F(Fixtures, NewerMinorVersionIsServedIgnoringFieldsItDoesNotKnow) {
  HostServices services;
  const LoadedPlugin& p = registry->get("c_newer_minor", SCSSL_KIND_EVALUATOR);
  EXPECT_EQ(p.meta.abi_minor, SCSSL_ABI_MINOR + 1);
  EXPECT_GT(p.meta.info_size, sizeof(scssl_plugin_info));
  ParamSet params = p.default_params();
  Evaluator evaluator(p, params, services);
  CellData data;
  data.cell_names = {"a"};
  auto metrics = evaluator.evaluate(data, torch::tensor({{0.f, 2.f}}), {}, {});
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_DOUBLE_EQ(metrics[0].value, 2.0);
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
  for (auto [name, kind] :
       {std::pair{"h5ad", SCSSL_KIND_DATASET}, std::pair{"synthetic", SCSSL_KIND_DATASET},
        std::pair{"pca", SCSSL_KIND_METHOD}, std::pair{"knn_annotation", SCSSL_KIND_EVALUATOR}})
    EXPECT_NO_THROW(r.get(name, kind)) << name;
}

TEST(Validate, RefusesFromTheNoteAloneWithOneSentence) {
  const std::string marker = marker_file() + "-validate";
  std::filesystem::remove(marker);
  const std::pair<const char*, const char*> cases[] = {
      {"libfixture-abi1.so", "built for scssl ABI 1"},
      {"libfixture-c-foreign-torch.so", "built with LibTorch 2.3.0"},
      {"libfixture-c-bad-schema.so", "has a malformed parameter schema"},
      {"libfixture-not-a-library.so", "is not a shared library"},
  };
  for (const auto& [file, says] : cases) {
    const std::string path = std::string(SCSSL_TEST_FIXTURE_DIR) + "/" + file;
    const auto r = scssl::test::run_command("SCSSL_FIXTURE_MARKER=" + marker + " " +
                                            std::string(SCSSL_TEST_HOST) + " validate " + path);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, "REFUSED " + path + ": ")) << r.output;
    EXPECT_TRUE(contains(r.output, says)) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  EXPECT_FALSE(std::filesystem::exists(marker)) << "validate ran a refused plugin's code";
}

TEST(Validate, AcceptsThePlainCPluginAndReportsACrash) {
  const std::string dir = SCSSL_TEST_FIXTURE_DIR;
  auto ok = scssl::test::run_command(std::string(SCSSL_TEST_HOST) + " validate " + dir +
                                     "/libfixture-c-evaluator.so");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(contains(ok.output, "OK ")) << ok.output;
  auto missing = scssl::test::run_command(std::string(SCSSL_TEST_HOST) + " validate " + dir +
                                          "/libfixture-c-missing-function.so");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_TRUE(contains(missing.output, "lacks create, destroy or evaluate")) << missing.output;
}

// The SDK side of "never read past the end": a host table from an older minor version that ends
// before share_result must be seen as lacking it, whatever bytes follow.
TEST(Abi, ShorterHostTableLacksTheNewerServices) {
  scssl_host_api api{};
  std::memset(&api, 0xff, sizeof api);  // garbage where an older host's table would have ended
  api.struct_size = offsetof(scssl_host_api, share_result);
  api.log = nullptr;
  api.progress = nullptr;
  api.augment = nullptr;
  api.augmentation_count = nullptr;
  api.record = nullptr;
  api.neighbors = nullptr;
  api.connectivities = nullptr;
  HostContext host(&api);
  EXPECT_FALSE(host.shared("anything").defined());
  EXPECT_NO_THROW(host.share("anything", torch::ones({2})));
  EXPECT_EQ(host.augmentation_count(0), 0);
}

// A segfault inside a plugin's evaluate() still leaves one line naming the plugin and a run.json
// that says the run failed and why.
TEST(Crash, SegfaultInsideEvaluateIsNamedAndRecorded) {
  const std::string out = scssl::test::temp_dir("crash");
  const std::string data = scssl::test::repo_file("tests/data/reference/kang_ctrl_stim.h5ad");
  const auto r = scssl::test::run_command(scssl::test::host_command(
      "--plugins " + std::string(SCSSL_TEST_FIXTURE_DIR) + " --quiet evaluate " + data +
      " -e X_pca --evaluators c_crash --output " + out));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "scssl-host: the process crashed (SIGSEGV, a segmentation fault) "
                       "inside evaluate() of evaluator plugin 'c_crash' ("))
      << r.output;
  std::string record;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(out))
    if (entry.path().filename() == "run.json" && entry.path().parent_path().filename() == "X_pca")
      record = scssl::test::read_text(entry.path().string());
  ASSERT_FALSE(record.empty()) << r.output;
  EXPECT_TRUE(contains(record, "\"status\": \"failed\"")) << record;
  EXPECT_TRUE(contains(record,
                       "crashed (SIGSEGV, a segmentation fault) inside evaluate() of "
                       "evaluator plugin 'c_crash'"))
      << record;
  std::filesystem::remove_all(out);
}
