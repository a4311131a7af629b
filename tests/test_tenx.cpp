// The tenx dataset plugin (docs/user-guide.md, "10x Genomics Cell Ranger output (tenx plugin)"):
// Cell Ranger's feature-barcode matrices written here at test time in the layouts 10x Genomics
// documents (the .h5 through the HDF5 C API with fixed-length strings as Cell Ranger writes them,
// the matrix folder as text, gzip-compressed through zlib or plain), annotation tables joined by
// barcode, one clear error per kind of bad input, and a run of scssl-host on
// configs/tenx_example.toml.
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "h5ad_fixtures.hpp"
#include "support.hpp"

using namespace scssl;
namespace fs = std::filesystem;
using test::fixtures::write_fixed_strings;
using test::fixtures::write_vec;

namespace {

// ---- the data and its files ----------------------------------------------------------------

// A feature-barcode matrix as Cell Ranger would write it, with its dense truth.
struct TenxData {
  std::vector<std::string> barcodes, ids, names, types;
  std::vector<std::vector<int32_t>> counts;  // [barcode][feature]
};

// 6 barcodes x 7 features: RNA and ADT interleaved, and one CRISPR guide that is left out.
TenxData small_data() {
  TenxData d;
  d.barcodes = {"AAACCTGAGAAACCAT-1", "AAACCTGAGAAACCGC-1", "AAACCTGAGAAACCTA-1",
                "AAACCTGAGAAACGAG-1", "AAACCTGAGAAACGCC-1", "AAACCTGAGAAAGTGG-1"};
  d.ids = {"ENSG00000243485", "ENSG00000237613", "CD3", "ENSG00000186092", "sg_CTRL_1", "CD19",
           "ENSG00000238009"};
  d.names = {"MIR1302-2HG", "FAM138A",        "CD3_TotalSeqB", "OR4F5",
             "sg_CTRL_1",   "CD19_TotalSeqB", "FAM138A"};  // a repeated symbol, as in GRCh38
  d.types = {"Gene Expression",      "Gene Expression",  "Antibody Capture", "Gene Expression",
             "CRISPR Guide Capture", "Antibody Capture", "Gene Expression"};
  d.counts = {{1, 0, 12, 0, 0, 3, 0}, {0, 0, 0, 0, 0, 0, 0}, {5, 2, 40, 0, 1, 0, 7},
              {0, 9, 0, 3, 0, 11, 0}, {0, 0, 8, 0, 0, 0, 1}, {2, 0, 0, 4, 2, 30, 0}};
  return d;
}

// The truth of the features of one type, as float [barcodes, features].
torch::Tensor truth(const TenxData& d, const std::string& type) {
  std::vector<float> v;
  int64_t n = 0;
  for (size_t j = 0; j < d.types.size(); ++j) n += d.types[j] == type;
  for (const auto& row : d.counts)
    for (size_t j = 0; j < d.types.size(); ++j)
      if (d.types[j] == type) v.push_back(static_cast<float>(row[j]));
  return torch::tensor(v, torch::kFloat32).reshape({static_cast<int64_t>(d.counts.size()), n});
}

torch::Tensor dense_of(const Matrix& m) { return m.slice_dense(0, m.rows); }

// The CSC arrays of the features x barcodes matrix (= barcodes x features CSR).
struct Compressed {
  std::vector<int32_t> data;
  std::vector<int64_t> indices, indptr{0};
};
Compressed compress(const TenxData& d) {
  Compressed c;
  for (const auto& row : d.counts) {
    for (size_t j = 0; j < row.size(); ++j)
      if (row[j] != 0) {
        c.data.push_back(row[j]);
        c.indices.push_back(static_cast<int64_t>(j));
      }
    c.indptr.push_back(static_cast<int64_t>(c.data.size()));
  }
  return c;
}

size_t longest(const std::vector<std::string>& v) {
  size_t n = 1;
  for (const auto& s : v) n = std::max(n, s.size());
  return n;
}

// filtered_feature_bc_matrix.h5 of Cell Ranger 3 and later: /matrix with fixed-length strings,
// int32 data and shape, int64 indices and indptr, and /matrix/features.
// The barcodes and the CSC arrays both layouts share.
void write_matrix_arrays(const h5::Group& g, const TenxData& d) {
  write_fixed_strings(g.id(), "barcodes", d.barcodes, longest(d.barcodes));
  const Compressed c = compress(d);
  write_vec(g, "data", c.data);
  write_vec(g, "indices", c.indices);
  write_vec(g, "indptr", c.indptr);
  write_vec(g, "shape",
            std::vector<int32_t>{static_cast<int32_t>(d.ids.size()),
                                 static_cast<int32_t>(d.barcodes.size())});
}

using H5Edit = std::function<void(const h5::Group& matrix)>;
std::string write_h5(const std::string& path, const TenxData& d, const H5Edit& edit = {}) {
  h5::File f = h5::File::create(path);
  h5::Group m = f.root().create_group("matrix");
  write_matrix_arrays(m, d);
  h5::Group features = m.create_group("features");
  write_fixed_strings(features.id(), "_all_tag_keys", {"genome"}, 6);
  write_fixed_strings(features.id(), "feature_type", d.types, longest(d.types));
  write_fixed_strings(features.id(), "genome", std::vector<std::string>(d.ids.size(), "GRCh38"), 6);
  write_fixed_strings(features.id(), "id", d.ids, longest(d.ids));
  write_fixed_strings(features.id(), "name", d.names, longest(d.names));
  if (edit) edit(m);
  f.flush();
  return path;
}

// filtered_gene_bc_matrices_h5.h5 of Cell Ranger 2: one group per genome.
std::string write_h5_v2(const std::string& path, const TenxData& d) {
  h5::File f = h5::File::create(path);
  h5::Group g = f.root().create_group("GRCh38");
  write_matrix_arrays(g, d);
  write_fixed_strings(g.id(), "genes", d.ids, longest(d.ids));
  write_fixed_strings(g.id(), "gene_names", d.names, longest(d.names));
  f.flush();
  return path;
}

// A text file, gzip-compressed when the name ends in .gz.
void write_text(const std::string& path, const std::string& text) {
  if (path.size() > 3 && path.substr(path.size() - 3) == ".gz") {
    gzFile f = gzopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr) << path;
    ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())),
              static_cast<int>(text.size()));
    ASSERT_EQ(gzclose(f), Z_OK);
  } else {
    std::ofstream(path, std::ios::binary) << text;
  }
}

