#include "scssl/tensor_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "scssl/params.hpp"
#include "tensor_file_parse.hpp"

// Storages are read as little-endian bytes in place (docs/method-spec.md §21).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the checkpoint reader is little-endian");

namespace scssl {

namespace {

using detail::ElementType;

torch::ScalarType scalar_type(ElementType type) {
  switch (type) {
    case ElementType::kFloat16:
      return torch::kHalf;
    case ElementType::kBFloat16:
      return torch::kBFloat16;
    case ElementType::kFloat32:
      return torch::kFloat32;
    case ElementType::kFloat64:
      return torch::kFloat64;
    case ElementType::kInt64:
      return torch::kInt64;
    case ElementType::kInt32:
      return torch::kInt32;
    case ElementType::kInt16:
      return torch::kInt16;
    case ElementType::kInt8:
      return torch::kInt8;
    case ElementType::kUInt8:
    case ElementType::kBool:  // read as bytes, then compared with 0 (any non-zero byte is true)
      return torch::kUInt8;
  }
  return torch::kUInt8;
}

bool is_float(ElementType type) {
  return type == ElementType::kFloat16 || type == ElementType::kBFloat16 ||
         type == ElementType::kFloat32 || type == ElementType::kFloat64;
}

TensorFile build(const detail::ParsedTensorFile& parsed, const std::string& name) {
  TensorFile file;
  file.path = name;
  file.skipped = parsed.skipped;
  // One tensor over each storage's bytes: in place where they are aligned for their type (the
  // views below copy out of it), else copied once.
  std::vector<torch::Tensor> storages(parsed.storages.size());
  const auto storage = [&](std::size_t index) {
    torch::Tensor& t = storages[index];
    if (t.defined()) return t;
    const detail::StorageRecord& s = parsed.storages[index];
    const torch::ScalarType type = scalar_type(s.type);
    const std::size_t bytes = static_cast<std::size_t>(s.numel) * detail::element_size(s.type);
    if (reinterpret_cast<std::uintptr_t>(s.data) % detail::element_size(s.type) == 0) {
      t = torch::from_blob(const_cast<unsigned char*>(s.data), {s.numel}, type);
    } else {
      t = torch::empty({s.numel}, type);
      std::memcpy(t.data_ptr(), s.data, bytes);
    }
    return t;
  };
  file.tensors.reserve(parsed.tensors.size());
  for (const detail::TensorRecord& record : parsed.tensors) {
    const ElementType type = parsed.storages[record.storage].type;
    const torch::ScalarType target = is_float(type)               ? torch::kFloat32
                                     : type == ElementType::kBool ? torch::kBool
                                                                  : scalar_type(type);
    int64_t numel = 1;
    for (const int64_t n : record.shape) numel *= n;  // checked by the parser
    torch::Tensor tensor;
    if (numel == 0) {
      tensor = torch::empty(record.shape, target);
    } else {
      const torch::Tensor view =
          storage(record.storage).as_strided(record.shape, record.strides, record.offset);
      // A new contiguous tensor that owns its memory, whatever the view's strides.
      tensor = type == ElementType::kBool ? view.ne(0).contiguous()
                                          : view.to(target, /*non_blocking=*/false, /*copy=*/true,
                                                    torch::MemoryFormat::Contiguous);
    }
    file.tensors.emplace_back(record.name, std::move(tensor));
  }
  return file;
}

// A read-only mapping of a whole file, unmapped when it goes out of scope.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw IoError("cannot open '" + path + "': " + std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
      const int error = errno;
      ::close(fd);
      throw IoError("cannot read '" + path + "': " +
                    (S_ISDIR(info.st_mode) ? std::string("it is a folder")
                     : error               ? std::string(std::strerror(error))
                                           : std::string("not a regular file")));
    }
    size_ = static_cast<std::size_t>(info.st_size);
    if (size_ > 0) {
      void* data = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data == MAP_FAILED) {
        const int error = errno;
        ::close(fd);
        throw IoError("cannot read '" + path + "': " + std::strerror(error));
      }
      data_ = static_cast<const unsigned char*>(data);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

std::string shape_text(torch::IntArrayRef shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// The module-side name of a file entry under `names`; "" when the entry is not considered.
std::string mapped_name(std::string name, const TensorNameMap& names) {
  if (!names.prefix.empty()) {
    if (name.compare(0, names.prefix.size(), names.prefix) != 0) return "";
    name.erase(0, names.prefix.size());
  }
  const std::string module_prefix = "module.";
  if (names.strip_module_prefix && name.compare(0, module_prefix.size(), module_prefix) == 0)
    name.erase(0, module_prefix.size());
  for (const auto& [from, to] : names.renames) {
    if (from.empty()) continue;
    for (std::size_t at = name.find(from); at != std::string::npos; at = name.find(from, at)) {
      name.replace(at, from.size(), to);
      at += to.size();
    }
  }
  return name;
}

}  // namespace

const torch::Tensor* TensorFile::find(const std::string& name) const {
  for (const auto& [entry, tensor] : tensors)
    if (entry == name) return &tensor;
  return nullptr;
}

TensorFile read_tensor_file(const std::string& path) {
  const MappedFile file(path);
  return build(detail::parse_tensor_file(file.data(), file.size(), path), path);
}

TensorFile read_tensor_file(const void* data, std::size_t size, const std::string& name) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  return build(detail::parse_tensor_file(bytes, size, name), name);
}

