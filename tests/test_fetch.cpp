// scssl-fetch through `scssl-host fetch` with file:// URLs (libcurl; no network), SHA-256 from
// libcrypto, and the schema of the catalog manifests.
#include <filesystem>
#include <fstream>
#include <regex>

#include "config.hpp"
#include "fetch.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using scssl::test::run_command;

namespace {

const std::string kKang = "datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad";
const std::string kKangSha = "719e7a270f034984712adac572a439859a62e6d7336e054a8fa82984b6120b9f";

struct Source {
  std::string url;
  std::string format = "h5ad";
  std::string sha256 = kKangSha;
  std::string member = {};  // initialised here so that {url, format, sha256} leaves them empty
  std::string file_sha256 = {};
  int64_t n_cells = 1556;
};

// A manifest in a fresh folder that points at `src`; returns its path.
std::string write_manifest(const std::string& dir, const Source& src,
                           const std::string& drop_key = "") {
  std::ostringstream t;
  t << "schema = 1\nname = \"kang\"\ntitle = \"test copy\"\nmodalities = [\"RNA\"]\n"
    << "n_cells = " << src.n_cells
    << "\nn_features = 1267\nlicence = \"GPL-3\"\npreprocessing = \"none\"\n"
    << "[publication]\ncitation = \"Kang et al. 2018\"\ndoi = \"10.1038/nbt.4042\"\n"
    << "[source]\npage = \"\"\n"
    << (drop_key == "source.url" ? "" : "url = \"" + src.url + "\"\n") << "format = \""
    << src.format << "\"\nmember = \"" << src.member << "\"\nsha256 = \"" << src.sha256
    << "\"\nsize_bytes = 0\n[file]\nname = \"kang.h5ad\"\nsha256 = \"" << src.file_sha256 << "\"\n"
    << "[dataset]\nplugin = \"h5ad\"\nbatch_key = \"batch\"\nlabel_key = \"cell_type\"\n"
    << "[evaluation]\nquery_batches = [\"stim107\"]\n";
  const std::string path = dir + "/kang.toml";
  std::ofstream(path) << t.str();
  return path;
}

scssl::test::CommandResult fetch(const std::string& args, const std::string& env = "") {
  return run_command(env + std::string(SCSSL_TEST_HOST) + " fetch " + args);
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

size_t entries(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return 0;
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

}  // namespace

TEST(Fetch, Sha256MatchesKnownValues) {
  // FIPS 180-4's examples, including two blocks of padding, and a file of several megabytes.
  EXPECT_EQ(scssl::fetch::sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(scssl::fetch::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(scssl::fetch::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(scssl::fetch::sha256_file(scssl::test::repo_file(kKang)), kKangSha);
}

TEST(Fetch, FileUrlLandsVerifiedAndUsableFromARunConfig) {
  const std::string dir = scssl::test::temp_dir("fetch-ok"), out = dir + "/data";
  const std::string manifest = write_manifest(dir, {"file://" + scssl::test::repo_file(kKang)});
  auto r = fetch(manifest + " --into " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "sha256 ok")) << r.output;
  EXPECT_EQ(scssl::fetch::sha256_file(out + "/kang.h5ad"), kKangSha);
  EXPECT_EQ(entries(out), 2u) << "only the data and its run-config sections";
  EXPECT_EQ(scssl::test::load_h5ad(out + "/kang.h5ad").n_cells(), 1556);

  // The written sections are what a run config includes.
  const std::string config = dir + "/eval.toml";
  std::ofstream(config) << "include = [\"data/kang.dataset.toml\"]\n";
  auto cfg = scssl::host::load_run_config(config, {}, scssl::test::plugins(),
                                          scssl::host::ConfigUse::Evaluate);
  EXPECT_EQ(fs::path(cfg.dataset.params.get_string("path")), fs::path(out) / "kang.h5ad");
  EXPECT_EQ(cfg.dataset.params.get_string("label_key"), "cell_type");
  EXPECT_EQ(cfg.query_batches, std::vector<std::string>{"stim107"});

  // A second fetch finds the file and downloads nothing (the URL no longer exists).
  write_manifest(dir, {"file://" + dir + "/gone.h5ad"});
  r = fetch(manifest + " --into " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "already present")) << r.output;
  EXPECT_FALSE(has(r.output, "downloading")) << r.output;
}

TEST(Fetch, GzipDownloadIsDecompressed) {
  const std::string dir = scssl::test::temp_dir("fetch-gz"), out = dir + "/data";
  ASSERT_EQ(run_command("gzip -c " + scssl::test::repo_file(kKang) + " > " + dir + "/k.h5ad.gz")
                .exit_code,
            0);
  Source src{"file://" + dir + "/k.h5ad.gz", "h5ad.gz",
             scssl::fetch::sha256_file(dir + "/k.h5ad.gz")};
  src.file_sha256 = kKangSha;
  auto r = fetch(write_manifest(dir, src) + " --into " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(scssl::fetch::sha256_file(out + "/kang.h5ad"), kKangSha);
  EXPECT_EQ(entries(out), 2u);

  // Not gzip data: gzip's own message is shown, and nothing is kept.
  Source plain{"file://" + scssl::test::repo_file(kKang), "h5ad.gz"};
  r = fetch(write_manifest(dir, plain) + " --into " + dir + "/other");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "gzip failed") && has(r.output, "not in gzip format")) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/other"));
}

TEST(Fetch, ZipMemberIsExtracted) {
  if (run_command("command -v zip").exit_code != 0) GTEST_SKIP() << "zip is not installed";
  const std::string dir = scssl::test::temp_dir("fetch-zip"), out = dir + "/data";
  fs::create_directories(dir + "/in");
  fs::copy_file(scssl::test::repo_file(kKang), dir + "/in/inner.h5ad");
  ASSERT_EQ(run_command("cd " + dir + "/in && zip -q ../k.zip inner.h5ad").exit_code, 0);
  Source src{"file://" + dir + "/k.zip", "zip", scssl::fetch::sha256_file(dir + "/k.zip"),
             "inner.h5ad"};
  auto r = fetch(write_manifest(dir, src) + " --into " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(scssl::fetch::sha256_file(out + "/kang.h5ad"), kKangSha);

  src.member = "absent.h5ad";
  r = fetch(write_manifest(dir, src) + " --into " + out + " --force");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "unzip failed") && has(r.output, "absent.h5ad")) << r.output;
  EXPECT_EQ(scssl::fetch::sha256_file(out + "/kang.h5ad"), kKangSha)
      << "the earlier file is untouched";
  EXPECT_EQ(entries(out), 2u);
}

TEST(Fetch, UnpinnedChecksumIsPrintedWithHowToPinIt) {
  const std::string dir = scssl::test::temp_dir("fetch-unpinned");
  Source src{"file://" + scssl::test::repo_file(kKang)};
  src.sha256 = "";
  auto r = fetch(write_manifest(dir, src) + " --into " + dir + "/data");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(has(r.output, "sha256 = \"" + kKangSha + "\"")) << r.output;
}

TEST(Fetch, WrongChecksumKeepsNothingAndNamesBothSums) {
  const std::string dir = scssl::test::temp_dir("fetch-badsum"), out = dir + "/data";
  Source src{"file://" + scssl::test::repo_file(kKang)};
  src.sha256 = std::string(64, '0');
  auto r = fetch(write_manifest(dir, src) + " --into " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(has(r.output, src.sha256) && has(r.output, kKangSha)) << r.output;
  EXPECT_FALSE(fs::exists(out)) << "the folder it created is removed again";

  // An existing folder keeps its other files and gets nothing new.
  fs::create_directories(out);
  std::ofstream(out + "/other.txt") << "keep";
  r = fetch(write_manifest(dir, src) + " --into " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(entries(out), 1u);
}

TEST(Fetch, ExistingDifferentFileIsLeftUnlessForced) {
  const std::string dir = scssl::test::temp_dir("fetch-exists"), out = dir + "/data";
  fs::create_directories(out);
  std::ofstream(out + "/kang.h5ad") << "an older file";
  const std::string manifest = write_manifest(dir, {"file://" + scssl::test::repo_file(kKang)});
  auto r = fetch(manifest + " --into " + out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(has(r.output, "--force")) << r.output;
  EXPECT_EQ(scssl::test::read_text(out + "/kang.h5ad"), "an older file");
  r = fetch(manifest + " --into " + out + " --force");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(scssl::fetch::sha256_file(out + "/kang.h5ad"), kKangSha);
}

TEST(Fetch, FailuresAreOneClearMessageAndLeaveNothing) {
  const std::string dir = scssl::test::temp_dir("fetch-fail"), out = dir + "/data";
  const std::string good = "file://" + scssl::test::repo_file(kKang);

  auto r = fetch(write_manifest(dir, {"file://" + dir + "/missing.h5ad"}) + " --into " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "could not download file://" + dir + "/missing.h5ad")) << r.output;

  // The converters are programs on PATH; a missing one is named with the package to install.
  ASSERT_EQ(run_command("gzip -c " + scssl::test::repo_file(kKang) + " > " + dir + "/k.h5ad.gz")
                .exit_code,
            0);
  Source gz{"file://" + dir + "/k.h5ad.gz", "h5ad.gz",
            scssl::fetch::sha256_file(dir + "/k.h5ad.gz")};
  r = fetch(write_manifest(dir, gz) + " --into " + out, "PATH=" + dir + " ");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "gzip is needed")) << r.output;

  Source wrong_cells{good};
  wrong_cells.n_cells = 1000;
  r = fetch(write_manifest(dir, wrong_cells) + " --into " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "has 1556 cells") && has(r.output, "n_cells = 1000")) << r.output;

