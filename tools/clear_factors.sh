#!/usr/bin/env bash
# The CLEAR factor study of docs/results.md ("Why CLEAR's query-mapping model splits Kang's
# batches"): CLEAR's query-mapping model on the bundled Kang data (stim107 held out before
# preprocessing), changed one factor at a time, each model's embedding of every cell scored with
# `scssl-host evaluate` (the scIB suite over all four batches), next to its annotation macro-F1.
# VICReg is the control. A sweep cannot do this: its axes form a grid rather than one change at a
# time, and its query-mapping runs score only the annotation task.
#   SEEDS="0 1 2" tools/clear_factors.sh OUTPUT_DIR
# Writes OUTPUT_DIR/factors.csv (one row per variant and seed) and prints mean ± sd per variant.
# Variants that already have a result in OUTPUT_DIR are not run again.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host
out=${1:?usage: SEEDS=\"0 1 2\" tools/clear_factors.sh OUTPUT_DIR}
mkdir -p "$out"
# label | config in configs/methods/ | method plugin | settings
variants=(
  "baseline (clear.toml)|clear|clear|"
  "temperature 0.07|clear|clear|--set method.temperature=0.07"
  "temperature 0.5|clear|clear|--set method.temperature=0.5"
  "momentum 0.99|clear|clear|--set method.momentum=0.99"
  "momentum 0.9|clear|clear|--set method.momentum=0.9"
  "queue 256|clear|clear|--set method.queue_size=256"
  "L2-normalised embedding|clear|clear|--set method.normalize_embedding=true"
  "key encoder embeds|clear|clear|--set method.embedding=key"
  "first layer 128 wide|clear|clear|--set method.encoder_hidden=128"
  "embedding size 64|clear|clear|--set method.hidden_dim=64"
  "MoCo v2 head|clear|clear|--set method.head=mlp"
  "encoder without BatchNorm|clear|clear|--set method.encoder=no_bn"
  "CLEAR's encoder|clear|clear|--set method.encoder=original"
  "SGD 5e-3, momentum 0.9|clear|clear|--set method.optimizer=sgd --set train.learning_rate=5e-3"
  "batch 512|clear|clear|--set train.batch_size=512"
  "CLEAR's augmentations|clear_original|clear|--set method.encoder=shared --set method.embedding=query --set method.normalize_embedding=false --set method.optimizer=adam --set train.batch_size=256 --set train.learning_rate=1e-3"
  "original build (clear_original.toml)|clear_original|clear|"
  "original build, query encoder unnormalised|clear_original|clear|--set method.embedding=query --set method.normalize_embedding=false"
  "vicreg (control)|vicreg|vicreg|"
)
for seed in ${SEEDS:-0}; do
  for v in "${variants[@]}"; do
    IFS='|' read -r label config plugin sets <<< "$v"
    dir="$out/$(tr -c 'A-Za-z0-9.\n' '_' <<< "$label")-seed$seed"
    [ -f "$dir/scored" ] && continue
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "$label" > "$dir/label"
    # shellcheck disable=SC2086  # $sets holds several --set arguments
    "$host" --quiet run "$repo/configs/methods/$config.toml" --output "$dir" --set run.name=run \
      --set run.seed="$seed" --set evaluation.protocol=query_mapping $sets > "$dir/run.txt"
    run=$(echo "$dir"/run-*)
    "$host" --quiet evaluate "$run"/*.h5ad --embedding "X_$plugin" --batch-key batch \
      --label-key cell_type --name scored --output "$dir" > "$dir/evaluate.txt"
    mv "$dir"/scored-* "$dir/scored"
  done
done
python3 - "$out" "${variants[@]}" <<'PY'
import csv, glob, json, os, statistics, sys
out, labels = sys.argv[1], [v.split("|")[0] for v in sys.argv[2:]]
columns = ["macro_f1", "ilisi", "kbet", "graph_connectivity", "silhouette_batch",
           "batch_correction", "bio_conservation", "fit_s"]
rows = []
for d in sorted(glob.glob(f"{out}/*-seed*/")):
    if not os.path.isdir(d + "scored"):
        continue
    run = glob.glob(d + "run-*/")[0]
    row = {"variant": open(d + "label").read().strip(), "seed": d.rstrip("/").rsplit("seed", 1)[1]}
    row["macro_f1"] = next(float(r["value"]) for r in csv.DictReader(open(run + "metrics.csv"))
                           if r["metric"] == "macro_f1")
    row.update({k: float(v) for k, v in next(csv.DictReader(open(d + "scored/comparison.csv"))).items()
                if k in columns})
    row["fit_s"] = next(s["wall_seconds"] for s in json.load(open(run + "run.json"))["stages"]
                        if s["stage"] == "fit")
    rows.append(row)
with open(f"{out}/factors.csv", "w", newline="") as f:
    w = csv.DictWriter(f, ["variant", "seed"] + columns)
    w.writeheader()
    w.writerows(rows)
def stat(xs):
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"
print("| variant | macro-F1 | iLISI | kBET | graph conn. | silhouette batch | Batch | Bio | fit s | seeds |")
print("|---|---|---|---|---|---|---|---|---|---|")
for label in labels:
    mine = [r for r in rows if r["variant"] == label]
    if mine:
        cells = [stat([r[c] for r in mine]) for c in columns[:-1]]
        fit = statistics.mean(r["fit_s"] for r in mine)
        print(f"| {label} | {' | '.join(cells)} | {fit:.1f} | {len(mine)} |")
PY
