#include "tensor_file_parse.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "scssl/params.hpp"

namespace scssl::detail {

namespace {

// Limits that no state dict comes near and that keep a hostile file from exhausting the stack or
// memory (docs/method-spec.md §21.6).
constexpr int kMaxDepth = 64;
constexpr std::size_t kMaxDims = 64;
constexpr std::size_t kMaxObjects = std::size_t{1} << 24;

uint16_t le16(const unsigned char* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t le32(const unsigned char* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t le64(const unsigned char* p) { return uint64_t{le32(p)} | uint64_t{le32(p + 4)} << 32; }

// Text from the file, fit for a message: printable ASCII, at most 120 characters.
std::string printable(std::string_view text) {
  std::string out;
  for (const char c : text.substr(0, 120)) out += c >= 0x20 && c < 0x7f ? c : '?';
  if (text.size() > 120) out += "...";
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// Every fault becomes one BadData naming the file.
class Faults {
 public:
  explicit Faults(const std::string& name) : name_(name) {}
  [[noreturn]] void fail(const std::string& what) const { throw BadData(name_ + ": " + what); }

 private:
  const std::string& name_;
};

// Counts the elements the tensors will need once materialised, against tensor_element_limit.
class ElementBudget {
 public:
  ElementBudget(std::size_t file_size, const Faults& faults)
      : left_(tensor_element_limit(file_size)), file_size_(file_size), faults_(faults) {}
  void take(int64_t numel, const std::string& name) {
    if (numel > left_)
      faults_.fail("its tensors up to '" + printable(name) + "' have more elements than the " +
                   std::to_string(tensor_element_limit(file_size_)) + " a file of " +
                   std::to_string(file_size_) +
                   " bytes may give (overlapping or broadcast views of a small storage)");
    left_ -= numel;
  }

 private:
  int64_t left_;
  std::size_t file_size_;
  const Faults& faults_;
};

// Checks that every element of a strided view lies inside a storage of `storage_numel`
// elements; returns the view's element count.
int64_t check_view(const Faults& faults, const std::string& name, const TensorRecord& view,
                   int64_t storage_numel) {
  const std::string what = "tensor '" + printable(name) + "'";
  if (view.shape.size() > kMaxDims)
    faults.fail(what + " has " + std::to_string(view.shape.size()) + " dimensions, more than " +
                std::to_string(kMaxDims));
  if (view.strides.size() != view.shape.size())
    faults.fail(what + " has " + std::to_string(view.shape.size()) + " sizes but " +
                std::to_string(view.strides.size()) + " strides");
  int64_t numel = 1;
  for (const int64_t size : view.shape) {
    if (size < 0) faults.fail(what + " has a negative size in its shape " + shape_text(view.shape));
    if (__builtin_mul_overflow(numel, size, &numel))
      faults.fail(what + " of shape " + shape_text(view.shape) + " has more than 2^63 elements");
  }
  for (const int64_t stride : view.strides)
    if (stride < 0) faults.fail(what + " has a negative stride " + shape_text(view.strides));
  if (view.offset < 0)
    faults.fail(what + " starts at a negative storage offset " + std::to_string(view.offset));
  if (numel == 0) return 0;
  int64_t last = view.offset;
  bool overflow = false;
  for (std::size_t i = 0; i < view.shape.size(); ++i) {
    int64_t step = 0;
    overflow = overflow || __builtin_mul_overflow(view.shape[i] - 1, view.strides[i], &step) ||
               __builtin_add_overflow(last, step, &last);
  }
  if (overflow || last >= storage_numel)
    faults.fail(what + " (shape " + shape_text(view.shape) + ", strides " +
                shape_text(view.strides) + ", offset " + std::to_string(view.offset) +
                ") reaches past the end of its storage of " + std::to_string(storage_numel) +
                " elements");
  return numel;
}

// ---------------------------------------------------------------------------------------------
// Zip: the central directory (with ZIP64), local headers, stored entries only.

struct ZipEntry {
  std::string_view name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed = 0;
  uint64_t size = 0;
  uint64_t offset = 0;  // of the local header
};

struct Bytes {
  const unsigned char* data = nullptr;
  std::size_t size = 0;
};

const char* method_name(uint16_t method) {
  switch (method) {
    case 8:
      return "deflate";
    case 9:
      return "deflate64";
    case 12:
      return "bzip2";
    case 14:
      return "lzma";
    case 93:
      return "zstandard";
    default:
      return "unknown";
  }
}

class Zip {
 public:
  Zip(const unsigned char* data, std::size_t size, const Faults& faults)
      : data_(data), size_(size), faults_(faults) {
    if (size < 22) faults.fail("is truncated: too short for a zip archive");
    // The end record is the last 22 bytes, unless a comment of up to 64 KiB follows it.
    const std::size_t lowest = size - 22 > 65535 ? size - 22 - 65535 : 0;
    std::size_t eocd = size;
    for (std::size_t p = size - 22 + 1; p-- > lowest;)
      if (le32(data + p) == 0x06054b50 && p + 22 + le16(data + p + 20) <= size) {
        eocd = p;
        break;
      }
    if (eocd == size)
      faults.fail(
          "has no end-of-central-directory record: the zip archive is truncated or damaged");
    uint64_t count = le16(data + eocd + 10);
    uint64_t cd_size = le32(data + eocd + 12);
    uint64_t cd_offset = le32(data + eocd + 16);
    uint64_t cd_limit = eocd;
    if (eocd >= 20 && le32(data + eocd - 20) == 0x07064b50) {
      // ZIP64 (torch writes it always): the locator points at the 56-byte ZIP64 end record.
      const uint64_t record = le64(data + eocd - 20 + 8);
      if (record > eocd - 20 || eocd - 20 - record < 56 || le32(data + record) != 0x06064b50)
        faults.fail("has a damaged ZIP64 end-of-central-directory record");
      count = le64(data + record + 32);
      cd_size = le64(data + record + 40);
      cd_offset = le64(data + record + 48);
      cd_limit = record;
    } else if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
      faults.fail("lacks the ZIP64 end-of-central-directory record its end record calls for");
    }
    if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
      faults.fail("has its central directory (" + std::to_string(cd_size) + " bytes at offset " +
                  std::to_string(cd_offset) + ") outside the file of " + std::to_string(size) +
                  " bytes: it is truncated or damaged");
    if (count > cd_size / 46)
      faults.fail("claims " + std::to_string(count) +
                  " entries, more than its central directory of " + std::to_string(cd_size) +
                  " bytes can hold");
    entries_.reserve(count);
    const unsigned char* p = data + cd_offset;
    std::size_t left = cd_size;
    for (uint64_t i = 0; i < count; ++i) {
      if (left < 46 || le32(p) != 0x02014b50)
        faults.fail("has a damaged central directory (entry " + std::to_string(i) + ")");
      ZipEntry e;
      e.flags = le16(p + 8);
      e.method = le16(p + 10);
      e.crc = le32(p + 16);
      e.compressed = le32(p + 20);
      e.size = le32(p + 24);
      const std::size_t name_size = le16(p + 28), extra_size = le16(p + 30),
                        comment_size = le16(p + 32);
      e.offset = le32(p + 42);
      if (left - 46 < name_size + extra_size + comment_size)
        faults.fail("has a damaged central directory (entry " + std::to_string(i) + ")");
      e.name = std::string_view(reinterpret_cast<const char*>(p + 46), name_size);
      read_zip64_extra(p + 46 + name_size, extra_size, e);
      p += 46 + name_size + extra_size + comment_size;
      left -= 46 + name_size + extra_size + comment_size;
      entries_.push_back(e);
    }
    std::sort(entries_.begin(), entries_.end(),
              [](const ZipEntry& a, const ZipEntry& b) { return a.name < b.name; });
    for (std::size_t i = 1; i < entries_.size(); ++i)
      if (entries_[i].name == entries_[i - 1].name)
        faults.fail("holds two entries named '" + printable(entries_[i].name) + "'");
  }

  const std::vector<ZipEntry>& entries() const { return entries_; }

  const ZipEntry* find(std::string_view name) const {
    const auto it =
        std::lower_bound(entries_.begin(), entries_.end(), name,
                         [](const ZipEntry& e, std::string_view n) { return e.name < n; });
    return it != entries_.end() && it->name == name ? &*it : nullptr;
  }

  // The bytes of a stored entry, its CRC-32 checked.
  Bytes read(const ZipEntry& e) const {
    const std::string what = "entry '" + printable(e.name) + "'";
    if (e.flags & 1) faults_.fail(what + " is encrypted");
    if (e.method != 0)
      faults_.fail(what + " is compressed (zip method " + std::to_string(e.method) + ", " +
                   method_name(e.method) +
                   "); only stored entries are read, as torch.save writes them");
    if (e.compressed != e.size)
      faults_.fail(what + " is damaged: stored, but " + std::to_string(e.compressed) +
                   " bytes in the archive for " + std::to_string(e.size) + " bytes of data");
    if (e.offset > size_ || size_ - e.offset < 30 || le32(data_ + e.offset) != 0x04034b50)
      faults_.fail(what + " has no local header at offset " + std::to_string(e.offset) +
                   " (the file has " + std::to_string(size_) + " bytes)");
    const unsigned char* local = data_ + e.offset;
    const uint64_t name_size = le16(local + 26), extra_size = le16(local + 28);
    const uint64_t start = e.offset + 30 + name_size + extra_size;
    if (start > size_ || name_size != e.name.size() ||
        std::memcmp(local + 30, e.name.data(), name_size) != 0)
      faults_.fail(what + " has a local header that does not match the central directory");
    if (e.size > size_ - start)
      faults_.fail(what + " (" + std::to_string(e.size) + " bytes at offset " +
                   std::to_string(start) + ") reaches past the end of the file of " +
                   std::to_string(size_) + " bytes: it is truncated");
#ifndef SCSSL_TENSOR_FILE_FUZZING  // the fuzzer could never get past a checksum
    if (crc32(data_ + start, e.size) != e.crc)
      faults_.fail(what + " is damaged: its CRC-32 does not match the central directory");
#endif
    return {data_ + start, static_cast<std::size_t>(e.size)};
  }

 private:
  // The ZIP64 extra field (id 1) holds, in this order, those of the uncompressed size, the
  // compressed size and the local header's offset whose 32-bit fields are 0xFFFFFFFF.
  void read_zip64_extra(const unsigned char* q, std::size_t left, ZipEntry& e) const {
    while (left >= 4) {
      const uint16_t id = le16(q);
      const std::size_t size = le16(q + 2);
      if (size > left - 4)
        faults_.fail("entry '" + printable(e.name) + "' has a damaged extra field");
      if (id == 1) {
        const unsigned char* v = q + 4;
        std::size_t v_left = size;
        const auto take = [&](uint64_t& field) {
          if (field != 0xFFFFFFFF) return;
          if (v_left < 8)
            faults_.fail("entry '" + printable(e.name) + "' has a ZIP64 extra field too short");
          field = le64(v);
          v += 8;
          v_left -= 8;
        };
        take(e.size);
        take(e.compressed);
        take(e.offset);
      }
      q += 4 + size;
      left -= 4 + size;
    }
  }

  const unsigned char* data_;
  std::size_t size_;
  const Faults& faults_;
  std::vector<ZipEntry> entries_;
};

// ---------------------------------------------------------------------------------------------
// The pickle subset of state dicts: an interpreter of the opcodes that build dicts, lists, tuples,
// numbers and strings, and of calls to the few torch functions that rebuild tensors. Objects live
// in an arena and refer to each other by index, so that cycles and deep chains neither leak nor
// recurse when they are destroyed.

enum class Kind : uint8_t {
  kNone,
  kBool,
  kInt,
  kBigInt,
  kFloat,
  kString,
  kBytes,
  kList,
  kTuple,
  kSet,
  kDict,
  kGlobal,
  kStorage,
  kTensor,
};

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return "a bool";
    case Kind::kInt:
      return "an integer";
    case Kind::kBigInt:
      return "an integer of more than 64 bits";
    case Kind::kFloat:
      return "a float";
    case Kind::kString:
      return "a string";
    case Kind::kBytes:
      return "bytes";
    case Kind::kList:
      return "a list";
    case Kind::kTuple:
      return "a tuple";
    case Kind::kSet:
      return "a set";
    case Kind::kDict:
      return "a dict";
    case Kind::kGlobal:
      return "a class or function";
    case Kind::kStorage:
      return "a storage";
    case Kind::kTensor:
      return "a tensor";
  }
  return "an object";
}

bool is_container(Kind kind) {
  return kind == Kind::kList || kind == Kind::kTuple || kind == Kind::kSet || kind == Kind::kDict;
}

// The globals a state dict may name.
enum class Callable : uint8_t {
  kOrderedDict,
  kRebuildTensor,
  kRebuildParameter,
  kRebuildParameterWithState,
  kStorageType,
};

struct Node {
  Kind kind = Kind::kNone;
  // strings_ for a string or bytes, items_ for a container, storages for a storage, tensors_ for
  // a tensor, a Callable for a global.
  uint32_t ref = 0;
  // An integer's or bool's value, a float's bits, a storage type's ElementType, or for a dict
  // 1 + the index of the attribute dict a BUILD gave it (0: none).
  int64_t value = 0;
};

struct StorageType {
  const char* name;
  ElementType type;
};
constexpr std::array<StorageType, 10> kStorageTypes = {{
    {"HalfStorage", ElementType::kFloat16},
    {"BFloat16Storage", ElementType::kBFloat16},
    {"FloatStorage", ElementType::kFloat32},
    {"DoubleStorage", ElementType::kFloat64},
    {"LongStorage", ElementType::kInt64},
    {"IntStorage", ElementType::kInt32},
    {"ShortStorage", ElementType::kInt16},
    {"CharStorage", ElementType::kInt8},
    {"ByteStorage", ElementType::kUInt8},
    {"BoolStorage", ElementType::kBool},
}};

class PickleReader {
 public:
  PickleReader(const Zip& zip, std::string top, Bytes pickle, std::size_t file_size,
               const Faults& faults, ParsedTensorFile& out)
      : zip_(zip),
        top_(std::move(top)),
        p_(pickle.data),
        size_(pickle.size),
        faults_(faults),
        out_(out),
        budget_(file_size, faults) {}

