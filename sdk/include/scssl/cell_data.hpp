// CellData: the C++ side of scssl_cell_data. Matrices stay sparse (CSR) until a mini-batch of rows
// is densified; memory scales with non-zeros, never with cells x genes.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "scssl/abi.h"
#include "scssl/params.hpp"

namespace scssl {

// A cells x features matrix: CSR (indptr int64, indices int32, values float32) or dense float32.
struct Matrix {
  enum class Format { None, Dense, Csr };

  Format format = Format::None;
  int64_t rows = 0;
  int64_t cols = 0;
  torch::Tensor dense;
  torch::Tensor indptr;
  torch::Tensor indices;
  torch::Tensor values;

  // Both check every invariant (shapes, dtypes, sorted-free index ranges, finite values) and throw
  // BadData naming `what` on the first violation.
  static Matrix csr(torch::Tensor indptr, torch::Tensor indices, torch::Tensor values, int64_t rows,
                    int64_t cols, const std::string& what);
  static Matrix from_dense(torch::Tensor dense, const std::string& what);

  bool empty() const { return format == Format::None; }
  bool is_csr() const { return format == Format::Csr; }
  int64_t nnz() const;

  // The given rows (int64 ids) as a dense float32 [ids, cols] tensor.
  torch::Tensor rows_dense(const torch::Tensor& row_ids) const;
  // Rows [begin, end) as a dense float32 tensor.
  torch::Tensor slice_dense(int64_t begin, int64_t end) const;
  // A new matrix with only the given rows / columns, in the given order; CSR stays CSR.
  Matrix select_rows(const torch::Tensor& row_ids) const;
  Matrix select_cols(const std::vector<int64_t>& col_ids) const;
};

struct Modality {
  std::string name;
  std::vector<std::string> features;
  Matrix X;
  Matrix counts;  // raw counts of the same features, empty if unknown
};

// One per-cell annotation: categorical (codes int32, -1 = missing) or numeric (float64).
struct Column {
  std::string name;
  bool categorical = true;
  torch::Tensor codes;
  std::vector<std::string> categories;
  torch::Tensor values;

  // The category name of every cell ("" where missing); numeric columns are formatted.
  std::vector<std::string> as_strings() const;
};

struct CellData {
  std::vector<std::string> cell_names;
  std::vector<Modality> modalities;
  std::vector<Column> columns;
  std::string batch_key;
  std::string label_key;

  int64_t n_cells() const { return static_cast<int64_t>(cell_names.size()); }

  const Column* find_column(const std::string& name) const;
  // The batch / label column, or nullptr when the data set has none.
  const Column* batches() const { return batch_key.empty() ? nullptr : find_column(batch_key); }
  const Column* labels() const { return label_key.empty() ? nullptr : find_column(label_key); }
  // The categorical cell-type / batch column, or BadData "<who> needs cell-type labels (set
  // dataset.label_key)" (likewise for batches).
  const Column& require_labels(const std::string& who) const;
  const Column& require_batches(const std::string& who) const;
  // Index of a modality by name, or -1.
  int modality_index(const std::string& name) const;

  // The same data restricted to the given cells (int64 ids), in that order.
  CellData select_cells(const torch::Tensor& cell_ids) const;

  // Checks that every matrix and column matches n_cells; throws BadData naming the part.
  void validate(const std::string& what) const;
};

// ---- crossing the C boundary
// ---------------------------------------------------------------------

// A scssl_cell_data that points into a CellData kept alive by this object.
class CellDataView {
 public:
  explicit CellDataView(CellData data);
  const scssl_cell_data* get() const { return &view_; }
  // Hands the view to a receiver that will call release(); the CellData dies with it.
  static scssl_cell_data* export_owned(CellData data);

 private:
  CellData data_;
  std::vector<const char*> cell_names_;
  std::vector<std::vector<const char*>> feature_names_;
  std::vector<std::vector<const char*>> categories_;
  std::vector<scssl_modality> modalities_;
  std::vector<scssl_column> columns_;
  scssl_cell_data view_{};
};

// Wraps a borrowed scssl_cell_data without copying any buffer: valid while the source lives.
CellData import_borrowed(const scssl_cell_data* data);
// Takes ownership of a scssl_cell_data; it is released when the last tensor made from it dies.
// `keep_alive` (e.g. the library that made it) is held until then as well.
CellData import_owned(scssl_cell_data* data, std::shared_ptr<void> keep_alive = {});

// A DLTensor describing a contiguous CPU tensor (valid while the tensor lives).
DLTensor to_dl(const torch::Tensor& tensor);
// A tensor over a DLTensor's memory; `owner` is held until the tensor's storage dies (may be null
// for borrowed memory). Checks dtype and rank against what the boundary allows.
torch::Tensor from_dl(const DLTensor& tensor, std::shared_ptr<void> owner, const std::string& what);
// DLPack ownership transfer of a single tensor.
DLManagedTensor* export_managed(torch::Tensor tensor);
torch::Tensor import_managed(DLManagedTensor* managed, std::shared_ptr<void> keep_alive,
                             const std::string& what);

}  // namespace scssl
