#!/usr/bin/env bash
# Package smoke test (issue 8; run by tests/MixAttention.Onnx.Tests/Packaging/PackageTests.cs):
#   1. packs MixAttention.Onnx (library + runtime + libmixattention_ops.so) and the mixattn tool into a temp local feed;
#   2. creates a fresh `dotnet new console` project outside the repository that references MixAttention.Onnx from that
#      feed (dependencies from the NuGet cache / nuget.org), writes samples/QuickStart/Program.cs into it, converts
#      graphs/mistral-torchscript/model.onnx with the native layout and decodes a few steps, then the GPT-2 sample
#      with its tokenizer (ORT Extensions from the package's dependency);
#   3. installs the tool into a temp tool path and runs `mixattn --help`, `mixattn inspect` and `mixattn convert --json`.
# Prints "smoke: <step> ok" lines and ends with "package smoke: PASS" (exit 0) or "package smoke: FAIL <step>" (exit 1).
# Env: MIXATTN_SMOKE_KEEP=1 keeps the temp folder; MIXATTN_SMOKE_NO_BUILD=1 packs the existing Release build;
#      MIXATTN_PACK_CUDA=auto|true|false (default false here: the smoke test checks packaging, not the CUDA build).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
# The fresh project must not see the repository's Directory.*.props (central versions, warnings as errors).
work=$(mktemp -d "${TMPDIR:-/tmp}/mixattn-smoke.XXXXXX")
feed="$work/feed"; app="$work/app"; tools="$work/tools"; out="$work/out"
version="0.1.0-smoke"
cleanup() { if [ "${MIXATTN_SMOKE_KEEP:-0}" = 1 ]; then echo "smoke: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
fail() { echo "package smoke: FAIL $1"; [ -f "$work/last.log" ] && tail -n 40 "$work/last.log"; exit 1; }
step() { echo "smoke: $1 ok"; }
t0=$(date +%s)

# 1. Pack both into the local feed. A fixed prerelease version, evicted from the global packages folder first,
#    so a re-run never restores a stale copy; everything else comes from the NuGet cache.
build_flag=()
if [ "${MIXATTN_SMOKE_NO_BUILD:-0}" = 1 ]; then build_flag=(--no-build); else
  dotnet build "$repo/tools/MixAttention.Onnx.Cli" -c Release >"$work/last.log" 2>&1 || fail build
  build_flag=(--no-build)
fi
dotnet pack "$repo/src/MixAttention.Onnx.Runtime" -c Release "${build_flag[@]}" -o "$feed" -p:PackageVersion=$version \
  -p:MixAttnPackCuda="${MIXATTN_PACK_CUDA:-false}" >"$work/last.log" 2>&1 || fail pack-library
dotnet pack "$repo/tools/MixAttention.Onnx.Cli" -c Release "${build_flag[@]}" -o "$feed" -p:PackageVersion=$version >"$work/last.log" 2>&1 || fail pack-tool
lib="$feed/MixAttention.Onnx.$version.nupkg"; tool="$feed/mixattn.$version.nupkg"
[ -f "$lib" ] && [ -f "$tool" ] || fail pack-output
listing=$(unzip -l "$lib")
for f in lib/net10.0/MixAttention.Onnx.dll lib/net10.0/MixAttention.Onnx.Runtime.dll lib/net10.0/MixAttention.Onnx.Runtime.xml \
         runtimes/linux-x64/native/libmixattention_ops.so buildTransitive/MixAttention.Onnx.targets; do
  grep -q " $f\$" <<<"$listing" || { echo "missing $f in $(basename "$lib")" >"$work/last.log"; fail package-layout; }
done
nuspec=$(unzip -p "$lib" MixAttention.Onnx.nuspec)
for d in Microsoft.ML.OnnxRuntime.Gpu.Linux Microsoft.ML.OnnxRuntime.Managed Google.Protobuf Microsoft.ML.OnnxRuntime.Extensions; do
  grep -q "id=\"$d\"" <<<"$nuspec" || { echo "missing dependency $d" >"$work/last.log"; fail package-dependencies; }
done
step "pack ($(du -h "$lib" | cut -f1) library, $(du -h "$tool" | cut -f1) tool)"

# 2. A fresh console project that uses the package.
rm -rf "${NUGET_PACKAGES:-$HOME/.nuget/packages}/mixattention.onnx/$version"   # the global packages folder
dotnet new console -o "$app" -n SmokeApp --no-restore >"$work/last.log" 2>&1 || fail new-console
cat >"$app/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
</configuration>
XML
cp "$repo/samples/QuickStart/Program.cs" "$app/Program.cs"
(cd "$app" && dotnet add package MixAttention.Onnx --version $version --no-restore >"$work/last.log" 2>&1) || fail add-package
(cd "$app" && dotnet build -c Release >"$work/last.log" 2>&1) || fail build-app
[ -f "$app/bin/Release/net10.0/libmixattention_ops.so" ] || { ls -R "$app/bin" >"$work/last.log"; fail op-library-in-output; }
[ -f "$app/bin/Release/net10.0/libortextensions.so" ] || { ls -R "$app/bin" >"$work/last.log"; fail ortextensions-in-output; }
step "console app builds against MixAttention.Onnx $version"
"$app/bin/Release/net10.0/SmokeApp" "$repo/graphs/mistral-torchscript/model.onnx" "$out/mistral" >"$work/last.log" 2>&1 || fail run-sample
cat "$work/last.log"
grep -q "^converted: 2 layers" "$work/last.log" && grep -q "^step 7: tokens" "$work/last.log" && grep -q "^KV memory: " "$work/last.log" || fail sample-output
step "sample: mistral-torchscript converted (native) and decoded"
"$app/bin/Release/net10.0/SmokeApp" "$repo/graphs/gpt2-ortattention/model.onnx" "$out/gpt2" --tokenizer "$repo/graphs/demo" >"$work/last.log" 2>&1 || fail run-sample-tokenizer
grep -q "^KV memory: " "$work/last.log" || fail sample-tokenizer-output
step "sample: gpt2-ortattention with its tokenizer (ORT Extensions)"

# 3. The tool, installed from the feed.
dotnet tool install mixattn --version $version --tool-path "$tools" --add-source "$feed" >"$work/last.log" 2>&1 || fail tool-install
step "dotnet tool install mixattn"
"$tools/mixattn" --help >"$work/last.log" 2>&1 && grep -q "convert" "$work/last.log" || fail tool-help
"$tools/mixattn" inspect "$repo/graphs/mistral-torchscript/model.onnx" --json >"$work/inspect.json" 2>"$work/last.log" || fail tool-inspect
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert len(d['layers'])==2, d" "$work/inspect.json" 2>"$work/last.log" || fail tool-inspect-json
step "mixattn inspect --json"
"$tools/mixattn" convert "$repo/graphs/mistral-torchscript/model.onnx" -o "$out/tool/model.onnx" --layout native --json >"$work/convert.json" 2>"$work/last.log" || fail tool-convert
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['exact'] and len(d['cache_plan']['caches'])==2, d" "$work/convert.json" 2>"$work/last.log" || fail tool-convert-json
[ -f "$out/tool/model.onnx" ] || fail tool-convert-output
step "mixattn convert --json"
"$tools/mixattn" verify "$repo/graphs/mistral-torchscript/model.onnx" "$out/tool/model.onnx" --steps 4 --expect-exact --json >"$work/last.log" 2>&1 || fail tool-verify
step "mixattn verify --expect-exact (the tool's op library and ONNX Runtime load)"
(cd "$work" && "$tools/mixattn" demo --max-new 4 >"$work/last.log" 2>&1) && grep -q "native" "$work/last.log" || fail tool-demo
step "mixattn demo (the GPT-2 sample packed with the tool, run outside the repository)"
echo "package smoke: PASS in $(( $(date +%s) - t0 )) s"
