#!/usr/bin/env bash
# scVI training benchmark (docs/performance.md, "scVI"): scvi-tools' default model (1 layer,
# 10 latent, ZINB) and the study's (8 layers, 30 latent, NB) on synthetic counts, 2000 genes, batch
# 128. Prints median seconds per epoch (training cells only, as scvi-tools' epoch), cells/s, peak
# memory, the matrix-product FLOPs per epoch and the floor: the seconds the BLAS needs for them,
# measured on the spot by scssl-bench-gemm (every Linear layer of encoder and decoder, forward
# and gradients; the decoder's hidden layers counted without the 4 batch columns, <1% of the FLOPs).
#
# With a Python peer of scvi-tools' training step (PEER=/path/to/peer_scvi.py, default
# ../shared/peer/peer_scvi.py on development machines; skipped with a message where absent), the
# script also writes the peer's 20k-cell file (gen_synth.py next to it: 5000 genes, 2000 HVGs kept)
# and times both programs on that file, one after the other, with the same threads.
#   tools/bench_scvi.sh [SIZES...] (default: 20000 100000); THREADS=n (default 2); EPOCHS=n (3)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host
gemm=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-bench-gemm
peer=${PEER:-$repo/../shared/peer/peer_scvi.py}
threads=${THREADS:-2}
epochs=${EPOCHS:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sizes=("$@")
((${#sizes[@]})) || sizes=(20000 100000)

declare -A model_sets=(
  [default]="--set method.n_layers=1 --set method.n_latent=10 --set method.gene_likelihood=zinb"
  [study]="--set method.n_layers=8 --set method.n_latent=30 --set method.gene_likelihood=nb")

# The BLAS floor of one epoch: encoder G -> 128 (x layers) -> 2 x latent, decoder latent + B ->
# 128 (x layers) -> G (2 G with ZINB's dropout head).
floor() {  # cells genes layers latent zinb
  local steps=$((($1 * 9 / 10 + 127) / 128)) hidden="" out_width=$2 a b
  for ((l = 1; l < $3; l++)); do hidden+="128,"; done
  (($5)) && out_width=$(($2 * 2))
  a=$("$gemm" 128 "$steps" 1 "$2,${hidden}128,$(($4 * 2))")
  b=$("$gemm" 128 "$steps" 1 "$(($4 + 4)),${hidden}128,$out_width")
  python3 -c "
a, b = '''$a'''.split(), '''$b'''.split()
print(f'{float(a[0]) + float(b[0]):.2f} {float(a[3]) + float(b[3]):.1f}')"
}

# One scssl-host run; prints "s/epoch cells/s peak_MB".
measure() {  # run-dir
  python3 - "$1" <<'PY'
import json, statistics, sys
run_dir = sys.argv[1]
cps = [float(l.split(",")[2]) for l in open(f"{run_dir}/history.csv") if l.startswith("cells_per_second,")]
run = json.load(open(f"{run_dir}/run.json"))
train_cells = run["data"]["n_cells"] - run["data"]["n_query"]
train_cells = -(-train_cells * 9 // 10)
med = statistics.median(train_cells / c for c in cps)
peak = max(s["peak_rss_mb"] for s in run["stages"])
print(f"{med:.2f} {train_cells / med:.0f} {peak:.0f}")
PY
}

printf "%-8s %-8s %-8s %-14s %-10s %-10s %-12s %s\n" cells model threads "s/epoch (med)" "cells/s" \
  "peak MB" "GFLOP/ep" "sgemm floor s"
for n in "${sizes[@]}"; do
  for model in default study; do
    # shellcheck disable=SC2086
    "$host" --quiet run "$repo/configs/bench/scvi_synthetic.toml" --output "$out" \
      --set dataset.n_cells="$n" --set run.threads="$threads" --set train.epochs="$epochs" \
      ${model_sets[$model]} > "$out/stdout" 2>> "$out/warnings"
    dir=$(sed -n 's/^run folder: //p' "$out/stdout")
    read -r sec cps peak <<<"$(measure "$dir")"
    if [[ $model == default ]]; then f=$(floor "$n" 2000 1 10 1); else f=$(floor "$n" 2000 8 30 0); fi
    read -r floor_s gflop <<<"$f"
    printf "%-8s %-8s %-8s %-14s %-10s %-10s %-12s %s (%.1fx)\n" "$n" "$model" "$threads" "$sec" \
      "$cps" "$peak" "$gflop" "$floor_s" "$(python3 -c "print($sec / $floor_s)")"
  done
done

if [[ ! -f $peer ]] || ! /usr/bin/python3 -c "import anndata, torch" 2> /dev/null; then
  echo "peer comparison skipped: no $peer (or /usr/bin/python3 lacks anndata/torch)"
  exit 0
fi
echo
echo "On the peer's 20k-cell file (5000 genes, 2000 HVGs), $threads thread(s), $epochs epochs:"
data=${PEER_DATA:-$out/synth_20k.h5ad}
[[ -f $data ]] || /usr/bin/python3 "$(dirname "$peer")/gen_synth.py" --n-cells 20000 --out "$data" > /dev/null
cat > "$out/peer_file.toml" <<EOF
include = ["$repo/configs/bench/scvi_model.toml"]
[dataset]
plugin = "h5ad"
path = "$data"
batch_key = "batch"
label_key = ""
[preprocess]
n_top_genes = 2000
EOF
printf "%-10s %-8s %-14s %-10s %s\n" program model "s/epoch (med)" "cells/s" "peak MB"
for model in default study; do
  # shellcheck disable=SC2086
  "$host" --quiet run "$out/peer_file.toml" --output "$out" \
    --set run.threads="$threads" --set train.epochs="$epochs" \
    ${model_sets[$model]} > "$out/stdout" 2>> "$out/warnings"
  read -r sec cps peak <<<"$(measure "$(sed -n 's/^run folder: //p' "$out/stdout")")"
  printf "%-10s %-8s %-14s %-10s %s\n" scssl-host "$model" "$sec" "$cps" "$peak"
  if [[ $model == default ]]; then args=(); else args=(--n-layers 8 --n-latent 30 --likelihood nb); fi
  /usr/bin/python3 "$peer" --h5ad "$data" --epochs "$epochs" --threads "$threads" "${args[@]}" \
    > "$out/peer.json"
  python3 - "$out/peer.json" "$model" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{'peer':<10} {sys.argv[2]:<8} {r['epoch_s_median']:<14.2f} {r['cells_per_s']:<10.0f} {r['peak_rss_mb']:.0f}")
PY
done
