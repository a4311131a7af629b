#include "plugin_commands.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "adapters.hpp"

namespace fs = std::filesystem;

namespace scssl::host {

std::string requirement_names(uint64_t bits) {
  std::string out;
  auto add = [&](uint64_t bit, const char* name) {
    if (bits & bit) out += (out.empty() ? "" : ", ") + std::string(name);
  };
  add(SCSSL_NEEDS_BATCH, "batch labels");
  add(SCSSL_NEEDS_LABELS, "cell-type labels");
  add(SCSSL_NEEDS_SECOND_MODALITY, "a second modality");
  add(SCSSL_NEEDS_RAW_COUNTS, "raw counts");
  add(SCSSL_USES_AUGMENTATIONS, "augmentations (uses the configured pipeline)");
  add(SCSSL_NEEDS_UNINTEGRATED, "the PCA of the unintegrated data");
  add(SCSSL_NEEDS_QUERY_BATCHES, "held-out query batches (evaluation.query_batches)");
  return out.empty() ? "nothing special" : out;
}

// Plugins by kind, each with the number of the folder it came from ([1] is the first folder).
int cmd_list(const Registry& registry) {
  const auto& folders = registry.folders();
  std::cout << "plugin folders:" << (folders.empty() ? " (none)" : "") << "\n";
  for (size_t i = 0; i < folders.size(); ++i)
    std::cout << "  [" << i + 1 << "] " << folders[i] << "\n";
  auto folder_number = [&](const LoadedPlugin& p) {
    auto it = std::find(folders.begin(), folders.end(), p.folder);
    return it == folders.end() ? std::string("[-]")
                               : "[" + std::to_string(it - folders.begin() + 1) + "]";
  };
  for (scssl_kind kind :
       {SCSSL_KIND_DATASET, SCSSL_KIND_AUGMENTATION, SCSSL_KIND_METHOD, SCSSL_KIND_EVALUATOR}) {
    auto plugins = registry.plugins(kind);
    std::cout << kind_name(kind) << "s:" << (plugins.empty() ? " (none)" : "") << "\n";
    for (const auto* p : plugins)
      std::printf("  %-20s %-8s %-4s %s\n", p->name().c_str(), p->meta.version.c_str(),
                  folder_number(*p).c_str(), p->meta.summary.c_str());
    std::fflush(stdout);
  }
  if (!registry.refusals().empty()) {
    std::cout << "refused:\n";
    for (const auto& r : registry.refusals()) std::cout << "  " << r << "\n";
  }
  return 0;
}

int cmd_describe(const Registry& registry, const std::string& name) {
  const LoadedPlugin* p = registry.find(name);
  if (p == nullptr) throw InvalidArgument("no plugin named '" + name + "' (see `scssl-host list`)");
  const PluginMeta& m = p->meta;
  std::cout << p->name() << " (" << kind_name(p->kind()) << " plugin, version " << m.version
            << ")\n  " << m.summary << "\n  file: " << p->path
            << "\n  built with: " << describe_fingerprint(m.torch_version, m.cxx_stdlib, m.compiler)
            << ", ABI " << m.abi_version << "." << m.abi_minor << "\n";
  if (p->kind() == SCSSL_KIND_METHOD || p->kind() == SCSSL_KIND_EVALUATOR)
    std::cout << "  needs: " << requirement_names(m.requirements) << "\n";
  if (p->kind() == SCSSL_KIND_EVALUATOR) {
    std::cout << "metrics:\n";
    const char* groups[] = {"", "bio", "batch", "annotation", "modality", "other"};
    for (const MetricRule& r : m.metrics)
      std::printf("  %-22s %-10s %-7s %s\n", r.name.c_str(), groups[r.group],
                  r.higher_is_better ? "higher" : "lower", r.help.c_str());
  }
  std::cout << "parameters:" << (m.params.empty() ? " (none)" : "") << "\n";
  for (const ParamRule& r : m.params) {
    const std::string shown = r.has(SCSSL_PARAM_REQUIRED) ? "(required)"
                              : r.default_text.empty()    ? "\"\""
                                                          : r.default_text;
    const std::string constraint = r.constraint_text();
    std::printf("  %-20s %-12s default %-12s %s%s\n", r.name.c_str(), param_type_name(r.type),
                shown.c_str(), r.help.c_str(),
                constraint.empty() ? "" : (" [" + constraint + "]").c_str());
  }
  return 0;
}

// The note is judged here without running the plugin; its code then runs in a child process, so
// that a crash is reported instead of killing the validator.
int cmd_validate(const std::string& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw InvalidArgument("'" + file + "' does not exist");
  PluginMeta meta;
  if (std::string reason = check_plugin_file(file, meta); !reason.empty()) {
    std::cout << "REFUSED " << file << ": " << reason << "\n";
    return 1;
  }
  std::cout << "plugin " << meta.name << " " << meta.version << " ("
            << kind_name(static_cast<scssl_kind>(meta.kind)) << "), ABI " << meta.abi_version << "."
            << meta.abi_minor << ", " << meta.params.size()
            << " parameter(s) with valid defaults; note checked without running the plugin\n";
  const std::string expected =
      "libscssl-" + std::string(kind_name(static_cast<scssl_kind>(meta.kind))) + "-" + meta.name;
  if (fs::path(file).stem().string() != expected)
    std::cout << "note: conventional file name would be " << expected << ".so\n";
  std::cout.flush();
  const pid_t child = fork();
  if (child < 0) throw Error(SCSSL_ERR_INTERNAL, "cannot start a validation process");
  if (child == 0) {
    int code = 1;
    try {
      Registry registry;
      registry.add_file(file);
      const LoadedPlugin& p = *registry.all().front();
      p.code();  // loads the library and compares its description with the note
      HostServices services;
      ParamSet params = p.default_params();
      bool needs_settings = false;
      for (const ParamRule& r : meta.params) needs_settings |= r.has(SCSSL_PARAM_REQUIRED);
      // Instances are created and destroyed once with the defaults, unless a parameter has no
      // default; data sets need real input.
      if (!needs_settings) {
        switch (p.kind()) {
          case SCSSL_KIND_AUGMENTATION: {
            Augmentation a(p, params, services);
            break;
          }
          case SCSSL_KIND_METHOD: {
            Method m(p, params, services);
            break;
          }
          case SCSSL_KIND_EVALUATOR: {
            Evaluator e(p, params, services);
            break;
          }
          default:
            break;
        }
      }
      std::cout << "OK " << file << "\n";
      code = 0;
    } catch (const std::exception& e) {
      std::cout << "FAILED " << file << ": " << e.what() << "\n";
    }
    std::cout.flush();
    _exit(code);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (WIFSIGNALED(status)) {
    std::cout << "FAILED " << file << ": the plugin crashed the validation process (signal "
              << WTERMSIG(status) << ")\n";
    return 1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace scssl::host