struct FolderOptions {
  bool gz = true;        // Cell Ranger 3 compresses; Cell Ranger 2 does not
  bool v2 = false;       // genes.tsv (id, name) instead of features.tsv
  bool shuffle = false;  // entries out of barcode order
  std::string header = "%%MatrixMarket matrix coordinate integer general";
};

std::string mtx_text(const TenxData& d, const FolderOptions& o) {
  std::vector<std::string> entries;
  for (size_t b = 0; b < d.counts.size(); ++b)
    for (size_t j = 0; j < d.ids.size(); ++j)
      if (d.counts[b][j] != 0)
        entries.push_back(std::to_string(j + 1) + " " + std::to_string(b + 1) + " " +
                          std::to_string(d.counts[b][j]));
  if (o.shuffle) std::shuffle(entries.begin(), entries.end(), std::mt19937(3));
  std::ostringstream s;
  s << o.header << "\n%metadata_json: {\"software_version\": \"cellranger-7.1.0\"}\n"
    << d.ids.size() << " " << d.barcodes.size() << " " << entries.size() << "\n";
  for (const auto& e : entries) s << e << "\n";
  return s.str();
}

// The matrix folder: matrix.mtx, features.tsv (or genes.tsv), barcodes.tsv.
std::string write_folder(const std::string& dir, const TenxData& d, const FolderOptions& o = {}) {
  fs::create_directories(dir);
  const std::string gz = o.gz ? ".gz" : "";
  write_text(dir + "/matrix.mtx" + gz, mtx_text(d, o));
  std::string features, barcodes;
  for (size_t j = 0; j < d.ids.size(); ++j)
    features += d.ids[j] + "\t" + d.names[j] + (o.v2 ? "" : "\t" + d.types[j]) + "\n";
  for (const auto& b : d.barcodes) barcodes += b + "\n";
  write_text(dir + (o.v2 ? "/genes.tsv" : "/features.tsv") + gz, features);
  write_text(dir + "/barcodes.tsv" + gz, barcodes);
  return dir;
}

// ---- loading -----------------------------------------------------------------------------------

struct Loaded {
  CellData data;
  std::vector<std::string> log;
};

Loaded load(const std::string& path, const std::map<std::string, std::string>& overrides = {}) {
  host::HostServices services;
  Loaded out;
  services.on_log = [&](scssl_log_level, const std::string& m) { out.log.push_back(m); };
  const host::LoadedPlugin& p = test::plugins().get("tenx", SCSSL_KIND_DATASET);
  ParamSet params = p.default_params();
  params.set("path", path);
  for (const auto& [k, v] : overrides) params.set(k, v);
  out.data = host::load_dataset(p, params, services);
  return out;
}

