#include "scssl/cell_data.hpp"

#include "scssl/abi_sized.hpp"

#include <ATen/DLConvertor.h>

#include <cmath>
#include <cstring>

namespace scssl {

namespace {

// A macro, not a function: the message is only built when the check fails (these checks run
// once per stored value).
#define SCSSL_REQUIRE(ok, message)     \
  do {                                 \
    if (!(ok)) throw BadData(message); \
  } while (0)

std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

Matrix Matrix::csr(torch::Tensor indptr, torch::Tensor indices, torch::Tensor values, int64_t rows,
                   int64_t cols, const std::string& what) {
  SCSSL_REQUIRE(rows >= 0 && cols >= 0, what + ": negative shape");
  SCSSL_REQUIRE(indptr.dim() == 1 && indptr.size(0) == rows + 1,
                what + ": indptr has shape " + shape_of(indptr) + ", expected [" +
                    std::to_string(rows + 1) + "]");
  SCSSL_REQUIRE(indices.dim() == 1 && values.dim() == 1 && indices.size(0) == values.size(0),
                what + ": indices " + shape_of(indices) + " and data " + shape_of(values) +
                    " must be 1-d of equal length");
  indptr = indptr.to(torch::kInt64).contiguous();
  indices = indices.to(torch::kInt32).contiguous();
  values = values.to(torch::kFloat32).contiguous();
  const int64_t nnz = values.size(0);
  const int64_t* p = indptr.data_ptr<int64_t>();
  SCSSL_REQUIRE(p[0] == 0, what + ": indptr[0] is " + std::to_string(p[0]) + ", expected 0");
  for (int64_t r = 0; r < rows; ++r)
    SCSSL_REQUIRE(p[r] <= p[r + 1], what + ": indptr decreases at row " + std::to_string(r));
  SCSSL_REQUIRE(p[rows] == nnz, what + ": indptr ends at " + std::to_string(p[rows]) +
                                    " but there are " + std::to_string(nnz) + " stored values");
  const int32_t* idx = indices.data_ptr<int32_t>();
  for (int64_t k = 0; k < nnz; ++k)
    SCSSL_REQUIRE(idx[k] >= 0 && idx[k] < cols, what + ": column index " + std::to_string(idx[k]) +
                                                    " out of range [0, " + std::to_string(cols) +
                                                    ")");
  const float* v = values.data_ptr<float>();
  for (int64_t k = 0; k < nnz; ++k)
    SCSSL_REQUIRE(std::isfinite(v[k]), what + ": contains a non-finite value (NaN or infinity)");
  Matrix m;
  m.format = Format::Csr;
  m.rows = rows;
  m.cols = cols;
  m.indptr = std::move(indptr);
  m.indices = std::move(indices);
  m.values = std::move(values);
  return m;
}

Matrix Matrix::from_dense(torch::Tensor dense, const std::string& what) {
  SCSSL_REQUIRE(dense.dim() == 2, what + ": expected a 2-d matrix, got shape " + shape_of(dense));
  dense = dense.to(torch::kFloat32).contiguous();
  SCSSL_REQUIRE(torch::isfinite(dense).all().item<bool>(),
                what + ": contains a non-finite value (NaN or infinity)");
  Matrix m;
  m.format = Format::Dense;
  m.rows = dense.size(0);
  m.cols = dense.size(1);
  m.dense = std::move(dense);
  return m;
}

int64_t Matrix::nnz() const {
  if (format == Format::Csr) return values.size(0);
  if (format == Format::Dense) return rows * cols;
  return 0;
}

torch::Tensor Matrix::rows_dense(const torch::Tensor& row_ids) const {
  torch::Tensor ids = row_ids.to(torch::kInt64).contiguous();
  if (format == Format::Dense) return dense.index_select(0, ids);
  TORCH_CHECK(format == Format::Csr, "rows_dense on an empty matrix");
  const int64_t n = ids.size(0);
  torch::Tensor out = torch::zeros({n, cols}, torch::kFloat32);
  float* o = out.data_ptr<float>();
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* p = indptr.data_ptr<int64_t>();
  const int32_t* idx = indices.data_ptr<int32_t>();
  const float* v = values.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < rows, "row id ", id[i], " out of range");
    float* row = o + i * cols;
    for (int64_t k = p[id[i]]; k < p[id[i] + 1]; ++k) row[idx[k]] += v[k];
  }
  return out;
}

