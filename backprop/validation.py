"""Checks of user input: each error names the argument and what was expected.

Every check runs before anything is written, so bad input leaves a network as it was.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .activations import Activation, Code
from .backends import is_cuda_array, to_numpy
from .backends.base import Backend
from .losses import BINARY_CROSS_ENTROPY, CROSS_ENTROPY, Loss

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def per_layer(spec: Any) -> list[Any] | None:
    """The entries of a per-layer option given as a sequence (list, tuple, range, a 1-d
    NumPy array, any ``collections.abc.Sequence``), else None (a single value for every
    layer: a bool, a number, a name, an Activation, a callable, a 0-d array). Strings and
    bytes are single values. ValueError for an array of more than one dimension."""
    if isinstance(spec, np.ndarray):
        if spec.ndim == 0:
            return None
        if spec.ndim > 1:
            raise ValueError(f"expected one entry per layer (a 1-d sequence), got an array of "
                             f"shape {spec.shape}")
        return spec.tolist()          # NumPy scalars as Python bool, float, str
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence):
        return None
    return list(spec)


def check_dtype(dtype: Any) -> np.dtype:
    """float32 or float64, from a name, a NumPy type or a dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected 'float32' or 'float64', got {dt.name!r}")
    return dt


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def check_nonnegative_float(name: str, value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def check_architecture(layer_sizes: list[int], activations: list[Activation], loss: Loss,
                       dtype: np.dtype = np.dtype(np.float64)) -> None:
    """Refuse a network that cannot be trained exactly: a loss paired with an output it cannot
    be computed from, a softmax over a single unit (always 1, so its layer never learns), an
    activation parameter α outside the range of ``dtype`` (it would be ±Inf)."""
    if activations[-1].code == Code.SOFTMAX and layer_sizes[-1] == 1:
        raise ValueError(
            "activations: a softmax over a single output unit always outputs 1 and cannot "
            "learn; for two classes use one sigmoid output with loss='binary_cross_entropy' "
            "(or a softmax over two output units)")
    for l, (act, n) in enumerate(zip(activations[:-1], layer_sizes[1:-1])):
        if act.code == Code.SOFTMAX and n == 1:
            raise ValueError(f"activations: a softmax over the single unit of hidden layer "
                             f"{l + 1} always outputs 1, so nothing before it can learn; widen "
                             "the layer or use another activation")
    limit = float(np.finfo(dtype).max)
    for l, act in enumerate(activations):
        if not abs(act.alpha) <= limit:
            raise ValueError(f"activations: layer {l + 1}'s {act} has alpha outside the range "
                             f"of {np.dtype(dtype).name} (largest magnitude {limit:.4g})")
    loss.check_output(activations[-1])


def _as_numeric(backend: Backend, x: Any, name: str) -> Any:
    """``x`` as an array of the backend (host input stays on the host until cast).

    A pandas object converts with its own ``to_numpy(dtype=float, na_value=nan)`` (nullable
    and extension dtypes included; NA becomes NaN, refused later); an object array of numbers
    converts to float64.
    """
    if not backend.is_native(x):
        if is_cuda_array(x):            # foreign CUDA array: used there, or copied to the host
            x = backend.asarray(x) if backend.device.startswith("cuda") else to_numpy(x)
        else:
            try:
                x = _host_array(x)
            except (TypeError, ValueError) as e:
                raise TypeError(f"{name}: expected a numeric array, got {type(x).__name__}: {e}") from None
    kind = np.dtype(x.dtype).kind
    if kind == "O":
        try:
            x = x.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected a numeric array, got dtype object with a "
                            f"non-number: {e}") from None
        kind = "f"
    if kind not in "biuf":
        raise TypeError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    return x


def _host_array(x: Any) -> np.ndarray:
    """A NumPy array from a host array-like; pandas' ``to_numpy`` where it takes NA."""
    if not isinstance(x, np.ndarray) and hasattr(x, "to_numpy"):
        try:
            return np.asarray(x.to_numpy(dtype=np.float64, na_value=np.nan))
        except TypeError:               # a to_numpy without pandas' arguments (polars, ...)
            pass
    return np.asarray(x)


