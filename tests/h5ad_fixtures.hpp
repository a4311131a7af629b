// Small AnnData files written with the HDF5 C API and scssl_anndata's writers, in the layouts
// anndata 0.5 to 0.11 produced; shared by test_h5ad (the dataset plugin) and test_anndata (the
// library).
#pragma once

#include <hdf5.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "scssl/anndata/hdf5.hpp"

namespace scssl::test::fixtures {

inline void set_encoding(const h5::Object& o, const char* type, const char* version) {
  o.set_attr("encoding-type", type);
  o.set_attr("encoding-version", version);
}

template <class T>
inline h5::Dataset write_vec(const h5::Group& g, const std::string& name, const std::vector<T>& v) {
  return g.write(name, h5::num_type_of<T>(), v.data(), {static_cast<int64_t>(v.size())});
}

// A 1-d dataset of n elements of type t from buf, through the C API (for types the wrapper does
// not write); takes ownership of t.
inline void write_1d_with_type(hid_t loc, const std::string& name, hid_t t, size_t n,
                               const void* buf) {
  const hsize_t dims = n;
  hid_t s = H5Screate_simple(1, &dims, nullptr);
  hid_t d = H5Dcreate2(loc, name.c_str(), t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  H5Dclose(d);
  H5Sclose(s);
  H5Tclose(t);
}

// h5py's bool: an int8 enum {FALSE, TRUE}.
inline hid_t bool_type() {
  hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
  int8_t f = 0, tr = 1;
  H5Tenum_insert(t, "FALSE", &f);
  H5Tenum_insert(t, "TRUE", &tr);
  return t;
}

inline void write_bool(const h5::Group& g, const std::string& name, const std::vector<int8_t>& v) {
  hid_t t = bool_type();
  write_1d_with_type(g.id(), name, t, v.size(), v.data());
}

// Fixed-length strings (numpy 'S<size>'), as anndata < 0.7 wrote them.
inline void write_fixed_strings(hid_t loc, const std::string& name,
                                const std::vector<std::string>& v, size_t size,
                                H5T_str_t pad = H5T_STR_NULLPAD) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, size);
  H5Tset_strpad(t, pad);
  std::vector<char> buf(v.size() * size, pad == H5T_STR_SPACEPAD ? ' ' : '\0');
  for (size_t i = 0; i < v.size(); ++i)
    std::memcpy(buf.data() + i * size, v[i].data(), v[i].size());
  write_1d_with_type(loc, name, t, v.size(), buf.data());
}

// Variable-length ASCII strings (what h5py writes for bytes objects).
inline void write_vlen_ascii(hid_t loc, const std::string& name,
                             const std::vector<std::string>& v) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_ASCII);
  std::vector<const char*> p;
  for (const auto& s : v) p.push_back(s.c_str());
  write_1d_with_type(loc, name, t, v.size(), p.data());
}

inline h5::Group write_frame(const h5::Group& parent, const std::string& key,
                             const std::vector<std::string>& index,
                             const std::vector<std::string>& order, const char* version = "0.2.0") {
  h5::Group g = parent.create_group(key);
  set_encoding(g, "dataframe", version);
  g.set_attr("_index", "_index");
  g.set_attr("column-order", order);
  set_encoding(g.write_strings("_index", index), "string-array", "0.2.0");
  return g;
}

inline void write_categorical(const h5::Group& frame, const std::string& name,
                              const std::vector<std::string>& categories,
                              const std::vector<int8_t>& codes) {
  h5::Group g = frame.create_group(name);
  set_encoding(g, "categorical", "0.2.0");
  g.set_attr("ordered", false);
  set_encoding(g.write_strings("categories", categories), "string-array", "0.2.0");
  set_encoding(write_vec(g, "codes", codes), "array", "0.2.0");
}

template <class P, class I, class V>
inline h5::Group write_sparse(const h5::Group& parent, const std::string& name, const char* format,
                              int64_t rows, int64_t cols, const std::vector<P>& ptr,
                              const std::vector<I>& idx, const std::vector<V>& val) {
  h5::Group g = parent.create_group(name);
  set_encoding(g, format, "0.1.0");
  g.set_attr("shape", std::vector<int64_t>{rows, cols});
  write_vec(g, "indptr", ptr);
  write_vec(g, "indices", idx);
  write_vec(g, "data", val);
  return g;
}

