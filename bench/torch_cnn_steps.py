#!/usr/bin/python3
"""The reference CNN's training step, inference and per-layer times: PyTorch's side, and the
comparison with crisp's (bench/cnn_steps.cpp).

  /usr/bin/python3 bench/torch_cnn_steps.py BUILD_DIR [--rounds N] [--reps N] [--only SUBSTR]
                                            [--threads N] [--cpu-time]
      runs crisp and PyTorch alternately, N rounds each, and prints `name crisp peer ratio` from
      the minimum (and the median) over all repeats of all rounds; ratio = crisp / peer.
  /usr/bin/python3 bench/torch_cnn_steps.py --torch-only [--reps N] [--only SUBSTR]
      prints PyTorch's JSON {name: [min_ms, median_ms]}, the same keys as cnn_steps.

The machine is shared and its speed drifts: alternating the two sides and comparing minima is
what keeps the ratios meaningful."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Debian's OpenBLAS does not recognise recent Xeons and falls back to generic kernels; crisp
# picks the right ones itself (src/cpu/gemm.cpp), so the peer gets them too, for fairness.
if "OPENBLAS_CORETYPE" not in os.environ and " avx512f" in open("/proc/cpuinfo").read():
    os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"


def torch_side(reps, only, threads, cpu_time):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    clock = time.process_time if cpu_time else time.perf_counter
    gen = torch.Generator().manual_seed(0)

    def param(shape, fan_in):
        bound = 1 / fan_in ** 0.5
        return (torch.rand(shape, generator=gen) * 2 * bound - bound).requires_grad_()

    w1, b1 = param((20, 1, 5, 5), 25), param((20,), 25)
    w2, b2 = param((50, 20, 5, 5), 500), param((50,), 500)
    w3, b3 = param((500, 50, 5, 5), 1250), param((500,), 1250)
    l1, c1 = param((2250, 4500), 4500), param((2250,), 4500)
    l2, c2 = param((1125, 2250), 2250), param((1125,), 2250)
    l3, c3 = param((10, 1125), 1125), param((10,), 1125)
    params = [w1, b1, w2, b2, w3, b3, l1, c1, l2, c2, l3, c3]

    def zero_grad():
        for p in params:
            p.grad = None

    conv = lambda x, w, b: F.conv2d(x, w, b, padding=2)
    pool = lambda x: F.max_pool2d(x, 2)

    def net(x, training):
        h = pool(F.relu(conv(x, w1, b1)))
        h = pool(F.relu(conv(h, w2, b2)))
        h = pool(F.relu(conv(h, w3, b3)))
        h = h.reshape(h.shape[0], -1)
        h = F.relu(F.dropout(F.linear(h, l1, c1), 0.3, training))
        h = F.dropout(F.linear(h, l2, c2), 0.3, training)
        h = F.dropout(F.linear(h, l3, c3), 0.3, training)
        return F.log_softmax(h, 1)

    def measure(n, setup, timed):
        t = []
        for i in range(n + 2):
            state = setup()
            t0 = clock()
            timed(state)
            dt = (clock() - t0) * 1e3
            if i >= 2:
                t.append(dt)
        return [min(t), statistics.median(t)]

    out = {}

    def record(name, s):
        out[name] = s
        print(f"{name:16s} min {s[0]:8.3f}  median {s[1]:8.3f} ms", file=sys.stderr)

    want = lambda name: only is None or only in name
    B = 64
    x = torch.rand(B, 1, 28, 28)
    y = torch.randint(0, 10, (B,))
    if want("step"):
        record("step_fwd", measure(reps, zero_grad, lambda _: F.nll_loss(net(x, True), y)))

        def setup():
            zero_grad()
            return F.nll_loss(net(x, True), y)
        record("step_bwd", measure(reps, setup, lambda loss: loss.backward()))
    if want("infer"):
        with torch.no_grad():
            xb = torch.rand(512, 1, 28, 28)
            record("infer512", measure(reps, lambda: None, lambda _: net(xb, False).argmax(1)))
            x1 = torch.rand(1, 1, 28, 28)
            record("infer1", measure(reps * 10, lambda: None, lambda _: net(x1, False).argmax(1)))

    layers = [
        ("conv1", (B, 1, 28, 28), False, lambda h: conv(h, w1, b1)),
        ("relu1", (B, 20, 28, 28), True, F.relu),
        ("pool1", (B, 20, 28, 28), True, pool),
        ("conv2", (B, 20, 14, 14), True, lambda h: conv(h, w2, b2)),
        ("relu2", (B, 50, 14, 14), True, F.relu),
        ("pool2", (B, 50, 14, 14), True, pool),
        ("conv3", (B, 50, 7, 7), True, lambda h: conv(h, w3, b3)),
        ("relu3", (B, 500, 7, 7), True, F.relu),
        ("pool3", (B, 500, 7, 7), True, pool),
        ("fc1", (B, 4500), True, lambda h: F.linear(h, l1, c1)),
        ("drop1", (B, 2250), True, lambda h: F.dropout(h, 0.3, True)),
        ("relu4", (B, 2250), True, F.relu),
        ("fc2", (B, 2250), True, lambda h: F.linear(h, l2, c2)),
        ("drop2", (B, 1125), True, lambda h: F.dropout(h, 0.3, True)),
        ("fc3", (B, 1125), True, lambda h: F.linear(h, l3, c3)),
        ("drop3", (B, 10), True, lambda h: F.dropout(h, 0.3, True)),
        ("lsm_nll", (B, 10), True, lambda h: F.nll_loss(F.log_softmax(h, 1), y)),
    ]
    for name, shape, input_grad, f in layers:
        if not want(name):
            continue
        inp = torch.randn(shape).requires_grad_(input_grad)
        g = torch.randn(f(inp).shape)
        record(name + "_fwd", measure(reps, lambda: None, lambda _: f(inp)))

        def setup():
            zero_grad()
            inp.grad = None
            return f(inp)
        record(name + "_bwd", measure(reps, setup, lambda h: h.backward(g)))
    return out


def merge(runs):
    """Minimum of the minima and median of the medians over rounds, per key."""
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: [min(r[k][0] for r in runs), statistics.median(r[k][1] for r in runs)] for k in keys}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?")
    ap.add_argument("--torch-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", default=None)
    ap.add_argument("--json", default=None, help="write both sides' merged figures here")
    ap.add_argument("--threads", type=int, default=2, help="threads on each side")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the process's CPU time, not the wall clock (use with --threads 1 "
                         "when other work loads the machine)")
    args = ap.parse_args()
    if args.torch_only:
        print(json.dumps(torch_side(args.reps, args.only, args.threads, args.cpu_time)))
        return
    if not args.build:
        ap.error("BUILD_DIR is needed (or --torch-only)")
    extra = ["--reps", str(args.reps)] + (["--only", args.only] if args.only else [])
    extra += ["--cpu-time"] if args.cpu_time else []
    crisp_cmd = [os.path.join(args.build, "bench", "cnn_steps")] + extra
    torch_cmd = ["/usr/bin/python3", os.path.abspath(__file__), "--torch-only",
                 "--threads", str(args.threads)] + extra
    env = dict(os.environ, CRISP_NUM_THREADS=str(args.threads))
    if args.threads == 1:
        env["OPENBLAS_NUM_THREADS"] = "1"  # the peer's BLAS too
    crisp_runs, torch_runs = [], []
    for r in range(args.rounds):
        crisp_runs.append(json.loads(subprocess.check_output(crisp_cmd, stderr=subprocess.DEVNULL,
                                                             env=env)))
        torch_runs.append(json.loads(subprocess.check_output(torch_cmd, stderr=subprocess.DEVNULL,
                                                             env=env)))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    c, p = merge(crisp_runs), merge(torch_runs)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"crisp": c, "torch": p, "crisp_runs": crisp_runs, "torch_runs": torch_runs},
                      f, indent=1)
    print(f"{'name':14s} {'crisp min':>10s} {'peer min':>10s} {'ratio':>6s}   "
          f"{'crisp med':>10s} {'peer med':>10s} {'ratio':>6s}   (ms)")
    for k in c:
        if k not in p:
            continue
        print(f"{k:14s} {c[k][0]:10.3f} {p[k][0]:10.3f} {c[k][0] / p[k][0]:6.2f}   "
              f"{c[k][1]:10.3f} {p[k][1]:10.3f} {c[k][1] / p[k][1]:6.2f}")
    sums = {}
    for side, d in (("crisp", c), ("torch", p)):
        for suffix in ("_fwd", "_bwd"):
            sums[side + suffix] = sum(v[0] for k, v in d.items()
                                      if k.endswith(suffix) and not k.startswith("step"))
    print(f"sum of layer minima: fwd {sums['crisp_fwd']:.2f} vs {sums['torch_fwd']:.2f}, "
          f"bwd {sums['crisp_bwd']:.2f} vs {sums['torch_bwd']:.2f} ms")


if __name__ == "__main__":
    main()
