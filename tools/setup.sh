#!/usr/bin/env bash
# Installs every Debian 12 package the build, the tests and the main job need, then configures
# and builds into build/ (or $SCSSL_BUILD_DIR): the targets given as arguments, or everything.
# Safe to run again: packages that are present are not reinstalled and the build is incremental.
# Under CI (CI=true) compiler warnings are errors.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SCSSL_BUILD_DIR:-$repo/build}

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-pthread              # LibTorch (CPU) and a fast BLAS for it
  libboost-dev libboost-program-options-dev      # Boost.DLL (header-only) and Program_options
  libhdf5-dev libtomlplusplus-dev libspdlog-dev
  libigraph-dev                                  # Leiden clustering (leiden_nmi_ari)
  libeigen3-dev libspectra-dev                   # sparse eigensolver for kBET's diffusion map
  libhnswlib-dev                                 # approximate neighbour index for large n
  libgtest-dev googletest nlohmann-json3-dev     # tests
  chromium                                       # tests: opens report pages headless (test_report)
  unzip gzip                                     # scssl-fetch: zip members, .gz downloads
  libssl-dev libcurl4-openssl-dev                # scssl-fetch: SHA-256 (libcrypto) and downloads (libcurl)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi

# `setup.sh --packages-only`: install, do not build (tools/build_clang.sh).
[ "${1:-}" = --packages-only ] && exit 0

# ccache must not mistake the shared precompiled header for a different one.
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
echo "== configuring $build"
werror=OFF
[ "${CI:-}" = true ] && werror=ON
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSCSSL_WARNINGS_AS_ERRORS=$werror
echo "== building ${*:-everything} (a first build takes several minutes on 2 cores)"
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build" "${targets[@]}"
