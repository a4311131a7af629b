// The h5ad dataset plugin: small AnnData files in every layout anndata 0.5 to 0.11 produced
// (h5ad_fixtures.hpp), malformed files, and the real data files (bundled in datasets/, or in
// ../shared when present). The scssl_anndata library itself is tested in test_anndata.cpp.
#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <functional>
#include <map>

#include "h5ad_fixtures.hpp"
#include "support.hpp"

using namespace scssl;
using namespace scssl::test::fixtures;
namespace fs = std::filesystem;

namespace {

// ---- loading -----------------------------------------------------------------------------------

CellData load(const std::string& path, const std::map<std::string, std::string>& overrides = {}) {
  host::HostServices services;
  services.on_log = [](scssl_log_level, const std::string&) {};
  const host::LoadedPlugin& p = test::plugins().get("h5ad", SCSSL_KIND_DATASET);
  ParamSet params = p.default_params();
  params.set("path", path);
  for (const auto& [k, v] : overrides) params.set(k, v);
  return host::load_dataset(p, params, services);
}

// The message of the error loading throws (and checks that it is a scssl::Error of that status).
std::string load_error(const std::string& path, const std::map<std::string, std::string>& overrides,
                       scssl_status status = SCSSL_ERR_BAD_DATA) {
  return test::error_of([&] { load(path, overrides); }, status);
}

std::string load_error(const std::string& path) { return load_error(path, {}); }

torch::Tensor dense_of(const Matrix& m) { return m.slice_dense(0, m.rows); }

torch::Tensor expected_dense() { return torch::tensor(kDense, torch::kFloat32).reshape({4, 5}); }

void expect_rows_sorted(const Matrix& m) {
  const int64_t* p = m.indptr.data_ptr<int64_t>();
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t k = p[r] + 1; k < p[r + 1]; ++k) EXPECT_LT(idx[k - 1], idx[k]) << "row " << r;
}

std::vector<int32_t> codes_of(const Column& c) {
  return std::vector<int32_t>(c.codes.data_ptr<int32_t>(),
                              c.codes.data_ptr<int32_t>() + c.codes.size(0));
}

std::vector<double> values_of(const Column& c) {
  return std::vector<double>(c.values.data_ptr<double>(),
                             c.values.data_ptr<double>() + c.values.size(0));
}

const Column& column(const CellData& d, const std::string& name) {
  const Column* c = d.find_column(name);
  if (!c) throw std::runtime_error("no column " + name);
  return *c;
}

// Category counts of a column, by name.
std::map<std::string, int64_t> counts_of(const Column& c) {
  std::map<std::string, int64_t> out;
  for (int32_t code : codes_of(c)) out[code < 0 ? "<missing>" : c.categories[code]]++;
  return out;
}

class H5ad : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir(std::string("h5ad-") +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_TRUE(contains(text, part)) << "expected '" << (part) << "' in: " << (text)

}  // namespace

// ---- current layout
// ----------------------------------------------------------------------------------