// The 4 x 5 matrix every fixture holds, in several encodings.
inline const std::vector<float> kDense = {1, 0, 0, 2, 0,  //
                                          0, 0, 0, 0, 0,  //
                                          0, 3, 0, 0, 4,  //
                                          5, 0, 6, 0, 7};
inline const std::vector<int32_t> kIndptr = {0, 2, 2, 4, 7};
inline const std::vector<int32_t> kIndices = {0, 3, 1, 4, 0, 2, 4};
inline const std::vector<float> kData = {1, 2, 3, 4, 5, 6, 7};
inline const std::vector<int32_t> kColptr = {0, 2, 3, 4, 5, 7};
inline const std::vector<int32_t> kRowIndices = {0, 3, 2, 3, 0, 2, 3};
inline const std::vector<float> kCscData = {1, 5, 3, 6, 2, 4, 7};

using Writer = std::function<void(const h5::Group& root)>;

inline void write_csr_x(const h5::Group& root) {
  write_sparse(root, "X", "csr_matrix", 4, 5, kIndptr, kIndices, kData);
}

// An anndata >= 0.8 file: obs with every column kind, var, X written by `x`; `after` may then
// change anything.
inline std::string write_current(const std::string& path, const Writer& x = write_csr_x,
                                 const Writer& after = nullptr) {
  h5::File f = h5::File::create(path);
  const h5::Group& root = f.root();
  set_encoding(root, "anndata", "0.1.0");
  h5::Group obs = write_frame(
      root, "obs", {"c0", "c1", "c2", "c3"},
      {"batch", "cell_type", "donor", "score", "n_genes", "u8", "flag", "nint", "nbool", "nstr"});
  write_categorical(obs, "batch", {"b1", "b2"}, {0, 1, 0, 1});
  write_categorical(obs, "cell_type", {"A", "B", "C"}, {2, 0, -1, 1});
  set_encoding(obs.write_strings("donor", {"d2", "d1", "d2", "d10"}), "string-array", "0.2.0");
  write_vec(obs, "score", std::vector<double>{0.5, -1.25, 3, 1e10});
  write_vec(obs, "n_genes", std::vector<int64_t>{2, 0, 2, 3});
  write_vec(obs, "u8", std::vector<uint8_t>{0, 255, 7, 1});
  write_bool(obs, "flag", {1, 0, 0, 1});
  {
    h5::Group g = obs.create_group("nint");
    set_encoding(g, "nullable-integer", "0.1.0");
    write_vec(g, "values", std::vector<int64_t>{1, 2, 3, 4});
    write_bool(g, "mask", {0, 1, 0, 0});
  }
  {
    h5::Group g = obs.create_group("nbool");
    set_encoding(g, "nullable-boolean", "0.1.0");
    write_bool(g, "values", {1, 0, 1, 0});
    write_bool(g, "mask", {0, 0, 1, 0});
  }
  {
    h5::Group g = obs.create_group("nstr");
    set_encoding(g, "nullable-string-array", "0.1.0");
    g.write_strings("values", {"x", "y", "", "x"});
    write_bool(g, "mask", {0, 0, 1, 0});
  }
  h5::Group var = write_frame(root, "var", {"g0", "g1", "g2", "g3", "g4"}, {"gene_ids"});
  set_encoding(var.write_strings("gene_ids", {"E0", "E1", "E2", "E3", "E4"}), "string-array",
               "0.2.0");
  set_encoding(root.create_group("obsm"), "dict", "0.1.0");
  set_encoding(root.create_group("layers"), "dict", "0.1.0");
  if (x) x(root);
  if (after) after(root);
  f.flush();
  return path;
}

// anndata < 0.7: obs/var are compound datasets; categorical fields hold codes whose names are in
// uns/<column>_categories.
struct ObsRow {
  char index[8];
  int8_t batch;
  float n_counts;
  int8_t flag;
  char label[4];
};

