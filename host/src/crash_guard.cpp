#include "crash_guard.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace scssl::host::crash {

namespace {

constexpr size_t kDescriptionCapacity = 1024;
constexpr size_t kPathCapacity = 4096;
constexpr size_t kRecordCapacity = 1 << 16;

// The call under way on this thread, as text ready to be written from the handler.
thread_local char t_call[kDescriptionCapacity] = "";

// The armed record: written by arm_record() under a lock, read by the handler only after a crash.
// Two buffers, swapped atomically, so the handler never sees one half-written.
struct ArmedRecord {
  char path[kPathCapacity];
  char tmp_path[kPathCapacity];
  char before[kRecordCapacity];  // the JSON up to the placeholder
  char after[kRecordCapacity];   // the JSON after it
};
ArmedRecord g_records[2];
std::atomic<ArmedRecord*> g_armed{nullptr};
std::mutex g_arming;
int g_next = 0;

void write_all(int fd, const char* text) {
  size_t left = strlen(text);
  while (left > 0) {
    const ssize_t n = write(fd, text, left);
    if (n <= 0) return;
    text += n;
    left -= static_cast<size_t>(n);
  }
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV:
      return "SIGSEGV, a segmentation fault";
    case SIGBUS:
      return "SIGBUS, a bus error";
    case SIGFPE:
      return "SIGFPE, an arithmetic error";
    case SIGILL:
      return "SIGILL, an illegal instruction";
    case SIGABRT:
      return "SIGABRT, an abort";
  }
  return "a fatal signal";
}

// Keeps the description safe inside a JSON string and a terminal line: no quotes, backslashes or
// control characters (file names are the only free text in it).
std::string json_safe(std::string text) {
  for (char& c : text)
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) c = '?';
  return text;
}

void on_fatal_signal(int sig) {
  const char* where = t_call[0] ? t_call : "the host itself (no plugin call was under way)";
  write_all(STDERR_FILENO, "scssl-host: the process crashed (");
  write_all(STDERR_FILENO, signal_name(sig));
  write_all(STDERR_FILENO, ") inside ");
  write_all(STDERR_FILENO, where);
  if (ArmedRecord* r = g_armed.load()) {
    const int fd = open(r->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      write_all(fd, r->before);
      write_all(fd, "crashed (");
      write_all(fd, signal_name(sig));
      write_all(fd, ") inside ");
      write_all(fd, where);
      write_all(fd, r->after);
      close(fd);
      if (rename(r->tmp_path, r->path) == 0) {
        write_all(STDERR_FILENO, "; recorded in ");
        write_all(STDERR_FILENO, r->path);
      }
    }
  }
  write_all(STDERR_FILENO, "\n");
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void install_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    // The handler runs on its own stack, so a stack overflow in a plugin is reported too.
    static char alternate_stack[1 << 16];
    stack_t ss{};
    ss.ss_sp = alternate_stack;
    ss.ss_size = sizeof alternate_stack;
    sigaltstack(&ss, nullptr);
    struct sigaction action {};
    action.sa_handler = on_fatal_signal;
    action.sa_flags = SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &action, nullptr);
  });
}

PluginCall::PluginCall(const std::string& label, const std::string& path, const char* function)
    : previous_(t_call) {
  const std::string text = json_safe(std::string(function) + "() of " + label + " (" + path + ")");
  snprintf(t_call, sizeof t_call, "%s", text.c_str());
}

PluginCall::~PluginCall() { snprintf(t_call, sizeof t_call, "%s", previous_.c_str()); }

void arm_record(const std::string& path, const std::string& json) {
  const size_t at = json.find(kPlaceholder);
  if (at == std::string::npos || path.size() + 16 >= kPathCapacity ||
      json.size() >= kRecordCapacity)
    return;  // nothing sensible to write; the stderr line still names the plugin
  std::lock_guard<std::mutex> lock(g_arming);
  ArmedRecord& r = g_records[g_next];
  g_next = 1 - g_next;
  snprintf(r.path, sizeof r.path, "%s", path.c_str());
  snprintf(r.tmp_path, sizeof r.tmp_path, "%s.crash", path.c_str());
  snprintf(r.before, sizeof r.before, "%s", json.substr(0, at).c_str());
  snprintf(r.after, sizeof r.after, "%s", json.substr(at + strlen(kPlaceholder)).c_str());
  g_armed.store(&r);
}

void disarm_record() { g_armed.store(nullptr); }

}  // namespace scssl::host::crash
