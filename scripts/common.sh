# Shared by the scripts (sourced, not run): repository root, build root and parallelism.
# SSMLEN_BUILD_ROOT: where preset builds go (default build/, so the release build is build/release).
# SSMLEN_JOBS: parallel build and test jobs (default: the number of cores).
# SSMLEN_CONFIGURE_ARGS: extra cmake arguments for the configure step (split on spaces), e.g. -DSSMLEN_WERROR=ON.
ssmlen_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ssmlen_build_root="${SSMLEN_BUILD_ROOT:-$ssmlen_root/build}"
ssmlen_jobs="${SSMLEN_JOBS:-$(nproc)}"
cd "$ssmlen_root"

# ssmlen_configure <preset> [cmake args...]: configures build dir $ssmlen_build_root/<preset> from the preset.
ssmlen_configure() {
  local preset="$1"
  shift
  local extra
  read -r -a extra <<<"${SSMLEN_CONFIGURE_ARGS:-}"
  cmake --preset "$preset" -B "$ssmlen_build_root/$preset" "${extra[@]}" "$@"
}