TEST_F(H5ad, ReadsTheCurrentLayoutWithEveryColumnKind) {
  CellData d = load(write_current(file("current.h5ad")));
  EXPECT_EQ(d.cell_names, (std::vector<std::string>{"c0", "c1", "c2", "c3"}));
  ASSERT_EQ(d.modalities.size(), 1u);
  EXPECT_EQ(d.modalities[0].name, "RNA");
  EXPECT_EQ(d.modalities[0].features, (std::vector<std::string>{"g0", "g1", "g2", "g3", "g4"}));
  EXPECT_TRUE(d.modalities[0].X.is_csr());
  EXPECT_TRUE(d.modalities[0].counts.empty());
  EXPECT_TRUE(torch::equal(dense_of(d.modalities[0].X), expected_dense()));
  EXPECT_EQ(d.batch_key, "batch");
  EXPECT_EQ(d.label_key, "cell_type");

  std::vector<std::string> names;
  for (const auto& c : d.columns) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"batch", "cell_type", "donor", "score", "n_genes",
                                             "u8", "flag", "nint", "nbool", "nstr"}));
  const Column& batch = column(d, "batch");
  EXPECT_TRUE(batch.categorical);
  EXPECT_EQ(batch.categories, (std::vector<std::string>{"b1", "b2"}));
  EXPECT_EQ(codes_of(batch), (std::vector<int32_t>{0, 1, 0, 1}));
  const Column& type = column(d, "cell_type");
  EXPECT_EQ(type.categories, (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_EQ(codes_of(type), (std::vector<int32_t>{2, 0, -1, 1}));
  // Strings become categories sorted as scanpy's sanitize sorts them.
  const Column& donor = column(d, "donor");
  EXPECT_TRUE(donor.categorical);
  EXPECT_EQ(donor.categories, (std::vector<std::string>{"d1", "d10", "d2"}));
  EXPECT_EQ(codes_of(donor), (std::vector<int32_t>{2, 0, 2, 1}));
  EXPECT_FALSE(column(d, "score").categorical);
  EXPECT_EQ(values_of(column(d, "score")), (std::vector<double>{0.5, -1.25, 3, 1e10}));
  EXPECT_EQ(values_of(column(d, "n_genes")), (std::vector<double>{2, 0, 2, 3}));
  EXPECT_EQ(values_of(column(d, "u8")), (std::vector<double>{0, 255, 7, 1}));
  EXPECT_EQ(values_of(column(d, "flag")), (std::vector<double>{1, 0, 0, 1}));
  std::vector<double> nint = values_of(column(d, "nint"));
  EXPECT_EQ(nint[0], 1);
  EXPECT_TRUE(std::isnan(nint[1]));
  EXPECT_EQ(nint[2], 3);
  EXPECT_EQ(nint[3], 4);
  std::vector<double> nbool = values_of(column(d, "nbool"));
  EXPECT_EQ(nbool[0], 1);
  EXPECT_EQ(nbool[1], 0);
  EXPECT_TRUE(std::isnan(nbool[2]));
  EXPECT_EQ(nbool[3], 0);
  const Column& nstr = column(d, "nstr");
  EXPECT_EQ(nstr.categories, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(codes_of(nstr), (std::vector<int32_t>{0, 1, -1, 0}));
}

TEST_F(H5ad, EveryMatrixEncodingGivesTheSameCsr) {
  std::map<std::string, Writer> writers;
  writers["csr_int64_float64"] = [](const h5::Group& root) {
    write_sparse(root, "X", "csr_matrix", 4, 5,
                 std::vector<int64_t>(kIndptr.begin(), kIndptr.end()),
                 std::vector<int64_t>(kIndices.begin(), kIndices.end()),
                 std::vector<double>(kData.begin(), kData.end()));
  };
  writers["csr_int_values"] = [](const h5::Group& root) {
    write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr, kIndices,
                 std::vector<int64_t>(kData.begin(), kData.end()));
  };
  writers["csr_uint16_values"] = [](const h5::Group& root) {
    write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr, kIndices,
                 std::vector<uint16_t>(kData.begin(), kData.end()));
  };
  writers["csc"] = [](const h5::Group& root) {
    write_sparse(root, "X", "csc_matrix", 4, 5, kColptr, kRowIndices, kCscData);
  };
  writers["csc_int64"] = [](const h5::Group& root) {
    write_sparse(root, "X", "csc_matrix", 4, 5,
                 std::vector<int64_t>(kColptr.begin(), kColptr.end()),
                 std::vector<int64_t>(kRowIndices.begin(), kRowIndices.end()),
                 std::vector<int32_t>(kCscData.begin(), kCscData.end()));
  };
  writers["dense_float64"] = [](const h5::Group& root) {
    std::vector<double> v(kDense.begin(), kDense.end());
    set_encoding(root.write("X", h5::NumType::Float64, v.data(), {4, 5}), "array", "0.2.0");
  };
  writers["dense_float32_gzip"] = [](const h5::Group& root) {
    root.write("X", h5::NumType::Float32, kDense.data(), {4, 5}, true);
  };
  writers["dense_int32_chunked"] = [](const h5::Group& root) {
    // Chunks of 3 x 2 do not line up with rows or columns: reading in row blocks must cope.
    std::vector<int32_t> v(kDense.begin(), kDense.end());
    hsize_t dims[2] = {4, 5}, chunk[2] = {3, 2};
    hid_t s = H5Screate_simple(2, dims, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    H5Pset_deflate(dcpl, 4);
    hid_t d = H5Dcreate2(root.id(), "X", H5T_STD_I32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(s);
  };
  writers["dense_uint8"] = [](const h5::Group& root) {
    std::vector<uint8_t> v(kDense.begin(), kDense.end());
    root.write("X", h5::NumType::UInt8, v.data(), {4, 5});
  };
  writers["h5sparse_csr"] = [](const h5::Group& root) {  // anndata < 0.7 attributes
    h5::Group g = root.create_group("X");
    g.set_attr("h5sparse_format", "csr");
    g.set_attr("h5sparse_shape", std::vector<int64_t>{4, 5});
    write_vec(g, "indptr", kIndptr);
    write_vec(g, "indices", kIndices);
    write_vec(g, "data", kData);
  };
  for (const auto& [name, writer] : writers) {
    SCOPED_TRACE(name);
    CellData d = load(write_current(file(name + ".h5ad"), writer));
    ASSERT_EQ(d.modalities.size(), 1u);
    const Matrix& x = d.modalities[0].X;
    ASSERT_TRUE(x.is_csr());
    EXPECT_EQ(x.nnz(), 7);
    EXPECT_TRUE(torch::equal(dense_of(x), expected_dense()));
    expect_rows_sorted(x);
  }
}

TEST_F(H5ad, LargerCscAndDenseMatricesMatchCsr) {
  // Big enough for several read blocks of the dense path, with random sparsity.
  const int64_t rows = 3000, cols = 1500;
  torch::manual_seed(7);
  torch::Tensor dense = torch::floor(torch::relu(torch::randn({rows, cols}) * 3 - 2));
  torch::Tensor t = dense.t().contiguous();
  auto write_compressed = [&](const h5::Group& root, const char* format, const torch::Tensor& m) {
    torch::Tensor mask = m != 0;
    std::vector<int64_t> ptr(m.size(0) + 1, 0);
    torch::Tensor counts = mask.sum(1);
    for (int64_t i = 0; i < m.size(0); ++i) ptr[i + 1] = ptr[i] + counts[i].item<int64_t>();
    torch::Tensor idx = mask.nonzero().select(1, 1).to(torch::kInt32).contiguous();
    torch::Tensor val = m.masked_select(mask).contiguous();
    std::vector<int32_t> iv(idx.data_ptr<int32_t>(), idx.data_ptr<int32_t>() + idx.numel());
    std::vector<float> vv(val.data_ptr<float>(), val.data_ptr<float>() + val.numel());
    write_sparse(root, "X", format, rows, cols, ptr, iv, vv);
  };
  auto large_frames = [&](const h5::Group& root) {
    std::vector<std::string> cells, genes;
    for (int64_t i = 0; i < rows; ++i) cells.push_back("cell" + std::to_string(i));
    for (int64_t j = 0; j < cols; ++j) genes.push_back("gene" + std::to_string(j));
    write_frame(root, "obs", cells, {});
    write_frame(root, "var", genes, {});
  };
  const std::string csc = file("csc.h5ad"), dense_file = file("dense.h5ad");
  {
    h5::File f = h5::File::create(csc);
    large_frames(f.root());
    write_compressed(f.root(), "csc_matrix", t);
  }
  {
    h5::File f = h5::File::create(dense_file);
    large_frames(f.root());
    f.root().write("X", h5::NumType::Float32, dense.data_ptr<float>(), {rows, cols}, true);
  }
  for (const std::string& path : {csc, dense_file}) {
    SCOPED_TRACE(path);
    CellData d = load(path, {{"batch_key", ""}, {"label_key", ""}});
    const Matrix& x = d.modalities[0].X;
    EXPECT_EQ(x.nnz(), (dense != 0).sum().item<int64_t>());
    EXPECT_TRUE(torch::equal(dense_of(x), dense));
    expect_rows_sorted(x);
  }
}

TEST_F(H5ad, AllZeroMatricesHaveNoStoredValues) {
  const std::string dense = write_current(file("zeros_dense.h5ad"), [](const h5::Group& root) {
    std::vector<float> zeros(20, 0.0f);
    root.write("X", h5::NumType::Float32, zeros.data(), {4, 5});
  });
  const std::string csc = write_current(file("zeros_csc.h5ad"), [](const h5::Group& root) {
    write_sparse(root, "X", "csc_matrix", 4, 5, std::vector<int32_t>(6, 0), std::vector<int32_t>{},
                 std::vector<float>{});
  });
  for (const std::string& path : {dense, csc}) {
    CellData d = load(path);
    EXPECT_EQ(d.modalities[0].X.nnz(), 0);
    EXPECT_TRUE(torch::equal(dense_of(d.modalities[0].X), torch::zeros({4, 5})));
  }
}

TEST_F(H5ad, NumericBatchAndLabelColumnsBecomeCategories) {
  const std::string path =
      write_current(file("numeric_keys.h5ad"), write_csr_x, [](const h5::Group& root) {
        h5::Group obs = root.group("obs");
        obs.remove("batch");
        obs.remove("cell_type");
        write_vec(obs, "batch", std::vector<int64_t>{3, 1, 3, 2});
        write_vec(obs, "cell_type", std::vector<double>{0.5, 2, 0.5, std::nan("")});
      });
  CellData d = load(path);
  const Column& batch = column(d, "batch");
  EXPECT_TRUE(batch.categorical);
  EXPECT_EQ(batch.categories, (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(codes_of(batch), (std::vector<int32_t>{2, 0, 2, 1}));
  const Column& type = column(d, "cell_type");
  EXPECT_EQ(type.categories, (std::vector<std::string>{"0.5", "2"}));
  EXPECT_EQ(codes_of(type), (std::vector<int32_t>{0, 1, 0, -1}));
  // Other numeric columns stay numeric.
  EXPECT_FALSE(column(d, "score").categorical);
}

TEST_F(H5ad, EmptyKeysMeanNoBatchOrLabel) {
  CellData d = load(write_current(file("keys.h5ad")), {{"batch_key", ""}, {"label_key", ""}});
  EXPECT_EQ(d.batches(), nullptr);
  EXPECT_EQ(d.labels(), nullptr);
  EXPECT_EQ(d.columns.size(), 10u);
}

TEST_F(H5ad, SplitsFeaturesIntoModalitiesRnaFirst) {
  auto check = [&](const std::string& path) {
    CellData d = load(path);
    ASSERT_EQ(d.modalities.size(), 2u);
    EXPECT_EQ(d.modalities[0].name, "RNA");
    EXPECT_EQ(d.modalities[1].name, "ADT");
    EXPECT_EQ(d.modalities[0].features, (std::vector<std::string>{"g0", "g2", "g4"}));
    EXPECT_EQ(d.modalities[1].features, (std::vector<std::string>{"g1", "g3"}));
    torch::Tensor all = expected_dense();
    EXPECT_TRUE(torch::equal(dense_of(d.modalities[0].X),
                             all.index_select(1, torch::tensor({0, 2, 4}, torch::kInt64))));
    EXPECT_TRUE(torch::equal(dense_of(d.modalities[1].X),
                             all.index_select(1, torch::tensor({1, 3}, torch::kInt64))));
    expect_rows_sorted(d.modalities[0].X);
  };
  // Categorical column whose categories list ADT first: RNA still comes first.
  check(write_current(file("modality_cat.h5ad"), write_csr_x, [](const h5::Group& root) {
    h5::Group var = root.group("var");
    var.set_attr("column-order", std::vector<std::string>{"gene_ids", "modality"});
    write_categorical(var, "modality", {"ADT", "RNA"}, {1, 0, 1, 0, 1});
  }));
  // A plain string column.
  check(write_current(file("modality_str.h5ad"), write_csr_x, [](const h5::Group& root) {
    h5::Group var = root.group("var");
    var.set_attr("column-order", std::vector<std::string>{"gene_ids", "modality"});
    var.write_strings("modality", {"RNA", "ADT", "RNA", "ADT", "RNA"});
  }));
  // Without RNA: order of first appearance; another key name; modality_key "" disables the split.
  const std::string other =
      write_current(file("modality_other.h5ad"), write_csr_x, [](const h5::Group& root) {
        h5::Group var = root.group("var");
        var.set_attr("column-order", std::vector<std::string>{"gene_ids", "kind"});
        var.write_strings("kind", {"Peaks", "ADT", "Peaks", "ADT", "ADT"});
      });
  CellData d = load(other, {{"modality_key", "kind"}});
  ASSERT_EQ(d.modalities.size(), 2u);
  EXPECT_EQ(d.modalities[0].name, "Peaks");
  EXPECT_EQ(d.modalities[1].name, "ADT");
  EXPECT_EQ(d.modalities[1].features, (std::vector<std::string>{"g1", "g3", "g4"}));
  CellData one = load(other, {{"modality_key", ""}});
  ASSERT_EQ(one.modalities.size(), 1u);
  EXPECT_EQ(one.modalities[0].name, "RNA");
  EXPECT_EQ(one.modalities[0].X.cols, 5);
}

TEST_F(H5ad, ReadsLayersAndRaw) {
  const std::string path =
      write_current(file("layers.h5ad"), write_csr_x, [](const h5::Group& root) {
        std::vector<float> doubled;
        for (float v : kData) doubled.push_back(2 * v);
        write_sparse(root.group("layers"), "counts", "csr_matrix", 4, 5, kIndptr, kIndices,
                     doubled);
        h5::Group raw = root.create_group("raw");
        set_encoding(raw, "raw", "0.1.0");
        // raw has one more feature than X (as after HVG selection, the other way round).
        write_sparse(raw, "X", "csr_matrix", 4, 6, std::vector<int32_t>{0, 1, 1, 2, 3},
                     std::vector<int32_t>{5, 0, 2}, std::vector<float>{9, 8, 7});
        write_frame(raw, "var", {"h0", "h1", "h2", "h3", "h4", "h5"}, {});
      });
  CellData layer = load(path, {{"layer", "counts"}});
  EXPECT_TRUE(torch::equal(dense_of(layer.modalities[0].X), expected_dense() * 2));
  EXPECT_EQ(layer.modalities[0].features.size(), 5u);

  CellData raw = load(path, {{"layer", "raw"}});
  EXPECT_EQ(raw.modalities[0].features,
            (std::vector<std::string>{"h0", "h1", "h2", "h3", "h4", "h5"}));
  torch::Tensor expected = torch::zeros({4, 6});
  expected[0][5] = 9;
  expected[2][0] = 8;
  expected[3][2] = 7;
  EXPECT_TRUE(torch::equal(dense_of(raw.modalities[0].X), expected));
  EXPECT_EQ(raw.cell_names.size(), 4u);

  const std::string msg = load_error(path, {{"layer", "spliced"}});
  EXPECT_CONTAINS(msg, "has no layer 'spliced'");
  EXPECT_CONTAINS(msg, "layers: counts");
  EXPECT_CONTAINS(load_error(write_current(file("noraw.h5ad")), {{"layer", "raw"}}),
                  "has no raw matrix");
}

TEST_F(H5ad, MissingXIsAnErrorUnlessALayerIsChosen) {
  const std::string path = write_current(file("nox.h5ad"), nullptr, [](const h5::Group& root) {
    write_sparse(root.group("layers"), "counts", "csr_matrix", 4, 5, kIndptr, kIndices, kData);
  });
  const std::string msg = load_error(path);
  EXPECT_CONTAINS(msg, path);
  EXPECT_CONTAINS(msg, "has no X");
  EXPECT_CONTAINS(msg, "layers: counts");
  EXPECT_TRUE(
      torch::equal(dense_of(load(path, {{"layer", "counts"}}).modalities[0].X), expected_dense()));
}

TEST_F(H5ad, ReadsTheAnndata07Layout) {
  // 0.7: categorical codes are datasets whose `categories` attribute references __categories/<col>.
  const std::string path = file("v07.h5ad");
  {
    h5::File f = h5::File::create(path);
    const h5::Group& root = f.root();
    write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr, kIndices, kData);
    auto frame07 = [&](const std::string& key, const std::vector<std::string>& index,
                       const std::vector<std::string>& order) {
      h5::Group g = root.create_group(key);
      set_encoding(g, "dataframe", "0.1.0");
      g.set_attr("_index", "_index");
      g.set_attr("column-order", order);
      g.write_strings("_index", index);
      g.create_group("__categories");
      return g;
    };
    auto categorical07 = [&](const h5::Group& frame, const std::string& name,
                             const std::vector<std::string>& categories,
                             const std::vector<int8_t>& codes) {
      frame.group("__categories").write_strings(name, categories).set_attr("ordered", false);
      h5::Dataset d = write_vec(frame, name, codes);
      hobj_ref_t ref;
      const std::string target = "/" + frame.key() + "/__categories/" + name;
      ASSERT_GE(H5Rcreate(&ref, root.id(), target.c_str(), H5R_OBJECT, -1), 0);
      hid_t s = H5Screate(H5S_SCALAR);
      hid_t a = H5Acreate2(d.id(), "categories", H5T_STD_REF_OBJ, s, H5P_DEFAULT, H5P_DEFAULT);
      H5Awrite(a, H5T_STD_REF_OBJ, &ref);
      H5Aclose(a);
      H5Sclose(s);
    };
    h5::Group obs = frame07("obs", {"c0", "c1", "c2", "c3"}, {"batch", "cell_type", "num"});
    categorical07(obs, "batch", {"u", "v"}, {1, 1, 0, 1});
    categorical07(obs, "cell_type", {"T", "B", "NK"}, {2, 2, 0, -1});
    write_vec(obs, "num", std::vector<int64_t>{-29, 0, 34, 5});
    h5::Group var = frame07("var", {"g0", "g1", "g2", "g3", "g4"}, {"modality"});
    categorical07(var, "modality", {"ADT", "RNA"}, {1, 1, 1, 0, 0});
  }
  CellData d = load(path);
  EXPECT_EQ(column(d, "batch").categories, (std::vector<std::string>{"u", "v"}));
  EXPECT_EQ(codes_of(column(d, "batch")), (std::vector<int32_t>{1, 1, 0, 1}));
  EXPECT_EQ(column(d, "cell_type").categories, (std::vector<std::string>{"T", "B", "NK"}));
  EXPECT_EQ(codes_of(column(d, "cell_type")), (std::vector<int32_t>{2, 2, 0, -1}));
  EXPECT_EQ(values_of(column(d, "num")), (std::vector<double>{-29, 0, 34, 5}));
  ASSERT_EQ(d.modalities.size(), 2u);
  EXPECT_EQ(d.modalities[0].name, "RNA");
  EXPECT_EQ(d.modalities[0].features, (std::vector<std::string>{"g0", "g1", "g2"}));
  EXPECT_EQ(d.modalities[1].features, (std::vector<std::string>{"g3", "g4"}));
  EXPECT_TRUE(torch::equal(dense_of(d.modalities[1].X), expected_dense().slice(1, 3, 5)));
}

TEST_F(H5ad, ReadsThePre07CompoundLayout) {
  const std::string path = file("v05.h5ad");
  write_pre07(path);
  CellData d = load(path, {{"label_key", "label"}});
  EXPECT_EQ(d.cell_names, (std::vector<std::string>{"AAAC-1", "AAAG-1", "CCCT-1", "GGGA-1"}));
  EXPECT_EQ(d.modalities[0].features, (std::vector<std::string>{"G0", "G1", "G2", "G3", "G4"}));
  EXPECT_TRUE(torch::equal(dense_of(d.modalities[0].X), expected_dense()));
  const Column& batch = column(d, "batch");
  EXPECT_EQ(batch.categories, (std::vector<std::string>{"p", "q"}));
  EXPECT_EQ(codes_of(batch), (std::vector<int32_t>{1, 0, 1, 0}));
  EXPECT_EQ(values_of(column(d, "n_counts")), (std::vector<double>{0, 100.5, 201, 301.5}));
  EXPECT_EQ(values_of(column(d, "flag")), (std::vector<double>{0, 0, 1, 0}));
  const Column& label = column(d, "label");
  EXPECT_EQ(label.categories, (std::vector<std::string>{"aa", "mm", "zz"}));
  EXPECT_EQ(codes_of(label), (std::vector<int32_t>{2, 0, 2, 1}));

  CellData raw = load(path, {{"label_key", "label"}, {"layer", "raw"}});
  EXPECT_EQ(raw.modalities[0].features,
            (std::vector<std::string>{"R0", "R1", "R2", "R3", "R4", "R5"}));
  EXPECT_EQ(raw.modalities[0].X.nnz(), 1);
  EXPECT_EQ(dense_of(raw.modalities[0].X)[1][5].item<float>(), 11);
}

TEST_F(H5ad, ReadsFixedLengthAndAsciiStrings) {
  const std::string path =
      write_current(file("strings.h5ad"), write_csr_x, [](const h5::Group& root) {
        h5::Group obs = root.group("obs");
        obs.remove("_index");
        write_fixed_strings(obs.id(), "_index", {"c0", "c1", "c2", "c3"}, 5);
        obs.remove("donor");
        write_vlen_ascii(obs.id(), "donor", {"b", "a", "b", "c"});
        h5::Group var = root.group("var");
        var.remove("_index");
        write_fixed_strings(var.id(), "_index", {"g0", "g1", "g2", "g3", "g4"}, 6,
                            H5T_STR_SPACEPAD);
      });
  CellData d = load(path);
  EXPECT_EQ(d.cell_names, (std::vector<std::string>{"c0", "c1", "c2", "c3"}));
  EXPECT_EQ(d.modalities[0].features, (std::vector<std::string>{"g0", "g1", "g2", "g3", "g4"}));
  EXPECT_EQ(column(d, "donor").categories, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(codes_of(column(d, "donor")), (std::vector<int32_t>{1, 0, 1, 2}));
}

TEST_F(H5ad, SkipsColumnsOfUnknownEncodingUnlessTheyAreNeeded) {
  const std::string path =
      write_current(file("weird.h5ad"), write_csr_x, [](const h5::Group& root) {
        h5::Group obs = root.group("obs");
        obs.set_attr("column-order", std::vector<std::string>{"batch", "cell_type", "emb", "odd"});
        std::vector<float> emb(8, 1.0f);
        obs.write("emb", h5::NumType::Float32, emb.data(), {4, 2});
        set_encoding(obs.create_group("odd"), "awkward-array", "0.1.0");
      });
  CellData d = load(path);
  EXPECT_EQ(d.columns.size(), 2u);
  EXPECT_EQ(d.find_column("emb"), nullptr);
  const std::string msg = load_error(path, {{"label_key", "odd"}});
  EXPECT_CONTAINS(msg, "obs/odd");
  EXPECT_CONTAINS(msg, "awkward-array");
}

// ---- malformed input
// -----------------------------------------------------------------------------

TEST_F(H5ad, MissingOrUnreadableFilesGiveOneClearError) {
  const std::string missing = file("nope.h5ad");
  std::string msg = load_error(missing, {}, SCSSL_ERR_IO);
  EXPECT_CONTAINS(msg, missing);
  EXPECT_CONTAINS(msg, "cannot open");

  const std::string text = file("text.h5ad");
  std::ofstream(text) << "cell,gene,count\n1,2,3\n";
  msg = load_error(text);
  EXPECT_CONTAINS(msg, text);
  EXPECT_CONTAINS(msg, "not an HDF5 file");

  msg = load_error("", {}, SCSSL_ERR_INVALID_ARGUMENT);
  EXPECT_CONTAINS(msg, "'path'");
}

TEST_F(H5ad, TruncatedFilesAreRefused) {
  const std::string source =
      test::repo_file("datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad");
  ASSERT_TRUE(fs::exists(source)) << source;
  std::ifstream in(source, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (double fraction : {0.5, 0.95}) {
    const std::string cut =
        file("cut" + std::to_string(static_cast<int>(fraction * 100)) + ".h5ad");
    std::ofstream(cut, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size() * fraction));
    const std::string msg = load_error(cut);
    EXPECT_CONTAINS(msg, cut);
    EXPECT_CONTAINS(msg, "truncated");
  }
}

TEST_F(H5ad, MissingKeysNameWhatIsThere) {
  const std::string path = write_current(file("keys.h5ad"));
  std::string msg = load_error(path, {{"label_key", "celltype"}});
  EXPECT_CONTAINS(msg,
                  path + ": obs has no column 'celltype' (columns: batch, cell_type, donor, score");
  msg = load_error(path, {{"batch_key", "sample"}});
  EXPECT_CONTAINS(msg, "obs has no column 'sample'");

  const std::string novar = write_current(file("novar.h5ad"), write_csr_x,
                                          [](const h5::Group& root) { root.remove("var"); });
  EXPECT_CONTAINS(load_error(novar), "there is no 'var'");
  const std::string noindex =
      write_current(file("noindex.h5ad"), write_csr_x,
                    [](const h5::Group& root) { root.group("obs").remove("_index"); });
  EXPECT_CONTAINS(load_error(noindex), "obs/_index");
}

TEST_F(H5ad, BadMatricesAreRefusedNamingTheKey) {
  struct Case {
    std::string name;
    Writer x;
    std::vector<std::string> expected;
  };
  std::vector<Case> cases = {
      {"index_out_of_range",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr,
                      std::vector<int32_t>{0, 3, 1, 5, 0, 2, 4}, kData);
       },
       {"'X/indices'", "column index 5", "out of range"}},
      {"negative_index",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr,
                      std::vector<int32_t>{0, 3, 1, -1, 0, 2, 4}, kData);
       },
       {"'X/indices'", "column index -1"}},
      {"indptr_decreasing",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, std::vector<int32_t>{0, 2, 1, 4, 7}, kIndices,
                      kData);
       },
       {"'X/indptr'", "decreases at row 1"}},
      {"indptr_short",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, std::vector<int32_t>{0, 2, 4, 7}, kIndices,
                      kData);
       },
       {"'X/indptr'", "has 4 entries, expected 5"}},
      {"indptr_end",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, std::vector<int32_t>{0, 2, 2, 4, 6}, kIndices,
                      kData);
       },
       {"'X/indptr'", "ends at 6"}},
      {"indices_too_large_for_int32",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr,
                      std::vector<int64_t>{0, 3, 1, int64_t{1} << 40, 0, 2, 4}, kData);
       },
       {"'X/indices'", "does not fit int32"}},
      {"nan",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr, kIndices,
                      std::vector<float>{1, 2, 3, std::nanf(""), 5, 6, 7});
       },
       {"matrix 'X' contains NaN or infinity (row 2, column 4)"}},
      {"inf_dense",
       [](const h5::Group& root) {
         std::vector<double> v(kDense.begin(), kDense.end());
         v[13] = INFINITY;
         root.write("X", h5::NumType::Float64, v.data(), {4, 5});
       },
       {"matrix 'X' contains NaN or infinity (row 2, column 3)"}},
      {"nan_csc",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csc_matrix", 4, 5, kColptr, kRowIndices,
                      std::vector<float>{1, 5, 3, std::nanf(""), 2, 4, 7});
       },
       {"matrix 'X' contains NaN or infinity (row 3, column 2)"}},
      {"csc_row_out_of_range",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csc_matrix", 4, 5, kColptr,
                      std::vector<int32_t>{0, 3, 2, 4, 0, 2, 3}, kCscData);
       },
       {"'X/indices'", "row index 4 in column 2"}},
      {"shape_attribute",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 6, kIndptr, kIndices, kData);
       },
       {"'X' has shape [4, 6] but the data set has 4 cells and 5 features"}},
      {"dense_shape",
       [](const h5::Group& root) {
         root.write("X", h5::NumType::Float32, kDense.data(), {5, 4});
       },
       {"'X' has shape [5, 4]"}},
      {"unequal_lengths",
       [](const h5::Group& root) {
         write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr,
                      std::vector<int32_t>{0, 3, 1, 4, 0, 2}, kData);
       },
       {"'X/indices' has 6 entries but 'X/data' has 7"}},
      {"string_data",
       [](const h5::Group& root) {
         h5::Group g =
             write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr, kIndices, std::vector<float>{});
         g.remove("data");
         g.write_strings("data", {"1", "2", "3", "4", "5", "6", "7"});
       },
       {"'X/data' holds variable-length string data"}},
      {"unknown_encoding",
       [](const h5::Group& root) { set_encoding(root.create_group("X"), "coo_matrix", "0.1.0"); },
       {"'X' has encoding 'coo_matrix'"}},
      {"implausible_size",
       [](const h5::Group& root) {
         // Declares 2^31 floats (8 GiB) but stores nothing: refused before allocating.
         h5::Group g = root.create_group("X");
         set_encoding(g, "csr_matrix", "0.1.0");
         g.set_attr("shape", std::vector<int64_t>{4, 5});
         write_vec(g, "indptr", kIndptr);
         write_vec(g, "indices", kIndices);
         hsize_t n = hsize_t{1} << 31, chunk = 1 << 16;
         hid_t s = H5Screate_simple(1, &n, nullptr);
         hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
         H5Pset_chunk(dcpl, 1, &chunk);
         H5Pset_deflate(dcpl, 1);
         H5Dclose(H5Dcreate2(g.id(), "data", H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT));
         H5Pclose(dcpl);
         H5Sclose(s);
       },
       {"'X/data' declares 2147483648 elements", "the file is corrupt or truncated"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = write_current(file(c.name + ".h5ad"), c.x);
    const std::string msg = load_error(path);
    EXPECT_CONTAINS(msg, path);
    for (const auto& part : c.expected) EXPECT_CONTAINS(msg, part);
  }
}

