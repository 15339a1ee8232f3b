#!/usr/bin/env bash
# Installs the Debian 12 packages crisp needs to build, test and benchmark. Safe to run again.
set -euo pipefail

packages=(build-essential cmake ninja-build ccache pkg-config libopenblas-dev libopenblas0-pthread libdnnl-dev libgtest-dev
  libgmock-dev libbenchmark-dev nlohmann-json3-dev zlib1g-dev clang-format python3-torch
  dataset-fashion-mnist)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi
