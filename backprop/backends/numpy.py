"""The NumPy backend: BLAS matrix products and in-place ufuncs.

This is the batched reference that every other backend is tested against. Each kernel is a
matrix product (``np.matmul(..., out=)``) followed by in-place elementwise passes; the scratch
arrays those passes need belong to the backend instance (one per network), one buffer per
trailing shape and use, grown to the most rows asked for and sliced for fewer, so scratch is
bounded by the network's own sizes, never by the batch sizes it has seen. With SciPy present,
the matrix products go through its BLAS gemm, C ← α op(A) op(B) + β C, which folds work into
the product: the bias (Z pre-filled with b, β = 1) and plain SGD's update
(``W.T ← β W.T - η A_prevᵀ δ``).

Reductions are exact to the dtype's rounding while the true value is representable: each
loss term is formed non-negative per element (for cross-entropy ``y_j ((m - z_j) + log Σ
exp(z - m))`` with m the row maximum, so no large terms cancel) and summed in float64; the
clipping norm sums squares in float64, scaled by a power of two when they would overflow.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import losses
from ..activations import Activation, Code
from ..losses import Loss
from ..optimizers import ADAM_KIND, MOMENTUM_KIND, RMSPROP_KIND, SGD_KIND, UpdateRule
from .base import Array, Backend

try:  # BLAS with alpha/beta, so plain SGD needs no separate update pass
    from scipy.linalg import blas as _blas
except ImportError:  # pragma: no cover - scipy is optional
    _blas = None


#: :meth:`NumPyBackend._scratch` uses: (B, n) batch arrays 0, 1; (B, 1) row sums ROW, ROW2 (apart,
#: so that n = 1 never aliases them); parameter-shaped PARAM, PARAM2; flat float64 F64; a
#: batch normalization column vector (n,) COLUMN
ROW, ROW2, PARAM, PARAM2, F64, COLUMN = 2, 3, 4, 5, 6, 7
FLOAT64 = np.dtype(np.float64)


class NumPyBackend(Backend):
    """Kernels as NumPy ufunc sequences on host arrays."""

    name = "numpy"
    xp = np

    def __init__(self, device: str = "cpu") -> None:
        super().__init__(device)
        self._buffers: dict[tuple[Any, ...], np.ndarray] = {}
        self.seed(None)

    def _scratch(self, shape: tuple[int, ...], dtype: np.dtype, use: int = 0) -> np.ndarray:
        """A scratch array of ``shape``: the leading rows of the buffer kept for ``use``, the
        trailing shape and dtype, which grows to the most rows asked for (a view when fewer
        are asked, so only the partial batch or inference pays for one)."""
        key = (shape[1:], dtype, use)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            self._buffers[key] = None                 # release the smaller one first
            buf = self._buffers[key] = np.empty(shape, dtype=dtype)
        return buf if buf.shape[0] == shape[0] else buf[:shape[0]]

    def take_rows(self, X: Array, index: Array, out: Array) -> None:
        np.take(X, index, axis=0, out=out, mode="clip")   # mode="raise" buffers a copy

    # ------------------------------------------------------------------ activations

    def _activate(self, Z: np.ndarray, activation: Activation, A: np.ndarray) -> None:
        """``A = σ(Z)`` in place (A may be Z)."""
        code = activation.code
        if code == Code.IDENTITY:
            if A is not Z:
                np.copyto(A, Z)
        elif code == Code.SIGMOID:          # σ(z) = ½ (1 + tanh(z/2)): no overflow
            np.multiply(Z, 0.5, out=A)
            np.tanh(A, out=A)
            A *= 0.5
            A += 0.5
        elif code == Code.TANH:
            np.tanh(Z, out=A)
        elif code == Code.RELU:
            np.maximum(Z, 0, out=A)
        elif code == Code.LEAKY_RELU:       # max(z, 0) + α min(z, 0)
            s = self._scratch(Z.shape, Z.dtype)
            np.minimum(Z, 0, out=s)
            s *= activation.alpha
            np.maximum(Z, 0, out=A)
            A += s
        elif code == Code.ELU:               # max(z, 0) + α expm1(min(z, 0))
            s = self._scratch(Z.shape, Z.dtype)
            np.minimum(Z, 0, out=s)
            np.expm1(s, out=s)
            s *= activation.alpha
            np.maximum(Z, 0, out=A)
            A += s
        elif code == Code.SOFTMAX:
            row = self._scratch((Z.shape[0], 1), Z.dtype, ROW)
            np.max(Z, axis=1, keepdims=True, out=row)
            np.subtract(Z, row, out=A)
            np.exp(A, out=A)
            np.sum(A, axis=1, keepdims=True, out=row)
            A /= row
        else:
            raise ValueError(f"unknown activation code {code}")

    def _backprop_activation(self, G: np.ndarray, A: np.ndarray, activation: Activation) -> None:
        """``G ← G ⊙ σ'(a)`` in place (softmax: ``G ← a ⊙ (G - Σ_j G_j a_j)``)."""
        code = activation.code
        if code == Code.IDENTITY:
            return
        s = self._scratch(A.shape, A.dtype)
        if code == Code.SIGMOID:
            np.subtract(1, A, out=s)
            s *= A
        elif code == Code.TANH:
            np.multiply(A, A, out=s)
            np.subtract(1, s, out=s)
        elif code == Code.RELU:             # masks as arithmetic: masked copies are 10x slower
            np.greater(A, 0, out=s)
        elif code == Code.LEAKY_RELU:       # α + (1 - α) [a > 0]
            np.greater(A, 0, out=s)
            s *= 1.0 - activation.alpha
            s += activation.alpha
        elif code == Code.ELU:              # min(a, 0) + α + (1 - α) [a > 0]
            step = self._scratch(A.shape, A.dtype, 1)
            np.greater(A, 0, out=step)
            step *= 1.0 - activation.alpha
            np.minimum(A, 0, out=s)
            s += activation.alpha
            s += step
        elif code == Code.SOFTMAX:
            row = self._scratch((A.shape[0], 1), A.dtype, ROW)
            np.multiply(G, A, out=s)
            np.sum(s, axis=1, keepdims=True, out=row)
            G -= row
            G *= A
            return
        else:
            raise ValueError(f"unknown activation code {code}")
        G *= s

    # ------------------------------------------------------------------ kernels

    def forward(self, A_prev: Array, W: Array, b: Array, activation: Activation,
                Z: Array, A: Array) -> None:
        if _gemm(W.dtype) is None:
            np.matmul(A_prev, W.T, out=Z)
            Z += b
        else:  # Z pre-filled with b, then Z ← A_prev Wᵀ + Z: the bias rides in the gemm
            np.copyto(Z, b)
            _matmul(A_prev, W.T, Z, beta=1.0)
        self._activate(Z, activation, A)

    def output_delta(self, A: Array, Y: Array, activation: Activation, loss: Loss,
                     delta: Array, sample_weight: Array | None = None) -> None:
        np.subtract(A, Y, out=delta)
        if not loss.fused_with(activation):
            self._backprop_activation(delta, A, activation)
        if sample_weight is None:
            delta *= 1.0 / A.shape[0]
            return
        row = self._scratch((A.shape[0], 1), A.dtype, ROW)    # w_b · (1 / Σ w) per row
        np.multiply(sample_weight.reshape(-1, 1), weight_norm(sample_weight), out=row)
        delta *= row

    def delta(self, delta_next: Array, W_next: Array, A: Array, activation: Activation,
              delta: Array) -> None:
        _matmul(delta_next, W_next, delta)
        self._backprop_activation(delta, A, activation)

    def weight_grad(self, delta: Array, A_prev: Array, dW: Array, db: Array) -> None:
        _matmul(delta.T, A_prev, dW)
        np.sum(delta, axis=0, out=db)

    def loss(self, A: Array, Z: Array, Y: Array, activation: Activation, loss: Loss,
             total: Array, sample_weight: Array | None = None) -> None:
        s = self._scratch(A.shape, A.dtype)              # the per-element terms, all >= 0
        if loss.code == losses.MSE:                    # ½ (ŷ - y)², squared in float64
            np.subtract(A, Y, out=s)
            if sample_weight is None:
                total[0] += 0.5 * self._sum_squares(s, 1.0)
            else:
                total[0] += 0.5 * self._weighted_sum64(s, sample_weight, square=True)
            return
        if loss.code == losses.BINARY_CROSS_ENTROPY:   # z ([z > 0] - y) + log1p(exp(-|z|))
            t = self._scratch(A.shape, A.dtype, 1)
            np.abs(Z, out=t)
            np.negative(t, out=t)
            np.exp(t, out=t)
            np.log1p(t, out=t)
            np.greater(Z, 0, out=s)
            s -= Y
            s *= Z
            s += t
        elif loss.code == losses.CROSS_ENTROPY:        # y_j ((m - z_j) + log Σ_k exp(z_k - m))
            m = self._scratch((A.shape[0], 1), A.dtype, ROW)
            lse = self._scratch((A.shape[0], 1), A.dtype, ROW2)
            np.max(Z, axis=1, keepdims=True, out=m)
            np.subtract(Z, m, out=s)
            np.exp(s, out=s)
            np.sum(s, axis=1, keepdims=True, out=lse)
            np.log(lse, out=lse)
            np.subtract(m, Z, out=s)
            s += lse
            s *= Y
        else:
            raise ValueError(f"unknown loss code {loss.code}")
        if sample_weight is None:
            total[0] += self._sum64(s)
        else:
            total[0] += self._weighted_sum64(s, sample_weight, square=False)

    def _weighted_sum64(self, x: Array, weight: Array, square: bool) -> float:
        """``Σ_b w_b Σ_j x_bj`` (``x_bj²`` when ``square``) of a batch x (B, n), every
        product formed in float64 in a scratch, so nothing is allocated."""
        y = self._scratch((x.size,), FLOAT64, F64).reshape(x.shape)
        np.copyto(y, x)
        if square:
            y *= y
        y *= weight.reshape(-1, 1)
        return float(y.sum())

    def _sum64(self, x: Array) -> float:
        """Σ x accumulated in float64, without allocating: x is copied into a float64 scratch
        first (squares: :meth:`_sum_squares`)."""
        if x.dtype == FLOAT64:
            return float(x.sum())
        y = self._scratch((x.size,), FLOAT64, F64)
        np.copyto(y, x.reshape(-1))
        return float(y.sum())

    def _effective_grad(self, param: Array, grad: Array, rule: UpdateRule) -> Array:
        """g = clip(grad_scale · grad, -c, c) + l1 · sign(p) + 2 l2 · p, c = rule.clip_value
        when > 0 (the gradient itself when plain)."""
        scale = rule.grad_scale
        if (isinstance(scale, (int, float)) and scale == 1.0 and rule.l1 == 0 and rule.l2 == 0
                and not rule.clip_value):
            return grad
        g = self._scratch(param.shape, param.dtype, PARAM2)
        np.multiply(grad, scale[0] if isinstance(scale, np.ndarray) else scale, out=g)
        if rule.clip_value:
            c = param.dtype.type(rule.clip_value)
            np.clip(g, -c, c, out=g)
        s = self._scratch(param.shape, param.dtype, PARAM)
        if rule.l1:
            np.sign(param, out=s)
            s *= rule.l1
            g += s
        if rule.l2:
            np.multiply(param, 2.0 * rule.l2, out=s)
            g += s
        return g

    def update(self, param: Array, grad: Array, state: tuple[Array, ...],
               rule: UpdateRule) -> None:
        g = self._effective_grad(param, grad, rule)
        s = self._scratch(param.shape, param.dtype, PARAM)
        lr = rule.learning_rate
        if rule.weight_decay:                        # AdamW: p ← p - η λ p
            param *= 1.0 - lr * rule.weight_decay
        if rule.kind == SGD_KIND:
            np.multiply(g, lr, out=s)
        elif rule.kind == MOMENTUM_KIND:
            (v,) = state
            v *= rule.momentum
            v += g
            if rule.nesterov:
                np.multiply(v, rule.momentum, out=s)
                s += g
                s *= lr
            else:
                np.multiply(v, lr, out=s)
        elif rule.kind == RMSPROP_KIND:
            (sq,) = state
            sq *= rule.beta2
            np.multiply(g, g, out=s)
            s *= 1.0 - rule.beta2
            sq += s
            np.sqrt(sq, out=s)
            s += rule.eps
            np.divide(g, s, out=s)
            s *= lr
        elif rule.kind == ADAM_KIND:
            m, v = state
            m *= rule.beta1
            np.multiply(g, 1.0 - rule.beta1, out=s)
            m += s
            v *= rule.beta2
            np.multiply(g, g, out=s)
            s *= 1.0 - rule.beta2
            v += s
            np.multiply(v, 1.0 / rule.bias_correction2, out=s)   # √(v / c₂) + ε
            np.sqrt(s, out=s)
            s += rule.eps
            np.divide(m, s, out=s)
            s *= lr / rule.bias_correction1
        else:
            raise ValueError(f"unknown update kind {rule.kind}")
        param -= s

    def grad_scale(self, grads: Sequence[Array], max_norm: float, out: Array) -> None:
        norm = math.sqrt(sum(self._sum_squares(g, 1.0) for g in grads))
        if math.isinf(norm):              # a square overflowed: scale by a power of two
            top = max(max(float(g.max()), -float(g.min())) for g in grads)
            if math.isfinite(top):
                e = math.frexp(top)[1]
                norm = math.ldexp(math.sqrt(sum(self._sum_squares(g, math.ldexp(1.0, -e))
                                                for g in grads)), e)
        out[0] = 1.0 if norm <= max_norm else max_norm / norm

    def _sum_squares(self, x: Array, scale: float) -> float:
        """Σ (scale · x)², accumulated in float64 (``scale`` a power of two: exact; a float32
        x² never overflows there): the MSE loss and the clipping norm."""
        if x.dtype == FLOAT64 and scale == 1.0:
            return _dot64(x.reshape(-1))
        y = self._scratch((x.size,), FLOAT64, F64)
        np.copyto(y, x.reshape(-1))
        if scale != 1.0:
            y *= scale
        return _dot64(y)

    def dropout(self, A: Array, rate: float, mask: Array, out: Array) -> None:
        self._rng.random(out=mask, dtype=mask.dtype)
        np.greater_equal(mask, rate, out=mask)
        mask *= 1.0 / (1.0 - rate)
        np.multiply(A, mask, out=out)

    def multiply(self, x: Array, y: Array) -> None:
        np.multiply(x, y, out=x)

    def batch_norm_forward(self, Z: Array, gamma: Array, beta: Array, running_mean: Array,
                           running_var: Array, train: bool, momentum: float, eps: float,
                           activation: Activation, Zhat: Array, mean: Array, inv_std: Array,
                           A: Array) -> None:
        if train:
            np.mean(Z, axis=0, out=mean)
            np.subtract(Z, mean, out=Zhat)                 # two passes: no cancellation
            s = self._scratch(Z.shape, Z.dtype)
            np.multiply(Zhat, Zhat, out=s)
            np.mean(s, axis=0, out=inv_std)                # the biased variance, for now
            self._running_stats(mean, inv_std, Z.shape[0], running_mean, running_var, momentum)
        else:
            np.copyto(mean, running_mean)
            np.copyto(inv_std, running_var)
            np.subtract(Z, mean, out=Zhat)
        self._inv_std(inv_std, eps)
        self._scale_shift(Zhat, inv_std, gamma, beta, activation, A)

    def _running_stats(self, mean: Array, var: Array, rows: int, running_mean: Array,
                       running_var: Array, momentum: float) -> None:
        """The running averages moved towards ``mean`` and the unbiased ``var``."""
        if momentum:
            c = self._scratch(mean.shape, mean.dtype, COLUMN)
            running_mean *= 1.0 - momentum
            np.multiply(mean, momentum, out=c)
            running_mean += c
            running_var *= 1.0 - momentum
            np.multiply(var, momentum * rows / max(rows - 1, 1), out=c)
            running_var += c

    @staticmethod
    def _inv_std(var: Array, eps: float) -> None:
        """``var ← 1 / √(var + eps)`` in place."""
        var += eps
        np.sqrt(var, out=var)
        np.divide(1.0, var, out=var)

    def _scale_shift(self, Zhat: Array, inv_std: Array, gamma: Array, beta: Array,
                     activation: Activation, A: Array) -> None:
        """``Zhat *= inv_std``, ``A = σ(gamma Zhat + beta)``: Zhat holds Z - mean."""
        Zhat *= inv_std
        np.multiply(Zhat, gamma, out=A)
        A += beta
        self._activate(A, activation, A)

    def batch_norm_sums(self, Z: Array, center: Array | None, out: Array) -> None:
        if center is None:
            np.sum(Z, axis=0, out=out)
            return
        s = self._scratch(Z.shape, Z.dtype)
        np.subtract(Z, center, out=s)
        np.multiply(s, s, out=s)
        np.sum(s, axis=0, out=out)

    def batch_norm_finish(self, mean: Array, squares: Array, rows: int, running_mean: Array,
                          running_var: Array, momentum: float, eps: float,
                          inv_std: Array) -> None:
        np.divide(squares, rows, out=inv_std)              # the biased variance, for now
        self._running_stats(mean, inv_std, rows, running_mean, running_var, momentum)
        self._inv_std(inv_std, eps)

    def batch_norm_apply(self, Z: Array, mean: Array, inv_std: Array, gamma: Array,
                         beta: Array, activation: Activation, Zhat: Array, A: Array) -> None:
        np.subtract(Z, mean, out=Zhat)
        self._scale_shift(Zhat, inv_std, gamma, beta, activation, A)

    def batch_norm_backward(self, G: Array, Zhat: Array, gamma: Array, inv_std: Array,
                            dgamma: Array, dbeta: Array, out: Array) -> None:
        self.batch_norm_backward_sums(G, Zhat, dgamma, dbeta)
        self.batch_norm_backward_apply(G, Zhat, gamma, inv_std, dgamma, dbeta, G.shape[0], out)

    def batch_norm_backward_sums(self, G: Array, Zhat: Array, dgamma: Array,
                                 dbeta: Array) -> None:
        s = self._scratch(G.shape, G.dtype, 1)
        np.sum(G, axis=0, out=dbeta)
        np.multiply(G, Zhat, out=s)
        np.sum(s, axis=0, out=dgamma)

    def batch_norm_backward_apply(self, G: Array, Zhat: Array, gamma: Array, inv_std: Array,
                                  dgamma: Array, dbeta: Array, rows: int, out: Array) -> None:
        s = self._scratch(G.shape, G.dtype, 1)
        np.multiply(Zhat, dgamma, out=s)                   # Zhat ⊙ dgamma + dbeta
        s += dbeta
        s *= 1.0 / rows
        np.subtract(G, s, out=out)
        c = self._scratch(gamma.shape, gamma.dtype, COLUMN)
        np.multiply(gamma, inv_std, out=c)
        out *= c

    def activation_backward(self, G: Array, A: Array, activation: Activation,
                            out: Array) -> None:
        if out is not G:
            np.copyto(out, G)
        self._backprop_activation(out, A, activation)

    def add(self, x: Array, y: Array, out: Array) -> None:
        np.add(x, y, out=out)

    def scale(self, x: Array, factor: float) -> None:
        np.multiply(x, x.dtype.type(factor), out=x)

    def sgd_weight_update(self, delta: Array, A_prev: Array, W: Array, b: Array,
                          rule: UpdateRule, dW: Array, db: Array) -> None:
        if _gemm(W.dtype) is None:
            return super().sgd_weight_update(delta, A_prev, W, b, rule, dW, db)
        lr = rule.learning_rate
        _matmul(delta.T, A_prev, W, alpha=-lr, beta=1.0 - 2.0 * lr * rule.l2)
        np.sum(delta, axis=0, out=db)
        db *= lr
        b -= db


