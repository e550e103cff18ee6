"""The Numba backend: compiled loops that fuse what NumPy does in several passes.

Every kernel of the contract is one ``@njit`` function: the matrix product goes to BLAS
(``np.dot`` inside njit, through SciPy's cython_blas), and everything elementwise around it
(bias + activation, δ ⊙ σ'(a), the output delta, the column sums of db, the optimizer step)
is one pass over memory. The activation is one scalar function switching on its integer
:class:`~backprop.activations.Code`, shared by the per-kernel and the fused paths.

For small networks :meth:`NumbaBackend.train_epoch` runs a whole epoch in one compiled call
(gather the shuffled batch, forward, loss, backward, update, for every batch), so Python is
entered once per epoch; it calls the same kernels as the per-kernel path. It is used when
no layer is wider than :data:`FUSED_MAX_WIDTH` and there is no dropout or clipping.

All functions are compiled on first use with ``cache=True`` (a later process loads them
from disk); importing this module compiles nothing.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
from numba import njit
from numba.typed import List

from .. import losses as _losses
from ..activations import Activation, Code
from ..losses import Loss
from ..optimizers import ADAM_KIND, MOMENTUM_KIND, RMSPROP_KIND, SGD_KIND, UpdateRule
from .base import Array
from .numpy import NumPyBackend

#: widest layer (input included) for which an epoch runs fused in one compiled call;
#: measured crossover, see benchmarks/results/numba-vs-peers-2vcpu-zen2.md
FUSED_MAX_WIDTH = 128

IDENTITY, SIGMOID, TANH, RELU = int(Code.IDENTITY), int(Code.SIGMOID), int(Code.TANH), int(Code.RELU)
LEAKY_RELU, ELU, SOFTMAX = int(Code.LEAKY_RELU), int(Code.ELU), int(Code.SOFTMAX)
MSE, BCE, CE = _losses.MSE, _losses.BINARY_CROSS_ENTROPY, _losses.CROSS_ENTROPY

_NO_ORDER = np.empty(0, dtype=np.int64)


# ---------------------------------------------------------------------- activations

@njit(cache=True)
def _sigma(z, code, alpha):
    """σ(z) for one unit of an elementwise activation."""
    if code == SIGMOID:                         # ½ (1 + tanh(z/2)): no overflow
        return 0.5 + 0.5 * math.tanh(0.5 * z)
    if code == TANH:
        return math.tanh(z)
    if code == RELU:
        return z if z > 0 else 0.0 * z
    if code == LEAKY_RELU:
        return alpha * z if z < 0 else z
    if code == ELU:
        return alpha * math.expm1(z) if z < 0 else z
    return z                                     # identity


@njit(cache=True)
def _sigma_prime(a, code, alpha):
    """σ'(z) from the output a = σ(z), for an elementwise activation."""
    if code == SIGMOID:
        return a * (1.0 - a)
    if code == TANH:
        return 1.0 - a * a
    if code == RELU:
        return 1.0 if a > 0 else 0.0
    if code == LEAKY_RELU:
        return 1.0 if a > 0 else alpha
    if code == ELU:
        return 1.0 if a > 0 else a + alpha
    return 1.0                                   # identity


@njit(cache=True)
def _activate_row(z, a, code, alpha):
    """``a = σ(z)`` for one sample's row (n,); ``a`` may be ``z``."""
    n = z.shape[0]
    if code == SOFTMAX:
        m = z[0]
        for j in range(1, n):
            m = max(m, z[j])
        s = 0.0
        for j in range(n):
            e = math.exp(z[j] - m)
            a[j] = e
            s += e
        r = 1.0 / s
        for j in range(n):
            a[j] *= r
    else:
        for j in range(n):
            a[j] = _sigma(z[j], code, alpha)


@njit(cache=True)
def _backprop_row(g, a, code, alpha):
    """``g ← g ⊙ σ'(a)`` for one row (softmax: ``g ← a ⊙ (g - Σ_j g_j a_j)``)."""
    n = g.shape[0]
    if code == SOFTMAX:
        s = 0.0
        for j in range(n):
            s += g[j] * a[j]
        for j in range(n):
            g[j] = a[j] * (g[j] - s)
    elif code != IDENTITY:
        for j in range(n):
            g[j] *= _sigma_prime(a[j], code, alpha)