TEST_F(H5ad, BadColumnsAreRefusedNamingTheKey) {
  std::string path = write_current(file("codes.h5ad"), write_csr_x, [](const h5::Group& root) {
    h5::Group obs = root.group("obs");
    obs.remove("cell_type");
    write_categorical(obs, "cell_type", {"A", "B", "C"}, {2, 0, 3, 1});
  });
  std::string msg = load_error(path);
  EXPECT_CONTAINS(msg, path + ": 'obs/cell_type/codes' has code 3 at row 2 but only 3 categories");

  path = write_current(file("length.h5ad"), write_csr_x, [](const h5::Group& root) {
    h5::Group obs = root.group("obs");
    obs.remove("score");
    write_vec(obs, "score", std::vector<double>{1, 2, 3});
  });
  EXPECT_CONTAINS(load_error(path), "column 'obs/score' has 3 entries but obs has 4 rows");

  path = write_current(file("order.h5ad"), write_csr_x, [](const h5::Group& root) {
    root.group("obs").set_attr("column-order", std::vector<std::string>{"batch", "ghost"});
  });
  EXPECT_CONTAINS(load_error(path), "lists column 'ghost' in column-order but has no such member");

  path = write_current(file("modality_missing.h5ad"), write_csr_x, [](const h5::Group& root) {
    h5::Group var = root.group("var");
    var.set_attr("column-order", std::vector<std::string>{"modality"});
    write_categorical(var, "modality", {"RNA", "ADT"}, {0, 0, -1, 1, 1});
  });
  EXPECT_CONTAINS(load_error(path), "var column 'modality' has no value for feature 'g2'");
}

