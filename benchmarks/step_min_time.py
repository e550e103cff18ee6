"""The least µs per training step (``Network.train_step``) of a plain network.

    python benchmarks/step_min_time.py {numpy,numba,cupy} {tiny,mnist}

The minimum of 15 timings (500 steps of 64-32-10 at batch 32, or 40 of 784-256-128-10 at
batch 128) after 50 warm-up steps: less sensitive to a loaded machine than step_time.py's
median. Run it alternately on the two commits being compared.
"""

from __future__ import annotations

import sys
import time

from backprop import bench

NETWORKS = {"tiny": ([64, 32, 10], 32, 500), "mnist": ([784, 256, 128, 10], 128, 40)}


def main(backend: str, network: str) -> float:
    sizes, batch, steps = NETWORKS[network]
    prepared = bench.Prepared(sizes, batch, backend)
    for _ in range(50):
        prepared.train_step()
    best = float("inf")
    for _ in range(15):
        start = time.perf_counter()
        for _ in range(steps):
            prepared.train_step()
        prepared.sync()
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e6


if __name__ == "__main__":
    print(f"{main(sys.argv[1], sys.argv[2]):.1f}")
