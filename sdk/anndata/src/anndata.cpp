#include "scssl/anndata/anndata.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "scssl/anndata/frame.hpp"
#include "scssl/anndata/hdf5.hpp"

namespace fs = std::filesystem;

namespace scssl::anndata {

using h5::Dataset;
using h5::File;
using h5::Group;
using h5::Kind;
using h5::NumType;

namespace {

// ---- publishing without replacing
// ----------------------------------------------------------------

// The error `e` again, of the same kind, with `from` (a temporary's name) shown as `to`.
[[noreturn]] void rethrow_renamed(const Error& e, const std::string& from, const std::string& to) {
  std::string message = e.what();
  for (size_t at = message.find(from); at != std::string::npos;
       at = message.find(from, at + to.size()))
    message.replace(at, from.size(), to);
  switch (e.status()) {
    case SCSSL_ERR_BAD_DATA:
      throw BadData(message);
    case SCSSL_ERR_IO:
      throw IoError(message);
    case SCSSL_ERR_INVALID_ARGUMENT:
      throw InvalidArgument(message);
    default:
      throw Error(e.status(), message);
  }
}

[[noreturn]] void refuse_existing(const std::string& target) {
  throw IoError(target + ": already exists; it is not replaced");
}

// Gives `tmp` the name `target` unless a file of that name exists. A hard link is atomic and
// refuses an existing name (EEXIST); file systems without hard links get a check, then a rename.
void publish(const std::string& tmp, const std::string& target) {
  if (::link(tmp.c_str(), target.c_str()) == 0) {
    ::unlink(tmp.c_str());
    return;
  }
  const int err = errno;
  if (err == EEXIST) refuse_existing(target);
  if (err != EPERM && err != EOPNOTSUPP && err != ENOSYS && err != EMLINK)
    throw IoError(target + ": cannot be written (" + std::strerror(err) + ")");
  std::error_code ec;
  if (fs::exists(fs::symlink_status(target, ec))) refuse_existing(target);
  fs::rename(tmp, target, ec);
  if (ec) throw IoError(target + ": cannot be written (" + ec.message() + ")");
}

// Runs `write` on a fresh temporary next to `target`, then publishes it; the temporary never
// outlives a failure, and errors name the target rather than the temporary.
void write_new_file(const std::string& target,
                    const std::function<void(const std::string&)>& write) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(target, ec))) refuse_existing(target);
  static std::atomic<unsigned> counter{0};
  const fs::path p(target);
  const std::string tmp =
      (p.parent_path() / ("." + p.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter++)))
          .string();
  try {
    try {
      write(tmp);
    } catch (const Error& e) {
      rethrow_renamed(e, tmp, target);
    }
    publish(tmp, target);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

void check_shape(const std::string& path, const float* data, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0)
    throw InvalidArgument(path + ": negative matrix shape " + std::to_string(rows) + " x " +
                          std::to_string(cols));
  if (!data && rows > 0 && cols > 0) throw InvalidArgument(path + ": no matrix data to write");
}

void set_encoding(const h5::Object& o, const char* type, const char* version) {
  o.set_attr("encoding-type", type);
  o.set_attr("encoding-version", version);
}

// The number of cells of an open .h5ad (the length of its obs index).
int64_t n_obs_of(const Group& root) { return Frame(root, "obs").n_rows(); }

// What a float32 2-d dataset holds, checked: at least one row and column, every value finite.
Matrix read_finite_matrix(const Dataset& d, const std::string& where) {
  const std::vector<int64_t> shape = d.shape();
  if (shape.size() != 2 || shape[0] < 1 || shape[1] < 1)
    throw BadData(where + " must be a non-empty 2-d array (cells x dimensions)");
  Matrix m;
  m.rows = shape[0];
  m.cols = shape[1];
  m.values.resize(static_cast<size_t>(m.rows * m.cols));
  d.read(NumType::Float32, m.values.data());
  for (size_t i = 0; i < m.values.size(); ++i)
    if (!std::isfinite(m.values[i]))
      throw BadData(where + " has a non-finite value at cell " + std::to_string(i / m.cols) +
                    ", dimension " + std::to_string(i % m.cols));
  return m;
}

}  // namespace

// ---- Summary
// ------------------------------------------------------------------------------------------

std::string Summary::matrix_key(const std::string& layer) {
  if (layer.empty()) return "X";
  if (layer == "raw") return "raw/X";
  return "layers/" + layer;
}

bool Summary::has_matrix(const std::string& layer) const {
  if (layer.empty()) return has_x;
  if (layer == "raw") return has_raw_x;
  return std::find(layers.begin(), layers.end(), layer) != layers.end();
}

