"""The activation table.

Each activation σ is applied to a layer's pre-activation ``Z`` (batch, n_l) and gives
``A = σ(Z)``. Backpropagation needs σ'(z); every derivative here is exact when written in
terms of the output a = σ(z), so the backends never keep Z for hidden layers:

=========== ============================== ==================================
name        σ(z)                           σ'(z) from a
=========== ============================== ==================================
identity    z                              1
sigmoid     1 / (1 + exp(-z))              a (1 - a)
tanh        tanh(z)                        1 - a²
relu        max(0, z)                      1 if a > 0 else 0   (0 at z = 0)
leaky_relu  z if z > 0 else α z            1 if a > 0 else α   (α = 0.01)
elu         z if z > 0 else α (exp(z) - 1) 1 if a > 0 else a + α
softmax     exp(z_i) / Σ_j exp(z_j)        Jacobian diag(a) - a aᵀ, applied as
                                           δ = a ⊙ (g - Σ_j g_j a_j)
=========== ============================== ==================================

The numeric ``code`` of each activation is what compiled kernels (Numba, CUDA) switch on.
"""

from __future__ import annotations

import math
from enum import IntEnum


class Code(IntEnum):
    """The number each activation is known by in compiled kernels."""

    IDENTITY = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    LEAKY_RELU = 4
    ELU = 5
    SOFTMAX = 6


class Activation:
    """An activation function: its name, kernel code and parameter ``alpha``."""

    name: str = ""
    code: Code
    #: the ``init`` used for layers with this activation when none is given
    default_init: str = "xavier"

    def __init__(self, alpha: float = 0.0) -> None:
        self.alpha = float(alpha)

    @property
    def elementwise(self) -> bool:
        """True when σ acts on each unit alone (all but softmax)."""
        return self.code != Code.SOFTMAX

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Activation) and other.code == self.code
                and other.alpha == self.alpha)

    def __hash__(self) -> int:
        return hash((self.code, self.alpha))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.alpha})" if self.alpha else f"{type(self).__name__}()"

    def __str__(self) -> str:
        return f"{self.name}({self.alpha})" if self.alpha else self.name


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Identity(Activation):
    name, code = "identity", Code.IDENTITY


class Sigmoid(Activation):
    name, code = "sigmoid", Code.SIGMOID


class Tanh(Activation):
    name, code = "tanh", Code.TANH


class ReLU(Activation):
    name, code, default_init = "relu", Code.RELU, "he"


class LeakyReLU(Activation):
    """σ(z) = z for z > 0, α z otherwise; ``alpha`` must be positive."""

    name, code, default_init = "leaky_relu", Code.LEAKY_RELU, "he"

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__(_positive("LeakyReLU alpha", alpha))


class ELU(Activation):
    """σ(z) = z for z > 0, α (exp(z) - 1) otherwise; ``alpha`` must be positive."""

    name, code, default_init = "elu", Code.ELU, "he"

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(_positive("ELU alpha", alpha))


class Softmax(Activation):
    name, code = "softmax", Code.SOFTMAX


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Softmax)
}


def get(spec: str | Activation) -> Activation:
    """The activation for a name from :data:`ACTIVATIONS` or an :class:`Activation`."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str) and spec in ACTIVATIONS:
        return ACTIVATIONS[spec]()
    raise ValueError(
        f"activations: unknown activation {spec!r}; expected one of {sorted(ACTIVATIONS)} "
        "or an instance such as backprop.activations.LeakyReLU(0.1)")
