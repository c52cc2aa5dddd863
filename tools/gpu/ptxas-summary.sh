#!/usr/bin/env bash
# Reads a build log with ptxas's verbose output (-Xptxas=-v) on standard input and prints, one line per instantiation
# of the kernels whose names match PATTERN (an extended regex; default: the prefill and decode kernels), its registers
# and spills, then every ptxas "Potential Performance Loss" warning (wgmma it had to serialize), demangled.
# Used by tools/gpu/local-nvcc.sh and tools/gpu/kernels.sh.
#
#   tools/gpu/ptxas-summary.sh [PATTERN] < build.log
set -uo pipefail
pattern=${1:-(Prefill|Decode)[A-Za-z]*Kernel}
log=$(cat)
awk -v pattern="$pattern" '/Compiling entry function/ {name = $0} /spill stores/ {spill = $0}
     /Used [0-9]+ registers/ && name ~ pattern {print name "|" spill "|" $0}' <<< "$log" \
  | sed -E "s/.*entry function '([^']*)'.*\\|(.*)\\|.*(Used [0-9]+ registers).*/\\1 \\3,\\2/" | c++filt \
  | sed -E 's/mixattn::cuda::(\(anonymous namespace\)::)?//g; s/\([^()]*\) Used/ Used/; s/ +/ /g' | sort -u
grep -E "Potential Performance Loss" <<< "$log" \
  | sed -E "s/.*\\((C[0-9]+)\\) Potential Performance Loss: (.*) in the function '([^']*)'.*/\\1 \\3: \\2/" | c++filt
exit 0
