#include "scssl/anndata/hdf5.hpp"

#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>

#include "guarded_driver.hpp"

static_assert(std::is_same_v<hid_t, scssl::h5::hid>, "hdf5.hpp assumes HDF5 1.10+ (64-bit hid_t)");

namespace scssl::h5 {

namespace {

// A declared size is believed only up to this many bytes more than its stored data could expand
// to. deflate cannot expand by more than about 1032:1; lzf and shuffle do less.
constexpr uint64_t kSlackBytes = 16ull << 20;
constexpr uint64_t kMaxExpansion = 1100;
// Attributes are small metadata; anything larger is refused before it is read.
constexpr uint64_t kMaxAttrBytes = 64ull << 20;

// The innermost description on HDF5's error stack (e.g. "truncated file: eof = ..."), or "".
// Must run right after the failing call, before another API call clears the stack.
std::string hdf5_detail() {
  std::vector<std::string> messages;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        if (e->desc && *e->desc) static_cast<std::vector<std::string>*>(data)->push_back(e->desc);
        return 0;
      },
      &messages);
  if (messages.empty()) return {};
  std::string d = messages.back();
  // A failed system call comes as "file write failed: time = ..., filename = ..., errno = 28,
  // error message = 'No space left on device', ..." over several lines: kept are what failed and
  // the system's words.
  const std::string said = "error message = '";
  const size_t at = d.find(said), time = d.find(": time =");
  if (at != std::string::npos && time != std::string::npos) {
    const size_t end = d.find('\'', at + said.size());
    const std::string why = d.substr(at + said.size(), end - at - said.size());
    const bool full =
        d.find("errno = 28,") != std::string::npos || d.find("errno = 27,") != std::string::npos;
    d = d.substr(0, time) + ": " + why +
        (full ? "; the disk is full or a file-size limit was reached" : "");
  }
  return d;
}

// Prefers what the guarded driver (guarded_driver.cpp) refused, which is more precise than HDF5's
// own "read failed".
std::string with_detail(const std::string& message) {
  std::string problem = detail::take_driver_problem();
  if (!problem.empty()) return message + " (" + problem + ")";
  std::string d = hdf5_detail();
  return d.empty() ? message : message + " (HDF5: " + d + ")";
}

// Frees the strings HDF5 allocated for a variable-length read. H5Dvlen_reclaim became H5Treclaim
// in 1.12, where the old name is a deprecated symbol (absent from builds without them).
herr_t reclaim_vlen(hid_t type, hid_t space, void* buffer) {
#if H5_VERSION_GE(1, 12, 0)
  return H5Treclaim(type, space, H5P_DEFAULT, buffer);
#else
  return H5Dvlen_reclaim(type, space, H5P_DEFAULT, buffer);
#endif
}

std::string join_key(const std::string& base, const std::string& name) {
  if (base.empty() || base == "/") return name;
  return base + "/" + name;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
    start = end + 1;
  }
  return parts;
}

hid_t native_type(NumType t) {
  switch (t) {
    case NumType::Int8:
      return H5T_NATIVE_INT8;
    case NumType::UInt8:
      return H5T_NATIVE_UINT8;
    case NumType::Int16:
      return H5T_NATIVE_INT16;
    case NumType::UInt16:
      return H5T_NATIVE_UINT16;
    case NumType::Int32:
      return H5T_NATIVE_INT32;
    case NumType::UInt32:
      return H5T_NATIVE_UINT32;
    case NumType::Int64:
      return H5T_NATIVE_INT64;
    case NumType::UInt64:
      return H5T_NATIVE_UINT64;
    case NumType::Float32:
      return H5T_NATIVE_FLOAT;
    case NumType::Float64:
      return H5T_NATIVE_DOUBLE;
  }
  return -1;
}

// Little-endian file types, as numpy/h5py write on every common machine.
hid_t file_type(NumType t) {
  switch (t) {
    case NumType::Int8:
      return H5T_STD_I8LE;
    case NumType::UInt8:
      return H5T_STD_U8LE;
    case NumType::Int16:
      return H5T_STD_I16LE;
    case NumType::UInt16:
      return H5T_STD_U16LE;
    case NumType::Int32:
      return H5T_STD_I32LE;
    case NumType::UInt32:
      return H5T_STD_U32LE;
    case NumType::Int64:
      return H5T_STD_I64LE;
    case NumType::UInt64:
      return H5T_STD_U64LE;
    case NumType::Float32:
      return H5T_IEEE_F32LE;
    case NumType::Float64:
      return H5T_IEEE_F64LE;
  }
  return -1;
}

size_t num_size(NumType t) {
  switch (t) {
    case NumType::Int8:
    case NumType::UInt8:
      return 1;
    case NumType::Int16:
    case NumType::UInt16:
      return 2;
    case NumType::Int32:
    case NumType::UInt32:
    case NumType::Float32:
      return 4;
    default:
      return 8;
  }
}

const char* num_name(NumType t) {
  switch (t) {
    case NumType::Int8:
      return "int8";
    case NumType::UInt8:
      return "uint8";
    case NumType::Int16:
      return "int16";
    case NumType::UInt16:
      return "uint16";
    case NumType::Int32:
      return "int32";
    case NumType::UInt32:
      return "uint32";
    case NumType::Int64:
      return "int64";
    case NumType::UInt64:
      return "uint64";
    case NumType::Float32:
      return "float32";
    case NumType::Float64:
      return "float64";
  }
  return "?";
}

bool is_integer(NumType t) { return t != NumType::Float32 && t != NumType::Float64; }

// Stores an integer into element i of an array of `as`; false if it does not fit.
bool put_integer(NumType as, void* out, size_t i, int64_t v) {
  auto fits = [&](auto sample) {
    using T = decltype(sample);
    if constexpr (std::is_floating_point_v<T>) {
      static_cast<T*>(out)[i] = static_cast<T>(v);
      return true;
    } else {
      if (v < static_cast<int64_t>(std::numeric_limits<T>::min())) return false;
      if constexpr (sizeof(T) < 8 || std::is_signed_v<T>)
        if (v > static_cast<int64_t>(std::numeric_limits<T>::max())) return false;
      static_cast<T*>(out)[i] = static_cast<T>(v);
      return true;
    }
  };
  switch (as) {
    case NumType::Int8:
      return fits(int8_t{});
    case NumType::UInt8:
      return fits(uint8_t{});
    case NumType::Int16:
      return fits(int16_t{});
    case NumType::UInt16:
      return fits(uint16_t{});
    case NumType::Int32:
      return fits(int32_t{});
    case NumType::UInt32:
      return fits(uint32_t{});
    case NumType::Int64:
      return fits(int64_t{});
    case NumType::UInt64:
      return fits(uint64_t{});
    case NumType::Float32:
      return fits(float{});
    case NumType::Float64:
      return fits(double{});
  }
  return false;
}

