#!/usr/bin/env bash
# The main job: installs what is needed (Debian 12 packages, Fashion-MNIST), builds crisp
# (Release) and trains the reference CNN on Fashion-MNIST for one epoch with the crisp program,
# printing progress, the epoch's loss, accuracy and time, and the test accuracy at the end.
# Outputs go to runs/cnn-fashion-mnist/ (checkpoint, metrics.csv, steps.csv, metrics.png).
# Extra arguments go to `crisp train` (e.g. --epochs 2, --limit 6400, --backend cpu).
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== building crisp (Release)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target crisp_cli

echo "== training the reference CNN on Fashion-MNIST"
./build/release/tools/crisp train --model cnn --dataset fashion-mnist --epochs 1 "$@"
