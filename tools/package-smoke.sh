#!/usr/bin/env bash
# Package smoke test (issues 8 and 21; run by tests/MixAttention.Onnx.Tests/Packaging/PackageTests.cs):
#   1. packs the CPU library package MixAttention.Onnx, the GPU library package MixAttention.Onnx.Gpu (same assemblies
#      and op library, depending on ORT's CUDA build instead of its CPU build) and the mixattn tool into a temp local
#      feed; checks each one's layout, dependencies and size ("smoke: size ID BYTES limit BYTES" lines: far below
#      nuget.org's 250 MB, and the tool without ORT's CUDA provider);
#   2. creates a fresh `dotnet new console` project outside the repository that references MixAttention.Onnx from that
#      feed (dependencies from the NuGet cache / nuget.org), writes samples/QuickStart/Program.cs into it, converts
#      graphs/mistral-torchscript/model.onnx with the native layout and decodes a few steps, then the GPT-2 sample
#      with its tokenizer (ORT Extensions from the package's dependency);
#   3. a second fresh project on MixAttention.Onnx.Gpu: restores ORT's CUDA build through the package, builds, and runs
#      the same sample on CPU (this machine has no GPU; the CUDA path is checked on the GPU machine, docs/gpu.md);
#   4. installs the tool into a temp tool path and runs --help, inspect, convert, verify and demo;
#   5. packs MixAttention.Onnx.Chat (MixAttentionChatClient; depends on the MixAttention.Onnx package at the same
#      version, carries the embedded Jinja engine's licence notice), builds a fresh project on it with
#      samples/ChatClient/Program.cs, which converts the bundled demo model (graphs/gpt2-ortattention, tokenizer and chat
#      template from graphs/demo) and gets a reply through IChatClient.GetResponseAsync and the same text streamed;
#      then a GPU chat project (MixAttention.Onnx.Gpu + MixAttention.Onnx.Chat, the CPU package and ORT's CPU build
#      excluded) that must get no asset of ORT's CPU build and run the same sample (on CPU here).
# Prints "smoke: <step> ok" lines and ends with "package smoke: PASS" (exit 0) or "package smoke: FAIL <step>" (exit 1).
# Env: MIXATTN_SMOKE_KEEP=1 keeps the temp folder; MIXATTN_SMOKE_NO_BUILD=1 packs the existing Release build;
#      MIXATTN_PACK_CUDA=auto|true|false (default false here: the smoke test checks packaging, not the CUDA build);
#      MIXATTN_SMOKE_GPU_NATIVE_LIB=PATH packs that prebuilt (CUDA) libmixattention_ops.so into the GPU package, to
#      check the size of the package as it would be published.
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

# 1. Pack the four into the local feed. A fixed prerelease version, evicted from the global packages folder first,
#    so a re-run never restores a stale copy; everything else comes from the NuGet cache.
build_flag=()
if [ "${MIXATTN_SMOKE_NO_BUILD:-0}" = 1 ]; then build_flag=(--no-build); else
  dotnet build "$repo/tools/MixAttention.Onnx.Cli" -c Release >"$work/last.log" 2>&1 || fail build
  dotnet build "$repo/src/MixAttention.Onnx.Chat" -c Release >"$work/last.log" 2>&1 || fail build-chat
  build_flag=(--no-build)
fi
dotnet pack "$repo/src/MixAttention.Onnx.Runtime" -c Release "${build_flag[@]}" -o "$feed" -p:PackageVersion=$version \
  -p:MixAttnPackCuda="${MIXATTN_PACK_CUDA:-false}" >"$work/last.log" 2>&1 || fail pack-library
gpu_lib=(-p:MixAttnPackCuda="${MIXATTN_PACK_CUDA:-false}")
[ -n "${MIXATTN_SMOKE_GPU_NATIVE_LIB:-}" ] && gpu_lib=(-p:MixAttnPackNativeLib="$MIXATTN_SMOKE_GPU_NATIVE_LIB")
# --no-restore: the first pack restored the project; the package id is all that differs.
dotnet pack "$repo/src/MixAttention.Onnx.Runtime" -c Release "${build_flag[@]}" --no-restore -o "$feed" -p:PackageVersion=$version \
  -p:MixAttnPackage=gpu "${gpu_lib[@]}" >"$work/last.log" 2>&1 || fail pack-gpu-library
dotnet pack "$repo/src/MixAttention.Onnx.Chat" -c Release "${build_flag[@]}" -o "$feed" -p:PackageVersion=$version \
  >"$work/last.log" 2>&1 || fail pack-chat
