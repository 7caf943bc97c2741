#!/usr/bin/env bash
# Hardware counters (ncu) and disassembly of the scan kernels on a GPU machine, for tuning. Logs go to $OUT.
# Usage from the repository root: tests/cuda/profile_on_gpu.sh [benchmark filter]
# The benchmark's setup runs recurrent and block_parallel<8, 8> once (its cross-check): with the default filter, ncu
# profiles those first launches of each kernel family.
set -uo pipefail
out=${OUT:-/tmp/ssmlen-cuda}
mkdir -p "$out"
nvcc -O3 -std=c++20 -arch=sm_90 --extended-lambda --expt-relaxed-constexpr -Xcompiler=-fopenmp -Iinclude \
  bench/bench_scan_cuda.cu -o /tmp/bench_scan_cuda -lbenchmark_main -lbenchmark -lpthread || exit 1
cuobjdump -sass /tmp/bench_scan_cuda >"$out/sass.txt"
# per kernel: instructions, MUFU (one per decay), local-memory accesses
awk '/Function : /{name=$3} name && /^ +\/\*[0-9a-f]+\*\//{n[name]++} /MUFU/{m[name]++} /LDL|STL/{l[name]++}
     END{for (k in n) printf "%6d instr %4d MUFU %4d local  %s\n", n[k], m[k], l[k], k}' "$out/sass.txt" |
  grep -E "_kernel" | sort -k7 | tee "$out/sass_summary.txt"
filter=${1:-'bm_scan<sc::block_parallel<>, true>/0'}
ncu --clock-control none --kernel-name regex:"(forward|backward)_(block|recurrent)" --launch-count 4 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section InstructionStats \
  /tmp/bench_scan_cuda --benchmark_filter="$filter" --benchmark_min_time=0.01s >"$out/ncu.txt" 2>&1
echo "ncu rc=$?"
keys='_kernel<|Duration|Registers Per|Achieved Occupancy|Issued Warp Per|Executed Instructions  |No Eligible'
grep -E "$keys" "$out/ncu.txt" | cut -c1-110