// The message of the error loading throws, checking its status.
std::string load_error(const std::string& path,
                       const std::map<std::string, std::string>& overrides = {},
                       scssl_status status = SCSSL_ERR_BAD_DATA) {
  return test::error_of([&] { load(path, overrides); }, status);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

#define EXPECT_CONTAINS(text, part) \
  EXPECT_TRUE(contains(text, part)) << "expected '" << (part) << "' in: " << (text)

bool logged(const Loaded& l, const std::string& part) {
  return std::any_of(l.log.begin(), l.log.end(), [&](const auto& m) { return contains(m, part); });
}

std::vector<int32_t> codes_of(const Column& c) {
  return std::vector<int32_t>(c.codes.data_ptr<int32_t>(),
                              c.codes.data_ptr<int32_t>() + c.codes.size(0));
}

// The value of every cell of a categorical column ("" where missing).
std::vector<std::string> labels_of(const CellData& d, const std::string& name) {
  const Column* c = d.find_column(name);
  if (!c) throw std::runtime_error("no column " + name);
  return c->as_strings();
}

// The expected data of small_data(), whichever file it came from.
void expect_small(const CellData& d, const TenxData& truth_data, bool with_adt = true) {
  EXPECT_EQ(d.cell_names, truth_data.barcodes);
  ASSERT_EQ(d.modalities.size(), with_adt ? 2u : 1u);
  const Modality& rna = d.modalities[0];
  EXPECT_EQ(rna.name, "RNA");
  EXPECT_TRUE(rna.X.is_csr());
  EXPECT_TRUE(torch::equal(dense_of(rna.X), truth(truth_data, "Gene Expression")))
      << dense_of(rna.X);
  if (!with_adt) return;
  EXPECT_EQ(rna.features, (std::vector<std::string>{"MIR1302-2HG", "FAM138A", "OR4F5", "FAM138A"}));
  const Modality& adt = d.modalities[1];
  EXPECT_EQ(adt.name, "ADT");
  EXPECT_EQ(adt.features, (std::vector<std::string>{"CD3_TotalSeqB", "CD19_TotalSeqB"}));
  EXPECT_TRUE(torch::equal(dense_of(adt.X), truth(truth_data, "Antibody Capture")))
      << dense_of(adt.X);
}

class Tenx : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir(std::string("tenx-") +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return dir_ + "/" + name; }
  // An annotation table with `text` as its content.
  std::string table(const std::string& name, const std::string& text) const {
    write_text(file(name), text);
    return file(name);
  }
  std::string dir_;
};

}  // namespace

// ---- the two layouts ---------------------------------------------------------------------------

TEST_F(Tenx, H5CountsLandAtTheirCellAndFeatureInTwoModalities) {
  const TenxData d = small_data();
  const Loaded l = load(write_h5(file("filtered_feature_bc_matrix.h5"), d));
  expect_small(l.data, d);
  // Spot checks against the table above: barcode 3 (index 2), feature 7 (the last RNA feature).
  EXPECT_EQ(dense_of(l.data.modalities[0].X)[2][3].item<float>(), 7.0f);
  EXPECT_EQ(dense_of(l.data.modalities[1].X)[5][1].item<float>(), 30.0f);
  EXPECT_TRUE(l.data.modalities[0].counts.empty());
  // No annotation table: no batches, no labels.
  EXPECT_TRUE(l.data.columns.empty());
  EXPECT_EQ(l.data.batch_key, "");
  EXPECT_EQ(l.data.label_key, "");
  EXPECT_TRUE(logged(l,
                     "'matrix/features/feature_type': left out 1 feature of type 'CRISPR "
                     "Guide Capture' (the tenx plugin reads"));
  EXPECT_TRUE(logged(l, "1 of the RNA feature names repeat an earlier one (the first: 'FAM138A')"));
}

TEST_F(Tenx, FeatureNamesCanBeTheIds) {
  const Loaded l = load(write_h5(file("m.h5"), small_data()), {{"feature_names", "id"}});
  EXPECT_EQ(l.data.modalities[0].features,
            (std::vector<std::string>{"ENSG00000243485", "ENSG00000237613", "ENSG00000186092",
                                      "ENSG00000238009"}));
  EXPECT_EQ(l.data.modalities[1].features, (std::vector<std::string>{"CD3", "CD19"}));
}

TEST_F(Tenx, OnlyGeneExpressionGivesOneModality) {
  TenxData d = small_data();
  std::fill(d.types.begin(), d.types.end(), "Gene Expression");
  const Loaded l = load(write_h5(file("m.h5"), d));
  ASSERT_EQ(l.data.modalities.size(), 1u);
  EXPECT_EQ(l.data.modalities[0].features, d.names);
  EXPECT_TRUE(torch::equal(dense_of(l.data.modalities[0].X), truth(d, "Gene Expression")));
  EXPECT_FALSE(logged(l, "left out"));
}

TEST_F(Tenx, MatrixFolderGzipAndPlainInAndOutOfOrderEqualTheH5) {
  const TenxData d = small_data();
  for (bool gz : {true, false})
    for (bool shuffle : {false, true}) {
      SCOPED_TRACE(std::string(gz ? "gz" : "plain") + (shuffle ? ", shuffled" : ""));
      const std::string dir = file(std::string(gz ? "gz" : "plain") + (shuffle ? "_shuffled" : ""));
      const Loaded l = load(write_folder(dir, d, {gz, false, shuffle}));
      expect_small(l.data, d);
      EXPECT_TRUE(logged(l, dir + "/features.tsv" + (gz ? ".gz" : "") +
                                ": left out 1 feature of type 'CRISPR Guide Capture'"));
    }
}

TEST_F(Tenx, RealMatrixMarketValuesAreRead) {
  const TenxData d = small_data();
  FolderOptions o;
  o.header = "%%MatrixMarket matrix coordinate real general";
  expect_small(load(write_folder(file("real"), d, o)).data, d);
}

