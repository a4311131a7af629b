// The data matrices of an .h5ad file (X, raw/X, raw.X, layers/<name>): dense, CSR or CSC, any
// integer or float dtype, int32 or int64 index arrays, always returned as CSR float32. The file is
// untrusted: index pointers, indices, shapes and values are checked as they are read, and every
// error is a BadData naming the file and the key. Torch-free, so that the h5ad plugin and the
// reader's fuzz target (tests/fuzz/fuzz_h5ad.cpp) run the same code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scssl/anndata/hdf5.hpp"

namespace scssl::anndata {

struct CsrArrays {
  int64_t rows = 0, cols = 0;
  std::vector<int64_t> indptr;   // rows + 1, from 0, non-decreasing, ending at the stored count
  std::vector<int32_t> indices;  // columns, in [0, cols); sorted within a row for CSC input
  std::vector<float> values;     // finite
};

// The matrix at `key`, which must be rows x cols (obs x var). Dense and CSC input are converted
// block by block: the peak is the CSR result plus one block, never a dense cells x genes copy.
CsrArrays read_matrix(const h5::Group& root, const std::string& key, int64_t rows, int64_t cols);

// The CSR arrays `data`, `indices` and `indptr` of group `g` as a rows x cols matrix, with the
// checks read_matrix makes, for layouts that keep the shape elsewhere (10x Genomics' .h5 stores
// features x barcodes CSC in these three arrays, which is barcodes x features CSR; the tenx
// dataset plugin reads it so).
CsrArrays read_csr_arrays(const h5::Group& g, int64_t rows, int64_t cols);

// Splits a matrix by columns into one matrix per group (group[j] in [0, n_groups), or -1 to leave
// column j out), keeping the column order within each group: the features of each modality. One
// counting pass and one filling pass; `m` is freed before returning, so the peak is the input plus
// the parts.
std::vector<CsrArrays> split_columns(CsrArrays m, const std::vector<int32_t>& group,
                                     int32_t n_groups);

}  // namespace scssl::anndata
