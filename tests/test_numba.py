"""The Numba backend's compiled kernels equal the NumPy backend (the batched reference) to
dtype tolerance.

Forward, backward, every optimizer (with l1/l2), whole ``fit`` runs on both the fused-epoch
path and the per-kernel path (forced through ``FUSED_MAX_WIDTH``; the ``path`` fixture checks
that every fit ran on it), every activation at a hidden and an output layer (Leaky ReLU and
ELU also at a non-default α), every loss pairing, a partial last batch, batch 1 and width-1
layers. Tolerances: 1e-10 relative in float64, 1e-4 in float32 (relative to the largest
magnitude of the reference array).

Dropout, clipping and the plain-SGD update folded into the weight product are NumPy's own
code in this backend (inherited: NumPy's Generator draws the masks, BLAS gemm folds the
update, and a compiled copy would not be faster), so comparing them with NumPy here would
compare NumPy with itself: they are checked against independent oracles on every backend
(tests/test_network.py, formulas; tests/test_gradients.py, finite differences with the
dropout masks frozen).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

pytest.importorskip("numba", reason="the numba backend needs numba: pip install 'backprop[numba]'")

from support import spy  # noqa: E402

from backprop import Network  # noqa: E402
from backprop.activations import ELU, LeakyReLU  # noqa: E402
from backprop.backends import base, get_backend  # noqa: E402
from backprop.backends import numba as nb  # noqa: E402

RTOL = {"float64": 1e-10, "float32": 1e-4}

# (hidden activation, output activation, loss): every activation appears at both places,
# every loss with its pairings (mse with any output)
CASES = [
    ("tanh", "softmax", "cross_entropy"),
    ("relu", "sigmoid", "binary_cross_entropy"),
    ("sigmoid", "identity", "mse"),
    ("leaky_relu", "tanh", "mse"),
    ("elu", "softmax", "mse"),
    ("softmax", "relu", "mse"),
    ("identity", "leaky_relu", "mse"),
    ("tanh", "elu", "mse"),
    ("relu", "sigmoid", "mse"),
    (LeakyReLU(0.2), ELU(0.5), "mse"),
    (ELU(0.5), LeakyReLU(0.2), "mse"),
]
OPTIMIZERS = ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"]


def close(actual, expected, dtype):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    error = float(np.max(np.abs(actual - expected), initial=0.0)) / scale
    assert error <= RTOL[dtype], f"relative error {error:.3g} > {RTOL[dtype]}"


def problem(sizes, loss, n=37, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]))
    if loss == "cross_entropy":
        Y = rng.integers(0, sizes[-1], n)
    elif loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, (n, sizes[-1])).astype(float)
    else:
        Y = rng.standard_normal((n, sizes[-1]))
    return X, Y


def pair(sizes, hidden, output, loss, dtype, **kw):
    acts = [hidden] * (len(sizes) - 2) + [output]
    return [Network(sizes, acts, loss, backend=b, dtype=dtype, seed=3, **kw)
            for b in ("numpy", "numba")]


@pytest.fixture(params=["fused", "per-kernel"])
def path(request, monkeypatch):
    """Force the fused-epoch path or the per-kernel path of NumbaBackend; afterwards, check
    that every epoch of the test ran on it."""
    fused = request.param == "fused"
    monkeypatch.setattr(nb, "FUSED_MAX_WIDTH", 10**9 if fused else 0)
    epochs = spy(monkeypatch, nb.NumbaBackend, "train_epoch")     # every network's instance
    yield request.param
    assert epochs, "no epoch ran"
    assert all(epochs) if fused else not any(epochs), f"train_epoch returned {epochs}"


def same_parameters(net_a, net_b, dtype):
    for (Wa, ba), (Wb, bb) in zip(net_a.get_parameters(), net_b.get_parameters()):
        close(Wa, Wb, dtype)
        close(ba, bb, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden,output,loss", CASES, ids=str)
def test_forward_backward_loss(hidden, output, loss, dtype):
    sizes = [5, 7, 6, 4]
    ref, net = pair(sizes, hidden, output, loss, dtype)
    X, Y = problem(sizes, loss)
    close(net.predict(X), ref.predict(X), dtype)
    close(net.loss(X, Y), ref.loss(X, Y), dtype)
    for (dW, db), (rW, rb) in zip(net.backward(X, Y), ref.backward(X, Y)):
        close(dW, rW, dtype)
        close(db, rb, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizers_fit(optimizer, dtype, path):
    sizes = [6, 8, 3]
    ref, net = pair(sizes, "tanh", "softmax", "cross_entropy", dtype)
    X, Y = problem(sizes, "cross_entropy")
    kw = dict(epochs=3, batch_size=8, learning_rate=0.05, optimizer=optimizer, seed=1,
              l1=1e-3, l2=2e-3)
    h_ref, h = ref.fit(X, Y, **kw), net.fit(X, Y, **kw)
    same_parameters(net, ref, dtype)
    close(h["loss"], h_ref["loss"], dtype)
    assert net.optimizer_.t == ref.optimizer_.t == 3 * 5
    for st, st_ref in zip(net.optimizer_.state, ref.optimizer_.state):
        for s, s_ref in zip(st, st_ref):
            close(s, s_ref, dtype)


@pytest.mark.parametrize("hidden,output,loss", CASES, ids=str)
def test_fit_every_pairing(hidden, output, loss, path):
    sizes = [5, 9, 7, 4]
    for dtype in ("float64", "float32"):
        ref, net = pair(sizes, hidden, output, loss, dtype)
        X, Y = problem(sizes, loss, n=45)       # 45 = 2 batches of 16 + a partial one
        kw = dict(epochs=2, batch_size=16, learning_rate=0.1, seed=4)
        h_ref, h = ref.fit(X, Y, **kw), net.fit(X, Y, **kw)
        same_parameters(net, ref, dtype)
        close(h["loss"], h_ref["loss"], dtype)


@pytest.mark.parametrize("sizes,batch_size", [([3, 1, 2], 1), ([1, 1, 1], 4), ([4, 5, 1], 1), ([4, 1], 3)])
def test_batch_one_and_width_one(sizes, batch_size, path):
    ref, net = pair(sizes, "tanh", "identity", "mse", "float64")
    X, Y = problem(sizes, "mse", n=9)
    for optimizer in ("sgd", "adam"):
        kw = dict(epochs=2, batch_size=batch_size, learning_rate=0.05, seed=2,
                  optimizer=optimizer)
        close(net.fit(X, Y, **kw)["loss"], ref.fit(X, Y, **kw)["loss"], "float64")
        same_parameters(net, ref, "float64")


def test_unshuffled_and_whole_batch(path):
    sizes = [4, 6, 3]
    ref, net = pair(sizes, "relu", "softmax", "cross_entropy", "float64")
    X, Y = problem(sizes, "cross_entropy", n=20)
    for batch_size in (7, 20, 50):              # partial last batch; one batch; batch > n
        kw = dict(epochs=2, batch_size=batch_size, learning_rate=0.1, shuffle=False)
        close(net.fit(X, Y, **kw)["loss"], ref.fit(X, Y, **kw)["loss"], "float64")
        same_parameters(net, ref, "float64")


def test_fused_path_is_chosen_only_where_supported():
    be = get_backend("cpu", "numba")
    X, Y = problem([4, 6, 3], "mse", n=10)

    def fused(net, **kw):
        from backprop.optimizers import SGD
        opt = SGD()
        opt.reset(be, net.parameters())
        Xd, Yd = net._prepare(X, Y)
        total = np.zeros(1, net.dtype)
        args = dict(l1=0.0, l2=0.0, clip_norm=None)
        args.update(kw)
        return be.train_epoch(net, Xd, Yd, None, 5, opt, 0.1, total=total, **args)

    small = Network([4, 6, 3], "tanh", "mse", backend="numba")
    assert fused(small)
    assert not fused(small, clip_norm=1.0)
    assert not fused(Network([4, 6, 6, 3], "tanh", "mse", backend="numba", dropout=0.5))
    wide = Network([4, nb.FUSED_MAX_WIDTH + 1, 3], "tanh", "mse", backend="numba")
    assert not fused(wide)


def test_dropout_and_clipping_fall_back_to_the_kernels(monkeypatch):
    """Such fits run step by step on numba's compiled kernels (around NumPy's dropout and
    clipping, which tests/test_network.py and test_gradients.py check against oracles)."""
    sizes = [5, 8, 3]
    ref, net = pair(sizes, "relu", "softmax", "cross_entropy", "float64", dropout=0.3)
    X, Y = problem(sizes, "cross_entropy")
    epochs = spy(monkeypatch, net.backend, "train_epoch")
    kw = dict(epochs=2, batch_size=8, learning_rate=0.1, seed=5, clip_norm=0.5,
              optimizer="momentum")
    close(net.fit(X, Y, **kw)["loss"], ref.fit(X, Y, **kw)["loss"], "float64")
    assert epochs == [False, False]
    same_parameters(net, ref, "float64")


def test_signatures_match_the_contract():
    backend_cls = type(get_backend("cpu", "numba"))
    public = {n for n in dir(base.Backend) if not n.startswith("_")}
    for name in dir(backend_cls):
        if name.startswith("_"):
            continue
        assert name in public, f"NumbaBackend adds public member {name!r}"
        member = getattr(backend_cls, name)
        if callable(member):
            assert inspect.signature(member) == inspect.signature(getattr(base.Backend, name))