TEST_F(Tenx, CellRanger2GenesTsvIsAllGeneExpression) {
  TenxData d = small_data();
  for (bool gz : {false, true}) {
    SCOPED_TRACE(gz ? "genes.tsv.gz" : "genes.tsv");
    const std::string dir = file(gz ? "v2_gz" : "v2");
    const Loaded l = load(write_folder(dir, d, {gz, true, false}));
    EXPECT_TRUE(fs::exists(dir + (gz ? "/genes.tsv.gz" : "/genes.tsv")));
    ASSERT_EQ(l.data.modalities.size(), 1u);
    EXPECT_EQ(l.data.modalities[0].name, "RNA");
    EXPECT_EQ(l.data.modalities[0].features, d.names);
    TenxData all = d;
    std::fill(all.types.begin(), all.types.end(), "Gene Expression");
    EXPECT_TRUE(torch::equal(dense_of(l.data.modalities[0].X), truth(all, "Gene Expression")));
  }
}

TEST_F(Tenx, CellRanger2H5WithOneGenome) {
  TenxData d = small_data();
  const Loaded l = load(write_h5_v2(file("v2.h5"), d));
  std::fill(d.types.begin(), d.types.end(), "Gene Expression");
  expect_small(l.data, d, false);
  EXPECT_EQ(l.data.modalities[0].features, d.names);
}

// ---- the annotation table ----------------------------------------------------------------------

TEST_F(Tenx, AnnotationsJoinByBarcodeInAnotherRowOrder) {
  const TenxData d = small_data();
  const std::string h5 = write_h5(file("m.h5"), d);
  // Rows in another order, a barcode the matrix does not have, a quoted label with a comma and
  // a quote, a missing label, numbers.
  const std::string csv = table("obs.csv",
                                "sample,barcode,cell_type,n_counts\r\n"
                                "s2,AAACCTGAGAAAGTGG-1,B cell,38\r\n"
                                "s1,AAACCTGAGAAACCTA-1,\"T cell, CD4 \"\"naive\"\"\",55\r\n"
                                "s9,TTTTTTTTTTTTTTTT-1,B cell,1\r\n"
                                "s1,AAACCTGAGAAACCAT-1,B cell,16\r\n"
                                "s2,AAACCTGAGAAACGCC-1,,9\r\n"
                                "s2,AAACCTGAGAAACGAG-1,NK,23\r\n"
                                "s1,AAACCTGAGAAACCGC-1,NK,0\r\n");
  const Loaded l = load(h5, {{"obs_path", csv}, {"batch_key", "sample"}});
  const CellData& c = l.data;
  expect_small(c, d);
  EXPECT_EQ(c.batch_key, "sample");
  EXPECT_EQ(c.label_key, "cell_type");
  EXPECT_EQ(labels_of(c, "sample"), (std::vector<std::string>{"s1", "s1", "s1", "s2", "s2", "s2"}));
  EXPECT_EQ(
      labels_of(c, "cell_type"),
      (std::vector<std::string>{"B cell", "NK", "T cell, CD4 \"naive\"", "NK", "", "B cell"}));
  const Column& type = *c.find_column("cell_type");
  EXPECT_EQ(type.categories, (std::vector<std::string>{"B cell", "NK", "T cell, CD4 \"naive\""}));
  EXPECT_EQ(codes_of(type), (std::vector<int32_t>{0, 1, 2, 1, -1, 0}));
  const Column& counts = *c.find_column("n_counts");
  ASSERT_FALSE(counts.categorical);
  EXPECT_TRUE(torch::equal(counts.values,
                           torch::tensor({16.0, 0.0, 55.0, 23.0, 9.0, 38.0}, torch::kFloat64)));
  EXPECT_TRUE(logged(l, "1 of its barcodes are not in"));
  EXPECT_TRUE(logged(l, "TTTTTTTTTTTTTTTT-1"));
  EXPECT_EQ(c.find_column("barcode"), nullptr);
}

TEST_F(Tenx, WithoutABarcodeColumnTheFirstColumnIsTheKeyAndTsvIsTabSeparated) {
  const TenxData d = small_data();
  const std::string folder = write_folder(file("folder"), d);
  // pandas' DataFrame.to_csv of adata.obs: an unnamed index column; numeric batches.
  std::string csv = ",batch,cell_type\n";
  std::string tsv = "cell\tbatch\tcell_type\n";
  for (size_t i = 0; i < d.barcodes.size(); ++i) {
    const size_t r = d.barcodes.size() - 1 - i;
    csv += d.barcodes[r] + "," + std::to_string(r % 2 + 1) + ",type" + std::to_string(r % 3) + "\n";
    tsv +=
        d.barcodes[r] + "\t" + std::to_string(r % 2 + 1) + "\ttype" + std::to_string(r % 3) + "\n";
  }
  for (const std::string& path : {table("obs.csv.gz", csv), table("obs.tsv", tsv)}) {
    SCOPED_TRACE(path);
    const CellData c = load(folder, {{"obs_path", path}}).data;
    const Column& batch = *c.find_column("batch");
    EXPECT_TRUE(batch.categorical);  // numbers, but the batch column: categories
    EXPECT_EQ(batch.categories, (std::vector<std::string>{"1", "2"}));
    EXPECT_EQ(labels_of(c, "batch"), (std::vector<std::string>{"1", "2", "1", "2", "1", "2"}));
    EXPECT_EQ(labels_of(c, "cell_type"),
              (std::vector<std::string>{"type0", "type1", "type2", "type0", "type1", "type2"}));
    EXPECT_EQ(c.columns.size(), 2u);
  }
}