// Conversion exceptions during H5Dread/H5Aread: overflow, fractions into integers and NaN or
// infinity into integers abort the read (HDF5 would otherwise clip silently).
struct ConvState {
  bool to_integer = false;
  bool failed = false;
};

// True when a float conversion's source value is an infinity (HDF5 reports it as out of range).
bool source_is_infinite(hid_t src, const void* value) {
  if (!value || H5Tget_class(src) != H5T_FLOAT) return false;
  if (H5Tequal(src, H5T_NATIVE_DOUBLE) > 0) return std::isinf(*static_cast<const double*>(value));
  if (H5Tequal(src, H5T_NATIVE_FLOAT) > 0) return std::isinf(*static_cast<const float*>(value));
  return false;
}

H5T_conv_ret_t on_conversion(H5T_conv_except_t except, hid_t src, hid_t dst, void* src_value, void*,
                             void* user) {
  auto* state = static_cast<ConvState*>(user);
  switch (except) {
    case H5T_CONV_EXCEPT_RANGE_HI:
    case H5T_CONV_EXCEPT_RANGE_LOW:
      // An infinity stays an infinity in a smaller float type (the caller decides about it);
      // a finite value too large for the target is an error.
      if (H5Tget_class(dst) == H5T_FLOAT && source_is_infinite(src, src_value))
        return H5T_CONV_UNHANDLED;
      state->failed = true;
      return H5T_CONV_ABORT;
    case H5T_CONV_EXCEPT_TRUNCATE:
      state->failed = true;
      return H5T_CONV_ABORT;
    case H5T_CONV_EXCEPT_PINF:
    case H5T_CONV_EXCEPT_NINF:
    case H5T_CONV_EXCEPT_NAN:
      if (state->to_integer) {
        state->failed = true;
        return H5T_CONV_ABORT;
      }
      return H5T_CONV_UNHANDLED;
    default:  // precision loss (e.g. int64 -> float64) is accepted
      return H5T_CONV_UNHANDLED;
  }
}

Id transfer_plist(ConvState* state) {
  Id plist(H5Pcreate(H5P_DATASET_XFER));
  if (plist.valid()) H5Pset_type_conv_cb(plist.get(), on_conversion, state);
  return plist;
}

bool is_bool_enum(hid_t t) {
  if (H5Tget_nmembers(t) != 2) return false;
  bool ok = true;
  for (unsigned i = 0; i < 2 && ok; ++i) {
    char* name = H5Tget_member_name(t, i);
    long long value = -1;
    Id super(H5Tget_super(t));
    // Member values are stored in the enum's base type; convert them to native long long.
    unsigned char raw[16] = {};
    if (!name || H5Tget_size(super.get()) > 8 || H5Tget_member_value(t, i, raw) < 0) {
      ok = false;
    } else {
      if (H5Tconvert(super.get(), H5T_NATIVE_LLONG, 1, raw, nullptr, H5P_DEFAULT) >= 0)
        std::memcpy(&value, raw, sizeof value);
      ok = (std::strcmp(name, "FALSE") == 0 && value == 0) ||
           (std::strcmp(name, "TRUE") == 0 && value == 1);
    }
    if (name) H5free_memory(name);
  }
  return ok;
}

TypeInfo info_of(hid_t t) {
  TypeInfo info;
  info.size = H5Tget_size(t);
  switch (H5Tget_class(t)) {
    case H5T_INTEGER:
      info.cls = TypeClass::Integer;
      info.is_signed = H5Tget_sign(t) == H5T_SGN_2;
      break;
    case H5T_FLOAT:
      info.cls = TypeClass::Float;
      break;
    case H5T_STRING:
      info.cls = TypeClass::String;
      info.variable_length = H5Tis_variable_str(t) > 0;
      break;
    case H5T_ENUM:
      info.cls = is_bool_enum(t) ? TypeClass::Bool : TypeClass::Enum;
      break;
    case H5T_COMPOUND:
      info.cls = TypeClass::Compound;
      break;
    case H5T_REFERENCE:
      info.cls = TypeClass::Reference;
      break;
    default:
      info.cls = TypeClass::Other;
      break;
  }
  return info;
}

// A vlen string memory type with the character set of `like` (HDF5 does not convert csets).
Id vlen_string_type(H5T_cset_t cset) {
  Id t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), cset);
  return t;
}

// Copies fixed-length strings out of a buffer: up to the first NUL, trailing spaces removed for
// space-padded types.
std::vector<std::string> unpack_fixed(const std::vector<char>& buffer, size_t n, size_t size,
                                      H5T_str_t pad) {
  std::vector<std::string> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const char* p = buffer.data() + i * size;
    size_t len = strnlen(p, size);
    if (pad == H5T_STR_SPACEPAD)
      while (len > 0 && p[len - 1] == ' ') --len;
    out.emplace_back(p, len);
  }
  return out;
}

// False for a number type no writer produces: sizes other than 1/2/4/8 bytes, padding bits, or
// float fields outside the value. HDF5 1.10 trusts these fields, and a corrupt one makes it copy
// past its buffers; compound members, enum bases and sequence bases are checked too.
bool sane_type(hid_t t, int depth = 0) {
  if (depth > 8) return false;
  const size_t size = H5Tget_size(t);
  switch (H5Tget_class(t)) {
    case H5T_INTEGER:
      return (size == 1 || size == 2 || size == 4 || size == 8) &&
             H5Tget_precision(t) == 8 * size && H5Tget_offset(t) == 0;
    case H5T_FLOAT: {
      size_t spos, epos, esize, mpos, msize;
      if (!(size == 2 || size == 4 || size == 8) || H5Tget_precision(t) != 8 * size ||
          H5Tget_offset(t) != 0 || H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) < 0)
        return false;
      const size_t bits = 8 * size;
      return spos < bits && esize > 0 && msize > 0 && epos + esize <= bits && mpos + msize <= bits;
    }
    case H5T_STRING:
      return H5Tis_variable_str(t) > 0 || (size > 0 && size <= (1u << 20));
    case H5T_ENUM:
    case H5T_VLEN:
    case H5T_ARRAY: {
      Id super(H5Tget_super(t));
      return super.valid() && sane_type(super.get(), depth + 1);
    }
    case H5T_COMPOUND: {
      const int n = H5Tget_nmembers(t);
      if (n < 0) return false;
      for (int i = 0; i < n; ++i) {
        Id member(H5Tget_member_type(t, static_cast<unsigned>(i)));
        const size_t offset = H5Tget_member_offset(t, static_cast<unsigned>(i));
        if (!member.valid() || !sane_type(member.get(), depth + 1) ||
            offset + H5Tget_size(member.get()) > size)
          return false;
      }
      return true;
    }
    case H5T_REFERENCE:
    case H5T_OPAQUE:
    case H5T_BITFIELD:
      return size > 0;
    default:
      return false;
  }
}