torch::Tensor Matrix::slice_dense(int64_t begin, int64_t end) const {
  return rows_dense(torch::arange(begin, end, torch::kInt64));
}

Matrix Matrix::select_rows(const torch::Tensor& row_ids) const {
  torch::Tensor ids = row_ids.to(torch::kInt64).contiguous();
  Matrix m;
  m.format = format;
  m.rows = ids.size(0);
  m.cols = cols;
  if (format == Format::Dense) {
    m.dense = dense.index_select(0, ids);
    return m;
  }
  if (format == Format::None) return m;
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* p = indptr.data_ptr<int64_t>();
  m.indptr = torch::empty({m.rows + 1}, torch::kInt64);
  int64_t* q = m.indptr.data_ptr<int64_t>();
  q[0] = 0;
  for (int64_t i = 0; i < m.rows; ++i) q[i + 1] = q[i] + (p[id[i] + 1] - p[id[i]]);
  m.indices = torch::empty({q[m.rows]}, torch::kInt32);
  m.values = torch::empty({q[m.rows]}, torch::kFloat32);
  for (int64_t i = 0; i < m.rows; ++i) {
    const int64_t len = p[id[i] + 1] - p[id[i]];
    std::memcpy(m.indices.data_ptr<int32_t>() + q[i], indices.data_ptr<int32_t>() + p[id[i]],
                len * sizeof(int32_t));
    std::memcpy(m.values.data_ptr<float>() + q[i], values.data_ptr<float>() + p[id[i]],
                len * sizeof(float));
  }
  return m;
}

Matrix Matrix::select_cols(const std::vector<int64_t>& col_ids) const {
  Matrix m;
  m.format = format;
  m.rows = rows;
  m.cols = static_cast<int64_t>(col_ids.size());
  if (format == Format::Dense) {
    m.dense = dense.index_select(1, torch::tensor(col_ids, torch::kInt64)).contiguous();
    return m;
  }
  if (format == Format::None) return m;
  std::vector<int32_t> new_index(cols, -1);
  for (size_t j = 0; j < col_ids.size(); ++j) new_index[col_ids[j]] = static_cast<int32_t>(j);
  const int64_t* p = indptr.data_ptr<int64_t>();
  const int32_t* idx = indices.data_ptr<int32_t>();
  const float* v = values.data_ptr<float>();
  m.indptr = torch::empty({rows + 1}, torch::kInt64);
  int64_t* q = m.indptr.data_ptr<int64_t>();
  std::vector<int32_t> out_idx;
  std::vector<float> out_val;
  q[0] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = p[r]; k < p[r + 1]; ++k) {
      if (new_index[idx[k]] >= 0) {
        out_idx.push_back(new_index[idx[k]]);
        out_val.push_back(v[k]);
      }
    }
    q[r + 1] = static_cast<int64_t>(out_idx.size());
  }
  m.indices = torch::from_blob(out_idx.data(), {(int64_t)out_idx.size()}, torch::kInt32).clone();
  m.values = torch::from_blob(out_val.data(), {(int64_t)out_val.size()}, torch::kFloat32).clone();
  return m;
}

std::vector<std::string> Column::as_strings() const {
  std::vector<std::string> out;
  if (categorical) {
    const int32_t* c = codes.data_ptr<int32_t>();
    out.reserve(codes.size(0));
    for (int64_t i = 0; i < codes.size(0); ++i) out.push_back(c[i] < 0 ? "" : categories[c[i]]);
  } else {
    const double* v = values.data_ptr<double>();
    for (int64_t i = 0; i < values.size(0); ++i) out.push_back(format_param(v[i]));
  }
  return out;
}

const Column* CellData::find_column(const std::string& name) const {
  for (const auto& c : columns)
    if (c.name == name) return &c;
  return nullptr;
}

const Column& CellData::require_labels(const std::string& who) const {
  const Column* c = labels();
  if (c == nullptr || !c->categorical)
    throw BadData(who + " needs categorical cell-type labels (set dataset.label_key)");
  return *c;
}

