#!/usr/bin/python3
"""The reference CNN benchmark: crisp and PyTorch, one after the other in one run, on the same
machine, with the same model, data, batch size and optimizer. Prints `name crisp peer ratio
target`, one row per figure: the training epoch's time (and test accuracy after it), inference of
the 10,000 test images in batches of 512, and single-image latency.

Usage: python3 bench/cnn_epoch.py [BUILD_DIR] [--peer PATH] [--epochs N] [--max-batches N]
                                  [--warmup-batches N] [--reps N] [--threads N] [--quick]
                                  [--json FILE]
BUILD_DIR holds tools/crisp (default build/release). The peer is torch_cpu_seed_cnn.py, run with
/usr/bin/python3 (Debian's python3-torch), by default from ../shared/bench beside the repository.
ratio = crisp / peer: below 1 means crisp is faster.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                             formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("build", nargs="?", default=os.path.join(root, "build", "release"))
ap.add_argument("--peer", default=os.path.join(root, "..", "shared", "bench",
                                               "torch_cpu_seed_cnn.py"))
ap.add_argument("--python", default="/usr/bin/python3", help="the interpreter that has torch")
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--max-batches", type=int, default=None,
                help="time only this many training batches and extrapolate to an epoch")
ap.add_argument("--warmup-batches", type=int, default=0)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch's threads")
ap.add_argument("--quick", action="store_true",
                help="50 timed batches after 5 warm-up ones, one repeat (a smoke test)")
ap.add_argument("--json", default=None, help="write both sides' raw results here")
args = ap.parse_args()
if args.quick:
    args.max_batches, args.warmup_batches, args.reps = 50, 5, 1

crisp_bin = os.path.join(args.build, "tools", "crisp")
for path, what in ((crisp_bin, "build crisp first: cmake --build BUILD --target crisp_cli"),
                   (args.peer, "pass --peer PATH/torch_cpu_seed_cnn.py")):
    if not os.path.exists(path):
        sys.exit(f"cnn_epoch.py: {path} not found: {what}")

common = ["--epochs", str(args.epochs), "--warmup-batches", str(args.warmup_batches),
          "--reps", str(args.reps)]
if args.max_batches:
    common += ["--max-batches", str(args.max_batches)]

# Debian's OpenBLAS does not recognise recent Xeons and falls back to generic kernels; crisp
# picks the right ones itself, so the peer gets them too, for fairness (as bench/cpu_ops.py).
env = dict(os.environ)
if "OPENBLAS_CORETYPE" not in env and " avx512f" in open("/proc/cpuinfo").read():
    env["OPENBLAS_CORETYPE"] = "SkylakeX"
# PyTorch's own threads and OpenBLAS's compete for the cores; one BLAS thread is PyTorch's best
# setting here (0.175 s per batch against 0.194 s with the defaults).
env.setdefault("OPENBLAS_NUM_THREADS", "1")


def run(cmd, env=None):
    """Runs cmd with its progress on our stderr; returns the JSON it writes to --json."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd + ["--json", out.name], check=True, env=env,
                       stdout=sys.stderr)
        with open(out.name) as f:
            return json.load(f)


crisp = run([crisp_bin, "bench"] + common + ["--backend", "cpu"])
peer = run([args.python, args.peer, "--threads", str(args.threads), "--no-dispatch"] + common,
           env=env)


def epoch_seconds(r):
    e = r["epochs"][0]
    return e.get("epoch_s", e.get("epoch_s_extrapolated"))


full = "epoch_s" in crisp["epochs"][0]
rows = [
    ("epoch_s" if full else "epoch_s (extrapolated)", epoch_seconds(crisp), epoch_seconds(peer),
     "<= 0.8"),
    ("infer_10k_bs512_s", crisp["infer_10k_bs512_s"]["median"],
     peer["infer_10k_bs512_s"]["median"], "<= 0.8"),
    ("infer_bs1_ms (per image)", crisp["infer_1k_bs1_s"]["median"],
     peer["infer_1k_bs1_s"]["median"], "<= 0.5"),
]
print(f"{'name':28s} {'crisp':>10s} {'peer':>10s} {'ratio':>7s}  target")
for name, c, p, target in rows:
    print(f"{name:28s} {c:10.4g} {p:10.4g} {c / p:7.3f}  {target}")
if full:
    for i, (c, p) in enumerate(zip(crisp["epochs"], peer["epochs"]), 1):
        print(f"{'test_acc after epoch ' + str(i):28s} {c['test_acc']:10.4f} {p['test_acc']:10.4f}"
              f" {'':7s}  >= 0.86")
print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
      f"peer: torch {peer['torch']} with {peer['threads']} threads, "
      f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE', '')} "
      f"OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']}")
if args.json:
    with open(args.json, "w") as f:
        json.dump({"crisp": crisp, "peer": peer}, f, indent=1)