TEST_F(H5ad, LinksAreNotFollowed) {
  const std::string other = write_current(file("other.h5ad"));
  std::string path = write_current(file("external.h5ad"), write_csr_x, [&](const h5::Group& root) {
    h5::Group obs = root.group("obs");
    obs.remove("cell_type");
    ASSERT_GE(H5Lcreate_external(other.c_str(), "/obs/cell_type", obs.id(), "cell_type",
                                 H5P_DEFAULT, H5P_DEFAULT),
              0);
  });
  std::string msg = load_error(path);
  EXPECT_CONTAINS(msg, path + ": 'obs/cell_type' is an external link");

  path = write_current(file("soft.h5ad"), write_csr_x, [&](const h5::Group& root) {
    h5::Group x = root.group("X");
    x.remove("data");
    write_vec(root, "elsewhere", kData);
    ASSERT_GE(H5Lcreate_soft("/elsewhere", x.id(), "data", H5P_DEFAULT, H5P_DEFAULT), 0);
  });
  msg = load_error(path);
  EXPECT_CONTAINS(msg, "'X/data' is a soft link");

  // A dataset whose data lives in another file (HDF5 external storage) is refused too.
  path = write_current(file("external_storage.h5ad"), write_csr_x, [&](const h5::Group& root) {
    h5::Group obs = root.group("obs");
    obs.remove("score");
    hsize_t n = 4;
    hid_t s = H5Screate_simple(1, &n, nullptr);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    const std::string raw = file("score.bin");
    std::ofstream(raw, std::ios::binary) << std::string(32, '\0');
    H5Pset_external(dcpl, raw.c_str(), 0, 32);
    H5Dclose(H5Dcreate2(obs.id(), "score", H5T_IEEE_F64LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Pclose(dcpl);
    H5Sclose(s);
  });
  EXPECT_CONTAINS(load_error(path), "'obs/score' keeps its data in an external file");
}

// ---- real files
// ----------------------------------------------------------------------------------

namespace {

struct Expected {
  int64_t cells, features, nnz;
  double sum;
  std::map<std::string, int64_t> batches, types;
};

void check_real(const CellData& d, const Expected& e) {
  EXPECT_EQ(d.n_cells(), e.cells);
  int64_t features = 0, nnz = 0;
  double sum = 0;
  for (const auto& m : d.modalities) {
    features += m.X.cols;
    nnz += m.X.nnz();
    sum += m.X.values.sum(torch::kFloat64).item<double>();
  }
  EXPECT_EQ(features, e.features);
  EXPECT_EQ(nnz, e.nnz);
  EXPECT_EQ(sum, e.sum);
  ASSERT_NE(d.batches(), nullptr);
  ASSERT_NE(d.labels(), nullptr);
  EXPECT_EQ(counts_of(*d.batches()), e.batches);
  EXPECT_EQ(counts_of(*d.labels()), e.types);
}

const Expected kKangCtrlStim = {
    1556,
    1267,
    585251,
    2338396.0,
    {{"ctrl101", 454}, {"ctrl107", 296}, {"stim101", 500}, {"stim107", 306}},
    {{"CD14+ Monocytes", 400},
     {"CD4 T cells", 400},
     {"B cells", 298},
     {"FCGR3A+ Monocytes", 249},
     {"CD8 T cells", 209}}};

const Expected kTriana = {250,
                          659,
                          80434,
                          4087936.0,
                          {{"BM_200AB", 152}, {"PBMC_200AB", 98}},
                          {{"Monocytes", 50},
                           {"B Cells", 25},
                           {"CD4+ T Cells", 25},
                           {"CD8+ T Cells", 25},
                           {"Dendritic cells", 25},
                           {"NK Cells", 25},
                           {"Plasma cells", 25},
                           {"Plasmacytoid dendritic cells", 25},
                           {"Primitive", 25}}};

void check_triana(const CellData& d) {
  check_real(d, kTriana);
  ASSERT_EQ(d.modalities.size(), 2u);
  EXPECT_EQ(d.modalities[0].name, "RNA");
  EXPECT_EQ(d.modalities[0].features.size(), 462u);
  EXPECT_EQ(d.modalities[0].X.nnz(), 33374);
  EXPECT_EQ(d.modalities[0].X.values.sum(torch::kFloat64).item<double>(), 565104.0);
  EXPECT_EQ(d.modalities[1].name, "ADT");
  EXPECT_EQ(d.modalities[1].features.size(), 197u);
  EXPECT_EQ(d.modalities[0].features.front(), "ACTG1");
  EXPECT_EQ(d.modalities[1].features.back(), "Trop.2");
  EXPECT_EQ(d.cell_names.front(), "487013_1");
  EXPECT_NE(d.find_column("cell_type_fine"), nullptr);
  EXPECT_FALSE(column(d, "nCount_RNA").categorical);
  EXPECT_EQ(values_of(column(d, "nCount_RNA"))[0], 10863.0);
}

}  // namespace

TEST(H5adRealData, BundledKangCtrlStim) {
  CellData d =
      load(test::repo_file("datasets/kang_ctrl_stim/kang2018_pbmc_ctrl_stim_4samples.h5ad"));
  check_real(d, kKangCtrlStim);
  ASSERT_EQ(d.modalities.size(), 1u);
  EXPECT_EQ(d.modalities[0].features.front(), "HES4");
  EXPECT_EQ(d.cell_names.front(), "ATCATGCTGCGTAT-1");
  std::vector<std::string> names;
  for (const auto& c : d.columns) names.push_back(c.name);
  EXPECT_EQ(names, (std::vector<std::string>{"batch", "cell_type", "donor", "condition"}));
}

TEST(H5adRealData, BundledTrianaRnaAdt) {
  check_triana(
      load(test::repo_file("datasets/triana_rna_adt/triana2021_abseq_bm_pbmc_rna_adt.h5ad")));
}

TEST(H5adRealData, SharedFilesMatchTheirSummaries) {
  const std::string kang8 = test::shared_file("data/kang2018_pbmc_ctrl_8donors.h5ad");
  if (kang8.empty())
    GTEST_SKIP() << "../shared/data/kang2018_pbmc_ctrl_8donors.h5ad not present, skipped";
  CellData d = load(kang8);
  check_real(d, {12261,
                 1287,
                 4266127,
                 15334912.0,
                 {{"donor_101", 858},
                  {"donor_1015", 2738},
                  {"donor_1016", 1723},
                  {"donor_1039", 408},
                  {"donor_107", 517},
                  {"donor_1244", 1879},
                  {"donor_1256", 2108},
                  {"donor_1488", 2030}},
                 {{"CD4 T cells", 5154},
                  {"CD14+ Monocytes", 2770},
                  {"B cells", 1306},
                  {"CD8 T cells", 1082},
                  {"NK cells", 915},
                  {"FCGR3A+ Monocytes", 736},
                  {"Dendritic cells", 203},
                  {"Megakaryocytes", 95}}});
  EXPECT_EQ(d.modalities[0].X.values.max().item<float>(), 1179.0f);
  EXPECT_EQ(d.columns.size(), 6u);
  EXPECT_NEAR(values_of(column(d, "tsne1"))[0], -27.64037283, 1e-8);

  const std::string stim = test::shared_file("data/kang2018_pbmc_ctrl_stim_4samples.h5ad");
  if (!stim.empty()) check_real(load(stim), kKangCtrlStim);
  const std::string triana = test::shared_file("data/triana2021_abseq_bm_pbmc_rna_adt.h5ad");
  if (!triana.empty()) check_triana(load(triana));
}

namespace {

// A file of ../shared/data/anndata-archives, or "" (and the test skips).
std::string archive(const std::string& name) {
  return test::shared_file("data/anndata-archives/" + name);
}

struct V07 {
  int64_t nnz;
  double sum, raw_sum;
  size_t obs_cat_categories;
  std::vector<double> int64_head;
};

void check_v07(const std::string& path, const V07& v) {
  CellData d = load(path, {{"batch_key", ""}, {"label_key", "obs_cat"}});
  EXPECT_EQ(d.n_cells(), 30);
  EXPECT_EQ(d.cell_names[1], "cell1");
  EXPECT_EQ(d.modalities[0].X.cols, 20);
  EXPECT_EQ(d.modalities[0].X.nnz(), v.nnz);
  EXPECT_EQ(d.modalities[0].X.values.sum(torch::kFloat64).item<double>(), v.sum);
  EXPECT_EQ(column(d, "obs_cat").categories.size(), v.obs_cat_categories);
  std::vector<double> head = values_of(column(d, "int64"));
  head.resize(3);
  EXPECT_EQ(head, v.int64_head);
  EXPECT_EQ(d.columns.size(), 5u);
  CellData raw = load(path, {{"batch_key", ""}, {"label_key", ""}, {"layer", "raw"}});
  EXPECT_EQ(raw.modalities[0].X.cols, 40);
  EXPECT_EQ(raw.modalities[0].features[0], "gene0");
  EXPECT_EQ(raw.modalities[0].X.values.sum(torch::kFloat64).item<double>(), v.raw_sum);
  // Dense and sparse float64 layers, LZF-compressed like everything in these files.
  CellData dense_layer = load(path, {{"batch_key", ""}, {"label_key", ""}, {"layer", "array"}});
  EXPECT_EQ(dense_layer.modalities[0].X.nnz(), 600);
  CellData sparse_layer = load(path, {{"batch_key", ""}, {"label_key", ""}, {"layer", "sparse"}});
  EXPECT_EQ(sparse_layer.modalities[0].X.nnz(), 6);
}

}  // namespace

TEST(H5adArchives, Anndata050) {
  const std::string path = archive("adata_v0.5.0.h5ad");
  if (path.empty())
    GTEST_SKIP() << "../shared/data/anndata-archives/adata_v0.5.0.h5ad not present, skipped";
  CellData d = load(path, {{"batch_key", "phase"}, {"label_key", "bulk_labels"}});
  EXPECT_EQ(d.n_cells(), 700);
  EXPECT_EQ(d.modalities[0].X.cols, 765);
  EXPECT_EQ(d.modalities[0].X.nnz(), 535433);
  EXPECT_NEAR(d.modalities[0].X.values.sum(torch::kFloat64).item<double>(), -243.681057988666,
              1e-6);
  EXPECT_EQ(d.cell_names[0], "AAAGCCTGGCTAAC-1");
  EXPECT_EQ(d.modalities[0].features[0], "HES4");
  EXPECT_EQ(counts_of(column(d, "phase")),
            (std::map<std::string, int64_t>{{"G1", 501}, {"G2M", 17}, {"S", 182}}));
  EXPECT_EQ(column(d, "bulk_labels").categories.size(), 10u);
  EXPECT_EQ(column(d, "bulk_labels").categories[0], "CD4+/CD25 T Reg");
  EXPECT_EQ(counts_of(column(d, "bulk_labels"))["Dendritic"], 240);
  EXPECT_EQ(column(d, "louvain").categories.size(), 11u);
  EXPECT_EQ(values_of(column(d, "n_genes"))[0], 1003);
  CellData raw = load(path, {{"batch_key", "phase"}, {"label_key", ""}, {"layer", "raw"}});
  EXPECT_EQ(raw.modalities[0].X.nnz(), 174400);
  EXPECT_EQ(raw.modalities[0].features[1], "TNFRSF4");
  EXPECT_NEAR(raw.modalities[0].X.values.sum(torch::kFloat64).item<double>(), 319044.238, 1e-2);
}

TEST(H5adArchives, Anndata070) {
  const std::string path = archive("adata_v0.7.0.h5ad");
  if (path.empty())
    GTEST_SKIP() << "../shared/data/anndata-archives/adata_v0.7.0.h5ad not present, skipped";
  check_v07(path, {228, 285.0, 627.0, 22, {-29, -29, 34}});
}

TEST(H5adArchives, Anndata078) {
  const std::string path = archive("adata_v0.7.8.h5ad");
  if (path.empty())
    GTEST_SKIP() << "../shared/data/anndata-archives/adata_v0.7.8.h5ad not present, skipped";
  check_v07(path, {239, 302.0, 568.0, 21, {-16, -15, 0}});
}

TEST(H5adArchives, Anndata0114WithoutX) {
  const std::string path = archive("adata_v0.11.4.h5ad");
  if (path.empty())
    GTEST_SKIP() << "../shared/data/anndata-archives/adata_v0.11.4.h5ad not present, skipped";
  const std::string msg = load_error(path, {{"batch_key", ""}, {"label_key", ""}});
  EXPECT_CONTAINS(msg, path + ": has no X");
  EXPECT_CONTAINS(msg, "layers: none");
}
