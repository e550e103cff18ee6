"""Helpers of the test suite: which backends can run here, networks on them, tolerances.

(A module of its own, not conftest.py: benchmarks/ has a conftest too, and both would be
imported under the one name ``conftest``.)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from backprop import Network
from backprop.backends import BACKENDS, get_backend, is_installed

DEVICE = {name: spec[2] for name, spec in BACKENDS.items()}   # backend -> device kind
#: ci/gpu.sh sets BACKPROP_REQUIRE_GPU=1: the cupy tests fail without a GPU instead of emulating
REQUIRE_GPU = os.environ.get("BACKPROP_REQUIRE_GPU", "0") not in ("", "0")
#: relative tolerance of a backend against the NumPy backend, by dtype
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}


def unavailable(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can."""
    if not is_installed(name):
        return f"backend {name!r}: its package is not installed"
    try:
        get_backend(DEVICE[name], name)
    except (ImportError, RuntimeError) as e:
        return f"backend {name!r} unavailable: {e}"
    return None


def make_network(backend: str, *args, **kwargs) -> Network:
    """A Network on ``backend`` and its device."""
    return Network(*args, device=DEVICE[backend], backend=backend, **kwargs)


def assert_close(actual, expected, rtol: float, what: str = "") -> None:
    """‖actual - expected‖ <= rtol · ‖expected‖ (norm-wise relative error), on the host."""
    from backprop import to_numpy
    a = np.asarray(to_numpy(actual), dtype=np.float64)
    e = np.asarray(to_numpy(expected), dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.linalg.norm(a - e)
    scale = max(np.linalg.norm(e), np.finfo(np.float64).tiny)
    assert err <= rtol * scale, f"{what}: relative error {err / scale:.3g} > {rtol:.1g}"


def random_targets(rng: np.random.Generator, loss: str, n: int, n_out: int) -> np.ndarray:
    """Valid targets for ``loss``: one-hot rows, [0, 1] values, or real values."""
    if loss == "cross_entropy":
        return np.eye(n_out)[rng.integers(0, n_out, n)]
    if loss == "binary_cross_entropy":
        return rng.uniform(0, 1, (n, n_out))
    return rng.normal(0, 1, (n, n_out))


#: every (hidden activation, output activation, loss) the library accepts, once each
ACTIVATION_NAMES = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softmax"]
PAIRINGS = ([("mse", a) for a in ACTIVATION_NAMES]
            + [("binary_cross_entropy", "sigmoid"), ("cross_entropy", "softmax")])


# ---------------------------------------------------------------------- the CUDA emulator

EMULATOR = Path(__file__).resolve().parent / "emulator"


def fake_cupy():
    """tests/emulator/fake_cupy.py, the CPU stand-in for CuPy, loaded once as ``fake_cupy``."""
    module = sys.modules.get("fake_cupy")
    if module is None:
        spec = importlib.util.spec_from_file_location("fake_cupy", EMULATOR / "fake_cupy.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["fake_cupy"] = module
        spec.loader.exec_module(module)
    return module


def use_emulator(monkeypatch):
    """Make ``cupy`` (and ``cupyx``, ``cupy_backends``) the emulator for one test, with fresh
    backend instances; numba stays as installed. Returns the fake module."""
    import backprop.backends as backends
    fake = fake_cupy()
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(backends, "_instances", {})
    installed = backends.is_installed
    monkeypatch.setattr(backends, "is_installed",
                        lambda name: name == "cupy" or installed(name))
    return fake