  void read() {
    const uint32_t result = run();
    // Shared references may repeat a subtree; this bound keeps a hostile pickle's listing finite.
    work_left_ = 4 * static_cast<int64_t>(nodes_.size()) + 64 * static_cast<int64_t>(size_) +
                 (int64_t{1} << 21);
    std::string name;
    const Node& root = nodes_[result];
    if (is_container(root.kind) && items_[root.ref].empty() && root.value == 0) return;
    flatten(result, name, 0);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { faults_.fail(what); }

  const unsigned char* take(uint64_t n) {
    if (n > size_ - pos_)
      fail("data.pkl ends in the middle of an opcode at byte " + std::to_string(pos_) +
           ": the pickle is truncated");
    const unsigned char* at = p_ + pos_;
    pos_ += n;
    return at;
  }

  uint32_t add(Node node) {
    if (nodes_.size() >= kMaxObjects)
      fail("the pickle builds more than " + std::to_string(kMaxObjects) +
           " objects, which no state dict needs");
    nodes_.push_back(node);
    return static_cast<uint32_t>(nodes_.size() - 1);
  }
  uint32_t add_container(Kind kind, std::vector<uint32_t> items = {}) {
    items_.push_back(std::move(items));
    return add({kind, static_cast<uint32_t>(items_.size() - 1), 0});
  }
  uint32_t add_string(Kind kind, const unsigned char* at, uint64_t n) {
    strings_.emplace_back(reinterpret_cast<const char*>(at), n);
    return add({kind, static_cast<uint32_t>(strings_.size() - 1), 0});
  }
  uint32_t add_int(int64_t value) { return add({Kind::kInt, 0, value}); }

  // The stack above the innermost MARK is the one an opcode sees, as in CPython.
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  [[noreturn]] void underflow(const char* op) const {
    fail("data.pkl's opcode " + std::string(op) + " at byte " + std::to_string(pos_ - 1) +
         " finds too few objects on the pickle stack");
  }
  void push(uint32_t node) { stack_.push_back(node); }
  uint32_t pop(const char* op) {
    if (stack_.size() <= floor()) underflow(op);
    const uint32_t node = stack_.back();
    stack_.pop_back();
    return node;
  }
  uint32_t top(const char* op) const {
    if (stack_.size() <= floor()) underflow(op);
    return stack_.back();
  }
  std::vector<uint32_t> pop_mark(const char* op) {
    if (marks_.empty())
      fail("data.pkl's opcode " + std::string(op) + " at byte " + std::to_string(pos_ - 1) +
           " has no MARK to go back to");
    std::vector<uint32_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()),
                                stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }

