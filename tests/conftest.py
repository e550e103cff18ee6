"""One suite, every backend: the ``backend`` fixture runs a test on each backend available here.

The cupy backend runs on a CUDA device when CuPy and one are present, and otherwise on the CPU
emulator of tests/emulator/ (a stand-in for CuPy that refuses what CuPy refuses, running
kernels/backprop.cu compiled with g++), so every network-level test runs for CUDA in CI too;
with the environment variable BACKPROP_REQUIRE_GPU=1 (ci/gpu.sh) a missing GPU is a failure.
Any other backend whose package or hardware is absent is skipped with a reason that says which.
Results are compared on the host with dtype-aware tolerances (:func:`support.assert_close`).
"""

from __future__ import annotations

import pytest
from support import DEVICE, REQUIRE_GPU, fake_cupy, unavailable, use_emulator

from backprop.backends import BACKENDS


@pytest.fixture(params=[pytest.param(n, marks=[pytest.mark.gpu] if DEVICE[n] == "cuda" else [])
                        for n in BACKENDS])
def backend(request, monkeypatch) -> str:
    """The name of each backend in turn (cupy: on the emulator when no GPU is usable)."""
    reason = unavailable(request.param)
    if reason and request.param == "cupy":
        if REQUIRE_GPU:
            pytest.fail(f"BACKPROP_REQUIRE_GPU is set: {reason}")
        if fake_cupy().compiler() is None:
            pytest.skip(f"{reason}; and g++, which the CUDA emulator needs, is absent")
        use_emulator(monkeypatch)
        return request.param
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request) -> str:
    return request.param
