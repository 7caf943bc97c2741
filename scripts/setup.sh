#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test ssmlen; extra package names may be given as
# arguments. Does nothing when every package is already installed. Set SSMLEN_SKIP_SETUP=1 to skip it entirely
# (machines where the dependencies come from elsewhere).
set -euo pipefail

if [[ "${SSMLEN_SKIP_SETUP:-0}" == 1 ]]; then
  exit 0
fi

packages=(build-essential cmake doctest-dev libopenblas-dev nlohmann-json3-dev libcli11-dev libbenchmark-dev gnuplot-nox
  "$@")

if ! command -v dpkg >/dev/null; then
  echo "setup: no dpkg here (not Debian); install these yourself if missing: ${packages[*]}" >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "setup: missing packages and no sudo; as root run: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]}"
if ! { "${sudo[@]}" apt-get update &&
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }; then
  # Keep going: the configure step names what is really missing (some may come from elsewhere on this machine).
  echo "setup: could not install ${missing[*]}; continuing (SSMLEN_SKIP_SETUP=1 skips this step)" >&2
fi