uint64_t saturating_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::numeric_limits<uint64_t>::max();
  return r;
}

std::string human_bytes(uint64_t b) {
  char buf[64];
  if (b >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / (1ull << 30));
  else if (b >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(b));
  return buf;
}

// ---- LZF
// -------------------------------------------------------------------------------------------- h5py
// compresses with LZF (filter 32000) when asked, and anndata 0.7 did so; stock HDF5 has no decoder
// for it. This is a decoder written from the LZF format: a control byte below 32 starts a run of
// (control + 1) literal bytes; otherwise its top 3 bits are a length (7: add the next byte), its
// low 5 bits and the next byte an offset back into the output, and (length + 2) bytes are copied
// from there. Every read and write is bounds-checked: input is untrusted.

constexpr H5Z_filter_t kLzfFilter = 32000;

// Returns the decoded size, 0 when the input is malformed, SIZE_MAX when `out` is too small.
size_t lzf_decode(const unsigned char* in, size_t in_size, unsigned char* out, size_t out_size) {
  size_t ip = 0, op = 0;
  while (ip < in_size) {
    const unsigned ctrl = in[ip++];
    if (ctrl < 32) {
      const size_t len = ctrl + 1;
      if (ip + len > in_size) return 0;
      if (op + len > out_size) return SIZE_MAX;
      std::memcpy(out + op, in + ip, len);
      ip += len;
      op += len;
    } else {
      size_t len = ctrl >> 5;
      if (len == 7) {
        if (ip >= in_size) return 0;
        len += in[ip++];
      }
      if (ip >= in_size) return 0;
      const size_t back = ((ctrl & 0x1f) << 8) + in[ip++] + 1;
      if (back > op) return 0;
      len += 2;
      if (op + len > out_size) return SIZE_MAX;
      // Byte by byte: source and destination may overlap (runs).
      for (size_t k = 0; k < len; ++k, ++op) out[op] = out[op - back];
    }
  }
  return op;
}

size_t lzf_filter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[], size_t nbytes,
                  size_t* buf_size, void** buf) {
  if (!(flags & H5Z_FLAG_REVERSE)) return 0;  // decoding only
  // h5py stores the chunk size in bytes as the third parameter; a chunk must decode to exactly
  // that size (HDF5 1.10 would otherwise copy a whole chunk out of a shorter buffer).
  const size_t chunk_bytes = (cd_nelmts >= 3) ? cd_values[2] : 0;
  size_t out_size = chunk_bytes != 0 ? chunk_bytes : std::max<size_t>(*buf_size, 1);
  constexpr size_t kMaxChunk = size_t{1} << 30;
  while (out_size <= kMaxChunk) {
    auto* out = static_cast<unsigned char*>(H5allocate_memory(out_size, false));
    if (!out) return 0;
    const size_t n = lzf_decode(static_cast<const unsigned char*>(*buf), nbytes, out, out_size);
    if (chunk_bytes != 0 && n != chunk_bytes) {
      H5free_memory(out);
      return 0;
    }
    if (n != 0 && n != SIZE_MAX) {
      H5free_memory(*buf);
      *buf = out;
      *buf_size = out_size;
      return n;
    }
    H5free_memory(out);
    if (n == 0) return 0;
    out_size *= 2;
  }
  return 0;
}

// Registered on every open, not once: the filter table is global to the process but this code
// lives in each module linking scssl_anndata (host, plugins), and a plugin may be unloaded; the
// module that opens a file points the table at its own, loaded copy.
void register_filters() {
  static const H5Z_class2_t lzf = {H5Z_CLASS_T_VERS, kLzfFilter, 0,         1, "lzf",
                                   nullptr,          nullptr,    lzf_filter};
  H5Zregister(&lzf);
}

}  // namespace

// ---- basics
// ----------------------------------------------------------------------------------------

void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// HDF5 closes what is still open when the process exits. A file whose last flush failed (a full
// disk) stays open after H5Fclose, and HDF5 1.10 crashes closing it again at exit, after our error
// was reported. Every file is closed explicitly here, so the exit-time cleanup has nothing to do;
// H5dont_atexit must come before the library's first use, hence a static initialiser.
[[maybe_unused]] const bool kNoCleanupAtExit = H5dont_atexit() >= 0;

Id& Id::operator=(Id&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    o.id_ = -1;
  }
  return *this;
}

void Id::reset() {
  // H5Idec_ref closes any kind of identifier once nothing else holds it.
  if (id_ >= 0 && H5Iis_valid(id_) > 0) H5Idec_ref(id_);
  id_ = -1;
}

const char* type_class_name(TypeClass c) {
  switch (c) {
    case TypeClass::Integer:
      return "integer";
    case TypeClass::Float:
      return "float";
    case TypeClass::String:
      return "string";
    case TypeClass::Bool:
      return "bool";
    case TypeClass::Enum:
      return "enum";
    case TypeClass::Compound:
      return "compound";
    case TypeClass::Reference:
      return "reference";
    case TypeClass::Other:
      return "unsupported type";
  }
  return "?";
}

std::string TypeInfo::describe() const {
  switch (cls) {
    case TypeClass::Integer:
      return (is_signed ? "int" : "uint") + std::to_string(size * 8);
    case TypeClass::Float:
      return "float" + std::to_string(size * 8);
    case TypeClass::String:
      return variable_length ? "variable-length string"
                             : "fixed-length string (" + std::to_string(size) + " bytes)";
    default:
      return type_class_name(cls);
  }
}

// ---- Object
// ----------------------------------------------------------------------------------------

Object::Object(std::string file, std::string key, Id id)
    : file_(std::move(file)), key_(std::move(key)), id_(std::make_shared<Id>(std::move(id))) {}

void Object::fail(const std::string& problem) const {
  throw BadData(file_ + ": '" + key_ + "' " + problem);
}

bool Object::has_attr(const std::string& name) const {
  htri_t r = H5Aexists(id(), name.c_str());
  if (r < 0) fail(with_detail("has unreadable attributes"));
  return r > 0;
}

