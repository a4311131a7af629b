// libFuzzer target for the checkpoint reader's parser (docs/method-spec.md §21): whatever the
// bytes, parse_tensor_file returns records that keep the promises the torch side relies on, or
// throws one scssl::BadData; never a crash, a leak, undefined behaviour or another exception.
// Built and run by tools/fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "scssl/params.hpp"
#include "tensor_file_parse.hpp"

namespace {

void put(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>(i < 8 ? value >> (8 * i) : 0);
}

// A zip of stored entries; the CRCs are left 0 (this build does not check them).
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    std::string common;
    put(common, 0, 2 + 4 + 4);  // method, time, date, CRC
    put(common, data.size(), 4);
    put(common, data.size(), 4);
    put(common, name.size(), 2);
    put(common, 0, 2);
    put(central, 0x02014b50, 4);
    put(central, 20, 6);  // versions, flags
    central += common;
    put(central, 0, 10);  // comment length, disk, attributes
    put(central, out.size(), 4);
    central += name;
    put(out, 0x04034b50, 4);
    put(out, 20, 4);  // version, flags
    out += common + name + data;
  }
  const std::size_t cd_offset = out.size();
  out += central;
  put(out, 0x06054b50, 4);
  put(out, 0, 4);
  put(out, entries.size(), 2);
  put(out, entries.size(), 2);
  put(out, central.size(), 4);
  put(out, cd_offset, 4);
  put(out, 0, 2);
  return out;
}

// Stops the fuzzer (a crash it reports) when a promise of tensor_file_parse.hpp is broken.
void require(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const unsigned char* bytes = data;
  std::string wrapped;
  // An input that starts like a pickle (PROTO) becomes the data.pkl of an archive with storages
  // "0" to "3" of 64 bytes, so that mutations reach the pickle interpreter without having to
  // keep a zip archive intact.
  if (size > 0 && data[0] == 0x80) {
    std::vector<std::pair<std::string, std::string>> entries = {
        {"archive/data.pkl", std::string(reinterpret_cast<const char*>(data), size)}};
    for (int i = 0; i < 4; ++i)
      entries.emplace_back("archive/data/" + std::to_string(i), std::string(64, char(i + 1)));
    wrapped = make_zip(entries);
    bytes = reinterpret_cast<const unsigned char*>(wrapped.data());
    size = wrapped.size();
  }
  try {
    const scssl::detail::ParsedTensorFile parsed =
        scssl::detail::parse_tensor_file(bytes, size, "fuzz input");
    int64_t total = 0;
    volatile unsigned char sink = 0;
    for (const scssl::detail::TensorRecord& t : parsed.tensors) {
      require(t.storage < parsed.storages.size());
      const scssl::detail::StorageRecord& s = parsed.storages[t.storage];
      require(t.shape.size() == t.strides.size() && t.offset >= 0);
      int64_t numel = 1, last = t.offset;
      for (std::size_t i = 0; i < t.shape.size(); ++i) {
        require(t.shape[i] >= 0 && t.strides[i] >= 0);
        require(!__builtin_mul_overflow(numel, t.shape[i], &numel));
      }
      total += numel;
      require(total <= scssl::detail::tensor_element_limit(size));
      if (numel == 0) continue;
      for (std::size_t i = 0; i < t.shape.size(); ++i) last += (t.shape[i] - 1) * t.strides[i];
      require(last < s.numel);
      // The first and last byte the torch side will read: AddressSanitizer checks them.
      const std::size_t width = scssl::detail::element_size(s.type);
      sink = s.data[static_cast<std::size_t>(t.offset) * width];
      sink = s.data[static_cast<std::size_t>(last) * width + width - 1];
      sink = s.data[static_cast<std::size_t>(s.numel) * width - 1];
    }
    (void)sink;
  } catch (const scssl::BadData&) {
  }
  return 0;
}
