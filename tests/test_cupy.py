"""Tests of the CuPy backend: every kernel equals the NumPy backend, CUDA graphs change
nothing, ``to("cpu")``/``to("cuda")`` round trips, DLPack input, TF32 off by default.

Marked ``gpu``. They run on a CUDA device when CuPy and one are present, and otherwise on the
CPU emulator (tests/emulator/: a stand-in for CuPy that refuses what CuPy refuses, running
kernels/backprop.cu compiled with g++); the few that need real CuPy or PyTorch's CUDA skip
there with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import support
from support import REQUIRE_GPU, fake_cupy, use_emulator

from backprop import Network
from backprop.backends import get_backend, is_installed
from backprop.backends.numpy import NumPyBackend
from backprop.losses import LOSSES
from backprop.optimizers import (ADAM_KIND, MOMENTUM_KIND, RMSPROP_KIND, SGD_KIND,
                                 UpdateRule)

ROOT = Path(__file__).resolve().parents[1]
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def _why_no_gpu() -> str | None:
    if not is_installed("cupy"):
        return "CuPy is not installed"
    try:
        get_backend("cuda", "cupy")
    except (ImportError, RuntimeError) as e:
        return f"no usable CUDA device: {e}"
    return None


NO_GPU = _why_no_gpu()
EMULATED = NO_GPU is not None
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(EMULATED and not REQUIRE_GPU and fake_cupy().compiler() is None,
                                 reason=f"{NO_GPU}, and the CUDA emulator needs g++")]
needs_gpu = pytest.mark.skipif(EMULATED and not REQUIRE_GPU,
                               reason=f"needs real CuPy and a GPU: {NO_GPU}")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def gpu(monkeypatch):
    """The cupy backend: on the GPU, or on the emulator when there is none (a failure under
    BACKPROP_REQUIRE_GPU=1, as ci/gpu.sh runs it)."""
    if EMULATED:
        if REQUIRE_GPU:
            pytest.fail(f"BACKPROP_REQUIRE_GPU is set: {NO_GPU}")
        use_emulator(monkeypatch)
    return get_backend("cuda", "cupy")


def close(actual, expected, dtype, what=""):
    a = np.asarray(get_backend("cuda", "cupy").to_numpy(actual), np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, what
    err, scale = np.linalg.norm(a - e), max(np.linalg.norm(e), 1e-300)
    assert err <= RTOL[np.dtype(dtype)] * scale, f"{what}: relative error {err / scale:.3g}"


def arrays(rng, dtype, *shapes):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def cublas_calls(monkeypatch, backend) -> list:
    """A list that grows by one entry per cuBLAS product (``xp.matmul``) the backend makes."""
    calls = []
    matmul = backend.xp.matmul

    def counted(a, b, out=None):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return matmul(a, b, out=out)
    monkeypatch.setattr(backend.xp, "matmul", counted)
    return calls


def on_cublas(backend, *widths) -> bool:
    """True when a product over these layer widths goes to cuBLAS, not our kernel."""
    return max(widths) > backend.small_width


# ---------------------------------------------------------------- each kernel vs NumPy

WIDTHS = [(8, 5), (300, 270), (1100, 70)]     # own matmul / own, split K / cuBLAS


#: every (trans_a, trans_b) layout, and shapes with ragged tiles and 1 to 13 K splits
LAYOUTS = [(False, False), (False, True), (True, False), (True, True)]
MATMUL_SHAPES = [(1, 1, 1), (37, 5, 8), (65, 130, 17), (70, 64, 300), (3, 2, 1000)]


@pytest.mark.parametrize("trans_a,trans_b", LAYOUTS)
@pytest.mark.parametrize("M,N,K", MATMUL_SHAPES)
def test_matmul(dtype, gpu, M, N, K, trans_a, trans_b):
    """Our matmul kernel, every layout, ragged tiles and split K, against a float64 product;
    every output element is written (the output starts as NaN)."""
    from backprop.backends.cupy import matmul_splits, own_matmul
    assert own_matmul(M, N, K, trans_a, gpu.small_width)
    rng = np.random.default_rng(12)
    a = rng.standard_normal((K, M) if trans_a else (M, K))
    b = rng.standard_normal((N, K) if trans_b else (K, N))
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b)
    out = gpu.asarray(np.full((M, N), np.nan, dtype))
    gpu._matmul(gpu.asarray(a, dtype), trans_a, gpu.asarray(b, dtype), trans_b, out)
    assert np.isfinite(gpu.to_numpy(out)).all(), "an output element was not written"
    close(out, expected, dtype, f"splits={matmul_splits(M, N, K)[0]}")


@pytest.mark.parametrize("n_in,n_out", WIDTHS)
@pytest.mark.parametrize("activation", support.ACTIVATIONS, ids=str)
def test_forward_and_delta(dtype, gpu, activation, n_in, n_out, monkeypatch):
    """Every activation (Leaky ReLU and ELU also at a non-default α): forward and δ."""
    calls = cublas_calls(monkeypatch, gpu)
    rng = np.random.default_rng(0)
    cpu = NumPyBackend()
    B = 37
    A_prev, W, b = arrays(rng, dtype, (B, n_in), (n_out, n_in), (n_out,))
    Z, A = np.empty((B, n_out), dtype), np.empty((B, n_out), dtype)
    cpu.forward(A_prev, W, b, activation, Z, A)
    Zg, Ag = gpu.empty((B, n_out), dtype), gpu.empty((B, n_out), dtype)
    gpu.forward(gpu.asarray(A_prev), gpu.asarray(W), gpu.asarray(b), activation, Zg, Ag)
    assert len(calls) == on_cublas(gpu, n_in, n_out), "the forward product took the wrong path"
    close(Zg, Z, dtype, "Z")
    close(Ag, A, dtype, "A")
    # the hidden-layer error with this layer's activation: δ = (δ_next W_next) ⊙ σ'(A)
    n_next = 6
    delta_next, W_next = arrays(rng, dtype, (B, n_next), (n_next, n_out))
    delta = np.empty((B, n_out), dtype)
    cpu.delta(delta_next, W_next, A, activation, delta)
    dg = gpu.empty((B, n_out), dtype)
    gpu.delta(gpu.asarray(delta_next), gpu.asarray(W_next), gpu.asarray(A), activation, dg)
    close(dg, delta, dtype, "delta")


@pytest.mark.parametrize("n_in,n", WIDTHS)
def test_weight_grad(dtype, gpu, n_in, n, monkeypatch):
    calls = cublas_calls(monkeypatch, gpu)
    rng = np.random.default_rng(1)
    delta, A_prev = arrays(rng, dtype, (129, n), (129, n_in))
    dW, db = np.empty((n, n_in), dtype), np.empty(n, dtype)
    NumPyBackend().weight_grad(delta, A_prev, dW, db)
    dWg, dbg = gpu.empty((n, n_in), dtype), gpu.empty((n,), dtype)
    gpu.weight_grad(gpu.asarray(delta), gpu.asarray(A_prev), dWg, dbg)
    assert len(calls) == on_cublas(gpu, n_in, n), "the weight-gradient product took the wrong path"
    close(dWg, dW, dtype, "dW")
    close(dbg, db, dtype, "db")


@pytest.mark.parametrize("loss,activation", support.PAIRINGS, ids=str)
def test_output_delta_and_loss(dtype, gpu, loss, activation):
    """Every (loss, output activation) pairing, Leaky ReLU and ELU also at a non-default α."""
    rng = np.random.default_rng(2)
    cpu, lossf = NumPyBackend(), LOSSES[loss]
    B, n = 300, 7
    Z = rng.standard_normal((B, n)).astype(dtype)
    A = np.empty_like(Z)
    cpu._activate(Z.copy(), activation, A)
    if loss == "cross_entropy":
        Y = np.eye(n, dtype=dtype)[rng.integers(0, n, B)]
    else:
        Y = rng.uniform(0, 1, (B, n)).astype(dtype)
    delta = np.empty_like(Z)
    cpu.output_delta(A, Y, activation, lossf, delta)
    dg = gpu.empty((B, n), dtype)
    Ag, Yg, Zg = gpu.asarray(A), gpu.asarray(Y), gpu.asarray(Z)
    gpu.output_delta(Ag, Yg, activation, lossf, dg)
    close(dg, delta, dtype, "output delta")
    total = np.full(1, 0.5)                       # the loss accumulates in float64
    cpu.loss(A, Z, Y, activation, lossf, total)
    tg = gpu.asarray(np.full(1, 0.5))
    gpu.loss(Ag, Zg, Yg, activation, lossf, tg)
    close(tg, total, dtype, "loss total")


RULES = {
    "sgd": dict(kind=SGD_KIND),
    "sgd_l1_l2": dict(kind=SGD_KIND, l1=1e-3, l2=1e-2),
    "momentum": dict(kind=MOMENTUM_KIND, momentum=0.9),
    "nesterov": dict(kind=MOMENTUM_KIND, momentum=0.9, nesterov=True),
    "rmsprop": dict(kind=RMSPROP_KIND, beta2=0.9),
    "adam": dict(kind=ADAM_KIND, bias_correction1=0.19, bias_correction2=0.002),
    "adamw": dict(kind=ADAM_KIND, bias_correction1=0.1, bias_correction2=0.001,
                  weight_decay=0.01),
}


@pytest.mark.parametrize("scale", ["none", "float", "device"])
@pytest.mark.parametrize("name", sorted(RULES))
def test_update(dtype, gpu, name, scale):
    rng = np.random.default_rng(3)
    cpu = NumPyBackend()
    kw = dict(RULES[name], learning_rate=0.05)
    n_state = {SGD_KIND: 0, MOMENTUM_KIND: 1, RMSPROP_KIND: 1, ADAM_KIND: 2}[kw["kind"]]
    p, g = arrays(rng, dtype, (33, 17), (33, 17))
    state = [np.abs(s) for s in arrays(rng, dtype, *[(33, 17)] * n_state)]
    pg, gg, sg = gpu.asarray(p), gpu.asarray(g), tuple(gpu.asarray(s) for s in state)
    host_scale = {"none": 1.0, "float": 0.7, "device": np.full(1, 0.3, dtype)}[scale]
    dev_scale = gpu.asarray(host_scale) if scale == "device" else host_scale
    for _ in range(3):
        cpu.update(p, g, tuple(state), UpdateRule(grad_scale=host_scale, **kw))
        gpu.update(pg, gg, sg, UpdateRule(grad_scale=dev_scale, **kw))
    close(pg, p, dtype, "param")
    for s, sd in zip(state, sg):
        close(sd, s, dtype, "state")


def test_grad_scale_multiply_take_rows(dtype, gpu):
    rng = np.random.default_rng(4)
    cpu = NumPyBackend()
    grads = arrays(rng, dtype, (40, 30), (40,), (700, 300), (5,))   # 1, 1, 128, 1 blocks
    for max_norm in (1e-3, 1e6):
        out = np.zeros(1, dtype)
        cpu.grad_scale(grads, max_norm, out)
        og = gpu.zeros((1,), dtype)
        gpu.grad_scale([gpu.asarray(g) for g in grads], max_norm, og)
        close(og, out, dtype, "clip factor")
    x, y = arrays(rng, dtype, (9, 4), (9, 4))
    xg = gpu.asarray(x)
    gpu.multiply(xg, gpu.asarray(y))
    close(xg, x * y, dtype, "multiply")
    X = rng.standard_normal((50, 6)).astype(dtype)
    index = rng.permutation(50)[:20]
    out = gpu.empty((20, 6), dtype)
    gpu.take_rows(gpu.asarray(X), gpu.asarray(index), out)
    np.testing.assert_array_equal(gpu.to_numpy(out), X[index])


GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output function on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_uniforms(seed: int, draw: int, n: int, dtype) -> np.ndarray:
    """The uniforms the dropout kernel draws (kernels/backprop.cu), written independently."""
    key = np.random.default_rng(seed).integers(0, 2 ** 64, dtype=np.uint64)
    stream = _mix64(np.array([key], np.uint64) + np.uint64(draw) * GAMMA)
    h = _mix64(stream + np.arange(1, n + 1, dtype=np.uint64) * GAMMA)
    if np.dtype(dtype) == np.float32:
        return ((h >> np.uint64(40)).astype(np.float64) * 2.0 ** -24).astype(dtype)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def test_dropout(dtype, gpu):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((200, 50)).astype(dtype)
    mask, out = gpu.empty(A.shape, dtype), gpu.empty(A.shape, dtype)
    keep = dtype.type(1.0 / 0.75)
    gpu.seed(0)
    masks = []
    for draw in range(2):
        gpu.dropout(gpu.asarray(A), 0.25, mask, out)
        m = gpu.to_numpy(mask)
        u = dropout_uniforms(0, draw, A.size, dtype).reshape(A.shape)
        np.testing.assert_array_equal(m, np.where(u >= dtype.type(0.25), keep, dtype.type(0)))
        assert 0.2 < (m == 0).mean() < 0.3
        np.testing.assert_array_equal(gpu.to_numpy(out), A * m)
        masks.append(m)
    assert (masks[0] != masks[1]).mean() > 0.2                 # each draw is a fresh mask
    gpu.seed(0)
    gpu.dropout(gpu.asarray(A), 0.25, mask, out)
    np.testing.assert_array_equal(gpu.to_numpy(mask), masks[0])   # seeded: reproducible


# ---------------------------------------------------------------- whole networks

def _data(rng, n, n_in, n_out):
    X = rng.standard_normal((n, n_in))
    Y = np.eye(n_out)[rng.integers(0, n_out, n)]
    return X, Y


#: (layer sizes, whether a product runs on cuBLAS): our kernel only (graphs), and one layer
#: wider than SMALL_WIDTH (its products on cuBLAS, no graphs)
FIT_SIZES = [([6, 16, 4], False), ([784, 64, 10], False), ([1100, 24, 10], True)]


@pytest.mark.parametrize("sizes,cublas", FIT_SIZES)
@pytest.mark.parametrize("optimizer,clip", [("sgd", None), ("adam", 1.0), ("nesterov", None)])
def test_fit_equals_numpy(dtype, gpu, sizes, cublas, optimizer, clip, monkeypatch):
    """Whole fits equal the NumPy backend's: losses, and the parameter changes."""
    calls = cublas_calls(monkeypatch, gpu)
    rng = np.random.default_rng(6)
    X, Y = _data(rng, 203, sizes[0], sizes[-1])
    nets = [Network(sizes, ["tanh", "softmax"], "cross_entropy", device=d, backend=b,
                    dtype=dtype, seed=1) for d, b in (("cpu", "numpy"), ("cuda", "cupy"))]
    before = nets[0].get_parameters()
    hist = [net.fit(X, Y, epochs=3, batch_size=32, learning_rate=0.05, optimizer=optimizer,
                    clip_norm=clip, l2=1e-3, seed=2) for net in nets]
    assert bool(calls) == cublas, "the products did not take the expected path"
    plan = nets[1].backend._plans.get(nets[1])
    assert (plan is not None and plan.graph is not None) == (not cublas), "graphs: wrong path"
    tol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(hist[1]["loss"], hist[0]["loss"], rtol=tol)
    for l, ((W0, b0), (W1, b1), (Wi, bi)) in enumerate(zip(nets[0].get_parameters(),
                                                             nets[1].get_parameters(), before)):
        steps = 3 * -(-len(X) // 32)
        support.assert_change_close(W1, W0, Wi, 100 * tol, steps, f"W{l + 1}")
        support.assert_change_close(b1, b0, bi, 100 * tol, steps, f"b{l + 1}")


GRAPH_CASES = [("sgd", None, 0.0, 0.0), ("sgd", 0.5, 1e-4, 0.0), ("adamw", None, 0.0, 0.0),
               ("rmsprop", 2.0, 0.0, 0.0), ("momentum", None, 1e-4, 0.0),
               ("sgd", None, 0.0, 0.3), ("adam", 1.0, 0.0, 0.2)]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("optimizer,clip,l1,dropout", GRAPH_CASES)
def test_graphs_change_nothing(dtype, gpu, optimizer, clip, l1, dropout, shuffle):
    """Same kernels with and without CUDA graphs: bitwise identical parameters and losses
    (with dropout too: replays draw the same fresh masks as eager steps)."""
    rng = np.random.default_rng(7)
    X, Y = _data(rng, 250, 12, 3)              # 7 full batches of 32 and a partial one
    results = []
    for graphs in (False, True):
        net = Network([12, 32, 16, 3], ["relu", "elu", "softmax"], "cross_entropy",
                      device="cuda", dtype=dtype, seed=3, dropout=dropout)
        net.backend.graphs = graphs                # the network's own backend instance
        hist = net.fit(X, Y, epochs=3, batch_size=32, learning_rate=0.03,
                       optimizer=optimizer, clip_norm=clip, l1=l1, shuffle=shuffle,
                       seed=4, lr_schedule=lambda epoch, lr: lr / (1 + epoch))
        plan = net.backend._plans.get(net)
        assert (plan is not None and plan.graph is not None) == graphs, (
            "the graph path was not taken")
        results.append((hist["loss"], net.get_parameters(), net.optimizer_.t))
    (loss0, params0, t0), (loss1, params1, t1) = results
    assert t0 == t1
    assert loss0 == loss1
    for (W0, b0), (W1, b1) in zip(params0, params1):
        np.testing.assert_array_equal(W1, W0)
        np.testing.assert_array_equal(b1, b0)


def test_no_graphs_with_wide_layers(gpu, monkeypatch):
    """A layer past ``small_width`` puts a product on cuBLAS, which CuPy cannot capture: the
    step runs eagerly, on cuBLAS, and trains as the NumPy backend does."""
    calls = cublas_calls(monkeypatch, gpu)
    rng = np.random.default_rng(8)
    wide = gpu.small_width + 1
    X, Y = _data(rng, 128, wide, 2)
    nets = [Network([wide, 8, 2], ["relu", "softmax"], "cross_entropy", device=d, backend=b,
                    dtype="float64", seed=0) for d, b in (("cpu", "numpy"), ("cuda", "cupy"))]
    for net in nets:
        net.fit(X, Y, epochs=1, batch_size=16, learning_rate=0.1, seed=0)
    assert nets[1] not in nets[1].backend._plans
    assert len(calls) >= 8, "the first layer's products did not run on cuBLAS"
    for (W0, b0), (W1, b1) in zip(nets[0].get_parameters(), nets[1].get_parameters()):
        np.testing.assert_allclose(W1, W0, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b1, b0, rtol=1e-9, atol=1e-12)


def test_integer_labels_stay_on_the_device(gpu):
    """Class labels of any integer or integral-float type, a list too, give what one-hot rows
    give on the NumPy backend, in fit, loss, evaluate and backward (labels used to reach CuPy
    ufuncs as a host array, which CuPy refuses)."""
    rng = np.random.default_rng(13)
    X = rng.standard_normal((40, 5))
    labels = rng.integers(0, 3, 40)
    ref = Network([5, 6, 3], ["tanh", "softmax"], "cross_entropy", backend="numpy",
                  dtype="float64", seed=0)
    one_hot = np.eye(3)[labels]
    for Y in (labels, labels.astype(np.int32), labels.astype(np.float64), labels.tolist(),
              gpu.asarray(labels)):
        net = Network([5, 6, 3], ["tanh", "softmax"], "cross_entropy", device="cuda",
                      dtype="float64", seed=0)
        assert net.loss(X, Y) == pytest.approx(ref.loss(X, one_hot), rel=1e-12)
        assert net.evaluate(X, Y) == pytest.approx(ref.evaluate(X, one_hot), rel=1e-12)
        for (dW, db), (rW, rb) in zip(net.backward(X, Y), ref.backward(X, one_hot)):
            close(dW, gpu.to_numpy(rW) if gpu.is_native(rW) else rW, "float64", "dW")
            close(db, rb, "float64", "db")
        net.fit(X, Y, epochs=1, batch_size=8, learning_rate=0.1, seed=0)
    ref.fit(X, one_hot, epochs=1, batch_size=8, learning_rate=0.1, seed=0)
    for (W0, b0), (W1, b1) in zip(ref.get_parameters(), net.get_parameters()):
        np.testing.assert_allclose(W1, W0, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b1, b0, rtol=1e-9, atol=1e-12)


def test_failed_capture_disables_graphs_for_that_plan_only(gpu, monkeypatch):
    """A capture that CUDA refuses warns once, trains that configuration eagerly (the same
    results), is not retried in the later epochs, and leaves graphs on for other networks; a
    compile error is not mistaken for a refused capture."""
    rng = np.random.default_rng(14)
    X, Y = _data(rng, 96, 6, 3)

    def network():
        return Network([6, 8, 3], ["tanh", "softmax"], "cross_entropy", device="cuda",
                       dtype="float64", seed=0)
    kw = dict(epochs=2, batch_size=16, learning_rate=0.1, seed=1)
    from backprop.optimizers import SGD
    same = SGD()                                # one configuration: the same optimizer
    refused = []

    def refuse(*args, **kwargs):
        refused.append(1)
        raise RuntimeError("cudaErrorStreamCaptureUnsupported (simulated)")
    failing, healthy = network(), network()     # each with a backend instance of its own
    monkeypatch.setattr(failing.backend, "_capture_step", refuse)
    with pytest.warns(RuntimeWarning, match="capture failed") as warned:
        failing.fit(X, Y, optimizer=same, **kw)               # 2 epochs: 1 capture tried
    assert refused == [1] and len(warned) == 1
    assert failing.backend._plans[failing].graph is None
    healthy.fit(X, Y, optimizer=SGD(), **kw)
    assert healthy.backend.graphs and healthy.backend._plans[healthy].graph is not None
    for (W0, b0), (W1, b1) in zip(healthy.get_parameters(), failing.get_parameters()):
        np.testing.assert_array_equal(W1, W0)
        np.testing.assert_array_equal(b1, b0)

    def broken_compiler(name, dtype):
        raise RuntimeError("NVRTC_ERROR_COMPILATION (simulated)")
    broken = network()
    monkeypatch.setattr(broken.backend, "_kernel", broken_compiler)
    with pytest.raises(RuntimeError, match="NVRTC"):
        broken.fit(X, Y, **kw)


def test_training_step_does_not_synchronize(gpu):
    """No host synchronisation inside steps (the loss is read once per epoch)."""
    cupyx = pytest.importorskip("cupyx")
    from backprop.training import run_epoch
    from backprop.optimizers import Adam
    rng = np.random.default_rng(9)
    X, Y = _data(rng, 256, 300, 4)
    net = Network([300, 64, 4], ["relu", "softmax"], "cross_entropy", device="cuda")
    Xd, Yd = net._prepare(X, Y)
    opt = Adam()
    opt.reset(net.backend, net.parameters())
    net.fit(Xd, Yd, epochs=1, batch_size=64, learning_rate=1e-3, optimizer=opt)   # warm up
    ws = net.workspace(64)
    with cupyx.allow_synchronize(False):
        for start in range(0, 256, 64):
            net.train_step(ws, Xd[start:start + 64], Yd[start:start + 64], opt, 1e-3,
                           clip_norm=1.0)
    assert np.isfinite(run_epoch(net, Xd, Yd, None, 64, opt, 1e-3))


def test_to_cpu_and_back_keeps_optimizer_state(gpu):
    """Moving mid-training (Adam state included) changes nothing but the device."""
    rng = np.random.default_rng(10)
    X, Y = _data(rng, 100, 5, 3)

    def network():
        return Network([5, 8, 3], ["tanh", "softmax"], "cross_entropy", device="cuda",
                       dtype="float64", seed=0)
    moved, stayed = network(), network()
    for net in (moved, stayed):
        net.fit(X, Y, epochs=2, batch_size=10, learning_rate=0.01, optimizer="adam", seed=0)
    state = [[gpu.to_numpy(s) for s in st] for st in moved.optimizer_.state]
    moved.to("cpu", backend="numpy")
    assert moved.device == "cpu" and all(isinstance(W, np.ndarray) for W in moved.W)
    for st, saved in zip(moved.optimizer_.state, state):
        for s, h in zip(st, saved):
            assert isinstance(s, np.ndarray)
            np.testing.assert_array_equal(s, h)
    moved.fit(X, Y, epochs=1, batch_size=10, learning_rate=0.01, optimizer=moved.optimizer_,
              seed=1)                                       # a CPU epoch with the moved state
    moved.to("cuda")
    assert moved.backend.name == "cupy" and moved.device == gpu.device
    assert all(gpu.is_native(W) for W in moved.W)
    assert all(gpu.is_native(s) for st in moved.optimizer_.state for s in st)
    moved.fit(X, Y, epochs=1, batch_size=10, learning_rate=0.01, optimizer=moved.optimizer_,
              seed=2)
    for seed in (1, 2):
        stayed.fit(X, Y, epochs=1, batch_size=10, learning_rate=0.01,
                   optimizer=stayed.optimizer_, seed=seed)
    assert moved.optimizer_.t == stayed.optimizer_.t
    for (W0, b0), (W1, b1) in zip(stayed.get_parameters(), moved.get_parameters()):
        np.testing.assert_allclose(W1, W0, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b1, b0, rtol=1e-9, atol=1e-12)


def test_device_arrays_are_used_without_copy(gpu):
    cp = gpu.xp
    x = cp.arange(12, dtype=cp.float32).reshape(3, 4)
    assert gpu.asarray(x) is x or gpu.asarray(x).data.ptr == x.data.ptr
    net = Network([4, 3, 2], ["relu", "identity"], device="cuda")
    out = net.forward(x)
    assert gpu.is_native(out) and out.shape == (3, 2)
    expected = net.to("cpu", backend="numpy").predict(gpu.to_numpy(x))
    np.testing.assert_allclose(gpu.to_numpy(out), expected, rtol=1e-5)


def test_dlpack_is_preferred_to_the_array_interface(gpu, monkeypatch):
    """A producer with both goes through DLPack, which passes our stream to the producer (so
    CuPy waits for its work); PyTorch's __cuda_array_interface__ (v2) carries no stream."""
    taken = []
    view = gpu.zeros((2, 3), np.float32)

    class Both:
        @property
        def __cuda_array_interface__(self):
            taken.append("interface")
            return view.__cuda_array_interface__

        def __dlpack__(self, stream=None):
            raise AssertionError("from_dlpack is replaced in this test")

        def __dlpack_device__(self):
            return (2, 0)                                  # kDLCUDA, device 0

    monkeypatch.setattr(gpu.xp, "from_dlpack", lambda x: taken.append("dlpack") or view)
    assert gpu.asarray(Both()) is view
    assert taken == ["dlpack"]


class CudaTensor:
    """A CUDA array of another library, as PyTorch's: DLPack only, no host conversion."""

    def __init__(self, device_array):
        self._d = device_array

    def __dlpack__(self, *args, **kwargs):
        return self._d.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._d.__dlpack_device__()

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


def test_foreign_cuda_arrays_on_every_entry_point(gpu):
    """Another library's CUDA arrays go wherever arrays go, on the GPU network and on a CPU
    one (copied to the host), set_parameters and to_numpy included."""
    from backprop import to_numpy
    rng = np.random.default_rng(15)
    X, Y = _data(rng, 24, 4, 3)
    cuda = lambda a: CudaTensor(gpu.asarray(np.ascontiguousarray(a)))  # noqa: E731
    np.testing.assert_array_equal(to_numpy(cuda(X)), X)
    for device, backend in (("cuda", "cupy"), ("cpu", "numpy")):
        net = Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy", device=device,
                      backend=backend, dtype="float64", seed=0)
        twin = Network([4, 5, 3], ["tanh", "softmax"], "cross_entropy", device=device,
                       backend=backend, dtype="float64", seed=0)
        params = [(W * 0.5, b + 0.1) for W, b in net.get_parameters()]
        net.set_parameters([(cuda(W), cuda(b)) for W, b in params])
        twin.set_parameters(params)
        assert net.loss(cuda(X), cuda(Y)) == twin.loss(X, Y)
        net.fit(cuda(X), cuda(Y), epochs=1, batch_size=8, learning_rate=0.1, seed=0,
                validation_data=(cuda(X), cuda(Y)))
        twin.fit(X, Y, epochs=1, batch_size=8, learning_rate=0.1, seed=0)
        for (W0, b0), (W1, b1) in zip(twin.get_parameters(), net.get_parameters()):
            np.testing.assert_array_equal(W1, W0)
            np.testing.assert_array_equal(b1, b0)