dotnet pack "$repo/tools/MixAttention.Onnx.Cli" -c Release "${build_flag[@]}" -o "$feed" -p:PackageVersion=$version >"$work/last.log" 2>&1 || fail pack-tool
lib="$feed/MixAttention.Onnx.$version.nupkg"; gpu="$feed/MixAttention.Onnx.Gpu.$version.nupkg"; tool="$feed/mixattn.$version.nupkg"
chat="$feed/MixAttention.Onnx.Chat.$version.nupkg"
[ -f "$lib" ] && [ -f "$gpu" ] && [ -f "$tool" ] && [ -f "$chat" ] || { ls "$feed" >"$work/last.log"; fail pack-output; }
for pkg in "$lib" "$gpu"; do
  id=$(basename "$pkg" ".$version.nupkg")
  listing=$(unzip -l "$pkg")
  for f in lib/net10.0/MixAttention.Onnx.dll lib/net10.0/MixAttention.Onnx.Runtime.dll lib/net10.0/MixAttention.Onnx.Runtime.xml \
           runtimes/linux-x64/native/libmixattention_ops.so "build/$id.targets" "buildTransitive/$id.targets"; do
    grep -q " $f\$" <<<"$listing" || { echo "missing $f in $(basename "$pkg")" >"$work/last.log"; fail package-layout; }
  done
done
# Each library package depends on one ORT native package: the CPU build or the CUDA build, never both.
has_dep() { grep -q "id=\"$2\"" <<<"$(unzip -p "$1" '*.nuspec')"; }
for d in Microsoft.ML.OnnxRuntime Microsoft.ML.OnnxRuntime.Managed Google.Protobuf Microsoft.ML.OnnxRuntime.Extensions; do
  has_dep "$lib" $d || { echo "MixAttention.Onnx: missing dependency $d" >"$work/last.log"; fail package-dependencies; }
done
for d in Microsoft.ML.OnnxRuntime.Gpu.Linux Microsoft.ML.OnnxRuntime.Managed Google.Protobuf Microsoft.ML.OnnxRuntime.Extensions; do
  has_dep "$gpu" $d || { echo "MixAttention.Onnx.Gpu: missing dependency $d" >"$work/last.log"; fail package-dependencies; }
done
has_dep "$lib" Microsoft.ML.OnnxRuntime.Gpu.Linux && { echo "MixAttention.Onnx depends on ORT's CUDA build" >"$work/last.log"; fail package-dependencies; }
has_dep "$gpu" Microsoft.ML.OnnxRuntime && { echo "MixAttention.Onnx.Gpu depends on ORT's CPU build" >"$work/last.log"; fail package-dependencies; }
# The chat package: its assembly, docs and the third-party licence notice; MixAttention.Onnx at this very version (ORT
# through it, never directly), Microsoft.Extensions.AI.Abstractions and Jint.
chat_listing=$(unzip -l "$chat")
for f in lib/net10.0/MixAttention.Onnx.Chat.dll lib/net10.0/MixAttention.Onnx.Chat.xml README.md THIRD-PARTY-NOTICES.md \
         ThirdParty/huggingface-jinja/LICENSE ThirdParty/huggingface-jinja/README.md; do
  grep -q " $f\$" <<<"$chat_listing" || { echo "missing $f in $(basename "$chat")" >"$work/last.log"; fail chat-package-layout; }
done
grep -q "lib/net10.0/MixAttention.Onnx.dll\|lib/net10.0/MixAttention.Onnx.Runtime.dll\|libmixattention_ops" <<<"$chat_listing" && fail chat-package-carries-library
grep -q "Copyright (c) 2023 Hugging Face" <<<"$(unzip -p "$chat" THIRD-PARTY-NOTICES.md)" || fail chat-package-notice
chat_nuspec=$(unzip -p "$chat" '*.nuspec')
grep -q "id=\"MixAttention.Onnx\" version=\"$version\"" <<<"$chat_nuspec" || { echo "$chat_nuspec" >"$work/last.log"; fail chat-package-dependencies; }
for d in Microsoft.Extensions.AI.Abstractions Jint; do
  has_dep "$chat" $d || { echo "MixAttention.Onnx.Chat: missing dependency $d" >"$work/last.log"; fail chat-package-dependencies; }
