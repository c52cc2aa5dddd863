#!/usr/bin/env bash
# Configure, build and run the native tests (GoogleTest via ctest). CI entry point.
#
#   native/run-tests.sh            # Release build + AddressSanitizer/UBSan build (default)
#   MIXATTN_ASAN=0 native/run-tests.sh   # skip the sanitizer build
#   ORT_INCLUDE_DIR=... native/run-tests.sh   # ORT 1.31 headers (default: the NuGet global packages
#                                             # folder, $NUGET_PACKAGES or ~/.nuget/packages; run
#                                             # 'dotnet restore MixAttention.Onnx.sln' first to fill it)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
jobs="${MIXATTN_JOBS:-$(nproc)}"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
ort_args=()
[[ -n "${ORT_INCLUDE_DIR:-}" ]] && ort_args=("-DORT_INCLUDE_DIR=${ORT_INCLUDE_DIR}")

run() {  # run <build dir> <cmake args...>
  local dir="$1"; shift
  echo "== configure ${dir} $*"
  # Reuse a build dir only if it was made by the same generator.
  if [[ -f "${dir}/CMakeCache.txt" ]] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${generator[1]:-Unix Makefiles}" "${dir}/CMakeCache.txt"; then
    rm -rf "${dir}"
  fi
  cmake -S "${here}" -B "${dir}" "${generator[@]}" "${ort_args[@]}" -DMIXATTN_TESTS=ON "$@" >/dev/null
  echo "== build ${dir}"
  cmake --build "${dir}" -j "${jobs}"
  echo "== ctest ${dir}"
  ctest --test-dir "${dir}" --output-on-failure -j "${jobs}"
}

start=$SECONDS
run "${here}/build/release" -DCMAKE_BUILD_TYPE=Release -DMIXATTN_ASAN=OFF
if [[ "${MIXATTN_ASAN:-1}" != "0" ]]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run "${here}/build/asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMIXATTN_ASAN=ON
fi
echo "== native tests passed in $((SECONDS - start)) s"
