#include "isolation.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "scssl/params.hpp"

extern char** environ;

namespace scssl::host::isolation {

namespace {

constexpr const char* kChildVariable = "SCSSL_ISOLATED_CHILD";

std::atomic<pid_t> g_child{0};

void pass_on(int sig) {
  if (const pid_t child = g_child.load(); child > 0) kill(child, sig);
}

}  // namespace

bool is_child() { return std::getenv(kChildVariable) != nullptr; }

std::string signal_name(int sig) {
  switch (sig) {
    case SIGKILL:
      return "SIGKILL";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGILL:
      return "SIGILL";
    case SIGABRT:
      return "SIGABRT";
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    case SIGXCPU:
      return "SIGXCPU";
  }
  return "signal " + std::to_string(sig);
}

ChildEnd run_child(const std::vector<std::string>& args) {
  std::vector<std::string> words = {"scssl-host"};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  std::string marker = std::string(kChildVariable) + "=1";
  std::vector<char*> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  env.push_back(marker.data());
  env.push_back(nullptr);

  std::cout.flush();
  struct sigaction forward {}, saved[3];
  forward.sa_handler = pass_on;
  sigemptyset(&forward.sa_mask);
  const int passed[3] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; ++i) sigaction(passed[i], &forward, &saved[i]);
  pid_t pid = 0;
  const int failed = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), env.data());
  if (failed) {
    for (int i = 0; i < 3; ++i) sigaction(passed[i], &saved[i], nullptr);
    throw IoError(std::string("cannot start the child process of an isolated run: ") +
                  std::strerror(failed));
  }
  g_child.store(pid);
  int status = 0;
  rusage usage{};
  while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  g_child.store(0);
  for (int i = 0; i < 3; ++i) sigaction(passed[i], &saved[i], nullptr);
  ChildEnd end;
  end.peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;
  if (WIFSIGNALED(status))
    end.signal = WTERMSIG(status);
  else
    end.exit_code = WEXITSTATUS(status);
  return end;
}

}  // namespace scssl::host::isolation
