"""ONNX export: a network's inference pass as a standard ONNX graph (``pip install
'backprop[onnx]'``).

Layer l becomes ``Gemm(A_prev, W_l, b_l, transB=1)`` (Z = A_prev Wᵀ + b, W stored as the
network's (n_l, n_{l-1})), then, for a batch-normalized hidden layer,
``BatchNormalization(Z, γ, β, running_mean, running_var, epsilon)`` (inference mode), then the
activation: ``Identity``, ``Sigmoid``, ``Tanh``, ``Relu``, ``LeakyRelu(alpha)``,
``Elu(alpha)`` or ``Softmax(axis=-1)``; a residual hidden layer adds its input with ``Add``.
In a float64 graph ELU is composed as ``Relu(z) + α·(Exp(Min(z, 0)) − 1)`` (``Min``, ``Exp``,
``Sub``, ``Mul``, ``Relu``, ``Add``), since onnxruntime implements ``Elu`` for float32 only.
Dropout is a training-time operation and has no node. ONNX attributes are float32, so in a
float64 graph LeakyRelu's α is rounded to float32 (relative error <= 6e-8). The
graph has one input ``X`` (batch, n_0) and one output ``Y`` (batch, n_L), the network's dtype
(float32 or float64), a dynamic batch dimension, opset :data:`OPSET`, and the network's
metadata (feature names, classes) as the JSON metadata property ``backprop.metadata``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .activations import Code
from .state import atomic_write, target

if TYPE_CHECKING:
    from .network import Network

#: the ONNX operator set the graph uses (Softmax-13 normalizes along ``axis`` only)
OPSET = 17
#: the IR version written (readable by onnxruntime >= 1.14)
IR_VERSION = 8

_OPS = {Code.IDENTITY: "Identity", Code.SIGMOID: "Sigmoid", Code.TANH: "Tanh",
        Code.RELU: "Relu", Code.LEAKY_RELU: "LeakyRelu", Code.ELU: "Elu",
        Code.SOFTMAX: "Softmax"}


def to_onnx_model(net: "Network") -> Any:
    """The network as an ``onnx.ModelProto``, checked with ``onnx.checker`` (ValueError for
    NaN or Inf parameters; ImportError without the onnx package)."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: "
                          "pip install 'backprop[onnx]'") from None
    elem = TensorProto.FLOAT if net.dtype == np.float32 else TensorProto.DOUBLE
    params = net.get_parameters()
    for l, (W, b) in enumerate(params, start=1):
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ValueError(f"to_onnx: layer {l} holds NaN or Inf; a diverged network cannot "
                             "be exported")
    n_hidden = net.n_layers - 1
    norms = net.get_batch_norm() if any(getattr(net, "batch_norm", [])) else [None] * n_hidden
    residual = list(getattr(net, "residual", [False] * n_hidden))
    nodes, weights = [], []

    def constant(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(np.asarray(value, dtype=net.dtype), name))
        return name

    current = "X"
    for l, ((W, b), act) in enumerate(zip(params, net.activations), start=1):
        last = l == net.n_layers
        z = f"Z{l}"
        nodes.append(helper.make_node("Gemm", [current, constant(f"W{l}", W),
                                               constant(f"b{l}", b)], [z], transB=1,
                                      name=f"layer{l}_gemm"))
        norm = None if last else norms[l - 1]
        if norm is not None:
            inputs = [z] + [constant(f"bn{l}_{k}", norm[k])
                            for k in ("gamma", "beta", "running_mean", "running_var")]
            z = f"Zhat{l}"
            nodes.append(helper.make_node("BatchNormalization", inputs, [z],
                                          epsilon=float(norm["eps"]), name=f"layer{l}_bn"))
        out = "Y" if last else f"A{l}"
        adds = not last and residual[l - 1]
        activated = f"S{l}" if adds else out
        extra: dict[str, Any] = {}
        if act.code in (Code.LEAKY_RELU, Code.ELU):
            extra["alpha"] = float(act.alpha)
        if act.code == Code.SOFTMAX:
            extra["axis"] = -1
        if act.code == Code.ELU and elem == TensorProto.DOUBLE:
            nodes += _elu_composed(helper, z, activated, l, act.alpha, constant)
        else:
            nodes.append(helper.make_node(_OPS[act.code], [z], [activated],
                                          name=f"layer{l}_{act.name}", **extra))
        if adds:
            nodes.append(helper.make_node("Add", [activated, current], [out],
                                          name=f"layer{l}_residual"))
        current = out
    graph = helper.make_graph(
        nodes, "backprop_network",
        [helper.make_tensor_value_info("X", elem, ["batch", net.layer_sizes[0]])],
        [helper.make_tensor_value_info("Y", elem, ["batch", net.layer_sizes[-1]])],
        initializer=weights)
    model = helper.make_model(graph, producer_name="backprop",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = repr(net)
    if net.metadata is not None:
        helper.set_model_props(model, {"backprop.metadata": json.dumps(net.metadata)})
    onnx.checker.check_model(model, full_check=True)
    return model


def _elu_composed(helper: Any, z: str, out: str, l: int, alpha: float,
                  constant: Any) -> list[Any]:
    """ELU as Relu(z) + α (Exp(Min(z, 0)) − 1): the float64 graph's form, since onnxruntime
    has no double kernel for ``Elu`` (its CPU provider registers float only). α is a
    float64 constant (exact); Exp only sees z <= 0, so it never overflows."""
    name = f"layer{l}_elu"
    zero, one = constant(f"elu{l}_zero", 0.0), constant(f"elu{l}_one", 1.0)
    scale = constant(f"elu{l}_alpha", alpha)
    return [helper.make_node("Min", [z, zero], [f"{name}_neg"], name=f"{name}_min"),
            helper.make_node("Exp", [f"{name}_neg"], [f"{name}_exp"], name=f"{name}_exp"),
            helper.make_node("Sub", [f"{name}_exp", one], [f"{name}_expm1"], name=f"{name}_sub"),
            helper.make_node("Mul", [f"{name}_expm1", scale], [f"{name}_scaled"],
                             name=f"{name}_mul"),
            helper.make_node("Relu", [z], [f"{name}_pos"], name=f"{name}_relu"),
            helper.make_node("Add", [f"{name}_pos", f"{name}_scaled"], [out], name=name)]


def to_onnx(net: "Network", path: str | os.PathLike[str]) -> None:
    """Write the network's ONNX graph (:func:`to_onnx_model`) to exactly ``path``, atomically
    (the previous file stays intact if anything fails; a symbolic link is followed). ValueError
    when ``path`` is an existing directory, device, FIFO or socket, before any work."""
    target(path)
    data = to_onnx_model(net).SerializeToString()
    atomic_write(path, lambda f: f.write(data))
