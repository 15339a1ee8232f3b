#!/usr/bin/env python3
"""The GPU benchmark: builds crisp, runs crisp's figures (bench/gpu_bench) and PyTorch's
(../shared/bench/torch_gpu.py, else bench/torch_gpu_peer.py) on the same machine, prints each
figure beside the peer's with the ratio, and writes them to a section of bench/RESULTS.md.

On the GPU machine, in one call (the device tool sets OUT; what lands there comes back):
    python3 bench/gpu.py
It keeps within --budget seconds (the device tool allows 600 per command): the build first,
then crisp's pieces, then the peer; whatever runs out of time is reported as missing. Under
$OUT it leaves gpu_results.json (all figures), RESULTS.md (the updated file), and the logs.

Back on the development machine, the section of bench/RESULTS.md is written from those files:
    python3 bench/gpu.py --from /path/to/fetched/out
"""
import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")
SECTION = "## GPU benchmark (`bench/gpu.py`)"
START = time.monotonic()

# (label, crisp key, peer keys (the best of them is the peer's figure), unit, higher_is_better,
#  target: None, "peer" (at least the peer's) or a factor of the peer's time (at most))
ROWS = [
    ("ResNet-50 training, float32, batch 128 (img/s)", "rn50_train_img_s_fp32_cl=False",
     ["rn50_train_img_s_fp32_cl=False"], "img/s", True, "peer"),
    ("ResNet-50 training, TF32, channels-last (img/s; peer: best layout)",
     "rn50_train_img_s_tf32_cl=True",
     ["rn50_train_img_s_tf32_cl=False", "rn50_train_img_s_tf32_cl=True"], "img/s", True, "peer"),
    ("ResNet-50 training, bfloat16 autocast, channels-last (img/s)",
     "rn50_train_img_s_bf16_cl=True", ["rn50_train_img_s_bf16_cl=True"], "img/s", True, "peer"),
    ("Reference CNN epoch, 60k images, batch 64, Adam (s)", "seedcnn_epoch_s_tf32=False",
     ["seedcnn_epoch_s_tf32=False"], "s", False, 0.5),
    ("Reference CNN epoch, TF32 (s)", "seedcnn_epoch_s_tf32=True", ["seedcnn_epoch_s_tf32=True"],
     "s", False, None),
    ("Reference CNN inference, 10k images at batch 512 (ms)",
     "seedcnn_infer10k_b512_ms_tf32=False", ["seedcnn_infer10k_b512_ms_tf32=False"], "ms", False,
     None),
    ("Reference CNN single-image latency (us, mean of 1000)", "seedcnn_single_image_us_tf32=False",
     ["seedcnn_single_image_us_tf32=False"], "us", False, 0.5),
    ("Dispatch overhead, 1-element x + 1 (us/op)", "us_per_add_1elem_async",
     ["us_per_add_1elem_async"], "us", False, 0.5),
    ("Dispatch floor: one bare CUDA kernel launch (us; bench/cuda_launch_floor.cu)",
     "us_per_bare_launch", [], "us", False, None),
    ("Dispatch, 64x64 matmul (us/op)", "us_per_matmul64_async", ["us_per_matmul64_async"], "us",
     False, None),
    ("Device copy bandwidth, 2^28 floats (GB/s)", "copy_GBps", ["copy_GBps"], "GB/s", True, None),
    ("x + 1 on 2^28 floats (GB/s)", "add_scalar_GBps", ["add_scalar_GBps"], "GB/s", True, None),
    ("mish x*tanh(softplus(x)) as 3 ops, 2^28 floats (ms; peer eager)", "mish_eager_ms",
     ["mish_eager_ms"], "ms", False, None),
    ("mish as crisp's fused op (ms; peer torch.compile)", "mish_fused_ms", ["mish_compiled_ms"],
     "ms", False, None),
    ("mish bandwidth floor: 2^28*4*2 bytes / copy bandwidth (ms)", "mish_floor_ms",
     ["mish_floor_ms"], "ms", False, None),
    ("ResNet-50 inference, batch 1 (ms)", "rn50_infer_b1_ms_fp32", ["rn50_infer_b1_ms_fp32"], "ms",
     False, None),
]

