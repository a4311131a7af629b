#!/usr/bin/env bash
# The main job: set up, then run configs/quickstart.toml on the bundled Kang et al. 2018 data.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Only what users run: the host, the plugins and the run-folder tools, no tests (tools/test.sh
# builds everything).
"$repo/tools/setup.sh" scssl-host scssl_all_plugins scssl-sweep scssl-report scssl-fetch
cd "$repo"
host="${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host"
# The study's two protocols, one run each (docs/evaluation.md, "Protocols"): integration scored on
# a model of every cell, then annotation of a batch held out before preprocessing.
"$host" run configs/quickstart.toml "$@"
"$host" run configs/quickstart.toml --set evaluation.protocol=query_mapping "$@"
