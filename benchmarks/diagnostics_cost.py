"""The cost of ``fit(diagnostics=True)``: a whole fit with diagnostics against the same fit
without, and one diagnosis of the probe batch against one epoch.

    python benchmarks/diagnostics_cost.py [numpy|numba ...]

The network of the README's example: scikit-learn's digits, 64-128-64-10 relu/softmax,
batch 32, SGD with momentum, float32, 20 epochs; on all 1,437 training images and on the first
160 (where one diagnosis costs about a quarter of an epoch). For each backend and size: the
fit's time without and with ``diagnostics=True`` (alternated, minimum of ``RUNS``; the
machine is shared), their difference as a share of the fit, the epochs diagnosed
(:class:`backprop.diagnostics.DiagnosisSchedule` keeps diagnosing within 2% of the training
time), and one diagnosis against one epoch (medians of 50 and of the fit's epochs). Takes
about half a minute.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np

import backprop
from backprop import diagnostics, training
from backprop.__main__ import load_digits_split

RUNS = 5
EPOCHS = 20


def fit(backend: str, X, y, diagnose: bool) -> tuple[float, backprop.History]:
    net = backprop.Network([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy",
                           backend=backend, seed=0, dtype="float32")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = net.fit(X, y, epochs=EPOCHS, batch_size=32, learning_rate=0.05,
                    optimizer="momentum", seed=0, diagnostics=diagnose)
    return time.perf_counter() - start, h


def measure(backend: str, rows: int) -> str:
    X, y, _, _ = load_digits_split()
    X, y = X[:rows], y[:rows]
    fit(backend, X, y, True)                                      # compile, warm up
    plain, diag, done = [], [], 0
    for _ in range(RUNS):
        t, h = fit(backend, X, y, False)
        plain.append(t)
        t, hd = fit(backend, X, y, True)
        diag.append(t)
        done = sum(d is not None for d in hd.diagnostics)
    net = backprop.Network([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy",
                           backend=backend, seed=0, dtype="float32")
    Xd, Yd = net._prepare(X, y)
    probe = training._probe(net, Xd, Yd, 0)
    times = []
    for _ in range(51):
        start = time.perf_counter()
        diagnostics._diagnose(net, probe[0], probe[1], 0.05, probe[2])
        times.append(time.perf_counter() - start)
    one = statistics.median(times[1:])
    epoch = statistics.median(h["time"])
    a, b = min(plain), min(diag)
    return (f"| {backend} | {rows} | {a * 1e3:.1f} | {b * 1e3:.1f} | {(b - a) / a:+.1%} | "
            f"{done}/{EPOCHS} | {one * 1e3:.3f} | {one / epoch:.1%} |")


def main(backends: list[str]) -> None:
    share = getattr(diagnostics, "TIME_SHARE", None)      # None: a tree before the budget
    print(f"PROBE_SIZE = {diagnostics.PROBE_SIZE}, TIME_SHARE = {share}; "
          f"numpy {np.__version__}; {EPOCHS} epochs, min of {RUNS}\n")
    print("| backend | rows | fit ms | fit + diagnostics ms | difference | epochs diagnosed "
          "| one diagnosis ms | diagnosis / epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for backend in backends:
        for rows in (1437, 160):
            print(measure(backend, rows), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["numpy", "numba"])
