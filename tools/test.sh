#!/usr/bin/env bash
# Set up, then run every test (GoogleTest suites through ctest).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/tools/setup.sh"
exec ctest --test-dir "${SCSSL_BUILD_DIR:-$repo/build}" --output-on-failure "$@"
