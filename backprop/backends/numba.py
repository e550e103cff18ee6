"""The Numba backend: compiled loops that fuse what NumPy does in several passes.

Every kernel of the contract is one ``@njit`` function: the matrix product goes to BLAS
(``np.dot`` inside njit, through SciPy's cython_blas), and everything elementwise around it
(bias + activation, δ ⊙ σ'(a), the output delta, the column sums of db, the optimizer step)
is one pass over memory. σ and σ' are one njit function each (``_bias_activate``,
``_backprop_activation``) switching on the integer :class:`~backprop.activations.Code` once,
outside a simple loop per activation, and shared by the per-kernel and the fused paths.
Constants are cast to the arrays' dtype, so float32 work stays float32.

Rows are not split over threads (no ``prange``): at the sizes where threads could pay, the
elementwise passes are under 1% of a step (BLAS, already threaded, is the rest), and at small
sizes a parallel region costs more than the pass (measured: bias + relu over 4096×32 float32
takes ~60 µs serially; a 1024³ training step ~30 ms).

For small networks :meth:`NumbaBackend.train_epoch` runs a whole epoch in one compiled call
(gather the shuffled batch, forward, loss, backward, update, for every batch), so Python is
entered once per epoch; it calls the same kernels as the per-kernel path. It is used when
no layer is wider than :data:`FUSED_MAX_WIDTH` and there is no dropout, clipping by norm, batch
normalization or residual connection (those run step by step, each kernel compiled: see
benchmarks/results/2vcpu-intel-xeon/batch-norm-residual.md for what that costs); clipping by
value and a per-step learning rate (a warm-up's) run inside it.

All functions are compiled on first use with ``cache=True`` (a later process loads them
from disk); importing this module compiles nothing. Where numba cannot write a cache (a
read-only install without a writable home: "cannot cache function ...: no locator available")
they are compiled in memory instead, once per process, with a one-time notice. Compiled
functions are per process and read-only, so every backend instance (one per network) shares
them; the typed lists of the fused epoch belong to the instance.

Losses and the clipping norm accumulate in float64, each loss term formed non-negative
(cross-entropy as ``Σ_j y_j ((m - z_j) + log Σ_k exp(z_k - m))``, m the row maximum).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable

import numpy as np
from numba import from_dtype, njit
from numba.typed import List

from .. import losses as _losses
from ..activations import Activation, Code
from ..losses import Loss
from ..optimizers import ADAM_KIND, MOMENTUM_KIND, RMSPROP_KIND, SGD_KIND, UpdateRule
from .base import Array
from .numpy import NumPyBackend

#: widest layer (input included) for which an epoch runs fused in one compiled call. Measured
#: (benchmarks/numba_crossover.py, [w, w, w, 10] batch 64, 2 vCPU Zen 2): the fused epoch is
#: 2.9x the per-kernel path at w = 16, 1.4x at 64, 0.94x at 128, 0.6x at 256 (there the
#: per-kernel path's gemm-folded SGD update wins and Python's per-step cost no longer shows).
FUSED_MAX_WIDTH = 96

IDENTITY, SIGMOID, TANH, RELU = int(Code.IDENTITY), int(Code.SIGMOID), int(Code.TANH), int(Code.RELU)
LEAKY_RELU, ELU, SOFTMAX = int(Code.LEAKY_RELU), int(Code.ELU), int(Code.SOFTMAX)
MSE, BCE, CE = _losses.MSE, _losses.BINARY_CROSS_ENTROPY, _losses.CROSS_ENTROPY

_NO_ORDER = np.empty(0, dtype=np.int64)
#: the kernels' "no sample weights" (an empty array of the batch's dtype: one compiled variant)
_NO_WEIGHT = {np.dtype(t): np.empty(0, dtype=t) for t in (np.float32, np.float64)}

#: False once numba has found no writable place for its cache (then functions compile in memory)
CACHE = True


def _jit(fn: Callable | None = None, **options: Any) -> Any:
    """``numba.njit(cache=True, error_model="numpy", **options)``, or without the cache where
    numba has no writable cache location (it raises at decoration: "cannot cache function
    ...: no locator available"). ``@_jit`` or ``@_jit(fastmath=...)``.

    ``error_model="numpy"``: a float division by zero gives ±Inf or NaN, as in the NumPy
    backend, instead of raising ZeroDivisionError half-way through an update (an Adam ``eps``
    that rounds to 0 in float32 then diverges, and fit rolls back, on both backends)."""
    global CACHE
    if fn is None:
        return lambda f: _jit(f, **options)
    options.setdefault("error_model", "numpy")
    if CACHE:
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError as e:
            if "no locator available" not in str(e):
                raise
            CACHE = False
            warnings.warn("backprop: numba cannot write its kernel cache here (read-only "
                          "install, no writable home); the numba kernels are compiled in "
                          "memory, once per process. Set NUMBA_CACHE_DIR to a writable folder "
                          "to cache them.", RuntimeWarning, stacklevel=2)
    return njit(**options)(fn)


# ---------------------------------------------------------------------- activations

@_jit
def _bias_activate(Z, b, code, alpha, A):
    """``Z += b`` and ``A = σ(Z)`` for a batch (B, n); ``A`` may be ``Z``.

    One simple loop per activation (each vectorizes), with constants in the array's dtype
    so float32 stays float32; softmax works row by row.
    """
    B, n = Z.shape
    zero, half, one = Z.dtype.type(0), Z.dtype.type(0.5), Z.dtype.type(1)
    alpha = Z.dtype.type(alpha)
    if code == SOFTMAX:
        for i in range(B):
            m = Z[i, 0] + b[0]
            for j in range(n):
                Z[i, j] += b[j]
                m = max(m, Z[i, j])
            s = zero
            for j in range(n):
                e = math.exp(Z[i, j] - m)
                A[i, j] = e
                s += e
            r = one / s
            for j in range(n):
                A[i, j] *= r
        return
    for i in range(B):                           # Z += b, one row at a time
        for j in range(n):
            Z[i, j] += b[j]
    if code == SIGMOID:                          # ½ (1 + tanh(z/2)): no overflow
        for i in range(B):
            for j in range(n):
                A[i, j] = half + half * math.tanh(half * Z[i, j])
    elif code == TANH:
        for i in range(B):
            for j in range(n):
                A[i, j] = math.tanh(Z[i, j])
    elif code == RELU:
        for i in range(B):
            for j in range(n):
                A[i, j] = max(Z[i, j], zero)
    elif code == LEAKY_RELU:
        for i in range(B):
            for j in range(n):
                z = Z[i, j]
                A[i, j] = alpha * z if z < zero else z
    elif code == ELU:
        for i in range(B):
            for j in range(n):
                z = Z[i, j]
                A[i, j] = alpha * math.expm1(z) if z < zero else z
    elif code == IDENTITY:
        for i in range(B):
            for j in range(n):
                A[i, j] = Z[i, j]


@_jit
def _backprop_activation(G, A, code, alpha):
    """``G ← G ⊙ σ'(A)`` over the batch (B, n), σ' from the output a (see
    :mod:`backprop.activations`); softmax, row by row: ``g ← a ⊙ (g - Σ_j g_j a_j)``."""
    B, n = G.shape
    zero, one = A.dtype.type(0), A.dtype.type(1)
    alpha = A.dtype.type(alpha)
    if code == IDENTITY:
        return
    if code == SOFTMAX:
        for i in range(B):
            s = zero
            for j in range(n):
                s += G[i, j] * A[i, j]
            for j in range(n):
                G[i, j] = A[i, j] * (G[i, j] - s)
        return
    for i in range(B):
        for j in range(n):
            a = A[i, j]
            if code == SIGMOID:
                d = a * (one - a)
            elif code == TANH:
                d = one - a * a
            elif code == RELU:
                d = one if a > zero else zero
            elif code == LEAKY_RELU:
                d = one if a > zero else alpha
            else:                                # elu
                d = one if a > zero else a + alpha
            G[i, j] *= d


# ---------------------------------------------------------------------- kernels

@_jit
def _forward(A_prev, W, b, code, alpha, Z, A):
    """``Z = A_prev @ W.T + b``, ``A = σ(Z)``: one BLAS product, then bias and σ in one pass."""
    np.dot(A_prev, W.T, Z)
    _bias_activate(Z, b, code, alpha, A)


@_jit
def _output_delta(A, Y, code, alpha, fused, weight, delta):
    """``delta = (ŷ - y) / B``, times σ'(a) unless the loss/activation pair is ``fused``;
    with sample weights (``weight`` (B,), not empty) row i is scaled by ``w_i · (1 / Σ w)``
    instead (Σ w in float64, its reciprocal in the dtype; 0 when Σ w = 0)."""
    B, n = A.shape
    for i in range(B):
        for j in range(n):
            delta[i, j] = A[i, j] - Y[i, j]
    if not fused:
        _backprop_activation(delta, A, code, alpha)
    if weight.shape[0] == 0:
        r = delta.dtype.type(1.0 / B)
        for i in range(B):
            for j in range(n):
                delta[i, j] *= r
        return
    total = 0.0
    for i in range(B):
        total += float(weight[i])
    inv = delta.dtype.type(1.0 / total if total > 0.0 else 0.0)
    for i in range(B):
        f = weight[i] * inv
        for j in range(n):
            delta[i, j] *= f


@_jit
def _delta(delta_next, W_next, A, code, alpha, delta):
    """``delta = (delta_next @ W_next) ⊙ σ'(A)``: BLAS product, then σ' in one pass."""
    np.dot(delta_next, W_next, delta)
    _backprop_activation(delta, A, code, alpha)


@_jit
def _weight_grad(delta, A_prev, dW, db):
    """``dW = deltaᵀ @ A_prev`` (BLAS), ``db = Σ_rows delta`` (one pass)."""
    np.dot(delta.T, A_prev, dW)
    db[:] = 0
    for i in range(delta.shape[0]):
        for j in range(delta.shape[1]):
            db[j] += delta[i, j]


@_jit
def _loss(A, Z, Y, loss_code, weight):
    """``Σ_samples L(ŷ, y)`` of a batch in float64, every term formed >= 0 so that nothing
    cancels (the cross-entropies from Z, never log(0)); with sample weights (``weight`` (B,),
    not empty) ``Σ_i w_i L_i``, each term times its row's weight."""
    total = 0.0
    weighted = weight.shape[0] > 0
    for i in range(A.shape[0]):
        w = float(weight[i]) if weighted else 1.0
        if loss_code == MSE:                           # ½ Σ (ŷ - y)²
            for j in range(A.shape[1]):
                e = float(A[i, j]) - float(Y[i, j])
                total += w * (0.5 * e * e)
        elif loss_code == BCE:                         # Σ z ([z > 0] - y) + log1p(exp(-|z|))
            for j in range(A.shape[1]):
                z, y = float(Z[i, j]), float(Y[i, j])
                total += w * ((z * (1.0 - y) if z > 0.0 else -z * y)
                              + math.log1p(math.exp(-abs(z))))
        else:                                          # Σ_j y_j ((m - z_j) + log Σ exp(z - m))
            m = float(Z[i, 0])
            for j in range(1, Z.shape[1]):
                m = max(m, float(Z[i, j]))
            s = 0.0
            for j in range(Z.shape[1]):
                s += math.exp(float(Z[i, j]) - m)
            lse = math.log(s)
            for j in range(Z.shape[1]):
                total += w * (float(Y[i, j]) * ((m - float(Z[i, j])) + lse))
    return total


@_jit(fastmath={"reassoc"})
def _sum_squares(x, scale):
    """``Σ (scale · x)²`` over an array of any shape, in float64. The sum may be reordered
    (``reassoc``: SIMD partial sums, 10x faster; measured 28 µs for 200k float32 on 2 vCPU
    Xeon against 300 µs in order): same compiled code, same result."""
    v = x.reshape(x.size)
    total = 0.0
    for i in range(v.shape[0]):
        e = scale * float(v[i])
        total += e * e
    return total


@_jit
def _update(param, grad, s1, s2, kind, lr, momentum, nesterov, beta1, beta2, eps,
            bias_correction1, bias_correction2, weight_decay, l1, l2, grad_scale, clip_value):
    """One optimizer step over a parameter in one pass (see :mod:`backprop.optimizers`).

    g = clip(grad_scale·grad, -c, c) (c = ``clip_value`` when > 0) + l1·sign(p) + 2 l2·p; p ← (1 - η λ) p (AdamW); then SGD, momentum
    (``s1`` = v), RMSProp (``s1`` = s) or Adam (``s1``, ``s2`` = m, v). Arrays of any shape,
    C-contiguous; unused state arguments are ignored. The scalars are rounded to the
    parameter's dtype first, as NumPy does with Python floats.
    """
    p = param.reshape(param.size)
    g0 = grad.reshape(grad.size)
    v1 = s1.reshape(s1.size)
    v2 = s2.reshape(s2.size)
    dt = p.dtype.type
    zero, one = dt(0), dt(1)
    scale, l1_, l2x2 = dt(grad_scale), dt(l1), dt(2.0 * l2)
    eta, mu, b1, b2, eps_ = dt(lr), dt(momentum), dt(beta1), dt(beta2), dt(eps)
    decay = dt(1.0 - lr * weight_decay)
    adam_step = dt(lr / bias_correction1)
    adam_c2 = dt(1.0 / bias_correction2)
    clip = clip_value > 0.0
    c = dt(clip_value)
    for i in range(p.shape[0]):
        pi = p[i]
        g = scale * g0[i]
        if clip:                                       # NaN stays NaN
            if g > c:
                g = c
            elif g < -c:
                g = -c
        if l1 != 0.0:
            g += l1_ if pi > zero else (-l1_ if pi < zero else zero)
        if l2 != 0.0:
            g += l2x2 * pi
        if weight_decay != 0.0:
            pi *= decay
        if kind == SGD_KIND:
            pi -= eta * g
        elif kind == MOMENTUM_KIND:
            v = mu * v1[i] + g
            v1[i] = v
            pi -= eta * (mu * v + g) if nesterov else eta * v
        elif kind == RMSPROP_KIND:
            s = b2 * v1[i] + (one - b2) * g * g
            v1[i] = s
            pi -= eta * (g / (math.sqrt(s) + eps_))
        else:                                          # Adam
            m = b1 * v1[i] + (one - b1) * g
            v = b2 * v2[i] + (one - b2) * g * g
            v1[i] = m
            v2[i] = v
            pi -= adam_step * (m / (math.sqrt(v * adam_c2) + eps_))
        p[i] = pi


@_jit
def _batch_norm_forward(Z, gamma, beta, running_mean, running_var, train, momentum, eps, code,
                        alpha, Zhat, mean, inv_std, A):
    """Batch normalization and σ (see ``Backend.batch_norm_forward``): column sums row by row
    (each row a vectorized loop over the columns), two passes for the variance, then
    ``A = γ Ẑ`` and :func:`_bias_activate` adds β and applies σ in the same pass as NumPy's."""
    B, n = Z.shape
    dt = Z.dtype.type
    if train:
        for j in range(n):
            mean[j] = dt(0)
            inv_std[j] = dt(0)
        for i in range(B):
            for j in range(n):
                mean[j] += Z[i, j]
        for j in range(n):
            mean[j] /= dt(B)
        for i in range(B):
            for j in range(n):
                d = Z[i, j] - mean[j]
                Zhat[i, j] = d
                inv_std[j] += d * d
        for j in range(n):
            inv_std[j] /= dt(B)                          # the biased variance, for now
        if momentum != 0.0:
            keep, m = dt(1.0 - momentum), dt(momentum)
            unbiased = dt(momentum * B / max(B - 1, 1))
            for j in range(n):
                running_mean[j] = keep * running_mean[j] + m * mean[j]
                running_var[j] = keep * running_var[j] + unbiased * inv_std[j]
    else:
        for j in range(n):
            mean[j] = running_mean[j]
            inv_std[j] = running_var[j]
        for i in range(B):
            for j in range(n):
                Zhat[i, j] = Z[i, j] - mean[j]
    one, e = dt(1), dt(eps)
    for j in range(n):
        inv_std[j] = one / math.sqrt(inv_std[j] + e)
    for i in range(B):
        for j in range(n):
            z = Zhat[i, j] * inv_std[j]
            Zhat[i, j] = z
            A[i, j] = gamma[j] * z
    _bias_activate(A, beta, code, alpha, A)


@_jit
def _batch_norm_backward(G, Zhat, gamma, inv_std, dgamma, dbeta, out):
    """``dβ = Σ G``, ``dγ = Σ G ⊙ Ẑ`` (one pass), then
    ``out = γ inv_std (G - (dβ + Ẑ dγ) / B)`` (one pass); out may be G."""
    B, n = G.shape
    dt = G.dtype.type
    for j in range(n):
        dgamma[j] = dt(0)
        dbeta[j] = dt(0)
    for i in range(B):
        for j in range(n):
            g = G[i, j]
            dbeta[j] += g
            dgamma[j] += g * Zhat[i, j]
    r = dt(1.0 / B)
    for i in range(B):
        for j in range(n):
            out[i, j] = gamma[j] * inv_std[j] * (G[i, j] - (dbeta[j] + Zhat[i, j] * dgamma[j]) * r)


@_jit
def _activation_backward(G, A, code, alpha, out):
    """``out = G ⊙ σ'(A)``; out may be G."""
    if out is not G:
        for i in range(G.shape[0]):
            for j in range(G.shape[1]):
                out[i, j] = G[i, j]
    _backprop_activation(out, A, code, alpha)


@_jit
def _add(x, y, out):
    """``out = x + y`` (B, n)."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = x[i, j] + y[i, j]


# ---------------------------------------------------------------------- the fused epoch

@_jit
def _train_epoch(X, Y, order, batch_size, W, b, codes, alphas, loss_code, fused,
                 Xb, Yb, A, Z, delta, dW, db, S1W, S1b, S2W, S2b,
                 kind, rates, momentum, nesterov, beta1, beta2, eps, t0, weight_decay, l1, l2,
                 clip_value, sw, wb):
    """Every mini-batch step of an epoch; returns the summed per-sample loss.

    ``rates[k]`` (float64) is the learning rate of step k (a linear warm-up changes it per
    step); ``clip_value`` > 0 clips each gradient component to [-clip_value, clip_value].

    X (N, n_0), Y (N, n_L); ``order`` the shuffled row index (empty: stored order); ``sw``
    the sample weights (N,) (empty: none), gathered into ``wb`` (``batch_size``,). W, b,
    A, delta, dW, db, S1*, S2* are typed lists with one array per layer; A, Z, delta, Xb,
    Yb have ``batch_size`` rows and the partial last batch uses their leading rows.
    Step k of the epoch is optimizer step t0 + k + 1 (Adam's bias corrections).
    """
    n = X.shape[0]
    L = len(W)
    total = 0.0
    t = t0
    for start in range(0, n, batch_size):
        lr = rates[start // batch_size]
        B = min(batch_size, n - start)
        if order.shape[0] > 0:
            for i in range(B):
                Xb[i, :] = X[order[start + i]]
                Yb[i, :] = Y[order[start + i]]
            x = Xb[:B]
            y = Yb[:B]
            if sw.shape[0] > 0:
                for i in range(B):
                    wb[i] = sw[order[start + i]]
                w = wb[:B]
            else:
                w = sw[0:0]
        else:
            x = X[start:start + B]
            y = Y[start:start + B]
            w = sw[start:start + B] if sw.shape[0] > 0 else sw[0:0]
        # forward
        for l in range(L):
            inp = x if l == 0 else A[l - 1][:B]
            out = Z[:B] if l == L - 1 else A[l][:B]
            _forward(inp, W[l], b[l], codes[l], alphas[l], out, A[l][:B])
        total += _loss(A[L - 1][:B], Z[:B], y, loss_code, w)
        # backward
        _output_delta(A[L - 1][:B], y, codes[L - 1], alphas[L - 1], fused, w,
                      delta[L - 1][:B])
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
                    eps, bc1, bc2, weight_decay, l1, l2, 1.0, clip_value)
            _update(b[l], db[l], S1b[l], S2b[l], kind, lr, momentum, nesterov, beta1, beta2,
                    eps, bc1, bc2, weight_decay, 0.0, 0.0, 1.0, clip_value)
    return total


# ---------------------------------------------------------------------- the backend

class NumbaBackend(NumPyBackend):
    """NumPy's backend with its kernels replaced by compiled fused loops (host arrays)."""

    name = "numba"

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        # (ids of the arrays, the typed lists built from them, the arrays) for train_epoch
        self._lists: tuple[Any, ...] | None = None

    def forward(self, A_prev: Array, W: Array, b: Array, activation: Activation,
                Z: Array, A: Array) -> None:
        _forward(A_prev, W, b, int(activation.code), activation.alpha, Z, A)

    def output_delta(self, A: Array, Y: Array, activation: Activation, loss: Loss,
                     delta: Array, sample_weight: Array | None = None) -> None:
        _output_delta(A, Y, int(activation.code), activation.alpha, loss.fused_with(activation),
                      _NO_WEIGHT[A.dtype] if sample_weight is None else sample_weight, delta)

    def delta(self, delta_next: Array, W_next: Array, A: Array, activation: Activation,
              delta: Array) -> None:
        _delta(delta_next, W_next, A, int(activation.code), activation.alpha, delta)

    def weight_grad(self, delta: Array, A_prev: Array, dW: Array, db: Array) -> None:
        _weight_grad(delta, A_prev, dW, db)

    def loss(self, A: Array, Z: Array, Y: Array, activation: Activation, loss: Loss,
             total: Array, sample_weight: Array | None = None) -> None:
        total[0] += _loss(A, Z, Y, loss.code,
                          _NO_WEIGHT[A.dtype] if sample_weight is None else sample_weight)

    def batch_norm_forward(self, Z: Array, gamma: Array, beta: Array, running_mean: Array,
                           running_var: Array, train: bool, momentum: float, eps: float,
                           activation: Activation, Zhat: Array, mean: Array, inv_std: Array,
                           A: Array) -> None:
        _batch_norm_forward(Z, gamma, beta, running_mean, running_var, bool(train),
                            float(momentum), float(eps), int(activation.code),
                            activation.alpha, Zhat, mean, inv_std, A)

    def batch_norm_backward(self, G: Array, Zhat: Array, gamma: Array, inv_std: Array,
                            dgamma: Array, dbeta: Array, out: Array) -> None:
        _batch_norm_backward(G, Zhat, gamma, inv_std, dgamma, dbeta, out)

    def activation_backward(self, G: Array, A: Array, activation: Activation,
                            out: Array) -> None:
        _activation_backward(G, A, int(activation.code), activation.alpha, out)

    def add(self, x: Array, y: Array, out: Array) -> None:
        _add(x, y, out)

    def update(self, param: Array, grad: Array, state: tuple[Array, ...],
               rule: UpdateRule) -> None:
        s1 = state[0] if len(state) > 0 else param
        s2 = state[1] if len(state) > 1 else param
        scale = rule.grad_scale
        scale = float(scale[0]) if isinstance(scale, np.ndarray) else float(scale)
        _update(param, grad, s1, s2, rule.kind, rule.learning_rate, rule.momentum,
                rule.nesterov, rule.beta1, rule.beta2, rule.eps, rule.bias_correction1,
                rule.bias_correction2, rule.weight_decay, rule.l1, rule.l2, scale,
                float(rule.clip_value))

    def train_epoch(self, network: Any, X: Array, Y: Array, order: Array | None,
                    batch_size: int, optimizer: Any, learning_rate: float, l1: float,
                    l2: float, clip_norm: float | None, total: Array,
                    clip_value: float | None = None, rates: np.ndarray | None = None,
                    sample_weight: Array | None = None) -> bool:
        if (clip_norm is not None or any(network.dropout) or any(network.batch_norm)
                or any(network.residual) or max(network.layer_sizes) > FUSED_MAX_WIDTH
                or (order is not None and order.shape[0] != X.shape[0])):
            return False                 # (an order over a subset of the rows: the loop)
        ws = network.workspace(batch_size)
        grads = network.gradients()
        state = optimizer.state
        # state per parameter (W1, b1, W2, ...); a missing buffer is passed as the parameter
        s1 = [st[0] if len(st) > 0 else p for st, p in zip(state, network.parameters())]
        s2 = [st[1] if len(st) > 1 else p for st, p in zip(state, network.parameters())]
        arrays = (network.W, network.b, ws.A, ws.delta, [g for g, _ in grads],
                  [g for _, g in grads], s1[0::2], s1[1::2], s2[0::2], s2[1::2])
        W, b, A, delta, dW, db, S1W, S1b, S2W, S2b = self._typed_lists(arrays)
        codes = np.array([int(a.code) for a in network.activations], dtype=np.int64)
        alphas = np.array([a.alpha for a in network.activations], dtype=np.float64)
        rule, _ = optimizer.rules(learning_rate, l1, l2)    # advances optimizer.t by one
        t0 = optimizer.t - 1
        n_batches = -(-X.shape[0] // batch_size)
        if rates is None:
            rates = np.full(n_batches, rule.learning_rate, dtype=np.float64)
        loss = network.loss_function
        total[0] += _train_epoch(
            X, Y, _NO_ORDER if order is None else order, batch_size, W, b, codes, alphas,
            loss.code, loss.fused_with(network.activations[-1]), ws.X, ws.Y, A, ws.Z, delta,
            dW, db, S1W, S1b, S2W, S2b, rule.kind, np.asarray(rates, dtype=np.float64),
            rule.momentum, rule.nesterov, rule.beta1, rule.beta2, rule.eps, t0,
            rule.weight_decay, l1, l2, float(clip_value or 0.0),
            _NO_WEIGHT[network.dtype] if sample_weight is None else sample_weight, ws.weight)
        optimizer.t = t0 + n_batches
        return True

    def _typed_lists(self, arrays: tuple[list[Array], ...]) -> tuple[Any, ...]:
        """numba typed lists of the per-layer arrays, kept while the arrays stay the same."""
        key = tuple(id(a) for group in arrays for a in group)
        if self._lists is None or self._lists[0] != key:
            self._lists = None                           # release the old arrays first
            typed = tuple(List(group) for group in arrays)
            # the arrays themselves are kept so that their ids stay theirs
            self._lists = (key, typed, tuple(tuple(g) for g in arrays))
        return self._lists[1]

    def _sum_squares(self, x: Array, scale: float) -> float:
        return _sum_squares(x, scale)

    def compile_notice(self, dtype: Any) -> str | None:
        """Numba compiles on first use (~10 s for every kernel); loading them from the disk
        cache takes well under a second and gets no notice."""
        dtype = np.dtype(dtype)
        if any(getattr(sig[0], "dtype", None) == from_dtype(dtype) for sig in _forward.signatures):
            return None                                   # already run in this process
        if CACHE and os.path.exists(getattr(getattr(getattr(_forward, "_cache", None),
                                                    "_cache_file", None), "_index_path", "")):
            return None                                   # cached on disk
        where = "on disk for later runs" if CACHE else "in memory for this process only"
        return (f"backprop: compiling the numba kernels for {dtype.name} (first use: a few "
                f"seconds; kept {where})")
