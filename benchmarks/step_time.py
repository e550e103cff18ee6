"""Time one training step of a speed network, for before/after comparisons of a change.

    python benchmarks/step_time.py {numpy,numba,cupy} {tiny,mnist,wide,square} [plain|bn|residual|bn+residual|weighted]

Prints the median µs per step of 7 timings of a loop of steps, after 20 warm-up steps
(:class:`backprop.bench.Prepared`: SGD, float32, the speed section's networks and batch
sizes; ``square`` has hidden layers of equal widths, so residual connections apply). The
optional variant adds batch normalization and/or residual connections to every hidden layer,
or sample weights to the step (default plain). Run it alternately on the two commits being
compared, several times each.
"""

from __future__ import annotations

import statistics
import sys
import time

from backprop import bench

NETWORKS = {"tiny": ([64, 32, 10], 32, 2000), "mnist": ([784, 256, 128, 10], 128, 200),
            "wide": ([1024, 1024, 1024, 1024, 10], 256, 20),
            "square": ([256, 256, 256, 256, 10], 128, 200)}   # sizes, batch, steps a timing
VARIANTS = {"plain": {}, "bn": {"batch_norm": True}, "residual": {"residual": True},
            "bn+residual": {"batch_norm": True, "residual": True}, "weighted": {"weighted": True}}


def main(backend: str, network: str, variant: str = "plain") -> float:
    sizes, batch, steps = NETWORKS[network]
    prepared = bench.Prepared(sizes, batch, backend, **VARIANTS[variant])
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
    print(f"{main(*sys.argv[1:4]):.1f}")
