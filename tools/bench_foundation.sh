#!/usr/bin/env bash
# Foundation-model benchmark (docs/performance.md, "Foundation models"), in two parts:
#  host     scgpt, geneformer and scbert trained from scratch with their shipped configs
#           (configs/methods/<model>.toml) on the bundled Kang file for one epoch, then all 1556
#           cells embedded, through scssl-host: training cells/s (history.csv, the epoch's 1125
#           training cells) and embedding cells/s (run.json's embed stage), with the fused
#           attention kernel and without (method.fused_attention) for scGPT and Geneformer.
#  network  scssl-bench-foundation: the embedding network alone with random weights, at the CPU
#           sizes and the official ones, with FLOPs per cell: every cell at the full length, then
#           (scGPT, Geneformer) lengths drawn from a quarter of it up, with the fused kernel and
#           without.
#   tools/bench_foundation.sh [host] [network] (default: both); --smoke: four cells per network
#   at the CPU sizes, nothing else (the test bench_foundation_smoke runs that).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SCSSL_BUILD_DIR:-$repo/build}
host=$build/bin/scssl-host
bench=$build/bin/scssl-bench-foundation
parts=("$@")
((${#parts[@]})) || parts=(host network)

if [[ ${parts[0]} == --smoke ]]; then
  for model in scgpt geneformer scbert; do "$bench" "$model" cpu --cells 4 --min-length 64; done
  exit 0
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# One run folder -> "train cells/s, embed cells/s, peak MB".
measure() {
  python3 - "$1" <<'PY'
import json, sys
run_dir = sys.argv[1]
cps = [float(l.split(",")[2]) for l in open(f"{run_dir}/history.csv") if l.startswith("cells_per_second,")]
run = json.load(open(f"{run_dir}/run.json"))
embed = next(s["wall_seconds"] for s in run["stages"] if s["stage"] == "embed")
peak = max(s["peak_rss_mb"] for s in run["stages"])
print(f"{cps[-1]:.1f} {run['data']['n_cells'] / embed:.1f} {peak:.0f}")
PY
}

for part in "${parts[@]}"; do
  case $part in
    host)
      printf "%-11s %-16s %-16s %-16s %s\n" model attention "train cells/s" "embed cells/s" "peak MB"
      for model in scgpt geneformer scbert; do
        variants=(true false)
        [[ $model == scbert ]] && variants=(none)
        for fused in "${variants[@]}"; do
          args=(--set train.epochs=1 --set run.write_h5ad=false --output "$out")
          [[ $fused != none ]] && args+=(--set "method.fused_attention=$fused")
          "$host" --quiet run "$repo/configs/methods/$model.toml" "${args[@]}" >"$out/stdout" \
            2>>"$out/warnings"
          read -r train embed peak <<<"$(measure "$(sed -n 's/^run folder: //p' "$out/stdout")")"
          case $fused in true) label=fused ;; false) label=own ;; *) label=performer ;; esac
          printf "%-11s %-16s %-16s %-16s %s\n" "$model" "$label" "$train" "$embed" "$peak"
        done
      done
      ;;
    network)
      for size in "scgpt cpu" "scgpt official" "geneformer cpu" "geneformer v1-10m" \
        "geneformer v2-104m" "scbert cpu" "scbert official"; do
        read -r model name <<<"$size"
        cells=64
        [[ $size == "scbert official" || $size == "geneformer v2-104m" ]] && cells=2
        if [[ $model == scbert ]]; then
          "$bench" "$model" "$name" --cells "$cells"
          continue
        fi
        for lengths in "" --ragged; do
          # shellcheck disable=SC2086
          "$bench" "$model" "$name" --cells "$cells" $lengths --attention own
          # shellcheck disable=SC2086
          "$bench" "$model" "$name" --cells "$cells" $lengths --attention fused | grep -v '^check'
        done
      done
      ;;
    *)
      echo "unknown part '$part' (host, network or --smoke)" >&2
      exit 2
      ;;
  esac
done
