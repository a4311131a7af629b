// OpenBLAS picks its kernels once, when the library loads, from the CPU it recognises. Debian 12's
// OpenBLAS 0.3.21 does not recognise some newer Xeons (seen on Sapphire Rapids under a hypervisor)
// and falls back to its SSE3 "Prescott" kernels, which run training and the exact distance passes
// about 1.5-2x slower than the AVX2/AVX-512 kernels the CPU can run.
#pragma once

#include <string>

namespace scssl::host {

// Call first thing in main(). If the loaded BLAS is OpenBLAS running its Prescott fallback on a CPU
// with AVX2+FMA (or AVX-512), restarts this program (same arguments) with OPENBLAS_CORETYPE set to
// the matching kernel family. Does nothing when OPENBLAS_CORETYPE is already set, when the BLAS is
// not OpenBLAS, or off Linux. Returns normally only when no restart happened.
void restart_with_native_blas_kernels(char** argv);

// While alive, OpenBLAS runs choose(n) threads, n being its count before (at least one), and n
// again afterwards. Does nothing where the BLAS is not OpenBLAS.
class BlasThreads {
 public:
  explicit BlasThreads(int (*choose)(int threads));
  ~BlasThreads();
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;

 private:
  void (*set_threads_)(int) = nullptr;
  int saved_ = 0;  // 0: nothing changed
};

// Training: the augmented views of the next mini-batch are made on a thread of their own, which
// gets a core to itself.
inline int leave_one_core(int threads) { return threads > 1 ? threads - 1 : 1; }
// Evaluation: the evaluators' own parallel loops use every core; OpenBLAS threads waiting beside
// them took 40% of kBET's CPU time and doubled its wall time (docs/performance.md).
inline int one_thread(int) { return 1; }

// A line for the debug log: which kernels OpenBLAS uses and whether we chose them; empty when the
// BLAS is not OpenBLAS.
std::string blas_kernel_note();

}  // namespace scssl::host
