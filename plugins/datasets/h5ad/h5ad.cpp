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

#include "scssl/anndata/frame.hpp"
#include "scssl/anndata/hdf5.hpp"
#include "scssl/anndata/matrix.hpp"
#include "scssl/anndata/to_cell_data.hpp"
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
// The matrix arrays become tensors without a copy (scssl/anndata/to_cell_data.hpp).
using scssl::anndata::CsrArrays;
using scssl::anndata::split_columns;
using scssl::anndata::to_column;
using scssl::anndata::to_matrix;

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

    CsrArrays matrix = scssl::anndata::read_matrix(root, matrix_key, obs.n_rows(), var.n_rows());
    const int32_t n_modalities = static_cast<int32_t>(modality_names.size());
    std::vector<CsrArrays> parts;
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
