"""Residual connections: which layers get a skip, the forward pass and the gradients against a
direct transcription (tests/bn_oracle.py), with dropout (frozen masks) and batch
normalization, on every backend."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
from bn_oracle import batch_loss, forward, params_of, set_batch_norm
from support import RTOL, assert_change_close, assert_close, make_network, random_targets

import backprop
from backprop import optimizers, reference, to_numpy


def test_true_skips_layers_whose_widths_differ():
    net = backprop.Network([4, 4, 6, 6, 6, 2], "tanh", residual=True)
    assert net.residual == [True, False, True, True]
    assert backprop.Network([4, 4, 2], "tanh").residual == [False]
    assert backprop.Network([4, 4, 4, 2], "tanh", residual=[False, True]).residual == [False,
                                                                                          True]


def test_a_list_asking_for_impossible_skips_names_them():
    with pytest.raises(ValueError, match=r"layer 2 \(4 -> 6\), layer 4 \(6 -> 3\)"):
        backprop.Network([4, 4, 6, 6, 3, 2], "tanh", residual=[True, True, True, True])
    with pytest.raises(ValueError, match=r"residual: expected one flag per hidden layer \(1\)"):
        backprop.Network([4, 4, 2], "tanh", residual=[True, True])


@pytest.mark.parametrize("bn", [False, True])
def test_forward_and_gradients_match_the_transcription(backend, bn):
    rng = np.random.default_rng(0)
    sizes = [5, 5, 5, 4, 3]
    net = make_network(backend, sizes, ["relu", "tanh", "elu", "softmax"], "cross_entropy",
                       dtype="float64", seed=3, residual=True, batch_norm=bn)
    assert net.residual == [True, True, False]
    set_batch_norm(net, rng)
    X = rng.normal(size=(6, 5))
    Y = random_targets(rng, "cross_entropy", 6, 3)
    p = params_of(net)
    assert_close(net.predict(X), forward(p, X, net.activations, net.batch_norm, net.residual,
                                         "eval"), 1e-10, "predict")
    f = lambda: batch_loss(p, X, Y, net.activations, net.loss_function, net.batch_norm,  # noqa
                           net.residual)
    grads = net.backward(X, Y)
    numeric = oracles.finite_differences(f, [x for pair in zip(p["W"], p["b"]) for x in pair])
    for l, (dW, db) in enumerate(grads):
        for name, a, n in (("W", dW, numeric[2 * l]), ("b", db, numeric[2 * l + 1])):
            a = np.asarray(to_numpy(a))
            assert np.linalg.norm(a - n) <= 1e-6 * (np.linalg.norm(a) + np.linalg.norm(n)) + 1e-9, \
                f"{name}{l + 1}"


def test_a_step_with_dropout_matches_the_transcription(backend):
    """A training step with dropout before residual layers: the skip carries the dropped
    input, and the gradient (frozen masks) flows through both paths."""
    rng = np.random.default_rng(1)
    sizes = [4, 6, 6, 6, 2]
    net = make_network(backend, sizes, ["tanh", "sigmoid", "relu", "identity"], "mse",
                       dtype="float64", seed=4, residual=[False, True, True],
                       batch_norm=[False, False, True], dropout=0.3)
    set_batch_norm(net, rng)
    X = rng.normal(size=(8, 4))
    Y = rng.normal(size=(8, 2))
    p = params_of(net)
    be = net.backend
    ws = net.workspace(8)
    opt = optimizers.SGD()
    opt.reset(be, net.parameters())
    net.backend.seed(5)
    lr = 0.1
    net.train_step(ws, be.asarray(X, net.dtype), be.asarray(Y, net.dtype), opt, lr)
    masks = [np.array(to_numpy(m)) for m in ws.mask]
    assert all(((m == 0) | np.isclose(m, 1 / 0.7)).all() for m in masks)
    assert any((m == 0).any() for m in masks)

    def loss():
        out = forward(p, X, net.activations, net.batch_norm, net.residual, "train", masks)
        return float(np.mean([reference.sample_loss(net.loss_function, o, y)
                              for o, y in zip(out, Y)]))
    after = params_of(net)
    numeric = oracles.finite_differences(loss, p["W"] + p["b"])
    for l in range(net.n_layers):
        assert_change_close(after["W"][l], p["W"][l] - lr * numeric[l], p["W"][l], 1e-6, 1,
                            f"W{l + 1}")
        if not (l < 3 and net.batch_norm[l]):
            assert_change_close(after["b"][l], p["b"][l] - lr * numeric[net.n_layers + l],
                                p["b"][l], 1e-6, 1, f"b{l + 1}")


def test_backends_equal_numpy_with_residual(backend, dtype):
    rng = np.random.default_rng(2)
    args = ([6, 6, 6, 3], ["leaky_relu", "tanh", "softmax"], "cross_entropy")
    X = rng.normal(size=(21, 6))
    Y = random_targets(rng, "cross_entropy", 21, 3)
    nets = [make_network(name, *args, dtype=dtype, seed=2, residual=True, dropout=0.2)
            for name in (backend, "numpy")]
    tol = RTOL[np.dtype(dtype)]
    assert_close(nets[0].forward(X), nets[1].forward(X), tol, "forward")
    for (a, b), (c, d) in zip(nets[0].backward(X, Y), nets[1].backward(X, Y)):
        assert_close(a, c, 10 * tol, "dW")
        assert_close(b, d, 10 * tol, "db")
