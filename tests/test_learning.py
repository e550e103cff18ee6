"""The network learns: XOR, handwritten digits, and float32 agrees with float64."""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_close, make_network, random_targets


def test_xor(backend):
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    Y = np.array([0, 1, 1, 0], dtype=float)
    net = make_network(backend, [2, 4, 1], ["tanh", "sigmoid"], "binary_cross_entropy", seed=0)
    history = net.fit(X, Y, epochs=2000, batch_size=4, learning_rate=0.5, seed=0)
    assert history["loss"][-1] < 0.05
    assert list(net.predict_classes(X)) == [0, 1, 1, 0]


def digits():
    """scikit-learn's 8x8 digits, or (without scikit-learn) a synthetic stand-in of the same
    shape: 10 noisy prototypes in 64 dimensions."""
    try:
        from sklearn.datasets import load_digits
        data = load_digits()
        X, y = data.data / 16.0, data.target
    except ImportError:
        rng = np.random.default_rng(0)
        prototypes = rng.uniform(0, 1, (10, 64))
        y = rng.integers(0, 10, 1797)
        X = np.clip(prototypes[y] + rng.normal(0, 0.25, (1797, 64)), 0, 1)
    order = np.random.default_rng(1).permutation(len(X))
    cut = int(0.8 * len(X))
    return X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]]


@pytest.mark.parametrize("optimizer,learning_rate", [("sgd", 0.1), ("momentum", 0.05),
                                                      ("adam", 0.002)])
def test_digits_reach_95_percent(backend, optimizer, learning_rate):
    X_train, y_train, X_test, y_test = digits()
    net = make_network(backend, [64, 64, 10], ["relu", "softmax"], "cross_entropy", seed=0)
    net.fit(X_train, y_train, epochs=30, batch_size=32, learning_rate=learning_rate,
            optimizer=optimizer, seed=0)
    accuracy = net.evaluate(X_test, y_test)["accuracy"]
    assert accuracy >= 0.95
    assert np.mean(net.predict_classes(X_test) == y_test) == pytest.approx(accuracy)


@pytest.mark.parametrize("acts,loss", [(["tanh", "softmax"], "cross_entropy"),
                                       (["relu", "sigmoid"], "binary_cross_entropy"),
                                       (["elu", "identity"], "mse")])
def test_float32_agrees_with_float64(backend, acts, loss):
    rng = np.random.default_rng(5)
    X = rng.normal(0, 1, (16, 8))
    Y = random_targets(rng, loss, 16, 3)
    nets = {dt: make_network(backend, [8, 12, 3], acts, loss, dtype=dt, seed=2)
            for dt in ("float32", "float64")}
    assert_close(nets["float32"].forward(X), nets["float64"].forward(X), 1e-5, "forward")
    assert nets["float32"].loss(X, Y) == pytest.approx(nets["float64"].loss(X, Y), rel=1e-5)
    for (a, b), (c, d) in zip(nets["float32"].backward(X, Y), nets["float64"].backward(X, Y)):
        assert_close(a, c, 1e-5, "dW")
        assert_close(b, d, 1e-5, "db")
