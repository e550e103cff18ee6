"""backprop on CuPy against PyTorch CUDA (eager and torch.compile), in one run on one GPU.

For each network: training and inference samples/s and achieved TFLOP/s, next to the float32
cuBLAS matrix-product throughput measured in the same run (the peak to compare against).
A training step does 2·B·Σ n_l n_{l-1} (forward) + 2·B·Σ n_l n_{l-1} (weight gradients)
+ 2·B·Σ_{l≥2} n_l n_{l-1} (deltas) FLOPs; inference the forward part.

Measured in this order, so a budget that runs out drops what matters least:
1. the targets: backprop's default (our matmul kernel and CUDA graphs where every width is at
   most ``small_width``, cuBLAS above) and PyTorch eager, on 64-32-10 b32, 784-256-128-10
   b128 and 4096x3-10 b1024;
2. each product of a training step alone on our kernel and on cuBLAS (GPU time, CUDA events):
   the measurements that set ``SMALL_WIDTH`` and ``SPLIT_BLOCKS`` in cupy.py;
3. the variants: "cuBLAS only" (``small_width = 0``: eager, cuBLAS products), "no graphs",
   torch.compile, and the 1024x3-10 b256 network.

Every run has a hard deadline (SIGALRM raises in it; ``--run-limit`` seconds, and never past
``--budget`` seconds counted from the script's start), and the results are rewritten after
each run, so a run that fails, hangs or is killed keeps what was measured before it.

    python benchmarks/gpu_vs_torch.py [--out DIR] [--quick] [--budget S] [--run-limit S]
                                      [--require-gpu]

Writes gpu_vs_torch.json and gpu_vs_torch.md to DIR. Without CuPy or a CUDA device it says
so and exits 0 (nothing to measure), or 1 with ``--require-gpu`` (ci/gpu.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

START = time.perf_counter()         # the budget counts from here, imports included
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backprop.bench import flops, make_data, one_hot, torch_mlp  # noqa: E402  (shared with the CPU report)

#: (name, layer sizes, batch size): the targets, measured first (the PERFORMANCE.md anchors
#: and a network too wide for our kernel), then a network at our kernel's width limit
TARGETS = [
    ("tiny 64-32-10", [64, 32, 10], 32),
    ("mnist 784-256-128-10", [784, 256, 128, 10], 128),
    ("wide 4096x3-10", [4096, 4096, 4096, 4096, 10], 1024),
]
EXTRA = [("wide 1024x3-10", [1024, 1024, 1024, 1024, 10], 256)]


def train_flops(sizes: list[int], batch: int) -> float:
    return float(flops(sizes, batch)["train"])


def infer_flops(sizes: list[int], batch: int) -> float:
    return float(flops(sizes, batch)["forward"])


def why_no_gpu() -> str | None:
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA device"
    except Exception as e:  # noqa: BLE001 - any driver error means: nothing to measure
        return f"no CUDA device: {e}"
    return None


def n_samples(batch: int, sizes: list[int], quick: bool) -> int:
    """Enough batches per epoch to time (~1e9 training FLOPs or 64 batches, at most 512)."""
    per_batch = train_flops(sizes, batch)
    batches = int(min(512, max(64, 2e10 / per_batch)))
    return batch * (batches // (4 if quick else 1))


def data(n: int, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The CPU report's samples (:func:`backprop.bench.make_data`) with one-hot targets."""
    X, labels = make_data(sizes, n)
    return X, one_hot(labels, sizes[-1])


# ---------------------------------------------------------------- backprop on CuPy

