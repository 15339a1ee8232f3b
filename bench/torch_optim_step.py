#!/usr/bin/python3
"""One optimizer step over the reference CNN's parameters: PyTorch's side, and the comparison
with crisp's (bench/optim_step.cpp).

  /usr/bin/python3 bench/torch_optim_step.py BUILD_DIR [--rounds N] [--reps N] [--threads N]
      runs crisp and PyTorch alternately, N rounds each, and prints `name crisp peer ratio floor`
      from the minimum over all repeats of all rounds (ms); ratio = crisp / peer, floor = the
      bytes the fused update moves over the copy bandwidth measured beside it.
  /usr/bin/python3 bench/torch_optim_step.py --torch-only [--reps N]
      prints PyTorch's JSON {name: [min_ms, median_ms]}."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SHAPES = [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,), (500, 50, 5, 5), (500,), (2250, 4500),
          (2250,), (1125, 2250), (1125,), (10, 1125), (10,)]


def torch_side(reps, threads):
    import torch

    torch.set_num_threads(threads)
    params = [torch.randn(s, requires_grad=True) for s in SHAPES]
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    O = torch.optim
    makers = {
        "Adam": lambda: O.Adam(params, lr=1e-6),
        "AdamW": lambda: O.AdamW(params, lr=1e-6),
        "Adam amsgrad": lambda: O.Adam(params, lr=1e-6, amsgrad=True),
        "SGD momentum": lambda: O.SGD(params, lr=1e-6, momentum=0.9),
        "RMSprop": lambda: O.RMSprop(params, lr=1e-6),
    }
    out = {}
    for name, make in makers.items():
        opt = make()
        times = []
        for i in range(reps + 2):
            t0 = time.perf_counter()
            opt.step()
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1e3)
        out[name] = [min(times), statistics.median(times)]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build_dir", nargs="?")
    ap.add_argument("--torch-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    if a.torch_only:
        print(json.dumps(torch_side(a.reps, a.threads)))
        return
    if not a.build_dir:
        sys.exit("usage: torch_optim_step.py BUILD_DIR | --torch-only")
    exe = os.path.join(a.build_dir, "bench", "optim_step")
    crisp, peer, floor = {}, {}, {}
    for _ in range(a.rounds):
        c = json.loads(subprocess.run([exe, "--reps", str(a.reps)], check=True,
                                      capture_output=True, text=True).stdout)
        for k, v in c.items():
            if isinstance(v, list):
                crisp[k] = min(crisp.get(k, v[0]), v[0])
                floor[k] = min(floor.get(k, v[2]), v[2])
        t = json.loads(subprocess.run([sys.executable, __file__, "--torch-only", "--reps",
                                       str(a.reps)], check=True, capture_output=True,
                                      text=True).stdout)
        for k, v in t.items():
            peer[k] = min(peer.get(k, v[0]), v[0])
    print("%-14s %9s %9s %7s %9s %8s" % ("name", "crisp", "peer", "ratio", "floor", "/floor"))
    for k in crisp:
        print("%-14s %9.2f %9.2f %7.2f %9.2f %8.2f" % (k, crisp[k], peer[k], crisp[k] / peer[k],
                                                      floor[k], crisp[k] / floor[k]))


if __name__ == "__main__":
    main()
