// The plugin commands of scssl-host: list, describe and validate. list and describe read plugin
// notes only; validate judges a file's note without running it, then loads it in a child process.
#pragma once

#include <string>

#include "registry.hpp"

namespace scssl::host {

// "batch labels, raw counts", or "nothing special".
std::string requirement_names(uint64_t bits);

int cmd_list(const Registry& registry);
int cmd_describe(const Registry& registry, const std::string& name);
int cmd_validate(const std::string& file);

}  // namespace scssl::host
