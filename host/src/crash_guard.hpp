// What is left behind when a plugin crashes the process (a segfault inside evaluate(), say): one
// line on stderr naming the plugin, the function and the signal, and a run.json that says the run
// failed and why, instead of one that still says "running". The handler uses only
// async-signal-safe calls, so everything it writes is prepared beforehand.
#pragma once

#include <string>

namespace scssl::host::crash {

// Installs the handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT (once per process). After
// writing, it re-raises the signal, so the exit status still says how the process died.
void install_handlers();

// Marks a call into a plugin on this thread for as long as it lives: "<function>() of <label>
// (<file>)". Calls may nest (fit() calls augment(), which calls an augmentation).
class PluginCall {
 public:
  PluginCall(const std::string& label, const std::string& path, const char* function);
  ~PluginCall();
  PluginCall(const PluginCall&) = delete;
  PluginCall& operator=(const PluginCall&) = delete;

 private:
  std::string previous_;
};

// Marks the reading of an untrusted file on this thread for as long as it lives, so that a crash
// meanwhile is described as one while reading it, and one inside the HDF5 library as such (HDF5
// 1.10 crashes on some corrupt files; docs/reliability.md).
class ReadingFile {
 public:
  explicit ReadingFile(const std::string& path);
  ~ReadingFile();
  ReadingFile(const ReadingFile&) = delete;
  ReadingFile& operator=(const ReadingFile&) = delete;

 private:
  std::string previous_;
};

// The text that stands for the crash description inside an armed record.
inline constexpr const char* kPlaceholder = "@@scssl-crash-description@@";

// The run.json to write at `path` if the process crashes: `json` holds kPlaceholder (once, inside
// a JSON string) where the description of the crash goes. Re-arming replaces the record.
void arm_record(const std::string& path, const std::string& json);
void disarm_record();

}  // namespace scssl::host::crash
