"""backprop on CuPy against PyTorch CUDA (eager and torch.compile), in one run on one GPU.

For each network: training and inference samples/s and achieved TFLOP/s, next to the float32
cuBLAS matrix-product throughput measured in the same run (the peak to compare against).
A training step does 2·B·Σ n_l n_{l-1} (forward) + 2·B·Σ n_l n_{l-1} (weight gradients)
+ 2·B·Σ_{l≥2} n_l n_{l-1} (deltas) FLOPs; inference the forward part.

Variants of backprop: the default (our matmul kernel and CUDA graphs where every width is at
most ``small_width``), "cuBLAS only" (``small_width = 0``: eager, cuBLAS products) and "no
graphs". Each product of a step is also timed alone on our kernel and on cuBLAS (GPU time,
CUDA events): the measurements that set ``SMALL_WIDTH`` and ``SPLIT_BLOCKS`` in cupy.py.

    python benchmarks/gpu_vs_torch.py [--out DIR] [--quick]

Writes gpu_vs_torch.json and gpu_vs_torch.md to DIR. Without CuPy or a CUDA device it says
so and exits 0 (nothing to measure).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backprop.bench import flops, make_data, one_hot, torch_mlp  # noqa: E402  (shared with the CPU report)

#: (name, layer sizes, batch size): the PERFORMANCE.md anchors plus a large network
CASES = [
    ("tiny 64-32-10", [64, 32, 10], 32),
    ("mnist 784-256-128-10", [784, 256, 128, 10], 128),
    ("wide 1024x3-10", [1024, 1024, 1024, 1024, 10], 256),
    ("huge 4096x3-10", [4096, 4096, 4096, 4096, 10], 1024),
]


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
    import cupy
    from backprop.backends import get_backend
    from backprop.bench import make_network
    backend = get_backend("cuda", "cupy")
    saved = backend.graphs, backend.small_width
    backend.graphs = graphs
    if small_width is not None:
        backend.small_width = small_width
    try:
        net = make_network(sizes, "cupy")
        Xd, Yd = cupy.asarray(X), cupy.asarray(Y)
        hist = net.fit(Xd, Yd, epochs=epochs, batch_size=batch, learning_rate=1e-3,
                       optimizer="sgd", shuffle=True, seed=0)
        # each epoch's time ends with the one loss read, so it includes all its device work
        train = statistics.median(hist["time"][1:])
        out = cupy.empty((X.shape[0], sizes[-1]), cupy.float32)
        net.forward(Xd, out=out)
        backend.synchronize()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            net.forward(Xd, out=out)
            backend.synchronize()
            times.append(time.perf_counter() - start)
        return train, statistics.median(times)
    finally:
        backend.graphs, backend.small_width = saved


def bench_products(sizes: list[int], batch: int, repeat: int = 20) -> list[dict]:
    """GPU time (µs) of each float32 product of a training step on our matmul kernel and on
    cuBLAS. The timed launches queue behind a long busy kernel, so the events between them
    measure the GPU's time, not the Python launch overhead."""
    import cupy
    from backprop.backends import get_backend
    from backprop.backends.cupy import matmul_splits, step_products
    backend = get_backend("cuda", "cupy")
    saved = backend.small_width
    busy_a = cupy.ones((4096, 4096), cupy.float32)
    busy_c = cupy.empty((4096, 4096), cupy.float32)
    rng = cupy.random.default_rng(0)
    rows = []
    try:
        for M, N, K, trans_a, trans_b in step_products(sizes, batch):
            a = rng.standard_normal((K, M) if trans_a else (M, K), dtype=cupy.float32)
            b = rng.standard_normal((N, K) if trans_b else (K, N), dtype=cupy.float32)
            out = cupy.empty((M, N), cupy.float32)
            row = {"M": M, "N": N, "K": K, "trans_a": trans_a, "trans_b": trans_b,
                   "splits": matmul_splits(M, N, K)[0]}
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
            rows.append(row)
    finally:
        backend.small_width = saved
    return rows


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

#: (label, how) in the order they are measured: the issue's targets first, so a time budget
#: that runs out drops the comparisons that matter least
VARIANTS = [("backprop cupy", {}), ("torch eager", "eager"),
            ("backprop cupy, cuBLAS only", {"small_width": 0}),
            ("backprop cupy, no graphs", {"graphs": False}), ("torch.compile", "compile")]


