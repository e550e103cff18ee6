"""Bad input raises ValueError or TypeError naming the argument, and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from support import make_network

from backprop import Network

GOOD_X = np.random.default_rng(0).normal(size=(10, 4))
GOOD_LABELS = np.arange(10) % 3


@pytest.fixture
def net(backend):
    return make_network(backend, [4, 5, 3], ["relu", "softmax"], "cross_entropy", seed=0)


def unchanged(net, before):
    return all(np.array_equal(W, W0) and np.array_equal(b, b0)
               for (W, b), (W0, b0) in zip(net.get_parameters(), before))


BAD_FIT = [  # (arguments to fit, error type, words the message must contain)
    (dict(X=GOOD_X[:, :3]), ValueError, ["X", "4 features"]),
    (dict(X=GOOD_X[0]), ValueError, ["X", "2-D"]),
    (dict(X=GOOD_X[:0], Y=GOOD_LABELS[:0]), ValueError, ["X", "at least one sample"]),
    (dict(Y=GOOD_LABELS[:9]), ValueError, ["Y", "9 samples", "10"]),
    (dict(Y=np.eye(4)[GOOD_LABELS]), ValueError, ["Y", "shape"]),
    (dict(Y=GOOD_LABELS + 1), ValueError, ["Y", "[0, 2]"]),
    (dict(Y=GOOD_LABELS - 1), ValueError, ["Y", "[0, 2]"]),
    (dict(Y=GOOD_LABELS + 0.5), ValueError, ["Y", "integers"]),
    (dict(Y=np.full((10, 3), 0.5)), ValueError, ["Y", "one-hot"]),
    (dict(X=np.where(np.eye(10, 4) > 0, np.nan, GOOD_X)), ValueError, ["X", "NaN"]),
    (dict(X=np.where(np.eye(10, 4) > 0, np.inf, GOOD_X)), ValueError, ["X", "Inf"]),
    (dict(Y=np.where(np.eye(10, 3) > 0, np.nan, np.eye(3)[GOOD_LABELS])), ValueError, ["Y", "NaN"]),
    (dict(X=np.array([["a"] * 4] * 10)), TypeError, ["X", "numeric"]),
    (dict(batch_size=0), ValueError, ["batch_size", "positive integer"]),
    (dict(batch_size=2.5), ValueError, ["batch_size"]),
    (dict(learning_rate=0.0), ValueError, ["learning_rate", "positive"]),
    (dict(learning_rate=-1.0), ValueError, ["learning_rate"]),
    (dict(learning_rate=float("nan")), ValueError, ["learning_rate"]),
    (dict(epochs=0), ValueError, ["epochs"]),
    (dict(optimizer="adagrad"), ValueError, ["optimizer", "adagrad"]),
    (dict(l2=-1.0), ValueError, ["l2"]),
    (dict(clip_norm=0.0), ValueError, ["clip_norm"]),
    (dict(validation_data=(GOOD_X[:, :2], GOOD_LABELS)), ValueError, ["validation_data[0]", "features"]),
    (dict(validation_data=GOOD_X), ValueError, ["validation_data"]),
]


@pytest.mark.parametrize("kwargs,error,words", BAD_FIT)
def test_bad_fit_arguments_raise_and_change_nothing(net, kwargs, error, words):
    before = net.get_parameters()
    args = dict(X=GOOD_X, Y=GOOD_LABELS, epochs=1, batch_size=4, learning_rate=0.1)
    args.update(kwargs)
    X, Y = args.pop("X"), args.pop("Y")
    with pytest.raises(error) as info:
        net.fit(X, Y, **args)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"
    assert unchanged(net, before)


def test_bad_binary_targets(backend):
    net = make_network(backend, [2, 1], "sigmoid", "binary_cross_entropy", seed=0)
    with pytest.raises(ValueError, match=r"Y: binary_cross_entropy targets must lie in \[0, 1\]"):
        net.fit(np.zeros((3, 2)), [0, 1, 2], epochs=1, batch_size=1, learning_rate=0.1)


@pytest.mark.parametrize("method", ["forward", "predict", "loss", "backward", "evaluate"])
def test_bad_input_to_other_methods(net, method):
    before = net.get_parameters()
    args = (GOOD_X[:, :2],) if method in ("forward", "predict") else (GOOD_X[:, :2], GOOD_LABELS)
    with pytest.raises(ValueError, match="X: expected 4 features"):
        getattr(net, method)(*args)
    assert unchanged(net, before)


def test_set_parameters_validates_before_writing(net):
    before = net.get_parameters()
    bad = [(W, b) for W, b in before]
    bad[1] = (bad[1][0], np.zeros(7))
    with pytest.raises(ValueError, match="layer 2 expected W of shape"):
        net.set_parameters(bad)
    bad[1] = (np.full_like(before[1][0], np.nan), before[1][1])
    with pytest.raises(ValueError, match="NaN"):
        net.set_parameters(bad)
    with pytest.raises(ValueError, match="expected 2"):
        net.set_parameters(before[:1])
    assert unchanged(net, before)


CONSTRUCTION = [  # (args, kwargs, error, words)
    (([4, 3], "swish", "mse"), {}, ValueError, ["activations", "swish"]),
    (([4, 3], "relu", "hinge"), {}, ValueError, ["loss", "hinge"]),
    (([4, 3], "relu", "cross_entropy"), {}, ValueError, ["cross_entropy", "softmax"]),
    (([4, 3], "tanh", "binary_cross_entropy"), {}, ValueError, ["binary_cross_entropy", "sigmoid"]),
    (([4, 3, 2], ["relu"], "mse"), {}, ValueError, ["activations", "2"]),
    (([4], "relu", "mse"), {}, ValueError, ["layer_sizes"]),
    (([4, 0, 2], "relu", "mse"), {}, ValueError, ["layer_sizes"]),
    (([4, 2.5, 2], "relu", "mse"), {}, ValueError, ["layer_sizes"]),
    (([4, 3], "relu", "mse"), {"device": "tpu"}, ValueError, ["device", "tpu"]),
    (([4, 3], "relu", "mse"), {"device": "cpu", "backend": "jax"}, ValueError, ["backend", "jax"]),
    (([4, 3], "relu", "mse"), {"device": "cpu", "backend": "cupy"}, ValueError, ["backend", "cuda"]),
    (([4, 3], "relu", "mse"), {"dtype": "int32"}, TypeError, ["dtype", "int32"]),
    (([4, 3], "relu", "mse"), {"dtype": "complex128"}, TypeError, ["dtype"]),
    (([4, 3], "relu", "mse"), {"dtype": "not-a-dtype"}, TypeError, ["dtype"]),
    (([4, 3], "relu", "mse"), {"init": "lecun"}, ValueError, ["init", "lecun"]),
    (([4, 3, 2], "relu", "mse"), {"dropout": 1.0}, ValueError, ["dropout"]),
]


@pytest.mark.parametrize("args,kwargs,error,words", CONSTRUCTION)
def test_bad_construction(args, kwargs, error, words):
    with pytest.raises(error) as info:
        Network(*args, **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_unavailable_cuda_says_what_is_missing():
    from support import unavailable
    reason = unavailable("cupy")
    if reason is None:
        pytest.skip("a CUDA device is present here")
    with pytest.raises((ImportError, RuntimeError)) as info:
        Network([2, 1], "identity", "mse", device="cuda")
    assert "cupy" in str(info.value).lower() or "cuda" in str(info.value).lower()


def test_activation_parameters_are_checked():
    from backprop.activations import ELU, LeakyReLU
    with pytest.raises(ValueError, match="alpha"):
        LeakyReLU(-0.1)
    with pytest.raises(ValueError, match="alpha"):
        ELU(0.0)
