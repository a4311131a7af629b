#!/usr/bin/env bash
# Compile check of the scssl_anndata library (sdk/anndata/src) against other HDF5 releases'
# headers: every translation unit, with -fsyntax-only, once per header folder. docs/hdf5.md says
# which releases were checked this way and how such a folder is made.
#
#   tools/check_hdf5_versions.sh HEADER_DIR...
#
# HEADER_DIR holds one release's installed headers: hdf5.h, the H5*public.h / H5*develop.h files
# and the H5pubconf.h that configuring that release generates. Needs no HDF5 library.
# Environment: CXX (default g++); SCSSL_DLPACK_INCLUDE, the folder holding ATen/dlpack.h, which
# the SDK's abi.h includes (default: found next to LibTorch's headers in /usr/include or via
# python3's torch).
set -euo pipefail

if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit $(( $# == 0 ? 2 : 0 ))
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
cxx=${CXX:-g++}
dlpack=${SCSSL_DLPACK_INCLUDE:-}
if [[ -z $dlpack ]]; then
  if [[ -f /usr/include/ATen/dlpack.h ]]; then
    dlpack=/usr/include
  else
    dlpack=$(python3 -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])' 2>/dev/null || true)
  fi
fi
if [[ -z $dlpack || ! -f $dlpack/ATen/dlpack.h ]]; then
  echo "ATen/dlpack.h not found: set SCSSL_DLPACK_INCLUDE to the folder that holds ATen/" >&2
  exit 2
fi

sources=("$repo"/sdk/anndata/src/*.cpp)
failed=0
for dir in "$@"; do
  if [[ ! -f $dir/hdf5.h || ! -f $dir/H5public.h || ! -f $dir/H5pubconf.h ]]; then
    echo "$dir: not an HDF5 header folder (needs hdf5.h, H5public.h and H5pubconf.h)" >&2
    failed=1
    continue
  fi
  version=$(awk '/#define H5_VERS_(MAJOR|MINOR|RELEASE)[ \t]/ {printf "%s%s", sep, $3; sep="."}' "$dir/H5public.h")
  # The check is only worth something if these headers, not the system's, are the ones compiled.
  IFS=. read -r major minor release <<<"$version"
  probe="#include <hdf5.h>
static_assert(H5_VERS_MAJOR == $major && H5_VERS_MINOR == $minor && H5_VERS_RELEASE == $release, \"other HDF5 headers found first\");"
  flags=(-std=c++17 -fsyntax-only -Wall -Wextra -I"$dir" -I"$repo/sdk/anndata/include" -I"$repo/sdk/include")
  # /usr/include is searched anyway; naming it again would reorder the C library's headers.
  [[ $dlpack == /usr/include ]] || flags+=(-isystem "$dlpack")
  if ! echo "$probe" | "$cxx" "${flags[@]}" -x c++ -; then
    echo "HDF5 $version ($dir): FAILED (the probe did not see these headers)"
    failed=1
    continue
  fi
  ok=1
  # Twice: as configured, and as for an HDF5 built without its deprecated symbols (unless these
  # headers default to the 1.6 or 1.8 API, which such a build cannot have; Debian's 1.10 does).
  modes=("")
  grep -Eq '^#define H5_USE_1[68]_API_DEFAULT' "$dir/H5pubconf.h" || modes+=(-DH5_NO_DEPRECATED_SYMBOLS)
  for mode in "${modes[@]}"; do
    for src in "${sources[@]}"; do
      if ! "$cxx" "${flags[@]}" $mode -I"$repo/sdk/anndata/src" "$src"; then
        echo "HDF5 $version${mode:+ ($mode)}: $(basename "$src") does not compile" >&2
        ok=0
      fi
    done
  done
  if (( ok )); then
    what="its default API"
    (( ${#modes[@]} == 2 )) && what="with and without deprecated symbols"
    echo "HDF5 $version ($dir): ok (${#sources[@]} files, $what)"
  else
    echo "HDF5 $version ($dir): FAILED"
    failed=1
  fi
done
exit $failed
