// A plugin's self-description in owned form, and its text form: the plugin note that
// `scssl-plugin-note` writes into the library's SCSSL_NOTE_SECTION at build time and that the host
// reads without running the plugin's code (docs/plugin-author-guide.md, "The plugin note").
// No torch here: the note tool and the host's registry read it without LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "scssl/abi.h"
#include "scssl/params.hpp"

namespace scssl {

struct MetricRule {
  std::string name;
  int32_t group = 0;
  bool higher_is_better = true;
  std::string help;
};

struct PluginMeta {
  uint32_t abi_version = 0;
  uint32_t abi_minor = 0;
  int32_t kind = 0;
  std::string name, version, summary;
  std::string torch_version, cxx_stdlib, compiler;  // the build fingerprint
  uint64_t requirements = 0;
  std::vector<ParamRule> params;
  std::vector<MetricRule> metrics;
  // sizeof() of the structs as the plugin was compiled: info, kind table, param spec, metric spec.
  uint32_t info_size = 0, table_size = 0, param_spec_size = 0, metric_spec_size = 0;
};

// Reads a plugin's C description (of any ABI-2 minor version) without judging it. Throws
// std::invalid_argument when it cannot even be read (a null pointer where an array must be).
PluginMeta meta_from_info(const scssl_plugin_info* info);

// The note's text: one "key value" line per field, tabs between the columns of param and metric
// lines; backslash escapes for tab, newline and backslash.
std::string meta_to_note(const PluginMeta& meta);
// The inverse; throws std::invalid_argument naming the first line it cannot read.
PluginMeta meta_from_note(const std::string& text);

// This build's fingerprint (the host's, or the plugin's when compiled into it).
struct BuildFingerprint {
  std::string torch_version, cxx_stdlib, compiler;
};
// "LibTorch 1.13.0, libstdc++ cxx11-abi, gcc 12.2.0" (or "no LibTorch, no C++ library" for C).
std::string describe_fingerprint(const std::string& torch_version, const std::string& cxx_stdlib,
                                 const std::string& compiler);

// The first problem of a description ("" when none), checked by the host against its own ABI and
// fingerprint before the plugin is loaded: version, layout, fingerprint, kind, name, schema,
// metrics. One sentence, naming both sides where two builds disagree.
std::string meta_problem(const PluginMeta& meta, const BuildFingerprint& host);

const char* kind_name(scssl_kind kind);  // "dataset", "augmentation", "method", "evaluator"

}  // namespace scssl
