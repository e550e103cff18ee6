"""Time one training step of a speed network, for before/after comparisons of a change.

    python benchmarks/step_time.py {numpy,numba,cupy} {tiny,mnist,wide} [weighted]

Prints the median µs per step of 7 timings of a loop of steps, after 20 warm-up steps
(:class:`backprop.bench.Prepared`: SGD, float32, the speed section's networks and batch
sizes; ``weighted``: the step takes sample weights). Run it alternately on the two commits
being compared, several times each.
"""

from __future__ import annotations

import statistics
import sys
import time

from backprop import bench

NETWORKS = {"tiny": ([64, 32, 10], 32, 2000), "mnist": ([784, 256, 128, 10], 128, 200),
            "wide": ([1024, 1024, 1024, 1024, 10], 256, 20)}   # sizes, batch, steps a timing


def main(backend: str, network: str, weighted: bool = False) -> float:
    sizes, batch, steps = NETWORKS[network]
    prepared = (bench.Prepared(sizes, batch, backend, weighted=True) if weighted
                else bench.Prepared(sizes, batch, backend))   # as before weights existed
    for _ in range(20):
        prepared.train_step()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(steps):
            prepared.train_step()
        prepared.sync()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times) * 1e6


if __name__ == "__main__":
    print(f"{main(sys.argv[1], sys.argv[2], sys.argv[3:] == ['weighted']):.1f}")
