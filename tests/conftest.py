"""One suite, every backend: the ``backend`` fixture runs a test on each backend available here.

A backend whose package or hardware is absent is skipped with a reason that says which.
Results are compared on the host with dtype-aware tolerances (:func:`support.assert_close`).
"""

from __future__ import annotations

import pytest
from support import DEVICE, unavailable

from backprop.backends import BACKENDS


@pytest.fixture(params=[pytest.param(n, marks=[pytest.mark.gpu] if DEVICE[n] == "cuda" else [])
                        for n in BACKENDS])
def backend(request) -> str:
    """The name of each backend in turn."""
    reason = unavailable(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request) -> str:
    return request.param
