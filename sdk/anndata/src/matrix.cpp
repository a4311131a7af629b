#include "scssl/anndata/matrix.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace scssl::anndata {

namespace {

using h5::Dataset;
using h5::Group;
using h5::Kind;
using h5::NumType;
using h5::TypeClass;

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
std::vector<int64_t> read_pointers(const Dataset& d, int64_t major, int64_t nnz,
                                   const char* unit) {
  require_integers(d, "index pointers");
  const int64_t n = d.length_1d();
  if (n != major + 1)
    d.fail("has " + std::to_string(n) + " entries, expected " + std::to_string(major + 1) +
           " (one per " + unit + " plus one)");
  std::vector<int64_t> p(static_cast<size_t>(n));
  d.read(NumType::Int64, p.data());
  if (p[0] != 0) d.fail("starts at " + std::to_string(p[0]) + ", expected 0");
  for (int64_t i = 0; i < major; ++i)
    if (p[i + 1] < p[i]) d.fail("decreases at " + std::string(unit) + " " + std::to_string(i));
  if (p[major] != nnz)
    d.fail("ends at " + std::to_string(p[major]) + " but there are " + std::to_string(nnz) +
           " stored values");
  return p;
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

CsrArrays read_csr(const Group& g, int64_t rows, int64_t cols) {
  auto [data, indices] = sparse_arrays(g, "column indices");
  const int64_t nnz = data.length_1d();
  CsrArrays m;
  m.rows = rows;
  m.cols = cols;
  m.indptr = read_pointers(g.dataset("indptr"), rows, nnz, "row");
  m.indices.resize(static_cast<size_t>(nnz));
  indices.read(NumType::Int32, m.indices.data());
  const int64_t* p = m.indptr.data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = p[r]; k < p[r + 1]; ++k)
      if (m.indices[k] < 0 || m.indices[k] >= cols)
        indices.fail("has column index " + std::to_string(m.indices[k]) + " in row " +
                     std::to_string(r) + ", out of range for " + std::to_string(cols) +
                     " columns");
  m.values.resize(static_cast<size_t>(nnz));
  data.read(NumType::Float32, m.values.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = p[r]; k < p[r + 1]; ++k)
      if (!std::isfinite(m.values[k])) non_finite(g.file(), g.key(), r, m.indices[k]);
  return m;
}

// CSC -> CSR by counting and scattering, reading the CSC arrays in blocks.
CsrArrays read_csc(const Group& g, int64_t rows, int64_t cols) {
  auto [data, indices] = sparse_arrays(g, "row indices");
  const int64_t nnz = data.length_1d();
  const std::vector<int64_t> colptr = read_pointers(g.dataset("indptr"), cols, nnz, "column");

  CsrArrays m;
  m.rows = rows;
  m.cols = cols;
  m.indptr.assign(static_cast<size_t>(rows) + 1, 0);
  int64_t* rowptr = m.indptr.data();
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
  m.indices.resize(static_cast<size_t>(nnz));
  m.values.resize(static_cast<size_t>(nnz));
  std::vector<int64_t> next(rowptr, rowptr + rows);
  for (int64_t start = 0, col = 0; start < nnz; start += kBlockElements) {
    const int64_t n = std::min(kBlockElements, nnz - start);
    indices.read_range(NumType::Int64, row_block.data(), start, n);
    data.read_range(NumType::Float32, value_block.data(), start, n);
    for (int64_t k = 0; k < n; ++k) {
      while (colptr[col + 1] <= start + k) ++col;
      const int64_t r = row_block[k];
      // The file may have changed between the passes; a row index is trusted only once checked.
      if (r < 0 || r >= rows || next[r] >= rowptr[r + 1])
        indices.fail("changed while it was being read (row index " + std::to_string(r) + ")");
      if (!std::isfinite(value_block[k])) non_finite(g.file(), g.key(), r, col);
      const int64_t pos = next[r]++;
      m.indices[pos] = static_cast<int32_t>(col);
      m.values[pos] = value_block[k];
    }
  }
  return m;
}

// Dense -> CSR in blocks of rows (aligned to the dataset's chunks so each chunk is inflated once).
CsrArrays read_dense(const Dataset& d, int64_t rows, int64_t cols) {
  require_numeric(d, "matrix values");
  int64_t block_rows = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(cols, 1));
  std::vector<int64_t> chunk = d.chunks();
  if (!chunk.empty() && chunk[0] > 0 && chunk[0] <= 4 * kBlockElements / std::max<int64_t>(cols, 1))
    block_rows = std::max<int64_t>(1, block_rows / chunk[0]) * chunk[0];
  block_rows = std::min(block_rows, std::max<int64_t>(rows, 1));
  std::vector<float> block(static_cast<size_t>(block_rows * cols));
  CsrArrays m;
  m.rows = rows;
  m.cols = cols;
  m.indptr.reserve(static_cast<size_t>(rows) + 1);
  m.indptr.push_back(0);
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    d.read_rows(NumType::Float32, block.data(), r0, n);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = block.data() + i * cols;
      for (int64_t j = 0; j < cols; ++j) {
        if (row[j] == 0.0f) continue;
        if (!std::isfinite(row[j])) non_finite(d.file(), d.key(), r0 + i, j);
        m.indices.push_back(static_cast<int32_t>(j));
        m.values.push_back(row[j]);
      }
      m.indptr.push_back(static_cast<int64_t>(m.values.size()));
    }
  }
  return m;
}

std::string shape_text(int64_t r, int64_t c) {
  return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
}

}  // namespace

CsrArrays read_matrix(const Group& root, const std::string& key, int64_t rows, int64_t cols) {
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

std::vector<CsrArrays> split_columns(CsrArrays m, const std::vector<int32_t>& group,
                                     int32_t n_groups) {
  std::vector<int32_t> local(group.size());
  std::vector<int64_t> width(static_cast<size_t>(n_groups), 0);
  for (size_t j = 0; j < group.size(); ++j)
    local[j] = group[j] < 0 ? -1 : static_cast<int32_t>(width[group[j]]++);
  std::vector<CsrArrays> out(static_cast<size_t>(n_groups));
  for (int32_t g = 0; g < n_groups; ++g) {
    out[g].rows = m.rows;
    out[g].cols = width[g];
    out[g].indptr.assign(static_cast<size_t>(m.rows) + 1, 0);
  }
  const int64_t* p = m.indptr.data();
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int32_t g = 0; g < n_groups; ++g) out[g].indptr[r + 1] = out[g].indptr[r];
    for (int64_t k = p[r]; k < p[r + 1]; ++k)
      if (const int32_t g = group[m.indices[k]]; g >= 0) ++out[g].indptr[r + 1];
  }
  for (auto& part : out) {
    part.indices.resize(static_cast<size_t>(part.indptr[m.rows]));
    part.values.resize(part.indices.size());
  }
  std::vector<int64_t> pos(static_cast<size_t>(n_groups), 0);
  const int64_t nnz = m.indptr.empty() ? 0 : m.indptr.back();
  for (int64_t k = 0; k < nnz; ++k) {
    const int32_t j = m.indices[k], g = group[j];
    if (g < 0) continue;
    out[g].indices[pos[g]] = local[j];
    out[g].values[pos[g]++] = m.values[k];
  }
  m = CsrArrays();
  return out;
}

CsrArrays read_csr_arrays(const Group& g, int64_t rows, int64_t cols) {
  if (cols > std::numeric_limits<int32_t>::max())
    g.fail("has more columns than 32-bit indices can address");
  return read_csr(g, rows, cols);
}

}  // namespace scssl::anndata