// ---- reads
// --------------------------------------------------------------------------------------------

Summary inspect(const std::string& h5ad_path) {
  File f = File::open(h5ad_path);
  const Group& root = f.root();
  Summary s;
  const Frame obs(root, "obs");
  s.n_obs = obs.n_rows();
  s.obs_columns = obs.columns();
  if (root.has("var")) {
    const Frame var(root, "var");
    s.n_vars = var.n_rows();
    s.var_columns = var.columns();
  }
  switch (root.kind("obsm")) {
    case Kind::Group:
      s.obsm_keys = root.group("obsm").children();
      break;
    case Kind::Dataset: {  // anndata < 0.7: a compound dataset, one field per key
      const Dataset obsm = root.dataset("obsm");
      if (obsm.type().cls == h5::TypeClass::Compound) s.obsm_keys = obsm.field_names();
      break;
    }
    default:
      break;
  }
  if (root.has_group("layers")) s.layers = root.group("layers").children();
  s.has_x = root.has("X");
  s.has_raw_x = (root.has_group("raw") && root.has("raw/X")) || root.has("raw.X");
  return s;
}

Categories read_obs_categories(const std::string& h5ad_path, const std::string& column) {
  File f = File::open(h5ad_path);
  Column c = Frame(f.root(), "obs").column(column);
  if (!c.categorical) c = categorical_from_numbers(c);
  Categories out;
  out.codes = std::move(c.codes);
  out.names = std::move(c.categories);
  return out;
}

Matrix read_obsm(const std::string& h5ad_path, const std::string& key) {
  File f = File::open(h5ad_path);
  const Group& root = f.root();
  const std::string where = h5ad_path + ": obsm['" + key + "']";
  switch (root.kind("obsm")) {
    case Kind::Group:
      break;
    case Kind::Missing:
      throw BadData(where + " does not exist (the file has no obsm)");
    default:
      throw BadData(where +
                    " cannot be read: obsm is stored in the pre-0.7 layout (a compound "
                    "dataset); rewrite the file with a current anndata");
  }
  const Group obsm = root.group("obsm");
  switch (obsm.kind(key)) {
    case Kind::Dataset:
      break;
    case Kind::Missing:
      throw BadData(where + " does not exist (obsm keys: " + list_names(obsm.children()) + ")");
    default:
      throw BadData(where + " is not a numeric array (a data frame or group)");
  }
  return read_finite_matrix(obsm.dataset(key), where);
}

CsrArrays read_obsp(const std::string& h5ad_path, const std::string& key) {
  File f = File::open(h5ad_path);
  const Group& root = f.root();
  const std::string where = h5ad_path + ": obsp['" + key + "']";
  if (root.kind("obsp") != Kind::Group)
    throw BadData(where + " does not exist (the file has no obsp)");
  const Group obsp = root.group("obsp");
  if (obsp.kind(key) == Kind::Missing)
    throw BadData(where + " does not exist (obsp keys: " + list_names(obsp.children()) + ")");
  const int64_t n = n_obs_of(root);
  return read_matrix(root, "obsp/" + key, n, n);
}

Matrix read_embedding_h5(const std::string& path, std::vector<std::string>* cell_names) {
  File f = File::open(path);
  const Dataset d = f.root().dataset(kEmbeddingDataset);
  const std::vector<int64_t> shape = d.shape();
  if (shape.size() != 2) d.fail("is not a 2-d array (cells x dimensions)");
  Matrix m;
  m.rows = shape[0];
  m.cols = shape[1];
  m.values.resize(static_cast<size_t>(m.rows * m.cols));
  if (!m.values.empty()) d.read(NumType::Float32, m.values.data());
  if (cell_names) {
    const Dataset names = f.root().dataset("cell_names");
    *cell_names = names.read_strings();
    if (static_cast<int64_t>(cell_names->size()) != m.rows)
      names.fail("has " + std::to_string(cell_names->size()) + " names for " +
                 std::to_string(m.rows) + " embedding rows");
  }
  return m;
}

// ---- writes
// -------------------------------------------------------------------------------------------

void write_embedding_h5(const std::string& path, const float* data, int64_t rows, int64_t cols,
                        const std::vector<std::string>& cell_names) {
  check_shape(path, data, rows, cols);
  if (static_cast<int64_t>(cell_names.size()) != rows)
    throw InvalidArgument(path + ": " + std::to_string(cell_names.size()) + " cell names for " +
                          std::to_string(rows) + " embedding rows");
  write_new_file(path, [&](const std::string& tmp) {
    File f = File::create_new(tmp);
    set_encoding(f.root().write(kEmbeddingDataset, NumType::Float32, data, {rows, cols}), "array",
                 "0.2.0");
    set_encoding(f.root().write_strings("cell_names", cell_names), "string-array", "0.2.0");
    f.flush();
  });
}