@needs_gpu
def test_dlpack_input_from_torch(gpu):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    X = torch.randn(64, 5, device="cuda", dtype=torch.float32)
    Y = torch.randn(64, 2, device="cuda", dtype=torch.float32)
    xd = gpu.asarray(X)
    assert xd.data.ptr == X.data_ptr()                     # a view, not a copy

    class DLPackOnly:                                      # no __cuda_array_interface__
        def __dlpack__(self, *args, **kwargs):
            return X.__dlpack__(*args, **kwargs)

        def __dlpack_device__(self):
            return X.__dlpack_device__()
    assert gpu.asarray(DLPackOnly()).data.ptr == X.data_ptr()
    net = Network([5, 8, 2], ["tanh", "identity"], device="cuda", seed=0)
    hist = net.fit(X, Y, epochs=2, batch_size=16, learning_rate=0.01)
    assert np.isfinite(hist["loss"]).all()
    np.testing.assert_allclose(gpu.to_numpy(net.forward(X)),
                               net.predict(X.cpu().numpy()), rtol=1e-6)


def test_tf32_off_by_default_and_on_as_option(gpu, monkeypatch):
    """CUPY_TF32 unset: float32 cuBLAS products are full fp32; tf32=True lets cuBLAS use TF32,
    which rounds the inputs to 10 mantissa bits and so changes the result measurably."""
    if os.environ.get("CUPY_TF32", "0") != "0":
        pytest.skip("CUPY_TF32 is set in this environment")
    assert gpu.tf32 is False
    rng = np.random.default_rng(11)
    A_prev = rng.standard_normal((512, 1024))
    W = rng.standard_normal((1024, 1024))
    exact = A_prev @ W.T
    from backprop.activations import Identity
    from backprop.backends.cupy import CuPyBackend
    errors = {}
    for backend in (gpu, CuPyBackend("cuda:0", tf32=True)):
        monkeypatch.setattr(backend, "small_width", 0)      # every product on cuBLAS
        calls = cublas_calls(monkeypatch, backend)
        Z = backend.empty((512, 1024), np.float32)
        backend.forward(backend.asarray(A_prev, np.float32), backend.asarray(W, np.float32),
                        backend.zeros((1024,), np.float32), Identity(), Z, Z)
        assert len(calls) == 1, "the product did not run on cuBLAS"
        errors[backend.tf32] = np.linalg.norm(backend.to_numpy(Z) - exact) / np.linalg.norm(exact)
    assert errors[False] < 1e-5, errors                       # fp32: ~1e-7
    assert 1e-4 < errors[True] < 1e-2, errors                 # TF32: ~5e-4


@needs_gpu
def test_cupy_tf32_env_switches_it_on():
    code = ("from backprop.backends import get_backend; "
            "print(get_backend('cuda', 'cupy').tf32)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "CUPY_TF32": "1",
                                        "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
