"""``fit(validation_split=s)``: the last N - ⌊N (1 - s)⌋ rows, taken before any shuffling, are
the validation data (Keras' ``validation_split``), sample weights split with them."""

from __future__ import annotations

import numpy as np
import pytest
import support

from backprop import Network

FIT = dict(epochs=2, batch_size=8, learning_rate=0.1, optimizer="adam", seed=3)


def data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n)
    w = rng.uniform(0.5, 2.0, n)
    return X, y, w


def network(backend="numpy"):
    return support.make_network(backend, [4, 6, 3], ["tanh", "softmax"], "cross_entropy",
                                dtype="float64", seed=1)


@pytest.mark.parametrize("split,held_out", [(0.2, 6), (0.25, 8), (0.01, 1), (0.5, 15)])
def test_the_last_rows_are_the_validation_data(backend, split, held_out):
    """Identical to passing the last rows as validation_data (weights included), whatever the
    shuffle: the held-out rows are cut before shuffling."""
    X, y, w = data()
    at = 30 - held_out
    assert at == int(np.floor(30 * (1 - split)))            # Keras' formula, written out
    a, b = network(backend), network(backend)
    h = a.fit(X, y, sample_weight=w, validation_split=split, **FIT)
    h_ref = b.fit(X[:at], y[:at], sample_weight=w[:at],
                  validation_data=(X[at:], y[at:], w[at:]), **FIT)
    assert h.history.keys() == h_ref.history.keys()
    for key in ("loss", "val_loss", "val_accuracy"):
        assert h[key] == h_ref[key], key
    for (Wa, ba), (Wb, bb) in zip(a.get_parameters(), b.get_parameters()):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)
    assert h["val_loss"][-1] == a.evaluate(X[at:], y[at:], sample_weight=w[at:])["loss"]


def test_unweighted_split_and_zero_split():
    X, y, _ = data()
    a, b, c, d = (network() for _ in range(4))
    h = a.fit(X, y, validation_split=0.2, **FIT)
    h_ref = b.fit(X[:24], y[:24], validation_data=(X[24:], y[24:]), **FIT)
    assert h["val_loss"] == h_ref["val_loss"] and h["loss"] == h_ref["loss"]
    h0 = c.fit(X, y, validation_split=0.0, **FIT)
    h_plain = d.fit(X, y, **FIT)
    assert "val_loss" not in h0 and h0["loss"] == h_plain["loss"]


@pytest.mark.parametrize("split,match", [
    (1.0, "0 <= validation_split < 1"), (-0.1, "0 <= validation_split < 1"),
    (True, "0 <= validation_split < 1"), ("0.2", "0 <= validation_split < 1"),
    (float("nan"), "0 <= validation_split < 1"),
    (0.99, "leaves no training samples"), (1e-17, "leaves no validation samples")])
def test_bad_splits_are_refused_before_any_work(split, match):
    X, y, _ = data(n=10)
    net = network()
    before = support.state_arrays(net)
    with pytest.raises(ValueError, match=match) as info:
        net.fit(X, y, validation_split=split, **FIT)
    assert "validation_split" in str(info.value)
    support.assert_same_state(support.state_arrays(net), before, "a refused fit")


def test_split_with_validation_data_is_refused():
    X, y, _ = data()
    with pytest.raises(ValueError, match="either validation_split or validation_data"):
        network().fit(X, y, validation_split=0.2, validation_data=(X, y), **FIT)


def test_split_weights_that_leave_a_side_without_weight_are_refused():
    X, y, w = data(n=10)
    w[8:] = 0.0
    with pytest.raises(ValueError, match="sample_weight: every weight of the validation rows"):
        network().fit(X, y, sample_weight=w, validation_split=0.2, **FIT)
    w = np.ones(10)
    w[:8] = 0.0
    with pytest.raises(ValueError, match="sample_weight: every weight of the training rows"):
        network().fit(X, y, sample_weight=w, validation_split=0.2, **FIT)


def test_split_is_the_same_for_every_seed():
    """The held-out rows do not depend on the seed (only the training order does)."""
    X, y, _ = data()
    for seed in (0, 1):
        net = network()
        h = net.fit(X, y, validation_split=0.2, **{**FIT, "seed": seed})
        assert h["val_loss"][-1] == net.evaluate(X[24:], y[24:])["loss"]


def test_early_stopping_monitors_the_split():
    """EarlyStopping's val_loss is known before any work (it is refused without validation
    data) and logged every epoch."""
    from backprop import EarlyStopping
    X, y, _ = data()
    net = Network([4, 6, 3], ["tanh", "softmax"], "cross_entropy", seed=1)
    with pytest.raises(ValueError, match="val_loss"):
        net.fit(X, y, callbacks=[EarlyStopping(patience=1)], **FIT)
    h = net.fit(X, y, validation_split=0.2, callbacks=[EarlyStopping(patience=1)],
                **{**FIT, "epochs": 5})
    assert len(h["val_loss"]) == h.epochs >= 1