std::vector<std::string> Object::attr_names() const {
  std::vector<std::string> names;
  // 1.12 gave object info a new struct and function; H5Oget_info2 takes the old struct there.
#if H5_VERSION_GE(1, 12, 0)
  H5O_info2_t info;
  if (H5Oget_info3(id(), &info, H5O_INFO_NUM_ATTRS) < 0)
    fail(with_detail("has unreadable attributes"));
#else
  H5O_info_t info;
  if (H5Oget_info2(id(), &info, H5O_INFO_NUM_ATTRS) < 0)
    fail(with_detail("has unreadable attributes"));
#endif
  for (hsize_t i = 0; i < info.num_attrs; ++i) {
    ssize_t len =
        H5Aget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail(with_detail("has unreadable attributes"));
    std::string name(static_cast<size_t>(len) + 1, '\0');
    H5Aget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                       H5P_DEFAULT);
    name.resize(static_cast<size_t>(len));
    names.push_back(std::move(name));
  }
  return names;
}

namespace {

// An opened attribute with its type and element count, size-checked.
struct OpenAttr {
  Id attr, type, space;
  uint64_t count = 0;
};

OpenAttr open_attr(const Object& obj, const std::string& name) {
  if (!obj.has_attr(name)) obj.fail("has no attribute '" + name + "'");
  OpenAttr a;
  a.attr = Id(H5Aopen(obj.id(), name.c_str(), H5P_DEFAULT));
  if (!a.attr.valid()) obj.fail(with_detail("has an unreadable attribute '" + name + "'"));
  a.type = Id(H5Aget_type(a.attr.get()));
  a.space = Id(H5Aget_space(a.attr.get()));
  hssize_t n = H5Sget_simple_extent_npoints(a.space.get());
  if (!a.type.valid() || n < 0) obj.fail(with_detail("has an unreadable attribute '" + name + "'"));
  a.count = static_cast<uint64_t>(n);
  if (!sane_type(a.type.get()))
    obj.fail("has an attribute '" + name + "' with a malformed data type");
  if (saturating_mul(a.count, std::max<size_t>(H5Tget_size(a.type.get()), 1)) > kMaxAttrBytes)
    obj.fail("has an attribute '" + name + "' of implausible size");
  return a;
}

std::vector<std::string> read_attr_strings(const Object& obj, const std::string& name,
                                           OpenAttr& a) {
  const size_t n = static_cast<size_t>(a.count);
  if (H5Tis_variable_str(a.type.get()) > 0) {
    Id mem = vlen_string_type(H5Tget_cset(a.type.get()));
    std::vector<char*> ptrs(n, nullptr);
    if (n && H5Aread(a.attr.get(), mem.get(), ptrs.data()) < 0)
      obj.fail(with_detail("has an unreadable attribute '" + name + "'"));
    std::vector<std::string> out;
    out.reserve(n);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    if (n) reclaim_vlen(mem.get(), a.space.get(), ptrs.data());
    return out;
  }
  const size_t size = H5Tget_size(a.type.get());
  Id mem(H5Tcopy(a.type.get()));
  std::vector<char> buffer(n * size + 1, '\0');
  if (n && H5Aread(a.attr.get(), mem.get(), buffer.data()) < 0)
    obj.fail(with_detail("has an unreadable attribute '" + name + "'"));
  return unpack_fixed(buffer, n, size, H5Tget_strpad(a.type.get()));
}

}  // namespace

TypeInfo Object::attr_type(const std::string& name) const {
  OpenAttr a = open_attr(*this, name);
  return info_of(a.type.get());
}

std::string Object::attr_string(const std::string& name) const {
  OpenAttr a = open_attr(*this, name);
  if (H5Tget_class(a.type.get()) != H5T_STRING)
    fail("has an attribute '" + name + "' that is not a string");
  if (a.count != 1) fail("has an attribute '" + name + "' that is not a single string");
  return read_attr_strings(*this, name, a).front();
}

std::string Object::attr_string_or(const std::string& name, const std::string& fallback) const {
  return has_attr(name) ? attr_string(name) : fallback;
}

std::vector<std::string> Object::attr_strings(const std::string& name) const {
  OpenAttr a = open_attr(*this, name);
  if (H5Tget_class(a.type.get()) != H5T_STRING) {
    if (a.count == 0) return {};
    fail("has an attribute '" + name + "' that is not a list of strings");
  }
  return read_attr_strings(*this, name, a);
}

std::vector<int64_t> Object::attr_ints(const std::string& name) const {
  OpenAttr a = open_attr(*this, name);
  const H5T_class_t cls = H5Tget_class(a.type.get());
  std::vector<int64_t> out(static_cast<size_t>(a.count));
  if (out.empty()) return out;
  if (cls == H5T_INTEGER) {
    // Shapes and the like: int64 holds every value a real file has (uint64 beyond would clip, and
    // then fail the shape checks of the caller).
    if (H5Aread(a.attr.get(), H5T_NATIVE_INT64, out.data()) < 0)
      fail(with_detail("has an unreadable attribute '" + name + "'"));
    return out;
  }
  if (cls == H5T_FLOAT) {
    std::vector<double> v(out.size());
    if (H5Aread(a.attr.get(), H5T_NATIVE_DOUBLE, v.data()) < 0)
      fail(with_detail("has an unreadable attribute '" + name + "'"));
    for (size_t i = 0; i < v.size(); ++i) {
      if (!(std::fabs(v[i]) < 9e18) || v[i] != std::floor(v[i]))
        fail("has an attribute '" + name + "' that is not a list of integers");
      out[i] = static_cast<int64_t>(v[i]);
    }
    return out;
  }
  fail("has an attribute '" + name + "' that is not a list of integers");
}

Dataset Object::attr_reference(const std::string& name) const {
  OpenAttr a = open_attr(*this, name);
  if (H5Tget_class(a.type.get()) != H5T_REFERENCE || H5Tequal(a.type.get(), H5T_STD_REF_OBJ) <= 0)
    fail("has an attribute '" + name + "' that is not an object reference");
  if (a.count != 1) fail("has an attribute '" + name + "' that is not a single reference");
  hobj_ref_t ref{};
  if (H5Aread(a.attr.get(), H5T_STD_REF_OBJ, &ref) < 0)
    fail(with_detail("has an unreadable attribute '" + name + "'"));
  Id target(H5Rdereference2(id(), H5P_DEFAULT, H5R_OBJECT, &ref));
  if (!target.valid())
    fail(with_detail("has an attribute '" + name + "' that points to nothing readable"));
  if (H5Iget_type(target.get()) != H5I_DATASET)
    fail("has an attribute '" + name + "' that does not point to a dataset");
  std::string key;
  ssize_t len = H5Iget_name(target.get(), nullptr, 0);
  if (len > 0) {
    key.assign(static_cast<size_t>(len) + 1, '\0');
    H5Iget_name(target.get(), key.data(), key.size());
    key.resize(static_cast<size_t>(len));
  }
  if (!key.empty() && key[0] == '/') key.erase(0, 1);
  if (key.empty()) key = key_ + "@" + name;
  return Dataset(file_, key, std::move(target));
}

