#include "blas_kernels.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace scssl::host {

namespace {

// Set in the restarted process so the log can say the kernels were our choice.
constexpr const char* kRestartMarker = "SCSSL_BLAS_CORETYPE_CHOSEN";

// OpenBLAS's own name for the kernels it loaded, or nullptr when the BLAS is something else.
const char* openblas_corename() {
  using Corename = char* (*)();
  auto corename = reinterpret_cast<Corename>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return corename ? corename() : nullptr;
}

using GetThreads = int (*)();
using SetThreads = void (*)(int);

}  // namespace

BlasThreads::BlasThreads(int (*choose)(int)) {
  auto get = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  set_threads_ = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (!get || !set_threads_) return;
  const int threads = get(), wanted = std::max(1, choose(threads));
  if (wanted == threads) return;
  saved_ = threads;
  set_threads_(wanted);
}

BlasThreads::~BlasThreads() {
  if (saved_) set_threads_(saved_);
}

void restart_with_native_blas_kernels(char** argv) {
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
  if (std::getenv("OPENBLAS_CORETYPE")) return;
  const char* core = openblas_corename();
  if (!core || strcasecmp(core, "prescott") != 0) return;
  __builtin_cpu_init();
  const char* better = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    better = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    better = "Haswell";
  if (!better) return;
  setenv("OPENBLAS_CORETYPE", better, 1);
  setenv(kRestartMarker, "1", 1);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): carry on with the slower kernels rather than not run at all.
  unsetenv("OPENBLAS_CORETYPE");
  unsetenv(kRestartMarker);
#else
  (void)argv;
#endif
}

std::string blas_kernel_note() {
  const char* core = openblas_corename();
  if (!core) return {};
  std::string note = std::string("OpenBLAS kernels: ") + core;
  if (std::getenv(kRestartMarker))
    note +=
        " (chosen by scssl-host: OpenBLAS did not recognise this CPU and fell back to Prescott)";
  return note;
}

}  // namespace scssl::host