const Column& CellData::require_batches(const std::string& who) const {
  const Column* c = batches();
  if (c == nullptr || !c->categorical)
    throw BadData(who + " needs categorical batch labels (set dataset.batch_key)");
  return *c;
}

int CellData::modality_index(const std::string& name) const {
  for (size_t i = 0; i < modalities.size(); ++i)
    if (modalities[i].name == name) return static_cast<int>(i);
  return -1;
}

CellData CellData::select_cells(const torch::Tensor& cell_ids) const {
  torch::Tensor ids = cell_ids.to(torch::kInt64).contiguous();
  CellData out;
  out.batch_key = batch_key;
  out.label_key = label_key;
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < ids.size(0); ++i) out.cell_names.push_back(cell_names.at(id[i]));
  for (const auto& m : modalities) {
    Modality s{m.name, m.features, m.X.select_rows(ids), m.counts.select_rows(ids)};
    out.modalities.push_back(std::move(s));
  }
  for (const auto& c : columns) {
    Column s = c;
    if (c.categorical)
      s.codes = c.codes.index_select(0, ids);
    else
      s.values = c.values.index_select(0, ids);
    out.columns.push_back(std::move(s));
  }
  return out;
}

void CellData::validate(const std::string& what) const {
  const int64_t n = n_cells();
  for (const auto& m : modalities) {
    for (const Matrix* x : {&m.X, &m.counts}) {
      if (x->empty()) continue;
      SCSSL_REQUIRE(x->rows == n, what + ": modality '" + m.name + "' has " +
                                      std::to_string(x->rows) + " rows for " + std::to_string(n) +
                                      " cells");
      SCSSL_REQUIRE(x->cols == static_cast<int64_t>(m.features.size()),
                    what + ": modality '" + m.name + "' has " + std::to_string(x->cols) +
                        " columns for " + std::to_string(m.features.size()) + " feature names");
    }
  }
  for (const auto& c : columns) {
    const torch::Tensor& t = c.categorical ? c.codes : c.values;
    SCSSL_REQUIRE(t.defined() && t.dim() == 1 && t.size(0) == n,
                  what + ": column '" + c.name + "' does not have one entry per cell");
    if (c.categorical) {
      SCSSL_REQUIRE(t.scalar_type() == torch::kInt32,
                    what + ": column '" + c.name + "' codes not int32");
      const int32_t* code = t.data_ptr<int32_t>();
      const int64_t k = static_cast<int64_t>(c.categories.size());
      for (int64_t i = 0; i < n; ++i)
        SCSSL_REQUIRE(code[i] >= -1 && code[i] < k, what + ": column '" + c.name + "' has code " +
                                                        std::to_string(code[i]) + " but only " +
                                                        std::to_string(k) + " categories");
    }
  }
  for (const auto* key : {&batch_key, &label_key})
    SCSSL_REQUIRE(key->empty() || find_column(*key) != nullptr,
                  what + ": no obs column '" + *key + "'");
}

// ---- C boundary
// ------------------------------------------------------------------------------------

DLTensor to_dl(const torch::Tensor& tensor) {
  DLTensor t{};
  if (!tensor.defined()) return t;
  TORCH_CHECK(tensor.is_contiguous(), "to_dl needs a contiguous tensor");
  t.data = tensor.data_ptr();
  t.device = {kDLCPU, 0};
  t.ndim = static_cast<int32_t>(tensor.dim());
  t.dtype = at::getDLDataType(tensor);
  t.shape = const_cast<int64_t*>(tensor.sizes().data());
  t.strides = nullptr;  // compact row-major
  t.byte_offset = 0;
  return t;
}