void Object::set_attr(const std::string& name, const std::string& value) const {
  // h5py writes a Python str as a scalar variable-length UTF-8 string.
  if (H5Aexists(id(), name.c_str()) > 0) H5Adelete(id(), name.c_str());
  Id type = vlen_string_type(H5T_CSET_UTF8);
  Id space(H5Screate(H5S_SCALAR));
  Id attr(H5Acreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  const char* p = value.c_str();
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), &p) < 0)
    throw IoError(
        with_detail(file_ + ": could not write attribute '" + name + "' of '" + key_ + "'"));
}

void Object::set_attr(const std::string& name, const std::vector<std::string>& values) const {
  if (H5Aexists(id(), name.c_str()) > 0) H5Adelete(id(), name.c_str());
  Id type = vlen_string_type(H5T_CSET_UTF8);
  hsize_t n = values.size();
  Id space(H5Screate_simple(1, &n, nullptr));
  Id attr(H5Acreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (!attr.valid() || (n && H5Awrite(attr.get(), type.get(), ptrs.data()) < 0))
    throw IoError(
        with_detail(file_ + ": could not write attribute '" + name + "' of '" + key_ + "'"));
}

void Object::set_attr(const std::string& name, const std::vector<int64_t>& values) const {
  if (H5Aexists(id(), name.c_str()) > 0) H5Adelete(id(), name.c_str());
  hsize_t n = values.size();
  Id space(H5Screate_simple(1, &n, nullptr));
  Id attr(H5Acreate2(id(), name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attr.valid() || (n && H5Awrite(attr.get(), H5T_NATIVE_INT64, values.data()) < 0))
    throw IoError(
        with_detail(file_ + ": could not write attribute '" + name + "' of '" + key_ + "'"));
}

void Object::set_attr(const std::string& name, bool value) const {
  if (H5Aexists(id(), name.c_str()) > 0) H5Adelete(id(), name.c_str());
  Id type(H5Tenum_create(H5T_NATIVE_INT8));
  int8_t f = 0, t = 1;
  H5Tenum_insert(type.get(), "FALSE", &f);
  H5Tenum_insert(type.get(), "TRUE", &t);
  Id space(H5Screate(H5S_SCALAR));
  Id attr(H5Acreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  int8_t v = value ? 1 : 0;
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), &v) < 0)
    throw IoError(
        with_detail(file_ + ": could not write attribute '" + name + "' of '" + key_ + "'"));
}

// ---- Dataset
// ---------------------------------------------------------------------------------------

Dataset::Dataset(std::string file, std::string key, Id id)
    : Object(std::move(file), std::move(key), std::move(id)) {
  check_plausible();
}

std::vector<int64_t> Dataset::shape() const {
  Id space(H5Dget_space(id()));
  int rank = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (rank < 0) fail(with_detail("has an unreadable shape"));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  std::vector<int64_t> out;
  for (hsize_t d : dims) {
    if (d > static_cast<hsize_t>(std::numeric_limits<int64_t>::max() / 2))
      fail("declares an implausible shape");
    out.push_back(static_cast<int64_t>(d));
  }
  return out;
}

int64_t Dataset::size() const {
  uint64_t n = 1;
  for (int64_t d : shape()) n = saturating_mul(n, static_cast<uint64_t>(d));
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail("declares an implausible shape");
  return static_cast<int64_t>(n);
}

TypeInfo Dataset::type() const {
  Id t(H5Dget_type(id()));
  if (!t.valid()) fail(with_detail("has an unreadable data type"));
  return info_of(t.get());
}

std::vector<int64_t> Dataset::chunks() const {
  Id dcpl(H5Dget_create_plist(id()));
  if (!dcpl.valid() || H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return {};
  hsize_t dims[32];
  int rank = H5Pget_chunk(dcpl.get(), 32, dims);
  std::vector<int64_t> out;
  for (int i = 0; i < rank; ++i) out.push_back(static_cast<int64_t>(dims[i]));
  return out;
}

int64_t Dataset::length_1d() const {
  std::vector<int64_t> s = shape();
  if (s.size() != 1) {
    std::string dims;
    for (size_t i = 0; i < s.size(); ++i) dims += (i ? ", " : "") + std::to_string(s[i]);
    fail("should be 1-dimensional but has shape [" + dims + "]");
  }
  return s[0];
}

void Dataset::check_plausible() const {
  Id dcpl(H5Dget_create_plist(id()));
  if (!dcpl.valid()) fail(with_detail("has unreadable storage properties"));
  if (H5Pget_layout(dcpl.get()) == H5D_VIRTUAL)
    fail("is a virtual dataset mapping data from other files; such datasets are not followed");
  if (H5Pget_external_count(dcpl.get()) > 0)
    fail("keeps its data in an external file; such datasets are not followed");
  // A filter this library cannot run (e.g. blosc, zstd) would only fail at the first read.
  const int n_filters = H5Pget_nfilters(dcpl.get());
  for (int i = 0; i < n_filters; ++i) {
    unsigned flags = 0, cd[8];
    size_t n_cd = 8;
    char name[128] = {};
    H5Z_filter_t filter = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n_cd, cd,
                                         sizeof name, name, nullptr);
    if (filter < 0) fail(with_detail("has unreadable filter settings"));
    if (H5Zfilter_avail(filter) <= 0)
      fail("is compressed with filter " + std::to_string(filter) +
           (name[0] ? std::string(" (") + name + ")" : "") +
           ", which this HDF5 library cannot decode");
  }
  Id t(H5Dget_type(id()));
  if (!t.valid()) fail(with_detail("has an unreadable data type"));
  if (!sane_type(t.get())) fail("has a malformed data type; the file is corrupt");
  const uint64_t declared =
      saturating_mul(static_cast<uint64_t>(size()), std::max<size_t>(H5Tget_size(t.get()), 1));
  const uint64_t stored = H5Dget_storage_size(id());
  const uint64_t expansion = n_filters > 0 ? kMaxExpansion : 1;
  const uint64_t limit = saturating_mul(stored, expansion) + kSlackBytes;
  if (declared > limit)
    fail("declares " + std::to_string(size()) + " elements (" + human_bytes(declared) +
         ") but the file stores only " + human_bytes(stored) +
         " for it; the file is corrupt or truncated");
}

