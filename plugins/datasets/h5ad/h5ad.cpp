// The h5ad dataset plugin: reads AnnData .h5ad files written by anndata 0.5 to 0.11.
//
// Layouts handled:
//  - X (or raw/X, raw.X, layers/<name>) dense, CSR or CSC; any integer or float dtype; int32 or
//    int64 indptr/indices. Everything becomes CSR float32 without a dense cells x genes copy.
//  - obs/var as groups (anndata >= 0.7: `_index` attribute, `column-order`), with categorical
//    columns as groups (categories + codes, >= 0.8) or as code datasets carrying a `categories`
//    object reference into __categories (0.7); nullable integer/boolean/string columns.
//  - obs/var as compound datasets (< 0.7), categories in uns/<column>_categories.
// The file is untrusted: shapes, dtypes, index ranges and codes are checked before they are used,
// links are not followed (see scssl/anndata/hdf5.hpp), and every error names the file and the key.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "scssl/anndata/frame.hpp"
#include "scssl/anndata/hdf5.hpp"
#include "scssl/plugin.hpp"

namespace {

using scssl::BadData;
using scssl::h5::Dataset;
using scssl::h5::Group;
using scssl::h5::Kind;
using scssl::h5::NumType;
using scssl::h5::TypeClass;

// obs and var are read by the data-frame reader of the scssl_anndata library
// (scssl/anndata/frame.hpp), which scssl-report and scssl-fetch share.
using scssl::anndata::categorical_from_numbers;
using scssl::anndata::Frame;
using scssl::anndata::list_names;
using scssl::anndata::UnsupportedColumn;
using FrameColumn = scssl::anndata::Column;

// ---- matrices ----------------------------------------------------------------------------------

struct Csr {
  torch::Tensor indptr;   // int64 [rows + 1]
  torch::Tensor indices;  // int32 [nnz]
  torch::Tensor values;   // float32 [nnz]
  int64_t rows = 0, cols = 0;
};

// A tensor holding a copy of a vector (an empty vector's data() may be null, which from_blob
// does not take).
template <class T>
torch::Tensor tensor_of(const std::vector<T>& v, torch::ScalarType type) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(v.size())}, type);
  if (!v.empty()) std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(T));
  return t;
}

// Elements per block when reading in pieces (bounded memory for dense and CSC input).
constexpr int64_t kBlockElements = 1 << 22;

void require_numeric(const Dataset& d, const std::string& what) {
  const TypeClass cls = d.type().cls;
  if (cls != TypeClass::Integer && cls != TypeClass::Float && cls != TypeClass::Bool)
    d.fail("holds " + d.type().describe() + " data; " + what + " must be numbers");
}

void require_integers(const Dataset& d, const std::string& what) {
  if (d.type().cls != TypeClass::Integer)
    d.fail("holds " + d.type().describe() + " data; " + what + " must be integers");
}

// Reads a compressed-sparse pointer array of `major + 1` entries and checks that it starts at 0,
// never decreases and ends at nnz.
torch::Tensor read_pointers(const Dataset& d, int64_t major, int64_t nnz, const char* unit) {
  require_integers(d, "index pointers");
  const int64_t n = d.length_1d();
  if (n != major + 1)
    d.fail("has " + std::to_string(n) + " entries, expected " + std::to_string(major + 1) +
           " (one per " + unit + " plus one)");
  torch::Tensor ptr = torch::empty({n}, torch::kInt64);
  d.read(NumType::Int64, ptr.data_ptr<int64_t>());
  const int64_t* p = ptr.data_ptr<int64_t>();
  if (p[0] != 0) d.fail("starts at " + std::to_string(p[0]) + ", expected 0");
  for (int64_t i = 0; i < major; ++i)
    if (p[i + 1] < p[i]) d.fail("decreases at " + std::string(unit) + " " + std::to_string(i));
  if (p[major] != nnz)
    d.fail("ends at " + std::to_string(p[major]) + " but there are " + std::to_string(nnz) +
           " stored values");
  return ptr;
}

[[noreturn]] void non_finite(const std::string& file, const std::string& key, int64_t row,
                             int64_t col) {
  throw BadData(file + ": matrix '" + key + "' contains NaN or infinity (row " +
                std::to_string(row) + ", column " + std::to_string(col) + ")");
}

