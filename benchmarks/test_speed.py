"""The core speed benchmark: one training step and one forward pass of the speed networks
(64-32-10 B=32, 784-256-128-10 B=128, 1024-1024-1024-1024-10 B=256), float32, on every
available backend. ``extra_info`` holds the FLOP of one call (see :func:`backprop.bench.flops`)
and, when timed, samples/s and GFLOP/s."""

from backprop import bench


def _record(benchmark, sizes, batch, op):
    work = bench.flops(sizes, batch)[op]
    benchmark.extra_info.update(sizes=sizes, batch=batch, flop=work)
    stats = getattr(benchmark, "stats", None)
    if stats:                               # absent in the disabled (quick) mode
        median = stats.stats.median
        benchmark.extra_info.update(samples_per_s=batch / median, gflops=work / median / 1e9)


def test_train_step(benchmark, backend, network):
    name, sizes, batch = network
    p = bench.Prepared(sizes, batch, backend)
    benchmark(lambda: (p.train_step(), p.sync()))
    _record(benchmark, sizes, batch, "train")


def test_forward(benchmark, backend, network):
    name, sizes, batch = network
    p = bench.Prepared(sizes, batch, backend)
    benchmark(lambda: (p.forward(), p.sync()))
    _record(benchmark, sizes, batch, "forward")


def test_backward(benchmark, backend, network):
    name, sizes, batch = network
    p = bench.Prepared(sizes, batch, backend)
    benchmark(lambda: (p.backward(), p.sync()))
    _record(benchmark, sizes, batch, "backward")


def test_matmul_peak(benchmark, config):
    """NumPy float32 ``(B, n) @ (n, n)`` at the wide network's shape: the peak to compare with."""
    import numpy as np
    B, n_in, n_out = config["peak_shape"]
    a = np.ones((B, n_in), np.float32)
    w = np.ones((n_out, n_in), np.float32)
    out = np.empty((B, n_out), np.float32)
    benchmark(np.matmul, a, w.T, out=out)
    benchmark.extra_info.update(shape=[B, n_in, n_out], flop=2 * B * n_in * n_out)
