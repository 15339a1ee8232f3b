#!/usr/bin/env python3
"""PyTorch's side of the GPU benchmark, for when ../shared/bench/torch_gpu.py (the script that
produced the peer figures quoted in issue 4) is not beside the checkout, as on the GPU machine.

It measures the same things the same way and under the same names: a warm-up, then one timed
loop between two torch.cuda.synchronize() calls, divided by its length. Differences: pieces can
be chosen (--only), torch.compile can be skipped (--skip-compile, it costs tens of seconds), and
besides the nominal floor (4 TB/s) mish_floor_ms uses the measured copy bandwidth.

Prints one line per figure and "JSON {...}" at the end; writes $OUT/torch_gpu.json when OUT is set.
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PIECES = ("dispatch", "bandwidth", "mish", "cnn", "rn50", "rn50_latency")


def timed(fn, iters, warm=5):
    """Seconds per call: `warm` calls, then `iters` calls between two synchronizations."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


class SeedCNN(nn.Module):
    """The reference CNN (crisp's models::ReferenceCNN)."""

    def __init__(self, ch=1, side=28, classes=10, final=500):
        super().__init__()
        self.c1 = nn.Conv2d(ch, 20, 5, padding=2)
        self.c2 = nn.Conv2d(20, 50, 5, padding=2)
        self.c3 = nn.Conv2d(50, final, 5, padding=2)
        fc = final * (side // 8) ** 2
        self.l1 = nn.Linear(fc, fc // 2)
        self.l2 = nn.Linear(fc // 2, fc // 4)
        self.l3 = nn.Linear(fc // 4, classes)
        self.d = nn.Dropout(0.3)

    def forward(self, x):
        for conv in (self.c1, self.c2, self.c3):
            x = F.max_pool2d(F.relu(conv(x)), 2)
        x = x.flatten(1)
        x = F.relu(self.d(self.l1(x)))
        x = self.d(self.l2(x))
        x = self.d(self.l3(x))
        return F.log_softmax(x, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated pieces: " + " ".join(PIECES))
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile mish")
    args = ap.parse_args()
    only = [p for p in args.only.split(",") if p]
    want = lambda piece: not only or piece in only
    dev = torch.device("cuda")
    res = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}

    def put(key, value):
        res[key] = value
        print(f"{key:44s} {value:14.4f}", flush=True)

    if want("dispatch"):
        one = torch.ones(1, device=dev)
        put("us_per_add_1elem_async", timed(lambda: one + 1, 20000) * 1e6)
        a = torch.randn(64, 64, device=dev)
        put("us_per_matmul64_async", timed(lambda: a @ a, 20000) * 1e6)

    n = 1 << 28
    if want("bandwidth") or want("mish"):
        big = torch.randn(n, device=dev)
        out = torch.empty_like(big)
        put("copy_GBps", 2 * 4 * n / timed(lambda: out.copy_(big), 20) / 1e9)
        if want("bandwidth"):
            put("add_scalar_GBps", 2 * 4 * n / timed(lambda: torch.add(big, 1.0, out=out), 20) / 1e9)
        if want("mish"):
            def mish(t):
                return t * torch.tanh(F.softplus(t))

            put("mish_eager_ms", timed(lambda: mish(big), 10) * 1e3)
            if not args.skip_compile:
                try:
                    compiled = torch.compile(mish)
                    put("mish_compiled_ms", timed(lambda: compiled(big), 10) * 1e3)
                except Exception as e:  # no compiler toolchain: report and go on
                    res["mish_compiled_err"] = str(e)[:200]
            put("mish_floor_nominal_ms", 2 * 4 * n / 4.0e12 * 1e3)
            put("mish_floor_ms", 2 * 4 * n / (res["copy_GBps"] * 1e9) * 1e3)
        del big, out

    if want("cnn"):
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.manual_seed(0)
            m = SeedCNN().to(dev)
            opt = torch.optim.Adam(m.parameters(), 1e-3)
            X = torch.rand(60000, 1, 28, 28, device=dev)
            Y = torch.randint(0, 10, (60000,), device=dev)

            def step(i):
                loss = F.nll_loss(m(X[i:i + 64]), Y[i:i + 64])
                opt.zero_grad()
                loss.backward()
                opt.step()

            for i in range(0, 64 * 20, 64):
                step(i)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(0, 60000 - 63, 64):
                step(i)
            torch.cuda.synchronize()
            put(f"seedcnn_epoch_s_tf32={tf32}", time.perf_counter() - t0)
            m.eval()
            with torch.no_grad():
                def infer10k():
                    for i in range(0, 10000, 512):
                        m(X[i:i + 512]).argmax(1)

                put(f"seedcnn_infer10k_b512_ms_tf32={tf32}", timed(infer10k, 5, 2) * 1e3)

                def one_by_one():
                    for i in range(1000):
                        m(X[i:i + 1]).argmax(1).item()

                put(f"seedcnn_single_image_us_tf32={tf32}", timed(one_by_one, 2, 1) / 1000 * 1e6)
            del m, opt, X, Y

    if want("rn50") or want("rn50_latency"):
        import torchvision

    if want("rn50"):
        def rn50(mode, channels_last):
            torch.backends.cuda.matmul.allow_tf32 = mode != "fp32"
            torch.backends.cudnn.allow_tf32 = mode != "fp32"
            torch.backends.cudnn.benchmark = True
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            m = torchvision.models.resnet50().to(dev).to(memory_format=fmt)
            opt = torch.optim.SGD(m.parameters(), 0.1, momentum=0.9)
            xb = torch.randn(128, 3, 224, 224, device=dev).to(memory_format=fmt)
            yb = torch.randint(0, 1000, (128,), device=dev)

            def step():
                with torch.autocast("cuda", torch.bfloat16, enabled=(mode == "bf16")):
                    loss = F.cross_entropy(m(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            return 128 / timed(step, 30, 10)

        for mode, cl in (("fp32", False), ("tf32", False), ("tf32", True), ("bf16", True)):
            try:
                put(f"rn50_train_img_s_{mode}_cl={cl}", rn50(mode, cl))
            except Exception as e:
                res[f"rn50_{mode}_err"] = str(e)[:200]
            torch.cuda.empty_cache()

    if want("rn50_latency"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        m = torchvision.models.resnet50().to(dev).eval()
        xb = torch.randn(1, 3, 224, 224, device=dev)
        with torch.no_grad():
            put("rn50_infer_b1_ms_fp32", timed(lambda: m(xb), 50, 10) * 1e3)

    print("JSON " + json.dumps(res), flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "torch_gpu.json"), "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
