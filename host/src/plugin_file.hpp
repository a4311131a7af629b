// What a plugin file is, read from its bytes alone (no dlopen, none of its code runs): whether it
// is an ELF shared library, its plugin note (SCSSL_NOTE_SECTION) and whether it exports the entry
// point. The registry judges a plugin on this before loading it.
#pragma once

#include <string>

namespace scssl::host {

struct PluginFileFacts {
  bool elf = false;             // starts with an ELF header of this machine's class and byte order
  bool shared_library = false;  // ELF type ET_DYN
  bool has_note = false;
  std::string note;            // the note's text when has_note
  bool exports_entry = false;  // the dynamic symbol table defines SCSSL_ENTRY_POINT
  std::string problem;         // why the ELF could not be read ("" when it could)
};

// Throws IoError when the file cannot be opened.
PluginFileFacts inspect_plugin_file(const std::string& path);

}  // namespace scssl::host
