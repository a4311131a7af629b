#!/usr/bin/env bash
# Set up, then run every test (GoogleTest suites through ctest), as many at once as there are
# cores (the tests do not depend on each other's timing).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/tools/setup.sh"
exec ctest --test-dir "${SCSSL_BUILD_DIR:-$repo/build}" --output-on-failure -j "$(nproc)" "$@"