void Dataset::read_selection(hid mem_type, void* out, hid mem_space, hid file_space,
                             const std::string& what) const {
  register_filters();  // cheap; keeps the LZF entry pointing at a loaded module (see above)
  ConvState state;
  state.to_integer = H5Tget_class(mem_type) == H5T_INTEGER;
  Id plist = transfer_plist(&state);
  herr_t r = H5Dread(id(), mem_type, mem_space, file_space, plist.get(), out);
  if (state.failed) fail("holds a value that does not fit " + what);
  if (r < 0) fail(with_detail("could not be read; the file may be truncated or corrupt"));
}

namespace {

// A memory type reading one member of a compound (or the plain type when field is null).
Id wrap_field(const std::string* field, hid_t member_mem_type) {
  if (!field) return Id(H5Tcopy(member_mem_type));
  Id compound(H5Tcreate(H5T_COMPOUND, H5Tget_size(member_mem_type)));
  H5Tinsert(compound.get(), field->c_str(), 0, member_mem_type);
  return compound;
}

}  // namespace

void Dataset::read_numeric(const std::string* field, NumType as, void* out, hid mem_space,
                           hid file_space, int64_t count) const {
  Id ftype(H5Dget_type(id()));
  if (field) {
    int idx = H5Tget_member_index(ftype.get(), field->c_str());
    if (idx < 0) fail("has no field '" + *field + "'");
    ftype = Id(H5Tget_member_type(ftype.get(), static_cast<unsigned>(idx)));
  }
  const TypeInfo info = info_of(ftype.get());
  const std::string what = field ? "field '" + *field + "'" : std::string();
  if (info.cls == TypeClass::Integer || info.cls == TypeClass::Float) {
    if (info.cls == TypeClass::Float && is_integer(as)) {
      // Reading floats as integers (e.g. indptr written as float64) goes through doubles so a
      // fraction, NaN or overflow is reported rather than clipped.
      std::vector<double> tmp(static_cast<size_t>(count));
      Id mem = wrap_field(field, H5T_NATIVE_DOUBLE);
      read_selection(mem.get(), tmp.data(), mem_space, file_space, "float64");
      for (size_t i = 0; i < tmp.size(); ++i) {
        const double v = tmp[i];
        if (!(std::fabs(v) < 9.2e18) || v != std::floor(v) ||
            !put_integer(as, out, i, static_cast<int64_t>(v)))
          fail((what.empty() ? "" : "(" + what + ") ") + "holds a value that is not an " +
               num_name(as) + " (" + std::to_string(v) + ")");
      }
      return;
    }
    Id mem = wrap_field(field, native_type(as));
    read_selection(mem.get(), out, mem_space, file_space, num_name(as));
    return;
  }
  if (info.cls == TypeClass::Bool || info.cls == TypeClass::Enum) {
    // HDF5 does not convert enums to numbers: read the enum itself, then decode its base integers.
    Id native(H5Tget_native_type(ftype.get(), H5T_DIR_DEFAULT));
    Id super(H5Tget_super(native.get()));
    const size_t esize = H5Tget_size(native.get());
    const bool is_signed = H5Tget_sign(super.get()) == H5T_SGN_2;
    std::vector<unsigned char> raw(static_cast<size_t>(count) * esize);
    Id mem = wrap_field(field, native.get());
    read_selection(mem.get(), raw.data(), mem_space, file_space, "an enum");
    for (size_t i = 0; i < static_cast<size_t>(count); ++i) {
      const unsigned char* p = raw.data() + i * esize;
      int64_t v = 0;
      switch (esize) {
        case 1:
          v = is_signed ? *reinterpret_cast<const int8_t*>(p) : *p;
          break;
        case 2: {
          int16_t s;
          std::memcpy(&s, p, 2);
          v = is_signed ? s : static_cast<uint16_t>(s);
          break;
        }
        case 4: {
          int32_t s;
          std::memcpy(&s, p, 4);
          v = is_signed ? s : static_cast<uint32_t>(s);
          break;
        }
        default:
          std::memcpy(&v, p, 8);
          break;
      }
      if (!put_integer(as, out, i, v))
        fail("holds a value that does not fit " + std::string(num_name(as)));
    }
    return;
  }
  fail((what.empty() ? std::string("holds ") : "(" + what + ") holds ") + info.describe() +
       " data, not numbers");
}

void Dataset::read(NumType as, void* out) const {
  read_numeric(nullptr, as, out, H5S_ALL, H5S_ALL, size());
}

void Dataset::read_range(NumType as, void* out, int64_t offset, int64_t count) const {
  const int64_t n = length_1d();
  if (offset < 0 || count < 0 || offset > n || count > n - offset)
    fail("read past its end (" + std::to_string(offset) + " + " + std::to_string(count) + " > " +
         std::to_string(n) + ")");
  if (count == 0) return;
  Id fspace(H5Dget_space(id()));
  hsize_t start = static_cast<hsize_t>(offset), cnt = static_cast<hsize_t>(count);
  H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &cnt, nullptr);
  Id mspace(H5Screate_simple(1, &cnt, nullptr));
  read_numeric(nullptr, as, out, mspace.get(), fspace.get(), count);
}

void Dataset::read_rows(NumType as, void* out, int64_t row0, int64_t n_rows) const {
  std::vector<int64_t> s = shape();
  if (s.size() != 2) fail("should be 2-dimensional");
  if (row0 < 0 || n_rows < 0 || row0 > s[0] || n_rows > s[0] - row0) fail("read past its last row");
  if (n_rows == 0 || s[1] == 0) return;
  Id fspace(H5Dget_space(id()));
  hsize_t start[2] = {static_cast<hsize_t>(row0), 0};
  hsize_t cnt[2] = {static_cast<hsize_t>(n_rows), static_cast<hsize_t>(s[1])};
  H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, cnt, nullptr);
  Id mspace(H5Screate_simple(2, cnt, nullptr));
  read_numeric(nullptr, as, out, mspace.get(), fspace.get(), n_rows * s[1]);
}

