#!/usr/bin/env bash
# Applies .clang-format to every C and C++ source of the repository (tools/format.sh), or with
# --check lists the files that are not formatted and exits 1 (for CI or a pre-commit hook).
# Left alone: the vendored report libraries and the frozen ABI-1 header of the test fixtures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.c' | grep -v '^tools/report/vendor/\|^tests/fixtures/abi1/')
if [ "${1:-}" = --check ]; then
  bad=0
  for f in "${files[@]}"; do
    clang-format "$f" | cmp -s - "$f" || { echo "not formatted: $f"; bad=1; }
  done
  exit $bad
fi
clang-format -i "${files[@]}"