  const Node& expect(uint32_t node, Kind kind, const std::string& what) const {
    const Node& n = nodes_[node];
    if (n.kind != kind)
      fail(what + " is " + kind_name(n.kind) + ", not " + kind_name(kind) +
           "; the pickle is not a state dict of tensors");
    return n;
  }
  int64_t expect_int(uint32_t node, const std::string& what) const {
    const Node& n = nodes_[node];
    if (n.kind != Kind::kInt && n.kind != Kind::kBool)
      fail(what + " is " + kind_name(n.kind) + ", not an integer below 2^63");
    return n.value;
  }
  // A size or stride: a tuple (immutable, so checking it once is enough) of at most kMaxDims
  // integers.
  void check_ints(uint32_t node, const std::string& what) const {
    const Node& n = expect(node, Kind::kTuple, what);
    if (items_[n.ref].size() > kMaxDims)
      fail(what + " has " + std::to_string(items_[n.ref].size()) + " dimensions, more than " +
           std::to_string(kMaxDims));
    for (const uint32_t item : items_[n.ref]) expect_int(item, what);
  }
  std::vector<int64_t> ints(uint32_t node) const {
    std::vector<int64_t> values;
    for (const uint32_t item : items_[nodes_[node].ref]) values.push_back(nodes_[item].value);
    return values;
  }
  std::string_view expect_string(uint32_t node, const std::string& what) const {
    return strings_[expect(node, Kind::kString, what).ref];
  }

  uint32_t run();
  uint32_t global(std::string_view module, std::string_view name);
  uint32_t call(uint32_t callable, uint32_t args);
  uint32_t rebuild_tensor(const std::vector<uint32_t>& args);
  // A tensor as rebuilt, before it has a name: its size and stride are tuple objects.
  struct Rebuilt {
    uint32_t storage;
    uint32_t shape;
    uint32_t strides;
    int64_t offset;
  };
  uint32_t storage(uint32_t pid);
  void flatten(uint32_t node, std::string& name, int depth);
  // Shared references (through the memo) can make a small pickle's listing endless.
  void work(int64_t amount) {
    work_left_ -= amount;
    if (work_left_ < 0)
      fail(
          "the pickle's objects refer to each other so often that listing them would not end "
          "(shared or cyclic references)");
  }
  void emit(const std::string& name, bool tensor, uint32_t ref);

  const Zip& zip_;
  std::string top_;
  const unsigned char* p_;
  std::size_t size_;
  std::size_t pos_ = 0;
  const Faults& faults_;
  ParsedTensorFile& out_;
  ElementBudget budget_;

  std::vector<Node> nodes_;
  std::vector<std::vector<uint32_t>> items_;
  std::vector<std::string_view> strings_;
  std::vector<Rebuilt> tensors_;
  std::vector<uint32_t> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint32_t, uint32_t> memo_;
  std::unordered_map<std::string_view, uint32_t> storage_keys_;  // key -> index in out_.storages