std::vector<std::string> Dataset::read_strings_impl(const std::string* field) const {
  const size_t n = static_cast<size_t>(length_1d());
  Id ftype(H5Dget_type(id()));
  if (field) {
    int idx = H5Tget_member_index(ftype.get(), field->c_str());
    if (idx < 0) fail("has no field '" + *field + "'");
    ftype = Id(H5Tget_member_type(ftype.get(), static_cast<unsigned>(idx)));
  }
  if (H5Tget_class(ftype.get()) != H5T_STRING)
    fail((field ? "(field '" + *field + "') holds " : std::string("holds ")) +
         info_of(ftype.get()).describe() + " data, not strings");
  if (n == 0) return {};
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Id str = vlen_string_type(H5Tget_cset(ftype.get()));
    Id mem = wrap_field(field, str.get());
    std::vector<char*> ptrs(n, nullptr);
    read_selection(mem.get(), ptrs.data(), H5S_ALL, H5S_ALL, "a string");
    std::vector<std::string> out;
    out.reserve(n);
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    hsize_t dims = n;
    Id space(H5Screate_simple(1, &dims, nullptr));
    reclaim_vlen(mem.get(), space.get(), ptrs.data());
    return out;
  }
  const size_t size = H5Tget_size(ftype.get());
  if (size == 0) fail("holds strings of size 0");
  Id str(H5Tcopy(ftype.get()));
  Id mem = wrap_field(field, str.get());
  std::vector<char> buffer(n * size + 1, '\0');
  read_selection(mem.get(), buffer.data(), H5S_ALL, H5S_ALL, "a string");
  return unpack_fixed(buffer, n, size, H5Tget_strpad(ftype.get()));
}

std::vector<std::string> Dataset::read_strings() const { return read_strings_impl(nullptr); }

std::vector<std::string> Dataset::field_names() const {
  Id t(H5Dget_type(id()));
  if (H5Tget_class(t.get()) != H5T_COMPOUND) fail("is not a compound dataset");
  std::vector<std::string> names;
  int n = H5Tget_nmembers(t.get());
  for (int i = 0; i < n; ++i) {
    char* name = H5Tget_member_name(t.get(), static_cast<unsigned>(i));
    names.emplace_back(name ? name : "");
    if (name) H5free_memory(name);
  }
  return names;
}

bool Dataset::has_field(const std::string& field) const {
  Id t(H5Dget_type(id()));
  return H5Tget_class(t.get()) == H5T_COMPOUND && H5Tget_member_index(t.get(), field.c_str()) >= 0;
}

TypeInfo Dataset::field_type(const std::string& field) const {
  Id t(H5Dget_type(id()));
  int idx =
      H5Tget_class(t.get()) == H5T_COMPOUND ? H5Tget_member_index(t.get(), field.c_str()) : -1;
  if (idx < 0) fail("has no field '" + field + "'");
  Id m(H5Tget_member_type(t.get(), static_cast<unsigned>(idx)));
  return info_of(m.get());
}

void Dataset::read_field(const std::string& field, NumType as, void* out) const {
  read_numeric(&field, as, out, H5S_ALL, H5S_ALL, length_1d());
}

std::vector<std::string> Dataset::read_field_strings(const std::string& field) const {
  return read_strings_impl(&field);
}

// ---- Group
// -----------------------------------------------------------------------------------------

Group::Group(std::string file, std::string key, Id id)
    : Object(std::move(file), std::move(key), std::move(id)) {}

Id Group::open_path(const std::string& path, Kind* kind, std::string* full_key) const {
  std::vector<std::string> parts = split_path(path);
  std::string key = key_ == "/" ? std::string() : key_;
  if (parts.empty()) {
    *kind = Kind::Group;
    *full_key = key_;
    return Id(H5Oopen(id(), ".", H5P_DEFAULT));
  }
  Id current;
  hid_t at = id();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    key = join_key(key, part);
    *full_key = key;
    htri_t exists = H5Lexists(at, part.c_str(), H5P_DEFAULT);
    if (exists < 0) throw BadData(with_detail(file_ + ": '" + key + "' could not be looked up"));
    if (exists == 0) {
      *kind = Kind::Missing;
      return Id();
    }
    H5L_info_t link;
    if (H5Lget_info(at, part.c_str(), &link, H5P_DEFAULT) < 0)
      throw BadData(with_detail(file_ + ": '" + key + "' could not be looked up"));
    if (link.type != H5L_TYPE_HARD)
      throw BadData(file_ + ": '" + key + "' is " +
                    (link.type == H5L_TYPE_EXTERNAL ? "an external link" : "a soft link") +
                    "; links are not followed in files read as untrusted data");
    Id next(H5Oopen(at, part.c_str(), H5P_DEFAULT));
    if (!next.valid()) throw BadData(with_detail(file_ + ": '" + key + "' could not be opened"));
    const H5I_type_t t = H5Iget_type(next.get());
    if (i + 1 < parts.size() && t != H5I_GROUP) {
      *kind = Kind::Missing;  // a dataset has no children
      *full_key = join_key(key, parts[i + 1]);
      return Id();
    }
    current = std::move(next);
    at = current.get();
  }
  const H5I_type_t t = H5Iget_type(current.get());
  *kind = t == H5I_GROUP ? Kind::Group : t == H5I_DATASET ? Kind::Dataset : Kind::Other;
  return current;
}

Kind Group::kind(const std::string& path) const {
  Kind k;
  std::string key;
  open_path(path, &k, &key);
  return k;
}

Group Group::group(const std::string& path) const {
  Kind k;
  std::string key;
  Id id = open_path(path, &k, &key);
  if (k == Kind::Missing) throw BadData(file_ + ": there is no group '" + key + "'");
  if (k != Kind::Group) throw BadData(file_ + ": '" + key + "' is not a group");
  return Group(file_, key, std::move(id));
}

Dataset Group::dataset(const std::string& path) const {
  Kind k;
  std::string key;
  Id id = open_path(path, &k, &key);
  if (k == Kind::Missing) throw BadData(file_ + ": there is no dataset '" + key + "'");
  if (k != Kind::Dataset) throw BadData(file_ + ": '" + key + "' is not a dataset");
  return Dataset(file_, key, std::move(id));
}

std::vector<std::string> Group::children() const {
  std::vector<std::string> names;
  hsize_t index = 0;
  herr_t r = H5Literate(
      id(), H5_INDEX_NAME, H5_ITER_INC, &index,
      [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
        auto* out = static_cast<std::vector<std::string>*>(data);
        if (out->size() >= (1u << 24)) return -1;  // no real group has this many members
        out->emplace_back(name);
        return 0;
      },
      &names);
  if (r < 0) fail(with_detail("has an unreadable list of members"));
  return names;
}

