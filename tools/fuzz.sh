#!/usr/bin/env bash
# Fuzzes the readers of untrusted input with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer (docs/reliability.md):
#   tensor_file  the checkpoint reader's parser (sdk/src/tensor_file_parse.cpp)
#   h5ad         the .h5ad reader (sdk/anndata), as the h5ad plugin, evaluate and the report use it
#   config       the run-config loader (host/src/config.cpp) against the built plugins' schemas
# Configures build-fuzz/ (or $SCSSL_FUZZ_BUILD_DIR) with Debian's clang-14 and -DSCSSL_FUZZ=ON,
# builds the targets asked for and runs each for SECONDS on a corpus seeded from the repository's
# files. The corpus grows in <build>/fuzz-corpus/<target>/ from run to run; what a run finds is
# saved in <build>/fuzz-crashes/<target>/ and the script fails.
#
# The HDF5 library is not instrumented and HDF5 1.10 crashes on some corrupt files by itself, so
# the h5ad target runs in libFuzzer's fork mode, which goes on after a crash, and every saved input
# is run again and sorted by its stack: inside HDF5 (reported and counted: the host contains them
# by reading untrusted files in a child process) or in our code (the script fails).
# The config target reads the plugins' notes from build/plugins (or $SCSSL_FUZZ_PLUGINS): build
# the project first (tools/test.sh or cmake --build build).
#
#   tools/fuzz.sh                    # every target, 60 seconds each
#   tools/fuzz.sh 3600 h5ad          # one target for an hour
#   tools/fuzz.sh 20 tensor_file config
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SCSSL_FUZZ_BUILD_DIR:-$repo/build-fuzz}
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(tensor_file h5ad config)
for t in "${targets[@]}"; do
  case $t in tensor_file | h5ad | config) ;; *)
    echo "fuzz.sh: unknown target '$t' (tensor_file, h5ad, config)" >&2
    exit 2
    ;;
  esac
done
plugins=${SCSSL_FUZZ_PLUGINS:-$repo/build/plugins}
if [[ " ${targets[*]} " == *" config "* ]] && ! compgen -G "$plugins/*.so" >/dev/null; then
  echo "fuzz.sh: the config target reads the plugins' schemas from $plugins, which has no" \
    "plugins; build the project first (tools/test.sh) or set SCSSL_FUZZ_PLUGINS" >&2
  exit 2
fi

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
cmake --build "$build" --target "${targets[@]/#/fuzz_}"

