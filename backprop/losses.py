"""The loss table and the output deltas.

A per-sample loss sums over the output units; a batch's loss is the mean over its samples.

==================== ================================= =================== ==================
name                 L(ŷ, y) per sample                ∂L/∂ŷ               output activations
==================== ================================= =================== ==================
mse                  ½ ‖ŷ - y‖²                        ŷ - y               any
binary_cross_entropy -Σ [y log ŷ + (1 - y) log(1 - ŷ)] see below           sigmoid
cross_entropy        -Σ y log ŷ                        see below           softmax
==================== ================================= =================== ==================

The output delta δ_L = ∂L/∂z_L is computed fused as ``ŷ - y`` for the pairs where the seeds
simplify (identity + mse, sigmoid + binary_cross_entropy, softmax + cross_entropy); mse with
any other activation uses (ŷ - y) ⊙ σ'(z) (for softmax, the Jacobian product). The
cross-entropies are evaluated from the pre-activation z, so no log(0) or overflow occurs:

- sigmoid + binary_cross_entropy: L = Σ max(z, 0) - y z + log(1 + exp(-|z|))
- softmax + cross_entropy:        L = Σ_i y_i (logsumexp(z) - z_i)

Other pairings with the cross-entropies would need log ŷ of an output that is not a
probability, and are refused at construction.
"""

from __future__ import annotations

from .activations import Activation, Code

MSE, BINARY_CROSS_ENTROPY, CROSS_ENTROPY = range(3)


class Loss:
    """A loss function: its name, kernel code and the output activations it accepts."""

    def __init__(self, name: str, code: int, outputs: tuple[int, ...] | None,
                 fused: int, classification: bool) -> None:
        self.name = name
        self.code = code
        self.outputs = outputs          # activation codes allowed at the output; None: any
        self.fused = fused              # activation code for which δ_L = ŷ - y
        self.classification = classification

    def fused_with(self, activation: Activation) -> bool:
        """True when δ_L = ŷ - y exactly for this output activation."""
        return activation.code == self.fused

    def check_output(self, activation: Activation) -> None:
        """Refuse a pairing whose loss or gradient cannot be computed exactly."""
        if self.outputs is not None and activation.code not in self.outputs:
            raise ValueError(
                f"loss: {self.name!r} needs a {_needs[self.code]} output layer, got "
                f"{activation.name!r}; use activations=[..., {_needs[self.code]!r}] or loss='mse'")

    def __repr__(self) -> str:
        return f"Loss({self.name!r})"

    def __str__(self) -> str:
        return self.name


_needs = {BINARY_CROSS_ENTROPY: "sigmoid", CROSS_ENTROPY: "softmax"}

LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", MSE, None, Code.IDENTITY, classification=False),
    "binary_cross_entropy": Loss("binary_cross_entropy", BINARY_CROSS_ENTROPY, (Code.SIGMOID,),
                                 Code.SIGMOID, classification=True),
    "cross_entropy": Loss("cross_entropy", CROSS_ENTROPY, (Code.SOFTMAX,), Code.SOFTMAX,
                          classification=True),
}


def get(spec: str | Loss) -> Loss:
    """The loss for a name from :data:`LOSSES`."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, str) and spec in LOSSES:
        return LOSSES[spec]
    raise ValueError(f"loss: unknown loss {spec!r}; expected one of {sorted(LOSSES)}")
