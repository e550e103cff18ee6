"""backprop.gradcheck: the network's own backward against float64 central differences, per
layer and parameter kind, on every backend and dtype; a wrong gradient is caught and named."""

from __future__ import annotations

import numpy as np
import pytest
from bn_oracle import set_batch_norm
from support import make_network, random_targets

import backprop
from backprop.gradcheck import GradcheckError, GradcheckReport


def net_and_data(backend, dtype, seed=0, **kw):
    rng = np.random.default_rng(seed)
    net = make_network(backend, [4, 6, 6, 3], ["tanh", "elu", "softmax"], "cross_entropy",
                       dtype=dtype, seed=seed, **kw)
    set_batch_norm(net, rng)
    X = rng.normal(size=(7, 4))
    return net, X, random_targets(rng, "cross_entropy", 7, 3)


@pytest.mark.parametrize("kw", [{}, {"batch_norm": True, "residual": True, "dropout": 0.3},
                                {"batch_norm": [False, True]}], ids=["plain", "all", "bn2"])
def test_a_correct_network_passes(backend, dtype, kw):
    net, X, Y = net_and_data(backend, dtype, **kw)
    before = net.predict(X)
    report = backprop.gradcheck(net, X, Y)
    assert isinstance(report, GradcheckReport)
    assert report.passed and report, str(report)
    kinds = [(e.layer, e.kind) for e in report.entries]
    expected = [(l, k) for l in (1, 2, 3) for k in "Wb"]
    expected += [(l + 1, k) for l, on in enumerate(net.batch_norm) if on
                 for k in ("gamma", "beta")]
    assert kinds == expected
    limit = 5e-7 if dtype == "float64" else 5e-4     # half the default rtol
    assert report.max_relative_error < limit, str(report)
    assert np.array_equal(net.predict(X), before)     # the network is not changed
    assert "passed" in str(report)


@pytest.mark.parametrize("where", ["weight_grad", "batch_norm_backward", "add"])
def test_a_wrong_gradient_is_caught_and_named(backend, where, monkeypatch):
    """A 1% error in one kernel's output: the report fails and names the layer and kind."""
    net, X, Y = net_and_data(backend, "float64", batch_norm=True, residual=True)
    be = net.backend
    original = getattr(be, where)
    state = {"calls": 0}

    def wrong(*args):
        original(*args)
        if where != "add" or args[2] is args[0]:       # add: count the backward's only
            state["calls"] += 1
        if where == "weight_grad" and state["calls"] == 2:      # layer 2's dW (backward order)
            be.copy(be.asarray(backprop.to_numpy(args[2]) * 1.01), args[2])
        if where == "batch_norm_backward":                      # every dβ
            be.copy(be.asarray(backprop.to_numpy(args[5]) * 1.01), args[5])
        if where == "add" and state["calls"] == 1:      # the backward's first skip
            be.copy(be.asarray(backprop.to_numpy(args[2]) * 1.01), args[2])
    monkeypatch.setattr(be, where, wrong)
    report = backprop.gradcheck(net, X, Y)
    assert not report.passed, str(report)
    failed = {(e.layer, e.kind) for e in report.entries if not e.passed}
    if where == "weight_grad":
        assert failed == {(2, "W")}, str(report)
    elif where == "batch_norm_backward":
        assert {(1, "beta"), (2, "beta")} <= failed, str(report)
    else:
        assert (1, "W") in failed, str(report)
    state["calls"] = 0
    with pytest.raises(GradcheckError, match=r"relative error"):
        backprop.gradcheck(net, X, Y, raise_exception=True)


def test_sampling_and_bad_arguments():
    net, X, Y = net_and_data("numpy", "float64", batch_norm=True)
    report = backprop.gradcheck(net, X, Y, max_elements=3)
    assert report.passed and all(e.checked == min(3, e.checked) for e in report.entries)
    assert report.entries[0].checked == 3
    for kw, match in (({"eps": 0}, "eps"), ({"rtol": 0}, "rtol"), ({"atol": float("nan")}, "atol"),
                      ({"max_elements": 0}, "max_elements")):
        with pytest.raises(ValueError, match=match):
            backprop.gradcheck(net, X, Y, **kw)
    with pytest.raises(ValueError, match="X: expected 4 features"):
        backprop.gradcheck(net, X[:, :3], Y)
    with pytest.raises(ValueError, match="at least 2 samples"):
        backprop.gradcheck(net, X[:1], Y[:1])
    with pytest.raises(TypeError, match="net"):
        backprop.gradcheck("net", X, Y)


def test_a_small_error_in_dgamma_is_caught(backend, monkeypatch):
    """0.1% in every dγ (float64): caught, and only γ's entries fail."""
    net, X, Y = net_and_data(backend, "float64", batch_norm=True)
    be = net.backend
    original = be.batch_norm_backward

    def wrong(*args):
        original(*args)
        be.copy(be.asarray(backprop.to_numpy(args[4]) * 1.001), args[4])
    monkeypatch.setattr(be, "batch_norm_backward", wrong)
    report = backprop.gradcheck(net, X, Y)
    failed = {(e.layer, e.kind) for e in report.entries if not e.passed}
    assert failed == {(1, "gamma"), (2, "gamma")}, str(report)


@pytest.mark.parametrize("seed", range(6))
def test_two_row_batch_norm_networks_pass_at_default_tolerances(backend, dtype, seed):
    """The reviewer's failures: 2 rows, where a normalized layer's frozen bias has a ~0
    gradient (rounding noise relative to itself) and W's differences are least accurate."""
    rng = np.random.default_rng(seed)
    net = make_network(backend, [4, 6, 6, 3], ["relu", "tanh", "softmax"], "cross_entropy",
                       dtype=dtype, seed=seed, batch_norm=True, residual=True)
    X, Y = rng.normal(size=(2, 4)), rng.integers(0, 3, 2)
    report = backprop.gradcheck(net, X, Y)
    assert report.passed, str(report)
    assert [(e.layer, e.kind) for e in report.entries if e.frozen] == [(1, "b"), (2, "b")]
    assert "frozen" in str(report)


def test_a_frozen_bias_with_a_gradient_is_caught(monkeypatch):
    """A normalized layer's b must have a ~0 gradient: a backward that gives it one fails."""
    net, X, Y = net_and_data("numpy", "float64", batch_norm=[True, False])
    real = net.backward(X, Y)
    wrong = [(dW, db + (0.01 * abs(backprop.to_numpy(dW)).max() if l == 0 else 0))
             for l, (dW, db) in enumerate(real)]
    fake = type(real)(wrong)
    fake.batch_norm = real.batch_norm
    monkeypatch.setattr(net, "backward", lambda *a, **k: fake)
    report = backprop.gradcheck(net, X, Y)
    failed = {(e.layer, e.kind, e.frozen) for e in report.entries if not e.passed}
    assert failed == {(1, "b", True)}, str(report)


def test_default_samples_bound_the_cost():
    """A default call checks at most MAX_ELEMENTS elements of each tensor (the same ones on
    every call); max_elements=None checks all."""
    from backprop.gradcheck import MAX_ELEMENTS
    rng = np.random.default_rng(0)
    net = make_network("numpy", [30, 20, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    X, Y = rng.normal(size=(5, 30)), rng.integers(0, 3, 5)
    report = backprop.gradcheck(net, X, Y)
    assert [e.checked for e in report.entries] == [MAX_ELEMENTS, 20, 60, 3]
    assert str(report) == str(backprop.gradcheck(net, X, Y))
    assert [e.checked for e in backprop.gradcheck(net, X, Y, max_elements=None).entries] == \
        [600, 20, 60, 3]
