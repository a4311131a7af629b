#!/usr/bin/env bash
# Scale benchmark: the whole pipeline of configs/bench/scale.toml (synthetic counts of N cells x
# 2000 genes -> preprocess -> VICReg, one epoch -> embed -> the ten scIB metrics) for each size
# given. Prints every stage's wall time and the peak memory of the run (run.json), and where each
# metric was sampled.
#   tools/bench_scale.sh [SIZES...]          (default: 100000 1000000)
#   SAMPLE=50000 tools/bench_scale.sh ...    silhouettes (label, batch, isolated labels) on a
#                                            sample of 50 000 cells and kBET
#                                            testing 5 000 cells per type (default: exact, 0)
#   NEIGHBORS=exact|hnsw|auto                the neighbour backend (default auto)
#   KERNELS="avx512 avx2 sse2 vector16 blas" runs each size once per distance-kernel path
#                                            (SCSSL_DISTANCE_KERNELS; default: the path this
#                                            CPU picks)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sizes=("$@")
((${#sizes[@]})) || sizes=(100000 1000000)
sample=${SAMPLE:-0}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%F)"
for n in "${sizes[@]}"; do
  for kernels in ${KERNELS:-auto}; do
    export SCSSL_DISTANCE_KERNELS=$kernels
    echo "== $n cells, distance kernels $kernels (silhouette sample ${sample:-0}, kBET tested per type $((sample / 10)))"
    start=$(date +%s)
    "$host" --quiet run "$repo/configs/bench/scale.toml" --output "$out" \
      --set dataset.n_cells="$n" --set evaluation.neighbors="\"${NEIGHBORS:-auto}\"" \
      --set evaluation.silhouette_label.max_cells="$sample" \
      --set evaluation.isolated_labels.max_cells="$sample" \
      --set evaluation.silhouette_batch.max_cells="$sample" \
      --set evaluation.kbet.tested_cells="$((sample / 10))" > "$out/stdout"
    dir=$(sed -n 's/^run folder: //p' "$out/stdout")
    python3 - "$dir" "$(($(date +%s) - start))" <<'PY'
import json, sys
run_dir, total = sys.argv[1], int(sys.argv[2])
run = json.load(open(f"{run_dir}/run.json"))
for s in run["stages"]:
    print(f"  {s['stage']:<32} {s['wall_seconds']:9.1f} s   peak {s['peak_rss_mb']:8.0f} MB")
n = run.get("neighbors") or {}
print(f"  neighbours: {n.get('backend')} (k {n.get('k')}, chosen by {n.get('chosen_by')})")
for m in json.load(open(f"{run_dir}/metrics.json")):
    if m.get("note"):
        print(f"  {m['metric']}: {m['note']}")
peak = max(s["peak_rss_mb"] for s in run["stages"])
print(f"  total {total} s ({total / 60:.1f} min), peak {peak / 1024:.2f} GB")
PY
  done
done
