"""The seeds' pseudocode, written literally, one sample at a time: the oracle of the tests.

Nothing here is batched or fused, and nothing is shared with the backends: the activation and
loss formulas are the seeds' own (sigmoid as 1 / (1 + exp(-z)), softmax through its full
Jacobian). Vectors are 1-D float64 arrays; ``W[l]`` has shape (n_l, n_{l-1}). Lists are
indexed from 0, so ``W[0]`` is the seeds' W¹ and ``a[0]`` is the input.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .activations import Activation
from .losses import Loss


def sigma(activation: Activation, z: np.ndarray) -> np.ndarray:
    """σ(z) for one sample."""
    name, alpha = activation.name, activation.alpha
    if name == "identity":
        return z.copy()
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return (np.exp(z) - np.exp(-z)) / (np.exp(z) + np.exp(-z))
    if name == "relu":
        return np.array([max(0.0, zi) for zi in z])
    if name == "leaky_relu":
        return np.array([zi if zi > 0 else alpha * zi for zi in z])
    if name == "elu":
        return np.array([zi if zi > 0 else alpha * (np.exp(zi) - 1.0) for zi in z])
    if name == "softmax":
        e = np.exp(z - np.max(z))
        return e / np.sum(e)
    raise ValueError(name)


def sigma_jacobian(activation: Activation, z: np.ndarray) -> np.ndarray:
    """∂a/∂z as a full (n, n) matrix; diagonal for the elementwise activations."""
    name, alpha = activation.name, activation.alpha
    a = sigma(activation, z)
    if name == "softmax":
        return np.diag(a) - np.outer(a, a)
    if name == "identity":
        d = np.ones_like(z)
    elif name == "sigmoid":
        d = a * (1.0 - a)
    elif name == "tanh":
        d = 1.0 - a ** 2
    elif name == "relu":
        d = np.array([1.0 if zi > 0 else 0.0 for zi in z])
    elif name == "leaky_relu":
        d = np.array([1.0 if zi > 0 else alpha for zi in z])
    elif name == "elu":
        d = np.array([1.0 if zi > 0 else alpha * np.exp(zi) for zi in z])
    else:
        raise ValueError(name)
    return np.diag(d)


def sample_loss(loss: Loss, y_hat: np.ndarray, y: np.ndarray) -> float:
    """L(ŷ, y) for one sample."""
    if loss.name == "mse":
        return 0.5 * float(np.sum((y_hat - y) ** 2))
    if loss.name == "binary_cross_entropy":
        return float(-np.sum(y * np.log(y_hat) + (1 - y) * np.log(1 - y_hat)))
    if loss.name == "cross_entropy":
        return float(-np.sum(y * np.log(y_hat)))
    raise ValueError(loss.name)


def derivative_of_loss(loss: Loss, y_hat: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂L/∂ŷ for one sample."""
    if loss.name == "mse":
        return y_hat - y
    if loss.name == "binary_cross_entropy":
        return -y / y_hat + (1 - y) / (1 - y_hat)
    if loss.name == "cross_entropy":
        return -y / y_hat
    raise ValueError(loss.name)


def forward_propagation(x: np.ndarray, W: Sequence[np.ndarray], b: Sequence[np.ndarray],
                        activations: Sequence[Activation]) -> tuple[list, list]:
    """The seeds' forward pass: a[0] = x; z[l] = W[l] · a[l-1] + b[l]; a[l] = σ[l](z[l])."""
    a = [x]
    z = [None]
    for l in range(len(W)):
        z.append(W[l] @ a[l] + b[l])
        a.append(sigma(activations[l], z[l + 1]))
    return a, z


def backpropagation(x: np.ndarray, y: np.ndarray, W: Sequence[np.ndarray],
                    b: Sequence[np.ndarray], activations: Sequence[Activation],
                    loss: Loss) -> tuple[list, list]:
    """∂L/∂W and ∂L/∂b of one sample, as in the seeds (δ through the transposed Jacobian)."""
    L = len(W)
    a, z = forward_propagation(x, W, b, activations)
    delta: list = [None] * (L + 1)
    # Step 1: output error δᴸ = ∂L/∂aᴸ ⊙ σ'(zᴸ) (for softmax: Jᵀ ∂L/∂aᴸ)
    delta[L] = sigma_jacobian(activations[L - 1], z[L]).T @ derivative_of_loss(loss, a[L], y)
    # Step 2: δˡ = (Wˡ⁺¹)ᵀ δˡ⁺¹ ⊙ σ'(zˡ)
    for l in range(L - 1, 0, -1):
        delta[l] = sigma_jacobian(activations[l - 1], z[l]).T @ (W[l].T @ delta[l + 1])
    # Step 3: ∂L/∂Wˡ = δˡ (aˡ⁻¹)ᵀ, ∂L/∂bˡ = δˡ
    dW = [np.outer(delta[l], a[l - 1]) for l in range(1, L + 1)]
    db = [delta[l].copy() for l in range(1, L + 1)]
    return dW, db


def batch_gradients(X: np.ndarray, Y: np.ndarray, W: Sequence[np.ndarray],
                    b: Sequence[np.ndarray], activations: Sequence[Activation],
                    loss: Loss) -> tuple[list, list]:
    """Accumulate the per-sample gradients over a batch and average them."""
    dW_total = [np.zeros_like(w) for w in W]
    db_total = [np.zeros_like(v) for v in b]
    for x, y in zip(X, Y):
        dW, db = backpropagation(x, y, W, b, activations, loss)
        for l in range(len(W)):
            dW_total[l] = dW_total[l] + dW[l]
            db_total[l] = db_total[l] + db[l]
    n = len(X)
    return [g / n for g in dW_total], [g / n for g in db_total]


def batch_loss(X: np.ndarray, Y: np.ndarray, W: Sequence[np.ndarray], b: Sequence[np.ndarray],
               activations: Sequence[Activation], loss: Loss) -> float:
    """The mean per-sample loss over a batch."""
    return float(np.mean([sample_loss(loss, forward_propagation(x, W, b, activations)[0][-1], y)
                          for x, y in zip(X, Y)]))


def train(X: np.ndarray, Y: np.ndarray, W: list[np.ndarray], b: list[np.ndarray],
          activations: Sequence[Activation], loss: Loss, learning_rate: float, n_epochs: int,
          batch_size: int, order: Sequence[np.ndarray] | None = None) -> tuple[list, list]:
    """The seeds' training loop: per epoch, shuffle, then for each mini-batch accumulate the
    per-sample gradients, average them and take a gradient-descent step. ``order`` gives each
    epoch's permutation (so a test can use the same one as the library); default: none."""
    W = [w.copy() for w in W]
    b = [v.copy() for v in b]
    for epoch in range(n_epochs):
        index = order[epoch] if order is not None else np.arange(len(X))
        Xs, Ys = X[index], Y[index]
        for start in range(0, len(X), batch_size):
            dW, db = batch_gradients(Xs[start:start + batch_size], Ys[start:start + batch_size],
                                     W, b, activations, loss)
            for l in range(len(W)):
                W[l] = W[l] - learning_rate * dW[l]
                b[l] = b[l] - learning_rate * db[l]
    return W, b