  // Objects visited, bytes of names built and of sizes kept while the result is listed.
  int64_t work_left_ = 0;
  std::unordered_set<std::string> names_;
};

uint32_t PickleReader::run() {
  for (;;) {
    if (pos_ >= size_) fail("data.pkl ends before its STOP opcode: the pickle is truncated");
    const unsigned char op = p_[pos_++];
    switch (op) {
      case 0x80: {  // PROTO
        const int protocol = *take(1);
        if (protocol < 2 || protocol > 5)
          fail("data.pkl is pickle protocol " + std::to_string(protocol) +
               "; protocols 2 to 5 are read");
        break;
      }
      case 0x95:  // FRAME: a length hint only
        take(8);
        break;
      case '.':  // STOP
        return pop("STOP");
      case '(':  // MARK
        marks_.push_back(stack_.size());
        break;
      case '0':  // POP
        if (stack_.size() > floor())
          stack_.pop_back();
        else if (!marks_.empty())
          marks_.pop_back();
        else
          underflow("POP");
        break;
      case '1':  // POP_MARK
        pop_mark("POP_MARK");
        break;
      case '2':  // DUP
        push(top("DUP"));
        break;
      case '}':  // EMPTY_DICT
        push(add_container(Kind::kDict));
        break;
      case ']':  // EMPTY_LIST
        push(add_container(Kind::kList));
        break;
      case ')':  // EMPTY_TUPLE
        push(add_container(Kind::kTuple));
        break;
      case 0x8f:  // EMPTY_SET
        push(add_container(Kind::kSet));
        break;
      case 'd': {  // DICT
        std::vector<uint32_t> items = pop_mark("DICT");
        if (items.size() % 2)
          fail("data.pkl's DICT at byte " + std::to_string(pos_ - 1) +
               " has a key without a value");
        push(add_container(Kind::kDict, std::move(items)));
        break;
      }
      case 'l':  // LIST
        push(add_container(Kind::kList, pop_mark("LIST")));
        break;
      case 't':  // TUPLE
        push(add_container(Kind::kTuple, pop_mark("TUPLE")));
        break;
      case 0x91:  // FROZENSET
        push(add_container(Kind::kSet, pop_mark("FROZENSET")));
        break;
      case 0x85:    // TUPLE1
      case 0x86:    // TUPLE2
      case 0x87: {  // TUPLE3
        const std::size_t n = op - 0x84u;
        if (stack_.size() < floor() + n) underflow("TUPLE1/2/3");
        std::vector<uint32_t> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        push(add_container(Kind::kTuple, std::move(items)));
        break;
      }
      case 's':     // SETITEM
      case 'u':     // SETITEMS
      case 'a':     // APPEND
      case 'e':     // APPENDS
      case 0x90: {  // ADDITEMS
        const char* name = op == 's'   ? "SETITEM"
                           : op == 'u' ? "SETITEMS"
                           : op == 'a' ? "APPEND"
                           : op == 'e' ? "APPENDS"
                                       : "ADDITEMS";
        std::vector<uint32_t> items;
        if (op == 's') {
          const uint32_t value = pop(name);
          items = {pop(name), value};
        } else if (op == 'a') {
          items = {pop(name)};
        } else {
          items = pop_mark(name);
        }
        const Kind want = op == 's' || op == 'u' ? Kind::kDict
                          : op == 0x90           ? Kind::kSet
                                                 : Kind::kList;
        const Node& target = expect(top(name), want,
                                    "the object data.pkl's " + std::string(name) + " at byte " +
                                        std::to_string(pos_ - 1) + " adds to");
        if (want == Kind::kDict && items.size() % 2)
          fail("data.pkl's SETITEMS at byte " + std::to_string(pos_ - 1) +
               " has a key without a value");
        std::vector<uint32_t>& to = items_[target.ref];
        to.insert(to.end(), items.begin(), items.end());
        break;
      }
      case 'q':     // BINPUT
      case 'r':     // LONG_BINPUT
      case 0x94: {  // MEMOIZE
        const uint32_t index = op == 'q'   ? *take(1)
                               : op == 'r' ? le32(take(4))
                                           : static_cast<uint32_t>(memo_.size());
        const uint32_t node = top("PUT");
        memo_[index] = node;
        if (memo_.size() > kMaxObjects)
          fail("the pickle's memo holds more than " + std::to_string(kMaxObjects) + " objects");
        break;
      }
      case 'h':    // BINGET
      case 'j': {  // LONG_BINGET
        const uint32_t index = op == 'h' ? *take(1) : le32(take(4));
        const auto it = memo_.find(index);
        if (it == memo_.end())
          fail("data.pkl's GET at byte " + std::to_string(pos_ - 1) + " asks for memo entry " +
               std::to_string(index) + ", which the pickle never stored");
        push(it->second);
        break;
      }
      case 'J':  // BININT
        push(add_int(static_cast<int32_t>(le32(take(4)))));
        break;
      case 'K':  // BININT1
        push(add_int(*take(1)));
        break;
      case 'M':  // BININT2
        push(add_int(le16(take(2))));
        break;
      case 0x8a:    // LONG1
      case 0x8b: {  // LONG4
        uint64_t n = 0;
        if (op == 0x8a) {
          n = *take(1);
        } else {
          const int32_t n4 = static_cast<int32_t>(le32(take(4)));
          if (n4 < 0)
            fail("data.pkl's LONG4 at byte " + std::to_string(pos_ - 5) + " has a negative length");
          n = static_cast<uint64_t>(n4);
        }
        const unsigned char* bytes = take(n);
        if (n > 8) {
          push(add({Kind::kBigInt, 0, 0}));  // only ever skipped
          break;
        }
        uint64_t value = 0;
        for (uint64_t i = 0; i < n; ++i) value |= uint64_t{bytes[i]} << (8 * i);
        if (n > 0 && n < 8 && (bytes[n - 1] & 0x80)) value |= ~uint64_t{0} << (8 * n);
        push(add_int(static_cast<int64_t>(value)));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const unsigned char* b = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = bits << 8 | b[i];
        push(add({Kind::kFloat, 0, static_cast<int64_t>(bits)}));
        break;
      }
      case 'N':  // NONE
        push(add({Kind::kNone, 0, 0}));
        break;
      case 0x88:  // NEWTRUE
      case 0x89:  // NEWFALSE
        push(add({Kind::kBool, 0, op == 0x88 ? 1 : 0}));
        break;
      case 'X':    // BINUNICODE
      case 'T': {  // BINSTRING (Python 2 str)
        const uint32_t n = le32(take(4));
        if (op == 'T' && static_cast<int32_t>(n) < 0)
          fail("data.pkl's BINSTRING at byte " + std::to_string(pos_ - 5) +
               " has a negative length");
        push(add_string(Kind::kString, take(n), n));
        break;
      }
      case 0x8c:   // SHORT_BINUNICODE
      case 'U': {  // SHORT_BINSTRING
        const uint64_t n = *take(1);
        push(add_string(Kind::kString, take(n), n));
        break;
      }
      case 0x8d: {  // BINUNICODE8
        const uint64_t n = le64(take(8));
        push(add_string(Kind::kString, take(n), n));
        break;
      }
      case 'B': {  // BINBYTES
        const uint64_t n = le32(take(4));
        push(add_string(Kind::kBytes, take(n), n));
        break;
      }
      case 'C': {  // SHORT_BINBYTES
        const uint64_t n = *take(1);
        push(add_string(Kind::kBytes, take(n), n));
        break;
      }
      case 0x8e:    // BINBYTES8
      case 0x96: {  // BYTEARRAY8
        const uint64_t n = le64(take(8));
        push(add_string(Kind::kBytes, take(n), n));
        break;
      }
      case 'c': {  // GLOBAL: "module\nname\n"
        std::string_view lines[2];
        for (std::string_view& line : lines) {
          const void* nl = std::memchr(p_ + pos_, '\n', size_ - pos_);
          if (!nl) fail("data.pkl ends inside a GLOBAL opcode: the pickle is truncated");
          const std::size_t end =
              static_cast<std::size_t>(static_cast<const unsigned char*>(nl) - p_);
          line = std::string_view(reinterpret_cast<const char*>(p_ + pos_), end - pos_);
          pos_ = end + 1;
        }
        push(global(lines[0], lines[1]));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const uint32_t name = pop("STACK_GLOBAL"), module = pop("STACK_GLOBAL");
        push(global(expect_string(module, "the module of a STACK_GLOBAL"),
                    expect_string(name, "the name of a STACK_GLOBAL")));
        break;
      }
      case 'R':     // REDUCE
      case 0x81: {  // NEWOBJ (cls, args): only OrderedDict's class gets here in a state dict
        const uint32_t args = pop(op == 'R' ? "REDUCE" : "NEWOBJ");
        const uint32_t callable = pop(op == 'R' ? "REDUCE" : "NEWOBJ");
        push(call(callable, args));
        break;
      }
      case 'b': {  // BUILD: the attributes of an OrderedDict (a state dict's _metadata)
        const uint32_t state = pop("BUILD");
        const uint32_t object = top("BUILD");
        expect(object, Kind::kDict, "the object of a BUILD");
        expect(state, Kind::kDict, "the state of a BUILD");
        if (nodes_[object].value != 0) fail("the pickle sets an OrderedDict's attributes twice");
        nodes_[object].value = int64_t{state} + 1;
        break;
      }
      case 'Q':  // BINPERSID
        push(storage(pop("BINPERSID")));
        break;
      default: {
        std::string shown = op >= 0x20 && op < 0x7f ? " '" + std::string(1, char(op)) + "'" : "";
        static const char* hex = "0123456789abcdef";
        fail("data.pkl holds the pickle opcode 0x" + std::string(1, hex[op >> 4]) +
             std::string(1, hex[op & 15]) + shown + " at byte " + std::to_string(pos_ - 1) +
             ", which torch.save does not write for a state dict of tensors");
      }
    }
  }
}

uint32_t PickleReader::global(std::string_view module, std::string_view name) {
  Callable which = Callable::kStorageType;
  ElementType type = ElementType::kFloat32;
  bool known = false;
  if (module == "collections" && name == "OrderedDict") {
    which = Callable::kOrderedDict;
    known = true;
  } else if (module == "torch._utils") {
    known = true;
    if (name == "_rebuild_tensor_v2")
      which = Callable::kRebuildTensor;
    else if (name == "_rebuild_parameter")
      which = Callable::kRebuildParameter;
    else if (name == "_rebuild_parameter_with_state")
      which = Callable::kRebuildParameterWithState;
    else
      known = false;
  } else if (module == "torch") {
    for (const StorageType& s : kStorageTypes)
      if (name == s.name) {
        type = s.type;
        known = true;
      }
  }
  if (!known)
    fail("the pickle refers to " + printable(module) + "." + printable(name) +
         ", which a checkpoint of tensors does not need; only state dicts of tensors are read");
  return add({Kind::kGlobal, static_cast<uint32_t>(which), static_cast<int64_t>(type)});
}

uint32_t PickleReader::call(uint32_t callable, uint32_t args_node) {
  const Node& c = nodes_[callable];
  if (c.kind != Kind::kGlobal)
    fail("the pickle calls " + std::string(kind_name(c.kind)) + " as if it were a function");
  // Sizes are checked before anything is copied: a memoised tuple may be passed many times.
  const std::vector<uint32_t>& given =
      items_[expect(args_node, Kind::kTuple, "the arguments of a call").ref];
  if (given.size() > 7)
    fail("the pickle calls a function with arguments a state dict does not use");
  const std::vector<uint32_t> args = given;
  switch (static_cast<Callable>(c.ref)) {
    case Callable::kOrderedDict:
      // pickle writes OrderedDict() and then adds the items.
      if (!args.empty())
        fail("the pickle calls OrderedDict with arguments a state dict does not use");
      return add_container(Kind::kDict);
    case Callable::kRebuildTensor:
      return rebuild_tensor(args);
    case Callable::kRebuildParameter:
    case Callable::kRebuildParameterWithState: {
      const std::size_t want = c.ref == static_cast<uint32_t>(Callable::kRebuildParameter) ? 3 : 4;
      if (args.size() != want)
        fail("the pickle calls torch._utils._rebuild_parameter" +
             std::string(want == 4 ? "_with_state" : "") + " with " + std::to_string(args.size()) +
             " arguments instead of " + std::to_string(want));
      expect(args[0], Kind::kTensor, "the data of a parameter");
      return args[0];
    }
    case Callable::kStorageType:
      break;
  }
  fail("the pickle calls a storage class, which torch.save never does");
}

uint32_t PickleReader::rebuild_tensor(const std::vector<uint32_t>& args) {
  // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (args.size() != 6 && args.size() != 7)
    fail("the pickle calls torch._utils._rebuild_tensor_v2 with " + std::to_string(args.size()) +
         " arguments instead of 6 or 7");
  const uint32_t storage =
      expect(args[0], Kind::kStorage, "the first argument of _rebuild_tensor_v2").ref;
  const int64_t offset = expect_int(args[1], "the storage offset of a tensor");
  check_ints(args[2], "the size of a tensor");
  check_ints(args[3], "the stride of a tensor");
  tensors_.push_back({storage, args[2], args[3], offset});
  if (tensors_.size() > kMaxObjects) fail("the pickle rebuilds too many tensors");
  return add({Kind::kTensor, static_cast<uint32_t>(tensors_.size() - 1), 0});
}

uint32_t PickleReader::storage(uint32_t pid) {
  // ('storage', torch.<Type>Storage, key, location, numel); its bytes are <top>/data/<key>.
  const std::vector<uint32_t>& id = items_[expect(pid, Kind::kTuple, "a persistent id").ref];
  if (id.size() != 5 || nodes_[id[0]].kind != Kind::kString ||
      strings_[nodes_[id[0]].ref] != "storage")
    fail("the pickle has a persistent id that is not ('storage', type, key, location, size)");
  const Node& type_node = expect(id[1], Kind::kGlobal, "the type of a storage");
  if (type_node.ref != static_cast<uint32_t>(Callable::kStorageType))
    fail("the type of a storage is not a torch storage class");
  const auto type = static_cast<ElementType>(type_node.value);
  const std::string_view key = expect_string(id[2], "the key of a storage");
  expect_string(id[3], "the location of a storage");
  const int64_t numel = expect_int(id[4], "the size of a storage");
  if (numel < 0) fail("storage '" + printable(key) + "' has a negative size");

  const auto known = storage_keys_.find(key);
  if (known != storage_keys_.end()) {
    const StorageRecord& s = out_.storages[known->second];
    if (s.type != type || s.numel != numel)
      fail("storage '" + printable(key) + "' is declared twice, as " + std::to_string(s.numel) +
           " " + element_type_name(s.type) + " and as " + std::to_string(numel) + " " +
           element_type_name(type) + " elements");
    return add({Kind::kStorage, known->second, 0});
  }
  const std::string entry_name = top_ + "/data/" + std::string(key);
  const ZipEntry* entry = zip_.find(entry_name);
  if (!entry)
    fail("the pickle refers to storage '" + printable(key) + "', but the archive has no entry '" +
         printable(entry_name) + "'");
  const Bytes bytes = zip_.read(*entry);
  int64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(element_size(type)), &nbytes) ||
      static_cast<uint64_t>(nbytes) > bytes.size)
    fail("storage '" + printable(key) + "' declares " + std::to_string(numel) + " " +
         element_type_name(type) + " elements, but its entry '" + printable(entry_name) +
         "' holds only " + std::to_string(bytes.size) + " bytes");
  out_.storages.push_back({type, bytes.data, numel});
  const auto index = static_cast<uint32_t>(out_.storages.size() - 1);
  storage_keys_.emplace(key, index);
  return add({Kind::kStorage, index, 0});
}