def bench_backprop(sizes, batch, X, Y, epochs, graphs=True, small_width=None):
    """(train seconds per epoch, inference seconds, whether the graph path ran)."""
    import cupy
    from backprop.bench import make_network
    net = make_network(sizes, "cupy")
    backend = net.backend
    saved = backend.graphs, backend.small_width
    backend.graphs = graphs
    if small_width is not None:
        backend.small_width = small_width
    try:
        Xd, Yd = cupy.asarray(X), cupy.asarray(Y)
        hist = net.fit(Xd, Yd, epochs=epochs, batch_size=batch, learning_rate=1e-3,
                       optimizer="sgd", shuffle=True, seed=0)
        # each epoch's time ends with the one loss read, so it includes all its device work
        train = statistics.median(hist["time"][1:])
        plan = backend._plans.get(net)
        used_graphs = plan is not None and plan.graph is not None
        out = cupy.empty((X.shape[0], sizes[-1]), cupy.float32)
        net.forward(Xd, out=out)
        backend.synchronize()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            net.forward(Xd, out=out)
            backend.synchronize()
            times.append(time.perf_counter() - start)
        return train, statistics.median(times), used_graphs
    finally:
        backend.graphs, backend.small_width = saved


def bench_product(backend, M: int, N: int, K: int, trans_a: bool, trans_b: bool,
                  repeat: int = 20) -> dict:
    """GPU time (µs) of one float32 product ``op(A) @ op(B)`` of a training step on our matmul
    kernel and on cuBLAS. The timed launches queue behind a long busy kernel, so the events
    between them measure the GPU's time, not the Python launch overhead."""
    import cupy
    from backprop.backends.cupy import matmul_splits
    busy_a = cupy.ones((4096, 4096), cupy.float32)
    busy_c = cupy.empty((4096, 4096), cupy.float32)
    rng = cupy.random.default_rng(0)
    a = rng.standard_normal((K, M) if trans_a else (M, K), dtype=cupy.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N), dtype=cupy.float32)
    out = cupy.empty((M, N), cupy.float32)
    row = {"M": M, "N": N, "K": K, "trans_a": trans_a, "trans_b": trans_b,
           "splits": matmul_splits(M, N, K)[0]}
    saved = backend.small_width
    try:
        for label, width in (("own_us", 1 << 30), ("cublas_us", 0)):
            backend.small_width = width
            for _ in range(3):
                backend._matmul(a, trans_a, b, trans_b, out)
            for _ in range(3):                     # ~ms of work ahead of the timed launches
                cupy.matmul(busy_a, busy_a, out=busy_c)
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            for _ in range(repeat):
                backend._matmul(a, trans_a, b, trans_b, out)
            stop.record()
            stop.synchronize()
            row[label] = cupy.cuda.get_elapsed_time(start, stop) * 1e3 / repeat
    finally:
        backend.small_width = saved
    return row


# ---------------------------------------------------------------- PyTorch

def bench_torch(sizes, batch, X, Y, epochs, compiled):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = torch_mlp(sizes).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xd = torch.from_numpy(X).cuda()
    labels = torch.from_numpy(Y.argmax(axis=1)).cuda()

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    forward = model
    if compiled:
        step = torch.compile(step)
        forward = torch.compile(model)
    n = X.shape[0]
    epoch_times = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(n, device="cuda")
        total = torch.zeros((), device="cuda")
        for s in range(0, n, batch):
            index = order[s:s + batch]
            total += step(Xd[index], labels[index]) * index.numel()
        float(total)                                    # one read per epoch, like backprop
        epoch_times.append(time.perf_counter() - start)
    times = []
    with torch.no_grad():
        for _ in range(6):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for s in range(0, n, 4096):
                forward(Xd[s:s + 4096])
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(epoch_times[1:]), statistics.median(times[1:])


# ---------------------------------------------------------------- the peak

def cublas_peak(n: int = 4096, repeat: int = 20) -> float:
    """float32 cuBLAS matrix-product throughput (TFLOP/s), TF32 off: cupy.matmul n³."""
    import cupy
    a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
    c = cupy.empty((n, n), cupy.float32)
    cupy.matmul(a, b, out=c)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeat):
        cupy.matmul(a, b, out=c)
    stop.record()
    stop.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / repeat
    return 2.0 * n ** 3 / seconds / 1e12


