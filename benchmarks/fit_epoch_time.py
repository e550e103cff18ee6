"""The least ms per epoch of a whole ``fit`` of a plain network (numba: its fused epoch).

    python benchmarks/fit_epoch_time.py {numpy,numba,cupy}

2,048 random samples, 64-128-64-10 relu/softmax, batch 32, momentum; the minimum over 7 fits
of 2 epochs after a warm-up fit. Run it alternately on the two commits being compared.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from backprop import Network


def main(backend: str) -> float:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2048, 64)).astype(np.float32)
    y = rng.integers(0, 10, 2048)
    net = Network([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy",
                  backend=backend, seed=0)
    options = dict(batch_size=32, learning_rate=0.01, optimizer="momentum", seed=0)
    net.fit(X, y, epochs=1, **options)
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        net.fit(X, y, epochs=2, **options)
        best = min(best, (time.perf_counter() - start) / 2)
    return best * 1e3


if __name__ == "__main__":
    print(f"{main(sys.argv[1]):.2f}")