// The values and index arrays of a sparse matrix group: numeric and integer, of one length.
std::pair<Dataset, Dataset> sparse_arrays(const Group& g, const char* index_what) {
  Dataset data = g.dataset("data"), indices = g.dataset("indices");
  require_numeric(data, "matrix values");
  require_integers(indices, index_what);
  if (indices.length_1d() != data.length_1d())
    indices.fail("has " + std::to_string(indices.length_1d()) + " entries but '" + data.key() +
                 "' has " + std::to_string(data.length_1d()));
  return {data, indices};
}

Csr read_csr(const Group& g, int64_t rows, int64_t cols) {
  auto [data, indices] = sparse_arrays(g, "column indices");
  const int64_t nnz = data.length_1d();
  Csr m;
  m.rows = rows;
  m.cols = cols;
  m.indptr = read_pointers(g.dataset("indptr"), rows, nnz, "row");
  m.indices = torch::empty({nnz}, torch::kInt32);
  indices.read(NumType::Int32, m.indices.data_ptr<int32_t>());
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  const int64_t* p = m.indptr.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = p[r]; k < p[r + 1]; ++k)
      if (idx[k] < 0 || idx[k] >= cols)
        indices.fail("has column index " + std::to_string(idx[k]) + " in row " + std::to_string(r) +
                     ", out of range for " + std::to_string(cols) + " columns");
  m.values = torch::empty({nnz}, torch::kFloat32);
  data.read(NumType::Float32, m.values.data_ptr<float>());
  const float* v = m.values.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = p[r]; k < p[r + 1]; ++k)
      if (!std::isfinite(v[k])) non_finite(g.file(), g.key(), r, idx[k]);
  return m;
}

// CSC -> CSR by counting and scattering, reading the CSC arrays in blocks: the peak is the CSR
// result plus one block, never a dense matrix.
Csr read_csc(const Group& g, int64_t rows, int64_t cols) {
  auto [data, indices] = sparse_arrays(g, "row indices");
  const int64_t nnz = data.length_1d();
  torch::Tensor colptr_t = read_pointers(g.dataset("indptr"), cols, nnz, "column");
  const int64_t* colptr = colptr_t.data_ptr<int64_t>();

  Csr m;
  m.rows = rows;
  m.cols = cols;
  m.indptr = torch::zeros({rows + 1}, torch::kInt64);
  int64_t* rowptr = m.indptr.data_ptr<int64_t>();
  std::vector<int64_t> row_block(static_cast<size_t>(std::min(nnz, kBlockElements)));
  std::vector<float> value_block(row_block.size());
  // Pass 1: count the entries of every row (and check the row indices).
  for (int64_t start = 0, col = 0; start < nnz; start += kBlockElements) {
    const int64_t n = std::min(kBlockElements, nnz - start);
    indices.read_range(NumType::Int64, row_block.data(), start, n);
    for (int64_t k = 0; k < n; ++k) {
      while (colptr[col + 1] <= start + k) ++col;
      const int64_t r = row_block[k];
      if (r < 0 || r >= rows)
        indices.fail("has row index " + std::to_string(r) + " in column " + std::to_string(col) +
                     ", out of range for " + std::to_string(rows) + " rows");
      ++rowptr[r + 1];
    }
  }
  for (int64_t r = 0; r < rows; ++r) rowptr[r + 1] += rowptr[r];
  // Pass 2: scatter. Columns are visited in order, so every row comes out sorted by column.
  m.indices = torch::empty({nnz}, torch::kInt32);
  m.values = torch::empty({nnz}, torch::kFloat32);
  int32_t* out_idx = m.indices.data_ptr<int32_t>();
  float* out_val = m.values.data_ptr<float>();
  std::vector<int64_t> next(rowptr, rowptr + rows);
  for (int64_t start = 0, col = 0; start < nnz; start += kBlockElements) {
    const int64_t n = std::min(kBlockElements, nnz - start);
    indices.read_range(NumType::Int64, row_block.data(), start, n);
    data.read_range(NumType::Float32, value_block.data(), start, n);
    for (int64_t k = 0; k < n; ++k) {
      while (colptr[col + 1] <= start + k) ++col;
      const int64_t r = row_block[k];
      if (!std::isfinite(value_block[k])) non_finite(g.file(), g.key(), r, col);
      const int64_t pos = next[r]++;
      out_idx[pos] = static_cast<int32_t>(col);
      out_val[pos] = value_block[k];
    }
  }
  return m;
}

