"""The core speed benchmark: one training step and one forward pass of the speed networks
(64-32-10 B=32, 784-256-128-10 B=128, 1024-1024-1024-1024-10 B=256), float32, on every
available backend. ``extra_info`` holds the FLOP of one call (see :func:`backprop.bench.flops`)
and, when timed, samples/s and GFLOP/s.

After the timed calls each test checks that the call did the work it is timed for (so a
benchmark cannot time a call that skips it): the step moved every parameter, the forward
pass wrote the outputs of the seeds' forward propagation, the backward pass wrote the
gradients of ``Network.backward``, the product wrote ``a @ wᵀ``.
"""

import numpy as np

from backprop import bench, reference, to_numpy


def _record(benchmark, sizes, batch, op):
    work = bench.flops(sizes, batch)[op]
    assert work > 0
    benchmark.extra_info.update(sizes=sizes, batch=batch, flop=work)
    stats = getattr(benchmark, "stats", None)
    if stats:                               # absent in the disabled (quick) mode
        median = stats.stats.median
        benchmark.extra_info.update(samples_per_s=batch / median, gflops=work / median / 1e9)


def _close(actual, expected, rtol=1e-4):
    a, e = np.asarray(to_numpy(actual), np.float64), np.asarray(to_numpy(expected), np.float64)
    assert np.linalg.norm(a - e) <= rtol * np.linalg.norm(e)


def test_train_step(benchmark, backend, network):
    name, sizes, batch = network
    p = bench.Prepared(sizes, batch, backend)
    before = p.net.get_parameters()
    benchmark(lambda: (p.train_step(), p.sync()))
    _record(benchmark, sizes, batch, "train")
    for (W, b), (W0, b0) in zip(p.net.get_parameters(), before):
        assert np.isfinite(W).all() and np.isfinite(b).all()
        assert not np.array_equal(W, W0) and not np.array_equal(b, b0)
    assert float(to_numpy(p.ws.total)[0]) > 0


def test_forward(benchmark, backend, network):
    name, sizes, batch = network
    p = bench.Prepared(sizes, batch, backend)
    benchmark(lambda: (p.forward(), p.sync()))
    _record(benchmark, sizes, batch, "forward")
    W, b = (list(params) for params in zip(*p.net.get_parameters()))
    X = to_numpy(p.X).astype(np.float64)
    rows = [0, batch - 1]
    expected = [reference.forward_propagation(X[r], W, b, p.net.activations)[0][-1] for r in rows]
    _close(to_numpy(p.ws_infer.A[-1])[rows], expected)


def test_backward(benchmark, backend, network):
    name, sizes, batch = network
    p = bench.Prepared(sizes, batch, backend)
    benchmark(lambda: (p.backward(), p.sync()))
    _record(benchmark, sizes, batch, "backward")
    for (dW, db), (eW, eb) in zip(p.net.gradients(), p.net.backward(p.X, p.Y)):
        _close(dW, eW)
        _close(db, eb)


def test_matmul_peak(benchmark, config):
    """NumPy float32 ``(B, n) @ (n, n)`` at the wide network's shape: the peak to compare with."""
    B, n_in, n_out = config["peak_shape"]
    a = np.ones((B, n_in), np.float32)
    w = np.ones((n_out, n_in), np.float32)
    out = np.empty((B, n_out), np.float32)
    benchmark(np.matmul, a, w.T, out=out)
    benchmark.extra_info.update(shape=[B, n_in, n_out], flop=2 * B * n_in * n_out)
    assert (out == n_in).all()