def weight_norm(sample_weight: Array) -> Any:
    """``1 / Σ w`` of a batch's weights, the sum in float64, rounded to their dtype; 0 when
    every weight is 0 (such a batch contributes no gradient instead of 0/0 = NaN)."""
    total = float(sample_weight.sum(dtype=np.float64))
    return sample_weight.dtype.type(1.0 / total if total > 0 else 0.0)


def _dot64(x: np.ndarray) -> float:
    """``x · x`` for a float64 vector, by SciPy's BLAS when present (see :func:`_gemm`)."""
    return float(_blas.ddot(x, x)) if _blas is not None else float(np.dot(x, x))


def _gemm(dtype: np.dtype) -> Any:
    """SciPy's BLAS gemm for ``dtype``, or None without SciPy.

    When SciPy is present every matrix product of this backend goes through it: NumPy links
    its own OpenBLAS, and alternating calls between the two libraries makes their thread
    pools spin against each other (measured 3x slower on 2 cores).
    """
    if _blas is None:
        return None
    return {np.dtype(np.float32): _blas.sgemm, np.dtype(np.float64): _blas.dgemm}.get(
        np.dtype(dtype))


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, alpha: float = 1.0,
            beta: float = 0.0) -> None:
    """``out ← α a @ b + β out`` in one BLAS call; ``a``, ``b`` may be transposed views.

    With SciPy's gemm (Fortran order) this is ``out.T ← α bᵀ aᵀ + β out.T``: a C-contiguous
    ``out`` is a Fortran-ordered ``out.T``, written in place, and each operand is passed as
    stored with the matching transpose flag, so nothing is copied. Without SciPy only
    α = 1, β = 0 is needed (np.matmul).
    """
    gemm = _gemm(out.dtype)
    if gemm is None:
        np.matmul(a, b, out=out)
        return
    x, trans_x = _fortran(b.T)
    y, trans_y = _fortran(a.T)
    result = gemm(alpha, x, y, beta=beta, c=out.T, trans_a=trans_x, trans_b=trans_y,
                  overwrite_c=1)
    if not np.shares_memory(result, out):  # pragma: no cover - BLAS made a copy
        np.copyto(out, result.T)


def _fortran(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x`` as a Fortran-ordered array and the gemm transpose flag that gives back ``x``."""
    return (x, 0) if x.flags.f_contiguous else (x.T, 1)