// Dense -> CSR in blocks of rows (aligned to the dataset's chunks so each chunk is inflated once).
Csr read_dense(const Dataset& d, int64_t rows, int64_t cols) {
  require_numeric(d, "matrix values");
  int64_t block_rows = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(cols, 1));
  std::vector<int64_t> chunk = d.chunks();
  if (!chunk.empty() && chunk[0] > 0 && chunk[0] <= 4 * kBlockElements / std::max<int64_t>(cols, 1))
    block_rows = std::max<int64_t>(1, block_rows / chunk[0]) * chunk[0];
  block_rows = std::min(block_rows, std::max<int64_t>(rows, 1));
  std::vector<float> block(static_cast<size_t>(block_rows * cols));
  std::vector<int64_t> indptr(1, 0);
  indptr.reserve(static_cast<size_t>(rows) + 1);
  std::vector<int32_t> indices;
  std::vector<float> values;
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    d.read_rows(NumType::Float32, block.data(), r0, n);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = block.data() + i * cols;
      for (int64_t j = 0; j < cols; ++j) {
        if (row[j] == 0.0f) continue;
        if (!std::isfinite(row[j])) non_finite(d.file(), d.key(), r0 + i, j);
        indices.push_back(static_cast<int32_t>(j));
        values.push_back(row[j]);
      }
      indptr.push_back(static_cast<int64_t>(values.size()));
    }
  }
  Csr m;
  m.rows = rows;
  m.cols = cols;
  m.indptr = tensor_of(indptr, torch::kInt64);
  m.indices = tensor_of(indices, torch::kInt32);
  m.values = tensor_of(values, torch::kFloat32);
  return m;
}

std::string shape_text(int64_t r, int64_t c) {
  return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
}

// The matrix at `key`, which must be rows x cols (obs x var).
Csr read_matrix(const Group& root, const std::string& key, int64_t rows, int64_t cols) {
  const std::string& file = root.file();
  if (cols > std::numeric_limits<int32_t>::max())
    throw BadData(file + ": '" + key + "' has more columns than 32-bit indices can address");
  const Kind kind = root.kind(key);
  if (kind == Kind::Dataset) {
    Dataset d = root.dataset(key);
    std::vector<int64_t> s = d.shape();
    if (s.size() != 2 || s[0] != rows || s[1] != cols) {
      std::string dims;
      for (size_t i = 0; i < s.size(); ++i) dims += (i ? ", " : "") + std::to_string(s[i]);
      d.fail("has shape [" + dims + "] but the data set has " + std::to_string(rows) +
             " cells and " + std::to_string(cols) + " features");
    }
    return read_dense(d, rows, cols);
  }
  if (kind != Kind::Group) throw BadData(file + ": there is no matrix '" + key + "'");
  Group g = root.group(key);
  std::string format;
  if (g.has_attr("encoding-type"))
    format = g.attr_string("encoding-type");
  else if (g.has_attr("h5sparse_format"))  // anndata < 0.7
    format = g.attr_string("h5sparse_format") + "_matrix";
  const std::string shape_attr = g.has_attr("shape") ? "shape" : "h5sparse_shape";
  if (format != "csr_matrix" && format != "csc_matrix")
    g.fail("has encoding '" + format +
           "'; a matrix must be csr_matrix, csc_matrix or a dense array");
  if (!g.has_attr(shape_attr)) g.fail("has no 'shape' attribute");
  std::vector<int64_t> s = g.attr_ints(shape_attr);
  if (s.size() != 2 || s[0] != rows || s[1] != cols)
    g.fail("has shape " +
           (s.size() == 2 ? shape_text(s[0], s[1])
                          : std::string("of rank ") + std::to_string(s.size())) +
           " but the data set has " + std::to_string(rows) + " cells and " + std::to_string(cols) +
           " features");
  return format == "csr_matrix" ? read_csr(g, rows, cols) : read_csc(g, rows, cols);
}