# ---------------------------------------------------------------------- kernels

@njit(cache=True)
def _forward(A_prev, W, b, code, alpha, Z, A):
    """``Z = A_prev @ W.T + b``, ``A = σ(Z)``: one BLAS product, then bias and σ in one pass."""
    np.dot(A_prev, W.T, Z)
    n = Z.shape[1]
    for i in range(Z.shape[0]):
        z = Z[i]
        for j in range(n):
            z[j] += b[j]
        _activate_row(z, A[i], code, alpha)


@njit(cache=True)
def _output_delta(A, Y, code, alpha, fused, delta):
    """``delta = (ŷ - y) / B``, times σ'(a) row by row unless the pair is ``fused``."""
    r = 1.0 / A.shape[0]
    for i in range(A.shape[0]):
        d = delta[i]
        for j in range(A.shape[1]):
            d[j] = A[i, j] - Y[i, j]
        if not fused:
            _backprop_row(d, A[i], code, alpha)
        for j in range(A.shape[1]):
            d[j] *= r


@njit(cache=True)
def _delta(delta_next, W_next, A, code, alpha, delta):
    """``delta = (delta_next @ W_next) ⊙ σ'(A)``: BLAS product, then σ' in one pass."""
    np.dot(delta_next, W_next, delta)
    for i in range(delta.shape[0]):
        _backprop_row(delta[i], A[i], code, alpha)


@njit(cache=True)
def _weight_grad(delta, A_prev, dW, db):
    """``dW = deltaᵀ @ A_prev`` (BLAS), ``db = Σ_rows delta`` (one pass)."""
    np.dot(delta.T, A_prev, dW)
    db[:] = 0.0
    for i in range(delta.shape[0]):
        for j in range(delta.shape[1]):
            db[j] += delta[i, j]


@njit(cache=True)
def _loss(A, Z, Y, loss_code):
    """``Σ_samples L(ŷ, y)`` of a batch (the cross-entropies from Z, never log(0))."""
    total = 0.0
    for i in range(A.shape[0]):
        if loss_code == MSE:                           # ½ Σ (ŷ - y)²
            for j in range(A.shape[1]):
                e = A[i, j] - Y[i, j]
                total += 0.5 * e * e
        elif loss_code == BCE:                         # Σ max(z,0) - y z + log1p(exp(-|z|))
            for j in range(A.shape[1]):
                z = Z[i, j]
                total += max(z, 0.0) - Y[i, j] * z + math.log1p(math.exp(-abs(z)))
        else:                                          # Σ_j y_j (logsumexp(z) - z_j)
            m = Z[i, 0]
            for j in range(1, Z.shape[1]):
                m = max(m, Z[i, j])
            s = 0.0
            for j in range(Z.shape[1]):
                s += math.exp(Z[i, j] - m)
            lse = m + math.log(s)
            for j in range(Z.shape[1]):
                total += Y[i, j] * (lse - Z[i, j])
    return total


