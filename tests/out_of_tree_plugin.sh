#!/usr/bin/env bash
# Installs this build into a temporary prefix, builds docs/examples/random-projection against it
# with find_package(scssl), and checks that the installed host loads, validates and runs it.
set -euo pipefail
build_dir=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$source_dir/docs/examples/random-projection" -B "$work/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"

host="$work/prefix/bin/scssl-host"
plugin="$work/build/libscssl-method-random_projection.so"
test -f "$plugin"
"$host" validate "$plugin" | tee "$work/validate.log"
grep -q "^OK " "$work/validate.log"
"$host" --plugins "$work/build" list | tee "$work/list.log"
grep -q "random_projection" "$work/list.log"
grep -q "knn_annotation" "$work/list.log"   # installed plugins are found next to the host
"$host" --plugins "$work/build" --quiet run "$source_dir/docs/examples/random-projection/run.toml" \
  --output "$work/runs" | tee "$work/run.log"
grep -q "macro_f1" "$work/run.log"
echo "out-of-tree plugin: built, validated, listed and run"
