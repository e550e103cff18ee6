"""Oracles that share no code with the library's batched path: the seeds' per-sample algorithm
(:mod:`backprop.reference`) driven through whole ``fit`` runs by the optimizer formulas written
out, and the loss of a forward pass with frozen dropout masks.

Everything is float64 NumPy on the host; W[l] has shape (n_l, n_{l-1}).
"""

from __future__ import annotations

import numpy as np

from backprop import reference

#: the optimizers' default hyperparameters (backprop.optimizers), written out again
MOMENTUM, RHO, BETA1, BETA2, EPS, ADAMW_DECAY = 0.9, 0.9, 0.9, 0.999, 1e-8, 0.01


def epoch_orders(n: int, epochs: int, shuffle: bool, seed: int | None) -> list[np.ndarray]:
    """The row order of each epoch of ``fit(shuffle=..., seed=...)``: a permutation from
    ``numpy.random.default_rng(seed)`` per epoch, or the stored order."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) if shuffle else np.arange(n) for _ in range(epochs)]


def fit(W, b, X, Y, activations, loss, *, optimizer: str, learning_rate: float, epochs: int,
        batch_size: int, orders, l1: float = 0.0, l2: float = 0.0,
        clip_norm: float | None = None, clip_factors: list | None = None,
        clip_value: float | None = None, warmup_steps: int = 0, sample_weight=None):
    """``(W, b, epoch_losses)`` after the mini-batch loop of the seeds with ``optimizer``.

    Per batch (the last one partial): the mean of the per-sample gradients; clipped by the
    global norm to ``clip_norm``; then each component to [-clip_value, clip_value]; plus
    l1·sign(W) + 2·l2·W for weights only; step t = 1, 2, ... at the rate
    η · min(1, t / warmup_steps) (a linear warm-up); then
    sgd:       p ← p - η g
    momentum:  v ← μ v + g; p ← p - η v        nesterov: p ← p - η (g + μ v)
    rmsprop:   s ← ρ s + (1 - ρ) g²; p ← p - η g / (√s + ε)
    adam(w):   (adamw: p ← p - η λ p first) m ← β₁ m + (1 - β₁) g; v ← β₂ v + (1 - β₂) g²;
               p ← p - η (m / (1 - β₁ᵗ)) / (√(v / (1 - β₂ᵗ)) + ε)
    An epoch's loss is the mean over its samples of the loss at the parameters of their
    batch's step. ``clip_factors``, if given, receives each step's clipping factor.
    With ``sample_weight`` (N,): a batch's gradient is Σ w_i ∇L_i / Σ w_i (0 when the batch's
    weights are all 0) and an epoch's loss Σ w_i L_i / Σ w_i over all samples.
    """
    W = [np.array(w, np.float64) for w in W]
    b = [np.array(v, np.float64) for v in b]
    n = len(X)
    state = {}
    t = 0
    losses = []
    for epoch in range(epochs):
        Xs, Ys = X[orders[epoch]], Y[orders[epoch]]
        ws = None if sample_weight is None else np.asarray(sample_weight, np.float64)[orders[epoch]]
        total = 0.0
        for start in range(0, n, batch_size):
            xb, yb = Xs[start:start + batch_size], Ys[start:start + batch_size]
            if ws is None:
                total += len(xb) * reference.batch_loss(xb, yb, W, b, activations, loss)
                dW, db = reference.batch_gradients(xb, yb, W, b, activations, loss)
            else:
                wb = ws[start:start + batch_size]
                total += weighted_loss_sum(xb, yb, wb, W, b, activations, loss)
                dW, db = weighted_gradients(xb, yb, wb, W, b, activations, loss)
            grads = [g for pair in zip(dW, db) for g in pair]
            params = [p for pair in zip(W, b) for p in pair]
            if clip_norm is not None:
                norm = np.sqrt(sum(np.sum(g * g) for g in grads))
                factor = min(1.0, clip_norm / norm)
                if clip_factors is not None:
                    clip_factors.append(factor)
                grads = [g * factor for g in grads]
            if clip_value is not None:
                grads = [np.minimum(np.maximum(g, -clip_value), clip_value) for g in grads]
            t += 1
            lr = learning_rate * (min(1.0, t / warmup_steps) if warmup_steps else 1.0)
            new = []
            for i, (p, g) in enumerate(zip(params, grads)):
                if i % 2 == 0:                       # a weight matrix
                    g = g + l1 * np.sign(p) + 2 * l2 * p
                s = state.setdefault(i, [np.zeros_like(p), np.zeros_like(p)])
                new.append(_step(optimizer, p, g, s, lr, t))
            W, b = new[0::2], new[1::2]
        losses.append(total / (n if sample_weight is None else float(np.sum(sample_weight))))
    return W, b, losses


def weighted_loss_sum(X, Y, w, W, b, activations, loss) -> float:
    """Σ_i w_i L_i, sample by sample."""
    return float(sum(wi * reference.sample_loss(loss, reference.forward_propagation(
        x, W, b, activations)[0][-1], y) for x, y, wi in zip(X, Y, w)))


def weighted_gradients(X, Y, w, W, b, activations, loss):
    """Σ_i w_i ∇L_i / Σ_i w_i, sample by sample with the seeds' backpropagation (zero
    gradients when Σ w = 0)."""
    dW = [np.zeros_like(m) for m in W]
    db = [np.zeros_like(v) for v in b]
    total = float(np.sum(w))
    for x, y, wi in zip(X, Y, w):
        gW, gb = reference.backpropagation(x, y, W, b, activations, loss)
        for l in range(len(W)):
            dW[l] += wi * gW[l]
            db[l] += wi * gb[l]
    scale = 1.0 / total if total > 0 else 0.0
    return [g * scale for g in dW], [g * scale for g in db]


def _step(optimizer: str, p, g, s, lr: float, t: int):
    if optimizer == "sgd":
        return p - lr * g
    if optimizer in ("momentum", "nesterov"):
        s[0] = MOMENTUM * s[0] + g
        return p - lr * (g + MOMENTUM * s[0] if optimizer == "nesterov" else s[0])
    if optimizer == "rmsprop":
        s[0] = RHO * s[0] + (1 - RHO) * g * g
        return p - lr * g / (np.sqrt(s[0]) + EPS)
    if optimizer in ("adam", "adamw"):
        if optimizer == "adamw":
            p = p - lr * ADAMW_DECAY * p
        s[0] = BETA1 * s[0] + (1 - BETA1) * g
        s[1] = BETA2 * s[1] + (1 - BETA2) * g * g
        return p - lr * (s[0] / (1 - BETA1 ** t)) / (np.sqrt(s[1] / (1 - BETA2 ** t)) + EPS)
    raise ValueError(optimizer)


def masked_loss(W, b, X, Y, activations, loss, masks) -> float:
    """The mean loss with each hidden layer's output multiplied by its frozen dropout mask:
    a_l = σ(W_l a_{l-1} + b_l) ⊙ m_l[sample], per sample, as the seeds write it."""
    total = 0.0
    for i, (x, y) in enumerate(zip(X, Y)):
        a = x
        for l in range(len(W)):
            a = reference.sigma(activations[l], W[l] @ a + b[l])
            if l < len(W) - 1:
                a = a * masks[l][i]
        total += reference.sample_loss(loss, a, y)
    return total / len(X)


def finite_differences(f, params, h: float = 1e-6):
    """Central differences (f(p + h) - f(p - h)) / 2h for every element of every array in
    ``params`` (changed in place and restored)."""
    grads = []
    for p in params:
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            saved = p[i]
            p[i] = saved + h
            up = f()
            p[i] = saved - h
            down = f()
            p[i] = saved
            g[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads
