"""Optimizers: the state they keep, and one backend ``update`` call per parameter.

With g the gradient (times the clipping factor, then clipped elementwise to [-c, c] when
``clip_value`` c is set, plus the regularization terms ``l1 · sign(W) + 2 · l2 · W`` for
weights), and η the learning rate:

============== =======================================================================
SGD            p ← p - η g
Momentum       v ← μ v + g;  p ← p - η v          (Nesterov: p ← p - η (g + μ v))
RMSProp        s ← ρ s + (1 - ρ) g²;  p ← p - η g / (√s + ε)
Adam           m ← β₁ m + (1 - β₁) g;  v ← β₂ v + (1 - β₂) g²
               p ← p - η (m / (1 - β₁ᵗ)) / (√(v / (1 - β₂ᵗ)) + ε)
AdamW          Adam, after the decoupled decay p ← p - η λ p
============== =======================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SGD_KIND, MOMENTUM_KIND, RMSPROP_KIND, ADAM_KIND = range(4)


@dataclass(frozen=True)
class UpdateRule:
    """The scalars one ``Backend.update`` call needs (see the module docstring).

    ``grad_scale`` multiplies the gradient first (clipping by global norm); it is a float, or
    a one-element array on the backend's device when the factor was computed there. Then,
    when ``clip_value`` c > 0, each component is clipped to [-c, c] (0: no clipping; NaN
    stays NaN). The penalty terms are added after both.
    """

    kind: int
    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999          # also RMSProp's ρ
    eps: float = 1e-8
    bias_correction1: float = 1.0  # 1 - β₁ᵗ
    bias_correction2: float = 1.0  # 1 - β₂ᵗ
    weight_decay: float = 0.0      # decoupled decay (AdamW)
    l1: float = 0.0
    l2: float = 0.0
    grad_scale: Any = 1.0
    clip_value: float = 0.0


def _check_unit(name: str, value: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (
        0 < value < 1 if low_open else 0 <= value < 1)
    if not ok:
        bound = "0 < x < 1" if low_open else "0 <= x < 1"
        raise ValueError(f"{name} must be a number with {bound}, got {value!r}")
    return float(value)


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Optimizer:
    """Base class: keeps per-parameter state and builds the :class:`UpdateRule` of a step."""

    kind: int = SGD_KIND
    n_state: int = 0   # state buffers per parameter
    #: the names of those buffers (``state[i][k]`` is buffer ``state_names[k]`` of parameter i)
    state_names: tuple[str, ...] = ()
    name: str = "sgd"

    def __init__(self) -> None:
        self.t = 0                                   # steps taken
        self.state: list[tuple[Any, ...]] = []       # per parameter, in the order W1, b1, W2, ...

    def _rule(self, learning_rate: float, **kw: Any) -> UpdateRule:
        return UpdateRule(self.kind, learning_rate, **kw)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this optimizer: ``OPTIMIZERS[name](**h)``."""
        return {}

    def reset(self, backend: Any, params: list[Any]) -> None:
        """Allocate zeroed state on ``backend`` for ``params`` (flat list of arrays)."""
        self.t = 0
        self.state = [tuple(backend.zeros(p.shape, p.dtype) for _ in range(self.n_state))
                      for p in params]

    def matches(self, params: list[Any]) -> bool:
        """True when the state was made for parameters of these shapes."""
        return len(self.state) == len(params) and all(
            all(s.shape == p.shape and s.dtype == p.dtype for s in st)
            for st, p in zip(self.state, params))

    def rules(self, learning_rate: float, l1: float = 0.0, l2: float = 0.0,
              grad_scale: Any = 1.0, clip_value: float = 0.0) -> tuple[UpdateRule, UpdateRule]:
        """Advance the step counter; the rules for weights and for biases."""
        self.t += 1
        weights = self._rule(learning_rate, l1=l1, l2=l2, grad_scale=grad_scale,
                             clip_value=clip_value)
        biases = self._rule(learning_rate, grad_scale=grad_scale, clip_value=clip_value)
        return weights, biases

    def step(self, backend: Any, params: list[Any], grads: list[Any], learning_rate: float,
             l1: float = 0.0, l2: float = 0.0, grad_scale: Any = 1.0,
             clip_value: float = 0.0, weights: int | None = None, frozen: Any = ()) -> None:
        """One update of every parameter. ``params``/``grads``: flat lists W1, b1, W2, b2...;
        with ``weights`` = L, only the first 2L are such pairs and the rest (batch
        normalization's γ, β) take the biases' rule (no L1/L2 penalty). Parameters at the
        indices in ``frozen`` are left as they are (a bias followed by batch normalization)."""
        rule_w, rule_b = self.rules(learning_rate, l1, l2, grad_scale, clip_value)
        pairs = len(params) if weights is None else 2 * weights
        for i, (p, g) in enumerate(zip(params, grads)):
            if i not in frozen:
                backend.update(p, g, self.state[i],
                               rule_w if i % 2 == 0 and i < pairs else rule_b)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SGD(Optimizer):
    """Plain mini-batch gradient descent, as in the seeds: p ← p - η g."""


