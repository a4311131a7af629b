#!/usr/bin/env bash
# Builds the tree with Clang (Debian's clang-14) into build-clang/ (or $SCSSL_CLANG_BUILD_DIR) with
# warnings as errors, then runs the tests given as a ctest regex (default: the registry, ABI and
# parameter suites). CI builds with GCC; this script keeps the Clang build working.
#   tools/build_clang.sh                      # SDK, host, fixtures, a few plugins; their tests
#   SCSSL_CLANG_TARGETS=all tools/build_clang.sh '.*'   # everything, every test
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SCSSL_CLANG_BUILD_DIR:-$repo/build-clang}
if ! command -v clang++-14 >/dev/null; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends clang-14
fi
"$repo/tools/setup.sh" --packages-only
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DSCSSL_WARNINGS_AS_ERRORS=ON
targets=${SCSSL_CLANG_TARGETS:-scssl-host scssl-dataset-h5ad scssl-dataset-synthetic scssl-method-pca scssl-evaluator-knn_annotation scssl_test_fixtures test_registry test_params}
if [ "$targets" = all ]; then
  cmake --build "$build"
else
  args=()
  for t in $targets; do args+=(--target "$t"); done
  cmake --build "$build" "${args[@]}"
fi
ctest --test-dir "$build" --output-on-failure -R "${1:-Fixtures|Registry|Validate|Abi|Crash|Params}"
