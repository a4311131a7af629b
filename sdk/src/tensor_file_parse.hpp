// The torch-free half of the checkpoint reader (docs/method-spec.md §21): the zip central
// directory, the pickle subset of state dicts and the safetensors header, turned into plain
// records that point into the caller's bytes. No LibTorch here, so that the fuzz target
// (tests/fuzz) links only this file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace scssl::detail {

enum class ElementType : uint8_t {
  kFloat16,
  kBFloat16,
  kFloat32,
  kFloat64,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt8,
  kBool,
};

std::size_t element_size(ElementType type);
// "float16", "bfloat16", ..., "bool".
const char* element_type_name(ElementType type);

// The bytes of one storage, little-endian, possibly unaligned, inside the parsed buffer: `numel`
// elements of `type`.
struct StorageRecord {
  ElementType type = ElementType::kFloat32;
  const unsigned char* data = nullptr;
  int64_t numel = 0;
};

// One tensor as a strided view of a storage (sizes, strides and offset in elements). The parser
// has checked that every element of the view lies inside the storage, that sizes and strides are
// not negative, and that all views together have at most tensor_element_limit(file size)
// elements.
struct TensorRecord {
  std::string name;
  std::size_t storage = 0;  // index into ParsedTensorFile::storages
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;
};

struct ParsedTensorFile {
  std::vector<StorageRecord> storages;
  std::vector<TensorRecord> tensors;  // in the order the file holds them
  std::vector<std::string> skipped;   // dotted names of the entries that are not tensors
};

// Parses a torch.save zip archive or a safetensors file held in `data`. Every fault is a
// scssl::BadData whose message starts with "<name>: ".
ParsedTensorFile parse_tensor_file(const unsigned char* data, std::size_t size,
                                   const std::string& name);

// The most elements the tensors of a file of `file_size` bytes may have together: one per byte
// of the file plus 16 Mi (overlapping and broadcast views), so that a hostile file cannot make
// the reader allocate much more memory than the file holds.
int64_t tensor_element_limit(std::size_t file_size);

// The zip CRC-32 (polynomial 0xEDB88320) of `size` bytes, continuing from `crc`.
uint32_t crc32(const unsigned char* data, std::size_t size, uint32_t crc = 0);

}  // namespace scssl::detail