// Splits a CSR matrix by columns into one CSR matrix per group (group[j] in [0, n_groups)),
// keeping the column order within each group. One counting pass, one filling pass.
std::vector<Csr> split_columns(Csr m, const std::vector<int32_t>& group, int32_t n_groups) {
  std::vector<int32_t> local(group.size());
  std::vector<int64_t> width(n_groups, 0);
  for (size_t j = 0; j < group.size(); ++j) local[j] = static_cast<int32_t>(width[group[j]]++);
  std::vector<Csr> out(n_groups);
  const int64_t* p = m.indptr.data_ptr<int64_t>();
  const int32_t* idx = m.indices.data_ptr<int32_t>();
  const float* v = m.values.data_ptr<float>();
  std::vector<int64_t*> ptr(n_groups);
  for (int32_t g = 0; g < n_groups; ++g) {
    out[g].rows = m.rows;
    out[g].cols = width[g];
    out[g].indptr = torch::zeros({m.rows + 1}, torch::kInt64);
    ptr[g] = out[g].indptr.data_ptr<int64_t>();
  }
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int32_t g = 0; g < n_groups; ++g) ptr[g][r + 1] = ptr[g][r];
    for (int64_t k = p[r]; k < p[r + 1]; ++k) ++ptr[group[idx[k]]][r + 1];
  }
  std::vector<int32_t*> oi(n_groups);
  std::vector<float*> ov(n_groups);
  std::vector<int64_t> pos(n_groups, 0);
  for (int32_t g = 0; g < n_groups; ++g) {
    out[g].indices = torch::empty({ptr[g][m.rows]}, torch::kInt32);
    out[g].values = torch::empty({ptr[g][m.rows]}, torch::kFloat32);
    oi[g] = out[g].indices.data_ptr<int32_t>();
    ov[g] = out[g].values.data_ptr<float>();
  }
  for (int64_t k = 0; k < p[m.rows]; ++k) {
    const int32_t g = group[idx[k]];
    oi[g][pos[g]] = local[idx[k]];
    ov[g][pos[g]++] = v[k];
  }
  return out;
}

// Every invariant Matrix::csr checks (indptr from 0, non-decreasing, ending at nnz; indices in
// range; finite values; dtypes) was checked while reading, so the matrix is assembled directly
// instead of walking millions of entries a second time.
scssl::Matrix to_matrix(Csr m) {
  scssl::Matrix x;
  x.format = scssl::Matrix::Format::Csr;
  x.rows = m.rows;
  x.cols = m.cols;
  x.indptr = std::move(m.indptr);
  x.indices = std::move(m.indices);
  x.values = std::move(m.values);
  return x;
}

scssl::Column to_column(FrameColumn raw) {
  scssl::Column c;
  c.name = std::move(raw.name);
  c.categorical = raw.categorical;
  if (raw.categorical) {
    c.codes = tensor_of(raw.codes, torch::kInt32);
    c.categories = std::move(raw.categories);
  } else {
    c.values = tensor_of(raw.values, torch::kFloat64);
  }
  return c;
}

// ---- the plugin --------------------------------------------------------------------------------

class H5adDataset final : public scssl::IDataset {
 public:
  static std::vector<scssl::ParamSpec> parameters() {
    return {
        scssl::ParamSpec("path", SCSSL_PARAM_STRING, "", "the .h5ad file to read")
            .required()
            .nonempty(),
        {"batch_key", SCSSL_PARAM_STRING, "batch",
         "obs column holding the batches (\"\" for none)"},
        {"label_key", SCSSL_PARAM_STRING, "cell_type",
         "obs column holding the cell types (\"\" for none)"},
        {"modality_key", SCSSL_PARAM_STRING, "modality",
         "var column assigning each feature to a modality (RNA, ADT, ...); without it all "
         "features form one modality named RNA"},
        {"layer", SCSSL_PARAM_STRING, "",
         "matrix to read: \"\" = X, \"raw\" = raw/X with the raw feature names, otherwise "
         "layers/<name>"},
    };
  }

