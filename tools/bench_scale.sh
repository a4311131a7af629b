#!/usr/bin/env bash
# Scale benchmark: the whole pipeline of configs/bench/scale.toml (synthetic counts of N cells x
# 2000 genes -> preprocess -> VICReg, one epoch -> embed -> evaluation) for each size given, once
# per protocol: batch correction (the ten scIB metrics) and query mapping (kNN annotation of the
# held-out batch). Prints every stage's wall time and the peak memory of each run (run.json), the
# metrics and where each was sampled, and the two runs' sum.
#   tools/bench_scale.sh [SIZES...]          (default: 100000 1000000)
#   SAMPLE=50000 tools/bench_scale.sh ...    silhouettes (label, batch, isolated labels) on a
#                                            sample of 50 000 cells and kBET
#                                            testing 5 000 cells per type (default: exact, 0)
#   NEIGHBORS=exact|hnsw|auto                the neighbour backend (default auto)
#   PROTOCOLS=batch_correction               only this protocol (default: both)
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
    size_total=0
    for protocol in ${PROTOCOLS:-batch_correction query_mapping}; do
      echo "== $n cells, $protocol, distance kernels $kernels (silhouette sample $sample, kBET tested per type $((sample / 10)))"
      start=$(date +%s)
      "$host" --quiet run "$repo/configs/bench/scale.toml" --output "$out" \
        --set dataset.n_cells="$n" --set evaluation.protocol="\"$protocol\"" \
        --set evaluation.neighbors="\"${NEIGHBORS:-auto}\"" \
        --set evaluation.silhouette_label.max_cells="$sample" \
        --set evaluation.isolated_labels.max_cells="$sample" \
        --set evaluation.silhouette_batch.max_cells="$sample" \
        --set evaluation.kbet.tested_cells="$((sample / 10))" > "$out/stdout"
      dir=$(sed -n 's/^run folder: //p' "$out/stdout")
      seconds=$(($(date +%s) - start))
      size_total=$((size_total + seconds))
      python3 - "$dir" "$seconds" <<'PY'
import json, sys
run_dir, total = sys.argv[1], int(sys.argv[2])
run = json.load(open(f"{run_dir}/run.json"))
for s in run["stages"]:
    print(f"  {s['stage']:<32} {s['wall_seconds']:9.1f} s   peak {s['peak_rss_mb']:8.0f} MB")
n = run.get("neighbors") or {}
if n.get("backend"):
    print(f"  neighbours: {n.get('backend')} (k {n.get('k')}, chosen by {n.get('chosen_by')})")
for m in json.load(open(f"{run_dir}/metrics.json")):
    print(f"  {m['metric']:<20} {m['value']:.4f}" + (f"   ({m['note']})" if m.get("note") else ""))
peak = max(s["peak_rss_mb"] for s in run["stages"])
print(f"  total {total} s ({total / 60:.1f} min), peak {peak / 1024:.2f} GB")
PY
    done
    echo "  both protocols: ${size_total} s ($((size_total / 60)) min $((size_total % 60)) s)"
  done
done