def run(out: Path, quick: bool, budget: float) -> dict:
    """Measure every case; runs that would start after ``budget`` seconds are skipped, and
    the results are written after each run (a killed run leaves what it measured)."""
    import cupy
    from backprop.backends.cupy import SMALL_WIDTH, SPLIT_BLOCKS, own_matmul, step_products
    deadline = time.perf_counter() + budget
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
    result["cublas_fp32_tflops"] = cublas_peak()
    print(f"{result['device']}: float32 cuBLAS {result['cublas_fp32_tflops']:.1f} TFLOP/s",
          flush=True)
    epochs = 3 if quick else 4
    cases = []
    for name, sizes, batch in CASES:
        n = n_samples(batch, sizes, quick)
        products = step_products(sizes, batch)
        case = {"name": name, "sizes": sizes, "batch": batch, "samples": n, "runs": {},
                "products": bench_products(sizes, batch)}
        result["cases"].append(case)
        cases.append((case, data(n, sizes),
                      [own_matmul(M, N, K, ta, SMALL_WIDTH) for M, N, K, ta, _ in products]))
    write(out, result)
    for label, how in VARIANTS:
        for case, (X, Y), own in cases:
            sizes, batch, n = case["sizes"], case["batch"], case["samples"]
            if isinstance(how, str):
                if not has_torch:
                    continue
                fn = lambda: bench_torch(sizes, batch, X, Y, epochs, how == "compile")  # noqa: E731
            else:
                if "small_width" in how and not any(own):      # nothing on our kernel anyway
                    continue
                if how.get("graphs") is False and not all(own):  # no graphs by default either
                    continue
                fn = lambda: bench_backprop(sizes, batch, X, Y, epochs, **how)  # noqa: E731
            if time.perf_counter() > deadline:
                case["runs"][label] = {"error": f"skipped: past the {budget:.0f} s time budget"}
                continue
            try:
                train, infer = fn()
                flops_t = train_flops(sizes, batch) * (n / batch)
                case["runs"][label] = {"train_samples_per_s": n / train,
                                       "train_tflops": flops_t / train / 1e12,
                                       "infer_samples_per_s": n / infer,
                                       "infer_tflops": infer_flops(sizes, n) / infer / 1e12}
            except Exception as e:  # noqa: BLE001 - record and go on (torch.compile may fail)
                case["runs"][label] = {"error": f"{type(e).__name__}: {e}"[:300]}
            print(f"{case['name']} b{batch} {label}: {case['runs'][label]}", flush=True)
            write(out, result)
    return result


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_vs_torch.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_vs_torch.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    peak = result["cublas_fp32_tflops"]
    lines = [f"# backprop (CuPy) vs PyTorch on {result['device']}", "",
             f"float32 cuBLAS peak measured in this run: {peak:.1f} TFLOP/s (TF32 off). "
             f"CuPy {result['cupy']}, PyTorch {result.get('torch', 'absent')}; "
             f"SMALL_WIDTH {result['small_width']}, SPLIT_BLOCKS {result['split_blocks']}.", "",
             "| network | batch | implementation | train samples/s | train TFLOP/s (% peak) "
             "| inference samples/s | inference TFLOP/s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for case in result["cases"]:
        for label, r in case["runs"].items():
            if "error" in r:
                lines.append(f"| {case['name']} | {case['batch']} | {label} | "
                             f"failed: {r['error'][:80]} | | | |")
                continue
            lines.append(
                f"| {case['name']} | {case['batch']} | {label} | "
                f"{r['train_samples_per_s']:,.0f} | {r['train_tflops']:.2f} "
                f"({100 * r['train_tflops'] / peak:.0f}%) | {r['infer_samples_per_s']:,.0f} | "
                f"{r['infer_tflops']:.2f} |")
    lines += ["", "## Each product of a training step: our matmul kernel vs cuBLAS (GPU µs)", "",
              "| network | C = op(A) @ op(B): M × N × K | layout | splits | own µs | cuBLAS µs "
              "| own / cuBLAS |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for case in result["cases"]:
        for r in case["products"]:
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
                        help="seconds after which no further run starts")
    args = parser.parse_args(argv)
    reason = why_no_gpu()
    if reason:
        print(f"gpu_vs_torch: skipped: {reason}")
        return 0
    run(args.out, args.quick, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