void PickleReader::emit(const std::string& name, bool tensor, uint32_t ref) {
  // What the entry will take in the result: its name, and a tensor's sizes and strides.
  work(static_cast<int64_t>(name.size()) + 1 +
       (tensor ? 16 * static_cast<int64_t>(items_[nodes_[tensors_[ref].shape].ref].size()) : 0));
  if (!names_.insert(name).second) fail("holds two entries named '" + printable(name) + "'");
  if (!tensor) {
    out_.skipped.push_back(name);
    return;
  }
  const Rebuilt& r = tensors_[ref];
  TensorRecord t{name, r.storage, ints(r.shape), ints(r.strides), r.offset};
  budget_.take(check_view(faults_, name, t, out_.storages[t.storage].numel), name);
  out_.tensors.push_back(std::move(t));
}

void PickleReader::flatten(uint32_t id, std::string& name, int depth) {
  work(1);
  if (depth > kMaxDepth)
    fail("nests containers deeper than " + std::to_string(kMaxDepth) + " levels (at '" +
         printable(name) + "')");
  const Node node = nodes_[id];
  const std::size_t length = name.size();
  const auto descend = [&](std::string_view key, uint32_t child) {
    work(static_cast<int64_t>(key.size()) + 1);
    if (!name.empty()) name += '.';
    name += key;
    flatten(child, name, depth + 1);
    name.resize(length);
  };
  switch (node.kind) {
    case Kind::kTensor:
      emit(name, true, node.ref);
      return;
    case Kind::kDict: {
      const std::vector<uint32_t>& kv = items_[node.ref];
      if (kv.empty() && node.value == 0) emit(name, false, 0);
      for (std::size_t i = 0; i < kv.size(); i += 2) {
        const Node& key = nodes_[kv[i]];
        if (key.kind == Kind::kString)
          descend(strings_[key.ref], kv[i + 1]);
        else if (key.kind == Kind::kInt)
          descend(std::to_string(key.value), kv[i + 1]);
        else if (key.kind == Kind::kBool)
          descend(key.value ? "True" : "False", kv[i + 1]);
        else
          fail("a dict key under '" + printable(name) + "' is " + kind_name(key.kind) +
               "; only strings and integers are read as keys");
      }
      // BUILD's attributes (a state dict's _metadata: versions of its modules) are listed as
      // skipped without descending into them.
      if (node.value != 0) {
        const std::vector<uint32_t>& attributes = items_[nodes_[node.value - 1].ref];
        for (std::size_t i = 0; i < attributes.size(); i += 2) {
          const std::string key(expect_string(attributes[i], "an attribute name"));
          if (!name.empty()) name += '.';
          name += key;
          emit(name, false, 0);
          name.resize(length);
        }
      }
      return;
    }
    case Kind::kList:
    case Kind::kTuple:
    case Kind::kSet: {
      const std::vector<uint32_t>& items = items_[node.ref];
      work(static_cast<int64_t>(items.size()));  // the scan below
      const bool plain = std::none_of(items.begin(), items.end(), [&](uint32_t item) {
        return is_container(nodes_[item].kind) || nodes_[item].kind == Kind::kTensor;
      });
      if (plain) {
        emit(name, false, 0);  // a list of numbers (or strings): one entry
        return;
      }
      for (std::size_t i = 0; i < items.size(); ++i) descend(std::to_string(i), items[i]);
      return;
    }
    default:
      emit(name, false, 0);
  }
}

