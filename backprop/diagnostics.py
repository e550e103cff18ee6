"""Diagnostics of the seeds' three common issues: vanishing gradients, exploding gradients and
dead ReLU neurons (plus saturated sigmoid/tanh units, the cause of the first), with the
seeds' remedies.

:func:`diagnose` (``net.diagnose(X, Y)``) runs one forward and one backward pass over (X, Y)
as one batch, without dropout, in a workspace and gradient arrays of its own (like
:meth:`backprop.network.Network.backward`): it changes no parameter, optimizer state,
gradient buffer or training workspace. Per layer l = 1..L it reports

================== ==========================================================================
grad_norm          ‖∂L/∂W_l‖ (Frobenius), L the batch-mean loss
bias_grad_norm     ‖∂L/∂b_l‖
delta_norm         ‖δ_l‖ (Frobenius over the batch), δ_l = ∂L/∂Z_l of the batch-mean loss
weight_norm        ‖W_l‖
update_ratio       ‖η ∂L/∂W_l‖ / ‖W_l‖: the size of one plain SGD step at ``learning_rate``
                   relative to the weights (cs231n's rule of thumb: about 1e-3 is healthy)
inactive_fraction  hidden relu, leaky_relu and elu layers: the fraction of units whose
                   pre-activation z <= 0 for every sample (a dead ReLU; leaky_relu and elu
                   units still pass a gradient there); None for other layers
saturated_fraction hidden sigmoid and tanh layers: the fraction of units whose σ'(z) is below
                   SATURATION_LEVEL (1%) of σ's largest slope for more than
                   SATURATED_SAMPLES (half) of the samples; None for other layers
================== ==========================================================================

The fractions are read from the layer's outputs a = σ(z) of the same pass (z <= 0 exactly
when a <= 0 for the relu family, whose σ is increasing with σ(0) = 0; σ'/max σ' = 4a(1 - a)
for sigmoid, 1 - a² for tanh), before a skip connection adds the layer's input.

Verdicts (thresholds are the module constants below; each message names the seeds' remedies):

- ``vanishing``: the largest ‖∂L/∂W_l‖ is at least VANISHING_FACTOR times layer 1's;
- ``exploding``: a gradient is not finite, or layer 1's ‖∂L/∂W‖ is at least EXPLODING_FACTOR
  times the smallest, or one SGD step would change some W_l by at least
  EXPLODING_UPDATE_RATIO times its norm;
- ``dead_relu``: a hidden relu layer with at least DEAD_FRACTION of its units inactive;
- ``saturation``: a hidden sigmoid/tanh layer with at least SATURATED_FRACTION of its units
  saturated.

The thresholds were set on networks built to have each problem and on healthy ones
(tests/test_diagnostics.py): a 20-layer sigmoid network shows a fall of over 10⁸, the
healthy networks there under 10¹ (gradient ratios) and under 10% dead or saturated units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .activations import Code

if TYPE_CHECKING:
    from .network import Network

#: vanishing: max_l ‖∂L/∂W_l‖ / ‖∂L/∂W_1‖ at or above this
VANISHING_FACTOR = 1e3
#: exploding: ‖∂L/∂W_1‖ / min_l ‖∂L/∂W_l‖ at or above this
EXPLODING_FACTOR = 1e3
#: exploding: ‖η ∂L/∂W_l‖ / ‖W_l‖ at or above this (one step as large as the weights)
EXPLODING_UPDATE_RATIO = 1.0
#: dead_relu: the fraction of a relu layer's units with z <= 0 for every sample
DEAD_FRACTION = 0.5
#: a unit is saturated on a sample when σ'(z) < SATURATION_LEVEL · max σ'
SATURATION_LEVEL = 0.01
#: ...and saturated when that holds for more than this fraction of the samples
SATURATED_SAMPLES = 0.5
#: saturation: the fraction of a sigmoid/tanh layer's units saturated
SATURATED_FRACTION = 0.5
#: rows of the probe batch of ``fit(diagnostics=True)``: one diagnosis of 32 rows measured at
#: 0.7-1.2% of an epoch of the digits network 64-128-64-10, batch 32, on numba (the default
#: CPU backend), 1.9% on numpy; 64 rows and more hit BLAS's threaded path on 2 busy cores,
#: 2-500x slower (benchmarks/diagnostics_cost.py, results/2vcpu-intel-xeon/diagnostics.md)
PROBE_SIZE = 32
#: ``fit(diagnostics=True)`` spends at most this share of its training time diagnosing (the
#: issue's budget, 2%), after the first epoch's diagnosis; see :class:`DiagnosisSchedule`.
#: ``math.inf`` diagnoses every epoch.
TIME_SHARE = 0.02



class DiagnosisSchedule:
    """Which epochs ``fit(diagnostics=True)`` diagnoses, so that diagnosing costs at most
    ``share`` (:data:`TIME_SHARE`) of the time spent training, measured.

    The fit's first epoch is always diagnosed; a later epoch is when the time spent
    diagnosing so far plus the last diagnosis' cost stays within ``share`` of the training
    time so far (the epochs' steps, that epoch's included): diagnosis_time + last_cost <=
    share · training_time. A diagnosis that costs c epochs' worth so comes every
    ⌈c / share⌉ epochs or so (every epoch when it costs at most 2% of one), and over a fit
    the diagnoses after the first cost at most ``share`` of the training time.
    """

    def __init__(self, share: float | None = None) -> None:
        self.share = TIME_SHARE if share is None else share
        self.training = 0.0        # seconds of training so far
        self.diagnosing = 0.0      # seconds of diagnosing so far
        self.last = None           # the last diagnosis' seconds (None: none yet)

    def due(self, epoch_seconds: float) -> bool:
        """Count an epoch's training time; True when its diagnosis fits the budget."""
        self.training += epoch_seconds
        return self.last is None or self.diagnosing + self.last <= self.share * self.training

    def spent(self, seconds: float) -> None:
        """Count a diagnosis' time."""
        self.diagnosing += seconds
        self.last = seconds


