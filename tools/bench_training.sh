#!/usr/bin/env bash
# Training benchmark: VICReg + CLEAR pipeline on synthetic data (20k and 100k cells x 2000 genes,
# batch 256). Prints median seconds per epoch, cells/s and peak memory for each size, and the floor:
# the seconds the BLAS needs for the epoch's matrix products (VICReg's layers 2000-128-64 and
# projector 64-64-256, forward and gradients, and the covariance term's 256 x 256 Gram matrix, two
# views), measured on the spot by scssl-bench-gemm.
#   tools/bench_training.sh [SIZES...] (default: 20000 100000); THREADS=n to pin threads.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host
gemm=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-bench-gemm
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sizes=("$@")
((${#sizes[@]})) || sizes=(20000 100000)

printf "%-8s %-8s %-14s %-10s %-12s %-14s %-14s\n" cells threads "s/epoch (med)" "cells/s" "peak MB" \
  "load+prep s" "sgemm floor s"
for n in "${sizes[@]}"; do
  "$host" --quiet run "$repo/configs/bench/vicreg_synthetic.toml" --output "$out" \
    --set dataset.n_cells="$n" --set run.threads="${THREADS:-0}" > "$out/stdout"
  dir=$(sed -n 's/^run folder: //p' "$out/stdout")
  floor=$("$gemm" 256 $((n / 256)) 2 2000,128,64,64,256 256 | cut -d' ' -f1)
  python3 - "$dir" "$n" "$floor" <<'PY'
import json, statistics, sys
run_dir, n, floor = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
cps = [float(l.split(",")[2]) for l in open(f"{run_dir}/history.csv") if l.startswith("cells_per_second,")]
run = json.load(open(f"{run_dir}/run.json"))
stages = {s["stage"]: s for s in run["stages"]}
epoch_cells = (n // 256) * 256
med = statistics.median(epoch_cells / c for c in cps)
peak = max(s["peak_rss_mb"] for s in run["stages"])
prep = stages["load"]["wall_seconds"] + stages["preprocess"]["wall_seconds"]
print(f"{n:<8} {run['threads']:<8} {med:<14.2f} {epoch_cells / med:<10.0f} {peak:<12.0f} {prep:<14.2f} "
      f"{floor:.2f} ({med / floor:.1f}x)")
PY
done
