// Small RAII helpers over the HDF5 C API: the low level of the scssl_anndata library (the h5ad
// dataset plugin reads through it; the host uses the AnnData-level functions in anndata.hpp).
// Internal to this source tree: not installed with the SDK (see sdk/anndata/CMakeLists.txt).
//
// Files are treated as untrusted: paths are resolved one component at a time and soft or external
// links are refused, datasets whose declared size the file could not hold (or whose data lives in
// another file) are refused before anything is allocated, and numeric conversions that would
// overflow or truncate fail instead of clipping. Every failure is a scssl::BadData or
// scssl::IoError whose message names the file and the key. HDF5's own error printing is silenced.
//
// No torch here: the host's writers and the CLI stay light.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "scssl/params.hpp"

namespace scssl::h5 {

// hid_t of HDF5 1.10+ (checked in hdf5.cpp); kept out of this header so users need not include
// hdf5.h.
using hid = int64_t;

// Turns off HDF5's automatic printing of error stacks to stderr (the library's default). Every
// File open/create calls it; calling it again is harmless.
void silence_hdf5_errors();

// Owns one HDF5 identifier of any kind (file, group, dataset, attribute, type, space, property
// list).
class Id {
 public:
  Id() = default;
  explicit Id(hid id) : id_(id) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Id& operator=(Id&& o) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;

  hid get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();

 private:
  hid id_ = -1;
};

// The element types the readers and writers convert to and from (native byte order).
enum class NumType { Int8, UInt8, Int16, UInt16, Int32, UInt32, Int64, UInt64, Float32, Float64 };

template <class T>
constexpr NumType num_type_of() {
  if constexpr (std::is_same_v<T, int8_t>)
    return NumType::Int8;
  else if constexpr (std::is_same_v<T, uint8_t>)
    return NumType::UInt8;
  else if constexpr (std::is_same_v<T, int16_t>)
    return NumType::Int16;
  else if constexpr (std::is_same_v<T, uint16_t>)
    return NumType::UInt16;
  else if constexpr (std::is_same_v<T, int32_t>)
    return NumType::Int32;
  else if constexpr (std::is_same_v<T, uint32_t>)
    return NumType::UInt32;
  else if constexpr (std::is_same_v<T, int64_t>)
    return NumType::Int64;
  else if constexpr (std::is_same_v<T, uint64_t>)
    return NumType::UInt64;
  else if constexpr (std::is_same_v<T, float>)
    return NumType::Float32;
  else {
    static_assert(std::is_same_v<T, double>, "unsupported element type");
    return NumType::Float64;
  }
}

// What a dataset (or a compound field) holds, as far as a reader cares.
enum class TypeClass {
  Integer,
  Float,
  String,  // fixed or variable length, ASCII or UTF-8
  Bool,    // h5py's bool: an enum {FALSE = 0, TRUE = 1}
  Enum,    // any other enum (values read as their integers)
  Compound,
  Reference,  // object references (anndata 0.7 categorical columns)
  Other
};
const char* type_class_name(TypeClass c);

struct TypeInfo {
  TypeClass cls = TypeClass::Other;
  size_t size = 0;               // bytes per element in the file
  bool is_signed = false;        // integers only
  bool variable_length = false;  // strings only
  // "int8", "uint32", "float64", "string", "bool", ... for messages.
  std::string describe() const;
};

enum class Kind { Missing, Group, Dataset, Other };

class Dataset;

// What groups and datasets share: the file they are in, their key, their attributes.
class Object {
 public:
  const std::string& file() const { return file_; }
  // Path inside the file without a leading '/', e.g. "obs/batch"; "/" for the root group.
  const std::string& key() const { return key_; }
  hid id() const { return id_ ? id_->get() : -1; }

  // Throws BadData "<file>: '<key>' <problem>".
  [[noreturn]] void fail(const std::string& problem) const;

  bool has_attr(const std::string& name) const;
  std::vector<std::string> attr_names() const;
  TypeInfo attr_type(const std::string& name) const;
  // A scalar (or one-element) string attribute; BadData if missing or not a string.
  std::string attr_string(const std::string& name) const;
  // Default when the attribute is missing.
  std::string attr_string_or(const std::string& name, const std::string& fallback) const;
  // A string array attribute; a scalar string gives one element and an empty array of any type
  // (anndata writes an empty column order as float64[0]) gives none.
  std::vector<std::string> attr_strings(const std::string& name) const;
  // An integer (or integral float) array attribute, e.g. a sparse matrix's shape.
  std::vector<int64_t> attr_ints(const std::string& name) const;
  // The dataset an object-reference attribute points to (same file only, by construction).
  Dataset attr_reference(const std::string& name) const;

  // Writers: attributes are replaced if present. Strings are variable-length UTF-8, as h5py
  // writes Python str, so anndata reads them back.
  void set_attr(const std::string& name, const std::string& value) const;
  void set_attr(const std::string& name, const char* value) const {
    set_attr(name, std::string(value));
  }
  void set_attr(const std::string& name, const std::vector<std::string>& values) const;
  void set_attr(const std::string& name, const std::vector<int64_t>& values) const;
  void set_attr(const std::string& name, bool value) const;  // h5py's bool enum

