// run.isolate: the pipeline of `run` or `evaluate` in a child process, so that a crash or an
// out-of-memory kill inside it ends one child, and the parent, still alive, records how it ended
// (docs/reliability.md). The child is this same program started again with the same words; an
// environment variable tells it that it is the child.
#pragma once

#include <string>
#include <vector>

namespace scssl::host::isolation {

// Whether this process is the child of an isolated run.
bool is_child();

struct ChildEnd {
  int exit_code = 0;  // when it exited
  int signal = 0;     // when a signal ended it (0 otherwise)
  double peak_rss_mb = 0;
};

// Starts this program (/proc/self/exe) with `args` (the words after the program name) marked as
// the child, passes SIGINT, SIGTERM and SIGHUP on to it, and waits for it to end. IoError when it
// cannot be started.
ChildEnd run_child(const std::vector<std::string>& args);

// "SIGKILL", "SIGSEGV", ... or "signal N".
std::string signal_name(int sig);

}  // namespace scssl::host::isolation
