"""The cost of ``fit(diagnostics=True)``: one diagnosis of the probe batch against one epoch.

    python benchmarks/diagnostics_cost.py [numpy|numba ...]

The typical configuration of the budget (at most 2% of an epoch): scikit-learn's digits
(1,437 training images), the network 64-128-64-10 relu/softmax, batch 32, SGD with momentum,
float32. For each backend: the epoch time (``fit(epochs=1)`` continued, minimum and median
of 15), the time of one diagnosis of the probe batch as fit runs it (its buffers kept,
minimum and median of 50) for several probe sizes, and their ratio (medians). Takes about
half a minute.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import backprop
from backprop import diagnostics, training
from backprop.__main__ import load_digits_split

PROBES = (32, 64, 128, 256)


def measure(backend: str) -> list[str]:
    X, y, _, _ = load_digits_split()
    net = backprop.Network([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy",
                           backend=backend, seed=0)
    opt = backprop.Momentum()
    net.fit(X, y, epochs=2, batch_size=32, learning_rate=0.05, optimizer=opt, seed=0)  # warm
    epochs = []
    for _ in range(15):
        start = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=32, learning_rate=0.05, optimizer=opt, seed=0)
        epochs.append(time.perf_counter() - start)
    epoch = statistics.median(epochs)
    rows = [f"| {backend} | epoch (fit, 1 epoch) | {min(epochs) * 1e3:.2f} | {epoch * 1e3:.2f} | |"]
    Xd, Yd = net._prepare(X, y)
    for size in PROBES:
        old = diagnostics.PROBE_SIZE
        diagnostics.PROBE_SIZE = size
        try:
            probe = training._probe(net, Xd, Yd, 0)
        finally:
            diagnostics.PROBE_SIZE = old
        diagnostics._diagnose(net, probe[0], probe[1], 0.05, probe[2])
        times = []
        for _ in range(50):
            start = time.perf_counter()
            diagnostics._diagnose(net, probe[0], probe[1], 0.05, probe[2])
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        rows.append(f"| {backend} | diagnose, probe {size} | {min(times) * 1e3:.3f} | "
                    f"{t * 1e3:.3f} | {t / epoch:.1%} |")
    return rows


def main(backends: list[str]) -> None:
    print(f"default PROBE_SIZE = {diagnostics.PROBE_SIZE}; numpy {np.__version__}\n")
    print("| backend | what | min ms | median ms | median / epoch |")
    print("|---|---|---|---|---|")
    for backend in backends:
        for row in measure(backend):
            print(row)


if __name__ == "__main__":
    main(sys.argv[1:] or ["numpy", "numba"])
