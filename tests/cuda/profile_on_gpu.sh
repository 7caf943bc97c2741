#!/usr/bin/env bash
# Hardware counters (ncu) and disassembly of the scan kernels on a GPU machine, for tuning: the default policy's
# kernels' instruction mix (tests/cuda/sass_mix.py) and warp-stall samples (tests/cuda/stall_mix.py), and counters
# of the other policies' kernels. Logs go to $OUT.
# Usage from the repository root: tests/cuda/profile_on_gpu.sh [benchmark filter]
#                             or: tests/cuda/profile_on_gpu.sh train|step [filter]   (kernel times of a training or
#                                 rollout step)
#                             or: tests/cuda/profile_on_gpu.sh limits [filter]   (a training step's kernels against the
#                                 limits of the units that bound them: tests/cuda/step_limits.py)
# The benchmark's setup runs recurrent and block_parallel<8, 8> once (its cross-check): with the default filter, ncu
# profiles those first launches of each kernel family.
set -uo pipefail
out=${OUT:-/tmp/ssmlen-cuda}
mkdir -p "$out"

# tests/cuda/profile_on_gpu.sh train [benchmark filter]: the time of every kernel in one training step
# (bench_train_cuda.cu, default the paper shape on addition batches with bf16 GEMMs, eager), summed per kernel.
# tests/cuda/profile_on_gpu.sh limits [benchmark filter]: the same step with each launch's instructions, SM cycles,
# multi-function-unit instructions and DRAM bytes, summarized by tests/cuda/step_limits.py against the copy rate
# SSMLEN_COPY_RATE (TB/s; default 4.22, what bench_scan_cuda's bm_copy measures on an H200).
# tests/cuda/profile_on_gpu.sh step [benchmark filter]: the same for one rollout step (bench_rollout_cuda.cu, default
# 256 rows of the paper shape with the addition task's vocabulary, bf16 GEMMs, eager launches).
if [[ ${1:-} == train || ${1:-} == step || ${1:-} == limits ]]; then
  metrics=gpu__time_duration.sum
  if [[ $1 == step ]]; then
    src=bench/bench_rollout_cuda.cu filter=${2:-bm_step_loop/paper_task_vocab_bf16_eager} name=rollout_step_kernels
  else
    # one benchmark, one profiled step ('paper_addition_bf16' alone would match the graphs variant too)
    src=bench/bench_train_cuda.cu filter=${2:-paper_addition_bf16/} name=train_step_kernels
    if [[ $1 == limits ]]; then
      name=train_step_limits
      metrics+=,sm__cycles_elapsed.avg,sm__inst_executed.sum,sm__inst_executed_pipe_xu.sum,dram__bytes.sum
    fi
  fi
  nvcc -O3 -std=c++20 -arch=sm_90 --extended-lambda --expt-relaxed-constexpr -Xcompiler=-fopenmp -Iinclude \
    "$src" -o /tmp/bench_profiled -lcublas -lbenchmark_main -lbenchmark -lpthread || exit 1
  SSMLEN_PROFILE_STEP=1 ncu --clock-control none --profile-from-start off --metrics "$metrics" --csv \
    /tmp/bench_profiled --benchmark_filter="$filter" >"$out/$name.csv" 2>"$out/ncu.err"
  if [[ $1 == limits ]]; then
    python3 tests/cuda/step_limits.py "$out/$name.csv" --copy-rate "${SSMLEN_COPY_RATE:-4.22}" | tee "$out/$name.txt"
    exit 0
  fi
  python3 - "$out/$name.csv" <<'PY' | tee "$out/$name.txt"
import collections, csv, sys
total, count, header = collections.defaultdict(float), collections.Counter(), None
for row in csv.reader(open(sys.argv[1])):
    if 'Kernel Name' in row and 'Metric Value' in row:
        header = row
    elif header and len(row) == len(header):
        d = dict(zip(header, row))
        unit = d['Metric Unit']
        scale = {'ns': 1e-6, 'nsecond': 1e-6, 'us': 1e-3, 'usecond': 1e-3, 'ms': 1.0, 'msecond': 1.0}[unit]
        name = d['Kernel Name'].split('(')[0][:90]
        total[name] += float(d['Metric Value'].replace(',', '')) * scale
        count[name] += 1
all_ms = sum(total.values())
print(f"one step: {all_ms:.2f} ms of kernel time in {sum(count.values())} launches")
for name, ms in sorted(total.items(), key=lambda kv: -kv[1])[:30]:
    print(f"{ms:8.2f} ms {100 * ms / all_ms:5.1f} % {count[name]:5d}x  {name}")
PY
  exit 0
fi
nvcc -O3 -std=c++20 -arch=sm_90 --extended-lambda --expt-relaxed-constexpr -Xcompiler=-fopenmp -Iinclude \
  bench/bench_scan_cuda.cu -o /tmp/bench_scan_cuda -lbenchmark_main -lbenchmark -lpthread || exit 1
cuobjdump -sass /tmp/bench_scan_cuda >"$out/sass.txt"
# per kernel: instructions, MUFU (one per decay), local-memory accesses
awk '/Function : /{name=$3} name && /^ +\/\*[0-9a-f]+\*\//{n[name]++} /MUFU/{m[name]++} /LDL|STL/{l[name]++}
     END{for (k in n) printf "%6d instr %4d MUFU %4d local  %s\n", n[k], m[k], l[k], k}' "$out/sass.txt" |
  grep -E "_kernel" | sort -k7 | tee "$out/sass_summary.txt"
# the default scan's kernels: instruction mix of the whole function and of its main loop, by class
python3 tests/cuda/sass_mix.py "$out/sass.txt" forward_quad_kernel | tee "$out/sass_mix.txt"
python3 tests/cuda/sass_mix.py "$out/sass.txt" backward_state_split_kernel | tee -a "$out/sass_mix.txt"
# where they wait: warp-stall samples of one launch each at the 130M shape, by opcode and over the loop
for kernel in forward_quad_kernel backward_state_split_kernel; do
  ncu --clock-control none --kernel-name regex:"$kernel" --launch-skip 2 --launch-count 1 --section SourceCounters \
    --section WarpStateStats -f -o "$out/stalls_$kernel" /tmp/bench_scan_cuda \
    --benchmark_filter='bm_scan<sc::state_split<4>, true>/0' --benchmark_min_time=0.01s >"$out/ncu_stalls_$kernel.txt" 2>&1
  ncu --import "$out/stalls_$kernel.ncu-rep" --page source --csv --print-source sass >"$out/stalls_$kernel.csv" &&
    python3 tests/cuda/stall_mix.py "$out/stalls_$kernel.csv" >"$out/stalls_$kernel.txt" && head -30 "$out/stalls_$kernel.txt"
done
filter=${1:-'bm_scan<sc::block_parallel<>, true>/0'}
ncu --clock-control none --kernel-name regex:"(forward|backward)_(block|recurrent)" --launch-count 4 \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section InstructionStats \
  /tmp/bench_scan_cuda --benchmark_filter="$filter" --benchmark_min_time=0.01s >"$out/ncu.txt" 2>&1
echo "ncu rc=$?"
keys='_kernel<|Duration|Registers Per|Achieved Occupancy|Issued Warp Per|Executed Instructions  |No Eligible'
grep -E "$keys" "$out/ncu.txt" | cut -c1-110
