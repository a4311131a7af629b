#include "plugin_file.hpp"

#include <elf.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "scssl/abi.h"
#include "scssl/params.hpp"

namespace scssl::host {

namespace {

// Reads [offset, offset + size) of the file, or returns false when it lies outside the file.
bool read_at(std::ifstream& in, uint64_t file_size, uint64_t offset, uint64_t size, void* out) {
  if (offset > file_size || size > file_size - offset) return false;
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(static_cast<char*>(out), static_cast<std::streamsize>(size));
  return static_cast<bool>(in);
}

// The bytes of one section, or false when its header points outside the file.
bool section_bytes(std::ifstream& in, uint64_t file_size, const Elf64_Shdr& s,
                   std::vector<char>& out) {
  if (s.sh_type == SHT_NOBITS) return false;
  out.resize(s.sh_size);
  return read_at(in, file_size, s.sh_offset, s.sh_size, out.data());
}

}  // namespace

PluginFileFacts inspect_plugin_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError("cannot be opened for reading");
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  PluginFileFacts facts;

  Elf64_Ehdr header{};
  if (!read_at(in, file_size, 0, sizeof header, &header) ||
      std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0)
    return facts;
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_ident[EI_DATA] != ELFDATA2LSB) {
    facts.problem = "is an ELF file for another machine (not 64-bit little-endian)";
    return facts;
  }
  facts.elf = true;
  facts.shared_library = header.e_type == ET_DYN;
  if (header.e_shentsize != sizeof(Elf64_Shdr) || header.e_shnum == 0 ||
      header.e_shstrndx >= header.e_shnum) {
    facts.problem = "is an ELF file without a readable section table";
    return facts;
  }
  std::vector<Elf64_Shdr> sections(header.e_shnum);
  std::vector<char> names;
  if (!read_at(in, file_size, header.e_shoff, sizeof(Elf64_Shdr) * header.e_shnum,
               sections.data()) ||
      !section_bytes(in, file_size, sections[header.e_shstrndx], names)) {
    facts.problem = "is a truncated or damaged ELF file";
    return facts;
  }
  auto name_of = [&](const Elf64_Shdr& s) -> std::string {
    if (s.sh_name >= names.size()) return "";
    return std::string(names.data() + s.sh_name,
                       strnlen(names.data() + s.sh_name, names.size() - s.sh_name));
  };
  for (const Elf64_Shdr& s : sections) {
    if (name_of(s) == SCSSL_NOTE_SECTION) {
      std::vector<char> bytes;
      if (!section_bytes(in, file_size, s, bytes)) {
        facts.problem = "has a plugin note that lies outside the file";
        return facts;
      }
      facts.has_note = true;
      facts.note.assign(bytes.begin(), bytes.end());
    }
    if (s.sh_type == SHT_DYNSYM && s.sh_link < sections.size() &&
        s.sh_entsize == sizeof(Elf64_Sym)) {
      std::vector<char> symbols, strings;
      if (!section_bytes(in, file_size, s, symbols) ||
          !section_bytes(in, file_size, sections[s.sh_link], strings))
        continue;
      for (size_t off = 0; off + sizeof(Elf64_Sym) <= symbols.size(); off += sizeof(Elf64_Sym)) {
        Elf64_Sym sym;
        std::memcpy(&sym, symbols.data() + off, sizeof sym);
        if (sym.st_shndx == SHN_UNDEF || sym.st_name >= strings.size()) continue;
        if (std::strncmp(strings.data() + sym.st_name, SCSSL_ENTRY_POINT,
                         strings.size() - sym.st_name) == 0)
          facts.exports_entry = true;
      }
    }
  }
  return facts;
}

}  // namespace scssl::host
