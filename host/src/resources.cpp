#include "resources.hpp"

#include <sys/resource.h>
#if __has_include(<malloc.h>)
#include <malloc.h>
#endif

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace scssl::host {

namespace {

// A "Vm...:  1234 kB" line of /proc/self/status, in MB; -1 if unavailable.
double status_field_mb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  }
  return -1;
}

bool reset_peak() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";  // resets VmHWM to the current RSS (Linux >= 4.0)
  return static_cast<bool>(out.flush());
}

}  // namespace

double current_rss_mb() { return status_field_mb("VmRSS"); }

void reuse_freed_memory() {
#if defined(__GLIBC__) && defined(M_MMAP_THRESHOLD)
  const char* policy = std::getenv("SCSSL_MALLOC");
  if (policy && std::strcmp(policy, "system") == 0) return;
  constexpr int kBlock = 1 << 30;
  // Older glibc refuses thresholds above 32 MB; there no block is mapped on its own.
  if (mallopt(M_MMAP_THRESHOLD, kBlock) == 0) mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, kBlock);
#endif
}

double peak_rss_mb() {
  const double hwm = status_field_mb("VmHWM");
  if (hwm >= 0) return hwm;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

void StageMeter::begin(const std::string& name) {
  if (open_) finish();
  reset_peak();
  stages_.push_back({name});
  start_ = std::chrono::steady_clock::now();
  open_ = true;
  if (on_begin) on_begin(name);
}

const StageRecord& StageMeter::finish() {
  static const StageRecord none;
  if (stages_.empty()) return none;
  StageRecord& s = stages_.back();
  if (open_) {
    s.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    s.peak_rss_mb = peak_rss_mb();
    s.end_rss_mb = current_rss_mb();
    open_ = false;
  }
  return s;
}

}  // namespace scssl::host
