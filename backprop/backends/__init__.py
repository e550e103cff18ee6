"""Backends by device: ``numpy`` and ``numba`` on ``cpu``; ``cupy`` on ``cuda``/``cuda:N``.

Numba and CuPy are imported only when their backend is asked for, so ``import backprop`` needs
NumPy alone. An unavailable device or backend is an error that says what is missing; there is
never a silent switch to another device.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .base import Backend

#: backend name -> (module, class name, device kind)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "numpy": ("backprop.backends.numpy", "NumPyBackend", "cpu"),
    "numba": ("backprop.backends.numba", "NumbaBackend", "cpu"),
    "cupy": ("backprop.backends.cupy", "CuPyBackend", "cuda"),
}

_PACKAGES = {"numba": "numba", "cupy": "cupy"}
_EXTRAS = {"numba": "numba", "cupy": "cuda"}


def parse_device(device: Any) -> tuple[str, str]:
    """``(kind, canonical name)`` for "cpu", "cuda" or "cuda:N"."""
    if isinstance(device, str):
        if device == "cpu":
            return "cpu", "cpu"
        if device == "cuda":
            return "cuda", "cuda:0"
        if device.startswith("cuda:") and device[5:].isdigit():
            return "cuda", f"cuda:{int(device[5:])}"
    raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def is_installed(backend: str) -> bool:
    """True when the package a backend needs can be imported (NumPy's always can)."""
    package = _PACKAGES.get(backend)
    return package is None or importlib.util.find_spec(package) is not None


def default_backend(kind: str) -> str:
    """The backend used when none is named: ``cupy`` on cuda; on cpu ``numba`` when it is
    installed, else ``numpy``. Numba trained and inferred at least as fast as NumPy at every
    size measured (64-32-10, 784-256-128-10, 1024³-10; see
    benchmarks/results/numba-vs-peers-2vcpu-zen2.md)."""
    if kind == "cuda":
        return "cupy"
    return "numba" if is_installed("numba") else "numpy"


def resolve_backend(device: Any = "cpu", backend: str | None = None) -> tuple[str, str]:
    """``(backend name, canonical device)`` for a device and an optional backend name,
    validated (nothing is imported or created)."""
    kind, name = parse_device(device)
    if backend is None:
        backend = default_backend(kind)
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown backend {backend!r}; expected one of {sorted(BACKENDS)}")
    backend_kind = BACKENDS[backend][2]
    if backend_kind != kind:
        choices = sorted(b for b, spec in BACKENDS.items() if spec[2] == kind)
        raise ValueError(f"backend: {backend!r} runs on {backend_kind}, not on device {device!r}; "
                         f"for {kind} use one of {choices}")
    return backend, name


def get_backend(device: Any = "cpu", backend: str | None = None) -> Backend:
    """A new backend instance for a device and an optional backend name.

    Every :class:`~backprop.network.Network` owns its own instance, with the scratch buffers
    and random generator it mutates, so networks in different threads share nothing mutable.
    Creating one is cheap: what is per device and read-only (Numba's compiled functions,
    CuPy's compiled module) is loaded once per process and shared.
    """
    backend, name = resolve_backend(device, backend)
    if not is_installed(backend):
        raise ImportError(
            f"backend {backend!r} needs the {_PACKAGES[backend]!r} package, which is not "
            f"installed: pip install 'backprop[{_EXTRAS[backend]}]'")
    module_name, class_name, _ = BACKENDS[backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(name)


def is_cuda_array(x: Any) -> bool:
    """True when ``x`` lives in CUDA memory: a DLPack producer on a CUDA device (PyTorch,
    JAX, CuPy: kDLCUDA = 2, managed = 13) or an object with ``__cuda_array_interface__``
    (Numba, CuPy, PyTorch)."""
    if hasattr(x, "__dlpack_device__"):
        try:
            if int(x.__dlpack_device__()[0]) in (2, 13):
                return True
        except (TypeError, ValueError, IndexError):
            pass
    return hasattr(x, "__cuda_array_interface__")


def to_numpy(x: Any) -> Any:
    """A NumPy array with the values of ``x``: an array of any backend (NumPy, CuPy), a CUDA
    array of another library (copied through CuPy: DLPack first, else
    ``__cuda_array_interface__``), or anything with ``__array__``.

    Raises ImportError for a CUDA array when CuPy is not installed."""
    import numpy as np
    if hasattr(x, "get") and hasattr(x, "__cuda_array_interface__"):   # CuPy
        return x.get()
    if is_cuda_array(x):
        try:
            import cupy
        except ImportError:
            raise ImportError(f"copying a CUDA array ({type(x).__name__}) to the host needs "
                              "CuPy: pip install 'backprop[cuda]'") from None
        on_device = cupy.from_dlpack(x) if hasattr(x, "__dlpack__") else cupy.asarray(x)
        return cupy.asnumpy(on_device)
    return np.asarray(x)


def available_backends() -> list[str]:
    """Names of the backends usable here (``cupy`` only with a CUDA device present)."""
    names = []
    for backend, (_, _, kind) in BACKENDS.items():
        try:
            get_backend("cuda" if kind == "cuda" else "cpu", backend)
        except (ImportError, RuntimeError):
            continue
        names.append(backend)
    return names
