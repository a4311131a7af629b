#!/usr/bin/env bash
# Trains every method config in configs/methods/ on the bundled Kang ctrl/stim data for each seed
# and prints a markdown table: method, macro-F1, accuracy (mean +- sd over seeds) and training
# time. Extra arguments are passed to every run (e.g. --set train.learning_rate=1e-4).
#   SEEDS="0 1 2" tools/compare_methods.sh [--set ...]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
methods=${METHODS:-"pca simclr moco simsiam nnclr byol vicreg barlowtwins"}
for m in $methods; do
  for seed in ${SEEDS:-0}; do
    "$host" --quiet run "$repo/configs/methods/$m.toml" --output "$out/$m" --set run.seed="$seed" "$@" \
      > "$out/$m-$seed.txt"
  done
done
python3 - "$out" $methods <<'PY'
import csv, glob, json, statistics, sys
out, methods = sys.argv[1], sys.argv[2:]
def stat(xs):
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"
print("| method | macro-F1 | accuracy | training s | seeds |")
print("|---|---|---|---|---|")
for m in methods:
    f1, acc, fit = [], [], []
    for run in sorted(glob.glob(f"{out}/{m}/*/")):
        metrics = {r["metric"]: float(r["value"]) for r in csv.DictReader(open(run + "metrics.csv"))}
        f1.append(metrics["macro_f1"]); acc.append(metrics["accuracy"])
        fit.append(next(s["wall_seconds"] for s in json.load(open(run + "run.json"))["stages"] if s["stage"] == "fit"))
    print(f"| {m} | {stat(f1)} | {stat(acc)} | {statistics.mean(fit):.1f} | {len(f1)} |")
PY