inline void write_pre07(const std::string& path) {
  h5::File f = h5::File::create(path);
  const h5::Group& root = f.root();
  hid_t str8 = H5Tcopy(H5T_C_S1), str4 = H5Tcopy(H5T_C_S1);
  H5Tset_size(str8, 8);
  H5Tset_size(str4, 4);
  hid_t b = bool_type();
  hid_t obs_t = H5Tcreate(H5T_COMPOUND, sizeof(ObsRow));
  H5Tinsert(obs_t, "index", HOFFSET(ObsRow, index), str8);
  H5Tinsert(obs_t, "batch", HOFFSET(ObsRow, batch), H5T_NATIVE_INT8);
  H5Tinsert(obs_t, "n_counts", HOFFSET(ObsRow, n_counts), H5T_NATIVE_FLOAT);
  H5Tinsert(obs_t, "flag", HOFFSET(ObsRow, flag), b);
  H5Tinsert(obs_t, "label", HOFFSET(ObsRow, label), str4);
  std::vector<ObsRow> rows(4);
  const char* names[] = {"AAAC-1", "AAAG-1", "CCCT-1", "GGGA-1"};
  const char* labels[] = {"zz", "aa", "zz", "mm"};
  for (int i = 0; i < 4; ++i) {
    std::memset(&rows[i], 0, sizeof(ObsRow));
    std::strncpy(rows[i].index, names[i], sizeof rows[i].index);
    std::strncpy(rows[i].label, labels[i], sizeof rows[i].label);
    rows[i].batch = static_cast<int8_t>(1 - i % 2);
    rows[i].n_counts = 100.5f * static_cast<float>(i);
    rows[i].flag = static_cast<int8_t>(i == 2);
  }
  hsize_t n = 4;
  hid_t s = H5Screate_simple(1, &n, nullptr);
  hid_t d = H5Dcreate2(root.id(), "obs", obs_t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, obs_t, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data());
  H5Dclose(d);
  H5Sclose(s);
  // var: index + a bool column.
  struct VarRow {
    char index[4];
    int8_t hv;
  };
  hid_t var_t = H5Tcreate(H5T_COMPOUND, sizeof(VarRow));
  H5Tinsert(var_t, "index", HOFFSET(VarRow, index), str4);
  H5Tinsert(var_t, "highly_variable", HOFFSET(VarRow, hv), b);
  std::vector<VarRow> vrows(5);
  for (int j = 0; j < 5; ++j) {
    std::memset(&vrows[j], 0, sizeof(VarRow));
    vrows[j].index[0] = 'G';
    vrows[j].index[1] = static_cast<char>('0' + j);
    vrows[j].hv = static_cast<int8_t>(j % 2);
  }
  n = 5;
  s = H5Screate_simple(1, &n, nullptr);
  d = H5Dcreate2(root.id(), "var", var_t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, var_t, H5S_ALL, H5S_ALL, H5P_DEFAULT, vrows.data());
  H5Dclose(d);
  H5Sclose(s);
  // raw.var: six names.
  hid_t raw_t = H5Tcreate(H5T_COMPOUND, 4);
  H5Tinsert(raw_t, "index", 0, str4);
  const char raw_names[6][4] = {"R0", "R1", "R2", "R3", "R4", "R5"};
  n = 6;
  s = H5Screate_simple(1, &n, nullptr);
  d = H5Dcreate2(root.id(), "raw.var", raw_t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, raw_t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw_names);
  H5Dclose(d);
  H5Sclose(s);
  for (hid_t t : {str8, str4, b, obs_t, var_t, raw_t}) H5Tclose(t);

  root.write("X", h5::NumType::Float32, kDense.data(), {4, 5}, true);
  h5::Group raw = root.create_group("raw.X");
  raw.set_attr("h5sparse_format", "csr");
  raw.set_attr("h5sparse_shape", std::vector<int64_t>{4, 6});
  write_vec(raw, "indptr", std::vector<int32_t>{0, 0, 1, 1, 1});
  write_vec(raw, "indices", std::vector<int32_t>{5});
  write_vec(raw, "data", std::vector<float>{11});
  h5::Group uns = root.create_group("uns");
  write_fixed_strings(uns.id(), "batch_categories", {"p", "q"}, 2);
}

}  // namespace scssl::test::fixtures