TEST_F(Tenx, BarcodesWithoutAnnotationsAreAnErrorOrDroppedOrKept) {
  const TenxData d = small_data();
  const std::string h5 = write_h5(file("m.h5"), d);
  const std::string csv = table("obs.csv",
                                "barcode,batch,cell_type\n"
                                "AAACCTGAGAAACCGC-1,a,x\n"
                                "AAACCTGAGAAACGAG-1,b,y\n"
                                "AAACCTGAGAAAGTGG-1,b,x\n");
  const std::string e = load_error(h5, {{"obs_path", csv}});
  EXPECT_CONTAINS(e, csv + ": has no row for 3 of the 6 barcodes");
  EXPECT_CONTAINS(e, "'AAACCTGAGAAACCAT-1'");
  EXPECT_CONTAINS(e, "unannotated = \"drop\"");

  const Loaded dropped = load(h5, {{"obs_path", csv}, {"unannotated", "drop"}});
  const CellData& c = dropped.data;
  EXPECT_EQ(c.cell_names, (std::vector<std::string>{"AAACCTGAGAAACCGC-1", "AAACCTGAGAAACGAG-1",
                                                    "AAACCTGAGAAAGTGG-1"}));
  const torch::Tensor kept = torch::tensor({1, 3, 5}, torch::kInt64);
  EXPECT_TRUE(
      torch::equal(dense_of(c.modalities[0].X), truth(d, "Gene Expression").index_select(0, kept)));
  EXPECT_TRUE(torch::equal(dense_of(c.modalities[1].X),
                           truth(d, "Antibody Capture").index_select(0, kept)));
  EXPECT_EQ(c.modalities[0].X.rows, 3);
  EXPECT_EQ(labels_of(c, "batch"), (std::vector<std::string>{"a", "b", "b"}));
  EXPECT_TRUE(logged(dropped, "left out 3 barcodes without a row"));
  c.validate("dropped");

  const CellData k = load(h5, {{"obs_path", csv}, {"unannotated", "keep"}}).data;
  EXPECT_EQ(k.cell_names, d.barcodes);
  EXPECT_EQ(labels_of(k, "cell_type"), (std::vector<std::string>{"", "x", "", "y", "", "x"}));
  EXPECT_EQ(codes_of(*k.find_column("batch")), (std::vector<int32_t>{-1, 0, -1, 1, -1, 1}));

  // No barcode in common (here: the suffix "-1" missing) is an error in every mode.
  const std::string other = table("other.csv", "barcode,batch,cell_type\nAAACCTGAGAAACCGC,a,x\n");
  for (const char* mode : {"error", "drop", "keep"})
    EXPECT_CONTAINS(load_error(h5, {{"obs_path", other}, {"unannotated", mode}}),
                    "none of its 1 barcodes is a barcode of");
}

TEST_F(Tenx, BatchAndLabelKeysFollowTheH5adPlugin) {
  const std::string h5 = write_h5(file("m.h5"), small_data());
  std::string rows = "barcode,donor,celltype\n";
  for (const auto& b : small_data().barcodes) rows += b + ",d1,T\n";
  const std::string csv = table("obs.csv", rows);
  // A key naming a column the table does not have fails and lists the columns.
  const std::string e = load_error(h5, {{"obs_path", csv}});
  EXPECT_CONTAINS(e, csv + ": has no column 'batch' (columns: donor, celltype");
  const CellData c =
      load(h5, {{"obs_path", csv}, {"batch_key", "donor"}, {"label_key", "celltype"}}).data;
  ASSERT_NE(c.batches(), nullptr);
  ASSERT_NE(c.labels(), nullptr);
  EXPECT_EQ(c.labels()->categories, (std::vector<std::string>{"T"}));
  // "" means none.
  const CellData none = load(h5, {{"obs_path", csv}, {"batch_key", ""}, {"label_key", ""}}).data;
  EXPECT_EQ(none.batches(), nullptr);
  EXPECT_EQ(none.columns.size(), 2u);
  // Without a table only the defaults (meaning none) or "" are accepted.
  EXPECT_CONTAINS(load_error(h5, {{"label_key", "celltype"}}, SCSSL_ERR_INVALID_ARGUMENT),
                  "label_key = \"celltype\" names an obs column, but");
}

