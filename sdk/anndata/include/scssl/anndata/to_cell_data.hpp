// The torch-free results of the scssl_anndata readers (CsrArrays, data-frame Columns) as the parts
// of a scssl::CellData, for the dataset plugins of this tree (h5ad, tenx). Header-only, so that
// the library itself stays free of torch: only plugins that link the SDK include it.
#pragma once

#include <cstring>
#include <utility>
#include <vector>

#include "scssl/anndata/frame.hpp"
#include "scssl/anndata/matrix.hpp"
#include "scssl/cell_data.hpp"

namespace scssl::anndata {

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

// Every invariant Matrix::csr checks (indptr from 0, non-decreasing, ending at nnz; indices in
// range; finite values; dtypes) was checked while reading, so the matrix is assembled directly
// around the adopted arrays instead of walking millions of entries a second time.
inline scssl::Matrix to_matrix(CsrArrays&& a) {
  scssl::Matrix x;
  x.format = scssl::Matrix::Format::Csr;
  x.rows = a.rows;
  x.cols = a.cols;
  x.indptr = adopt(std::move(a.indptr), torch::kInt64);
  x.indices = adopt(std::move(a.indices), torch::kInt32);
  x.values = adopt(std::move(a.values), torch::kFloat32);
  return x;
}

inline scssl::Column to_column(Column&& raw) {
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

}  // namespace scssl::anndata
