#!/usr/bin/env bash
# The main job: installs what is needed, builds crisp (Release) and trains the reference CNN on
# Fashion-MNIST for one epoch on the CPU, printing progress, the epoch time and the test accuracy.
# Extra arguments go to the program (e.g. --epochs 2, --limit 640). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== building crisp (Release)"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release -j"$(nproc)" --target reference_cnn

echo "== training the reference CNN on Fashion-MNIST (CPU)"
./build/release/examples/reference_cnn "$@"