  scssl::CellData load(const scssl::ParamSet& params, scssl::HostContext& host) override {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string& path = params.get_string("path");
    const std::string& batch_key = params.get_string("batch_key");
    const std::string& label_key = params.get_string("label_key");
    const std::string& modality_key = params.get_string("modality_key");
    const std::string& layer = params.get_string("layer");

    scssl::h5::File file = scssl::h5::File::open(path);
    const Group& root = file.root();

    // Where the matrix and its feature names are.
    std::string matrix_key = "X", var_key = "var";
    if (layer.empty()) {
      if (!root.has("X"))
        throw BadData(path +
                      ": has no X (it was written without a data matrix); choose a matrix "
                      "with the 'layer' parameter (layers: " +
                      list_names(layer_names(root)) + ")");
    } else if (layer == "raw") {
      if (root.has_group("raw") && root.has("raw/X")) {
        matrix_key = "raw/X";
        var_key = "raw/var";
      } else if (root.has("raw.X")) {  // anndata < 0.7
        matrix_key = "raw.X";
        var_key = "raw.var";
      } else {
        throw BadData(path + ": has no raw matrix (neither raw/X nor raw.X), but layer = \"raw\"");
      }
    } else {
      matrix_key = "layers/" + layer;
      if (!root.has(matrix_key))
        throw BadData(path + ": has no layer '" + layer +
                      "' (layers: " + list_names(layer_names(root)) + ")");
    }

    Frame obs(root, "obs");
    Frame var(root, var_key);
    scssl::CellData data;
    data.cell_names = obs.index();
    std::vector<std::string> features = var.index();

    // obs columns first: a bad batch or label key fails before the (larger) matrix is read.
    for (const auto* key : {&batch_key, &label_key})
      if (!key->empty() && !obs.has_column(*key))
        throw BadData(path + ": obs has no column '" + *key +
                      "' (columns: " + list_names(obs.columns()) + ")");
    for (const auto& name : obs.columns()) {
      FrameColumn raw;
      try {
        raw = obs.column(name);
      } catch (const UnsupportedColumn& e) {
        if (name == batch_key || name == label_key) throw BadData(e.what());
        host.warn(std::string(e.what()) + "; column skipped");
        continue;
      }
      // Batches and labels are categories even when the file stores them as numbers.
      if (!raw.categorical && (name == batch_key || name == label_key))
        raw = categorical_from_numbers(raw);
      data.columns.push_back(to_column(std::move(raw)));
    }
    data.batch_key = batch_key;
    data.label_key = label_key;

    // Which modality every feature belongs to.
    std::vector<std::string> modality_names{"RNA"};
    std::vector<int32_t> feature_modality(features.size(), 0);
    if (!modality_key.empty() && var.has_column(modality_key)) {
      FrameColumn m = var.column(modality_key);
      if (!m.categorical) m = categorical_from_numbers(m);
      modality_names.clear();
      std::vector<int32_t> rank(m.categories.size(), -1);
      auto add = [&](int32_t code) {
        rank[code] = static_cast<int32_t>(modality_names.size());
        modality_names.push_back(m.categories[code]);
      };
      for (size_t c = 0; c < m.categories.size(); ++c)
        if (m.categories[c] == "RNA" &&
            std::find(m.codes.begin(), m.codes.end(), static_cast<int32_t>(c)) != m.codes.end())
          add(static_cast<int32_t>(c));
      for (size_t j = 0; j < m.codes.size(); ++j) {
        if (m.codes[j] < 0)
          throw BadData(path + ": var column '" + modality_key + "' has no value for feature '" +
                        features[j] + "'");
        if (rank[m.codes[j]] < 0) add(m.codes[j]);
        feature_modality[j] = rank[m.codes[j]];
      }
      if (modality_names.empty()) modality_names.push_back("RNA");
    }

    Csr matrix = read_matrix(root, matrix_key, obs.n_rows(), var.n_rows());
    const int32_t n_modalities = static_cast<int32_t>(modality_names.size());
    std::vector<Csr> parts;
    if (n_modalities == 1)
      parts.push_back(std::move(matrix));
    else
      parts = split_columns(std::move(matrix), feature_modality, n_modalities);
    for (int32_t g = 0; g < n_modalities; ++g) {
      scssl::Modality mod;
      mod.name = modality_names[g];
      for (size_t j = 0; j < features.size(); ++j)
        if (feature_modality[j] == g) mod.features.push_back(features[j]);
      mod.X = to_matrix(std::move(parts[g]));
      data.modalities.push_back(std::move(mod));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f s", seconds);
    host.debug(path + ": read " + std::to_string(data.n_cells()) + " cells x " +
               std::to_string(features.size()) + " features (" + matrix_key + ") in " + buf);
    return data;
  }

 private:
  static std::vector<std::string> layer_names(const Group& root) {
    return root.has_group("layers") ? root.group("layers").children() : std::vector<std::string>{};
  }
};

}  // namespace

SCSSL_PLUGIN(H5adDataset, "h5ad", "1.0.0",
             "AnnData .h5ad files (anndata 0.5 to 0.11): dense, CSR or CSC matrices, RNA + ADT")