// ---- bad input: one clear error each -----------------------------------------------------------

TEST_F(Tenx, MissingFilesAreNamed) {
  EXPECT_CONTAINS(load_error(file("nothing.h5"), {}, SCSSL_ERR_IO),
                  file("nothing.h5") + ": does not exist");
  const TenxData d = small_data();
  for (const char* gone : {"matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz"}) {
    const std::string dir = write_folder(file(std::string("no_") + gone), d);
    fs::remove(dir + "/" + gone);
    EXPECT_CONTAINS(load_error(dir, {}, SCSSL_ERR_IO), dir + ": has no " + gone);
  }
  EXPECT_CONTAINS(
      load_error(write_h5(file("m.h5"), d), {{"obs_path", file("obs.csv")}}, SCSSL_ERR_IO),
      file("obs.csv") + ": does not exist");
  std::ofstream(file("text.h5")) << "barcode\n";
  EXPECT_CONTAINS(load_error(file("text.h5")), "is not an HDF5 file");
}

TEST_F(Tenx, BrokenH5FilesAreNamedWithTheDataset) {
  const TenxData d = small_data();
  struct Case {
    const char* name;
    H5Edit edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"no_indptr", [](const h5::Group& m) { m.remove("indptr"); },
       "there is no dataset 'matrix/indptr'"},
      {"no_features", [](const h5::Group& m) { m.remove("features"); },
       "there is no group 'matrix/features'"},
      {"no_feature_type", [](const h5::Group& m) { m.group("features").remove("feature_type"); },
       "there is no dataset 'matrix/features/feature_type'"},
      {"wrong_shape",
       [](const h5::Group& m) {
         m.remove("shape");
         write_vec(m, "shape", std::vector<int32_t>{7, 5});
       },
       "'matrix/shape' says 7 features x 5 barcodes, but 'matrix/features/id' has 7 and "
       "'matrix/barcodes' 6"},
      {"short_names",
       [](const h5::Group& m) {
         m.group("features").remove("name");
         write_fixed_strings(m.group("features").id(), "name", {"a", "b"}, 1);
       },
       "'matrix/features/name' has 2 entries but 'matrix/features/id' has 7"},
      {"indptr_decreasing",
       [](const h5::Group& m) {
         std::vector<int64_t> p = m.dataset("indptr").read_vector<int64_t>();
         std::swap(p[2], p[3]);
         m.remove("indptr");
         write_vec(m, "indptr", p);
       },
       "'matrix/indptr' decreases at row 2"},
      {"indptr_short",
       [](const h5::Group& m) {
         m.remove("indptr");
         write_vec(m, "indptr", std::vector<int64_t>{0, 3});
       },
       "'matrix/indptr' has 2 entries, expected 7"},
      {"index_out_of_range",
       [](const h5::Group& m) {
         std::vector<int64_t> i = m.dataset("indices").read_vector<int64_t>();
         i[4] = 9;
         m.remove("indices");
         write_vec(m, "indices", i);
       },
       "'matrix/indices' has column index 9 in row 2, out of range for 7 columns"},
      {"negative_count",
       [](const h5::Group& m) {
         std::vector<int32_t> v = m.dataset("data").read_vector<int32_t>();
         v[3] = -4;
         m.remove("data");
         write_vec(m, "data", v);
       },
       "'matrix/data' holds a negative count (-4) for barcode 'AAACCTGAGAAACCTA-1' and feature "
       "'ENSG00000243485'"},
      {"nan_count",
       [](const h5::Group& m) {
         std::vector<float> v = m.dataset("data").read_vector<float>();
         v[0] = std::nanf("");
         m.remove("data");
         write_vec(m, "data", v);
       },
       "contains NaN or infinity (row 0, column 0)"},
      {"repeated_entry",
       [](const h5::Group& m) {
         std::vector<int64_t> i = m.dataset("indices").read_vector<int64_t>();
         i[1] = i[0];  // barcode 0: features 0, 2 -> 0, 0
         m.remove("indices");
         write_vec(m, "indices", i);
       },
       "holds two entries for barcode 'AAACCTGAGAAACCAT-1' and feature 'ENSG00000243485'"},
      {"repeated_barcode",
       [](const h5::Group& m) {
         std::vector<std::string> b = m.dataset("barcodes").read_strings();
         b[4] = b[1];
         m.remove("barcodes");
         write_fixed_strings(m.id(), "barcodes", b, 18);
       },
       "'matrix/barcodes' lists barcode 'AAACCTGAGAAACCGC-1' twice (entries 2 and 5)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = write_h5(file(std::string(c.name) + ".h5"), d, c.edit);
    const std::string e = load_error(path);
    EXPECT_CONTAINS(e, path + ": ");
    EXPECT_CONTAINS(e, c.expected);
  }
  // Neither layout.
  {
    h5::File f = h5::File::create(file("empty.h5"));
    f.root().create_group("something");
  }
  EXPECT_CONTAINS(load_error(file("empty.h5")), "it is not a 10x feature-barcode matrix file");
  // Features of no type that is read.
  TenxData guides = d;
  std::fill(guides.types.begin(), guides.types.end(), "CRISPR Guide Capture");
  EXPECT_CONTAINS(load_error(write_h5(file("guides.h5"), guides)),
                  "has no 'Gene Expression' or 'Antibody Capture' features (feature types: "
                  "'CRISPR Guide Capture')");
}