done
grep -q 'id="MixAttention.Onnx.Gpu"\|id="Microsoft.ML.OnnxRuntime' <<<"$chat_nuspec" && { echo "$chat_nuspec" >"$work/last.log"; fail chat-package-dependencies; }
# Nothing of ORT's own native libraries inside the library packages, and no CUDA provider inside the tool.
unzip -l "$lib" | grep -q "libonnxruntime" && fail library-carries-ort
unzip -l "$gpu" | grep -q "libonnxruntime" && fail gpu-library-carries-ort
unzip -l "$tool" | grep -q "libonnxruntime_providers_cuda\|libonnxruntime_providers_tensorrt" && fail tool-carries-cuda-provider
# Sizes (bytes), against limits far below nuget.org's 250 MB (262,144,000 bytes); PackageTests asserts them too.
size_check() {
  local bytes; bytes=$(stat -c %s "$1")
  echo "smoke: size $(basename "$1" ".$version.nupkg") $bytes limit $2"
  [ "$bytes" -le "$2" ] || fail "size-$(basename "$1")"
}
size_check "$lib" $((8 * 1024 * 1024))
size_check "$gpu" $((150 * 1024 * 1024))
size_check "$tool" $((64 * 1024 * 1024))
size_check "$chat" $((1 * 1024 * 1024))
step "pack ($(du -h "$lib" | cut -f1) library, $(du -h "$gpu" | cut -f1) GPU library, $(du -h "$tool" | cut -f1) tool, $(du -h "$chat" | cut -f1) chat)"

# 2. A fresh console project that uses the CPU package.
nuget_root="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
rm -rf "$nuget_root/mixattention.onnx/$version" "$nuget_root/mixattention.onnx.gpu/$version" "$nuget_root/mixattn/$version" \
  "$nuget_root/mixattention.onnx.chat/$version"
new_app() {   # new_app DIR PACKAGE_ID [SAMPLE]: a console project with a sample (QuickStart) and a nuget.config of the feed
  dotnet new console -o "$1" -n SmokeApp --no-restore >"$work/last.log" 2>&1 || return 1
  cat >"$1/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
</configuration>
XML
  cp "$repo/samples/${3:-QuickStart}/Program.cs" "$1/Program.cs"
  (cd "$1" && dotnet add package "$2" --version $version --no-restore >"$work/last.log" 2>&1)
}
new_app "$app" MixAttention.Onnx || fail add-package
(cd "$app" && dotnet build -c Release >"$work/last.log" 2>&1) || fail build-app
bin="$app/bin/Release/net10.0"
[ -f "$bin/libmixattention_ops.so" ] || { ls -R "$app/bin" >"$work/last.log"; fail op-library-in-output; }
[ -f "$bin/libortextensions.so" ] || { ls -R "$app/bin" >"$work/last.log"; fail ortextensions-in-output; }
[ -f "$bin/runtimes/linux-x64/native/libonnxruntime.so" ] || { ls -R "$app/bin" >"$work/last.log"; fail ort-in-output; }
[ -e "$bin/runtimes/linux-x64/native/libonnxruntime_providers_cuda.so" ] && fail cpu-app-got-cuda-provider
step "console app builds against MixAttention.Onnx $version"
"$bin/SmokeApp" "$repo/graphs/mistral-torchscript/model.onnx" "$out/mistral" >"$work/last.log" 2>&1 || fail run-sample
cat "$work/last.log"
grep -q "^converted: 2 layers" "$work/last.log" && grep -q "^step 7: tokens" "$work/last.log" && grep -q "^KV memory: " "$work/last.log" || fail sample-output
step "sample: mistral-torchscript converted (native) and decoded"
"$bin/SmokeApp" "$repo/graphs/gpt2-ortattention/model.onnx" "$out/gpt2" --tokenizer "$repo/graphs/demo" >"$work/last.log" 2>&1 || fail run-sample-tokenizer
grep -q "^KV memory: " "$work/last.log" || fail sample-tokenizer-output
step "sample: gpt2-ortattention with its tokenizer (ORT Extensions)"

# 3. The GPU package: ORT's CUDA build comes through its dependency; the sample runs on CPU here.
new_app "$work/gpuapp" MixAttention.Onnx.Gpu || fail add-gpu-package
(cd "$work/gpuapp" && dotnet build -c Release >"$work/last.log" 2>&1) || fail build-gpu-app
gbin="$work/gpuapp/bin/Release/net10.0"
[ -f "$gbin/libmixattention_ops.so" ] || { ls -R "$gbin" >"$work/last.log"; fail gpu-op-library-in-output; }
[ -f "$gbin/runtimes/linux-x64/native/libonnxruntime_providers_cuda.so" ] || { ls -R "$gbin" >"$work/last.log"; fail gpu-app-without-cuda-provider; }
step "console app builds against MixAttention.Onnx.Gpu $version (ORT's CUDA provider restored)"
"$gbin/SmokeApp" "$repo/graphs/mistral-torchscript/model.onnx" "$out/mistral-gpu" >"$work/last.log" 2>&1 || fail run-gpu-sample
grep -q "^step 7: tokens" "$work/last.log" || fail gpu-sample-output
step "sample on MixAttention.Onnx.Gpu (CPU execution)"

