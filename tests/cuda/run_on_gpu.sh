#!/usr/bin/env bash
# Builds the CUDA tests and benchmarks by hand with nvcc (no CMake configure needed), then runs the tests,
# the memory, race and initialization checkers on their small cases, and the benchmark. Logs go to $OUT (default
# /tmp/ssmlen-cuda).
# Usage from the repository root: tests/cuda/run_on_gpu.sh [benchmark filter]
# SSMLEN_GPU_SUITES picks what runs (default "scan layers model bench"): scan = test_selective_scan.cu, layers =
# test_layers.cu (GEMM, RMSNorm, cross-entropy, AdamW, embedding, conv1d), model = test_model.cu (Mamba block and
# language model against the host), bench = bench_scan_cuda.cu, train_bench = bench_train_cuda.cu (training steps),
# train_example = examples/04_train_cuda.cu: its smoke run, then the addition headline trained on the GPU for each seed
# of SSMLEN_TRAIN_SEEDS (default "1 2 3 4 5", full schedule) and swept to 1000 digits; per seed $OUT gets
# train_example_seed<s>.log (progress, timings, sweep table) and train_example_seed<s>/ (model, sweep.json/csv/svg).
# rollout = test_step.cu (the recurrent step of the SSM, block and model against the host; the captured step graph),
# test_rollout.cu (GPU rollouts of the trained headline model against the host rollout) and bench_rollout_cuda.cu
# (rollout and step-loop throughput; $OUT/rollout_bench.log). blas = bench_blas_cuda.cu (one layer's GEMMs of the
# paper-shape step through backends::gemm and through each cuBLASLt candidate; $OUT/blas_bench.log). peer =
# bench/peers/compare_hf.py: bench_train_cuda's peer benchmarks beside Hugging Face's MambaForCausalLM at the same
# shapes (needs torch and transformers; $OUT/compare_hf.{log,json}).
# SSMLEN_GPU_CHECKERS=0 skips the memory, race and initialization checkers.
set -uo pipefail
out=${OUT:-/tmp/ssmlen-cuda}
suites=" ${SSMLEN_GPU_SUITES:-scan layers model bench} "
mkdir -p "$out"
nvcc_flags=(-O3 -std=c++20 -arch=sm_90 --extended-lambda --expt-relaxed-constexpr -Xcompiler=-fopenmp -Iinclude)
has() { [[ "$suites" == *" $1 "* ]]; }
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
nvcc --version | tail -1
start=$(date +%s)
if has scan; then
  nvcc "${nvcc_flags[@]}" -Xptxas -v tests/cuda/test_selective_scan.cu -o /tmp/test_scan_cuda \
    >"$out/build_test.txt" 2>&1 &
fi
if has layers; then
  nvcc "${nvcc_flags[@]}" tests/cuda/test_layers.cu -o /tmp/test_layers_cuda -lcublas >"$out/build_layers.txt" 2>&1 &
fi
if has model; then
  nvcc "${nvcc_flags[@]}" tests/cuda/test_model.cu -o /tmp/test_model_cuda -lcublas >"$out/build_model.txt" 2>&1 &
fi
if has train_bench || has peer; then
  nvcc "${nvcc_flags[@]}" bench/bench_train_cuda.cu -o /tmp/bench_train_cuda -lcublas -lbenchmark_main -lbenchmark \
    -lpthread >"$out/build_train_bench.txt" 2>&1 &
fi
if has train_example; then
  nvcc "${nvcc_flags[@]}" examples/04_train_cuda.cu -o /tmp/04_train_cuda -lcublas \
    >"$out/build_train_example.txt" 2>&1 &
fi
if has rollout; then
  nvcc "${nvcc_flags[@]}" tests/cuda/test_step.cu -o /tmp/test_step_cuda -lcublas >"$out/build_step.txt" 2>&1 &
  nvcc "${nvcc_flags[@]}" tests/cuda/test_rollout.cu -o /tmp/test_rollout_cuda -lcublas >"$out/build_rollout.txt" 2>&1 &
  nvcc "${nvcc_flags[@]}" bench/bench_rollout_cuda.cu -o /tmp/bench_rollout_cuda -lcublas -lbenchmark_main -lbenchmark \
    -lpthread >"$out/build_rollout_bench.txt" 2>&1 &
fi
if has blas; then
  nvcc "${nvcc_flags[@]}" bench/bench_blas_cuda.cu -o /tmp/bench_blas_cuda -lcublas -lcublasLt -lbenchmark_main \
    -lbenchmark -lpthread >"$out/build_blas_bench.txt" 2>&1 &
