#!/usr/bin/env bash
# Builds the CUDA scan test and benchmark by hand with nvcc (no CMake configure needed), then runs the test, the
# memory and race checkers on the small case, and the benchmark. Logs go to $OUT (default /tmp/ssmlen-cuda).
# Usage from the repository root: tests/cuda/run_on_gpu.sh [benchmark filter]
set -uo pipefail
out=${OUT:-/tmp/ssmlen-cuda}
mkdir -p "$out"
nvcc_flags=(-O3 -std=c++20 -arch=sm_90 --extended-lambda --expt-relaxed-constexpr -Xcompiler=-fopenmp -Iinclude)
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
nvcc --version | tail -1
start=$(date +%s)
nvcc "${nvcc_flags[@]}" -Xptxas -v tests/cuda/test_selective_scan.cu -o /tmp/test_scan_cuda \
  >"$out/build_test.txt" 2>&1 &
nvcc "${nvcc_flags[@]}" bench/bench_scan_cuda.cu -o /tmp/bench_scan_cuda -lbenchmark_main -lbenchmark -lpthread \
  >"$out/build_bench.txt" 2>&1 &
wait
echo "build: $(($(date +%s) - start)) s"
grep -E "error" "$out/build_test.txt" "$out/build_bench.txt" && exit 1
grep -E "Compiling entry|Used|spill" "$out/build_test.txt" | head -60 >"$out/registers.txt"
/tmp/test_scan_cuda 2>&1 | tee "$out/test.log" | tail -4
small='*small ragged*'
compute-sanitizer --tool memcheck --leak-check full /tmp/test_scan_cuda -tc="$small" >"$out/memcheck.log" 2>&1
echo "memcheck rc=$?: $(grep -E 'ERROR SUMMARY' "$out/memcheck.log")"
compute-sanitizer --tool racecheck /tmp/test_scan_cuda -tc="$small" >"$out/racecheck.log" 2>&1
echo "racecheck rc=$?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$out/racecheck.log")"
/tmp/bench_scan_cuda --benchmark_filter="${1:-.}" --benchmark_min_time=0.3s >"$out/bench.log" 2>&1
grep -E "^bm_copy" "$out/bench.log" | cut -c1-150
# one line per benchmark: label, median time, GB/s, fraction of the copy rate, cross-check
pattern='s/^bm_[^ ]+ .*GB\/s=([0-9.k]+) .*copy_frac=([0-9.]+) .*us_median=([0-9.k]+)( xcheck=([^ ]+) (.*))?$/'
sed -nE "$pattern\\6 \\3 us, \\1 GB\/s, copy_frac \\2, xcheck \\5/p" "$out/bench.log"