@njit(cache=True)
def _update(param, grad, s1, s2, kind, lr, momentum, nesterov, beta1, beta2, eps,
            bias_correction1, bias_correction2, weight_decay, l1, l2, grad_scale):
    """One optimizer step over a parameter in one pass (see :mod:`backprop.optimizers`).

    g = grad_scale·grad + l1·sign(p) + 2 l2·p; p ← (1 - η λ) p (AdamW); then SGD, momentum
    (``s1`` = v), RMSProp (``s1`` = s) or Adam (``s1``, ``s2`` = m, v). Arrays of any shape,
    C-contiguous; unused state arguments are ignored.
    """
    p = param.reshape(param.size)
    g0 = grad.reshape(grad.size)
    v1 = s1.reshape(s1.size)
    v2 = s2.reshape(s2.size)
    decay = 1.0 - lr * weight_decay
    step_size = lr / bias_correction1
    for i in range(p.shape[0]):
        pi = p[i]
        g = grad_scale * g0[i]
        if l1 != 0.0:
            g += l1 * ((pi > 0) - (pi < 0))
        if l2 != 0.0:
            g += 2.0 * l2 * pi
        if weight_decay != 0.0:
            pi *= decay
        if kind == SGD_KIND:
            pi -= lr * g
        elif kind == MOMENTUM_KIND:
            v = momentum * v1[i] + g
            v1[i] = v
            pi -= lr * (momentum * v + g) if nesterov else lr * v
        elif kind == RMSPROP_KIND:
            s = beta2 * v1[i] + (1.0 - beta2) * g * g
            v1[i] = s
            pi -= lr * g / (math.sqrt(s) + eps)
        else:                                          # Adam
            m = beta1 * v1[i] + (1.0 - beta1) * g
            v = beta2 * v2[i] + (1.0 - beta2) * g * g
            v1[i] = m
            v2[i] = v
            pi -= step_size * m / (math.sqrt(v / bias_correction2) + eps)
        p[i] = pi


# ---------------------------------------------------------------------- the fused epoch

@njit(cache=True)
def _train_epoch(X, Y, order, batch_size, W, b, codes, alphas, loss_code, fused,
                 Xb, Yb, A, Z, delta, dW, db, S1W, S1b, S2W, S2b,
                 kind, lr, momentum, nesterov, beta1, beta2, eps, t0, weight_decay, l1, l2):
    """Every mini-batch step of an epoch; returns the summed per-sample loss.

    X (N, n_0), Y (N, n_L); ``order`` the shuffled row index (empty: stored order). W, b,
    A, delta, dW, db, S1*, S2* are typed lists with one array per layer; A, Z, delta, Xb,
    Yb have ``batch_size`` rows and the partial last batch uses their leading rows.
    Step k of the epoch is optimizer step t0 + k + 1 (Adam's bias corrections).
    """
    n = X.shape[0]
    L = len(W)
    total = 0.0
    t = t0
    for start in range(0, n, batch_size):
        B = min(batch_size, n - start)
        if order.shape[0] > 0:
            for i in range(B):
                Xb[i, :] = X[order[start + i]]
                Yb[i, :] = Y[order[start + i]]
            x = Xb[:B]
            y = Yb[:B]
        else:
            x = X[start:start + B]
            y = Y[start:start + B]
        # forward
        for l in range(L):
            inp = x if l == 0 else A[l - 1][:B]
            out = Z[:B] if l == L - 1 else A[l][:B]
            _forward(inp, W[l], b[l], codes[l], alphas[l], out, A[l][:B])
        total += _loss(A[L - 1][:B], Z[:B], y, loss_code)
        # backward
        _output_delta(A[L - 1][:B], y, codes[L - 1], alphas[L - 1], fused, delta[L - 1][:B])
        for l in range(L - 1, -1, -1):
            if l > 0:
                _delta(delta[l][:B], W[l], A[l - 1][:B], codes[l - 1], alphas[l - 1],
                       delta[l - 1][:B])
            inp = x if l == 0 else A[l - 1][:B]
            _weight_grad(delta[l][:B], inp, dW[l], db[l])
        # update
        t += 1
        bc1 = 1.0 - beta1 ** float(t)
        bc2 = 1.0 - beta2 ** float(t)
        for l in range(L):
            _update(W[l], dW[l], S1W[l], S2W[l], kind, lr, momentum, nesterov, beta1, beta2,
                    eps, bc1, bc2, weight_decay, l1, l2, 1.0)
            _update(b[l], db[l], S1b[l], S2b[l], kind, lr, momentum, nesterov, beta1, beta2,
                    eps, bc1, bc2, weight_decay, 0.0, 0.0, 1.0)
    return total


# ---------------------------------------------------------------------- the backend

