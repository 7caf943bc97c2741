#!/usr/bin/env bash
# Builds everything (tests, apps, examples, benchmarks) in the release preset, checks that every header compiles on
# its own, and runs all tests that need no GPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

./scripts/setup.sh
build="$ssmlen_build_root/release"
ssmlen_configure release
# One build call, so both targets come from the same look at the source tree.
cmake --build "$build" -j "$ssmlen_jobs" --target all all_verify_interface_header_sets
# Same filter as the "release" test preset (which cannot be pointed at another build directory).
ctest --test-dir "$build" -j "$ssmlen_jobs" --label-exclude gpu --no-tests=error --output-on-failure
