#include "crash_guard.hpp"

#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <ucontext.h>
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
// The untrusted file being read on this thread ("" for none).
thread_local char t_reading[kPathCapacity] = "";

// The code of the HDF5 library in memory, found once at installation, so that the handler can
// tell a crash inside it with comparisons alone.
struct CodeRange {
  uintptr_t begin = 0, end = 0;
};
constexpr int kMaxRanges = 8;
CodeRange g_hdf5_code[kMaxRanges];
int g_hdf5_ranges = 0;

int note_hdf5_code(dl_phdr_info* info, size_t, void*) {
  if (!info->dlpi_name || !strstr(info->dlpi_name, "libhdf5")) return 0;
  for (int i = 0; i < info->dlpi_phnum && g_hdf5_ranges < kMaxRanges; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    const uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
    g_hdf5_code[g_hdf5_ranges++] = {begin, begin + ph.p_memsz};
  }
  return 0;
}

// The faulting instruction's address, where this platform's context says it.
uintptr_t faulting_pc(const void* context) {
  const auto* uc = static_cast<const ucontext_t*>(context);
#if defined(__x86_64__)
  return static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
#elif defined(__aarch64__)
  return static_cast<uintptr_t>(uc->uc_mcontext.pc);
#else
  (void)uc;
  return 0;
#endif
}

bool in_hdf5_code(uintptr_t pc) {
  for (int i = 0; i < g_hdf5_ranges; ++i)
    if (pc >= g_hdf5_code[i].begin && pc < g_hdf5_code[i].end) return true;
  return false;
}

// Whether the crash is HDF5's: the faulting instruction, or one of the two calls above it (HDF5
// copies with the C library's memcpy), lies in HDF5's code. backtrace() was called once when the
// handler was installed, so here it only walks the stack.
bool inside_hdf5(uintptr_t pc) {
  if (in_hdf5_code(pc)) return true;
  void* frames[32];
  const int n = backtrace(frames, 32);
  for (int i = 0; i < n; ++i)
    if (reinterpret_cast<uintptr_t>(frames[i]) == pc) {
      for (int j = i + 1; j < n && j <= i + 2; ++j)
        if (in_hdf5_code(reinterpret_cast<uintptr_t>(frames[j]))) return true;
      break;
    }
  return false;
}

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

// The description of the crash, in pieces written one after the other to `fd`.
void describe(int fd, int sig, bool in_hdf5) {
  const char* where = t_call[0] ? t_call : "the host itself (no plugin call was under way)";
  write_all(fd, in_hdf5 ? "the HDF5 library crashed (" : "crashed (");
  write_all(fd, signal_name(sig));
  write_all(fd, ")");
  if (t_reading[0]) {
    write_all(fd, " while reading ");
    write_all(fd, t_reading);
    if (in_hdf5)
      write_all(fd,
                " (HDF5 1.10 has known crashes on corrupt files: the file is probably corrupt)");
  }
  write_all(fd, " inside ");
  write_all(fd, where);
}

void on_fatal_signal(int sig, siginfo_t*, void* context) {
  const bool in_hdf5 = inside_hdf5(faulting_pc(context));
  write_all(STDERR_FILENO, "scssl-host: ");
  if (!in_hdf5) write_all(STDERR_FILENO, "the process ");
  describe(STDERR_FILENO, sig, in_hdf5);
  if (ArmedRecord* r = g_armed.load()) {
    const int fd = open(r->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      write_all(fd, r->before);
      describe(fd, sig, in_hdf5);
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
    dl_iterate_phdr(note_hdf5_code, nullptr);
    void* warm_up[1];
    backtrace(warm_up, 1);  // loads the unwinder now, not inside the handler
    struct sigaction action {};
    action.sa_sigaction = on_fatal_signal;
    action.sa_flags = SA_ONSTACK | SA_SIGINFO;
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

ReadingFile::ReadingFile(const std::string& path) : previous_(t_reading) {
  snprintf(t_reading, sizeof t_reading, "%s", json_safe(path).c_str());
}

ReadingFile::~ReadingFile() { snprintf(t_reading, sizeof t_reading, "%s", previous_.c_str()); }

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
