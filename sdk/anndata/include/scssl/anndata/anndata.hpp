// AnnData-level reads and writes for the host and the run-folder tools: whole-file operations by
// path, so that callers never hold HDF5 objects. Every error is a scssl::BadData (the file is not
// what it should be), scssl::IoError (it cannot be read or written) or scssl::InvalidArgument
// (the caller's request is wrong), and its message names the file and the key.
//
// Part of the scssl_anndata library (sdk/anndata/), internal to this source tree: not installed
// with the SDK. Layouts and tested HDF5 versions: docs/hdf5.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scssl/anndata/matrix.hpp"
#include "scssl/params.hpp"

namespace scssl::anndata {

// A dense float32 matrix, row-major.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> values;  // rows * cols
};

// Per-cell categories of an obs column.
struct Categories {
  std::vector<int32_t> codes;      // one per cell; -1 = missing
  std::vector<std::string> names;  // codes index into these
};

// What an .h5ad holds, read without touching its matrices.
struct Summary {
  int64_t n_obs = 0;
  int64_t n_vars = -1;  // -1 when the file has no var
  std::vector<std::string> obs_columns, var_columns;
  std::vector<std::string> obsm_keys, layers;
  bool has_x = false;
  bool has_raw_x = false;  // raw/X, or raw.X before anndata 0.7

  // The matrix the h5ad dataset plugin reads for its `layer` parameter: "" = X, "raw" = the raw
  // matrix, otherwise layers/<layer>.
  bool has_matrix(const std::string& layer) const;
  // "X", "raw/X" or "layers/<layer>", for messages.
  static std::string matrix_key(const std::string& layer);
};

// The name of the embedding dataset in embedding.h5 (next to `cell_names`).
inline constexpr const char* kEmbeddingDataset = "embedding";

// ---- reads
// ------------------------------------------------------------------------------------------

Summary inspect(const std::string& h5ad_path);

// An obs column as categories per cell: categorical columns as stored (every anndata layout);
// strings as their sorted distinct values; numbers and booleans as their sorted distinct values
// (NaN = missing), formatted as the h5ad dataset plugin formats them. A missing column names the
// columns the file has.
Categories read_obs_categories(const std::string& h5ad_path, const std::string& column);

// obsm/<key> (a 2-d numeric dataset, as anndata, scanpy and scvi-tools write them) as float32.
// A missing key names the keys the file has; a data frame, an empty or non-2-d array or a
// non-finite value is BadData.
Matrix read_obsm(const std::string& h5ad_path, const std::string& key);

// obsp/<key>, a cells x cells matrix (sparse as scanpy stores its neighbour graph, or dense), as
// CSR. A missing key names the keys the file has.
CsrArrays read_obsp(const std::string& h5ad_path, const std::string& key);

// An embedding.h5 as write_embedding_h5 writes it; cell_names (when given) receives its
// `cell_names`, which must have one entry per row.
Matrix read_embedding_h5(const std::string& path, std::vector<std::string>* cell_names = nullptr);

// ---- writes: never replace an existing file
// ---------------------------------------------------------- Both write a hidden temporary in the
// target's folder and publish it under the target name only if no file of that name exists (IoError
// "... already exists" otherwise, the existing file untouched); on any failure the temporary is
// removed and nothing appears under the target name.

// A small HDF5 file holding `embedding` = float32 [rows, cols] and `cell_names` = strings [rows],
// with anndata's encoding attributes.
void write_embedding_h5(const std::string& path, const float* data, int64_t rows, int64_t cols,
                        const std::vector<std::string>& cell_names);

// A numeric obs column to add: float64, one value per cell (NaN = no value).
struct ObsColumn {
  std::string name;
  const double* values = nullptr;
  int64_t size = 0;
};

// A copy of `source_h5ad` with obsm/<key> = float32 [rows, cols] added as anndata (0.8+) writes
// it (encoding-type "array"); obsm is created as a "dict" group if missing and an existing key of
// the copy is replaced. rows must equal the number of cells. The source is only read.
// Numeric obs columns given in `obs` are added too (see write_copy_with_obs).
void write_copy_with_obsm(const std::string& source_h5ad, const std::string& target,
                          const std::string& key, const float* data, int64_t rows, int64_t cols,
                          const std::vector<ObsColumn>& obs = {});

// A copy of `source_h5ad` with numeric obs columns added as anndata (0.8+) writes them
// (encoding-type "array", appended to obs's column-order); a column of the same name is replaced.
// Each must have one value per cell. The source is only read.
void write_copy_with_obs(const std::string& source_h5ad, const std::string& target,
                         const std::vector<ObsColumn>& obs);

}  // namespace scssl::anndata