torch::Tensor from_dl(const DLTensor& t, std::shared_ptr<void> owner, const std::string& what) {
  if (t.data == nullptr && t.ndim == 0) return {};
  if (t.device.device_type != kDLCPU) throw BadData(what + ": tensor is not in CPU memory");
  if (t.ndim < 1 || t.ndim > 2 || t.shape == nullptr)
    throw BadData(what + ": tensor rank " + std::to_string(t.ndim) + " is not 1 or 2");
  std::vector<int64_t> sizes(t.shape, t.shape + t.ndim);
  for (int64_t s : sizes)
    if (s < 0) throw BadData(what + ": negative tensor extent");
  if (t.strides != nullptr) {
    int64_t expected = 1;
    for (int32_t d = t.ndim - 1; d >= 0; --d) {
      if (sizes[d] > 1 && t.strides[d] != expected)
        throw BadData(what + ": tensor is not compact row-major");
      expected *= sizes[d];
    }
  }
  torch::ScalarType type = at::toScalarType(t.dtype);
  auto options = torch::TensorOptions().dtype(type);
  char* data = static_cast<char*>(t.data) + t.byte_offset;
  if (!owner) return torch::from_blob(data, sizes, options);
  return torch::from_blob(
      data, sizes, [owner](void*) mutable { owner.reset(); }, options);
}

DLManagedTensor* export_managed(torch::Tensor tensor) { return at::toDLPack(tensor.contiguous()); }

torch::Tensor import_managed(DLManagedTensor* managed, std::shared_ptr<void> keep_alive,
                             const std::string& what) {
  if (managed == nullptr) throw BadData(what + ": no tensor was returned");
  std::shared_ptr<void> owner(managed, [keep_alive](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter) m->deleter(m);
  });
  return from_dl(managed->dl_tensor, owner, what);
}

namespace {

DLTensor matrix_part(const Matrix& m, const torch::Tensor& t) {
  return m.empty() ? DLTensor{} : to_dl(t);
}

scssl_matrix to_c(const Matrix& m) {
  scssl_matrix c{};
  c.format = m.format == Matrix::Format::Csr     ? SCSSL_MATRIX_CSR
             : m.format == Matrix::Format::Dense ? SCSSL_MATRIX_DENSE
                                                 : SCSSL_MATRIX_NONE;
  c.n_rows = m.rows;
  c.n_cols = m.cols;
  if (m.format == Matrix::Format::Dense) c.dense = matrix_part(m, m.dense);
  if (m.format == Matrix::Format::Csr) {
    c.indptr = matrix_part(m, m.indptr);
    c.indices = matrix_part(m, m.indices);
    c.values = matrix_part(m, m.values);
  }
  return c;
}

Matrix from_c(const scssl_matrix& c, const std::shared_ptr<void>& owner, const std::string& what) {
  switch (c.format) {
    case SCSSL_MATRIX_NONE:
      return {};
    case SCSSL_MATRIX_DENSE: {
      Matrix m;
      m.format = Matrix::Format::Dense;
      m.dense = from_dl(c.dense, owner, what);
      SCSSL_REQUIRE(m.dense.dim() == 2 && m.dense.size(0) == c.n_rows &&
                        m.dense.size(1) == c.n_cols && m.dense.scalar_type() == torch::kFloat32,
                    what + ": dense matrix does not match its declared shape or is not float32");
      m.rows = c.n_rows;
      m.cols = c.n_cols;
      return m;
    }
    case SCSSL_MATRIX_CSR: {
      Matrix m;
      m.format = Matrix::Format::Csr;
      m.rows = c.n_rows;
      m.cols = c.n_cols;
      m.indptr = from_dl(c.indptr, owner, what + " indptr");
      m.indices = from_dl(c.indices, owner, what + " indices");
      m.values = from_dl(c.values, owner, what + " values");
      SCSSL_REQUIRE(m.indptr.scalar_type() == torch::kInt64 &&
                        m.indices.scalar_type() == torch::kInt32 &&
                        m.values.scalar_type() == torch::kFloat32,
                    what + ": CSR parts must be int64 indptr, int32 indices and float32 values");
      SCSSL_REQUIRE(m.indptr.size(0) == c.n_rows + 1 && m.indices.size(0) == m.values.size(0),
                    what + ": CSR parts do not match the declared shape");
      return m;
    }
  }
  throw BadData(what + ": unknown matrix format " + std::to_string(c.format));
}

CellData import_view(const scssl_cell_data* given, const std::shared_ptr<void>& owner) {
  if (given == nullptr) throw BadData("no cell data was given");
  const scssl_cell_data copy = read_sized(given);
  const scssl_cell_data* d = &copy;
  CellData out;
  out.cell_names.reserve(d->n_cells);
  for (int64_t i = 0; i < d->n_cells; ++i) out.cell_names.emplace_back(d->cell_names[i]);
  for (int64_t m = 0; m < d->n_modalities; ++m) {
    const scssl_modality src = read_sized_at(d->modalities, m, "the modality list");
    Modality mod;
    mod.name = src.name;
    for (int64_t j = 0; j < src.n_features; ++j) mod.features.emplace_back(src.feature_names[j]);
    mod.X = from_c(src.X, owner, "modality '" + mod.name + "' X");
    mod.counts = from_c(src.counts, owner, "modality '" + mod.name + "' counts");
    out.modalities.push_back(std::move(mod));
  }
  for (int64_t c = 0; c < d->n_columns; ++c) {
    const scssl_column src = read_sized_at(d->columns, c, "the column list");
    Column col;
    col.name = src.name;
    col.categorical = src.type == SCSSL_COLUMN_CATEGORICAL;
    if (col.categorical) {
      col.codes = from_dl(src.codes, owner, "column '" + col.name + "' codes");
      for (int64_t k = 0; k < src.n_categories; ++k) col.categories.emplace_back(src.categories[k]);
    } else {
      col.values = from_dl(src.values, owner, "column '" + col.name + "' values");
    }
    out.columns.push_back(std::move(col));
  }
  out.batch_key = d->batch_key ? d->batch_key : "";
  out.label_key = d->label_key ? d->label_key : "";
  out.validate("cell data");
  return out;
}

}  // namespace