std::vector<std::string> load_tensors(torch::nn::Module& module, const TensorFile& file,
                                      const TensorNameMap& names) {
  struct Target {
    torch::Tensor tensor;
    const char* kind;
    const std::pair<std::string, torch::Tensor>* entry = nullptr;
  };
  std::map<std::string, Target> targets;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    if (item.value().defined()) targets[item.key()] = {item.value(), "parameter"};
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    if (item.value().defined()) targets[item.key()] = {item.value(), "buffer"};

  // Every check first, so that a refused file leaves the module as it was.
  for (const auto& entry : file.tensors) {
    const std::string name = mapped_name(entry.first, names);
    if (name.empty()) continue;
    if (std::any_of(names.ignored_prefixes.begin(), names.ignored_prefixes.end(),
                    [&](const std::string& p) { return name.compare(0, p.size(), p) == 0; }))
      continue;
    const auto target = targets.find(name);
    if (names.partial && (target == targets.end() || target->second.entry ||
                          target->second.tensor.sizes() != entry.second.sizes()))
      continue;
    const std::string as = name == entry.first ? "" : " (read as '" + name + "')";
    if (target == targets.end())
      throw BadData(file.path + ": tensor '" + entry.first + "'" + as +
                    " matches no parameter or buffer of the module; list its prefix among the "
                    "ignored ones if the module leaves that part out");
    Target& t = target->second;
    if (t.entry)
      throw BadData(file.path + ": tensors '" + t.entry->first + "' and '" + entry.first +
                    "' both stand for the module's " + t.kind + " '" + name + "'");
    if (t.tensor.sizes() != entry.second.sizes())
      throw BadData(file.path + ": tensor '" + entry.first + "'" + as + " has shape " +
                    shape_text(entry.second.sizes()) + ", but the module's " + t.kind + " '" +
                    name + "' has shape " + shape_text(t.tensor.sizes()));
    t.entry = &entry;
  }
  for (const auto& [name, t] : targets)
    if (!t.entry && !names.partial)
      throw BadData(file.path + ": the module's " + t.kind + " '" + name + "' (shape " +
                    shape_text(t.tensor.sizes()) + ") has no tensor in the file" +
                    (names.prefix.empty() ? "" : " under '" + names.prefix + "'"));

  torch::NoGradGuard no_grad;
  std::vector<std::string> loaded;
  for (auto& [name, t] : targets) {
    if (!t.entry) continue;
    t.tensor.copy_(t.entry->second);
    loaded.push_back(name);
  }
  return loaded;
}

}  // namespace scssl
