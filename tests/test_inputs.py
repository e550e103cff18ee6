"""Input conversion: any numeric array-like converts (pandas nullable dtypes included), values
outside the network's dtype are refused, and every error names the argument passed."""

from __future__ import annotations

import re

import numpy as np
import pytest
from support import make_network

from backprop import Network

X = np.random.default_rng(0).normal(size=(12, 3))
LABELS = np.arange(12) % 2


def net_on(backend, dtype="float32"):
    return make_network(backend, [3, 4, 2], ["tanh", "softmax"], "cross_entropy", seed=0,
                        dtype=dtype)


def fit_once(net, X, Y, **kw):
    return net.fit(X, Y, epochs=2, batch_size=4, learning_rate=0.1, seed=0, **kw)


def test_pandas_nullable_frames_train_like_numpy(backend):
    pd = pytest.importorskip("pandas", reason="pandas is not installed (the 'test' extra)")
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).convert_dtypes()
    labels = pd.Series(LABELS).convert_dtypes()
    assert str(frame.dtypes.iloc[0]) == "Float64" and str(labels.dtype) == "Int64"
    ours, reference = net_on(backend), net_on(backend)
    fit_once(ours, frame, labels, validation_data=(frame, labels))
    fit_once(reference, X, LABELS, validation_data=(X, LABELS))
    assert ours.history_["loss"] == reference.history_["loss"]
    assert np.array_equal(ours.predict(frame), reference.predict(X))
    onehot = pd.DataFrame(np.eye(2)[LABELS]).astype("Float64")
    assert ours.evaluate(frame, onehot) == ours.evaluate(X, LABELS)


def test_pandas_missing_values_are_refused_as_nan(backend):
    pd = pytest.importorskip("pandas", reason="pandas is not installed (the 'test' extra)")
    net = net_on(backend)
    frame = pd.DataFrame(X).convert_dtypes()
    frame.iloc[3, 1] = pd.NA
    with pytest.raises(ValueError, match="X: contains NaN"):
        fit_once(net, frame, LABELS)
    with pytest.raises(ValueError, match=r"validation_data\[0\]: contains NaN"):
        fit_once(net, X, LABELS, validation_data=(frame, LABELS))
    with pytest.raises(TypeError, match="X: expected a numeric array"):
        fit_once(net, pd.DataFrame({"a": ["x"] * 12, "b": 1.0, "c": 2.0}), LABELS)
    assert net.history_ is None


def test_object_arrays_of_numbers_convert(backend):
    net = net_on(backend)
    ours = fit_once(net, X.astype(object), LABELS.astype(object))
    assert ours.epochs == 2
    holes = X.astype(object)
    holes[0, 0] = None
    with pytest.raises(ValueError, match="X: contains NaN"):
        net.predict(holes)
    with pytest.raises(TypeError, match="X: expected a numeric array"):
        net.predict(np.array([["x", 2, 3]], dtype=object))


@pytest.mark.parametrize("where", ["X", "Y", "validation_data[0]", "validation_data[1]"])
def test_values_outside_float32_are_refused(backend, where):
    net = make_network(backend, [3, 1], "identity", "mse", seed=0)
    y = X[:, 0]
    big_X, big_y = X.copy(), y.copy()
    big_X[2, 1] = big_y[5] = 1e39                    # finite in float64, Inf in float32
    args = {"X": (big_X, y, None), "Y": (X, big_y, None),
            "validation_data[0]": (X, y, (big_X, y)),
            "validation_data[1]": (X, y, (X, big_y))}[where]
    with pytest.raises(ValueError, match=re.escape(where) + ": has values outside the range "
                                         "of float32"):
        fit_once(net, args[0], args[1], validation_data=args[2])
    wide = make_network(backend, [3, 1], "identity", "mse", seed=0, dtype="float64")
    assert np.isfinite(wide.predict(big_X)).all()   # float64 holds them


def test_set_parameters_refuses_values_outside_the_dtype(backend):
    net = net_on(backend)
    before = net.get_parameters()
    pairs = [(W.astype(np.float64), b) for W, b in before]
    pairs[1][0][0, 0] = -1e39
    with pytest.raises(ValueError, match="layer 2 has values outside the range of float32"):
        net.set_parameters(pairs)
    assert all(np.array_equal(W, W0) for (W, _), (W0, _) in zip(net.get_parameters(), before))
    net_on(backend, "float64").set_parameters(pairs)


def test_validation_data_errors_name_validation_data(backend):
    net = net_on(backend)
    cases = [((X[:, :2], LABELS), r"validation_data\[0\]: expected 3 features"),
             ((X, LABELS[:5]), r"validation_data\[1\]: has 5 samples but validation_data\[0\]"),
             ((X, np.eye(3)[LABELS % 3]), r"validation_data\[1\]: expected shape"),
             ((X, LABELS + 5), r"validation_data\[1\]: class labels")]
    for data, words in cases:
        with pytest.raises(ValueError, match=words):
            fit_once(net, X, LABELS, validation_data=data)


def test_softmax_over_one_unit_is_refused_with_the_fix():
    for args in [([3, 1], "softmax", "cross_entropy"), ([3, 1], "softmax", "mse"),
                 ([3, 4, 1], ["relu", "softmax"], "mse")]:
        with pytest.raises(ValueError, match="softmax over a single output unit.*sigmoid.*"
                                             "binary_cross_entropy"):
            Network(*args)
    Network([3, 2], "softmax", "cross_entropy")     # two units are fine