# ---------------------------------------------------------------- report

#: (label, how): the variants, measured after the targets and the per-product table
VARIANTS = [("backprop cupy, cuBLAS only", {"small_width": 0}),
            ("backprop cupy, no graphs", {"graphs": False}), ("torch.compile", "compile")]


class Deadline(Exception):
    """A run went past its hard deadline."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise :class:`Deadline` in the running code once ``seconds`` have passed (SIGALRM, so
    the main thread only; a C call returns first)."""
    def expire(signum, frame):
        raise Deadline(f"past its {seconds:.0f} s deadline")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Runner:
    """Runs measurements under one budget and a hard deadline each, recording the outcome
    (the result, or the error) and rewriting the report after every run."""

    def __init__(self, out: Path, result: dict, budget: float, run_limit: float) -> None:
        self.out, self.result = out, result
        self.end = START + budget
        self.budget, self.run_limit = budget, run_limit

    def run(self, record: dict, key: str, fn) -> None:
        left = self.end - time.perf_counter()
        if left < 1:
            record[key] = {"error": f"skipped: past the {self.budget:.0f} s budget"}
        else:
            try:
                with deadline(min(self.run_limit, left)):
                    record[key] = fn()
            except Exception as e:  # noqa: BLE001 - record and go on (torch.compile may fail)
                record[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(f"{key}: {record[key]}", flush=True)
        write(self.out, self.result)


def run(out: Path, quick: bool, budget: float, run_limit: float) -> dict:
    """Measure the targets, the per-product table and the variants, in that order."""
    import cupy
    from backprop.backends import get_backend
    from backprop.backends.cupy import SMALL_WIDTH, SPLIT_BLOCKS, own_matmul, step_products
    props = cupy.cuda.runtime.getDeviceProperties(0)
    result = {"device": props["name"].decode() if isinstance(props["name"], bytes)
              else str(props["name"]), "cupy": cupy.__version__,
              "python": platform.python_version(), "small_width": SMALL_WIDTH,
              "split_blocks": SPLIT_BLOCKS, "cases": []}
    try:
        import torch
        result["torch"] = torch.__version__
        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    runner = Runner(out, result, budget, run_limit)
    runner.run(result, "cublas_fp32_tflops", cublas_peak)
    epochs = 3 if quick else 4
    cases = []
    for name, sizes, batch in TARGETS + EXTRA:
        case = {"name": name, "sizes": sizes, "batch": batch,
                "samples": n_samples(batch, sizes, quick), "runs": {}, "products": {}}
        result["cases"].append(case)
        cases.append(case)
    data_of: dict = {}

    def measure(case, how):
        sizes, batch, n = case["sizes"], case["batch"], case["samples"]
        if case["name"] not in data_of:
            data_of.clear()                         # one network's data in memory at a time
            data_of[case["name"]] = data(n, sizes)
        X, Y = data_of[case["name"]]
        if isinstance(how, str):
            train, infer = bench_torch(sizes, batch, X, Y, epochs, how == "compile")
            graphs = None
        else:
            train, infer, graphs = bench_backprop(sizes, batch, X, Y, epochs, **how)
        flops_t = train_flops(sizes, batch) * (n / batch)
        return {"train_samples_per_s": n / train, "train_tflops": flops_t / train / 1e12,
                "infer_samples_per_s": n / infer,
                "infer_tflops": infer_flops(sizes, n) / infer / 1e12, "graphs": graphs}

    def own(case):
        return [own_matmul(M, N, K, ta, SMALL_WIDTH)
                for M, N, K, ta, _ in step_products(case["sizes"], case["batch"])]

    targets, extra = cases[:len(TARGETS)], cases[len(TARGETS):]
    for case in targets:                                        # 1. the targets
        runner.run(case["runs"], "backprop cupy", lambda: measure(case, {}))
        if has_torch:
            runner.run(case["runs"], "torch eager", lambda: measure(case, "eager"))
    backend = get_backend("cuda", "cupy")
    for case in cases:                                          # 2. the per-product table
        for product in dict.fromkeys(step_products(case["sizes"], case["batch"])):
            label = "{} x {} x {} {}{}".format(*product[:3], "Aᵀ" if product[3] else "A",
                                               "Bᵀ" if product[4] else "B")
            runner.run(case["products"], label, lambda: bench_product(backend, *product))
    for case in extra:                                          # 3. the variants
        runner.run(case["runs"], "backprop cupy", lambda: measure(case, {}))
        if has_torch:
            runner.run(case["runs"], "torch eager", lambda: measure(case, "eager"))
    for label, how in VARIANTS:
        for case in cases:
            if isinstance(how, str):
                if not has_torch:
                    continue
            elif "small_width" in how and not any(own(case)):  # nothing on our kernel anyway
                continue
            elif how.get("graphs") is False and not all(own(case)):  # no graphs by default
                continue
            runner.run(case["runs"], label, lambda: measure(case, how))
    return result


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_vs_torch.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_vs_torch.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    peak = result.get("cublas_fp32_tflops")
    peak_ok = isinstance(peak, float)
    lines = [f"# backprop (CuPy) vs PyTorch on {result['device']}", "",
             (f"float32 cuBLAS peak measured in this run: {peak:.1f} TFLOP/s (TF32 off). "
              if peak_ok else f"float32 cuBLAS peak: not measured ({peak}). ")
             + f"CuPy {result['cupy']}, PyTorch {result.get('torch', 'absent')}; "
             f"SMALL_WIDTH {result['small_width']}, SPLIT_BLOCKS {result['split_blocks']}.", "",
             "| network | batch | implementation | train samples/s | train TFLOP/s (% peak) "
             "| inference samples/s | inference TFLOP/s | graphs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for case in result["cases"]:
        for label, r in case["runs"].items():
            if "error" in r:
                lines.append(f"| {case['name']} | {case['batch']} | {label} | "
                             f"failed: {r['error'][:80]} | | | | |")
                continue
            share = f" ({100 * r['train_tflops'] / peak:.0f}%)" if peak_ok else ""
            graphs = {None: "", True: "yes", False: "no"}[r.get("graphs")]
            lines.append(
                f"| {case['name']} | {case['batch']} | {label} | "
                f"{r['train_samples_per_s']:,.0f} | {r['train_tflops']:.2f}{share} | "
                f"{r['infer_samples_per_s']:,.0f} | {r['infer_tflops']:.2f} | {graphs} |")
    lines += ["", "## Each product of a training step: our matmul kernel vs cuBLAS (GPU µs)", "",
              "| network | C = op(A) @ op(B): M × N × K | layout | splits | own µs | cuBLAS µs "
              "| own / cuBLAS |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for case in result["cases"]:
        for label, r in case["products"].items():
            if "error" in r:
                lines.append(f"| {case['name']} | {label} | | | failed: {r['error'][:60]} | | |")
                continue
            layout = ("Aᵀ" if r["trans_a"] else "A") + ("Bᵀ" if r["trans_b"] else "B")
            lines.append(f"| {case['name']} | {r['M']} × {r['N']} × {r['K']} | {layout} | "
                         f"{r['splits']} | {r['own_us']:.1f} | {r['cublas_us']:.1f} | "
                         f"{r['own_us'] / r['cublas_us']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="fewer batches per epoch")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds for the whole run; no run goes past it")
    parser.add_argument("--run-limit", type=float, default=30.0,
                        help="hard deadline of one run in seconds")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit 1, not 0, when there is no GPU to measure")
    args = parser.parse_args(argv)
    reason = why_no_gpu()
    if reason:
        print(f"gpu_vs_torch: {'failed' if args.require_gpu else 'skipped'}: {reason}")
        return 1 if args.require_gpu else 0
    run(args.out, args.quick, args.budget, args.run_limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