def to_dtype(backend: Backend, x: Any, dtype: np.dtype, name: str) -> Any:
    """``x`` cast to ``dtype`` on the device; ValueError when it holds NaN or Inf, or values
    outside the range of ``dtype`` (1e39 in float32), which the cast would make Inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = backend.asarray(x, dtype)
    if not backend.all_finite(out):
        source_finite = (bool(np.isfinite(x).all()) if isinstance(x, np.ndarray)
                         else np.dtype(x.dtype).kind != "f" or backend.all_finite(x))
        if not source_finite:
            raise ValueError(f"{name}: contains NaN or Inf")
        raise ValueError(f"{name}: has values outside the range of {np.dtype(dtype).name} "
                         f"(largest magnitude {np.finfo(dtype).max:.4g}); scale the data or "
                         "use dtype='float64'")
    return out


def check_X(backend: Backend, X: Any, n_input: int, dtype: np.dtype, name: str = "X",
            empty: bool = False) -> Any:
    """X as a C-contiguous (n_samples, n_input) array of ``dtype`` on the backend's device.
    ``empty``: 0 samples are accepted (one rank's part of a sharded data set, whose global
    size :class:`backprop.distributed.Replica` checks); the feature count is checked still."""
    X = _as_numeric(backend, X, name)
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (n_samples, {n_input}), "
                         f"got shape {tuple(X.shape)}")
    if X.shape[1] != n_input:
        raise ValueError(f"{name}: expected {n_input} features per sample (the network's "
                         f"input layer), got shape {tuple(X.shape)}")
    if X.shape[0] == 0 and not empty:
        raise ValueError(f"{name}: expected at least one sample, got shape {tuple(X.shape)}")
    return to_dtype(backend, X, dtype, name)


def check_Y(backend: Backend, Y: Any, n_samples: int, n_output: int, loss: Loss,
            dtype: np.dtype, name: str = "Y", x_name: str = "X", empty: bool = False) -> Any:
    """Targets as a (n_samples, n_output) array of ``dtype`` on the device.

    cross_entropy takes one-hot (or probability) rows, or integer class labels of shape
    (n_samples,) that become one-hot rows. With one output unit, a 1-D Y is a column.
    ``empty``: 0 samples are accepted (as :func:`check_X`'s); the shape is checked still.
    """
    Y = _as_numeric(backend, Y, name)
    xp = backend.xp
    if Y.ndim == 1 and loss.code == CROSS_ENTROPY:
        if len(Y) != n_samples:
            raise ValueError(f"{name}: has {len(Y)} samples but {x_name} has {n_samples}")
        if len(Y) == 0:
            if not empty:
                raise ValueError(f"{name}: expected at least one sample")
            return backend.zeros((0, n_output), dtype)
        Y = backend.asarray(Y)                   # labels on the device before any xp call
        if not backend.all_finite(Y):
            raise ValueError(f"{name}: contains NaN or Inf")
        if np.dtype(Y.dtype).kind == "f" and not bool((Y == xp.floor(Y)).all()):
            raise ValueError(f"{name}: class labels must be integers")
        low, high = int(Y.min()), int(Y.max())
        if low < 0 or high >= n_output:
            raise ValueError(f"{name}: class labels must lie in [0, {n_output - 1}] (the "
                             f"network has {n_output} outputs), got labels in [{low}, {high}]")
        one_hot = backend.zeros((n_samples, n_output), dtype)
        one_hot[xp.arange(n_samples), Y.astype(np.int64)] = 1
        return one_hot
    if Y.ndim == 1 and n_output == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2 or Y.shape[1] != n_output:
        labels = " or integer class labels of shape (n_samples,)" if loss.code == CROSS_ENTROPY else ""
        raise ValueError(f"{name}: expected shape (n_samples, {n_output}){labels}, "
                         f"got shape {tuple(Y.shape)}")
    if Y.shape[0] != n_samples:
        raise ValueError(f"{name}: has {Y.shape[0]} samples but {x_name} has {n_samples}")
    if Y.shape[0] == 0 and not empty:
        raise ValueError(f"{name}: expected at least one sample")
    Y = to_dtype(backend, Y, dtype, name)
    if loss.code in (BINARY_CROSS_ENTROPY, CROSS_ENTROPY):
        if bool((Y < 0).any()) or bool((Y > 1).any()):
            raise ValueError(f"{name}: {loss.name} targets must lie in [0, 1]")
    if loss.code == CROSS_ENTROPY:
        tol = 1e-3 if dtype == np.float32 else 1e-9
        if bool((xp.abs(Y.sum(axis=1) - 1) > tol).any()):
            raise ValueError(f"{name}: cross_entropy targets must be one-hot rows (or "
                             "probabilities summing to 1 per row), or integer class labels")
    return Y


def check_sample_weight(backend: Backend, sample_weight: Any, n_samples: int, dtype: np.dtype,
                        name: str = "sample_weight", part: bool = False) -> Any:
    """Per-sample weights as a C-contiguous (n_samples,) array of ``dtype`` on the device.

    Numeric (pandas Series and nullable dtypes included), 1-D, one weight per sample,
    finite, >= 0, not all zero, their sum finite (scikit-learn's ``_check_sample_weight``
    asks the same, less the last two: a weighted mean needs Σ w > 0). ``part``: the weights
    are one rank's part of a data set (``fit(distributed=True, shard=True)``), which may all
    be 0; the sum over the parts is checked by :class:`backprop.distributed.Replica`.
    """
    w = _as_numeric(backend, sample_weight, name)
    if w.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of shape ({n_samples},), one weight "
                         f"per sample, got shape {tuple(w.shape)}")
    if w.shape[0] != n_samples:
        raise ValueError(f"{name}: has {w.shape[0]} weights but X has {n_samples} samples")
    w = to_dtype(backend, w, dtype, name)
    if bool((w < 0).any()):
        raise ValueError(f"{name}: weights must be >= 0, got a minimum of {float(w.min())!r}")
    total = float(backend.to_numpy(w.sum(dtype=np.float64)))
    if not total > 0 and not part:
        raise ValueError(f"{name}: every weight is 0 (in {np.dtype(dtype).name}); at least one "
                         "sample needs a positive weight")
    if not math.isfinite(total):
        raise ValueError(f"{name}: the weights sum to {total} in float64; scale them down")
    return w