# 4. The tool, installed from the feed.
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
# 5. The chat package from a fresh project: the bundled demo model through IChatClient, whole and streamed.
new_app "$work/chatapp" MixAttention.Onnx.Chat ChatClient || fail add-chat-package
(cd "$work/chatapp" && dotnet build -c Release >"$work/last.log" 2>&1) || fail build-chat-app
cbin="$work/chatapp/bin/Release/net10.0"
[ -f "$cbin/MixAttention.Onnx.Runtime.dll" ] && [ -f "$cbin/libmixattention_ops.so" ] || { ls -R "$cbin" >"$work/last.log"; fail chat-app-without-library; }
[ -e "$cbin/runtimes/linux-x64/native/libonnxruntime_providers_cuda.so" ] && fail chat-app-got-cuda-provider
step "console app builds against MixAttention.Onnx.Chat $version (MixAttention.Onnx through its dependency)"
chat_ok() {   # chat_ok BIN OUT: the ChatClient sample on the demo model, a non-empty reply and the same text streamed
  "$1/SmokeApp" "$repo/graphs/gpt2-ortattention/model.onnx" "$repo/graphs/demo" "$2" >"$work/last.log" 2>&1 || return 1
  grep -q "^reply: ." "$work/last.log" && grep -q "^usage: [1-9][0-9]* prompt tokens, [1-9][0-9]* completion tokens" "$work/last.log" \
    && grep -q "^streamed: same text$" "$work/last.log"
}
chat_ok "$cbin" "$out/chat" || fail chat-sample
cat "$work/last.log"
step "chat sample: demo model through IChatClient.GetResponseAsync and GetStreamingResponseAsync"
# A GPU app pairs the chat package with MixAttention.Onnx.Gpu and excludes the CPU package and ORT's CPU build
# (docs/serving.md): excluding MixAttention.Onnx alone does not cut ORT's CPU build, which the chat package's path to
# MixAttention.Onnx still brings (NuGet unions the include flags of every path). Only the CUDA build's libonnxruntime.so
# may be restored.
ort_version=$(unzip -p "$lib" '*.nuspec' | grep -o 'id="Microsoft.ML.OnnxRuntime" version="[^"]*"' | sed 's/.*version="//; s/"$//')
[ -n "$ort_version" ] || fail ort-version
new_app "$work/gpuchatapp" MixAttention.Onnx.Chat ChatClient || fail add-gpu-chat-package
(cd "$work/gpuchatapp" && dotnet add package MixAttention.Onnx.Gpu --version $version --no-restore >"$work/last.log" 2>&1 \
  && dotnet add package MixAttention.Onnx --version $version --no-restore >"$work/last.log" 2>&1 \
  && dotnet add package Microsoft.ML.OnnxRuntime --version "$ort_version" --no-restore >"$work/last.log" 2>&1 \
  && python3 - SmokeApp.csproj <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
for pkg in ("MixAttention.Onnx", "Microsoft.ML.OnnxRuntime"):
    s, n = re.subn(r'(<PackageReference Include="%s" Version="[^"]+") />' % re.escape(pkg), r'\1 ExcludeAssets="all" />', s)
    assert n == 1, (pkg, s)
open(p, "w").write(s)
PY
) || fail add-gpu-chat-package
(cd "$work/gpuchatapp" && dotnet build -c Release >"$work/last.log" 2>&1) || fail build-gpu-chat-app
gcbin="$work/gpuchatapp/bin/Release/net10.0"
[ -f "$gcbin/runtimes/linux-x64/native/libonnxruntime_providers_cuda.so" ] || { ls -R "$gcbin" >"$work/last.log"; fail gpu-chat-app-without-cuda-provider; }
python3 - "$gcbin/SmokeApp.deps.json" >"$work/last.log" 2>&1 <<'PY' || fail gpu-chat-app-carries-cpu-ort
import json, sys
libs = json.load(open(sys.argv[1]))["targets"]
libs = {k: v for t in libs.values() for k, v in t.items()}
cpu = [k for k in libs if k.split("/")[0] in ("Microsoft.ML.OnnxRuntime", "MixAttention.Onnx") and (libs[k].get("runtimeTargets") or libs[k].get("runtime") or libs[k].get("native"))]
assert not cpu, f"assets of the excluded CPU packages in the GPU chat app: {cpu}"
assert any(k.startswith("Microsoft.ML.OnnxRuntime.Gpu.Linux/") for k in libs), "no Microsoft.ML.OnnxRuntime.Gpu.Linux in deps.json"
PY
step "console app builds against MixAttention.Onnx.Chat + MixAttention.Onnx.Gpu (only ORT's CUDA build)"
chat_ok "$gcbin" "$out/chat-gpu" || fail gpu-chat-sample
step "chat sample on MixAttention.Onnx.Gpu (CPU execution)"
echo "package smoke: PASS in $(( $(date +%s) - t0 )) s"