CellDataView::CellDataView(CellData data) : data_(std::move(data)) {
  for (const auto& n : data_.cell_names) cell_names_.push_back(n.c_str());
  feature_names_.reserve(data_.modalities.size());
  for (const auto& m : data_.modalities) {
    auto& names = feature_names_.emplace_back();
    for (const auto& f : m.features) names.push_back(f.c_str());
    scssl_modality c = make_sized<scssl_modality>();
    c.name = m.name.c_str();
    c.n_features = static_cast<int64_t>(m.features.size());
    c.feature_names = names.data();
    c.X = to_c(m.X);
    c.counts = to_c(m.counts);
    modalities_.push_back(c);
  }
  categories_.reserve(data_.columns.size());
  for (const auto& col : data_.columns) {
    auto& cats = categories_.emplace_back();
    for (const auto& k : col.categories) cats.push_back(k.c_str());
    scssl_column c = make_sized<scssl_column>();
    c.name = col.name.c_str();
    c.type = col.categorical ? SCSSL_COLUMN_CATEGORICAL : SCSSL_COLUMN_NUMERIC;
    if (col.categorical) {
      c.codes = to_dl(col.codes);
      c.n_categories = static_cast<int64_t>(cats.size());
      c.categories = cats.data();
    } else {
      c.values = to_dl(col.values);
    }
    columns_.push_back(c);
  }
  view_.struct_size = sizeof(scssl_cell_data);
  view_.n_cells = data_.n_cells();
  view_.cell_names = cell_names_.data();
  view_.n_modalities = static_cast<int64_t>(modalities_.size());
  view_.modalities = modalities_.data();
  view_.n_columns = static_cast<int64_t>(columns_.size());
  view_.columns = columns_.data();
  view_.batch_key = data_.batch_key.c_str();
  view_.label_key = data_.label_key.c_str();
  view_.release = nullptr;
  view_.private_data = nullptr;
}

scssl_cell_data* CellDataView::export_owned(CellData data) {
  auto* holder = new CellDataView(std::move(data));
  holder->view_.private_data = holder;
  holder->view_.release = [](scssl_cell_data* self) {
    delete static_cast<CellDataView*>(self->private_data);
  };
  return &holder->view_;
}

CellData import_borrowed(const scssl_cell_data* data) { return import_view(data, nullptr); }

CellData import_owned(scssl_cell_data* data, std::shared_ptr<void> keep_alive) {
  if (data == nullptr) throw BadData("no cell data was returned");
  std::shared_ptr<void> owner(data, [keep_alive](void* p) {
    auto* d = static_cast<scssl_cell_data*>(p);
    if (d->release) d->release(d);
  });
  return import_view(data, owner);
}

}  // namespace scssl
