"""The cost of sample weights, measured in one process so that the machine's load hits both
alike: a training step (or a whole epoch) without and with ``sample_weight``, alternating.

    python benchmarks/weighted_step.py {numpy,numba,cupy} {tiny,mnist,epoch}

``tiny``/``mnist``: µs per :meth:`backprop.bench.Prepared.train_step` (the networks of
benchmarks/step_time.py, SGD, float32); ``epoch``: µs per step of ``training.run_epoch`` over
4096 samples of the tiny network in shuffled batches of 32 (numba: its fused epoch). Prints the
minimum of 25 timings of each and their ratio.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from backprop import bench, optimizers
from backprop.training import run_epoch

STEPS = {"tiny": ([64, 32, 10], 32, 300), "mnist": ([784, 256, 128, 10], 128, 30)}


def runner(backend: str, what: str):
    """(a function of the weights or None that runs one timing, steps per timing)."""
    if what == "epoch":
        sizes, n, batch = [64, 32, 10], 4096, 32
        net = bench.make_network(sizes, backend)
        be = net.backend
        X, labels = bench.make_data(sizes, n)
        X, Y = be.asarray(X), be.asarray(bench.one_hot(labels, sizes[-1]))
        opt = optimizers.get("sgd")
        opt.reset(be, net.parameters())
        order = be.asarray(np.random.default_rng(0).permutation(n))
        w = be.asarray(np.random.default_rng(1).uniform(0.5, 2.0, n), net.dtype)
        return (lambda weighted: run_epoch(net, X, Y, order, batch, opt, 1e-3,
                                           sample_weight=w if weighted else None),
                n // batch, be.synchronize)
    sizes, batch, reps = STEPS[what]
    prepared = bench.Prepared(sizes, batch, backend, weighted=True)
    w = prepared.weight

    def run(weighted: bool) -> None:
        prepared.weight = w if weighted else None
        for _ in range(reps):
            prepared.train_step()
    return run, reps, prepared.sync


def main(backend: str, what: str) -> dict[str, float]:
    run, steps, sync = runner(backend, what)
    best = {False: float("inf"), True: float("inf")}
    for i in range(2 + 2 * 25):
        weighted = bool(i % 2)
        start = time.perf_counter()
        run(weighted)
        sync()
        if i >= 2:                                   # the first two are warm-up
            best[weighted] = min(best[weighted], (time.perf_counter() - start) / steps * 1e6)
    return {"none": best[False], "weighted": best[True]}


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2])
    print(f"{sys.argv[1]} {sys.argv[2]}: no weights {result['none']:.1f} µs, weighted "
          f"{result['weighted']:.1f} µs, ratio {result['weighted'] / result['none']:.3f}")