FIGURE_LINE = re.compile(r"^(\S+)\s+(-?[0-9.]+(?:[eE][-+]?[0-9]+)?|nan|inf|-inf)(\s|$)")


def left(budget):
    return budget - (time.monotonic() - START)


def run_streaming(cmd, log_path, timeout, env=None, cwd=None):
    """Runs cmd, echoing its output and saving it to log_path; kills it after timeout seconds.
    Returns (exit code or None when killed, output text)."""
    lines = []
    print(f"$ {' '.join(cmd)}   (time limit {timeout:.0f} s)", flush=True)
    if timeout <= 5:
        return None, "skipped: no time left\n"
    with open(log_path, "w") as log:
        try:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env, cwd=cwd, bufsize=1, start_new_session=True)
        except OSError as e:
            log.write(f"cannot start: {e}\n")
            return 127, f"cannot start: {e}\n"
        deadline = time.monotonic() + timeout
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        killed = False
        while True:
            if time.monotonic() > deadline:
                os.killpg(p.pid, 9)
                killed = True
                break
            if sel.select(timeout=1.0):
                line = p.stdout.readline()
                if not line:
                    break
                lines.append(line)
                log.write(line)
                sys.stdout.write(line)
                sys.stdout.flush()
        p.wait()
        if killed:
            msg = f"killed after {timeout:.0f} s (time budget)\n"
            lines.append(msg)
            log.write(msg)
            print(msg, end="", flush=True)
            return None, "".join(lines)
        return p.returncode, "".join(lines)


def build(args, logdir):
    """Configures and builds gpu_bench; returns its path or None."""
    bdir = args.build_dir
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    if os.path.exists(os.path.join(bdir, "CMakeCache.txt")):
        gen = []  # keep the generator the directory was made with
    cfg = ["cmake", "-S", ROOT, "-B", bdir, *gen, "-DCMAKE_BUILD_TYPE=Release",
           "-DCRISP_BUILD_BENCH=ON", "-DCRISP_BUILD_TESTS=OFF"]
    if shutil.which("ccache"):
        cfg += ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache", "-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"]
    rc, _ = run_streaming(cfg, os.path.join(logdir, "build.log"), left(args.budget) - 60)
    if rc != 0:
        return None
    rc, out = run_streaming(["cmake", "--build", bdir, "--target", "gpu_bench",
                             "cuda_launch_floor", "-j",
                             str(args.jobs)], os.path.join(logdir, "build2.log"),
                            left(args.budget) - args.reserve)
    with open(os.path.join(logdir, "build.log"), "a") as log:
        log.write(out)
    os.remove(os.path.join(logdir, "build2.log"))
    exe = os.path.join(bdir, "bench", "gpu_bench")
    return exe if rc == 0 and os.path.exists(exe) else None


def parse_figures(text):
    """Figures and errors from a benchmark's output, also when it was cut short."""
    figures, errors = {}, {}
    for line in text.splitlines():
        if line.startswith("JSON "):
            try:
                for k, v in json.loads(line[5:]).items():
                    (errors if k.endswith(("_error", "_err")) else figures)[k] = v
            except ValueError:
                pass
            continue
        m = re.match(r"^error: (\S+?): (.*)$", line)
        if m:
            errors[m.group(1) + "_error"] = m.group(2)[:500]
            continue
        m = FIGURE_LINE.match(line)
        if m:
            try:
                figures.setdefault(m.group(1), float(m.group(2)))
            except ValueError:
                pass
    return figures, errors


def find_peer(args):
    if args.peer:
        return args.peer, False
    for p in (os.path.join(ROOT, "shared", "bench", "torch_gpu.py"),
              os.path.join(os.path.dirname(ROOT), "shared", "bench", "torch_gpu.py")):
        if os.path.exists(p):
            return p, False
    return os.path.join(ROOT, "bench", "torch_gpu_peer.py"), True


