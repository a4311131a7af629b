#!/usr/bin/env bash
# Sweeps through the slurm executor on a real cluster (CI starts a one-node one with
# tools/slurm_local.sh start). Exit 77 (reported by ctest as skipped) where no cluster answers.
#   tests/sweep_slurm.sh BUILD_DIR SOURCE_DIR [smoke|comparison]
# smoke: three PCA runs, then a resume that submits nothing. comparison: the README's method
# comparison (configs/experiments/method_comparison.toml) with one seed, so every method under
# both protocols (28 runs), and its report.
set -euo pipefail
build=$(cd "$1" && pwd) repo=$(cd "$2" && pwd) mode=${3:-smoke}
if ! command -v sbatch > /dev/null || ! sinfo -h > /dev/null 2>&1; then
  echo "SKIPPED: no Slurm cluster answers here (sbatch or the controller is missing);" \
    "start one with tools/slurm_local.sh start (as root)"
  exit 77
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
chmod 755 "$out"
host=("$build/bin/scssl-host" --plugins "$build/plugins")

if [[ $mode == comparison ]]; then
  # The experiment file with one seed; its relative paths made absolute, as the copy lives here.
  sed -e 's/^seeds = .*/seeds = [0]/' -e "s#\"\.\./#\"$repo/configs/#g" \
    "$repo/configs/experiments/method_comparison.toml" > "$out/method_comparison.toml"
  "${host[@]}" sweep "$out/method_comparison.toml" --executor slurm --output "$out" |
    tee "$out/sweep.txt"
  grep -q "28 runs: 28 ok (0 of them complete before), 0 failed" "$out/sweep.txt"
  [[ $(grep -c ",ok," "$out/method_comparison/results.csv") == 28 ]]
  "${host[@]}" report "$out/method_comparison" --output "$out/report" | tee "$out/report.txt"
  [[ -s $out/report/report.html ]]
  echo "method comparison through Slurm: OK"
  exit 0
fi

cat > "$out/sweep.toml" <<EOF
[sweep]
name = "slurm_smoke"
base = "$repo/configs/methods/pca.toml"
seeds = [0, 1, 2]
executor = "slurm"
set = ['evaluation.evaluators=["knn_annotation"]']

[slurm]
cpus_per_task = 1
EOF
"${host[@]}" sweep "$out/sweep.toml" --output "$out" | tee "$out/first.txt"
grep -q "3 runs: 3 ok (0 of them complete before), 0 failed" "$out/first.txt"
[[ $(grep -c ",ok," "$out/slurm_smoke/results.csv") == 3 ]]
ls "$out"/slurm_smoke/logs/slurm-*_0.log > /dev/null
# Resumed: nothing is submitted again.
"${host[@]}" sweep "$out/sweep.toml" --output "$out" | tee "$out/second.txt"
grep -q "3 runs: 3 ok (3 of them complete before)" "$out/second.txt"
echo "sweep through Slurm: OK"
