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
from backprop.activations import ELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from backprop.backends import BACKENDS, get_backend, is_installed
from backprop.backends.numpy import NumPyBackend

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


def assert_change_close(actual, expected, before, rtol: float, steps: int, what: str = "") -> None:
    """A parameter *change* is right: ‖actual - expected‖ <= rtol · ‖expected - before‖ plus
    the rounding of ``steps`` updates stored in the parameters' dtype (4 · steps · eps · ‖before‖).

    Where a step is small against the parameter (one SGD step moves W by under 1% of ‖W‖),
    a tolerance relative to ‖W‖ would let a wrong update pass; this one is relative to the
    change itself, down to what the dtype can hold.
    """
    from backprop import to_numpy
    a = np.asarray(to_numpy(actual))
    eps = np.finfo(a.dtype if a.dtype.kind == "f" else np.float64).eps
    a, e, b = (np.asarray(to_numpy(x), dtype=np.float64) for x in (actual, expected, before))
    assert a.shape == e.shape == b.shape, f"{what}: shapes {a.shape}, {e.shape}, {b.shape}"
    err = np.linalg.norm(a - e)
    change = np.linalg.norm(e - b)
    bound = rtol * change + 4 * steps * eps * np.linalg.norm(b)
    assert change > 0, f"{what}: the expected change is zero"
    assert err <= bound, (f"{what}: error {err:.3g} of a change of {change:.3g} "
                          f"(relative {err / change:.3g}) > bound {bound:.3g}")


def random_targets(rng: np.random.Generator, loss: str, n: int, n_out: int) -> np.ndarray:
    """Valid targets for ``loss``: one-hot rows, [0, 1] values, or real values."""
    if loss == "cross_entropy":
        return np.eye(n_out)[rng.integers(0, n_out, n)]
    if loss == "binary_cross_entropy":
        return rng.uniform(0, 1, (n, n_out))
    return rng.normal(0, 1, (n, n_out))


#: every activation; Leaky ReLU and ELU also at a non-default α, since their σ' depends on it
#: (at ELU's default α = 1 the (1 - α)[a > 0] term of σ' vanishes)
ACTIVATIONS = [Identity(), Sigmoid(), Tanh(), ReLU(), LeakyReLU(), LeakyReLU(0.2), ELU(),
               ELU(0.5), Softmax()]
#: every (loss, output activation) the library accepts: mse with each activation above
PAIRINGS = ([("mse", a) for a in ACTIVATIONS]
            + [("binary_cross_entropy", Sigmoid()), ("cross_entropy", Softmax())])


# ---------------------------------------------------------------- what a network holds

def walk_arrays(obj, path: str = "net", seen: set | None = None):
    """``(path, array)`` for every array a network holds: parameters, optimizer state,
    gradient buffers, training workspaces (masks included), walked through the lists, dicts
    and backprop objects it keeps. Left out: the shared backend, and the inference passes' own
    scratch (a workspace without δ buffers), which every inference pass overwrites."""
    from backprop.backends.base import Backend
    from backprop.network import Workspace
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (Backend, str, bytes, int, float)):
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray) or hasattr(obj, "__cuda_array_interface__"):
        yield path, obj
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from walk_arrays(item, f"{path}[{i}]", seen)
    elif isinstance(obj, dict):
        for key, item in obj.items():
            yield from walk_arrays(item, f"{path}[{key!r}]", seen)
    elif isinstance(obj, Workspace) and not obj.delta:
        return
    elif type(obj).__module__.startswith("backprop") and hasattr(obj, "__dict__"):
        for name, item in vars(obj).items():
            yield from walk_arrays(item, f"{path}.{name}", seen)


def state_arrays(net) -> dict[str, np.ndarray]:
    """Host copies of :func:`walk_arrays`, by path."""
    from backprop import to_numpy
    return {path: np.array(to_numpy(a)) for path, a in walk_arrays(net)}


def assert_same_state(after: dict, before: dict, what: str) -> None:
    """The same arrays at the same paths, bit for bit (NaN equal to NaN: workspaces start
    uninitialised)."""
    assert sorted(after) == sorted(before), f"{what}: arrays added {sorted(set(after) - set(before))}, removed {sorted(set(before) - set(after))}"
    changed = [p for p in before if not np.array_equal(after[p], before[p], equal_nan=True)]
    assert not changed, f"{what} changed {changed}"


# ---------------------------------------------------------------- which path ran

