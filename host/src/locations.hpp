// Where scssl-host and scssl-sweep find things: plugins (every --plugins folder, then the folders
// of $SCSSL_PLUGIN_PATH (':'-separated), then the build or install folder next to the program)
// and each other (next to the running program, then on PATH).
#pragma once

#include <string>
#include <vector>

#include "registry.hpp"

namespace scssl::host {

// The folders in that order, each once; `defaults` false leaves out the one next to the program.
std::vector<std::string> plugin_folders(const std::vector<std::string>& given, bool defaults);

// Loads every folder into `registry`, warning once per refused file.
void load_plugins(Registry& registry, const std::vector<std::string>& folders);

// The executable `name` in the running program's folder, else the first on PATH; "" when neither.
std::string find_program(const std::string& name);

}  // namespace scssl::host
