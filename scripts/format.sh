#!/usr/bin/env bash
# Formats the tracked C++ and CUDA files with clang-format (the repository's .clang-format, clang-format 14 or newer).
# With --check, changes nothing and fails when a file is not formatted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if git rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.hpp' '*.cpp' '*.cuh' '*.cu')
else
  mapfile -t files < <(find include tests apps examples bench \( -name '*.hpp' -o -name '*.cpp' -o -name '*.cuh' \
    -o -name '*.cu' \) -type f)
fi
if ((${#files[@]} == 0)); then
  exit 0
fi
if [[ "${1:-}" == --check ]]; then
  clang-format --dry-run -Werror "${files[@]}"
  echo "format: ${#files[@]} files are formatted"
else
  clang-format -i "${files[@]}"
fi
