#!/usr/bin/env bash
# Per-op GPU time of the GPU benchmark's pieces (CRISP_PROFILE tables), one file per piece.
# Usage: bench/gpu_profile.sh BUILD_DIR OUT_DIR [piece ...]   (default pieces: rn50_bf16 cnn)
# BUILD_DIR must hold a CUDA build with bench/gpu_bench.
set -euo pipefail
build=$1
out=$2
shift 2
pieces=("$@")
[ ${#pieces[@]} -gt 0 ] || pieces=(rn50_bf16 cnn)
mkdir -p "$out"
for p in "${pieces[@]}"; do
  echo "== $p"
  CRISP_PROFILE=1 "$build/bench/gpu_bench" --only "$p" --reps 2 --rn50-steps 6 --rn50-warmup 2 \
    >"$out/profile_$p.txt" 2>&1 || echo "gpu_bench --only $p failed (see $out/profile_$p.txt)"
  tail -n 40 "$out/profile_$p.txt"
done