class NumbaBackend(NumPyBackend):
    """NumPy's backend with its kernels replaced by compiled fused loops (host arrays)."""

    name = "numba"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        # network -> (ids of the arrays, the typed lists built from them) for train_epoch
        self._lists: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()

    def forward(self, A_prev: Array, W: Array, b: Array, activation: Activation,
                Z: Array, A: Array) -> None:
        _forward(A_prev, W, b, int(activation.code), activation.alpha, Z, A)

    def output_delta(self, A: Array, Y: Array, activation: Activation, loss: Loss,
                     delta: Array) -> None:
        _output_delta(A, Y, int(activation.code), activation.alpha, loss.fused_with(activation),
                      delta)

    def delta(self, delta_next: Array, W_next: Array, A: Array, activation: Activation,
              delta: Array) -> None:
        _delta(delta_next, W_next, A, int(activation.code), activation.alpha, delta)

    def weight_grad(self, delta: Array, A_prev: Array, dW: Array, db: Array) -> None:
        _weight_grad(delta, A_prev, dW, db)

    def loss(self, A: Array, Z: Array, Y: Array, activation: Activation, loss: Loss,
             total: Array) -> None:
        total[0] += _loss(A, Z, Y, loss.code)

    def update(self, param: Array, grad: Array, state: tuple[Array, ...],
               rule: UpdateRule) -> None:
        s1 = state[0] if len(state) > 0 else param
        s2 = state[1] if len(state) > 1 else param
        scale = rule.grad_scale
        scale = float(scale[0]) if isinstance(scale, np.ndarray) else float(scale)
        _update(param, grad, s1, s2, rule.kind, rule.learning_rate, rule.momentum,
                rule.nesterov, rule.beta1, rule.beta2, rule.eps, rule.bias_correction1,
                rule.bias_correction2, rule.weight_decay, rule.l1, rule.l2, scale)

    def train_epoch(self, network: Any, X: Array, Y: Array, order: Array | None,
                    batch_size: int, optimizer: Any, learning_rate: float, l1: float,
                    l2: float, clip_norm: float | None, total: Array) -> bool:
        if (clip_norm is not None or any(network.dropout)
                or max(network.layer_sizes) > FUSED_MAX_WIDTH):
            return False
        ws = network.workspace(batch_size)
        grads = network.gradients()
        state = optimizer.state
        # state per parameter (W1, b1, W2, ...); a missing buffer is passed as the parameter
        s1 = [st[0] if len(st) > 0 else p for st, p in zip(state, network.parameters())]
        s2 = [st[1] if len(st) > 1 else p for st, p in zip(state, network.parameters())]
        arrays = (network.W, network.b, ws.A, ws.delta, [g for g, _ in grads],
                  [g for _, g in grads], s1[0::2], s1[1::2], s2[0::2], s2[1::2])
        W, b, A, delta, dW, db, S1W, S1b, S2W, S2b = self._typed_lists(network, arrays)
        codes = np.array([int(a.code) for a in network.activations], dtype=np.int64)
        alphas = np.array([a.alpha for a in network.activations], dtype=np.float64)
        rule, _ = optimizer.rules(learning_rate, l1, l2)    # advances optimizer.t by one
        t0 = optimizer.t - 1
        n_batches = -(-X.shape[0] // batch_size)
        loss = network.loss_function
        total[0] += _train_epoch(
            X, Y, _NO_ORDER if order is None else order, batch_size, W, b, codes, alphas,
            loss.code, loss.fused_with(network.activations[-1]), ws.X, ws.Y, A, ws.Z, delta,
            dW, db, S1W, S1b, S2W, S2b, rule.kind, rule.learning_rate, rule.momentum,
            rule.nesterov, rule.beta1, rule.beta2, rule.eps, t0, rule.weight_decay, l1, l2)
        optimizer.t = t0 + n_batches
        return True

    def _typed_lists(self, network: Any, arrays: tuple[list[Array], ...]) -> tuple[Any, ...]:
        """numba typed lists of the per-layer arrays, kept while the arrays stay the same."""
        key = tuple(id(a) for group in arrays for a in group)
        entry = self._lists.get(network)
        if entry is None or entry[0] != key:
            typed = tuple(List(group) for group in arrays)
            # the arrays themselves are kept so that their ids stay theirs
            entry = self._lists[network] = (key, typed, tuple(tuple(g) for g in arrays))
        return entry[1]
