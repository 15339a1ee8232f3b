#!/usr/bin/python3
"""CPU micro-benchmark, PyTorch's side (Debian's python3-torch): the same figures as cpu_ops.cpp."""
import json
import statistics
import sys
import time

import torch

quick = "--quick" in sys.argv
if "--threads" in sys.argv:
    torch.set_num_threads(int(sys.argv[sys.argv.index("--threads") + 1]))
reps = 3 if quick else 15


def median_time(repeats, f):
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


out = {}
a = torch.ones(1)
b = torch.ones(1)
n = 1000 if quick else 20000


def chain():
    c = a
    for _ in range(n):
        c = c + b


out["dispatch_add_1elem_us"] = median_time(reps, chain) / n * 1e6

big_a = torch.rand(1 << 24)
big_b = torch.rand(1 << 24)
t = median_time(reps, lambda: big_a + big_b)
out["add_16M_ms"] = t * 1e3
out["add_16M_GBps"] = 3 * 4 * (1 << 24) / t / 1e9

ma = torch.randn(1024, 1024)
mb = torch.randn(1024, 1024)
out["matmul_1024_ms"] = median_time(reps, lambda: ma @ mb) * 1e3

for name, cin, cout, hw in [("conv1", 1, 20, 28), ("conv2", 20, 50, 14), ("conv3", 50, 500, 7)]:
    x = torch.randn(64, cin, hw, hw, requires_grad=True)
    w = (torch.randn(cout, cin, 5, 5) * 0.05).requires_grad_()
    bias = torch.zeros(cout, requires_grad=True)

    def step():
        y = torch.nn.functional.conv2d(x, w, bias, padding=2)
        y.backward(torch.ones_like(y))
        x.grad = None
        w.grad = None
        bias.grad = None

    out[name + "_fwd_bwd_ms"] = median_time(2 if quick else 7, step) * 1e3

out["threads"] = torch.get_num_threads()
print(json.dumps(out))
