"""Numba backend vs the NumPy backend vs PyTorch CPU: training and inference samples/s.

Run as ``python benchmarks/numba_vs_peers.py`` (under ``flock /work/bench.lock`` on a shared
machine); prints a markdown table. Every network is relu hidden layers, a softmax output and
cross_entropy, float32, plain SGD; training is ``fit`` over one epoch of synthetic data,
inference one ``forward`` over the same samples. Each number is the median of REPEATS runs
after one warm-up run (which also compiles). "numba fused" / "numba per-kernel" force the
path by setting ``FUSED_MAX_WIDTH``; "numba" is the automatic choice. Each implementation
runs in its own process, so PyTorch's OpenMP threads never spin beside OpenBLAS's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backprop.backends import numba as numba_backend  # noqa: E402
from backprop.bench import make_data, make_network, measure, torch_mlp  # noqa: E402

CASES = [  # name, layer sizes, batch, samples
    ("tiny", [64, 32, 10], 32, 8192),
    ("mnist", [784, 256, 128, 10], 128, 8192),
    ("wide", [1024, 1024, 1024, 1024, 10], 256, 2048),
]
REPEATS = 5
LEARNING_RATE = 0.01


def median_seconds(run) -> float:
    """One warm-up call (which also compiles), then the median of REPEATS single calls."""
    return measure(run, repeat=REPEATS, min_time=0.0)


def backprop_rates(backend: str, sizes, batch, X, y, fused_max_width=None):
    saved = numba_backend.FUSED_MAX_WIDTH
    if fused_max_width is not None:
        numba_backend.FUSED_MAX_WIDTH = fused_max_width
    try:
        net = make_network(sizes, backend)
        train = median_seconds(lambda: net.fit(X, y, epochs=1, batch_size=batch,
                                               learning_rate=LEARNING_RATE, seed=1))
        out = np.empty((X.shape[0], sizes[-1]), np.float32)
        infer = median_seconds(lambda: net.forward(X, out=out))
    finally:
        numba_backend.FUSED_MAX_WIDTH = saved
    return X.shape[0] / train, X.shape[0] / infer


def torch_rates(sizes, batch, X, y):
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torch_mlp(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    n = X.shape[0]

    def epoch():
        order = torch.randperm(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(Xt[idx]), yt[idx]).backward()
            opt.step()

    def infer():
        with torch.no_grad():
            model(Xt)

    return n / median_seconds(epoch), n / median_seconds(infer)


IMPLEMENTATIONS = {  # label -> how to measure it
    "PyTorch CPU": lambda sizes, batch, X, y: torch_rates(sizes, batch, X, y),
    "numpy backend": lambda *a: backprop_rates("numpy", *a),
    "numba backend (auto)": lambda *a: backprop_rates("numba", *a),
    "numba per-kernel (forced)": lambda *a: backprop_rates("numba", *a, fused_max_width=0),
    "numba fused epoch (forced)": lambda *a: backprop_rates("numba", *a, fused_max_width=10**9),
}


def measure_in_process(case: str, impl: str) -> tuple[float, float]:
    """(train, infer) samples/s of one implementation on one case, in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--one", case, impl], check=True,
                         capture_output=True, text=True).stdout
    return tuple(json.loads(out.splitlines()[-1]))


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        _, sizes, batch, n = next(c for c in CASES if c[0] == sys.argv[2])
        X, y = make_data(sizes, n)
        print(json.dumps(IMPLEMENTATIONS[sys.argv[3]](sizes, batch, X, y)))
        return
    import torch
    print(f"numpy {np.__version__}, numba {__import__('numba').__version__}, "
          f"torch {torch.__version__} (2 threads); median of {REPEATS}; samples/s\n")
    print("| network | batch | samples | implementation | train samples/s | infer samples/s |")
    print("| --- | --- | --- | --- | ---: | ---: |")
    for name, sizes, batch, n in CASES:
        label = "-".join(map(str, sizes))
        rates = {}
        for impl in IMPLEMENTATIONS:
            rates[impl] = train, infer = measure_in_process(name, impl)
            print(f"| {label} | {batch} | {n} | {impl} | {train:,.0f} | {infer:,.0f} |")
        auto, torch_, numpy_ = (rates[k] for k in ("numba backend (auto)", "PyTorch CPU",
                                                   "numpy backend"))
        print(f"| {label} | | | numba auto ÷ PyTorch; ÷ numpy | "
              f"{auto[0] / torch_[0]:.2f}x; {auto[0] / numpy_[0]:.2f}x | "
              f"{auto[1] / torch_[1]:.2f}x; {auto[1] / numpy_[1]:.2f}x |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