Group Group::create_group(const std::string& name) const {
  Id lcpl(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Id g(H5Gcreate2(id(), name.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT));
  const std::string key = join_key(key_, name);
  if (!g.valid()) throw IoError(with_detail(file_ + ": could not create group '" + key + "'"));
  return Group(file_, key, std::move(g));
}

void Group::remove(const std::string& name) const {
  htri_t exists = H5Lexists(id(), name.c_str(), H5P_DEFAULT);
  if (exists > 0 && H5Ldelete(id(), name.c_str(), H5P_DEFAULT) < 0)
    throw IoError(with_detail(file_ + ": could not remove '" + join_key(key_, name) + "'"));
}

Dataset Group::write(const std::string& name, NumType type, const void* data,
                     const std::vector<int64_t>& shape, bool gzip) const {
  const std::string key = join_key(key_, name);
  std::vector<hsize_t> dims;
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw InvalidArgument(file_ + ": negative dimension for '" + key + "'");
    dims.push_back(static_cast<hsize_t>(d));
    n = saturating_mul(n, static_cast<uint64_t>(d));
  }
  if (n > 0 && !data) throw InvalidArgument(file_ + ": no data given for '" + key + "'");
  Id space(dims.empty() ? H5Screate(H5S_SCALAR)
                        : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (gzip && n > 0 && !dims.empty() && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
    // Chunks of about 1 MiB: whole rows, as many as fit.
    std::vector<hsize_t> chunk = dims;
    uint64_t row_bytes = num_size(type);
    for (size_t i = 1; i < chunk.size(); ++i) row_bytes = saturating_mul(row_bytes, chunk[i]);
    chunk[0] = std::max<hsize_t>(
        1, std::min<hsize_t>(dims[0], (1u << 20) / std::max<uint64_t>(row_bytes, 1)));
    for (auto& c : chunk) c = std::max<hsize_t>(c, 1);
    H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
    H5Pset_deflate(dcpl.get(), 4);
  }
  Id lcpl(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Id ds(H5Dcreate2(id(), name.c_str(), file_type(type), space.get(), lcpl.get(), dcpl.get(),
                   H5P_DEFAULT));
  if (!ds.valid()) throw IoError(with_detail(file_ + ": could not create dataset '" + key + "'"));
  if (n > 0 && H5Dwrite(ds.get(), native_type(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw IoError(with_detail(file_ + ": could not write dataset '" + key + "'"));
  return Dataset(file_, key, std::move(ds));
}

Dataset Group::write_strings(const std::string& name,
                             const std::vector<std::string>& values) const {
  const std::string key = join_key(key_, name);
  Id type = vlen_string_type(H5T_CSET_UTF8);
  hsize_t n = values.size();
  Id space(H5Screate_simple(1, &n, nullptr));
  Id lcpl(H5Pcreate(H5P_LINK_CREATE));
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Id ds(H5Dcreate2(id(), name.c_str(), type.get(), space.get(), lcpl.get(), H5P_DEFAULT,
                   H5P_DEFAULT));
  if (!ds.valid()) throw IoError(with_detail(file_ + ": could not create dataset '" + key + "'"));
  std::vector<const char*> ptrs;
  ptrs.reserve(values.size());
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (n > 0 && H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0)
    throw IoError(with_detail(file_ + ": could not write dataset '" + key + "'"));
  return Dataset(file_, key, std::move(ds));
}

// ---- File
// ------------------------------------------------------------------------------------------

namespace {

Id file_access_plist() {
  Id fapl(H5Pcreate(H5P_FILE_ACCESS));
// H5Pset_file_locking arrived in 1.10.7 and 1.12.1 (1.12.0 is older than 1.10.7 and lacks it).
#if H5_VERSION_GE(1, 10, 7) && !(H5_VERS_MAJOR == 1 && H5_VERS_MINOR == 12 && H5_VERS_RELEASE == 0)
  // Keep HDF5's locking, but do not fail on file systems that cannot lock (NFS, read-only media).
  H5Pset_file_locking(fapl.get(), true, true);
#endif
  return fapl;
}

}  // namespace

File File::open(const std::string& path, Mode mode) {
  silence_hdf5_errors();
  register_filters();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw IoError(path + ": cannot open the file (" + std::strerror(errno) + ")");
  if (S_ISDIR(st.st_mode)) throw IoError(path + ": is a directory, not a file");
  if (::access(path.c_str(), mode == Mode::Read ? R_OK : (R_OK | W_OK)) != 0)
    throw IoError(path + ": cannot open the file for " +
                  (mode == Mode::Read ? "reading" : "writing") + " (" + std::strerror(errno) + ")");
    // H5Fis_hdf5 is deprecated from 1.12 on, where H5Fis_accessible does the same.
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_hdf5 <= 0)
    throw BadData(path +
                  ": is not an HDF5 file (an .h5ad file is HDF5; this one has no HDF5 signature)");
  Id fapl = file_access_plist();
  if (mode == Mode::Read) {
    const hid_t driver = detail::guarded_driver();
    if (driver < 0 || H5Pset_driver(fapl.get(), driver, nullptr) < 0)
      throw IoError(with_detail(path + ": could not set up the HDF5 file driver"));
  }
  detail::clear_driver_problem();
  Id fid(H5Fopen(path.c_str(), mode == Mode::Read ? H5F_ACC_RDONLY : H5F_ACC_RDWR, fapl.get()));
  if (!fid.valid())
    throw BadData(
        with_detail(path + ": could not be opened as HDF5; the file is truncated or corrupt"));
  Id root(H5Gopen2(fid.get(), "/", H5P_DEFAULT));
  if (!root.valid())
    throw BadData(
        with_detail(path + ": has an unreadable root group; the file is truncated or corrupt"));
  File f;
  f.path_ = path;
  f.file_ = std::make_shared<Id>(std::move(fid));
  f.root_ = Group(path, "/", std::move(root));
  return f;
}

File File::create_with(const std::string& path, unsigned flags) {
  silence_hdf5_errors();
  Id fapl = file_access_plist();
  Id fid(H5Fcreate(path.c_str(), flags, H5P_DEFAULT, fapl.get()));
  if (!fid.valid()) throw IoError(with_detail(path + ": could not create the file"));
  Id root(H5Gopen2(fid.get(), "/", H5P_DEFAULT));
  File f;
  f.path_ = path;
  f.file_ = std::make_shared<Id>(std::move(fid));
  f.root_ = Group(path, "/", std::move(root));
  return f;
}

File File::create(const std::string& path) { return create_with(path, H5F_ACC_TRUNC); }

File File::create_new(const std::string& path) {
  // H5F_ACC_EXCL refuses an existing file too, but with a vaguer message.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) throw IoError(path + ": already exists; it is not replaced");
  return create_with(path, H5F_ACC_EXCL);
}

void File::flush() const {
  if (H5Fflush(file_->get(), H5F_SCOPE_GLOBAL) < 0)
    throw IoError(with_detail(path_ + ": could not write the file to disk"));
}

}  // namespace scssl::h5