ParsedTensorFile parse_torch_zip(const unsigned char* data, std::size_t size,
                                 const Faults& faults) {
  const Zip zip(data, size, faults);
  // The archive's one folder is named after the file (or "archive"): find <top>/data.pkl.
  std::vector<std::string_view> pickles;
  for (const ZipEntry& e : zip.entries()) {
    const std::string_view suffix = "/data.pkl";
    if (e.name.size() > suffix.size() && e.name.substr(e.name.size() - suffix.size()) == suffix &&
        e.name.substr(0, e.name.size() - suffix.size()).find('/') == std::string_view::npos)
      pickles.push_back(e.name);
  }
  if (pickles.empty())
    faults.fail("is a zip archive without a '<folder>/data.pkl' entry: not a file of torch.save");
  if (pickles.size() > 1)
    faults.fail("is a zip archive with several pickles ('" + printable(pickles[0]) + "', '" +
                printable(pickles[1]) + "'): not a file of torch.save");
  const std::string top(pickles[0].substr(0, pickles[0].size() - 9));
  if (zip.find(top + "/constants.pkl"))
    faults.fail(
        "is a TorchScript archive (torch.jit.save), not a file of torch.save; only "
        "state dicts of tensors are read");
  if (const ZipEntry* order = zip.find(top + "/byteorder")) {
    const Bytes b = zip.read(*order);
    const std::string_view text(reinterpret_cast<const char*>(b.data), b.size);
    if (text != "little")
      faults.fail("records its storages' byte order as '" + printable(text) +
                  "'; only little-endian storages are read");
  }
  ParsedTensorFile out;
  PickleReader reader(zip, top, zip.read(*zip.find(pickles[0])), size, faults, out);
  reader.read();
  return out;
}

