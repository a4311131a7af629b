// scssl-plugin-note: writes a plugin's self-description as the text that scssl_add_plugin() then
// stores in the library's SCSSL_NOTE_SECTION (scsslPlugin.cmake), so that the host can check the
// plugin without running its code. This tool does run the plugin's code (dlopen + entry point):
// it is part of the plugin's own build. It reads faithfully and judges nothing; the host judges.
//
//   scssl-plugin-note PLUGIN.so NOTE.txt
#include <dlfcn.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "scssl/plugin_meta.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: scssl-plugin-note PLUGIN.so NOTE.txt\n";
    return 2;
  }
  const std::string plugin = argv[1];
  // Lazy binding: only the entry point is called, and the host's own load (immediate binding)
  // is where a missing symbol is reported.
  void* library = dlopen(plugin.c_str(), RTLD_LAZY | RTLD_LOCAL);
  if (library == nullptr) {
    std::cerr << "scssl-plugin-note: " << plugin << " cannot be loaded: " << dlerror() << "\n";
    return 1;
  }
  auto entry = reinterpret_cast<scssl_entry_point_fn>(dlsym(library, SCSSL_ENTRY_POINT));
  if (entry == nullptr) {
    std::cerr << "scssl-plugin-note: " << plugin << " has no entry point '" SCSSL_ENTRY_POINT
              << "'; is it built with SCSSL_PLUGIN?\n";
    return 1;
  }
  std::string note;
  try {
    note = scssl::meta_to_note(scssl::meta_from_info(entry()));
  } catch (const std::exception& e) {
    std::cerr << "scssl-plugin-note: " << plugin << ": " << e.what() << "\n";
    return 1;
  }
  std::ofstream out(argv[2], std::ios::binary | std::ios::trunc);
  out << note;
  if (!out.flush()) {
    std::cerr << "scssl-plugin-note: cannot write " << argv[2] << "\n";
    return 1;
  }
  return 0;
}
