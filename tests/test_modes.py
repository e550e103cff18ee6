"""A training step is the only pass with dropout; no other pass reads or changes state.

``backward``, ``loss``, ``evaluate``, ``forward`` and ``predict`` must give the same result
whatever training left behind (masks in the workspace of the same batch size, gradient
buffers), and leave every array of the network as it was.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import assert_same_state, make_network, state_arrays

from backprop import to_numpy

SIZES = [5, 8, 6, 3]
N = 12


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, SIZES[0])), rng.integers(0, SIZES[-1], N)


def networks(backend, dropout):
    """A float64 network with ``dropout`` and one without, built the same way."""
    kw = dict(dtype="float64", seed=0)
    acts = ["tanh", "relu", "softmax"]
    return (make_network(backend, SIZES, acts, "cross_entropy", dropout=dropout, **kw),
            make_network(backend, SIZES, acts, "cross_entropy", **kw))


def test_backward_after_fits_with_dropout_is_the_gradient_without_dropout(backend):
    """After a fit with each batch size b = 1..N (its training workspace left holding the
    masks of its last step), ``backward``, ``loss``, ``evaluate`` and ``predict`` on b rows
    (the size of that workspace) and on all N rows equal, bit for bit, a network without
    dropout holding the same parameters."""
    X, y = data()
    net, plain = networks(backend, [0.5, 0.3])
    for batch_size in range(1, N + 1):
        net.fit(X, y, epochs=1, batch_size=batch_size, learning_rate=0.01, seed=batch_size)
        assert any(np.any(to_numpy(m) == 0) for m in net.workspace(batch_size).mask)
        plain.set_parameters(net.get_parameters())
        for rows in sorted({batch_size, N}):
            ours, expected = net.backward(X[:rows], y[:rows]), plain.backward(X[:rows], y[:rows])
            for l, ((dW, db), (eW, eb)) in enumerate(zip(ours, expected)):
                assert np.array_equal(to_numpy(dW), to_numpy(eW)), f"dW{l + 1}, {rows} rows"
                assert np.array_equal(to_numpy(db), to_numpy(eb)), f"db{l + 1}, {rows} rows"
            assert net.loss(X[:rows], y[:rows]) == plain.loss(X[:rows], y[:rows])
            assert net.evaluate(X[:rows], y[:rows]) == plain.evaluate(X[:rows], y[:rows])
            assert np.array_equal(net.predict(X[:rows]), plain.predict(X[:rows]))


@pytest.mark.parametrize("optimizer,clip_norm", [("sgd", None), ("adam", 0.5)])
def test_other_passes_change_nothing(backend, optimizer, clip_norm):
    """After training (dropout, optimizer state, a partial batch), every pass other than a
    training step leaves every array the network holds unchanged: parameters, optimizer
    state, gradient buffers, training workspaces and their masks."""
    X, y = data()
    net, _ = networks(backend, 0.4)
    net.fit(X, y, epochs=2, batch_size=5, learning_rate=0.05, optimizer=optimizer,
            clip_norm=clip_norm, seed=1, validation_data=(X, y))
    before = state_arrays(net)
    assert any(".mask[" in path for path in before)
    assert any(".state[" in path for path in before) == (optimizer == "adam")
    passes = {
        "backward": lambda rows: net.backward(X[:rows], y[:rows]),
        "loss": lambda rows: net.loss(X[:rows], y[:rows]),
        "evaluate": lambda rows: net.evaluate(X[:rows], y[:rows]),
        "forward": lambda rows: net.forward(X[:rows]),
        "predict": lambda rows: net.predict(X[:rows]),
        "predict_classes": lambda rows: net.predict_classes(X[:rows]),
    }
    for name, run in passes.items():
        for rows in (N, 5, 2, 1):     # every training workspace's batch size, and others
            run(rows)
            assert_same_state(state_arrays(net), before, f"{name} on {rows} rows")


def test_passes_do_not_depend_on_what_ran_before(backend):
    """The same call gives the same result before and after other passes and training
    steps that leave the parameters where they were (learning rate ~0)."""
    X, y = data()
    net, _ = networks(backend, 0.5)
    first = ([(to_numpy(a).copy(), to_numpy(b).copy()) for a, b in net.backward(X, y)],
             net.evaluate(X, y), net.predict(X))
    net.fit(X, y, epochs=1, batch_size=N, learning_rate=1e-300, seed=3)
    net.fit(X, y, epochs=1, batch_size=4, learning_rate=1e-300, seed=4)
    net.predict(X[:4])
    again = ([(to_numpy(a), to_numpy(b)) for a, b in net.backward(X, y)],
             net.evaluate(X, y), net.predict(X))
    for (a, b), (c, d) in zip(first[0], again[0]):
        assert np.array_equal(a, c)
        assert np.array_equal(b, d)
    assert first[1] == again[1]
    assert np.array_equal(first[2], again[2])


def test_backward_returns_arrays_of_its_own(backend):
    """Two calls give two sets of arrays; neither is a buffer a training step writes."""
    X, y = data()
    net, _ = networks(backend, 0.5)
    net.fit(X, y, epochs=1, batch_size=N, learning_rate=0.1, seed=0)
    g1 = net.backward(X, y)
    kept = [(to_numpy(a).copy(), to_numpy(b).copy()) for a, b in g1]
    net.fit(X, y, epochs=1, batch_size=N, learning_rate=0.1, seed=1)
    net.backward(X[:3], y[:3])
    for (a, b), (c, d) in zip(g1, kept):
        assert np.array_equal(to_numpy(a), c)
        assert np.array_equal(to_numpy(b), d)
