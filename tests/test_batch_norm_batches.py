"""Batch normalization and 1-row batches: ``fit`` refuses ``batch_size=1`` and, when
N % batch_size == 1, leaves the last row of each epoch's shuffled order out of that epoch (a
1-row batch's variance is 0: it would normalise every unit to β and pull the running
variance towards 0). Oracle: the same fit on the rows the epoch trains on, in the same order,
with no row left out. ``backward``/``diagnose`` refuse a single row."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from support import assert_close, make_network

import backprop
from backprop import to_numpy

SIZES = [3, 5, 5, 2]


def bn_net(backend, **kw):
    return make_network(backend, SIZES, ["tanh", "relu", "identity"], "mse", dtype="float64",
                        seed=3, batch_norm=True, residual=[False, True], **kw)


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, SIZES[0])), rng.normal(0, 1, (n, SIZES[-1]))


def params(net):
    out = [to_numpy(p) for p in net.parameters()]
    out += [np.asarray(v) for d in net.get_batch_norm() if d is not None
            for k, v in d.items() if k in ("running_mean", "running_var")]
    return out


def test_batch_size_one_is_refused_before_any_work(backend):
    net = bn_net(backend)
    X, Y = data(6)
    before = params(net)
    with pytest.raises(ValueError, match="batch_size"):
        net.fit(X, Y, epochs=1, batch_size=1, learning_rate=0.1)
    with pytest.raises(ValueError, match="X: batch normalization"):
        net.fit(X[:1], Y[:1], epochs=1, batch_size=4, learning_rate=0.1)
    for a, b in zip(params(net), before):
        np.testing.assert_array_equal(a, b)
    plain = make_network(backend, SIZES, ["tanh", "relu", "identity"], "mse", seed=3)
    plain.fit(X, Y, epochs=1, batch_size=1, learning_rate=0.1)      # no batch norm: fine


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_a_one_row_tail_sits_the_epoch_out(backend, weighted):
    """N = 2·4 + 1, shuffled: each epoch trains on its permutation's first 8 rows, exactly as
    a fit on those rows in that order (with the same warm-up rates, weights and loss)."""
    n, bs, seed = 9, 4, 5
    X, Y = data(n)
    w = np.random.default_rng(1).uniform(0.5, 2.0, n) if weighted else None
    net = bn_net(backend)
    history = net.fit(X, Y, epochs=2, batch_size=bs, learning_rate=0.05, seed=seed,
                      optimizer="adam", warmup_steps=3, sample_weight=w)
    rng = np.random.default_rng(seed)
    oracle = bn_net(backend)
    for epoch in range(2):
        perm = rng.permutation(n)[:n - 1]
        # the same steps on the chosen rows; warm-up counts the steps of earlier epochs
        h = oracle.fit(X[perm], Y[perm], epochs=1, batch_size=bs, learning_rate=0.05,
                       shuffle=False, optimizer=oracle.optimizer_ if epoch else "adam",
                       warmup_steps=max(0, 3 - 2 * epoch),
                       sample_weight=None if w is None else w[perm])
        assert_close(history["loss"][epoch], h["loss"][0], 1e-12, f"loss of epoch {epoch}")
        assert history["learning_rate"][epoch] == h["learning_rate"][0]
    for a, b in zip(params(net), params(oracle)):
        assert_close(a, b, 1e-12, "parameters and running statistics")
    assert history["samples_per_second"][0] > 0
    for d in net.get_batch_norm():
        if d is not None:
            assert d["running_var"].min() > 0.05      # a 1-row batch would pull it to ~0


def test_without_shuffle_the_last_row_is_left_out_with_a_warning(backend):
    n, bs = 7, 3
    X, Y = data(n)
    net, oracle = bn_net(backend), bn_net(backend)
    with pytest.warns(UserWarning, match="last row is never trained"):
        h = net.fit(X, Y, epochs=2, batch_size=bs, learning_rate=0.1, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h0 = oracle.fit(X[:-1], Y[:-1], epochs=2, batch_size=bs, learning_rate=0.1,
                        shuffle=False)
    assert_close(np.array(h["loss"]), np.array(h0["loss"]), 1e-12, "loss")
    for a, b in zip(params(net), params(oracle)):
        assert_close(a, b, 1e-12, "parameters")


def test_eval_loss_stays_sane_after_many_one_row_tails(backend):
    """The reviewer's symptom: 401 rows in batches of 200 spoiled running_var every epoch."""
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (41, 3))
    Y = np.tanh(X @ rng.normal(size=(3, 2)))
    net = bn_net(backend)
    net.fit(X, Y, epochs=30, batch_size=20, learning_rate=0.05, seed=0, optimizer="adam")
    assert net.evaluate(X, Y)["loss"] < 1.0
    assert_close(net.evaluate(X, Y)["loss"], float(net._batch_loss(*net._prepare(X, Y))),
                 0.5, "eval vs batch-statistics loss")


def test_backward_and_diagnose_refuse_one_row(backend):
    net = bn_net(backend)
    X, Y = data(1)
    with pytest.raises(ValueError, match="X: batch normalization needs at least 2 rows"):
        net.backward(X, Y)
    with pytest.raises(ValueError, match="X: batch normalization needs at least 2 rows"):
        net.diagnose(X, Y)
    with pytest.raises(ValueError, match="X: batch normalization"):
        backprop.gradcheck(net, X, Y)


def test_sklearn_estimator_with_401_rows_and_batches_of_200():
    pytest.importorskip("sklearn")
    from sklearn.datasets import make_classification
    from backprop.sklearn import BackpropClassifier
    X, y = make_classification(n_samples=401, n_features=8, random_state=0)
    make = lambda: BackpropClassifier(hidden_layer_sizes=(16, 16), batch_norm=True,  # noqa
                                      max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # not converged in 30 iterations
        clf, even = make().fit(X, y), make().fit(X[:400], y[:400])
    for d in clf.network_.get_batch_norm():
        assert d["running_var"].min() > 1e-3
    # as good as with 400 rows (no 1-row batch); it was at chance level before
    assert clf.score(X, y) > even.score(X[:400], y[:400]) - 0.05 > 0.65
