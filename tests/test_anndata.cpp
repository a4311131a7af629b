// The scssl_anndata library (docs/hdf5.md): the low-level HDF5 wrapper (hdf5.hpp) and the
// AnnData-level reads and writes the host and the run-folder tools use (anndata.hpp).
#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "h5ad_fixtures.hpp"
#include "scssl/anndata/anndata.hpp"
#include "support.hpp"

using namespace scssl;
using namespace scssl::test::fixtures;
namespace fs = std::filesystem;

namespace {

class Hdf5 : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir(std::string("anndata-") +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  // Every name in the test's folder, to see that nothing (no temporary) was left behind.
  std::set<std::string> listing() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.insert(e.path().filename().string());
    return names;
  }
  std::string dir_;
};

using AnnData = Hdf5;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_TRUE(contains(text, part)) << "expected '" << (part) << "' in: " << (text)

using test::error_of;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A copy of the bundled Kang file cut to `fraction` of its bytes.
std::string truncated_copy(const std::string& path, double fraction) {
  const std::string bytes =
      read_text(test::repo_file("datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad"));
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size() * fraction));
  return path;
}

}  // namespace

// ---- the low-level layer (hdf5.hpp)
// ------------------------------------------------------------------

TEST_F(Hdf5, NumericReadsRefuseValuesThatDoNotFit) {
  const std::string path = file("numbers.h5");
  {
    h5::File f = h5::File::create(path);
    write_vec(f.root(), "big", std::vector<int64_t>{1, int64_t{1} << 40});
    write_vec(f.root(), "u8", std::vector<uint8_t>{1, 200});
    write_vec(f.root(), "frac", std::vector<double>{1, 1.5});
    write_vec(f.root(), "nan", std::vector<double>{1, std::nan("")});
    write_vec(f.root(), "huge", std::vector<double>{1, 1e300});
    write_vec(f.root(), "ok", std::vector<double>{-3, 4e9});
  }
  h5::File f = h5::File::open(path);
  const h5::Group& r = f.root();
  auto error_of = [&](const std::function<void()>& fn) -> std::string {
    try {
      fn();
    } catch (const BadData& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_CONTAINS(error_of([&] { r.dataset("big").read_vector<int32_t>(); }),
                  "'big' holds a value that does not fit int32");
  EXPECT_EQ(r.dataset("big").read_vector<int64_t>()[1], int64_t{1} << 40);
  EXPECT_CONTAINS(error_of([&] { r.dataset("u8").read_vector<int8_t>(); }), "does not fit int8");
  EXPECT_EQ(r.dataset("u8").read_vector<int32_t>()[1], 200);
  EXPECT_CONTAINS(error_of([&] { r.dataset("frac").read_vector<int64_t>(); }),
                  "'frac' holds a value that is not an int64");
  EXPECT_CONTAINS(error_of([&] { r.dataset("nan").read_vector<int32_t>(); }), "'nan'");
  EXPECT_TRUE(std::isnan(r.dataset("nan").read_vector<float>()[1]));
  EXPECT_CONTAINS(error_of([&] { r.dataset("huge").read_vector<float>(); }),
                  "does not fit float32");
  EXPECT_EQ(r.dataset("ok").read_vector<int64_t>(), (std::vector<int64_t>{-3, 4000000000}));
  EXPECT_CONTAINS(error_of([&] { r.dataset("missing"); }),
                  path + ": there is no dataset 'missing'");
  EXPECT_CONTAINS(error_of([&] { r.group("ok"); }), "'ok' is not a group");
  EXPECT_FALSE(r.has("ok/child"));
}

TEST_F(Hdf5, ReadsStringsOfEveryKindAndAttributes) {
  const std::string path = file("strings.h5");
  {
    h5::File f = h5::File::create(path);
    const h5::Group& r = f.root();
    r.write_strings("utf8", {"café", "", "naïve"});
    write_vlen_ascii(r.id(), "ascii", {"a", "bc"});
    write_fixed_strings(r.id(), "nullpad", {"ab", "abcd"}, 4);
    write_fixed_strings(r.id(), "spacepad", {"ab", "abcd"}, 6, H5T_STR_SPACEPAD);
    r.set_attr("text", "hello");
    r.set_attr("list", std::vector<std::string>{"x", "y"});
    r.set_attr("shape", std::vector<int64_t>{3, 4});
    // anndata 0.11 writes an empty column order as an empty float64 array.
    hsize_t zero = 0;
    hid_t s = H5Screate_simple(1, &zero, nullptr);
    H5Aclose(H5Acreate2(r.id(), "empty", H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT));
    H5Sclose(s);
  }
  h5::File f = h5::File::open(path);
  const h5::Group& r = f.root();
  EXPECT_EQ(r.dataset("utf8").read_strings(), (std::vector<std::string>{"café", "", "naïve"}));
  EXPECT_EQ(r.dataset("ascii").read_strings(), (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(r.dataset("nullpad").read_strings(), (std::vector<std::string>{"ab", "abcd"}));
  EXPECT_EQ(r.dataset("spacepad").read_strings(), (std::vector<std::string>{"ab", "abcd"}));
  EXPECT_EQ(r.attr_string("text"), "hello");
  EXPECT_EQ(r.attr_strings("text"), (std::vector<std::string>{"hello"}));
  EXPECT_EQ(r.attr_strings("list"), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(r.attr_ints("shape"), (std::vector<int64_t>{3, 4}));
  EXPECT_TRUE(r.attr_strings("empty").empty());
  EXPECT_EQ(r.attr_string_or("absent", "fallback"), "fallback");
  EXPECT_THROW(r.attr_string("absent"), BadData);
  EXPECT_THROW(r.dataset("utf8").read_vector<double>(), BadData);
  EXPECT_EQ(r.children(), (std::vector<std::string>{"ascii", "nullpad", "spacepad", "utf8"}));
}

TEST_F(Hdf5, CreateNewRefusesAnExistingFile) {
  const std::string path = file("exists.h5");
  std::ofstream(path) << "keep";
  EXPECT_CONTAINS(error_of([&] { h5::File::create_new(path); }, SCSSL_ERR_IO),
                  path + ": already exists; it is not replaced");
  EXPECT_EQ(read_text(path), "keep");
  h5::File f = h5::File::create_new(file("fresh.h5"));
  EXPECT_TRUE(f.root().children().empty());
}

// ---- AnnData-level reads
// ---------------------------------------------------------------------------

TEST_F(AnnData, InspectsWithoutReadingMatrices) {
  const std::string path = write_current(file("current.h5ad"));
  const anndata::Summary s = anndata::inspect(path);
  EXPECT_EQ(s.n_obs, 4);
  EXPECT_EQ(s.n_vars, 5);
  EXPECT_EQ(s.obs_columns,
            (std::vector<std::string>{"batch", "cell_type", "donor", "score", "n_genes", "u8",
                                      "flag", "nint", "nbool", "nstr"}));
  EXPECT_EQ(s.var_columns, (std::vector<std::string>{"gene_ids"}));
  EXPECT_TRUE(s.obsm_keys.empty());
  EXPECT_TRUE(s.layers.empty());
  EXPECT_TRUE(s.has_x);
  EXPECT_FALSE(s.has_raw_x);
  EXPECT_TRUE(s.has_matrix(""));
  EXPECT_FALSE(s.has_matrix("raw"));
  EXPECT_FALSE(s.has_matrix("counts"));
  EXPECT_EQ(anndata::Summary::matrix_key("counts"), "layers/counts");

  // anndata < 0.7: compound obs/var, raw.X.
  const std::string old = file("v05.h5ad");
  write_pre07(old);
  const anndata::Summary o = anndata::inspect(old);
  EXPECT_EQ(o.n_obs, 4);
  EXPECT_EQ(o.n_vars, 5);
  EXPECT_EQ(o.obs_columns, (std::vector<std::string>{"batch", "n_counts", "flag", "label"}));
  EXPECT_TRUE(o.has_matrix("raw"));
}

TEST_F(AnnData, ReadsObsColumnsAsCategories) {
  const std::string path = write_current(file("current.h5ad"));
  anndata::Categories c = anndata::read_obs_categories(path, "batch");
  EXPECT_EQ(c.names, (std::vector<std::string>{"b1", "b2"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{0, 1, 0, 1}));
  c = anndata::read_obs_categories(path, "cell_type");  // stored order kept, -1 = missing
  EXPECT_EQ(c.names, (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{2, 0, -1, 1}));
  c = anndata::read_obs_categories(path, "donor");  // strings: sorted distinct values
  EXPECT_EQ(c.names, (std::vector<std::string>{"d1", "d10", "d2"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{2, 0, 2, 1}));
  c = anndata::read_obs_categories(path, "score");  // numbers: sorted numerically
  EXPECT_EQ(c.names, (std::vector<std::string>{"-1.25", "0.5", "3", "10000000000"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{1, 0, 2, 3}));
  c = anndata::read_obs_categories(path, "nint");  // nullable: masked entries are missing
  EXPECT_EQ(c.names, (std::vector<std::string>{"1", "3", "4"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{0, -1, 1, 2}));
  c = anndata::read_obs_categories(path, "nstr");
  EXPECT_EQ(c.names, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{0, 1, -1, 0}));

  const std::string old = file("v05.h5ad");
  write_pre07(old);
  c = anndata::read_obs_categories(old, "batch");  // codes with uns/batch_categories
  EXPECT_EQ(c.names, (std::vector<std::string>{"p", "q"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{1, 0, 1, 0}));
  c = anndata::read_obs_categories(old, "label");
  EXPECT_EQ(c.names, (std::vector<std::string>{"aa", "mm", "zz"}));
  EXPECT_EQ(c.codes, (std::vector<int32_t>{2, 0, 2, 1}));
}

TEST_F(AnnData, ReadsTheBundledFilesAsThePluginDoes) {
  const std::string path =
      test::repo_file("datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad");
  const anndata::Summary s = anndata::inspect(path);
  EXPECT_EQ(s.n_obs, 1556);
  const anndata::Categories c = anndata::read_obs_categories(path, "batch");
  std::map<std::string, int64_t> counts;
  for (int32_t code : c.codes) counts[code < 0 ? "<missing>" : c.names[code]]++;
  EXPECT_EQ(counts, (std::map<std::string, int64_t>{
                        {"ctrl101", 454}, {"ctrl107", 296}, {"stim101", 500}, {"stim107", 306}}));
}

// The h5ad plugin reads obs through the same Frame (frame.hpp); here every obs column of both
// fixture layouts must come out of the plugin, loaded as the batch column (so numbers become
// categories), exactly as read_obs_categories returns it.
TEST_F(AnnData, ObsCategoriesAreWhatTheDatasetPluginMakes) {
  const std::string current = write_current(file("current.h5ad"));
  const std::string old = file("v05.h5ad");
  write_pre07(old);
  for (const std::string& path : {current, old}) {
    const anndata::Summary s = anndata::inspect(path);
    ASSERT_GE(s.obs_columns.size(), 4u);
    for (const std::string& name : s.obs_columns) {
      SCOPED_TRACE(path + ": obs/" + name);
      const CellData d = test::load_h5ad(path, name, "");
      auto it = std::find_if(d.columns.begin(), d.columns.end(),
                             [&](const Column& c) { return c.name == name; });
      ASSERT_NE(it, d.columns.end());
      ASSERT_TRUE(it->categorical);
      const torch::Tensor codes = it->codes.contiguous();
      const std::vector<int32_t> plugin_codes(codes.data_ptr<int32_t>(),
                                              codes.data_ptr<int32_t>() + codes.numel());
      const anndata::Categories c = anndata::read_obs_categories(path, name);
      EXPECT_EQ(c.names, it->categories);
      EXPECT_EQ(c.codes, plugin_codes);
      EXPECT_EQ(static_cast<int64_t>(c.codes.size()), s.n_obs);
    }
  }
}

TEST_F(AnnData, MissingKeysGiveOneErrorNamingTheKeyAndTheFile) {
  const std::string path = write_current(file("keys.h5ad"));
  EXPECT_CONTAINS(error_of([&] { anndata::read_obs_categories(path, "celltype"); }),
                  path + ": obs has no column 'celltype' (columns: batch, cell_type, donor");
  EXPECT_CONTAINS(error_of([&] { anndata::read_obsm(path, "X_umap"); }),
                  path + ": obsm['X_umap'] does not exist (obsm keys: none)");
  const std::string noobsm = write_current(file("noobsm.h5ad"), write_csr_x,
                                           [](const h5::Group& root) { root.remove("obsm"); });
  EXPECT_CONTAINS(error_of([&] { anndata::read_obsm(noobsm, "X_pca"); }),
                  noobsm + ": obsm['X_pca'] does not exist (the file has no obsm)");
  const std::string noobs = write_current(file("noobs.h5ad"), write_csr_x,
                                          [](const h5::Group& root) { root.remove("obs"); });
  EXPECT_CONTAINS(error_of([&] { anndata::inspect(noobs); }), noobs + ": there is no 'obs'");
  const std::string plain = file("plain.h5");
  h5::File::create(plain).flush();
  EXPECT_CONTAINS(error_of([&] { anndata::read_embedding_h5(plain); }),
                  plain + ": there is no dataset 'embedding'");
  const std::string missing = file("missing.h5ad");
  EXPECT_CONTAINS(error_of([&] { anndata::inspect(missing); }, SCSSL_ERR_IO),
                  missing + ": cannot open");
}

TEST_F(AnnData, CorruptFilesGiveOneClearError) {
  for (double fraction : {0.5, 0.95}) {
    const std::string cut =
        truncated_copy(file("cut" + std::to_string(int(fraction * 100)) + ".h5ad"), fraction);
    const std::string msg = error_of([&] {
      anndata::inspect(cut);
      anndata::read_obs_categories(cut, "cell_type");
    });
    EXPECT_CONTAINS(msg, cut + ": ");
    EXPECT_CONTAINS(msg, "truncated");
  }
  const std::string text = file("text.h5ad");
  std::ofstream(text) << "cell,gene\n1,2\n";
  EXPECT_CONTAINS(error_of([&] { anndata::read_obsm(text, "X_pca"); }),
                  text + ": is not an HDF5 file");

  // A 2-d obsm entry with a NaN or of the wrong rank.
  const std::string bad = write_current(file("bad.h5ad"), write_csr_x, [](const h5::Group& root) {
    const std::vector<float> v = {1, std::nanf(""), 3, 4};
    root.group("obsm").write("X_nan", h5::NumType::Float32, v.data(), {2, 2});
    root.group("obsm").write("X_flat", h5::NumType::Float32, v.data(), {4});
  });
  EXPECT_CONTAINS(error_of([&] { anndata::read_obsm(bad, "X_nan"); }),
                  bad + ": obsm['X_nan'] has a non-finite value at cell 0, dimension 1");
  EXPECT_CONTAINS(error_of([&] { anndata::read_obsm(bad, "X_flat"); }),
                  bad + ": obsm['X_flat'] must be a non-empty 2-d array");
}

// ---- AnnData-level writes
// ----------------------------------------------------------------------------

TEST_F(AnnData, EmbeddingFilesRoundTrip) {
  const std::string path = file("embedding.h5");
  const std::vector<float> emb = {1, 2, 3, 4, 5, 6};
  anndata::write_embedding_h5(path, emb.data(), 3, 2, {"a", "b", "c"});
  std::vector<std::string> names;
  const anndata::Matrix m = anndata::read_embedding_h5(path, &names);
  EXPECT_EQ(m.rows, 3);
  EXPECT_EQ(m.cols, 2);
  EXPECT_EQ(m.values, emb);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));
  {
    h5::File f = h5::File::open(path);
    EXPECT_EQ(f.root().dataset("embedding").type().describe(), "float32");
    EXPECT_EQ(f.root().dataset("embedding").attr_string("encoding-type"), "array");
    EXPECT_EQ(f.root().dataset("cell_names").attr_string("encoding-type"), "string-array");
  }
  EXPECT_CONTAINS(error_of(
                      [&] {
                        anndata::write_embedding_h5(file("e2.h5"), emb.data(), 3, 2, {"a", "b"});
                      },
                      SCSSL_ERR_INVALID_ARGUMENT),
                  "2 cell names for 3 embedding rows");
  // Errors name the file asked for, never the temporary it is written under.
  const std::string nodir = file("no/such/dir/e.h5");
  const std::string msg = error_of(
      [&] {
        anndata::write_embedding_h5(nodir, emb.data(), 3, 2, {"a", "b", "c"});
      },
      SCSSL_ERR_IO);
  EXPECT_CONTAINS(msg, nodir + ": could not create the file");
  EXPECT_FALSE(contains(msg, ".tmp-"));
  EXPECT_EQ(listing(), (std::set<std::string>{"embedding.h5"}));
}

TEST_F(AnnData, WritesACopyWithAnObsmMatrixThatAnndataReads) {
  const std::string source = write_current(file("source.h5ad"));
  const std::string target = file("copy.h5ad");
  const std::vector<float> emb = {1, 2, 3, 4, 5, 6, 7, 8};
  anndata::write_copy_with_obsm(source, target, "X_scssl", emb.data(), 4, 2);
  const anndata::Matrix m = anndata::read_obsm(target, "X_scssl");
  EXPECT_EQ(m.rows, 4);
  EXPECT_EQ(m.cols, 2);
  EXPECT_EQ(m.values, emb);
  {
    h5::File f = h5::File::open(target);
    const h5::Group obsm = f.root().group("obsm");
    EXPECT_EQ(obsm.attr_string("encoding-type"), "dict");
    const h5::Dataset d = obsm.dataset("X_scssl");
    EXPECT_EQ(d.attr_string("encoding-type"), "array");
    EXPECT_EQ(d.attr_string("encoding-version"), "0.2.0");
    // Attributes as h5py writes str: scalar, variable-length, UTF-8.
    hid_t a = H5Aopen(d.id(), "encoding-type", H5P_DEFAULT);
    hid_t t = H5Aget_type(a), s = H5Aget_space(a);
    EXPECT_EQ(H5Tget_class(t), H5T_STRING);
    EXPECT_GT(H5Tis_variable_str(t), 0);
    EXPECT_EQ(H5Tget_cset(t), H5T_CSET_UTF8);
    EXPECT_EQ(H5Sget_simple_extent_type(s), H5S_SCALAR);
    H5Sclose(s);
    H5Tclose(t);
    H5Aclose(a);
  }
  // The source is untouched; the copy keeps everything else.
  EXPECT_TRUE(anndata::inspect(source).obsm_keys.empty());
  EXPECT_EQ(anndata::inspect(target).obs_columns, anndata::inspect(source).obs_columns);
  EXPECT_EQ(anndata::read_obs_categories(target, "cell_type").codes,
            (std::vector<int32_t>{2, 0, -1, 1}));

  // A key the source already has is replaced in the copy, whatever its shape; a source without
  // obsm gets the group.
  const std::string with_key =
      write_current(file("with_key.h5ad"), write_csr_x, [](const h5::Group& root) {
        const std::vector<double> old(12, -1.0);
        root.group("obsm").write("X_pca", h5::NumType::Float64, old.data(), {4, 3});
      });
  anndata::write_copy_with_obsm(with_key, file("replaced.h5ad"), "X_pca", emb.data(), 4, 2);
  EXPECT_EQ(anndata::read_obsm(file("replaced.h5ad"), "X_pca").values, emb);
  EXPECT_EQ(anndata::read_obsm(with_key, "X_pca").cols, 3);
  const std::string bare = write_current(file("bare.h5ad"), write_csr_x,
                                         [](const h5::Group& root) { root.remove("obsm"); });
  anndata::write_copy_with_obsm(bare, file("bare_copy.h5ad"), "X_pca", emb.data(), 4, 2);
  {
    h5::File f = h5::File::open(file("bare_copy.h5ad"));
    EXPECT_EQ(f.root().group("obsm").attr_string("encoding-version"), "0.1.0");
  }

  // A read-only source still gives a writable copy.
  const std::string readonly = write_current(file("readonly.h5ad"));
  fs::permissions(readonly,
                  fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                  fs::perm_options::remove);
  anndata::write_copy_with_obsm(readonly, file("from_readonly.h5ad"), "X_scssl", emb.data(), 4, 2);
  EXPECT_EQ(anndata::read_obsm(file("from_readonly.h5ad"), "X_scssl").values, emb);
}

TEST_F(AnnData, RefusedCopiesLeaveNothingBehind) {
  const std::string source = write_current(file("source.h5ad"));
  const std::vector<float> emb(8, 1.0f);
  const std::set<std::string> before = listing();
  EXPECT_CONTAINS(error_of([&] {
                    anndata::write_copy_with_obsm(source, file("t.h5ad"), "X_bad", emb.data(), 2,
                                                  4);
                  }),
                  source + ": obsm['X_bad'] would have 2 rows but the file has 4 cells");
  EXPECT_CONTAINS(
      error_of(
          [&] { anndata::write_copy_with_obsm(source, file("t.h5ad"), "a/b", emb.data(), 4, 2); },
          SCSSL_ERR_INVALID_ARGUMENT),
      "obsm key 'a/b' must be a non-empty name without '/'");
  const std::string old = file("old.h5ad");
  write_pre07(old);
  {
    h5::File f = h5::File::open(old, h5::File::Mode::ReadWrite);
    write_vec(f.root(), "obsm", std::vector<double>(4, 0.0));
  }
  EXPECT_CONTAINS(error_of([&] {
                    anndata::write_copy_with_obsm(old, file("t.h5ad"), "X_pca", emb.data(), 4, 2);
                  }),
                  "pre-0.7 layout");
  const std::string cut = truncated_copy(file("cut.h5ad"), 0.5);
  EXPECT_CONTAINS(error_of([&] {
                    anndata::write_copy_with_obsm(cut, file("t.h5ad"), "X_pca", emb.data(), 4, 2);
                  }),
                  cut + ": ");
  EXPECT_CONTAINS(error_of(
                      [&] {
                        anndata::write_copy_with_obsm(file("missing.h5ad"), file("t.h5ad"), "X_pca",
                                                      emb.data(), 4, 2);
                      },
                      SCSSL_ERR_IO),
                  "missing.h5ad: cannot open");
  std::set<std::string> expected = before;
  expected.insert({"old.h5ad", "cut.h5ad"});
  EXPECT_EQ(listing(), expected);
}

TEST_F(AnnData, WritingNeverClobbersAnExistingTarget) {
  const std::string source = write_current(file("source.h5ad"));
  const std::vector<float> emb(8, 2.0f);
  const std::string target = file("taken.h5ad");
  std::ofstream(target) << "an earlier result";
  EXPECT_CONTAINS(
      error_of([&] { anndata::write_copy_with_obsm(source, target, "X", emb.data(), 4, 2); },
               SCSSL_ERR_IO),
      target + ": already exists; it is not replaced");
  EXPECT_CONTAINS(error_of(
                      [&] {
                        anndata::write_embedding_h5(target, emb.data(), 4, 2, {"a", "b", "c", "d"});
                      },
                      SCSSL_ERR_IO),
                  target + ": already exists; it is not replaced");
  EXPECT_EQ(read_text(target), "an earlier result");
  // The source itself is never a valid target either.
  const std::string source_bytes = read_text(source);
  EXPECT_CONTAINS(
      error_of([&] { anndata::write_copy_with_obsm(source, source, "X", emb.data(), 4, 2); },
               SCSSL_ERR_IO),
      "already exists");
  EXPECT_EQ(read_text(source), source_bytes);
  // A dangling symbolic link is a name in use too: nothing is written through it.
  const std::string link = file("link.h5");
  fs::create_symlink(file("elsewhere.h5"), link);
  EXPECT_CONTAINS(error_of(
                      [&] {
                        anndata::write_embedding_h5(link, emb.data(), 4, 2, {"a", "b", "c", "d"});
                      },
                      SCSSL_ERR_IO),
                  "already exists");
  EXPECT_FALSE(fs::exists(file("elsewhere.h5")));
  EXPECT_EQ(listing(), (std::set<std::string>{"source.h5ad", "taken.h5ad", "link.h5"}));
}

TEST_F(AnnData, CopiesOfABundledFileLoadThroughTheDatasetPlugin) {
  const std::string source =
      test::repo_file("datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad");
  const std::string target = file("triana.h5ad");
  torch::Tensor emb = torch::arange(250 * 16, torch::kFloat32).reshape({250, 16}) / 7;
  anndata::write_copy_with_obsm(source, target, "X_scssl", emb.data_ptr<float>(), 250, 16);
  const anndata::Matrix m = anndata::read_obsm(target, "X_scssl");
  EXPECT_TRUE(
      torch::equal(torch::from_blob(const_cast<float*>(m.values.data()), {m.rows, m.cols}), emb));
  EXPECT_EQ(anndata::inspect(target).obsm_keys, (std::vector<std::string>{"X_scssl"}));
  host::HostServices services;
  services.on_log = [](scssl_log_level, const std::string&) {};
  const host::LoadedPlugin& p = test::plugins().get("h5ad", SCSSL_KIND_DATASET);
  ParamSet params = p.default_params();
  params.set("path", target);
  const CellData d = host::load_dataset(p, params, services);
  EXPECT_EQ(d.n_cells(), 250);
  EXPECT_EQ(d.modalities.size(), 2u);
}