class Momentum(Optimizer):
    """Heavy-ball momentum (PyTorch's convention): v ← μ v + g; p ← p - η v."""

    kind, n_state, name = MOMENTUM_KIND, 1, "momentum"
    state_names = ("v",)

    def __init__(self, momentum: float = 0.9, nesterov: bool = False) -> None:
        super().__init__()
        self.momentum = _check_unit("momentum", momentum)
        self.nesterov = bool(nesterov)

    def hyperparameters(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _rule(self, learning_rate: float, **kw: Any) -> UpdateRule:
        return UpdateRule(self.kind, learning_rate, momentum=self.momentum,
                          nesterov=self.nesterov, **kw)

    def __repr__(self) -> str:
        return f"Momentum(momentum={self.momentum}, nesterov={self.nesterov})"


class Nesterov(Momentum):
    """Nesterov momentum: p ← p - η (g + μ v)."""

    name = "nesterov"

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__(momentum, nesterov=True)

    def hyperparameters(self) -> dict[str, Any]:
        return {"momentum": self.momentum}


class RMSProp(Optimizer):
    """s ← ρ s + (1 - ρ) g²; p ← p - η g / (√s + ε)."""

    kind, n_state, name = RMSPROP_KIND, 1, "rmsprop"
    state_names = ("s",)

    def __init__(self, rho: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__()
        self.rho = _check_unit("rho", rho, low_open=True)
        self.eps = _check_positive("eps", eps)

    def hyperparameters(self) -> dict[str, Any]:
        return {"rho": self.rho, "eps": self.eps}

    def _rule(self, learning_rate: float, **kw: Any) -> UpdateRule:
        return UpdateRule(self.kind, learning_rate, beta2=self.rho, eps=self.eps, **kw)

    def __repr__(self) -> str:
        return f"RMSProp(rho={self.rho}, eps={self.eps})"


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` > 0 gives AdamW's decoupled decay."""

    kind, n_state, name = ADAM_KIND, 2, "adam"
    state_names = ("m", "v")

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.beta1 = _check_unit("beta1", beta1)
        self.beta2 = _check_unit("beta2", beta2)
        self.eps = _check_positive("eps", eps)
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay)
                and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)

    def hyperparameters(self) -> dict[str, Any]:
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay}

    def _rule(self, learning_rate: float, **kw: Any) -> UpdateRule:
        return UpdateRule(self.kind, learning_rate, beta1=self.beta1, beta2=self.beta2,
                          eps=self.eps, bias_correction1=1.0 - self.beta1 ** self.t,
                          bias_correction2=1.0 - self.beta2 ** self.t,
                          weight_decay=self.weight_decay, **kw)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(beta1={self.beta1}, beta2={self.beta2}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


class AdamW(Adam):
    """Adam with decoupled weight decay (default λ = 0.01)."""

    name = "adamw"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(beta1, beta2, eps, weight_decay)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "rmsprop": RMSProp,
    "adam": Adam, "adamw": AdamW,
}


def get(spec: str | Optimizer) -> Optimizer:
    """A fresh optimizer for a name from :data:`OPTIMIZERS`, or the instance given."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str) and spec in OPTIMIZERS:
        return OPTIMIZERS[spec]()
    raise ValueError(f"optimizer: unknown optimizer {spec!r}; expected one of "
                     f"{sorted(OPTIMIZERS)} or an Optimizer instance")