// ---------------------------------------------------------------------------------------------
// safetensors: an 8-byte little-endian header length, a JSON header, the data buffer.

// A strict pull reader for JSON: just what the header needs, nothing kept that is not asked for.
class Json {
 public:
  Json(const unsigned char* p, std::size_t size, const Faults& faults)
      : p_(p), size_(size), faults_(faults) {}

  [[noreturn]] void fail(const std::string& what) const {
    faults_.fail("has a safetensors header that is not valid JSON at byte " +
                 std::to_string(pos_ + 8) + " (" + what + ")");
  }
  void space() {
    while (pos_ < size_ &&
           (p_[pos_] == ' ' || p_[pos_] == '\t' || p_[pos_] == '\n' || p_[pos_] == '\r'))
      ++pos_;
  }
  bool at_end() {
    space();
    return pos_ == size_;
  }
  // Consumes `c` if it comes next.
  bool next_is(char c) {
    space();
    if (pos_ < size_ && p_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!next_is(c)) fail(std::string("expected '") + c + "'");
  }

  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (pos_ >= size_) fail("a string is not closed");
      const unsigned char c = p_[pos_++];
      if (c == '"') return out;
      if (c < 0x20) fail("a control character inside a string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (pos_ >= size_) fail("a string is not closed");
      switch (p_[pos_++]) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          uint32_t code = hex4();
          if (code >= 0xDC00 && code <= 0xDFFF) fail("a lone low surrogate");
          if (code >= 0xD800 && code <= 0xDBFF) {
            if (size_ - pos_ < 2 || p_[pos_] != '\\' || p_[pos_ + 1] != 'u')
              fail("a lone high surrogate");
            pos_ += 2;
            const uint32_t low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("a lone high surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8(code, out);
          break;
        }
        default:
          fail("an unknown escape in a string");
      }
    }
  }

  // A non-negative integer below 2^63.
  int64_t integer(const std::string& what) {
    space();
    const std::size_t start = pos_;
    int64_t value = 0;
    while (pos_ < size_ && p_[pos_] >= '0' && p_[pos_] <= '9') {
      if (__builtin_mul_overflow(value, 10, &value) ||
          __builtin_add_overflow(value, p_[pos_] - '0', &value))
        faults_.fail(what + " is not an integer below 2^63");
      ++pos_;
    }
    if (pos_ == start || (pos_ < size_ && (p_[pos_] == '.' || p_[pos_] == 'e' || p_[pos_] == 'E')))
      faults_.fail(what + " is not a non-negative integer");
    if (pos_ - start > 1 && p_[start] == '0') fail("a number with a leading zero");
    return value;
  }

  std::vector<int64_t> integers(const std::string& what) {
    expect('[');
    std::vector<int64_t> values;
    if (next_is(']')) return values;
    do {
      if (values.size() >= kMaxDims) faults_.fail(what + " has more than 64 numbers");
      values.push_back(integer(what));
    } while (next_is(','));
    expect(']');
    return values;
  }

  // Reads past one value of any kind.
  void skip(int depth) {
    if (depth > kMaxDepth) faults_.fail("has a safetensors header nested deeper than 64 levels");
    space();
    if (pos_ >= size_) fail("a value is missing");
    const unsigned char c = p_[pos_];
    if (c == '{') {
      ++pos_;
      if (next_is('}')) return;
      do {
        string();
        expect(':');
        skip(depth + 1);
      } while (next_is(','));
      expect('}');
    } else if (c == '[') {
      ++pos_;
      if (next_is(']')) return;
      do skip(depth + 1);
      while (next_is(','));
      expect(']');
    } else if (c == '"') {
      string();
    } else if (c == 't' || c == 'f' || c == 'n') {
      for (const char* word : {"true", "false", "null"}) {
        const std::size_t n = std::strlen(word);
        if (size_ - pos_ >= n && std::memcmp(p_ + pos_, word, n) == 0) {
          pos_ += n;
          return;
        }
      }
      fail("an unknown word");
    } else {
      number();
    }
  }

 private:
  uint32_t hex4() {
    if (size_ - pos_ < 4) fail("a short \\u escape");
    uint32_t code = 0;
    for (int i = 0; i < 4; ++i) {
      const unsigned char h = p_[pos_++];
      const int digit = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
      if (digit < 0) fail("a bad \\u escape");
      code = code << 4 | static_cast<uint32_t>(digit);
    }
    return code;
  }
  static void utf8(uint32_t code, std::string& out) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | code >> 6);
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | code >> 12);
      out += static_cast<char>(0x80 | (code >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | code >> 18);
      out += static_cast<char>(0x80 | (code >> 12 & 0x3F));
      out += static_cast<char>(0x80 | (code >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  void number() {
    const auto digits = [&] {
      const std::size_t start = pos_;
      while (pos_ < size_ && p_[pos_] >= '0' && p_[pos_] <= '9') ++pos_;
      if (pos_ == start) fail("a malformed number");
      return pos_ - start;
    };
    if (p_[pos_] == '-') ++pos_;
    const std::size_t start = pos_;
    if (digits() > 1 && p_[start] == '0') fail("a number with a leading zero");
    if (pos_ < size_ && p_[pos_] == '.') {
      ++pos_;
      digits();
    }
    if (pos_ < size_ && (p_[pos_] == 'e' || p_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < size_ && (p_[pos_] == '+' || p_[pos_] == '-')) ++pos_;
      digits();
    }
  }

  const unsigned char* p_;
  std::size_t size_;
  std::size_t pos_ = 0;
  const Faults& faults_;
};

struct SafetensorsType {
  const char* name;
  ElementType type;
};
constexpr std::array<SafetensorsType, 10> kSafetensorsTypes = {{
    {"F16", ElementType::kFloat16},
    {"BF16", ElementType::kBFloat16},
    {"F32", ElementType::kFloat32},
    {"F64", ElementType::kFloat64},
    {"I64", ElementType::kInt64},
    {"I32", ElementType::kInt32},
    {"I16", ElementType::kInt16},
    {"I8", ElementType::kInt8},
    {"U8", ElementType::kUInt8},
    {"BOOL", ElementType::kBool},
}};

ParsedTensorFile parse_safetensors(const unsigned char* data, std::size_t size,
                                   const Faults& faults) {
  const uint64_t header_size = le64(data);
  if (header_size > size - 8)
    faults.fail("declares a safetensors header of " + std::to_string(header_size) +
                " bytes, but only " + std::to_string(size - 8) +
                " bytes follow: the file is truncated or not a safetensors file");
  const unsigned char* buffer = data + 8 + header_size;
  const std::size_t buffer_size = size - 8 - header_size;
  Json json(data + 8, header_size, faults);
  ParsedTensorFile out;
  ElementBudget budget(size, faults);
  std::unordered_set<std::string> names;
  json.expect('{');
  if (!json.next_is('}')) {
    do {
      const std::string name = json.string();
      json.expect(':');
      if (!names.insert(name).second)
        faults.fail("has a safetensors header that names '" + printable(name) + "' twice");
      if (name == "__metadata__") {
        json.skip(1);
        out.skipped.push_back(name);
        continue;
      }
      const std::string what = "safetensors tensor '" + printable(name) + "'";
      std::string dtype;
      std::vector<int64_t> shape, offsets;
      bool has_dtype = false, has_shape = false, has_offsets = false;
      json.expect('{');
      if (!json.next_is('}')) {
        do {
          const std::string field = json.string();
          json.expect(':');
          if (field == "dtype") {
            dtype = json.string();
            has_dtype = true;
          } else if (field == "shape") {
            shape = json.integers("the shape of " + what);
            has_shape = true;
          } else if (field == "data_offsets") {
            offsets = json.integers("the data_offsets of " + what);
            has_offsets = true;
          } else {
            json.skip(2);
          }
        } while (json.next_is(','));
        json.expect('}');
      }
      if (!has_dtype || !has_shape || !has_offsets)
        faults.fail("has a " + what + " without " +
                    (!has_dtype   ? "a dtype"
                     : !has_shape ? "a shape"
                                  : "data_offsets"));
      const auto known = std::find_if(kSafetensorsTypes.begin(), kSafetensorsTypes.end(),
                                      [&](const SafetensorsType& t) { return dtype == t.name; });
      if (known == kSafetensorsTypes.end())
        faults.fail("has a " + what + " of dtype '" + printable(dtype) +
                    "', which is not read (F16, BF16, F32, F64, I64, I32, I16, I8, U8 and BOOL "
                    "are)");
      if (offsets.size() != 2)
        faults.fail("has a " + what + " whose data_offsets are not [begin, end]");
      int64_t numel = 1, nbytes = 0;
      for (const int64_t n : shape)
        if (__builtin_mul_overflow(numel, n, &numel))
          faults.fail("has a " + what + " of shape " + shape_text(shape) +
                      " with more than 2^63 elements");
      if (__builtin_mul_overflow(numel, static_cast<int64_t>(element_size(known->type)), &nbytes))
        faults.fail("has a " + what + " of shape " + shape_text(shape) +
                    " with more than 2^63 bytes");
      const auto begin = static_cast<uint64_t>(offsets[0]), end = static_cast<uint64_t>(offsets[1]);
      if (begin > end || end > buffer_size)
        faults.fail("has a " + what + " at bytes [" + std::to_string(begin) + ", " +
                    std::to_string(end) + ") outside its data buffer of " +
                    std::to_string(buffer_size) + " bytes");
      if (end - begin != static_cast<uint64_t>(nbytes))
        faults.fail("has a " + what + " of " + std::to_string(end - begin) + " bytes, but " +
                    element_type_name(known->type) + " of shape " + shape_text(shape) + " takes " +
                    std::to_string(nbytes));
      out.storages.push_back({known->type, buffer + begin, numel});
      TensorRecord t;
      t.name = name;
      t.storage = out.storages.size() - 1;
      t.shape = shape;
      t.strides.assign(shape.size(), 1);
      // (Saturating to 0 can only happen when another size is 0 and nothing is read.)
      for (std::size_t i = shape.size(); i-- > 1;)
        if (__builtin_mul_overflow(t.strides[i], shape[i], &t.strides[i - 1])) t.strides[i - 1] = 0;
      budget.take(check_view(faults, name, t, numel), name);
      out.tensors.push_back(std::move(t));
    } while (json.next_is(','));
    json.expect('}');
  }
  if (!json.at_end()) json.fail("something follows the header's object");
  return out;
}

}  // namespace

std::size_t element_size(ElementType type) {
  switch (type) {
    case ElementType::kFloat64:
    case ElementType::kInt64:
      return 8;
    case ElementType::kFloat32:
    case ElementType::kInt32:
      return 4;
    case ElementType::kFloat16:
    case ElementType::kBFloat16:
    case ElementType::kInt16:
      return 2;
    case ElementType::kInt8:
    case ElementType::kUInt8:
    case ElementType::kBool:
      return 1;
  }
  return 1;
}

const char* element_type_name(ElementType type) {
  switch (type) {
    case ElementType::kFloat16:
      return "float16";
    case ElementType::kBFloat16:
      return "bfloat16";
    case ElementType::kFloat32:
      return "float32";
    case ElementType::kFloat64:
      return "float64";
    case ElementType::kInt64:
      return "int64";
    case ElementType::kInt32:
      return "int32";
    case ElementType::kInt16:
      return "int16";
    case ElementType::kInt8:
      return "int8";
    case ElementType::kUInt8:
      return "uint8";
    case ElementType::kBool:
      return "bool";
  }
  return "unknown";
}

int64_t tensor_element_limit(std::size_t file_size) {
  return static_cast<int64_t>(std::min<uint64_t>(file_size, uint64_t{1} << 62)) +
         (int64_t{1} << 24);
}

uint32_t crc32(const unsigned char* data, std::size_t size, uint32_t crc) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

ParsedTensorFile parse_tensor_file(const unsigned char* data, std::size_t size,
                                   const std::string& name) {
  const Faults faults(name);
  if (size == 0) faults.fail("is empty");
  // Told apart by their first bytes: a zip archive starts with a local header ("PK\3\4", or the
  // end record when it has no entries), a safetensors file with its header length and '{'.
  if (size >= 4 && data[0] == 'P' && data[1] == 'K' &&
      ((data[2] == 3 && data[3] == 4) || (data[2] == 5 && data[3] == 6)))
    return parse_torch_zip(data, size, faults);
  if (size >= 9 && data[8] == '{') return parse_safetensors(data, size, faults);
  if (data[0] == 0x80)
    faults.fail(
        "is a bare pickle: the format of torch.save before PyTorch 1.6 (or with "
        "_use_new_zipfile_serialization=False), which is not read; save it again with a "
        "current PyTorch");
  faults.fail("is neither a torch.save zip archive nor a safetensors file");
}

}  // namespace scssl::detail