  Source odd_format{good};
  odd_format.format = "tar";
  r = fetch(write_manifest(dir, odd_format) + " --into " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "source.format") && has(r.output, "kang.toml")) << r.output;

  r = fetch(write_manifest(dir, {good}, "source.url") + " --into " + out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.output, "'source.url' is missing") && has(r.output, "kang.toml")) << r.output;

  EXPECT_FALSE(fs::exists(out));
}

// Every catalog manifest reads with the schema, and the bundled files match their pinned sums.
TEST(Fetch, EveryCatalogManifestFollowsTheSchema) {
  size_t n = 0, bundled = 0;
  const fs::path catalog = scssl::test::repo_file("datasets");
  for (const auto& entry : fs::directory_iterator(catalog)) {
    if (entry.path().extension() != ".toml") continue;
    ++n;
    SCOPED_TRACE(entry.path().string());
    scssl::fetch::DatasetManifest m;
    ASSERT_NO_THROW(m = scssl::fetch::load_manifest(entry.path().string()));
    EXPECT_EQ(m.name, entry.path().stem().string());
    EXPECT_FALSE(m.title.empty());
    EXPECT_FALSE(m.citation.empty());
    EXPECT_FALSE(m.batch_key.empty());
    EXPECT_FALSE(m.label_key.empty());
    const fs::path local = catalog / m.name / m.file_name;
    if (fs::exists(local)) {
      ++bundled;
      EXPECT_EQ(scssl::fetch::sha256_file(local.string()), m.sha256);
      EXPECT_EQ(static_cast<int64_t>(fs::file_size(local)), m.size_bytes);
      EXPECT_EQ(scssl::test::load_h5ad(local.string(), m.batch_key, m.label_key).n_cells(),
                m.n_cells);
    }
  }
  EXPECT_GE(n, 11u) << "nine data sets of the study and the two bundled ones";
  EXPECT_EQ(bundled, 2u);
}
