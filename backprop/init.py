"""Weight initialisation.

Every scheme draws a weight matrix W of shape (n_out, n_in) on the host, in float64, from a
NumPy ``Generator``; biases start at zero. The network casts and moves the result, so the same
seed gives the same parameters on every device and backend.

================ ====================================================
name             W ~
================ ====================================================
he, he_normal    N(0, 2 / n_in)            (the seeds' random_normal(0, √(2/n_in)))
he_uniform       U(-√(6 / n_in), √(6 / n_in))
xavier, glorot,  N(0, 2 / (n_in + n_out))
xavier_normal,
glorot_normal
xavier_uniform,  U(-√(6 / (n_in + n_out)), √(6 / (n_in + n_out)))
glorot_uniform
================ ====================================================
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Initializer = Callable[[np.random.Generator, int, int], np.ndarray]


def he_normal(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    return rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_out, n_in))


def he_uniform(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    limit = np.sqrt(6.0 / n_in)
    return rng.uniform(-limit, limit, size=(n_out, n_in))


def xavier_normal(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    return rng.normal(0.0, np.sqrt(2.0 / (n_in + n_out)), size=(n_out, n_in))


def xavier_uniform(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_out, n_in))


INITIALIZERS: dict[str, Initializer] = {
    "he": he_normal, "he_normal": he_normal, "he_uniform": he_uniform,
    "xavier": xavier_normal, "xavier_normal": xavier_normal, "xavier_uniform": xavier_uniform,
    "glorot": xavier_normal, "glorot_normal": xavier_normal, "glorot_uniform": xavier_uniform,
}


def get(spec: str | Initializer) -> Initializer:
    """The initializer for a name from :data:`INITIALIZERS`, or a callable
    ``(rng, n_out, n_in) -> array of shape (n_out, n_in)``."""
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec in INITIALIZERS:
        return INITIALIZERS[spec]
    raise ValueError(f"init: unknown initializer {spec!r}; expected one of "
                     f"{sorted(INITIALIZERS)} or a callable (rng, n_out, n_in) -> array")
