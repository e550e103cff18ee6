"""Backends are interchangeable: the same contract, the same results, no allocation per step."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import (ACTIVATIONS, DEVICE, PAIRINGS, RTOL, assert_allocates_nothing,
                     assert_change_close, assert_close, make_network, random_targets)

import backprop
from backprop.backends import BACKENDS, get_backend, is_installed
from backprop.backends.base import Backend

ROOT = Path(__file__).resolve().parents[1]


def backend_classes():
    for name, (module, cls, _) in BACKENDS.items():
        if not is_installed(name):
            continue
        try:
            yield name, getattr(importlib.import_module(module), cls)
        except ImportError:
            continue


def public_methods(cls):
    return {n: m for n, m in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


@pytest.mark.parametrize("name,cls", list(backend_classes()))
def test_backends_keep_the_contract(name, cls):
    """Every backend keeps the base signatures and adds no public methods (thinc's check)."""
    assert issubclass(cls, Backend) and not inspect.isabstract(cls)
    base = public_methods(Backend)
    mine = public_methods(cls)
    assert set(mine) == set(base), f"{name} adds or lacks public methods: {set(mine) ^ set(base)}"
    for method, fn in mine.items():
        assert inspect.signature(fn) == inspect.signature(base[method]), f"{name}.{method}"


#: the backends compared with NumPy (NumPy itself is the reference, so not among them)
OTHER_BACKENDS = [pytest.param(n, marks=[pytest.mark.gpu] if DEVICE[n] == "cuda" else [])
                  for n in BACKENDS if n != "numpy"]
#: (hidden activation, output activation, loss): every activation at the two hidden layers
#: (Leaky ReLU and ELU also at a non-default α), every loss/output pairing, each at least once
EQUAL_CASES = [(ACTIVATIONS[i % len(ACTIVATIONS)], output, loss)
               for i, (loss, output) in enumerate(PAIRINGS)]
#: relative tolerance of a parameter *change* over a fit, by dtype; the fit's steps
CHANGE_RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-3}
STEPS = 2 * 5


@pytest.mark.parametrize("backend", OTHER_BACKENDS, indirect=True)
@pytest.mark.parametrize("hidden,output,loss", EQUAL_CASES, ids=str)
def test_every_backend_equals_numpy(backend, dtype, hidden, output, loss):
    """Forward, loss and gradients to dtype tolerance; then from the same parameters a fit
    per optimizer, whose parameter *changes* are compared (one SGD step moves W by under 1%
    of ‖W‖, so a tolerance relative to ‖W‖ would let a wrong update pass)."""
    rng = np.random.default_rng(3)
    sizes = [6, 9, 7, 4]
    args = (sizes, [hidden, hidden, output], loss)
    X = rng.normal(size=(37, 6))
    Y = random_targets(rng, loss, 37, 4)
    ours = make_network(backend, *args, dtype=dtype, seed=5)
    ref = backprop.Network(*args, backend="numpy", dtype=dtype, seed=5)
    tol = RTOL[np.dtype(dtype)]
    assert_close(ours.forward(X), ref.forward(X), tol, "forward")
    assert ours.loss(X, Y) == pytest.approx(ref.loss(X, Y), rel=tol)
    for (a, b), (c, d) in zip(ours.backward(X, Y), ref.backward(X, Y)):
        assert_close(a, c, tol, "dW")
        assert_close(b, d, tol, "db")
    for opt in ("sgd", "momentum", "adam"):
        start = ref.get_parameters()
        ours.set_parameters(start)
        for net in (ours, ref):
            net.fit(X, Y, epochs=2, batch_size=8, learning_rate=0.05, optimizer=opt, seed=1,
                    l2=1e-3)
        rtol = CHANGE_RTOL[np.dtype(dtype)]
        for (a, b), (c, d), (W0, b0) in zip(ours.get_parameters(), ref.get_parameters(), start):
            assert_change_close(a, c, W0, rtol, STEPS, f"W after {opt}")
            assert_change_close(b, d, b0, rtol, STEPS, f"b after {opt}")


@pytest.mark.parametrize("optimizer,clip", [("sgd", None), ("adam", None), ("momentum", 1.0),
                                            ("sgd", "value")])
@pytest.mark.parametrize("acts", [["relu", "tanh", "softmax"], ["leaky_relu", "elu", "sigmoid"]])
def test_training_step_allocates_nothing(optimizer, clip, acts):
    """Once the workspace exists, a step allocates no array.

    tracemalloc sees NumPy's allocations. Every array of this step is >= 128 KiB, while the
    transient peak of a step must stay below that: NumPy's ufunc iteration buffers (bounded,
    a few KiB, used by the row broadcasts of softmax) are all it may take.
    """
    loss = "cross_entropy" if acts[-1] == "softmax" else "binary_cross_entropy"
    net = backprop.Network([128, 256, 256, 128], acts, loss, backend="numpy", seed=0,
                           dropout=[0.1, 0.0])
    rng = np.random.default_rng(0)
    X = net.backend.asarray(rng.normal(size=(256, 128)), net.dtype)
    Y = net.backend.asarray(np.eye(128)[rng.integers(0, 128, 256)], net.dtype)
    opt = backprop.optimizers.get(optimizer)
    opt.reset(net.backend, net.parameters())
    ws = net.workspace(256)
    clipping = dict(clip_value=1e-3) if clip == "value" else dict(clip_norm=clip)
    assert_allocates_nothing(lambda: net.train_step(ws, X, Y, opt, 0.01, l1=0.0, l2=0.0,
                                                     **clipping))


def test_import_needs_numpy_only():
    code = ("import sys, backprop; assert 'numba' not in sys.modules, 'numba imported'; "
            "assert 'cupy' not in sys.modules, 'cupy imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_backend_errors_name_what_is_missing(monkeypatch):
    import backprop.backends as backends
    monkeypatch.setattr(backends, "is_installed", lambda name: name == "numpy")
    with pytest.raises(ImportError, match=r"backend 'numba' needs the 'numba' package.*backprop\[numba\]"):
        get_backend("cpu", "numba")
    with pytest.raises(ImportError, match=r"'cupy' package.*backprop\[cuda\]"):
        get_backend("cuda:1")
    assert backends.default_backend("cpu") == "numpy"


def test_device_strings():
    from backprop.backends import parse_device
    assert parse_device("cuda") == ("cuda", "cuda:0")
    assert parse_device("cuda:3") == ("cuda", "cuda:3")
    for bad in ("gpu", "cuda:", "cuda:x", 0, None):
        with pytest.raises(ValueError, match="device"):
            parse_device(bad)


def test_wheel_carries_kernels_inside_backprop_only(tmp_path):
    """The wheel has backprop/kernels/*.cu and no top-level 'kernels' package."""
    pytest.importorskip("hatchling", reason="building the wheel needs hatchling")
    out = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d",
                          str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("kernels/")]
    assert "backprop/__init__.py" in names
    sources = sorted(p.name for p in (ROOT / "kernels").glob("*.cu"))
    assert sorted(n.split("/")[-1] for n in names if n.startswith("backprop/kernels/")) == sources
