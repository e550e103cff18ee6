"""Per-layer options of Network accept any sequence: lists, tuples, ranges, 1-d NumPy arrays
(the reviewer's ``residual=np.array([False, True])`` raised TypeError), with the same result
and the same errors as a list; the estimators take them too."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from support import make_network

SIZES = [4, 6, 6, 3]
LISTS = {"activations": ["tanh", "relu", "softmax"], "init": ["xavier", "he", "xavier"],
         "dropout": [0.1, 0.0], "batch_norm": [True, False], "residual": [False, True]}


@pytest.mark.parametrize("kind", ["tuple", "array", "array-typed"])
@pytest.mark.parametrize("option", sorted(LISTS))
def test_any_sequence_is_a_per_layer_option(backend, option, kind):
    value = LISTS[option]
    as_seq = (tuple(value) if kind == "tuple" else np.array(value) if kind == "array"
              else np.array(value, dtype=object))
    kw = {k: v for k, v in LISTS.items() if k != "activations"}
    act = LISTS["activations"]
    if option == "activations":
        act = as_seq
    else:
        kw[option] = as_seq
    a = make_network(backend, SIZES, act, "cross_entropy", seed=0,
                     **{k: v for k, v in kw.items()})
    b = make_network(backend, SIZES, LISTS["activations"], "cross_entropy", seed=0,
                     **{k: v for k, v in LISTS.items() if k != "activations"})
    assert a.dropout == b.dropout and a.batch_norm == b.batch_norm
    assert a.residual == b.residual == [False, True]
    assert [str(x) for x in a.activations] == [str(x) for x in b.activations]
    for (Wa, _), (Wb, _) in zip(a.get_parameters(), b.get_parameters()):
        np.testing.assert_array_equal(Wa, Wb)


def test_sequence_errors_are_the_lists_errors():
    for bad, match in ((np.array([True]), "batch_norm: expected one flag per hidden layer"),
                       (np.array([[True, False]]), "batch_norm: expected one entry per layer"),
                       (np.array([1, 0]), "batch_norm: expected True/False")):
        with pytest.raises((ValueError, TypeError), match=match):
            make_network("numpy", SIZES, "relu", batch_norm=bad)
    with pytest.raises(ValueError, match="residual: a skip connection"):
        make_network("numpy", [4, 5, 6, 3], "relu", residual=np.array([True, False]))
    with pytest.raises(ValueError, match="dropout: expected one rate per hidden layer"):
        make_network("numpy", SIZES, "relu", dropout=np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="activations: expected one entry per layer"):
        make_network("numpy", SIZES, np.array(["relu", "relu"]))


def test_estimators_take_arrays_of_flags():
    pytest.importorskip("sklearn")
    from backprop.sklearn import BackpropRegressor
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = BackpropRegressor(hidden_layer_sizes=(8, 8), batch_norm=np.array([True, False]),
                                residual=np.array([False, True]), max_iter=3).fit(X, y)
    assert reg.network_.batch_norm == [True, False] and reg.network_.residual == [False, True]
