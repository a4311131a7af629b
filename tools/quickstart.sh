#!/usr/bin/env bash
# The main job: set up, then run configs/quickstart.toml on the bundled Kang et al. 2018 data.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/tools/setup.sh"
cd "$repo"
exec "${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host" run configs/quickstart.toml "$@"
