"""Where the Numba backend's fused epoch stops paying: fused vs per-kernel training speed.

Run as ``python benchmarks/numba_crossover.py`` (under ``flock`` on a shared machine). For
networks [w, w, w, 10] (relu, softmax, cross_entropy, float32, SGD, batch 64, 4096 samples)
prints the training samples/s of both paths (median of 5 epochs after a warm-up) as markdown;
``FUSED_MAX_WIDTH`` in backprop/backends/numba.py is set from it.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backprop.backends import numba as numba_backend  # noqa: E402
from backprop.bench import make_data, make_network  # noqa: E402

WIDTHS = [16, 32, 64, 128, 192, 256, 384]
BATCH, SAMPLES, REPEATS = 64, 4096, 5


def rate(width: int, fused: bool) -> float:
    numba_backend.FUSED_MAX_WIDTH = 10**9 if fused else 0
    sizes = [width] * 3 + [10]
    X, y = make_data(sizes, SAMPLES)
    net = make_network(sizes, "numba")
    times = []
    for k in range(REPEATS + 1):
        start = time.perf_counter()
        net.fit(X, y, epochs=1, batch_size=BATCH, learning_rate=0.01, seed=k)
        times.append(time.perf_counter() - start)
    return SAMPLES / statistics.median(times[1:])


def main() -> None:
    print(f"[w, w, w, 10], batch {BATCH}, {SAMPLES} samples, float32 SGD; train samples/s\n")
    print("| width | fused epoch | per-kernel | fused ÷ per-kernel |")
    print("| ---: | ---: | ---: | ---: |")
    for w in WIDTHS:
        fused, kernels = rate(w, True), rate(w, False)
        print(f"| {w} | {fused:,.0f} | {kernels:,.0f} | {fused / kernels:.2f} |", flush=True)


if __name__ == "__main__":
    main()