RELU_FAMILY = (Code.RELU, Code.LEAKY_RELU, Code.ELU)
SATURATING = (Code.SIGMOID, Code.TANH)

REMEDIES = {
    "vanishing": ("ReLU", "batch normalization", "residual connections",
                  "He/Xavier initialisation"),
    "exploding": ("gradient clipping (clip_norm, clip_value)", "a lower learning rate",
                  "careful initialisation", "batch normalization"),
    "dead_relu": ("Leaky ReLU or ELU", "a lower learning rate", "careful initialisation"),
    "saturation": ("ReLU", "batch normalization", "Xavier initialisation",
                   "inputs scaled to a unit range"),
}


class DiagnosticWarning(UserWarning):
    """A problem :func:`diagnose` found during ``fit(diagnostics=True)`` (once per kind)."""


@dataclass(frozen=True)
class LayerDiagnosis:
    """The measurements of one layer (see the module docstring)."""

    layer: int
    activation: str
    grad_norm: float
    bias_grad_norm: float
    delta_norm: float
    weight_norm: float
    update_ratio: float
    inactive_fraction: float | None
    saturated_fraction: float | None


@dataclass(frozen=True)
class Verdict:
    """A problem: ``kind`` (vanishing, exploding, dead_relu, saturation), the ``layer`` it is
    about (1-based; None for the whole network), the ``message`` and the seeds' ``remedies``."""

    kind: str
    layer: int | None
    message: str
    remedies: tuple[str, ...]

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found: ``layers`` (one :class:`LayerDiagnosis` per layer),
    ``verdicts`` (empty for a healthy network), the ``learning_rate`` of the update ratios
    and the number of ``samples``."""

    layers: tuple[LayerDiagnosis, ...]
    verdicts: tuple[Verdict, ...]
    learning_rate: float
    samples: int

    @property
    def healthy(self) -> bool:
        return not self.verdicts

    @property
    def grad_norms(self) -> list[float]:
        """‖∂L/∂W_l‖ for l = 1..L."""
        return [d.grad_norm for d in self.layers]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        rows = [f"{'layer':>5} {'activation':<10} {'|dL/dW|':>10} {'|delta|':>10} "
                f"{'update/W':>10} {'inactive':>8} {'saturated':>9}"]
        for d in self.layers:
            inactive = "" if d.inactive_fraction is None else f"{d.inactive_fraction:.0%}"
            saturated = "" if d.saturated_fraction is None else f"{d.saturated_fraction:.0%}"
            rows.append(f"{d.layer:>5} {d.activation:<10} {d.grad_norm:>10.3e} "
                        f"{d.delta_norm:>10.3e} {d.update_ratio:>10.3e} {inactive:>8} "
                        f"{saturated:>9}")
        rows += [str(v) for v in self.verdicts] or ["no problem found"]
        return "\n".join(rows)


def diagnose(net: "Network", X: Any, Y: Any, learning_rate: float = 0.01) -> Diagnosis:
    """The per-layer measurements and verdicts of ``net`` on (X, Y), taken as one batch
    (see the module docstring). X (N, n_0), Y as for :meth:`Network.fit`; ``learning_rate``
    (η of the update ratio, default 0.01) a positive finite number.

    Raises ValueError/TypeError for bad arguments (named) before any work (a single row
    with batch normalization among them, as :meth:`Network.backward`), RuntimeError while
    another thread trains the network. Changes nothing in the network.
    """
    from .validation import check_positive_float
    learning_rate = check_positive_float("learning_rate", learning_rate)
    with net._guard.call("diagnose"):
        X, Y = net._prepare(X, Y)
        net._check_batch_rows(X)
        return _diagnose(net, X, Y, learning_rate)


def _diagnose(net: "Network", X: Any, Y: Any, learning_rate: float,
              buffers: tuple[Any, Any] | None = None) -> Diagnosis:
    """:func:`diagnose` on device arrays already checked (``fit``'s probe batch), in the
    buffers from ``net._backward_buffers`` or new ones."""
    be = net.backend
    ws, _, grads = net._backward_pass(X, Y, buffers)
    host = be.to_numpy
    layers = []
    L = net.n_layers
    for l in range(L):
        act = net.activations[l]
        grad_norm = _norm(host(grads[l][0]))
        weight_norm = _norm(host(net.W[l]))
        inactive = saturated = None
        if l < L - 1 and (act.code in RELU_FAMILY or act.code in SATURATING):
            a = host(_activation_output(net, ws, l))
            if act.code in RELU_FAMILY:       # a <= 0 exactly when z <= 0
                inactive = float(np.mean(np.all(a <= 0, axis=0)))
            else:                              # σ'/max σ' from a
                a = a.astype(np.float64)
                saturated = _saturated(4.0 * a * (1.0 - a) if act.code == Code.SIGMOID
                                       else 1.0 - a * a)
        layers.append(LayerDiagnosis(
            layer=l + 1, activation=act.name, grad_norm=grad_norm,
            bias_grad_norm=_norm(host(grads[l][1])),
            delta_norm=_norm(host(ws.delta[l])),
            weight_norm=weight_norm, update_ratio=_ratio(learning_rate * grad_norm, weight_norm),
            inactive_fraction=inactive, saturated_fraction=saturated))
    return Diagnosis(tuple(layers), tuple(verdicts(layers, learning_rate)), learning_rate,
                     int(X.shape[0]))


def _activation_output(net: "Network", ws: Any, l: int) -> Any:
    """σ(z) of hidden layer l (0-based) as the pass left it in ``ws``: ``A_l``, or, where the
    layer has a skip connection (A_l = σ(z) + A_{l-1}), the workspace's ``H_l`` = σ(z). (With
    batch normalization z is the normalised pre-activation, the activation's input.)"""
    residual = getattr(net, "residual", None)
    return ws.H[l] if residual and residual[l] else ws.A[l]


def _saturated(slope: np.ndarray) -> float:
    """The fraction of units (columns) with σ'/max σ' below SATURATION_LEVEL on more than
    SATURATED_SAMPLES of the samples (rows)."""
    return float(np.mean(np.mean(slope < SATURATION_LEVEL, axis=0) > SATURATED_SAMPLES))


def _norm(x: np.ndarray) -> float:
    """‖x‖ (Frobenius) as a float: Σx² accumulated in x's dtype (one BLAS dot, no copy),
    again in float64 when that overflows (a float32 norm above ~1.8e19) or x is float16."""
    v = x.reshape(-1)
    if v.dtype in (np.float32, np.float64):
        s = float(np.dot(v, v))
        if math.isfinite(s) or not np.isfinite(v).all():
            return math.sqrt(s)
    v = v.astype(np.float64)
    return math.sqrt(float(np.dot(v, v)))


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 0.0 if a == 0 else math.inf


def _times(ratio: float) -> str:
    return "infinitely" if math.isinf(ratio) else f"{ratio:.1e}×"


def verdicts(layers: list[LayerDiagnosis], learning_rate: float) -> list[Verdict]:
    """The verdicts on a network's per-layer measurements (see the module docstring)."""
    found: list[Verdict] = []

    def add(kind: str, layer: int | None, problem: str) -> None:
        remedies = REMEDIES[kind]
        found.append(Verdict(kind, layer, f"{problem} — use {', '.join(remedies[:-1])} or "
                                          f"{remedies[-1]}", remedies))

    g = [d.grad_norm for d in layers]
    if not all(math.isfinite(x) for x in g):
        bad = next(d.layer for d in layers if not math.isfinite(d.grad_norm))
        add("exploding", bad, f"exploding gradients: ‖∂L/∂W‖ of layer {bad} is not finite")
    else:
        top = max(range(len(g)), key=lambda i: g[i])
        fall = _ratio(g[top], g[0])
        if top > 0 and g[top] > 0 and fall >= VANISHING_FACTOR:
            add("vanishing", None, f"vanishing gradients: ‖∂L/∂W‖ falls {_times(fall)} from "
                                   f"layer {top + 1} to layer 1")
        low = min(range(len(g)), key=lambda i: g[i])
        rise = _ratio(g[0], g[low])
        if low > 0 and g[0] > 0 and rise >= EXPLODING_FACTOR:
            add("exploding", None, f"exploding gradients: ‖∂L/∂W‖ grows {_times(rise)} from "
                                   f"layer {low + 1} to layer 1")
        else:
            worst = max(layers, key=lambda d: d.update_ratio)
            if worst.update_ratio >= EXPLODING_UPDATE_RATIO:
                add("exploding", worst.layer,
                    f"exploding gradients: one SGD step at learning rate {learning_rate:g} "
                    f"would change layer {worst.layer}'s weights by {worst.update_ratio:.1f}× "
                    "their norm")
    for d in layers:
        if (d.activation == "relu" and d.inactive_fraction is not None
                and d.inactive_fraction >= DEAD_FRACTION):
            add("dead_relu", d.layer, f"dead ReLUs: {d.inactive_fraction:.0%} of layer "
                                      f"{d.layer}'s units never fire")
        if d.saturated_fraction is not None and d.saturated_fraction >= SATURATED_FRACTION:
            add("saturation", d.layer, f"saturated units: {d.saturated_fraction:.0%} of layer "
                                       f"{d.layer}'s {d.activation} units have σ' below "
                                       f"{SATURATION_LEVEL:.0%} of its maximum for most samples")
    return found
