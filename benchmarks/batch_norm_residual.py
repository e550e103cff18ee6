"""The cost of batch normalization and residual connections per training step, beside the
plain step, on the CPU backends.

    python benchmarks/batch_norm_residual.py [numpy numba ...]

For each network (hidden layers of equal widths, so every hidden layer takes a skip) and
variant (plain, bn, residual, bn+residual on every hidden layer): µs per step of
``Network.train_step`` (:class:`backprop.bench.Prepared`, SGD, float32; the median of 7
timings) and of a whole epoch through ``training.run_epoch`` divided by its steps, which on
numba is the fused compiled epoch for the plain network and the step-by-step fallback for
the others. Prints a markdown table.
"""

from __future__ import annotations

import statistics
import sys
import time

from backprop import bench

#: (name, sizes, batch, steps per timing); 64-wide fits numba's fused epoch (FUSED_MAX_WIDTH)
NETWORKS = [("64³-10", [64, 64, 64, 64, 10], 32, 400),
            ("256³-10", [256, 256, 256, 256, 10], 128, 60)]
VARIANTS = {"plain": {}, "bn": {"batch_norm": True}, "residual": {"residual": True},
            "bn+residual": {"batch_norm": True, "residual": True}}
EPOCH_BATCHES = 32


def step_us(sizes, batch, steps, backend, **kw) -> float:
    prepared = bench.Prepared(sizes, batch, backend, **kw)
    for _ in range(10):
        prepared.train_step()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(steps):
            prepared.train_step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times) * 1e6


def main(backends) -> None:
    print("| network, batch | backend | variant | train_step µs | × plain | epoch µs/step | × plain |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, sizes, batch, steps in NETWORKS:
        for backend in backends:
            base_step = base_epoch = None
            for variant, kw in VARIANTS.items():
                s = step_us(sizes, batch, steps, backend, **kw)
                e = bench.time_epoch(sizes, batch * EPOCH_BATCHES, batch, backend, **kw) \
                    / EPOCH_BATCHES * 1e6
                base_step, base_epoch = base_step or s, base_epoch or e
                print(f"| {name}, b{batch} | {backend} | {variant} | {s:.1f} | "
                      f"{s / base_step:.2f} | {e:.1f} | {e / base_epoch:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["numpy", "numba"])
