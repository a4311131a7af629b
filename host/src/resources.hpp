// Wall time and memory of each stage of a run. Peak memory per stage uses Linux's resettable
// high-water mark (/proc/self/clear_refs), falling back to the process peak where unavailable.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace scssl::host {

struct StageRecord {
  std::string name;
  double wall_seconds = 0;
  double peak_rss_mb = 0;  // highest resident memory while the stage ran
  double end_rss_mb = 0;
};

double current_rss_mb();
double peak_rss_mb();

// Keeps freed memory blocks of up to 1 GB in the process for the next allocation (glibc). By
// default glibc maps every block above 32 MB from the kernel and unmaps it when freed, so that
// the tensors a training step or a transformer layer allocates again and again are faulted in
// and zeroed afresh each time (docs/performance.md, "Memory reuse"). SCSSL_MALLOC=system keeps
// glibc's own policy. Call first thing in main().
void reuse_freed_memory();

class StageMeter {
 public:
  // Starts timing `name`; call finish() (or let the next begin()) close it.
  void begin(const std::string& name);
  const StageRecord& finish();
  const std::vector<StageRecord>& stages() const { return stages_; }
  // Called with the stage's name as each stage begins (the run records where it is).
  std::function<void(const std::string&)> on_begin;

 private:
  bool open_ = false;
  std::chrono::steady_clock::time_point start_;
  std::vector<StageRecord> stages_;
};

}  // namespace scssl::host