namespace {

// Checks the source before anything is copied or opened for writing (through the guarded
// read-only driver: HDF5's writable drivers do not check what they read), copies it to a hidden
// temporary, lets `edit` change the copy and publishes it under `target`.
void write_edited_copy(const std::string& source_h5ad, const std::string& target, int64_t rows,
                       const std::string& what, const std::vector<ObsColumn>& obs,
                       const std::function<void(const Group& root)>& edit) {
  {
    File f = File::open(source_h5ad);
    const int64_t n_obs = n_obs_of(f.root());
    if (rows >= 0 && rows != n_obs)
      throw BadData(source_h5ad + ": " + what + " would have " + std::to_string(rows) +
                    " rows but the file has " + std::to_string(n_obs) + " cells");
    const Kind obsm = f.root().kind("obsm");
    if (rows >= 0 && obsm != Kind::Missing && obsm != Kind::Group)
      throw BadData(source_h5ad +
                    ": 'obsm' is stored in the pre-0.7 layout (a compound dataset); rewrite the "
                    "file with a current anndata before adding keys");
    for (const ObsColumn& c : obs) {
      if (c.name.empty() || c.name.find('/') != std::string::npos || c.name == "_index")
        throw InvalidArgument(target + ": obs column '" + c.name +
                              "' must be a non-empty name without '/'");
      if (c.size != n_obs || (c.size > 0 && c.values == nullptr))
        throw InvalidArgument(target + ": obs column '" + c.name + "' has " +
                              std::to_string(c.size) + " values but the file has " +
                              std::to_string(n_obs) + " cells");
    }
    if (!obs.empty() && f.root().kind("obs") != Kind::Group)
      throw BadData(source_h5ad +
                    ": 'obs' is not stored as a group (the pre-0.7 layout or missing); rewrite "
                    "the file with a current anndata before adding columns");
  }
  write_new_file(target, [&](const std::string& tmp) {
    std::error_code ec;
    fs::copy_file(source_h5ad, tmp, fs::copy_options::none, ec);
    if (ec) throw IoError("cannot copy '" + source_h5ad + "' to '" + target + "': " + ec.message());
    // The copy inherits the source's permissions; a read-only input must still be writable here.
    fs::permissions(tmp, fs::perms::owner_write, fs::perm_options::add, ec);
    File f = File::open(tmp, File::Mode::ReadWrite);
    edit(f.root());
    if (!obs.empty()) {
      const Group frame = f.root().group("obs");
      std::vector<std::string> order = frame.has_attr("column-order")
                                           ? frame.attr_strings("column-order")
                                           : std::vector<std::string>{};
      for (const ObsColumn& c : obs) {
        frame.remove(c.name);  // the copy's own column, replaced without following it
        set_encoding(frame.write(c.name, NumType::Float64, c.values, {c.size}), "array", "0.2.0");
        if (std::find(order.begin(), order.end(), c.name) == order.end()) order.push_back(c.name);
      }
      frame.set_attr("column-order", order);
    }
    f.flush();
  });
}

}  // namespace

void write_copy_with_obsm(const std::string& source_h5ad, const std::string& target,
                          const std::string& key, const float* data, int64_t rows, int64_t cols,
                          const std::vector<ObsColumn>& obs) {
  if (key.empty() || key.find('/') != std::string::npos || key == "." || key == "..")
    throw InvalidArgument(target + ": obsm key '" + key + "' must be a non-empty name without '/'");
  check_shape(target, data, rows, cols);
  write_edited_copy(source_h5ad, target, rows, "obsm['" + key + "']", obs, [&](const Group& root) {
    Group obsm;
    if (root.has_group("obsm")) {
      obsm = root.group("obsm");
    } else {
      obsm = root.create_group("obsm");
      set_encoding(obsm, "dict", "0.1.0");
    }
    obsm.remove(key);  // the copy's own entry, replaced without following it
    set_encoding(obsm.write(key, NumType::Float32, data, {rows, cols}), "array", "0.2.0");
  });
}

void write_copy_with_obs(const std::string& source_h5ad, const std::string& target,
                         const std::vector<ObsColumn>& obs) {
  write_edited_copy(source_h5ad, target, -1, "", obs, [](const Group&) {});
}

}  // namespace scssl::anndata
