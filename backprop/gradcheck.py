"""A gradient check as a public tool: a network's own ``backward`` against float64 central
differences, per layer and parameter kind, like ``torch.autograd.gradcheck``.

The analytic gradients are those of :meth:`Network.backward` on the network itself (its
backend, device and dtype: a float32 network is checked in float32). The numeric ones are
computed on a float64 copy of the network on the NumPy backend, so they are exact to about
``eps²`` (truncation) plus ``1e-16 / eps`` (rounding) whatever the network's dtype:
``(L(p + eps) - L(p - eps)) / (2 eps)`` for each checked element p, L the mean loss of (X, Y)
as one training-mode batch without dropout (batch normalization with the batch's own
statistics; :meth:`Network.backward` differentiates exactly that loss). The network is not
changed.

Each kind of each layer (``W``, ``b``, and batch normalization's ``gamma``, ``beta``) is
compared elementwise, as ``torch.allclose``/``numpy.isclose`` do, with an absolute tolerance
scaled by the size of that layer's gradients: element i of layer l passes when

    |g_i - n_i| <= max(atol, rtol · (s_l + |n_i|)),   s_l = max |n_j| over the layer's
    elements j of every kind it has (its frozen bias aside),

g the analytic, n the numeric gradient. The entry's ``relative_error`` is
``max_i |g_i - n_i| / max(s_l + |n_i|, atol / rtol)`` (it passes when at most ``rtol``) and
``absolute_error`` ``max_i |g_i - n_i|``. A plain relative error ``|g - n| / |n|`` is rounding
noise wherever a gradient is ~0 next to large ones in the same layer (float32 backward sums
B rows of δ: its error is ~1e-7 of the layer's terms, not of the small result); PyTorch's
``gradcheck`` has the same ``atol + rtol·|n|`` form (``torch.allclose``), and scaling atol by
the layer makes one default serve layers of any size. The bias of a batch-normalized layer is
*frozen* (the normalisation subtracts it out: its gradient is 0 in exact arithmetic and
training never moves it): its entry has ``frozen=True`` and passes when both |g_i| and |n_i|
are within the tolerance of 0 (``max(|g_i|, |n_i|)`` takes the place of ``|g_i - n_i|``).
Differences are meaningless where the loss is not differentiable within ``eps`` of the
parameters (a ReLU unit with z within ``eps`` of 0).

Cost: 2 forward passes of the float64 copy per element checked; by default at most
:data:`MAX_ELEMENTS` elements of each tensor, drawn without replacement with ``seed`` (the
same elements on every call), so a default call takes seconds on any network; a wrong
formula touches most of a tensor's elements and is found in a sample. ``max_elements=None``
checks all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .backends import to_numpy

if TYPE_CHECKING:
    from .network import Network

#: default (rtol, atol) by the network's dtype. Measured (tests/test_gradcheck.py networks):
#: float64 backward within ~1e-9 relative of the differences, float32 within ~1e-6
#: (their rounding noise ~1e-10 absolute: eps = 1e-6, 1e-16 / eps)
TOLERANCES = {"float64": (1e-6, 1e-9), "float32": (1e-3, 1e-6)}

#: default ``max_elements``: elements of each tensor checked (our choice: a 64-128-128-10
#: network is checked in about a second where all its 27 000 elements took minutes)
MAX_ELEMENTS = 100


@dataclass
class GradcheckEntry:
    """One layer's (1-based) parameter kind: its errors and verdict."""

    layer: int
    kind: str
    relative_error: float
    absolute_error: float
    checked: int          # elements compared
    passed: bool
    frozen: bool = False  # the bias of a batch-normalized layer: its gradient must be ~0


