"""ONNX export (backprop/export.py): the graph passes onnx.checker and onnxruntime computes
what ``predict`` does, for every activation, loss and option, in float32 and float64."""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest
from support import ACTIVATIONS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from backprop import Network  # noqa: E402

HAS_BATCH_NORM = "batch_norm" in inspect.signature(Network).parameters
needs_batch_norm = pytest.mark.skipif(not HAS_BATCH_NORM,
                                      reason="needs Network(batch_norm=, residual=)")
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-14)}


def run_onnx(path, X):
    """Y from onnxruntime (every graph the export writes must load and run there)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["Y"], {"X": X})[0]


def tolerance(net, dtype):
    """ONNX attributes are float32: LeakyRelu's α is rounded to float32 (relative error up to
    6e-8), which bounds a float64 graph's agreement where it appears; float64 ELU is composed
    with Exp(z) − 1 where the network computes expm1(z) (absolute error ~1e-16 per unit)."""
    if dtype == "float64" and any(a.name == "leaky_relu" for a in net.activations):
        return dict(rtol=1e-6, atol=1e-9)
    return TOL[dtype]


def check_export(net, tmp_path, dtype, n=37, seed=0):
    path = tmp_path / "net.onnx"
    net.to_onnx(path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    X = np.random.default_rng(seed).normal(size=(n, net.layer_sizes[0])).astype(dtype)
    got = run_onnx(path, X)
    assert got.dtype == np.dtype(dtype) and got.shape == (n, net.layer_sizes[-1])
    np.testing.assert_allclose(got, net.predict(X), **tolerance(net, dtype))
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden", [a for a in ACTIVATIONS if a.name != "softmax"],
                         ids=str)
def test_every_hidden_activation(tmp_path, dtype, hidden):
    net = Network([5, 8, 6, 3], [hidden, hidden, "identity"], "mse", dtype=dtype, seed=1,
                  backend="numpy")
    # biases away from zero, so a wrong bias or transposition shows
    net.set_parameters([(W, np.linspace(-0.5, 0.5, len(b))) for W, b in net.get_parameters()])
    model = check_export(net, tmp_path, dtype)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Gemm") == 3
    if hidden.name == "elu":        # onnxruntime has Elu in float32 only: composed in float64
        composed = ["Min", "Exp", "Sub", "Mul", "Relu", "Add"]
        assert (ops.count("Elu"), ops.count("Exp")) == ((0, 2) if dtype == "float64" else (2, 0))
        if dtype == "float64":
            assert ops[1:7] == composed and ops[8:14] == composed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output, loss, n_out", [("softmax", "cross_entropy", 4),
                                                 ("sigmoid", "binary_cross_entropy", 1),
                                                 ("sigmoid", "binary_cross_entropy", 3),
                                                 ("tanh", "mse", 2)])
def test_every_output(tmp_path, dtype, output, loss, n_out):
    net = Network([4, 7, n_out], ["elu", output], loss, dtype=dtype, seed=2, backend="numpy")
    X = np.random.default_rng(0).normal(size=(60, 4))
    Y = (np.random.default_rng(1).integers(0, n_out, 60) if loss == "cross_entropy" else
         np.random.default_rng(1).uniform(0, 1, (60, n_out)).round(0 if loss != "mse" else 3))
    net.fit(X, Y, epochs=3, batch_size=16, learning_rate=0.1, seed=0)
    check_export(net, tmp_path, dtype)


def test_trained_with_dropout_and_no_hidden_layer(tmp_path):
    net = Network([6, 10, 10, 2], "relu", "mse", dropout=0.5, seed=3, backend="numpy")
    X = np.random.default_rng(0).normal(size=(50, 6))
    net.fit(X, X[:, :2], epochs=2, batch_size=10, learning_rate=0.05, seed=0)
    model = check_export(net, tmp_path, "float32")
    assert "Dropout" not in [node.op_type for node in model.graph.node]
    check_export(Network([3, 2], "sigmoid", "binary_cross_entropy", seed=0), tmp_path, "float32")


@needs_batch_norm
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_and_residual(tmp_path, dtype):
    net = Network([5, 8, 8, 8, 3], ["relu", "tanh", "leaky_relu", "softmax"], "cross_entropy",
                  batch_norm=[True, False, True], residual=[False, True, True], dtype=dtype,
                  seed=4, backend="numpy")
    X = np.random.default_rng(0).normal(size=(80, 5))
    net.fit(X, np.random.default_rng(1).integers(0, 3, 80), epochs=3, batch_size=16,
            learning_rate=0.05, seed=0)          # running statistics away from 0 and 1
    model = check_export(net, tmp_path, dtype)
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("BatchNormalization") == 2 and ops.count("Add") == 2


def test_metadata_graph_and_estimator(tmp_path):
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from backprop.sklearn import BackpropClassifier
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.where(X[:, 0] > 0, "up", "down")
    clf = BackpropClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0, tol=None,
                             backend="numpy").fit(X, y)
    clf.to_onnx(tmp_path / "clf.onnx")
    got = run_onnx(tmp_path / "clf.onnx", X.astype(np.float32))
    np.testing.assert_allclose(got[:, 0], clf.predict_proba(X)[:, 1], **TOL["float32"])
    net = Network([3, 2], "softmax", "cross_entropy", seed=0)
    net.metadata = {"feature_names": ["a", "b", "c"], "classes": ["x", "y"]}
    net.to_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["backprop.metadata"]) == net.metadata
    assert model.opset_import[0].version == 17
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", ""]


def test_write_is_atomic(tmp_path, monkeypatch):
    net = Network([3, 2], "identity", "mse", seed=0)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")

    def broken(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        net.to_onnx(path)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.onnx"]
    monkeypatch.undo()
    W, b = net.get_parameters()[0]
    net.set_parameters([(W, b)])
    net.W[0][0, 0] = np.nan             # a diverged network is refused before writing
    with pytest.raises(ValueError, match="NaN or Inf"):
        net.to_onnx(path)
    assert path.read_bytes() == b"previous"
