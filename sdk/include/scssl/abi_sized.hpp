// Reading and writing the size-prefixed structs of scssl/abi.h from C++ (host and SDK alike).
// A struct written by an older or newer build is copied into the reader's own layout: fields the
// writer did not have read as zero, fields the reader does not know are ignored.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "scssl/abi.h"

namespace scssl {

// A zeroed struct of this build's layout, with its struct_size set.
template <class T>
T make_sized() {
  T value{};
  value.struct_size = static_cast<uint32_t>(sizeof(T));
  return value;
}

// A copy of *p in this build's layout; struct_size keeps what the writer declared.
template <class T>
T read_sized(const T* p) {
  T out{};
  if (p == nullptr) return out;
  const uint32_t declared = p->struct_size;
  std::memcpy(&out, p, std::min<size_t>(declared, sizeof(T)));
  out.struct_size = declared;
  return out;
}

// Element i of an array of sized structs: the stride is the first element's struct_size.
template <class T>
T read_sized_at(const T* base, int64_t i, const char* what) {
  const uint32_t stride = base[0].struct_size;
  if (stride < sizeof(uint32_t))
    throw std::invalid_argument(std::string(what) + " has an element size of " +
                                std::to_string(stride) + " bytes, which no scssl SDK writes");
  const T* element = reinterpret_cast<const T*>(reinterpret_cast<const char*>(base) + i * stride);
  if (element->struct_size != stride)
    throw std::invalid_argument(std::string(what) + " mixes elements of " + std::to_string(stride) +
                                " and " + std::to_string(element->struct_size) + " bytes");
  return read_sized(element);
}

// An array of sized structs in this build's layout, as a C view (stride = sizeof(T)).
template <class T>
void mark_sized(T* items, size_t count) {
  for (size_t i = 0; i < count; ++i) items[i].struct_size = static_cast<uint32_t>(sizeof(T));
}

}  // namespace scssl