@dataclass
class GradcheckReport:
    """The result of :func:`gradcheck`: truthy when every entry passed."""

    entries: list[GradcheckEntry]
    rtol: float
    atol: float
    eps: float
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = all(e.passed for e in self.entries)

    @property
    def max_relative_error(self) -> float:
        """The worst relative error over every layer and kind."""
        return max((e.relative_error for e in self.entries), default=0.0)

    @property
    def worst(self) -> GradcheckEntry | None:
        """The entry with the largest relative error among those that failed, else overall."""
        pool = [e for e in self.entries if not e.passed] or self.entries
        return max(pool, key=lambda e: e.relative_error, default=None)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [f"gradcheck {'passed' if self.passed else 'FAILED'}: worst relative error "
                 f"{self.max_relative_error:.3g} (rtol {self.rtol:g}, atol {self.atol:g}, "
                 f"eps {self.eps:g})",
                 f"{'layer':>5}  {'kind':<6} {'relative':>10} {'absolute':>10} {'checked':>8}"]
        for e in self.entries:
            lines.append(f"{e.layer:>5}  {e.kind:<6} {e.relative_error:>10.3g} "
                         f"{e.absolute_error:>10.3g} {e.checked:>8}  "
                         f"{'ok' if e.passed else 'FAIL'}"
                         f"{'  (frozen: batch-normalized)' if e.frozen else ''}")
        return "\n".join(lines)


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` with ``raise_exception=True`` when a check fails."""


def gradcheck(net: "Network", X: Any, Y: Any, *, eps: float = 1e-6, rtol: float | None = None,
              atol: float | None = None, max_elements: int | None = MAX_ELEMENTS, seed: int = 0,
              raise_exception: bool = False) -> GradcheckReport:
    """Compare ``net.backward(X, Y)`` with float64 central differences (module docstring).

    Parameters
    ----------
    net : Network
        Any backend, device and dtype; with dropout (checked without it), batch
        normalization (γ and β checked too) and residual connections.
    X, Y : arrays (n_samples, n_0), (n_samples, n_L)
        One batch, validated as :meth:`Network.backward` does (n_samples >= 2 with batch
        normalization, whose batch variance needs two rows to depend on the parameters).
    eps : float
        The difference step, default 1e-6 (float64 differences: truncation ~eps², rounding
        ~1e-16/eps).
    rtol, atol : float, optional
        rtol > 0, atol >= 0; default by the network's dtype, :data:`TOLERANCES`:
        (1e-6, 1e-9) for float64, (1e-3, 1e-6) for float32. Element i of layer l passes when
        ``|g_i - n_i| <= max(atol, rtol · (s_l + |n_i|))``, s_l the layer's largest numeric
        gradient (module docstring).
    max_elements : int or None
        Check at most this many elements of each array (drawn with ``seed``, the same on
        every call); default :data:`MAX_ELEMENTS` (100), None for all. 2 forward passes of
        the float64 copy per element.
    raise_exception : bool
        Raise :class:`GradcheckError` naming the worst layer and kind when a check fails.

    Returns
    -------
    GradcheckReport
        ``passed``, ``max_relative_error``, ``worst`` and one :class:`GradcheckEntry` per
        layer and kind, in the order W1, b1, ..., WL, bL, gamma1, beta1, ...

    Raises
    ------
    ValueError
        A bad ``eps``, ``rtol``, ``atol`` or ``max_elements``; X or Y as ``backward`` refuses
        them; fewer than two samples with batch normalization. Raised before any work.
    """
    from .network import Network
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a backprop Network, got {type(net).__name__}")
    default_rtol, default_atol = TOLERANCES[net.dtype.name]
    rtol = default_rtol if rtol is None else _positive("rtol", rtol)
    atol = default_atol if atol is None else _positive("atol", atol, zero=True)
    eps = _positive("eps", eps)
    if max_elements is not None and (isinstance(max_elements, bool)
                                     or not isinstance(max_elements, int) or max_elements < 1):
        raise ValueError(f"max_elements: expected None or a positive integer, got "
                         f"{max_elements!r}")
    Xd, Yd = net._prepare(X, Y)
    if any(net.batch_norm) and Xd.shape[0] < 2:
        raise ValueError("X: batch normalization needs at least 2 samples for a gradient "
                         f"check, got {Xd.shape[0]}")
    grads = net.backward(Xd, Yd)
    copy = _float64_copy(net)
    X64 = np.asarray(to_numpy(Xd), np.float64)
    Y64 = np.asarray(to_numpy(Yd), np.float64)
    loss = _loss_function(copy, X64, Y64)
    rng = np.random.default_rng(seed)
    checks = [(l + 1, kind, p, g) for l, (W, b, (dW, db)) in
              enumerate(zip(copy.W, copy.b, grads)) for kind, p, g in (("W", W, dW), ("b", b, db))]
    checks += [(l + 1, kind, p, g) for l, pair in enumerate(grads.batch_norm) if pair is not None
               for kind, p, g in (("gamma", copy.gamma[l], pair[0]),
                                  ("beta", copy.beta[l], pair[1]))]
    frozen = {(l + 1, "b") for l, on in enumerate(net.batch_norm) if on}
    compared = []
    for layer, kind, p, g in checks:
        analytic = np.asarray(to_numpy(g), np.float64).ravel()
        flat = p.reshape(-1)                       # a view: p is C-contiguous
        index = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            index = np.sort(rng.choice(flat.size, max_elements, replace=False))
        numeric = np.empty(index.size)
        for k, i in enumerate(index):
            saved = flat[i]
            flat[i] = saved + eps
            up = loss()
            flat[i] = saved - eps
            down = loss()
            flat[i] = saved
            numeric[k] = (up - down) / (2 * eps)
        compared.append((layer, kind, analytic[index], numeric))
    scale: dict[int, float] = {}                   # s_l: the layer's largest numeric gradient
    for layer, kind, _, numeric in compared:
        if (layer, kind) not in frozen and numeric.size:
            scale[layer] = max(scale.get(layer, 0.0), float(np.abs(numeric).max()))
    entries = []
    for layer, kind, a, numeric in compared:
        is_frozen = (layer, kind) in frozen
        error = (np.maximum(np.abs(a), np.abs(numeric)) if is_frozen
                 else np.abs(a - numeric))
        bound = np.maximum(scale.get(layer, 0.0) + (0.0 if is_frozen else np.abs(numeric)),
                           atol / rtol)
        relative = float((error / bound).max()) if error.size else 0.0
        entries.append(GradcheckEntry(layer, kind, relative,
                                      float(error.max()) if error.size else 0.0,
                                      int(a.size), relative <= rtol, is_frozen))
    report = GradcheckReport(entries, rtol, atol, eps)
    if raise_exception and not report.passed:
        w = report.worst
        raise GradcheckError(f"gradcheck: {w.kind}{w.layer} has relative error "
                             f"{w.relative_error:.3g} (absolute {w.absolute_error:.3g}) against "
                             f"float64 central differences\n{report}")
    return report


def _positive(name: str, value: Any, zero: bool = False) -> float:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and np.isfinite(value) and (value >= 0 if zero else value > 0))
    if not ok:
        raise ValueError(f"{name}: expected a finite number {'>= 0' if zero else '> 0'}, "
                         f"got {value!r}")
    return float(value)


def _float64_copy(net: "Network") -> "Network":
    """The network as float64 on the NumPy backend: same architecture, parameters and batch
    normalization (dropout rates kept; the checked loss never applies them)."""
    from .network import Network
    copy = Network(net.layer_sizes, net.activations, net.loss_function.name, backend="numpy",
                   dtype="float64", dropout=net.dropout, batch_norm=net.batch_norm,
                   residual=net.residual, seed=0)
    copy.set_parameters(net.get_parameters())
    for l, bn in enumerate(net.get_batch_norm()):
        if bn is not None:
            for name in ("gamma", "beta", "running_mean", "running_var"):
                getattr(copy, name)[l][...] = bn[name]
    return copy


def _loss_function(copy: "Network", X: np.ndarray, Y: np.ndarray) -> Any:
    """L(): the training-mode batch loss of the float64 copy at its current parameters, in a
    workspace made once."""
    from .network import Workspace
    ws = Workspace(copy.backend, copy.layer_sizes, copy.dtype, X.shape[0],
                   [0.0] * len(copy.dropout), train=False, batch_norm=copy.batch_norm,
                   residual=copy.residual)

    def loss() -> float:
        copy._forward(ws, X, train=False, batch_stats=True)
        ws.total[0] = 0.0
        copy.backend.loss(ws.A[-1], ws.Z, Y, copy.activations[-1], copy.loss_function, ws.total)
        return float(ws.total[0]) / X.shape[0]
    return loss
