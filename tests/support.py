"""Helpers of the test suite: which backends can run here, networks on them, tolerances.

(A module of its own, not conftest.py: benchmarks/ has a conftest too, and both would be
imported under the one name ``conftest``.)
"""

from __future__ import annotations

import numpy as np

from backprop import Network
from backprop.backends import BACKENDS, get_backend, is_installed

DEVICE = {name: spec[2] for name, spec in BACKENDS.items()}   # backend -> device kind
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