TEST_F(Tenx, BrokenMatrixFoldersAreNamedWithTheLine) {
  const TenxData d = small_data();
  const std::string good = mtx_text(d, {});
  // Line 4 is the first entry "1 1 1" (header, comment, size line).
  auto with_line = [&](int number, const std::string& replacement) {
    std::istringstream in(good);
    std::string out, line;
    for (int n = 1; std::getline(in, line); ++n) out += (n == number ? replacement : line) + "\n";
    return out;
  };
  struct Case {
    const char* name;
    std::string mtx;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"not_mtx", "barcode,count\n", "line 1: 'barcode,count' is not a MatrixMarket header"},
      {"array", with_line(1, "%%MatrixMarket matrix array integer general"),
       "line 1: '%%MatrixMarket matrix array integer general' is not a MatrixMarket header of a "
       "general coordinate matrix"},
      {"no_size", "%%MatrixMarket matrix coordinate integer general\n%only comments\n",
       "has no size line after its header"},
      {"bad_size", with_line(3, "7 6"), "line 3: '7 6' is not a size line"},
      {"wrong_rows", with_line(3, "8 6 17"), "line 3: the matrix has 8 rows (features), but "},
      {"wrong_cols", with_line(3, "7 5 17"), "line 3: the matrix has 5 columns (barcodes), but "},
      {"short_line", with_line(5, "3 1"), "line 5: '3 1' is not an entry"},
      {"letters", with_line(5, "x 1 12"), "line 5: 'x 1 12' does not start with two integer"},
      {"feature_range", with_line(5, "99 1 12"), "line 5: feature index 99 is out of range 1..7"},
      {"barcode_range", with_line(5, "3 0 12"), "line 5: barcode index 0 is out of range 1..6"},
      {"negative", with_line(5, "3 1 -12"), "line 5: count '-12' is negative"},
      {"fraction", with_line(5, "3 1 1.5"), "line 5: count '1.5' is not an integer"},
      {"too_few", with_line(3, "7 6 18"), "has 17 entries, but its size line (line 3) declares 18"},
      {"too_many", with_line(3, "7 6 16"),
       "line 20: is entry 17, but the size line (line 3) declares 16"},
      {"repeated", with_line(5, "1 1 12"),
       "holds two entries for barcode 'AAACCTGAGAAACCAT-1' and feature 'ENSG00000243485'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string dir = write_folder(file(c.name), d);
    write_text(dir + "/matrix.mtx.gz", c.mtx);
    const std::string e = load_error(dir);
    EXPECT_CONTAINS(e, dir + "/matrix.mtx.gz");
    EXPECT_CONTAINS(e, c.expected);
  }
  // NaN in a real matrix.
  {
    FolderOptions o;
    o.header = "%%MatrixMarket matrix coordinate real general";
    const std::string dir = write_folder(file("nan"), d, o);
    std::string text = mtx_text(d, o);
    text.replace(text.find("\n3 1 12\n") + 1, 6, "3 1 nan");
    write_text(dir + "/matrix.mtx.gz", text);
    EXPECT_CONTAINS(load_error(dir), "matrix.mtx.gz: line 5: value 'nan' is NaN or infinite");
  }
  // A gzip file cut short.
  {
    const std::string dir = write_folder(file("truncated"), d);
    std::string big = mtx_text(d, {});
    gzFile f = gzopen((dir + "/matrix.mtx.gz").c_str(), "wb");
    gzwrite(f, big.data(), static_cast<unsigned>(big.size()));
    gzclose(f);
    const auto size = fs::file_size(dir + "/matrix.mtx.gz");
    fs::resize_file(dir + "/matrix.mtx.gz", size - 12);
    EXPECT_CONTAINS(load_error(dir),
                    "matrix.mtx.gz: the gzip data ends early (the file is truncated)");
  }
  // features.tsv and barcodes.tsv.
  {
    const std::string dir = write_folder(file("one_field"), d);
    write_text(dir + "/features.tsv.gz", "ENSG00000243485\n");
    EXPECT_CONTAINS(load_error(dir), dir +
                                         "/features.tsv.gz: line 1: has 1 tab-separated field; "
                                         "expected 3 (id, name, feature type)");
  }
  {
    const std::string dir = write_folder(file("repeated_barcode"), d);
    std::string b;
    for (const auto& x : d.barcodes) b += x + "\n";
    write_text(dir + "/barcodes.tsv.gz", b + d.barcodes[0] + "\n");
    EXPECT_CONTAINS(load_error(dir), dir +
                                         "/matrix.mtx.gz: line 3: the matrix has 6 columns "
                                         "(barcodes), but " +
                                         dir + "/barcodes.tsv.gz lists 7 barcodes");
    // Same count, one repeated.
    std::vector<std::string> v = d.barcodes;
    v[5] = v[0];
    b.clear();
    for (const auto& x : v) b += x + "\n";
    write_text(dir + "/barcodes.tsv.gz", b);
    EXPECT_CONTAINS(load_error(dir), dir +
                                         "/barcodes.tsv.gz lists barcode "
                                         "'AAACCTGAGAAACCAT-1' twice (entries 1 and 6)");
  }
}