export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
scratch=$(mktemp -d "${TMPDIR:-/tmp}/scssl-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch  # where the targets write their input files

# Where a saved input fails: "hdf5" when the faulting frame and, for a bad access to the heap, the
# allocation both lie inside the HDF5 library (or the C library under it); "ours" otherwise.
classify() {
  local report=$1
  # The first frame that is not the sanitizer runtime, libFuzzer, main or the C library, whose
  # string and memory functions also appear as the sanitizer's interceptors in the target itself
  # (an out-of-memory report lists the largest live allocations: the first that is not the
  # fuzzer's).
  first_frame() { grep -E '^ *#[0-9]+ ' | grep -vE ' in (malloc|calloc|realloc|free|operator new|__asan|__interceptor|__sanitizer|fuzzer::)|compiler-rt|/libc\.so|libclang_rt|sysdeps| in main | in __libc_start| in (str|mem|wcs)[a-z0-9_]* \(' | head -1; }
  local fault alloc
  fault=$(sed -n '/ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)/,$p' "$report" | first_frame)
  alloc=$(sed -n '/allocated by thread\|Direct leak\|Indirect leak/,/^$/p' "$report" | first_frame)
  # A leak report has no faulting stack, only the allocation's.
  if [[ ($fault == *libhdf5* || -z $fault) && ($alloc == *libhdf5* || -z $alloc) && -n $fault$alloc ]]; then
    echo hdf5
  else
    echo ours
  fi
}

status=0
for t in "${targets[@]}"; do
  seeds=$build/fuzz-seeds/$t corpus=$build/fuzz-corpus/$t crashes=$build/fuzz-crashes/$t
  rm -rf "$seeds" "$crashes"
  mkdir -p "$seeds" "$corpus" "$crashes"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -artifact_prefix="$crashes/"
    -print_final_stats=1)
  case $t in
  tensor_file)
    for f in "$repo"/tests/data/tensor_files/*.pt "$repo"/tests/data/tensor_files/*.safetensors; do
      cp "$f" "$seeds/"
      # The target wraps an input that starts with a pickle's PROTO into an archive of its own.
      unzip -p "$f" '*/data.pkl' >"$seeds/$(basename "$f").pkl" 2>/dev/null || rm -f "$seeds/$(basename "$f").pkl"
    done
    args+=(-max_len=16384 -dict="$repo/tests/fuzz/tensor_file.dict")
    ;;
  h5ad)
    cp "$repo"/tests/fuzz/h5ad_seeds/*.h5ad "$seeds/"
    args+=(-max_len=65536 -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
    # As glibc's malloc does, refuse an absurd size with NULL (HDF5 turns that into an error).
    export ASAN_OPTIONS=allocator_may_return_null=1
    export LSAN_OPTIONS=suppressions=$repo/tests/fuzz/hdf5_leaks.supp
    ;;
  config)
    find "$repo/configs" -name '*.toml' -exec cp --backup=numbered {} "$seeds/" \;
    args+=(-max_len=8192 -dict="$repo/tests/fuzz/config.dict")
    export SCSSL_FUZZ_PLUGINS=$plugins SCSSL_FUZZ_CONFIGS=$repo/configs ASAN_OPTIONS= LSAN_OPTIONS=
    ;;
  esac
  echo "== fuzzing $t for $seconds s (corpus $corpus, findings go to $crashes)"
  log=$build/fuzz-$t.log
  set +e
  "$build/bin/fuzz_$t" "${args[@]}" "$corpus" "$seeds" 2>&1 | tee "$log" | grep -E '^#[0-9]+.*(DONE|pulse)|INFO: fuzzed for|stat::|^==[0-9]+== ?ERROR|SUMMARY'
  code=${PIPESTATUS[0]}
  set -e
  # Every saved input is run once more and sorted (tensor_file and config stop at the first).
  hdf5=0 ours=0
  for found in "$crashes"/*; do
    [[ -e $found ]] || continue
    failed=0
    "$build/bin/fuzz_$t" -timeout=10 -rss_limit_mb=2560 "$found" >"$found.report" 2>&1 || failed=1
    # An out-of-memory report can come out without a stack (the memory watcher ended the run
    # first); the one allocation over the limit then names its caller when only it is watched.
    if ((failed)) && grep -q 'out-of-memory' "$found.report" && ! grep -qE '^ *#[0-9]+ ' "$found.report"; then
      "$build/bin/fuzz_$t" -timeout=10 -rss_limit_mb=0 -malloc_limit_mb=2560 "$found" \
        >"$found.report" 2>&1 || true
    fi
    if ((!failed)); then
      # Fork mode can save the input a crashed job was on when an earlier one set the stage.
      echo "fuzz.sh: $t: $found does not fail when run alone; kept for inspection" >&2
      mkdir -p "$crashes/not-reproduced"
      mv "$found" "$found.report" "$crashes/not-reproduced/"
    elif [[ $t == h5ad && $(classify "$found.report") == hdf5 ]]; then
      hdf5=$((hdf5 + 1))
      mkdir -p "$crashes/inside-hdf5"
      mv "$found" "$found.report" "$crashes/inside-hdf5/"
    else
      ours=$((ours + 1))
      echo "fuzz.sh: $t: $found fails in our code; its report: $found.report" >&2
    fi
  done
  echo "== $t: fuzzer exit $code; inputs failing in our code: $ours; crashes inside HDF5: $hdf5"
  if ((ours > 0)) || { ((code != 0)) && [[ $t != h5ad ]]; }; then status=1; fi
done
exit $status
