// The build fingerprint of the translation unit that includes this header: LibTorch version, C++
// standard library and its ABI, compiler. Compiled into every plugin's description and into the
// host, which compares the two (scssl_build_fingerprint in scssl/abi.h).
#pragma once

#include <torch/version.h>

#include <string>

#include "scssl/abi.h"

#if defined(_LIBCPP_VERSION)
#define SCSSL_CXX_STDLIB "libc++"
#elif defined(__GLIBCXX__) && _GLIBCXX_USE_CXX11_ABI
#define SCSSL_CXX_STDLIB "libstdc++ cxx11-abi"
#elif defined(__GLIBCXX__)
#define SCSSL_CXX_STDLIB "libstdc++ pre-cxx11-abi"
#else
#define SCSSL_CXX_STDLIB "unknown C++ library"
#endif

#define SCSSL_BUILD_FINGERPRINT \
  { TORCH_VERSION, SCSSL_CXX_STDLIB, SCSSL_COMPILER }
