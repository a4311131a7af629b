#!/usr/bin/env bash
# Fuzzes the checkpoint reader's parser (sdk/src/tensor_file_parse.cpp, docs/method-spec.md §21)
# with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer. Configures build-fuzz/ (or
# $SCSSL_FUZZ_BUILD_DIR) with Debian's clang-14 and -DSCSSL_FUZZ=ON, builds only fuzz_tensor_file,
# and runs it for the given number of seconds on a corpus seeded from tests/data/tensor_files/
# (each file as it is, and each archive's data.pkl alone). The corpus grows in
# <build>/fuzz-corpus/ from run to run; a crashing input is saved in <build>/fuzz-crashes/ and the
# script fails.
#   tools/fuzz.sh          # 60 seconds
#   tools/fuzz.sh 600      # 10 minutes
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SCSSL_FUZZ_BUILD_DIR:-$repo/build-fuzz}
seconds=${1:-60}

need=()
command -v clang++-14 >/dev/null || need+=(clang-14)
compgen -G "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null ||
  need+=(libfuzzer-14-dev)
if ((${#need[@]})); then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y --no-install-recommends "${need[@]}"
fi
# The top-level configure still looks for LibTorch and the other packages.
"$repo/tools/setup.sh" --packages-only

export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DSCSSL_FUZZ=ON \
  -DSCSSL_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --target fuzz_tensor_file

seeds=$build/fuzz-seeds corpus=$build/fuzz-corpus crashes=$build/fuzz-crashes
rm -rf "$seeds"
mkdir -p "$seeds" "$corpus" "$crashes"
for f in "$repo"/tests/data/tensor_files/*.pt "$repo"/tests/data/tensor_files/*.safetensors; do
  cp "$f" "$seeds/"
  # The target wraps an input that starts with a pickle's PROTO into an archive of its own.
  unzip -p "$f" '*/data.pkl' >"$seeds/$(basename "$f").pkl" 2>/dev/null || rm -f "$seeds/$(basename "$f").pkl"
done
echo "== fuzzing for $seconds s (corpus $corpus, crashes go to $crashes)"
"$build/bin/fuzz_tensor_file" -max_total_time="$seconds" -timeout=10 -max_len=16384 \
  -dict="$repo/tests/fuzz/tensor_file.dict" -artifact_prefix="$crashes/" -print_final_stats=1 \
  "$corpus" "$seeds"
