#!/usr/bin/python3
"""Runs the CPU micro-benchmark for crisp and PyTorch in one go and prints `name crisp peer ratio`.

Usage: python3 bench/cpu_ops.py BUILD_DIR [--quick]
ratio = crisp / peer: below 1 means crisp is faster (for GB/s, above 1 means faster)."""
import json
import os
import subprocess
import sys

build = sys.argv[1] if len(sys.argv) > 1 else "build/release"
extra = ["--quick"] if "--quick" in sys.argv else []
here = os.path.dirname(os.path.abspath(__file__))

# Debian's OpenBLAS does not recognise recent Xeons and falls back to generic kernels; crisp
# picks the right ones itself (src/cpu/gemm.cpp), so the peer gets them too, for fairness.
env = dict(os.environ)
if "OPENBLAS_CORETYPE" not in env and " avx512f" in open("/proc/cpuinfo").read():
    env["OPENBLAS_CORETYPE"] = "SkylakeX"
crisp = json.loads(subprocess.check_output([os.path.join(build, "bench", "cpu_ops")] + extra))
# PyTorch at its best setting: each figure is the better of one thread and all cores.
runs = [json.loads(subprocess.check_output(
    ["/usr/bin/python3", os.path.join(here, "torch_cpu_ops.py"), "--threads", str(t)] + extra,
    env=env)) for t in sorted({1, os.cpu_count()})]
peer = {}
for key in runs[0]:
    pick = max if key.endswith("GBps") or key == "threads" else min
    peer[key] = pick(r[key] for r in runs)

print(f"{'name':28s} {'crisp':>10s} {'peer':>10s} {'ratio':>7s}")
for key, value in crisp.items():
    if key == "threads":
        continue
    if key in peer:
        print(f"{key:28s} {value:10.4g} {peer[key]:10.4g} {value / peer[key]:7.3f}")
    else:
        print(f"{key:28s} {value:10.4g} {'-':>10s} {'-':>7s}")
print(f"threads: crisp {crisp['threads']}, peer {peer['threads']}")
print(f"add_16M vs floor: {crisp['add_16M_ms'] / crisp['add_16M_floor_ms']:.3f}  "
      f"matmul vs OpenBLAS: {crisp['matmul_1024_ms'] / crisp['matmul_1024_openblas_ms']:.3f}")
