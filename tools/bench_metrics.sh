#!/usr/bin/env bash
# Evaluation benchmark: the whole scIB suite (every installed bio/batch evaluator) on a synthetic
# embedding of N cells x 64 dimensions (10 cell types, 4 batches with batch shifts), through
# `scssl-host evaluate`. Prints each evaluator's wall time, the total and the peak memory, and,
# where ../shared/refmetrics exists, the Python reference's times on the same file.
#   tools/bench_metrics.sh [SIZES...]   (default: 20000 100000); REFERENCE=0 skips the Python side.
#   KERNELS="avx512 avx2 sse2 blas" runs the suite once per distance-kernel path
#   (SCSSL_DISTANCE_KERNELS; default: the path this CPU picks).
# Needs /usr/bin/python3 with numpy, scipy and anndata (Debian python3-anndata) to write the input.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=${SCSSL_BUILD_DIR:-$repo/build}/bin/scssl-host
refmetrics=$repo/../shared/refmetrics/refmetrics.py
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sizes=("$@")
((${#sizes[@]})) || sizes=(20000 100000)

for n in "${sizes[@]}"; do
  data=$out/synthetic_$n.h5ad
  /usr/bin/python3 - "$data" "$n" <<'PY'
import sys
import anndata, numpy as np, pandas as pd, scipy.sparse as sp
path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
types = rng.integers(0, 10, n)
batches = rng.integers(0, 4, n)
centres = rng.normal(0, 4, (10, 64))
shifts = rng.normal(0, 1.5, (4, 64))
emb = (centres[types] + shifts[batches] + rng.normal(0, 1, (n, 64))).astype(np.float32)
counts = sp.random(n, 200, density=0.1, format="csr", random_state=0, dtype=np.float32)
counts.data = np.ceil(counts.data * 10)
obs = pd.DataFrame({"batch": pd.Categorical([f"b{b}" for b in batches]),
                    "cell_type": pd.Categorical([f"type{t}" for t in types])},
                   index=[f"cell{i}" for i in range(n)])
a = anndata.AnnData(X=counts, obs=obs)
a.obsm["X_emb"] = emb
a.obsm["X_pca"] = (emb[:, :50] + rng.normal(0, 0.5, (n, 50))).astype(np.float32)
a.write_h5ad(path)
PY
  for kernels in ${KERNELS:-auto}; do
  echo "== $n cells x 64 dimensions, distance kernels: $kernels"
  SCSSL_DISTANCE_KERNELS=$kernels "$host" --quiet evaluate "$data" -e X_emb --unintegrated-key X_pca \
    --output "$out" > "$out/stdout"
  dir=$(sed -n 's/^results: //p' "$out/stdout")
  python3 - "$dir" <<'PY'
import json, sys
run = json.load(open(f"{sys.argv[1]}/X_emb/run.json"))
setup = json.load(open(f"{sys.argv[1]}/run.json"))
total = 0.0
print(f"  {'scssl evaluator':<22} {'seconds':>8}")
for s in run["stages"]:
    total += s["wall_seconds"]
    print(f"  {s['stage'].removeprefix('evaluate:'):<22} {s['wall_seconds']:>8.2f}")
nb = run["neighbors"]
print(f"  {'total (metrics)':<22} {total:>8.2f}   neighbours: {nb['backend']} ({nb.get('chosen_by', '')}), k = {nb['k']}")
if "predicted_seconds" in nb:
    print(f"  predicted: exact {nb['predicted_seconds']['exact']:.1f} s, hnsw {nb['predicted_seconds']['hnsw']:.1f} s")
peak = max(s["peak_rss_mb"] for s in run["stages"] + setup["stages"])
print(f"  peak memory {peak:.0f} MB; reading the file {sum(s['wall_seconds'] for s in setup['stages']):.2f} s; kernels {run['versions']['distance_kernels']}")
PY
  done
  if [[ ${REFERENCE:-1} == 1 && -f $refmetrics ]]; then
    /usr/bin/python3 "$refmetrics" --h5ad "$data" --embedding-key X_emb --batch-key batch \
      --label-key cell_type --unintegrated-pca X_pca --out "$out/ref.json" > /dev/null
    /usr/bin/python3 - "$out/ref.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["embeddings"]["X_emb"]["timings_s"]
print(f"  {'python reference':<22} {'seconds':>8}")
for k, v in t.items():
    print(f"  {k:<22} {v:>8.2f}")
PY
  fi
done
