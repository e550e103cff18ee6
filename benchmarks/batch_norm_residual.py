"""The cost of batch normalization and residual connections per training step, beside the
plain step, on the CPU backends.

    OPENBLAS_NUM_THREADS=1 python benchmarks/batch_norm_residual.py [numpy numba ...]

For each network (hidden layers of equal widths, so every hidden layer takes a skip) and
variant (plain, bn, residual, bn+residual on every hidden layer): µs per step of
``Network.train_step`` (:class:`backprop.bench.Prepared`, SGD, float32) and of a whole epoch
of 32 batches through ``training.run_epoch`` divided by its steps, which on numba is the
fused compiled epoch for the plain network and the step-by-step fallback for the others.
Each figure is the least CPU time (``time.process_time``) of 9 timings: on a shared machine
the CPU time of one process moves far less than the wall clock, and with one BLAS thread
it is the step's cost. Prints a markdown table.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from backprop import bench, optimizers
from backprop.training import run_epoch

#: (name, sizes, batch, steps per timing); 64-wide fits numba's fused epoch (FUSED_MAX_WIDTH)
NETWORKS = [("64³-10", [64, 64, 64, 64, 10], 32, 200),
            ("256³-10", [256, 256, 256, 256, 10], 128, 20)]
VARIANTS = {"plain": {}, "bn": {"batch_norm": True}, "residual": {"residual": True},
            "bn+residual": {"batch_norm": True, "residual": True}}
EPOCH_BATCHES = 32
REPEAT = 9


def least(fn, count: int) -> float:
    """The least CPU seconds per call of ``fn`` over REPEAT timings of ``count`` calls."""
    fn()
    best = float("inf")
    for _ in range(REPEAT):
        start = time.process_time()
        for _ in range(count):
            fn()
        best = min(best, (time.process_time() - start) / count)
    return best


def step_us(sizes, batch, steps, backend, **kw) -> float:
    prepared = bench.Prepared(sizes, batch, backend, **kw)
    return least(prepared.train_step, steps) * 1e6


def epoch_us(sizes, batch, steps, backend, **kw) -> float:
    net = bench.make_network(sizes, backend, **kw)
    be = net.backend
    n = batch * EPOCH_BATCHES
    X, labels = bench.make_data(sizes, n)
    X, Y = be.asarray(X), be.asarray(bench.one_hot(labels, sizes[-1]))
    opt = optimizers.get("sgd")
    opt.reset(be, net.parameters())
    order = be.asarray(np.random.default_rng(0).permutation(n))
    count = max(1, steps // EPOCH_BATCHES)
    return least(lambda: run_epoch(net, X, Y, order, batch, opt, 1e-3), count) \
        / EPOCH_BATCHES * 1e6


def main(backends) -> None:
    print("| network, batch | backend | variant | train_step µs | × plain | epoch µs/step | × plain |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, sizes, batch, steps in NETWORKS:
        for backend in backends:
            base_step = base_epoch = None
            for variant, kw in VARIANTS.items():
                s = step_us(sizes, batch, steps, backend, **kw)
                e = epoch_us(sizes, batch, steps, backend, **kw)
                base_step, base_epoch = base_step or s, base_epoch or e
                print(f"| {name}, b{batch} | {backend} | {variant} | {s:.1f} | "
                      f"{s / base_step:.2f} | {e:.1f} | {e / base_epoch:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["numpy", "numba"])
