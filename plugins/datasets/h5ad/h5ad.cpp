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
// The matrices are read by scssl/anndata/matrix.hpp (shared with the reader's fuzz target).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "scssl/anndata/frame.hpp"
#include "scssl/anndata/hdf5.hpp"
#include "scssl/anndata/matrix.hpp"
#include "scssl/plugin.hpp"

namespace {

using scssl::BadData;
using scssl::h5::Group;

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

// A tensor over a vector's storage, which it takes over: no copy of the (large) matrix arrays.
template <class T>
torch::Tensor adopt(std::vector<T>&& v, torch::ScalarType type) {
  if (v.empty()) return torch::empty({0}, type);
  auto* owned = new std::vector<T>(std::move(v));
  return torch::from_blob(
      owned->data(), {static_cast<int64_t>(owned->size())}, [owned](void*) { delete owned; },
      torch::TensorOptions(type));
}

Csr read_matrix(const Group& root, const std::string& key, int64_t rows, int64_t cols) {
  scssl::anndata::CsrArrays a = scssl::anndata::read_matrix(root, key, rows, cols);
  Csr m;
  m.rows = a.rows;
  m.cols = a.cols;
  m.indptr = adopt(std::move(a.indptr), torch::kInt64);
  m.indices = adopt(std::move(a.indices), torch::kInt32);
  m.values = adopt(std::move(a.values), torch::kFloat32);
  return m;
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
