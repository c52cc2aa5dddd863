#!/usr/bin/env bash
# Compiles CUDA sources with a real nvcc and ptxas on a machine without a GPU or a CUDA install: Debian's packages of
# the CUDA 12.4 toolkit (non-free, the release after the one the machine runs), downloaded with apt-get into a cache
# folder and unpacked there, never installed. Where tools/gpu/cuda-syntax.sh (clang) checks C++ only, this one also
# assembles the sm_90a code: compile errors in inline PTX, registers, spills and ptxas's warnings about wgmma it had to
# serialize, before a GPU run is spent on them.
#
#   tools/gpu/local-nvcc.sh [file.cu ...]     default: native/src/cuda/*.cu and the kernel tools of tools/gpu
#   MIXATTN_NVCC_DIR   where the toolkit is kept (default ${XDG_CACHE_HOME:-$HOME/.cache}/mixattn-nvcc-12.4)
#   SASS_DIR           also write each file's sm_90a machine code there (cuobjdump -sass, FILE.sass): to compare a
#                      kernel's instructions before and after a change that should not alter them
#
# Needs apt-get and the machine's Debian sources (their first URI is used with the next release's suite and the
# non-free component, in a private apt state: the machine's own package lists are not touched). Each file is compiled
# for sm_90a and compute_80 (the release library's targets, native/CMakeLists.txt) with the tuning build's definitions.
# Prints per file: ok / ERROR, and for the prefill and decode kernels their registers and spills; then every ptxas
# "Potential Performance Loss" line. Exit status: the number of files that failed.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
dir=${MIXATTN_NVCC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mixattn-nvcc-12.4}
nvcc=$dir/root/usr/lib/nvidia-cuda-toolkit/bin/nvcc
packages=(nvidia-cuda-toolkit=12.4.131~12.4.1-2 nvidia-cuda-dev=12.4.127~12.4.1-2 libcu++-dev=2.3.2-2)

if [ ! -x "$nvcc" ]; then
  echo "== fetching the CUDA 12.4 toolkit packages into $dir (about 1 GB, once)"
  apt=$dir/apt
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$dir/root"
  # The machine's first Debian archive (not its security archive) and the key it is signed with, from the sources
  # files apt-config names (deb822 stanzas or one-line entries).
  eval "$(apt-config shell sources_list Dir::Etc::sourcelist/f sources_parts Dir::Etc::sourceparts/d)"
  read -r uri key < <(cat "$sources_list" "$sources_parts"*.sources "$sources_parts"*.list 2>/dev/null | awk '
    /^URIs:/ && $2 !~ /security/ && !u {u = $2} /^Signed-By:/ && !k {k = $2}
    /^deb / && !u {for (i = 2; i <= NF; ++i) if ($i ~ /^(https?|file):/ && $i !~ /security/) {u = $i; break}
                   if (match($0, /signed-by=[^] ]+/) && !k) k = substr($0, RSTART + 10, RLENGTH - 10)}
    END {print u, k}')
  [ -n "${uri:-}" ] || { echo "no Debian archive found in $sources_list or $sources_parts"; exit 1; }
  echo "deb ${key:+[signed-by=$key] }$uri trixie main contrib non-free" > "$apt/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts" -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache" -o APT::Get::List-Cleanup=0)
  apt-get "${opts[@]}" update > "$apt/update.log" 2>&1 || { tail -5 "$apt/update.log"; exit 1; }
  (cd "$apt" && apt-get "${opts[@]}" download "${packages[@]}" > "$apt/download.log" 2>&1) || { tail -5 "$apt/download.log"; exit 1; }
  dpkg-deb -x "$apt"/nvidia-cuda-toolkit_*.deb "$dir/root"
  dpkg-deb -x "$apt"/libcu++-dev_*.deb "$dir/root"
  dpkg-deb --fsys-tarfile "$apt"/nvidia-cuda-dev_*.deb | tar -x -C "$dir/root" --wildcards './usr/include/*'
  rm -f "$apt"/*.deb
  # The package's nvcc.profile points at an installed toolkit: point it at the unpacked tree instead.
  bin=$dir/root/usr/lib/nvidia-cuda-toolkit/bin
  rm -f "$bin/nvcc.profile"
  {
    echo "NVVMIR_LIBRARY_DIR = $dir/root/usr/lib/nvidia-cuda-toolkit/libdevice"
    echo "PATH += $bin:$dir/root/usr/bin:"
    echo "INCLUDES += -I$dir/root/usr/include \$(_SPACE_)"
  } > "$bin/nvcc.profile"
  [ -x "$nvcc" ] || { echo "nvcc not found after unpacking"; exit 1; }
fi

files=("$@")
[ ${#files[@]} -gt 0 ] || files=(native/src/cuda/*.cu tools/gpu/kbench.cu tools/gpu/prefill_test.cu tools/gpu/paged_test.cu
                                tools/gpu/kvq_test.cu)
gtest=()
[ -d .gtest/include ] && gtest=(-I.gtest/include)  # else the system's GoogleTest, on the default include path
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
log=$scratch/log
failed=0
for f in "${files[@]}"; do
  if "$nvcc" -ccbin "${CXX:-g++}" -std=c++17 -O3 -Xptxas=-v -gencode=arch=compute_90a,code=sm_90a \
       -gencode=arch=compute_80,code=compute_80 -Inative/src -Inative/include -Itools/gpu "${gtest[@]}" -DMIXATTN_TUNING=1 \
       -c "$f" -o "$scratch/out.o" > "$log" 2>&1; then
    echo "ok    $f"
  else
    echo "ERROR $f"; grep -E "error" -A2 "$log" | head -20; failed=$((failed + 1))
  fi
  if [ -n "${SASS_DIR:-}" ]; then
    mkdir -p "$SASS_DIR"
    "$nvcc" -ccbin "${CXX:-g++}" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Inative/src -Inative/include -Itools/gpu \
      "${gtest[@]}" -DMIXATTN_TUNING=1 -cubin "$f" -o "$scratch/out.cubin" > "$scratch/cubin.log" 2>&1 \
      && "$dir/root/usr/bin/cuobjdump" -sass "$scratch/out.cubin" > "$SASS_DIR/$(basename "$f").sass"
  fi
  # Registers and spills of the kernels that matter for speed, one line per instantiation; serialized wgmma.
  bash tools/gpu/ptxas-summary.sh < "$log" | sed 's/^/      /'
done
exit $failed
