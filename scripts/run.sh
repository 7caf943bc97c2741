#!/usr/bin/env bash
# The main job, from a fresh machine: installs what is missing, builds the ssmlen command line (release preset),
# trains a Mamba on additions of 1..5-digit numbers, then evaluates it by greedy tool-driven rollouts at 5, 10, 20,
# 50, 100, 200, 500 and 1000 digits, printing the table and writing the plot.
#   SSMLEN_RUN_DIR      run directory (default runs/headline): config, model, checkpoint, metrics, log, sweep.*
#   SSMLEN_PER_SIZE     episodes per size in the sweep (default 32)
# Extra arguments go to `ssmlen train` (e.g. --seed 2, --threads 1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

./scripts/setup.sh
build="$ssmlen_build_root/release"
ssmlen_configure release >/dev/null
cmake --build "$build" -j "$ssmlen_jobs" --target ssmlen_cli

run_dir="${SSMLEN_RUN_DIR:-runs/headline}"
ssmlen="$build/bin/ssmlen"
start=$SECONDS
"$ssmlen" train --task addition --max-n 5 --out "$run_dir" "$@"
"$ssmlen" eval --checkpoint "$run_dir/model.safetensors" --sizes 5,10,20,50,100,200,500,1000 \
  --per-size "${SSMLEN_PER_SIZE:-32}" --out "$run_dir/sweep"
echo "main job: $((SECONDS - start)) s for training and sweep; results in $run_dir (sweep.svg, sweep.png, sweep.json)"