TEST_F(Tenx, BrokenAnnotationTablesAreNamedWithTheLine) {
  const std::string h5 = write_h5(file("m.h5"), small_data());
  struct Case {
    const char* name;
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"repeated_barcode",
       "barcode,batch\nAAACCTGAGAAACCAT-1,a\nAAACCTGAGAAACCGC-1,a\nAAACCTGAGAAACCAT-1,b\n",
       "line 4: barcode 'AAACCTGAGAAACCAT-1' appears a second time (first on line 2)"},
      {"fields", "barcode,batch\nAAACCTGAGAAACCAT-1,a,b\n",
       "line 2: has 3 fields, the header 2 (comma-separated)"},
      {"quote", "barcode,batch\nAAACCTGAGAAACCAT-1,\"a\n",
       "line 2: has a quoted field without its closing quote"},
      {"unnamed", "barcode,,batch\nAAACCTGAGAAACCAT-1,1,a\n", "line 1: column 2 has no name"},
      {"twice", "barcode,batch,batch\n", "line 1: names column 'batch' twice"},
      {"empty", "", "is empty; expected a header line"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string csv = table(std::string(c.name) + ".csv", c.text);
    const std::string e = load_error(h5, {{"obs_path", csv}, {"label_key", ""}});
    EXPECT_CONTAINS(e, csv + ": ");
    EXPECT_CONTAINS(e, c.expected);
  }
}

// ---- through scssl-host --------------------------------------------------------------------

// configs/tenx_example.toml with its files replaced by generated ones: 300 cells of 3 types in 2
// samples, 40 genes and 3 proteins, PCA and the example's evaluators.
TEST_F(Tenx, ExampleConfigRunsPcaThroughTheHost) {
  TenxData d;
  std::mt19937 rng(11);
  const int n_cells = 300, n_genes = 40;
  for (int j = 0; j < n_genes; ++j) {
    d.ids.push_back("ENSG" + std::to_string(100000 + j));
    d.names.push_back("GENE" + std::to_string(j));
    d.types.push_back("Gene Expression");
  }
  for (const char* p : {"CD3", "CD4", "CD19"}) {
    d.ids.push_back(p);
    d.names.push_back(std::string(p) + "_TotalSeqB");
    d.types.push_back("Antibody Capture");
  }
  std::string csv = "barcode,sample,cell_type\n";
  std::vector<std::string> rows;
  for (int i = 0; i < n_cells; ++i) {
    const int type = i % 3, sample = (i / 3) % 2;
    char bc[32];
    std::snprintf(bc, sizeof bc, "AAAC%012d-1", i);
    d.barcodes.push_back(bc);
    std::vector<int32_t> row;
    for (size_t j = 0; j < d.ids.size(); ++j) {
      const double mean = 1.0 + 6.0 * ((static_cast<int>(j) % 3) == type) + 0.5 * sample;
      row.push_back(std::poisson_distribution<int32_t>(mean)(rng));
    }
    d.counts.push_back(row);
    rows.push_back(std::string(bc) + ",sample" + std::to_string(sample) + ",type" +
                   std::to_string(type) + "\n");
  }
  std::shuffle(rows.begin(), rows.end(), rng);
  for (const auto& r : rows) csv += r;
  const std::string folder = write_folder(file("filtered_feature_bc_matrix"), d);
  const std::string obs = table("cell_types.csv", csv);
  const std::string out = file("runs");
  const std::string run =
      test::run_config("configs/tenx_example.toml", out,
                       "--set dataset.path=" + folder + " --set dataset.obs_path=" + obs +
                           " --set method.n_components=10");
  ASSERT_FALSE(run.empty());
  const torch::Tensor embedding = test::run_embedding(run);
  EXPECT_EQ(embedding.size(0), n_cells);
  EXPECT_EQ(embedding.size(1), 10);
  const std::string metrics = test::read_text(run + "/metrics.csv");
  EXPECT_CONTAINS(metrics, "silhouette_label");
  EXPECT_CONTAINS(test::read_text(run + "/config.resolved.toml"), "plugin = 'tenx'");
  // The three cell types separate in the first components.
  const std::string line = metrics.substr(metrics.find("silhouette_label"));
  std::vector<std::string> f;
  std::istringstream fields(line.substr(0, line.find('\n')));
  for (std::string s; std::getline(fields, s, ',');) f.push_back(s);
  ASSERT_GE(f.size(), 5u) << line;
  EXPECT_GT(std::stod(f[4]), 0.55) << line;
}