def spy(monkeypatch, obj, name: str) -> list:
    """Record the return value of every call of ``obj.name`` (for this test only)."""
    calls: list = []
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(result)
        return result
    monkeypatch.setattr(obj, name, wrapper)
    return calls


def force_step_path(monkeypatch, backend) -> None:
    """Make ``backend`` decline whole-epoch calls, so fit runs Network.train_step per batch."""
    monkeypatch.setattr(backend, "train_epoch", lambda *args, **kwargs: False)


# ---------------------------------------------------------------- a second CPU device

class Tagged(np.ndarray):
    """The arrays of :class:`TaggedBackend`: NumPy arrays of a type of their own."""


class TaggedBackend(NumPyBackend):
    """The NumPy backend as a second device whose arrays are :class:`Tagged`, so a move to
    it or from it shows in the arrays' type (between the real CPU backends every move
    returns the same arrays). Registered as backend ``"tagged"`` by the tests that use it."""

    name = "tagged"

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype).view(Tagged)

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype).view(Tagged)

    def asarray(self, x, dtype=None):
        if isinstance(x, Tagged) and (dtype is None or x.dtype == dtype) and x.flags.c_contiguous:
            return x
        return np.ascontiguousarray(np.asarray(x, dtype=dtype)).view(Tagged)

    def to_numpy(self, x):
        return np.asarray(x)

    def is_native(self, x):
        return isinstance(x, Tagged)


#: backends with a whole-epoch path of their own (``Backend.train_epoch``): numba's fused
#: epoch, cupy's CUDA graphs
EPOCH_PATH_BACKENDS = ("numba", "cupy")


def backend_paths(skip=lambda backend, path: False):
    """``pytest.param(backend, path)`` for a test with the ``backend`` fixture (parametrized
    indirectly) and a ``path``: "steps" (Network.train_step per batch) on every backend,
    "epoch" (the backend's whole-epoch call) where there is one, except where ``skip``."""
    import pytest
    pairs = ([(b, "steps") for b in BACKENDS]
             + [(b, "epoch") for b in EPOCH_PATH_BACKENDS if b in BACKENDS])
    return [pytest.param(b, path, id=f"{b}-{path}",
                         marks=[pytest.mark.gpu] if DEVICE[b] == "cuda" else [])
            for b, path in pairs if not skip(b, path)]


def on_path(monkeypatch, net, path: str) -> dict:
    """Set ``net``'s backend up to train on ``path`` and record what ran: returns lists of
    the return values of ``train_epoch``, ``sgd_weight_update`` and ``update`` calls."""
    be = net.backend
    if path == "steps":
        force_step_path(monkeypatch, be)
    calls = {name: spy(monkeypatch, be, name)
             for name in ("train_epoch", "sgd_weight_update", "update")}
    return calls


def assert_path_ran(calls: dict, path: str, folded_sgd: bool) -> None:
    """The fit ran on ``path``: every epoch in one ``train_epoch`` call, or step by step;
    step by step, plain SGD's update folded into the weight product (``sgd_weight_update``)
    exactly when ``folded_sgd``."""
    if path == "epoch":
        assert calls["train_epoch"] and all(calls["train_epoch"]), "the epoch path did not run"
    else:
        assert not any(calls["train_epoch"]), "an epoch ran in one call"
        assert bool(calls["sgd_weight_update"]) == folded_sgd, (
            f"sgd_weight_update ran {len(calls['sgd_weight_update'])} times")
        if not folded_sgd:
            assert calls["update"], "no optimizer update ran"


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
    """Make ``cupy`` (and ``cupyx``, ``cupy_backends``) the emulator for one test; numba
    stays as installed. Returns the fake module."""
    import backprop.backends as backends
    fake = fake_cupy()
    for name, module in fake.modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    installed = backends.is_installed
    monkeypatch.setattr(backends, "is_installed",
                        lambda name: name == "cupy" or installed(name))
    return fake


def assert_allocates_nothing(step, smallest_array: int = 128 * 1024) -> None:
    """Run ``step`` twice (workspaces made, caches warm), then three times under tracemalloc
    (which sees NumPy's allocations): its transient peak must stay below ``smallest_array``
    bytes (every array of the step is at least that large, so no array was allocated; NumPy's
    bounded ufunc buffers of a few KiB are all it may take) and it must keep < 4 KiB."""
    import tracemalloc
    step()
    step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < smallest_array, f"a step allocated {peak - base} bytes at once"
    assert current - base < 4096, f"steps kept {current - base} bytes"
