#!/usr/bin/env bash
# Makes a report from run and sweep folders with this tree's build (see docs/report.md), e.g.
#   tools/report.sh runs/my-sweep -o reports/my-sweep [--min-max-scale] [--title T]
# then, where Debian's chromium is installed, opens the page headless and says whether every
# chart rendered without a script error.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host="${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host"
[ -x "$host" ] || { echo "no $host: build first (tools/setup.sh)" >&2; exit 1; }

out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    -o|--output) out="${args[i+1]:-}" ;;
    --output=*) out="${args[i]#--output=}" ;;
  esac
done
"$host" report "$@"

if [ -n "$out" ] && command -v chromium > /dev/null; then
  profile=$(mktemp -d)
  trap 'rm -rf "$profile"' EXIT
  body=$(timeout 300 chromium --headless --disable-gpu --no-sandbox --user-data-dir="$profile" \
           --virtual-time-budget=120000 --dump-dom "file://$(realpath "$out")/report.html" 2>/dev/null |
         grep -o '<body[^>]*>' | head -n 1)
  charts=$(sed -n 's/.*data-charts="\([0-9]*\)".*/\1/p' <<< "$body")
  rendered=$(sed -n 's/.*data-rendered="\([0-9]*\)".*/\1/p' <<< "$body")
  if [[ "$body" == *data-errors* || -z "$charts" || "$charts" != "$rendered" ]]; then
    echo "report.html: ${rendered:-0} of ${charts:-?} charts rendered; open it in a browser to see the error" >&2
    exit 1
  fi
  echo "report.html: all $charts charts rendered"
fi