fi
if has bench; then
  nvcc "${nvcc_flags[@]}" bench/bench_scan_cuda.cu -o /tmp/bench_scan_cuda -lbenchmark_main -lbenchmark -lpthread \
    >"$out/build_bench.txt" 2>&1 &
fi
wait
echo "build: $(($(date +%s) - start)) s"
grep -E "error" "$out"/build_*.txt && exit 1

# Runs a test program, then memcheck (with leak check), racecheck and initcheck on its quick case.
test_and_check() {
  local name=$1 program=$2 small=$3
  "$program" 2>&1 | tee "$out/$name.log" | tail -4
  [[ "${SSMLEN_GPU_CHECKERS:-1}" == 0 ]] && return
  compute-sanitizer --tool memcheck --leak-check full "$program" -tc="$small" >"$out/$name.memcheck.log" 2>&1
  echo "$name memcheck rc=$?: $(grep -E 'ERROR SUMMARY' "$out/$name.memcheck.log")"
  compute-sanitizer --tool racecheck "$program" -tc="$small" >"$out/$name.racecheck.log" 2>&1
  echo "$name racecheck rc=$?: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$out/$name.racecheck.log")"
  compute-sanitizer --tool initcheck "$program" -tc="$small" >"$out/$name.initcheck.log" 2>&1
  echo "$name initcheck rc=$?: $(grep -E 'ERROR SUMMARY' "$out/$name.initcheck.log")"
}

if has scan; then
  grep -E "Compiling entry|Used|spill" "$out/build_test.txt" | head -60 >"$out/registers.txt"
  test_and_check test /tmp/test_scan_cuda '*small ragged*,*beyond*'  # beyond: offsets far past a small buffer
fi
if has layers; then
  test_and_check layers /tmp/test_layers_cuda '*small shapes*'
fi
if has model; then
  test_and_check model /tmp/test_model_cuda '*small model*'
fi
if has rollout; then
  test_and_check step /tmp/test_step_cuda '*small model*,*step graph*'  # step graph: ids through host memory
  test_and_check rollout /tmp/test_rollout_cuda '*small additions*'
  grep -hE "^(scan step|block step|model step|rollout )" "$out/step.log" "$out/rollout.log"
  /tmp/bench_rollout_cuda >"$out/rollout_bench.log" 2>&1
  grep -E "^bm_" "$out/rollout_bench.log" | cut -c1-300
fi
if has train_bench; then
  /tmp/bench_train_cuda >"$out/train_bench.log" 2>&1
  grep -E "^bm_train_step" "$out/train_bench.log" | cut -c1-250
fi
if has peer; then
  python3 bench/peers/compare_hf.py --bench /tmp/bench_train_cuda --json "$out/compare_hf.json" >"$out/compare_hf.log" 2>&1
  echo "peer rc=$?"
  grep -E "^\|" "$out/compare_hf.log"
fi
if has blas; then
  /tmp/bench_blas_cuda >"$out/blas_bench.log" 2>&1
  grep -E "^bm_layer" "$out/blas_bench.log" | cut -c1-250
fi
if has train_example; then
  /tmp/04_train_cuda --smoke >"$out/train_example_smoke.log" 2>&1
  echo "train_example smoke rc=$?"
  for seed in ${SSMLEN_TRAIN_SEEDS:-1 2 3 4 5}; do
    log="$out/train_example_seed$seed.log"
    # shellcheck disable=SC2086  # SSMLEN_TRAIN_ARGS: extra options, e.g. "--delta-min 0.02 --sizes 100,1000"
    /tmp/04_train_cuda --seed "$seed" ${SSMLEN_TRAIN_ARGS:-} --out "$out/train_example_seed$seed" >"$log" 2>&1
    echo "train_example seed $seed rc=$?: $(grep -E '^trained' "$log" | cut -c1-200)"
    grep -E "^summary" "$log"
  done
fi
if has bench; then
  /tmp/bench_scan_cuda --benchmark_filter="${1:-.}" --benchmark_min_time=0.3s >"$out/bench.log" 2>&1
  grep -E "^bm_(copy|exp)" "$out/bench.log" | cut -c1-150
  # one line per benchmark: label, median time, GB/s, fractions of the copy rate and of the bound (which: 1 exp, 0 bytes)
  pattern='s/^bm_[^ ]+ .*GB\/s=([0-9.k]+) .*bound_exp=([01]) bound_frac=([0-9.]+) copy_frac=([0-9.]+) .*us_median=([0-9.k]+)( xcheck=([^ ]+) (.*))?$/'
  sed -nE "$pattern\\8 \\5 us, \\1 GB\/s, copy_frac \\4, bound_frac \\3 (exp bound: \\2), xcheck \\7/p" "$out/bench.log"
fi