def run_peer(args, logdir):
    path, ours = find_peer(args)
    tmp = tempfile.mkdtemp()
    env = dict(os.environ, OUT=tmp, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, path]
    # torch.compile takes tens of seconds: leave it out when time is short.
    if ours and left(args.budget) < 240:
        cmd.append("--skip-compile")
    rc, out = run_streaming(cmd, os.path.join(logdir, "peer.log"), left(args.budget) - 15, env=env)
    figures, errors = parse_figures(out)
    saved = os.path.join(tmp, "torch_gpu.json")
    if os.path.exists(saved):
        with open(saved) as f:
            for k, v in json.load(f).items():
                if isinstance(v, (int, float)):
                    figures[k] = v
                elif k.endswith(("_err", "_error")):
                    errors[k] = v
                else:
                    figures.setdefault(k, v)
    else:
        m = re.search(r"^FINAL (\{.*\})", out, re.S | re.M)
        if m:
            try:
                figures.update(json.loads(m.group(1)))
            except ValueError:
                pass
    if rc not in (0,):
        errors["peer_error"] = f"exit {rc}" if rc is not None else "stopped at the time budget"
    shutil.rmtree(tmp, ignore_errors=True)
    return figures, errors, os.path.relpath(path, ROOT)


def machine():
    info = {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        info["gpu"] = out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = "no nvidia-smi"
    try:
        out = subprocess.run(["/usr/local/cuda/bin/nvcc", "--version"], capture_output=True,
                             text=True, timeout=30)
        m = re.search(r"release ([0-9.]+)", out.stdout)
        info["cuda"] = m.group(1) if m else "unknown"
    except (OSError, subprocess.SubprocessError):
        info["cuda"] = "unknown"
    info["cpus"] = os.cpu_count()
    return info


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    a = abs(v)
    return f"{v:.4g}" if a < 1000 else f"{v:,.0f}"


def table(res):
    """Rows of (label, crisp, peer, ratio, target, met)."""
    crisp, peer = res["crisp"], res["peer"]
    out = []
    for label, ck, pks, unit, higher, target in ROWS:
        c = crisp.get(ck)
        pv = [peer[k] for k in pks if isinstance(peer.get(k), (int, float))]
        p = (max(pv) if higher else min(pv)) if pv else None
        ratio = c / p if isinstance(c, (int, float)) and p else None
        tgt, met = "", None
        if target == "peer":
            tgt = "≥ peer" if higher else "≤ peer"
            if ratio is not None:
                met = ratio >= 1 if higher else ratio <= 1
        elif isinstance(target, float):
            tgt = f"≤ {target:g} × peer"
            if ratio is not None:
                met = ratio <= target
        out.append((label, c, p, ratio, tgt, met))
    return out


def print_table(res):
    rows = table(res)
    print()
    print(f"{'name':70s} {'crisp':>12s} {'peer':>12s} {'ratio':>8s}  target")
    for label, c, p, ratio, tgt, met in rows:
        mark = "" if met is None else (" met" if met else " MISSED")
        print(f"{label:70s} {fmt(c):>12s} {fmt(p):>12s} {fmt(ratio):>8s}  {tgt}{mark}")
    for k, v in sorted({**res["crisp_errors"], **res["peer_errors"]}.items()):
        print(f"error: {k}: {str(v)[:300]}")


def section(res):
    m = res["meta"]
    lines = [SECTION, "",
             f"- Date: {m['date']}",
             f"- Machine: {m['machine'].get('gpu')}, CUDA {m['machine'].get('cuda')}, "
             f"{m['machine'].get('cpus')} CPUs; peer PyTorch {res['peer'].get('torch', '?')}",
             f"- Command: `{m['command']}` (on the GPU machine, in one call)",
             f"- Peer: `{m['peer_script']}`; crisp: `bench/gpu_bench` (ResNet-50 float32 in the "
             "usual layout as the peer's; TF32 and bfloat16 channels-last, against the peer's "
             "better layout in TF32 and its channels-last bfloat16)",
             "",
             "Ratio = crisp / peer: for img/s and GB/s above 1 means crisp is faster, for times "
             "below 1.",
             "",
             "| name | crisp | peer | ratio | target |",
             "|---|---|---|---|---|"]
    for label, c, p, ratio, tgt, met in table(res):
        mark = "" if met is None else (" (met)" if met else " (missed)")
        lines.append(f"| {label} | {fmt(c)} | {fmt(p)} | {fmt(ratio)} | {tgt}{mark} |")
    extra = {k: v for k, v in res["crisp"].items()
             if k not in {r[1] for r in ROWS} and isinstance(v, (int, float))}
    if extra:
        lines += ["", "Other crisp figures: " +
                  ", ".join(f"`{k}` {fmt(v)}" for k, v in extra.items()) + "."]
    errs = {**res["crisp_errors"], **res["peer_errors"]}
    if errs:
        lines += ["", "Not measured (errors in this run):", ""]
        lines += [f"- `{k}`: {str(v)[:300].strip()}" for k, v in sorted(errs.items())]
    return "\n".join(lines) + "\n"


def write_results(res, path=RESULTS):
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    new = section(res)
    start = text.find(SECTION)
    if start >= 0:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + new + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + new
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote the GPU section of {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build", "gpu"))
    ap.add_argument("--skip-build", action="store_true", help="use the gpu_bench already built")
    ap.add_argument("--crisp-only", action="store_true")
    ap.add_argument("--peer-only", action="store_true")
    ap.add_argument("--pieces", default="", help="gpu_bench --only list (default: all)")
    ap.add_argument("--bench-args", default="", help="more arguments for gpu_bench")
    ap.add_argument("--peer", default="", help="the peer script (default: found as documented)")
    ap.add_argument("--budget", type=float, default=570, help="seconds for the whole run")
    ap.add_argument("--reserve", type=float, default=200,
                    help="seconds kept for the peer while crisp builds and runs")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    ap.add_argument("--from", dest="from_dir", default="",
                    help="write RESULTS.md from a fetched gpu_results.json; run nothing")
    ap.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()

    if args.from_dir:
        with open(os.path.join(args.from_dir, "gpu_results.json")) as f:
            res = json.load(f)
        print_table(res)
        write_results(res)
        return 0

    out_dir = os.environ.get("OUT") or ""
    logdir = out_dir or tempfile.mkdtemp()
    res = {"meta": {"date": datetime.date.today().isoformat(), "machine": machine(),
                    "command": shlex.join(["python3", "bench/gpu.py", *sys.argv[1:]])},
           "crisp": {}, "peer": {}, "crisp_errors": {}, "peer_errors": {}}
    print(f"# machine: {res['meta']['machine']}", flush=True)

    if not args.peer_only:
        exe = os.path.join(args.build_dir, "bench", "gpu_bench")
        if not args.skip_build:
            exe = build(args, logdir)
        if exe and os.path.exists(exe):
            cmd = [exe, "--json", os.path.join(logdir, "crisp_gpu.json")]
            if args.pieces:
                cmd += ["--only", args.pieces]
            cmd += args.bench_args.split()
            budget = left(args.budget) - (0 if args.crisp_only else args.reserve)
            rc, out = run_streaming(cmd, os.path.join(logdir, "gpu_bench.log"), budget)
            res["crisp"], res["crisp_errors"] = parse_figures(out)
            if rc != 0:
                res["crisp_errors"]["gpu_bench_error"] = (
                    f"exit {rc}" if rc is not None else "stopped at the time budget")
            floor_exe = os.path.join(args.build_dir, "bench", "cuda_launch_floor")
            if os.path.exists(floor_exe):
                _, out = run_streaming([floor_exe], os.path.join(logdir, "launch_floor.log"), 60)
                for line in out.splitlines():
                    parts = line.split()
                    if len(parts) >= 2 and parts[0].startswith(("us_per_bare_launch", "us_issue_")):
                        res["crisp"][parts[0]] = float(parts[1])
        else:
            res["crisp_errors"]["build_error"] = "the build failed: see build.log"

    if not args.crisp_only:
        res["peer"], res["peer_errors"], res["meta"]["peer_script"] = run_peer(args, logdir)
    else:
        res["meta"]["peer_script"] = "(not run)"

    print_table(res)
    with open(os.path.join(logdir, "gpu_results.json"), "w") as f:
        json.dump(res, f, indent=1)
    if not args.no_results:
        write_results(res)
        if out_dir:
            shutil.copy(RESULTS, os.path.join(out_dir, "RESULTS.md"))
    print(f"logs and gpu_results.json in {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
