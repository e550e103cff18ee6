"""The kernel contract every backend implements: the one place it is defined.

Shapes: a batch has B rows. Layer l has ``W`` (n_l, n_{l-1}), ``b`` (n_l,), and the batch
arrays ``Z``, ``A``, ``delta`` of shape (B, n_l). Every kernel writes into the arrays it is
given and returns None; none allocates in the training loop. Arrays are the backend's own
(NumPy arrays on the CPU, CuPy arrays on the GPU), C-contiguous, of one float dtype.

``delta`` is the error of the batch-mean loss: ``delta = ∂(mean_b L_b)/∂Z``, i.e. the seeds'
per-sample δ divided by B. With it the weight gradient is the plain product ``δᵀ A_prev`` and
the bias gradient the column sum, which are the batch means of the per-sample gradients.

Sample weights (``sample_weight``, a (B,) array of the batch's dtype, >= 0): the batch loss is
the weighted mean ``Σ_b w_b L_b / Σ_b w_b`` (scikit-learn's MLP, ``np.average(...,
weights=sample_weight)`` per batch), so ``delta_b = (∂L_b/∂z_b) · (w_b · (1 / Σ_b w_b))``, the
sum in float64 and its reciprocal rounded to the dtype; a batch whose weights are all zero
gets ``delta = 0`` (no NaN). The loss kernel then adds ``Σ_b w_b L_b``. ``None`` is the
unweighted algorithm above, unchanged.

The NumPy backend is the batched reference; the others override kernels to make them faster
and must keep these signatures (a test compares them with ``inspect.signature``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from ..activations import Activation
from ..losses import Loss
from ..optimizers import UpdateRule

Array = Any  # numpy.ndarray or cupy.ndarray


class Backend(ABC):
    """A device and the implementation of the kernels on it."""

    #: the backend's name: "numpy", "numba" or "cupy"
    name: str = ""
    #: the array module (numpy or cupy)
    xp: Any = np

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    # ------------------------------------------------------------------ plumbing

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """An uninitialised C-contiguous array on this device."""
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """A zeroed C-contiguous array on this device."""
        return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """``x`` as a C-contiguous array of this device (no copy when it already is one)."""
        return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=dtype))

    def to_numpy(self, x: Array) -> np.ndarray:
        """A host NumPy array with the values of ``x``."""
        return np.asarray(x)

    def is_native(self, x: Any) -> bool:
        """True when ``x`` is already an array of this backend's device."""
        return isinstance(x, np.ndarray)

    def all_finite(self, x: Array) -> bool:
        """True when no element of ``x`` is NaN or ±Inf."""
        return bool(self.xp.isfinite(x).all())

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def compile_notice(self, dtype: Any) -> str | None:
        """A line to show (``fit(verbose=True)``) before this backend's kernels first run for
        ``dtype`` in this process when they must be compiled first, which takes seconds;
        None when there is nothing to compile."""
        return None

    def seed(self, seed: int | None) -> None:
        """Seed the random numbers this backend draws (dropout masks)."""
        self._rng = np.random.default_rng(seed)

    def rng_state(self) -> dict[str, Any]:
        """The dropout generator's state as JSON-serialisable values: NumPy's
        ``bit_generator.state`` dict on the CPU (``{"bit_generator": "PCG64", ...}``).
        :meth:`set_rng_state` puts it back; :mod:`backprop.state` saves it."""
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`rng_state` of a backend with the same generator;
        ValueError for another ``bit_generator``."""
        if state.get("bit_generator") != self.rng_state()["bit_generator"]:
            raise ValueError(f"rng state: expected a {self.rng_state()['bit_generator']} state, "
                             f"got {state.get('bit_generator')!r}")
        self._rng.bit_generator.state = state

    def take_rows(self, X: Array, index: Array, out: Array) -> None:
        """``out[i] = X[index[i]]``: gather the rows of a shuffled batch."""
        self.xp.take(X, index, axis=0, out=out)

    def copy(self, src: Array, out: Array) -> None:
        """``out[...] = src``."""
        out[...] = src

    # ------------------------------------------------------------------ kernels

    @abstractmethod
    def forward(self, A_prev: Array, W: Array, b: Array, activation: Activation,
                Z: Array, A: Array) -> None:
        """``Z = A_prev @ W.T + b`` and ``A = σ(Z)``.

        A_prev (B, n_{l-1}); W (n_l, n_{l-1}); b (n_l,); Z, A (B, n_l). ``Z`` may be the same
        array as ``A``: then only the activations are kept (hidden layers need no Z, since
        every σ' is computed from A).
        """

    @abstractmethod
    def output_delta(self, A: Array, Y: Array, activation: Activation, loss: Loss,
                     delta: Array, sample_weight: Array | None = None) -> None:
        """``delta = (∂L/∂ŷ ⊙ σ'(z)) / B`` for the output layer.

        A (B, n_L) is ŷ; Y (B, n_L) the targets (one-hot rows for cross_entropy). Fused as
        ``(ŷ - y) / B`` when ``loss.fused_with(activation)``; for mse with another activation
        ``(ŷ - y) ⊙ σ'(a) / B`` (softmax: ``a ⊙ (g - Σ_j g_j a_j) / B`` with g = ŷ - y).
        With ``sample_weight`` (B,), row b is scaled by ``w_b · (1 / Σ w)`` instead of 1 / B
        (0 when Σ w = 0; see the module docstring).
        """

    @abstractmethod
    def delta(self, delta_next: Array, W_next: Array, A: Array, activation: Activation,
              delta: Array) -> None:
        """``delta = (delta_next @ W_next) ⊙ σ'(A)``: the error of a hidden layer.

        delta_next (B, n_{l+1}); W_next (n_{l+1}, n_l); A, delta (B, n_l). For softmax the
        Jacobian product ``a ⊙ (g - Σ_j g_j a_j)`` with g = delta_next @ W_next.
        """

    @abstractmethod
    def weight_grad(self, delta: Array, A_prev: Array, dW: Array, db: Array) -> None:
        """``dW = deltaᵀ @ A_prev`` (n_l, n_{l-1}) and ``db = Σ_rows delta`` (n_l,).

        The per-sample outer products δ a_prevᵀ summed as one matrix product; since delta is
        already divided by B these are the batch means.
        """

    @abstractmethod
    def loss(self, A: Array, Z: Array, Y: Array, activation: Activation, loss: Loss,
             total: Array, sample_weight: Array | None = None) -> None:
        """``total[0] += Σ_samples L(ŷ, y)``: the summed per-sample loss of a batch
        (with ``sample_weight`` (B,): ``Σ_b w_b L_b``, each per-element term times its row's
        weight in float64).

        A, Z, Y (B, n_L); ``total`` a one-element float64 array on this device, so the loss
        of many batches is read back once and accumulates in float64. Exact to the dtype's
        rounding while the true value is representable: every per-element term is formed
        non-negative before it is summed in float64 (cross-entropy per sample as
        ``Σ_j y_j ((m - z_j) + log Σ_k exp(z_k - m))`` with m the row maximum, so a large m
        never swallows the log-sum). The cross-entropies use Z (see :mod:`backprop.losses`)
        and never take log(0).
        """

    @abstractmethod
    def update(self, param: Array, grad: Array, state: tuple[Array, ...],
               rule: UpdateRule) -> None:
        """One optimizer step for one parameter, in place, in one pass.

        g = clip(rule.grad_scale · grad, -c, c) + rule.l1 · sign(param) + 2 rule.l2 · param
        (c = ``rule.clip_value``, no clipping when 0; NaN stays NaN), then the
        rule of :mod:`backprop.optimizers` for ``rule.kind``; ``state`` holds that rule's
        buffers (none for SGD, v for momentum, s for RMSProp, m and v for Adam).
        """

    @abstractmethod
    def grad_scale(self, grads: Sequence[Array], max_norm: float, out: Array) -> None:
        """``out[0] = min(1, max_norm / ‖g‖)`` with ‖g‖ the L2 norm over all ``grads``,
        its squares summed in float64 and scaled where they would overflow, so ‖g‖ is exact
        to rounding whenever it is representable.

        Gradient clipping by global norm, the seeds' g ← min(‖g‖, c) · g / ‖g‖; the factor
        stays on the device and is passed to :meth:`update` as ``rule.grad_scale``.
        """

    @abstractmethod
    def dropout(self, A: Array, rate: float, mask: Array, out: Array) -> None:
        """Inverted dropout: ``mask = (u >= rate) / (1 - rate)`` for uniform u, ``out = A ⊙ mask``."""

    @abstractmethod
    def multiply(self, x: Array, y: Array) -> None:
        """``x *= y`` elementwise (dropout's mask on a delta)."""

    # ------------------------------------------------ batch normalization, residual connections

    @abstractmethod
    def batch_norm_forward(self, Z: Array, gamma: Array, beta: Array, running_mean: Array,
                           running_var: Array, train: bool, momentum: float, eps: float,
                           activation: Activation, Zhat: Array, mean: Array, inv_std: Array,
                           A: Array) -> None:
        """Batch normalization of a hidden layer's ``Z`` followed by its activation:
        ``Zhat = (Z - mean) ⊙ inv_std`` and ``A = σ(gamma ⊙ Zhat + beta)`` (per column).

        Z, Zhat, A (B, n); gamma, beta, running_mean, running_var, mean, inv_std (n,).
        ``train``: ``mean = Σ_rows Z / B``, ``var = Σ_rows (Z - mean)² / B`` (biased), and,
        when ``momentum`` > 0, ``running_mean ← (1 - momentum) running_mean + momentum mean``,
        ``running_var ← (1 - momentum) running_var + momentum var · B / (B - 1)`` (the
        unbiased variance, as ``torch.nn.BatchNorm1d``; B = 1: ``var`` itself, 0);
        ``momentum`` = 0 leaves them untouched. Otherwise (evaluation) ``mean = running_mean``,
        ``var = running_var``. Then ``inv_std = 1 / √(var + eps)``. ``Zhat`` may be ``Z``; A
        is another array. Softmax is applied per row.
        """

    @abstractmethod
    def batch_norm_backward(self, G: Array, Zhat: Array, gamma: Array, inv_std: Array,
                            dgamma: Array, dbeta: Array, out: Array) -> None:
        """The backward pass of a training-mode :meth:`batch_norm_forward`, exact through
        the batch statistics: with ``G = ∂L/∂(gamma ⊙ Zhat + beta)`` (B, n),
        ``dbeta = Σ_rows G``, ``dgamma = Σ_rows G ⊙ Zhat`` (n,) and
        ``out = ∂L/∂Z = gamma ⊙ inv_std ⊙ (G - dbeta / B - Zhat ⊙ dgamma / B)`` (B, n);
        ``out`` may be ``G``.
        """

    # Batch normalization of a batch split across processes (backprop.distributed): the
    # kernels above with their column sums taken apart, so that the sums can be added over
    # the processes between them (N processes then compute what one computes for the global
    # batch of ``rows`` rows, B here being this process's part, which may be 0 rows):
    #   forward:  batch_norm_sums(Z, None, mean); Σ over processes; mean *= 1/rows;
    #             batch_norm_sums(Z, mean, s); Σ over processes;
    #             batch_norm_finish(mean, s, rows, ...); batch_norm_apply(Z, mean, inv_std, ...)
    #   backward: batch_norm_backward_sums(G, Zhat, dgamma, dbeta); their Σ over processes;
    #             batch_norm_backward_apply(G, Zhat, gamma, inv_std, Σdgamma, Σdbeta, rows, out)
    # A single process uses the fused batch_norm_forward / batch_norm_backward instead.

    @abstractmethod
    def batch_norm_sums(self, Z: Array, center: Array | None, out: Array) -> None:
        """``out = Σ_rows Z`` (``center`` None), else ``out = Σ_rows (Z - center)²``:
        Z (B, n), center, out (n,); B = 0 gives zeros."""

    @abstractmethod
    def batch_norm_finish(self, mean: Array, squares: Array, rows: int, running_mean: Array,
                          running_var: Array, momentum: float, eps: float,
                          inv_std: Array) -> None:
        """Training statistics from the global batch's ``mean`` and ``squares``
        ``= Σ_rows (Z - mean)²`` over its ``rows`` rows: ``var = squares / rows``, the running
        averages moved as in :meth:`batch_norm_forward` (momentum 0: untouched; the unbiased
        variance ``squares / (rows - 1)``, rows = 1: ``var``), ``inv_std = 1 / √(var + eps)``.
        All (n,); ``inv_std`` may be ``squares``."""

    @abstractmethod
    def batch_norm_apply(self, Z: Array, mean: Array, inv_std: Array, gamma: Array,
                         beta: Array, activation: Activation, Zhat: Array, A: Array) -> None:
        """``Zhat = (Z - mean) ⊙ inv_std``, ``A = σ(gamma ⊙ Zhat + beta)``: the second half of
        :meth:`batch_norm_forward`. Z, Zhat, A (B, n), the rest (n,); ``Zhat`` may be ``Z``."""

    @abstractmethod
    def batch_norm_backward_sums(self, G: Array, Zhat: Array, dgamma: Array,
                                 dbeta: Array) -> None:
        """``dbeta = Σ_rows G``, ``dgamma = Σ_rows G ⊙ Zhat``: G, Zhat (B, n); dgamma,
        dbeta (n,)."""

    @abstractmethod
    def batch_norm_backward_apply(self, G: Array, Zhat: Array, gamma: Array, inv_std: Array,
                                  dgamma: Array, dbeta: Array, rows: int, out: Array) -> None:
        """``out = gamma ⊙ inv_std ⊙ (G - dbeta / rows - Zhat ⊙ dgamma / rows)`` with the
        global batch's sums ``dgamma``, ``dbeta`` and row count: the second half of
        :meth:`batch_norm_backward`; ``out`` may be ``G``."""

    @abstractmethod
    def activation_backward(self, G: Array, A: Array, activation: Activation,
                            out: Array) -> None:
        """``out = G ⊙ σ'(A)`` (softmax: ``a ⊙ (g - Σ_j g_j a_j)`` per row), σ' from the
        activation's output A (B, n); ``out`` may be ``G``. :meth:`delta` fused with the
        product where a layer needs ``G`` kept (a residual connection's)."""

    @abstractmethod
    def add(self, x: Array, y: Array, out: Array) -> None:
        """``out = x + y`` elementwise, one shape (a residual connection: ``A = σ(Ẑ) + A_prev``
        forward, ``∂L/∂A_prev += ∂L/∂A`` backward); ``out`` may be ``x``."""

    @abstractmethod
    def scale(self, x: Array, factor: float) -> None:
        """``x *= factor`` for a Python float, in x's dtype: a data-parallel replica turns
        its output delta's 1/b (its b rows) into the global batch's 1/B
        (:mod:`backprop.distributed`)."""

    def penalty(self, weights: Sequence[Array], l1: float, l2: float) -> float:
        """``l1 Σ|W| + l2 Σ W²`` over every W of ``weights``, summed in float64: the
        regularization term of the loss (biases are not penalised). Called once per epoch,
        not in the training step, so it may allocate."""
        total = 0.0
        for W in weights:
            w = W.astype(np.float64)
            if l1:
                total += l1 * float(abs(w).sum())
            if l2:
                total += l2 * float((w * w).sum())
        return total

    # ----------------------------------------------- composite steps with defaults

    def sgd_weight_update(self, delta: Array, A_prev: Array, W: Array, b: Array,
                          rule: UpdateRule, dW: Array, db: Array) -> None:
        """Plain SGD for one layer without keeping the gradient:
        ``W ← (1 - 2ηλ₂) W - η δᵀ A_prev``, ``b ← b - η Σ_rows δ``.

        ``dW``, ``db`` are scratch. The default computes :meth:`weight_grad` then
        :meth:`update`; a backend with BLAS gemm folds the update into the product.
        Only called for SGD without l1 or clipping (by norm or by value).
        """
        self.weight_grad(delta, A_prev, dW, db)
        self.update(W, dW, (), rule)
        self.update(b, db, (), UpdateRule(rule.kind, rule.learning_rate))

    def train_epoch(self, network: Any, X: Array, Y: Array, order: Array | None,
                    batch_size: int, optimizer: Any, learning_rate: float, l1: float,
                    l2: float, clip_norm: float | None, total: Array,
                    clip_value: float | None = None, rates: np.ndarray | None = None,
                    sample_weight: Array | None = None) -> bool:
        """Optionally run a whole epoch of mini-batch steps in one call.

        Does what :func:`backprop.training.run_epoch` does with
        :meth:`backprop.network.Network.train_step`: batches of ``batch_size`` rows of X, Y
        (and of ``sample_weight`` (N,), when given) in ``order`` (int64 on this device, the
        rows to train on: all N, or N - 1 when fit leaves a 1-row batch out; None: all rows
        in the stored order), the last one partial, the summed (weighted) loss of all of them
        added to ``total[0]``. ``rates`` (host float64, one per batch), when given, is each
        step's learning rate (a warm-up) instead of ``learning_rate``; ``clip_value`` clips
        each gradient component (see :meth:`update`). Returns False, having done nothing,
        when this backend has no such path for the configuration; the Python loop then runs
        the steps one kernel at a time.
        """
        return False
