// libFuzzer target for the .h5ad reader (scssl_anndata: docs/hdf5.md): whatever the bytes of the
// file, reading it the way the h5ad dataset plugin, `evaluate` and the report do either succeeds
// with results that keep the reader's promises or throws one scssl::Error; never a crash, a leak,
// undefined behaviour or another exception in our code. Crashes inside the HDF5 library itself
// (HDF5 1.10 has known ones on corrupt files) are told apart by tools/fuzz.sh, which runs this
// target with -ignore_crashes and sorts what it saved (docs/reliability.md).
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "scssl/anndata/anndata.hpp"
#include "scssl/anndata/frame.hpp"
#include "scssl/anndata/hdf5.hpp"
#include "scssl/anndata/matrix.hpp"

namespace {

namespace ad = scssl::anndata;

void require(bool ok) {
  if (!ok) __builtin_trap();
}

void check(const ad::CsrArrays& m, int64_t rows, int64_t cols) {
  require(m.rows == rows && m.cols == cols);
  require(m.indptr.size() == static_cast<size_t>(rows) + 1 && m.indptr.front() == 0);
  require(m.indptr.back() == static_cast<int64_t>(m.values.size()));
  require(m.indices.size() == m.values.size());
  for (int64_t r = 0; r < rows; ++r) require(m.indptr[r] <= m.indptr[r + 1]);
  for (size_t k = 0; k < m.values.size(); ++k)
    require(m.indices[k] >= 0 && m.indices[k] < cols && std::isfinite(m.values[k]));
}

// What the h5ad plugin reads: obs and var with every column, then each matrix the file has.
void read_like_the_plugin(const std::string& path) {
  scssl::h5::File file = scssl::h5::File::open(path);
  const scssl::h5::Group& root = file.root();
  ad::Frame obs(root, "obs");
  require(static_cast<int64_t>(obs.index().size()) == obs.n_rows());
  for (const std::string& name : obs.columns()) {
    try {
      ad::Column c = obs.column(name);
      if (!c.categorical) c = ad::categorical_from_numbers(c);
      for (int32_t code : c.codes)
        require(code >= -1 && code < static_cast<int32_t>(c.categories.size()));
    } catch (const ad::UnsupportedColumn&) {
    }
  }
  for (const char* var_key : {"var", "raw/var"}) {
    if (!root.has(var_key)) continue;
    ad::Frame var(root, var_key);
    require(static_cast<int64_t>(var.index().size()) == var.n_rows());
    const std::string matrix = std::string(var_key) == "var" ? "X" : "raw/X";
    if (root.has(matrix))
      check(ad::read_matrix(root, matrix, obs.n_rows(), var.n_rows()), obs.n_rows(), var.n_rows());
    if (matrix == "X" && root.has_group("layers"))
      for (const std::string& layer : root.group("layers").children())
        check(ad::read_matrix(root, "layers/" + layer, obs.n_rows(), var.n_rows()), obs.n_rows(),
              var.n_rows());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A new name per input: HDF5 shares an open file between opens of one name, so a handle left
  // open by one input would make the next one read stale metadata.
  static int64_t count = 0;
  const char* dir = std::getenv("TMPDIR");
  const std::string path = std::string(dir ? dir : "/tmp") + "/scssl-fuzz-h5ad-" +
                           std::to_string(getpid()) + "-" + std::to_string(count++) + ".h5ad";
  FILE* f = std::fopen(path.c_str(), "wb");
  require(f != nullptr);
  require(std::fwrite(data, 1, size, f) == size || size == 0);
  std::fclose(f);
  try {
    const ad::Summary s = ad::inspect(path);
    for (const std::string& column : s.obs_columns) {
      try {
        const ad::Categories c = ad::read_obs_categories(path, column);
        require(static_cast<int64_t>(c.codes.size()) == s.n_obs);
      } catch (const scssl::Error&) {
      }
    }
    for (const std::string& key : s.obsm_keys) {
      try {
        const ad::Matrix m = ad::read_obsm(path, key);
        require(m.rows == s.n_obs && static_cast<int64_t>(m.values.size()) == m.rows * m.cols);
      } catch (const scssl::Error&) {
      }
    }
    read_like_the_plugin(path);
  } catch (const scssl::Error&) {
  }
  std::remove(path.c_str());
  // Every file, group, dataset and attribute the reader opened is closed again, errors or not.
  require(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0);
  return 0;
}
