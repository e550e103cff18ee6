"""Exactness: the gradients equal finite differences (float64) and the seeds' per-sample
algorithm in backprop.reference."""

from __future__ import annotations

import numpy as np
import pytest
from support import ACTIVATION_NAMES, PAIRINGS, assert_close, make_network, random_targets

from backprop import reference, to_numpy

SHAPES = [  # (layer sizes, batch): batch 1 and width-1 layers included
    ([3, 5, 4], 7),
    ([4, 1, 3], 5),
    ([1, 6, 2], 1),
    ([5, 4, 3, 2], 3),
]


def randomize_biases(net, rng):
    """Nonzero biases, so no pre-activation sits exactly on ReLU's kink at z = 0."""
    net.set_parameters([(W, rng.normal(0, 0.5, b.shape)) for W, b in net.get_parameters()])


def finite_difference_gradients(net, X, Y, h=1e-6):
    """Central differences (L(p + h) - L(p - h)) / 2h of the mean loss, every parameter."""
    params = net.get_parameters()
    grads = []
    for l, (W, b) in enumerate(params):
        pair = []
        for p in (W, b):
            g = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                saved = p[i]
                p[i] = saved + h
                net.set_parameters(params)
                up = net.loss(X, Y)
                p[i] = saved - h
                net.set_parameters(params)
                down = net.loss(X, Y)
                p[i] = saved
                g[i] = (up - down) / (2 * h)
            pair.append(g)
        grads.append(pair)
    net.set_parameters(params)
    return grads


@pytest.mark.parametrize("loss,output", PAIRINGS)
@pytest.mark.parametrize("hidden", ACTIVATION_NAMES)
def test_gradients_match_finite_differences(backend, loss, output, hidden):
    rng = np.random.default_rng([len(loss), len(output), len(hidden), ACTIVATION_NAMES.index(hidden)])
    sizes, batch = SHAPES[rng.integers(len(SHAPES))]
    acts = [hidden] * (len(sizes) - 2) + [output]
    net = make_network(backend, sizes, acts, loss, dtype="float64", seed=int(rng.integers(1000)))
    randomize_biases(net, rng)
    X = rng.normal(0, 1, (batch, sizes[0]))
    Y = random_targets(rng, loss, batch, sizes[-1])
    analytic = net.backward(X, Y)
    numeric = finite_difference_gradients(net, X, Y)
    for l, ((dW, db), (nW, nb)) in enumerate(zip(analytic, numeric)):
        a = np.concatenate([to_numpy(dW).ravel(), to_numpy(db).ravel()])
        n = np.concatenate([nW.ravel(), nb.ravel()])
        scale = max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12)
        assert np.linalg.norm(a - n) / scale <= 1e-6, f"layer {l + 1}: {a} vs {n}"


@pytest.mark.parametrize("sizes,batch", SHAPES)
@pytest.mark.parametrize("loss,output", PAIRINGS)
def test_backward_equals_per_sample_reference(backend, sizes, batch, loss, output):
    rng = np.random.default_rng(batch + len(sizes))
    hidden = ["tanh", "relu", "elu", "sigmoid", "leaky_relu"][rng.integers(5)]
    acts = [hidden] * (len(sizes) - 2) + [output]
    net = make_network(backend, sizes, acts, loss, dtype="float64", seed=3)
    randomize_biases(net, rng)
    X = rng.normal(0, 1, (batch, sizes[0]))
    Y = random_targets(rng, loss, batch, sizes[-1])
    W = [p[0] for p in net.get_parameters()]
    b = [p[1] for p in net.get_parameters()]
    dW, db = reference.batch_gradients(X, Y, W, b, net.activations, net.loss_function)
    for l, (gW, gb) in enumerate(net.backward(X, Y)):
        assert_close(gW, dW[l], 1e-12, f"dW{l + 1}")
        assert_close(gb, db[l], 1e-12, f"db{l + 1}")
    expected = reference.batch_loss(X, Y, W, b, net.activations, net.loss_function)
    assert net.loss(X, Y) == pytest.approx(expected, rel=1e-12)
    assert_close(net.forward(X), [reference.forward_propagation(x, W, b, net.activations)[0][-1]
                                  for x in X], 1e-12, "forward")


@pytest.mark.parametrize("batch_size", [4, 5, 13])   # 13 samples: partial last batch for 4, 5
def test_fit_equals_reference_training_loop(backend, batch_size):
    rng = np.random.default_rng(7)
    sizes = [3, 6, 4, 2]
    net = make_network(backend, sizes, ["tanh", "relu", "softmax"], "cross_entropy",
                       dtype="float64", seed=1)
    X = rng.normal(0, 1, (13, 3))
    labels = rng.integers(0, 2, 13)
    W = [p[0] for p in net.get_parameters()]
    b = [p[1] for p in net.get_parameters()]
    order_rng = np.random.default_rng(11)   # fit(seed=11) shuffles with this generator
    order = [order_rng.permutation(13) for _ in range(3)]
    W_ref, b_ref = reference.train(X, np.eye(2)[labels], W, b, net.activations,
                                   net.loss_function, 0.3, 3, batch_size, order)
    net.fit(X, labels, epochs=3, batch_size=batch_size, learning_rate=0.3, seed=11)
    for l, (gW, gb) in enumerate(net.get_parameters()):
        assert_close(gW, W_ref[l], 1e-12, f"W{l + 1}")
        assert_close(gb, b_ref[l], 1e-12, f"b{l + 1}")


def test_cross_entropy_is_stable_for_large_logits(backend):
    net = make_network(backend, [2, 3], "softmax", "cross_entropy", dtype="float32", seed=0)
    net.set_parameters([(np.array([[1e4, 0], [0, 1e4], [-1e4, 0]]), np.zeros(3))])
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = net.loss(X, [1, 0])        # wrong class by a margin of 1e4
    assert np.isfinite(loss) and loss == pytest.approx(1e4, rel=1e-6)
    grads = net.backward(X, [1, 0])
    assert all(np.isfinite(to_numpy(g)).all() for pair in grads for g in pair)


def test_binary_cross_entropy_is_stable_for_large_logits(backend):
    net = make_network(backend, [1, 1], "sigmoid", "binary_cross_entropy", dtype="float32", seed=0)
    net.set_parameters([(np.array([[200.0]]), np.zeros(1))])
    assert net.loss([[1.0], [-1.0]], [0.0, 1.0]) == pytest.approx(200.0, rel=1e-6)
    assert net.loss([[1.0], [-1.0]], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-6)