 protected:
  Object() = default;
  Object(std::string file, std::string key, Id id);
  std::string file_;
  std::string key_;
  std::shared_ptr<Id> id_;
};

class Dataset : public Object {
 public:
  Dataset() = default;
  // Opens `id` (which must be a dataset) and checks that its data can be read safely (see
  // check_plausible). Usually obtained from Group::dataset.
  Dataset(std::string file, std::string key, Id id);

  std::vector<int64_t> shape() const;
  int64_t rank() const { return static_cast<int64_t>(shape().size()); }
  int64_t size() const;  // number of elements
  TypeInfo type() const;
  // Chunk shape, empty when the dataset is not chunked.
  std::vector<int64_t> chunks() const;

  // Requires rank 1 (BadData naming the key otherwise) and returns the length.
  int64_t length_1d() const;

  // Numeric reads with conversion into `as`; a value that does not fit (overflow, a fraction
  // into an integer, NaN into an integer) is BadData. Integer, float, bool and enum data only.
  void read(NumType as, void* out) const;                                       // everything
  void read_range(NumType as, void* out, int64_t offset, int64_t count) const;  // 1-d slice
  void read_rows(NumType as, void* out, int64_t row0, int64_t n_rows) const;    // 2-d row block
  template <class T>
  std::vector<T> read_vector() const {
    std::vector<T> v(static_cast<size_t>(length_1d()));
    if (!v.empty()) read(num_type_of<T>(), v.data());
    return v;
  }

  // A 1-d string dataset (variable or fixed length, ASCII or UTF-8). Fixed-length strings end at
  // their first NUL (space-padded ones lose trailing spaces).
  std::vector<std::string> read_strings() const;

  // Compound datasets (anndata < 0.7 stored obs/var as these).
  std::vector<std::string> field_names() const;
  bool has_field(const std::string& field) const;
  TypeInfo field_type(const std::string& field) const;
  void read_field(const std::string& field, NumType as, void* out) const;
  template <class T>
  std::vector<T> read_field_vector(const std::string& field) const {
    std::vector<T> v(static_cast<size_t>(length_1d()));
    if (!v.empty()) read_field(field, num_type_of<T>(), v.data());
    return v;
  }
  std::vector<std::string> read_field_strings(const std::string& field) const;

  // Refuses (BadData) a dataset whose declared size is more than its stored bytes could expand
  // to, or whose data is kept outside this file (external storage, virtual datasets). Called by
  // the constructor, so every opened dataset has passed it.
  void check_plausible() const;

 private:
  void read_selection(hid mem_type, void* out, hid mem_space, hid file_space,
                      const std::string& what) const;
  void read_numeric(const std::string* field, NumType as, void* out, hid mem_space, hid file_space,
                    int64_t count) const;
  std::vector<std::string> read_strings_impl(const std::string* field) const;
};

class Group : public Object {
 public:
  Group() = default;
  Group(std::string file, std::string key, Id id);

  // What `path` (relative, components separated by '/') names. Each component is checked with
  // H5Lget_info: a soft or external link anywhere on the way is BadData, never followed.
  Kind kind(const std::string& path) const;
  bool has(const std::string& path) const { return kind(path) != Kind::Missing; }
  bool has_group(const std::string& path) const { return kind(path) == Kind::Group; }
  bool has_dataset(const std::string& path) const { return kind(path) == Kind::Dataset; }
  // BadData "<file>: there is no group '<key>'" (or "... is not a group") when it cannot.
  Group group(const std::string& path) const;
  Dataset dataset(const std::string& path) const;
  // Names of the links directly in this group, in HDF5's (name) order.
  std::vector<std::string> children() const;

  // Writers.
  Group create_group(const std::string& name) const;
  // Removes a link (and so the object if nothing else links to it); no-op when absent.
  void remove(const std::string& name) const;
  // A new numeric dataset of the given shape from row-major `data` (which may be null when the
  // shape holds no element). gzip compresses it in chunks when the filter is available.
  Dataset write(const std::string& name, NumType type, const void* data,
                const std::vector<int64_t>& shape, bool gzip = false) const;
  // A new 1-d variable-length UTF-8 string dataset.
  Dataset write_strings(const std::string& name, const std::vector<std::string>& values) const;

 private:
  Id open_path(const std::string& path, Kind* kind, std::string* full_key) const;
};

class File {
 public:
  enum class Mode { Read, ReadWrite };
  // A missing or unreadable file is IoError; a file that is not HDF5 (or is truncated or
  // corrupt) is BadData; both name the path.
  static File open(const std::string& path, Mode mode = Mode::Read);
  // Creates (truncating) a file; IoError if it cannot.
  static File create(const std::string& path);
  // Creates a file that must not exist yet; IoError if it exists or cannot be created.
  static File create_new(const std::string& path);

  const std::string& path() const { return path_; }
  const Group& root() const { return root_; }
  // Writes everything to disk; IoError naming the file on failure.
  void flush() const;

 private:
  static File create_with(const std::string& path, unsigned flags);
  std::string path_;
  std::shared_ptr<Id> file_;
  Group root_;
};

}  // namespace scssl::h5
