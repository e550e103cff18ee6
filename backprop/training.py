"""The mini-batch training loop: shuffle, batches, steps, callbacks, progress, history.

Each epoch draws a permutation of the samples (the seeds' ``shuffle(X, Y)``), cuts it into
batches of ``batch_size`` (the last, partial batch included) and takes one optimizer step per
batch. The loss of an epoch is the mean of the per-sample losses seen during its forward
passes, read from the device once per epoch, plus the penalty at the epoch's end.

A step is the unit of consistency: Ctrl-C is deferred to the next step boundary
(:class:`DeferredInterrupt`); an epoch that ends with a non-finite loss or parameter is rolled
back to the last finite one (:class:`backprop.state.Snapshot`); with ``checkpoint=`` the
training state is written at every epoch's end and a later fit resumes from it.
"""

from __future__ import annotations

import math
import numbers
import os
import secrets
import signal
import sys
import threading
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from . import optimizers as _optimizers
from . import state as _state
from .network import weight_sum
from .validation import check_nonnegative_float, check_positive_float, check_positive_int

if TYPE_CHECKING:
    from .network import Network


class History:
    """Per-epoch metrics of a :func:`fit`: ``history["loss"][k]`` is epoch k's loss.

    Keys: ``loss`` (what is minimised: the mean data loss over the epoch's steps, weighted
    Σ w_i L_i / Σ w_i with ``sample_weight``, plus the penalty l1 Σ|W| + l2 Σ W² at the
    parameters the epoch ends with), ``data_loss`` (the mean
    data loss alone, when l1 or l2 is set), ``learning_rate``, ``time`` (seconds),
    ``samples_per_second``; with validation data ``val_loss`` (the validation data loss at the
    end of the epoch plus the same penalty), ``val_data_loss`` (with a penalty) and
    ``val_accuracy`` (classification). ``epochs`` counts the epochs recorded, every key has one
    value per epoch; ``stopped_early`` says a callback stopped training; ``diverged_epoch`` is
    the epoch whose loss or parameters were not finite (its values are not recorded, and the
    network was rolled back to the epoch before), else None. ``diagnostics``: with
    ``fit(diagnostics=True)``, each epoch's :class:`backprop.diagnostics.Diagnosis` of the
    probe batch, None for an epoch not diagnosed (to keep diagnosing within 2% of the
    training time, :class:`backprop.diagnostics.DiagnosisSchedule`) and for the epochs of a
    checkpoint's earlier run (diagnoses are not part of the saved state); else empty.
    ``learning_rate`` is the rate of the epoch's last step: with ``warmup_steps`` the epochs
    of the warm-up log the ramp's rate at their last step, not the schedule's η.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.diagnostics: list[Any] = []
        self.epochs = 0
        self.stopped_early = False
        self.diverged_epoch: int | None = None

    def append(self, logs: dict[str, float]) -> None:
        """Record one epoch; every epoch logs the same keys."""
        if self.epochs and set(logs) != set(self.history):
            raise ValueError(f"History: epoch {self.epochs} logs {sorted(logs)}, the epochs "
                             f"before logged {sorted(self.history)}")
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.epochs += 1

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def keys(self) -> list[str]:
        return list(self.history)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items()}
        return f"History(epochs={self.epochs}, last={last})"


class Callback:
    """Hooks called by :func:`fit`. Return True from :meth:`on_epoch_end` to stop training.

    :meth:`on_train_begin` is called at the start of every fit: a callback that keeps state
    resets it there, so one instance can serve many fits and networks. :meth:`on_train_end`
    is called however training ends (all epochs, a stop, divergence, KeyboardInterrupt).
    """

    def on_train_begin(self, network: "Network") -> None:
        return None

    def on_epoch_end(self, epoch: int, logs: dict[str, float], network: "Network") -> bool | None:
        return None

    def on_train_end(self, network: "Network", history: History) -> None:
        return None


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``best`` is the best value seen, in the monitored quantity's own sign (the largest
    accuracy, the smallest loss), at epoch ``best_epoch``. With ``restore_best`` the training
    state of that epoch (parameters, optimizer buffers and step count) is put back at the end
    of training, whatever ended it (scikit-learn's choice). State is reset at every fit.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        self.monitor = monitor
        self.patience = check_positive_int("patience", patience)
        self.min_delta = check_nonnegative_float("min_delta", min_delta)
        self.restore_best = restore_best
        self._sign = -1.0 if monitor.endswith("accuracy") else 1.0   # accuracy: larger is better
        self.on_train_begin(None)

    def on_train_begin(self, network: "Network | None") -> None:
        """Reset (RuntimeError while the instance serves a fit still running on another
        network: its best epoch would be copied across)."""
        running = getattr(self, "_network", None)
        other = running() if running is not None else None
        if other is not None and other is not network and other._guard._state[2]:
            raise RuntimeError("callbacks: this EarlyStopping is in use by a fit running on "
                               "another network; give each concurrent fit its own instance")
        self._network = None if network is None else weakref.ref(network)
        self.best = self._sign * math.inf
        self.best_epoch = -1
        self._snapshot: _state.Snapshot | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float], network: "Network") -> bool:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not among the logged "
                           f"metrics {sorted(logs)}; pass validation_data to fit for val_*")
        value = logs[self.monitor]
        if self._sign * value < self._sign * self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            if self.restore_best:
                if self._snapshot is None:
                    self._snapshot = _state.Snapshot(network)
                else:
                    self._snapshot.take(network)
            return False
        return epoch - self.best_epoch >= self.patience

    def on_train_end(self, network: "Network", history: History) -> None:
        if self._snapshot is not None:
            self._snapshot.restore(network)
        self._network = None


# ---------------------------------------------------------------- learning-rate schedules

class StepDecay:
    """η_epoch = η · factor^⌊epoch / every⌋."""

    def __init__(self, factor: float = 0.5, every: int = 10) -> None:
        self.factor = check_positive_float("factor", factor)
        self.every = check_positive_int("every", every)

    def __call__(self, epoch: int, learning_rate: float) -> float:
        return learning_rate * self.factor ** (epoch // self.every)


class ExponentialDecay:
    """η_epoch = η · rate^epoch."""

    def __init__(self, rate: float = 0.95) -> None:
        self.rate = check_positive_float("rate", rate)

    def __call__(self, epoch: int, learning_rate: float) -> float:
        return learning_rate * self.rate ** epoch


class InverseTimeDecay:
    """η_epoch = η / (1 + decay · epoch)."""

    def __init__(self, decay: float = 0.1) -> None:
        self.decay = check_nonnegative_float("decay", decay)

    def __call__(self, epoch: int, learning_rate: float) -> float:
        return learning_rate / (1.0 + self.decay * epoch)


class CosineDecay:
    """η_epoch = η_min + ½ (η - η_min)(1 + cos(π · epoch / epochs))."""

    def __init__(self, epochs: int, minimum: float = 0.0) -> None:
        self.epochs = check_positive_int("epochs", epochs)
        self.minimum = check_nonnegative_float("minimum", minimum)

    def __call__(self, epoch: int, learning_rate: float) -> float:
        t = min(epoch, self.epochs) / self.epochs
        return self.minimum + 0.5 * (learning_rate - self.minimum) * (1 + math.cos(math.pi * t))


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when ``monitor`` has stopped improving for
    more than ``patience`` epochs: PyTorch's ``torch.optim.lr_scheduler.ReduceLROnPlateau``
    rule, as an ``lr_schedule`` of :func:`fit` (``fit(..., lr_schedule=ReduceLROnPlateau())``).

    After each epoch e, with v its logged ``monitor``: v improves on ``best`` when
    v < best · (1 - threshold) (mode ``min``, threshold_mode ``rel``; ``abs``:
    v < best - threshold; mode ``max``: v > best · (1 + threshold), v > best + threshold);
    then best = v and the bad-epoch count is reset, else it grows by one. During a cooldown
    (``cooldown`` epochs after a reduction) bad epochs are not counted. When the count
    exceeds ``patience``: η ← max(η · factor, min_lr) (ignored when the change is at most
    ``eps``), the count is reset and the cooldown starts. The rate of epoch e + 1 is the η
    after epoch e's value; η starts at fit's ``learning_rate``.

    ``mode="auto"`` (Keras's default) is ``max`` for a monitor ending in ``accuracy``, else
    ``min``. Defaults (factor 0.1, patience 10, threshold 1e-4 relative, cooldown 0,
    min_lr 0, eps 1e-8) are PyTorch's.

    State: the schedule reads the epochs' logs from the fit's :class:`History`
    (``network.history_``) and its state (η, best, bad epochs, cooldown) is a function of
    them alone: reset at every fit (:meth:`on_train_begin`) and, on a resume from a
    checkpoint, rebuilt from the saved history, so a resumed fit takes the same rates as an
    uninterrupted one. Use one instance per concurrently running fit.

    Raises ValueError for a bad argument; at fit's start, ValueError when fit does not log
    ``monitor`` (pass ``validation_data`` for ``val_*``).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_lr: float = 0.0, cooldown: int = 0, mode: str = "auto",
                 threshold: float = 1e-4, threshold_mode: str = "rel",
                 eps: float = 1e-8) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor: expected the name of a logged metric, got {monitor!r}")
        self.monitor = monitor
        if (isinstance(factor, bool) or not isinstance(factor, (int, float))
                or not 0 < factor < 1):
            raise ValueError(f"factor: expected a number with 0 < factor < 1, got {factor!r}")
        self.factor = float(factor)
        self.patience = _check_count("patience", patience)
        self.min_lr = check_nonnegative_float("min_lr", min_lr)
        self.cooldown = _check_count("cooldown", cooldown)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.threshold = check_nonnegative_float("threshold", threshold)
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode: expected 'rel' or 'abs', got {threshold_mode!r}")
        self.threshold_mode = threshold_mode
        self.eps = check_nonnegative_float("eps", eps)
        self._maximize = mode == "max" or (mode == "auto" and monitor.endswith("accuracy"))
        self._network: Any = None
        self._reset(None)

    def _reset(self, learning_rate: float | None) -> None:
        self.learning_rate = learning_rate        # η now (None before the first epoch)
        self.best = -math.inf if self._maximize else math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._seen = 0                            # epochs of the history taken into account
        self._base = learning_rate

    def on_train_begin(self, network: "Network") -> None:
        """Reset the state; the schedule follows ``network``'s history from now on."""
        self._network = weakref.ref(network)
        self._reset(None)

    def _better(self, value: float) -> bool:
        rel = self.threshold_mode == "rel"
        if self._maximize:
            return value > (self.best * (1 + self.threshold) if rel else self.best + self.threshold)
        return value < (self.best * (1 - self.threshold) if rel else self.best - self.threshold)

    def step(self, value: float) -> None:
        """Take one epoch's monitored ``value`` into account (PyTorch's ``step``)."""
        if self._better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            reduced = max(self.learning_rate * self.factor, self.min_lr)
            if self.learning_rate - reduced > self.eps:
                self.learning_rate = reduced
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def __call__(self, epoch: int, learning_rate: float) -> float:
        """The rate of ``epoch``, from the logs of the epochs before it."""
        network = self._network() if self._network is not None else None
        history = getattr(network, "history_", None)
        if history is None:
            raise RuntimeError("ReduceLROnPlateau: called outside fit; pass it to "
                               "fit(..., lr_schedule=ReduceLROnPlateau(...))")
        if epoch > history.epochs:
            raise RuntimeError(f"ReduceLROnPlateau: asked for epoch {epoch}, the history "
                               f"holds {history.epochs} epochs")
        if self._seen > epoch or self._base != learning_rate:    # a fresh start
            self._reset(learning_rate)
        if epoch and self.monitor not in history:
            raise KeyError(f"ReduceLROnPlateau: monitor {self.monitor!r} is not among the "
                           f"logged metrics {history.keys()}")
        for e in range(self._seen, epoch):
            self.step(history[self.monitor][e])
        self._seen = epoch
        return self.learning_rate

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, factor={self.factor}, "
                f"patience={self.patience}, min_lr={self.min_lr}, cooldown={self.cooldown}, "
                f"mode={self.mode!r}, threshold={self.threshold}, "
                f"threshold_mode={self.threshold_mode!r})")


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def warmup_factors(first_step: int, steps: int, warmup_steps: int) -> np.ndarray | None:
    """The linear warm-up factors min(1, (s + 1) / k) of steps s = first_step ..
    first_step + steps - 1 (float64), k = ``warmup_steps``; None when every one is 1.

    Step s (counted from the start of the fit, 0-based, resumed fits included) trains at
    η_s = η_epoch · min(1, (s + 1) / k): the gradual warm-up of Goyal et al. 2017, "Accurate,
    Large Minibatch SGD: Training ImageNet in 1 Hour", §2.2 (a linear ramp to η over the
    first k steps), starting at η / k rather than 0 so that no step is wasted.
    """
    if first_step + 1 >= warmup_steps:         # (s + 1) / k >= 1 from the first step on
        return None
    s = np.arange(first_step, first_step + steps, dtype=np.float64)
    return np.minimum(1.0, (s + 1.0) / warmup_steps)


# ---------------------------------------------------------------- the loop

def run_epoch(net: "Network", X: Any, Y: Any, order: Any, batch_size: int,
              optimizer: _optimizers.Optimizer, learning_rate: float, l1: float = 0.0,
              l2: float = 0.0, clip_norm: float | None = None,
              between_steps: Callable[[], None] | None = None,
              clip_value: float | None = None, rates: np.ndarray | None = None,
              sample_weight: Any = None) -> float:
    """One epoch of steps over device arrays X, Y in ``order`` (device int64 array of the
    rows to train on: a permutation of all N rows, or of N - 1 of them when :func:`fit` leaves
    a 1-row batch out; None for all rows in the stored order). Returns the summed
    per-sample loss (one read from the device); with ``sample_weight`` (N,), gathered per batch like X and Y into the workspace's
    ``weight``, each step descends its batch's weighted mean loss and the sum is Σ w_i L_i.

    ``rates``: the learning rate of each step (host float64, one per batch: a warm-up), else
    ``learning_rate`` for every step.

    ``between_steps`` is called after every step the Python loop takes (after the whole epoch
    when a backend runs it in one call): :func:`fit` delivers a deferred Ctrl-C there.
    """
    be = net.backend
    n = X.shape[0] if order is None else order.shape[0]
    full = net.workspace(batch_size)
    tail = n % batch_size
    spaces = [full] + ([net.workspace(tail)] if tail and n > batch_size else [])
    for ws in spaces:
        ws.total[0] = 0
    if not be.train_epoch(net, X, Y, order, batch_size, optimizer, learning_rate, l1, l2,
                          clip_norm, full.total, clip_value, rates, sample_weight):
        for k, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            ws = full if stop - start == batch_size else spaces[-1]
            Xb, Yb, wb = ws.take(be, X, Y, sample_weight, order, start, stop)
            lr = learning_rate if rates is None else float(rates[k])
            net.train_step(ws, Xb, Yb, optimizer, lr, l1, l2, clip_norm, clip_value, wb)
            if between_steps is not None:
                between_steps()
    return sum(float(be.to_numpy(ws.total)[0]) for ws in spaces)


class DeferredInterrupt:
    """Ctrl-C during :func:`fit` takes effect at the next step boundary, never inside a step.

    In the main thread, while the SIGINT handler is a Python one (``default_int_handler`` or
    the user's), it is replaced by one that only records the signal; :meth:`check`, called
    between steps and epochs, then runs the previous handler (which raises KeyboardInterrupt),
    and leaving the context restores it (and runs it for a signal recorded after the last
    check). A compiled epoch (numba's fused one, CUDA graph replays) is not interrupted: Python
    runs handlers only between bytecodes, so the signal is recorded after it returns, with
    ``optimizer.t`` and every parameter at the epoch's end. Outside the main thread no signal
    arrives (Python delivers them to the main thread) and nothing is installed.
    """

    def __init__(self) -> None:
        self._previous: Callable[..., Any] | None = None
        self._pending: tuple[int, Any] | None = None

    def __enter__(self) -> "DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                signal.signal(signal.SIGINT, self._record)
                self._previous = previous
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self._pending = (signum, frame)

    def check(self) -> None:
        """Deliver a recorded interrupt now (the previous handler's action)."""
        if self._pending is not None and self._previous is not None:
            signum, frame = self._pending
            self._pending = None
            self._previous(signum, frame)

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            if exc[0] is None:
                self.check()


def fit(net: "Network", X: Any, Y: Any, *, epochs: int, batch_size: int, learning_rate: float,
        optimizer: str | _optimizers.Optimizer = "sgd", shuffle: bool = True,
        seed: int | None = None, validation_data: tuple[Any, Any] | None = None,
        l1: float = 0.0, l2: float = 0.0, clip_norm: float | None = None,
        lr_schedule: Callable[[int, float], float] | None = None,
        callbacks: Sequence[Callback | Callable[..., Any]] = (),
        verbose: bool | str = False, checkpoint: str | os.PathLike[str] | None = None,
        on_nonfinite: str = "warn", clip_value: float | None = None,
        warmup_steps: int = 0, diagnostics: bool = False, sample_weight: Any = None,
        validation_split: float = 0.0, distributed: bool = False, comm: Any = None,
        shard: bool = False) -> History:
    """Train ``net`` by mini-batch gradient descent and return the :class:`History`.

    Parameters
    ----------
    X, Y : arrays
        Samples (N, n_input) and targets (N, n_output), or integer class labels (N,) for
        cross_entropy; host or device arrays, or pandas objects, of any numeric dtype.
    epochs, batch_size : int
        Passes over the data, and samples per step (the last batch may be smaller). With
        batch normalization a batch needs 2 rows or more (PyTorch's ``BatchNorm1d`` raises
        "Expected more than 1 value per channel when training" for one): ``batch_size=1``
        (or a single row) is a ValueError, and when N % batch_size == 1 the last row of each
        epoch's shuffled order sits that epoch out (PyTorch's ``DataLoader(drop_last=True)``
        for that one batch; a different row each epoch, so every row is trained on); the
        epoch's loss is the mean over the rows trained on. With ``shuffle=False`` the last
        row of X would never be trained on: it is left out of the fit with a UserWarning.
    learning_rate : float
        η; with ``lr_schedule(epoch, η)`` the rate of each epoch.
    optimizer : str or Optimizer
        ``sgd`` (default), ``momentum``, ``nesterov``, ``rmsprop``, ``adam``, ``adamw``, or an
        instance (whose state carries over between calls).
    shuffle, seed : bool, int
        Shuffle each epoch with ``numpy.random.default_rng(seed)`` (also seeds dropout).
    validation_data : (X_val, Y_val) or (X_val, Y_val, w_val), optional
        Evaluated after each epoch: ``val_loss`` and, for classification, ``val_accuracy``
        (weighted means with ``w_val``, see :meth:`backprop.Network.evaluate`).
    sample_weight : array of shape (N,), optional
        Per-sample weights, numeric, finite, >= 0, not all zero (pandas Series too), cast to
        the network's dtype. Each step descends its batch's weighted mean loss
        ``Σ_b w_b L_b / Σ_b w_b``, as scikit-learn's MLP does per batch (``np.average(...,
        weights=sample_weight)`` in ``sklearn/neural_network/_base.py``, gradients divided by
        the batch's weight sum in ``_backprop``); a batch whose weights are all zero takes
        a step with zero gradient. An epoch's ``loss`` is the weighted mean over all samples,
        Σ w_i L_i / Σ w_i. Full-batch, a weight of 2 is the sample repeated, and weights
        scaled by a power of two train identically — except with batch normalization,
        whose batch statistics and running averages ignore the weights (as PyTorch's and
        Keras' do): a row of weight 0 still moves them. The weights are data: shuffled with
        their rows, not saved in a checkpoint (resume with the same weights).
    validation_split : float in [0, 1)
        Hold out the last ``N - ⌊N (1 - validation_split)⌋`` rows of X, Y (and sample_weight),
        taken before any shuffling, as ``validation_data``: Keras' ``validation_split``
        (``Model.fit``; deterministic, seed-independent; shuffle the data first if it is
        ordered). ValueError when it leaves no training or no validation rows, or with
        ``validation_data``.
    l1, l2 : float
        Regularization: the loss minimised (and reported) is the data loss plus
        l1 Σ|W| + l2 Σ W² (weights only, not biases); see :class:`History`.
    clip_norm : float, optional
        Clip the gradient to this global L2 norm before each update.
    clip_value : float, optional
        Clip each gradient component to [-clip_value, clip_value] before each update (as
        ``torch.nn.utils.clip_grad_value_``, Keras's ``clipvalue``). With ``clip_norm`` too,
        the norm comes first: g ← clip(min(1, clip_norm/‖g‖) · g, -clip_value, clip_value),
        ‖g‖ the norm of the unclipped gradient; both bounds hold for the result (clipping
        components only shrinks the norm). Keras refuses both at once and PyTorch leaves
        the order to the caller, so this order is ours: the one that needs no second pass
        (the norm is computed before the update kernel, the value clipping done inside it).
        The l1/l2 terms are added after clipping.
    lr_schedule : callable, optional
        ``f(epoch, learning_rate) -> learning_rate``; one with state may define
        ``on_train_begin(network)``, called at the start of every fit.
        :class:`ReduceLROnPlateau` reads the logged metrics.
    warmup_steps : int
        k > 0: linear warm-up over the fit's first k optimizer steps, multiplying the rate
        of every schedule: step s (0-based, counted from the start of the fit, across a
        resume) trains at η_epoch · min(1, (s + 1) / k) (see :func:`warmup_factors`). The
        logged ``learning_rate`` is the rate of the epoch's last step.
    diagnostics : bool
        Run :func:`backprop.diagnostics.diagnose` after an epoch on a fixed probe batch
        of the training data (:data:`backprop.diagnostics.PROBE_SIZE` rows drawn once per
        fit, from a generator of its own: the training is the same with or without it):
        after the first epoch, then whenever the time spent diagnosing stays within
        :data:`backprop.diagnostics.TIME_SHARE` (2%) of the training time, both measured
        (:class:`backprop.diagnostics.DiagnosisSchedule`: every epoch on a typical network,
        every few epochs when one diagnosis costs more than 2% of an epoch, as with a few
        hundred training rows). Keep the results in ``history.diagnostics`` (one per epoch;
        None for an epoch not diagnosed and for epochs of a checkpoint's earlier run), and
        warn (:class:`backprop.diagnostics.DiagnosticWarning`)
        once per fit for each kind of problem its verdicts name.
    callbacks : sequence
        :class:`Callback` instances, or callables ``f(epoch, logs)``; a True result stops.
    verbose : bool or "progress"
        Print one line per epoch, or show a tqdm progress bar over the batches (advanced after
        every step; after every epoch when a backend runs an epoch as one compiled call).
    checkpoint : path, optional
        Write the training state (:mod:`backprop.state`) to this file, atomically, at the end
        of every epoch. When the file already holds a state of this architecture, training
        resumes from it: parameters, optimizer, generators and history are loaded and
        ``epochs`` counts the total, so the same call after an interruption finishes the
        run, bit-identical to an uninterrupted one (callbacks start afresh). A state whose fit
        ended (all epochs, a stop, divergence) trains no further.
    on_nonfinite : "warn" or "raise"
        When an epoch's loss or the parameters are not finite, training stops and the
        parameters and optimizer state of the last finite epoch are restored; then a
        RuntimeWarning is issued (``"warn"``) or FloatingPointError raised (``"raise"``).
    distributed : bool
        Data-parallel training: every process of an MPI job calls fit, each holds a replica,
        ``batch_size`` is the global batch, split across the ranks, whose gradients are
        averaged by one Allreduce per step; the result is the one-process trajectory (see
        :mod:`backprop.distributed` for the rules). Every rank passes the same arguments
        (``checkpoint`` too, though rank 0 alone writes it; the same ``validation_data``,
        which every rank evaluates) and an equal network: checked at the start, before any
        other collective, a difference raising the same ValueError on every rank, naming
        the setting. Rank 0 alone prints and shows progress. When a callback on any rank
        asks to stop, every rank stops after that epoch. An exception on any rank aborts
        the whole job.
    comm : mpi4py communicator or backprop.distributed.Communicator, optional
        The ranks to train over (default ``MPI.COMM_WORLD``); a Communicator sets the
        collectives' timeout. Only with ``distributed``.
    shard : bool
        With ``distributed``: each rank's X, Y are its own part of the data set (the global
        data set is the parts concatenated in rank order), not the whole of it; a part may
        be empty (0 rows), the data set may not.

    Raises
    ------
    ValueError, TypeError
        Bad arguments, named, before any work. ``checkpoint`` holding another network's state.
        ``distributed``: settings that differ between the ranks.
    ImportError
        ``distributed`` without mpi4py.
    TimeoutError
        ``distributed``: a collective that did not complete within the communicator's timeout.
    KeyboardInterrupt
        Re-raised after a Ctrl-C, which takes effect between two steps: every parameter and
        ``optimizer.t`` agree, and ``net.history_`` keeps the epochs completed.
    """
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed: expected True or False, got {distributed!r}")
    if not isinstance(shard, bool):
        raise TypeError(f"shard: expected True or False, got {shard!r}")
    if not distributed:
        if comm is not None or shard:
            raise ValueError(f"{'comm' if comm is not None else 'shard'}: only with "
                             "distributed=True")
        return _fit(net, X, Y, epochs, batch_size, learning_rate, optimizer, shuffle, seed,
                    validation_data, l1, l2, clip_norm, lr_schedule, callbacks, verbose,
                    checkpoint, on_nonfinite, clip_value, warmup_steps, diagnostics,
                    sample_weight, validation_split, None, False)
    from . import distributed as _distributed
    group = _distributed.communicator(comm)
    with group.abort_on_error():
        return _fit(net, X, Y, epochs, batch_size, learning_rate, optimizer, shuffle, seed,
                    validation_data, l1, l2, clip_norm, lr_schedule, callbacks, verbose,
                    checkpoint, on_nonfinite, clip_value, warmup_steps, diagnostics,
                    sample_weight, validation_split, group, shard)


def _fit(net: "Network", X: Any, Y: Any, epochs: int, batch_size: int, learning_rate: float,
         optimizer: Any, shuffle: bool, seed: Any, validation_data: Any, l1: float, l2: float,
         clip_norm: float | None, lr_schedule: Any, callbacks: Any, verbose: Any,
         checkpoint: Any, on_nonfinite: str, clip_value: float | None, warmup_steps: int,
         diagnostics: bool, sample_weight: Any, validation_split: float, group: Any,
         shard: bool) -> History:
    """:func:`fit` after its ``distributed`` arguments are settled (``group``: the
    Communicator of a distributed fit, else None)."""
    lead = group is None or group.rank == 0          # prints, shows progress, writes files
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size == 1 and any(net.batch_norm):
        raise ValueError("batch_size: batch normalization needs at least 2 rows per training "
                         "batch (a batch's variance of 1 row is 0); got batch_size=1")
    learning_rate = check_positive_float("learning_rate", learning_rate)
    l1 = check_nonnegative_float("l1", l1)
    l2 = check_nonnegative_float("l2", l2)
    if clip_norm is not None:
        clip_norm = check_positive_float("clip_norm", clip_norm)
    if clip_value is not None:
        clip_value = check_positive_float("clip_value", clip_value)
    warmup_steps = _check_count("warmup_steps", warmup_steps)
    if diagnostics not in (False, True, 0, 1):
        raise ValueError(f"diagnostics: expected True or False, got {diagnostics!r}")
    if lr_schedule is not None and not callable(lr_schedule):
        raise TypeError(f"lr_schedule: expected a callable (epoch, learning_rate) -> float, "
                        f"got {lr_schedule!r}")
    if verbose not in (False, True, 0, 1, "progress"):
        raise ValueError(f"verbose: expected True, False or 'progress', got {verbose!r}")
    if on_nonfinite not in ("warn", "raise"):
        raise ValueError(f"on_nonfinite: expected 'warn' or 'raise', got {on_nonfinite!r}")
    callbacks = _check_callbacks(callbacks)
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as e:
        raise ValueError(f"seed: expected None or a non-negative integer, got {seed!r} ({e})") from None
    path = _check_checkpoint(checkpoint) if lead else None
    opt = _optimizers.get(optimizer)
    split = _check_validation_split(validation_split, validation_data)
    if split and group is not None and shard:
        raise ValueError("validation_split: not with shard=True, where each rank would hold "
                         "out rows of its own part and log its own val_loss (the ranks' "
                         "callbacks would disagree); pass validation_data, the same on every "
                         "rank")
    X, Y = net._prepare(X, Y, empty=group is not None and shard)   # a part may be empty
    # a rank's part of a sharded data set may weigh nothing: the Replica checks their sum
    weight = net._prepare_weight(sample_weight, X.shape[0], part=group is not None and shard)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data: expected a pair (X_val, Y_val) or a triple "
                             "(X_val, Y_val, sample_weight_val)")
        val = net._prepare(validation_data[0], validation_data[1],
                           names=("validation_data[0]", "validation_data[1]"))
        w_val = None if len(validation_data) == 2 else net._prepare_weight(
            validation_data[2], val[0].shape[0], name="validation_data[2]")
        val = (*val, w_val)
    if split:
        X, Y, weight, val = _split_off(net.backend, X, Y, weight, split)
    penalized = bool(l1 or l2)
    keys = _logged_keys(penalized, val is not None, net.loss_function.classification)
    for cb in callbacks:            # a monitor this fit never logs: found before any work
        if isinstance(cb, EarlyStopping) and cb.monitor not in keys:
            raise ValueError(f"callbacks: EarlyStopping monitors {cb.monitor!r}, which this fit "
                             f"does not log (it logs {keys}); pass validation_data for val_*")
    if isinstance(lr_schedule, ReduceLROnPlateau) and lr_schedule.monitor not in keys:
        raise ValueError(f"lr_schedule: ReduceLROnPlateau monitors {lr_schedule.monitor!r}, "
                         f"which this fit does not log (it logs {keys}); pass "
                         "validation_data for val_*")
    replica = None
    if group is not None:
        from .distributed import Replica, agree_settings, describe
        # before any collective that depends on them: the same settings on every rank
        agree_settings(group, describe(
            net, opt, val, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            l1=l1, l2=l2, clip_norm=clip_norm, clip_value=clip_value,
            warmup_steps=warmup_steps, shuffle=bool(shuffle),
            seed="None" if seed is None else "an integer", checkpoint=checkpoint is not None,
            validation_split=split, sample_weight=sample_weight is not None,
            lr_schedule=lr_schedule, diagnostics=bool(diagnostics),
            on_nonfinite=on_nonfinite, shard=shard))
        if checkpoint is not None:
            path = group.bcast_object(path, "the broadcast of the checkpoint path")
        replica = Replica(group, net, X, Y, shard, weight)
        seed = replica.agree_seed(seed)
        rng = np.random.default_rng(seed)
    if group is None:
        resume = _resume_point(path, _read_checkpoint(path), net, opt, keys) if (
            path and os.path.exists(path)) else None
    else:   # rank 0 reads the checkpoint and broadcasts its state: no shared file system needed
        found = None
        if lead and path and os.path.exists(path):
            try:
                found = _read_checkpoint(path)
            except ValueError as e:                 # raised on every rank, not only here
                found = e
        found = group.bcast_object(found, "the broadcast of the checkpoint's state")
        if isinstance(found, Exception):
            raise found
        resume = None if found is None else _resume_point(path, found, net, opt, keys)

    be = net.backend
    n = X.shape[0] if replica is None else replica.n_global
    batch_size = min(batch_size, n)
    normalised = any(net.batch_norm)
    if normalised and n == 1:
        raise ValueError("X: batch normalization needs at least 2 rows per training batch; "
                         "got 1 row")
    # a batch of 1 row would normalise it to β and spoil the running variance (PyTorch's
    # BatchNorm1d refuses one): leave that row out of the epoch, as drop_last would
    drop = normalised and n % batch_size == 1
    if drop and not shuffle:
        if lead:
            warnings.warn(f"batch_size={batch_size} leaves a last batch of 1 row of {n}, which "
                          "batch normalization cannot train on; with shuffle=False the last "
                          "row is never trained on (shuffle=True leaves out a different row "
                          "each epoch)", UserWarning, stacklevel=3)
        if replica is None:
            X, Y = X[:n - 1], Y[:n - 1]
            weight = None if weight is None else weight[:n - 1]
            n, drop = n - 1, False
    m = n - 1 if drop else n                          # rows trained on per epoch
    steps = -(-m // batch_size)                      # optimizer steps (batches) per epoch
    bar = _progress_bar(epochs * steps) if verbose == "progress" and lead else None

    def between_steps() -> None:
        interrupt.check()
        if bar is not None:
            bar.update(1)

    seen = (m if weight is None else weight_sum(be, weight) if replica is None
            else replica.weight_total)                   # the epoch loss's denominator
    host_weight = be.to_numpy(weight).astype(np.float64) if drop and weight is not None else None
    error: Exception | None = None
    with DeferredInterrupt() as interrupt:
        history, rng = _begin(net, opt, seed, rng, resume, callbacks, lr_schedule)
        if replica is not None:
            replica.broadcast_state(opt)
            replica.prepare(batch_size)
        last_finite = _state.Snapshot(net)
        ended = history.stopped_early or history.diverged_epoch is not None
        if resume is not None and (ended or history.epochs >= epochs) and lead:
            how = ("stopped early" if history.stopped_early else
                   f"diverged at epoch {history.diverged_epoch}" if ended else
                   f"finished its {history.epochs} epochs")
            warnings.warn(f"checkpoint: {path} holds a fit that {how}; nothing left to train "
                          f"(epochs={epochs} counts the total). Delete the file, or pass "
                          "another checkpoint path, to train anew", UserWarning, stacklevel=4)
        if bar is not None and history.epochs:
            bar.update(history.epochs * steps)
        # a rank whose part of a sharded data set is empty has no probe: None per epoch
        probe = _probe(net, X, Y, seed) if diagnostics and X.shape[0] else None
        if probe is not None:
            from .diagnostics import DiagnosisSchedule
            schedule = DiagnosisSchedule()
        warned: set[str] = set()
        if diagnostics:
            history.diagnostics = history.diagnostics[:history.epochs]
            history.diagnostics += [None] * (history.epochs - len(history.diagnostics))
        try:
            for epoch in range(history.epochs, history.epochs if ended else epochs):
                lr = learning_rate if lr_schedule is None else float(lr_schedule(epoch, learning_rate))
                if not (math.isfinite(lr) and lr > 0):
                    raise ValueError(f"lr_schedule: gave learning rate {lr!r} at epoch {epoch}; "
                                     "expected a positive finite number")
                order, dropped = None, 0.0
                if shuffle and replica is None:
                    perm = rng.permutation(n)
                    if drop:                         # its last row sits this epoch out
                        dropped = 0.0 if host_weight is None else host_weight[perm[-1]]
                        perm = perm[:m]
                    order = be.asarray(perm)
                factors = warmup_factors(epoch * steps, steps, warmup_steps)
                rates = None if factors is None else lr * factors
                start = time.perf_counter()
                with np.errstate(all="ignore"):      # non-finite values are caught below
                    if replica is None:
                        total = run_epoch(net, X, Y, order, batch_size, opt, lr, l1, l2,
                                          clip_norm, between_steps=between_steps,
                                          clip_value=clip_value, rates=rates,
                                          sample_weight=weight)
                    else:   # the replica takes the global order (of m rows when one sits out)
                        perm = rng.permutation(n) if shuffle else (np.arange(n) if drop else None)
                        total = replica.run_epoch(X, Y, None if perm is None else perm[:m],
                                                  batch_size, opt, lr, l1, l2, clip_norm,
                                                  between_steps=between_steps,
                                                  clip_value=clip_value, rates=rates)
                        if drop:
                            dropped = seen - (m if weight is None else replica.epoch_weight)
                    seconds = time.perf_counter() - start
                    logs = _epoch_logs(net, total / (seen - dropped),
                                       lr if rates is None else float(rates[-1]),
                                       seconds, m, val, l1, l2)
                problem = _nonfinite(net, logs)
                if problem:
                    last_finite.restore(net)
                    history.diverged_epoch = epoch
                    message = _divergence_message(epoch, problem)
                    if on_nonfinite == "raise":
                        error = FloatingPointError(message)
                    elif lead:
                        warnings.warn(message, RuntimeWarning, stacklevel=4)
                    break
                history.append(logs)
                last_finite.take(net)
                if probe is not None:
                    if schedule.due(seconds):
                        start = time.perf_counter()
                        _diagnose_epoch(net, probe, epoch, logs["learning_rate"], history,
                                        warned if lead else None)
                        schedule.spent(time.perf_counter() - start)
                    else:
                        history.diagnostics.append(None)
                elif diagnostics:
                    history.diagnostics.append(None)
                if bar is not None:     # a compiled epoch calls between_steps once
                    bar.update((epoch + 1) * steps - bar.n)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{logs['loss']:.4g}")
                elif verbose and lead:
                    print(_format(epoch, epochs, logs), file=sys.stdout, flush=True)
                # every callback sees every epoch, also after one of them asks to stop
                history.stopped_early = any([_call(cb, epoch, logs, net) for cb in callbacks])
                if replica is not None:     # every rank stops when any rank's callback asks
                    history.stopped_early = replica.agree_stop(history.stopped_early)
                if path and lead and not history.stopped_early:
                    _state.write(path, _state.capture(net))
                if history.stopped_early:
                    break
                interrupt.check()
        except BaseException:
            # an interrupt (or an error) mid-epoch: the parameters are at a step boundary;
            # if that epoch had already diverged, go back to the last finite one
            if any(not net.backend.all_finite(p) for p in net.parameters() + net.buffers()):
                last_finite.restore(net)
            _train_end(callbacks, net, history)
            raise
        finally:
            if bar is not None:
                bar.close()
            if replica is not None:
                replica.close()
        _train_end(callbacks, net, history)
        if path and lead:   # the final state: after a stop, a rollback or a restored best epoch
            _state.write(path, _state.capture(net))
    if error is not None:
        raise error
    return history


def _begin(net: "Network", opt: _optimizers.Optimizer, seed: int | None,
           rng: np.random.Generator, resume: _state.TrainingState | None,
           callbacks: list[Any], lr_schedule: Any) -> tuple[History, np.random.Generator]:
    """The state a fit starts from: the optimizer's buffers ready and the generators seeded,
    or everything loaded from the checkpoint ``resume``; callbacks and schedule reset.
    Returns the History to extend and the shuffle generator."""
    params = net.parameters()
    if not opt.matches(params):
        opt.reset(net.backend, params)
    net.optimizer_ = opt
    net.backend.seed(seed)
    history = History()
    if resume is not None:
        _state.restore(net, resume, optimizer=opt)
        history = net.history_ or history
        rng = net._shuffle_rng or rng
    net.history_, net._shuffle_rng = history, rng
    for cb in callbacks:
        if isinstance(cb, Callback):
            cb.on_train_begin(net)
    if callable(getattr(lr_schedule, "on_train_begin", None)):
        lr_schedule.on_train_begin(net)
    return history, rng


def _probe(net: "Network", X: Any, Y: Any, seed: int | None) -> tuple[Any, Any, Any]:
    """The probe batch of ``fit(diagnostics=True)`` and its buffers: PROBE_SIZE rows of the
    training data (all of them when fewer), drawn once, in order, from a generator of its
    own seeded with fit's ``seed``, so the shuffle and dropout draws are the same as without
    diagnostics."""
    from .diagnostics import PROBE_SIZE
    n = X.shape[0]
    if n > PROBE_SIZE:
        rows = np.sort(np.random.default_rng(seed).choice(n, PROBE_SIZE, replace=False))
        index = net.backend.asarray(rows)
        X, Y = X[index], Y[index]
    return X, Y, net._backward_buffers(X.shape[0])


def _diagnose_epoch(net: "Network", probe: tuple[Any, Any], epoch: int, learning_rate: float,
                    history: History, warned: set[str] | None) -> None:
    """Diagnose the probe batch after an epoch; warn once per fit for each kind of problem
    (``warned`` None: never, as on the ranks but 0 of a distributed fit, each of which
    diagnoses the probe of its own rows, with no collective)."""
    from .diagnostics import DiagnosticWarning, _diagnose
    with np.errstate(all="ignore"):
        result = _diagnose(net, probe[0], probe[1], learning_rate, probe[2])
    history.diagnostics.append(result)
    for verdict in result.verdicts if warned is not None else ():
        if verdict.kind not in warned:
            warned.add(verdict.kind)
            warnings.warn(f"epoch {epoch}: {verdict.message}", DiagnosticWarning, stacklevel=5)


def _check_validation_split(validation_split: Any, validation_data: Any) -> float:
    """``validation_split`` as a float in [0, 1); ValueError otherwise or when it comes with
    ``validation_data``."""
    if (isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real)
            or not 0 <= validation_split < 1):
        raise ValueError(f"validation_split: expected a number with 0 <= validation_split < 1, "
                         f"got {validation_split!r}")
    if validation_split and validation_data is not None:
        raise ValueError("validation_split: give either validation_split or validation_data, "
                         "not both")
    return float(validation_split)


def _split_off(backend: Any, X: Any, Y: Any, weight: Any,
               split: float) -> tuple[Any, Any, Any, tuple]:
    """(X, Y, weight) of the training rows and the validation triple: rows before
    ``⌊N (1 - split)⌋`` train, the rest validate (Keras' ``validation_split``)."""
    n = X.shape[0]
    at = int(math.floor(n * (1.0 - split)))
    if at < 1:
        raise ValueError(f"validation_split: {split} of {n} samples leaves no training "
                         "samples; lower it")
    if at >= n:
        raise ValueError(f"validation_split: {split} of {n} samples leaves no validation "
                         "samples; raise it or pass validation_data")
    cut = (lambda a: (None, None) if a is None else (a[:at], a[at:]))
    (w_train, w_val) = cut(weight)
    if w_train is not None and not weight_sum(backend, w_train) > 0:
        raise ValueError("sample_weight: every weight of the training rows (those before "
                         "validation_split's) is 0")
    if w_val is not None and not weight_sum(backend, w_val) > 0:
        raise ValueError("sample_weight: every weight of the validation rows "
                         "(validation_split's) is 0")
    return X[:at], Y[:at], w_train, (X[at:], Y[at:], w_val)


def _check_callbacks(callbacks: Any) -> list[Any]:
    if callbacks is None:
        return []
    if isinstance(callbacks, ReduceLROnPlateau) or any(
            isinstance(cb, ReduceLROnPlateau) for cb in (callbacks if isinstance(
                callbacks, (list, tuple)) else ())):
        raise TypeError("callbacks: ReduceLROnPlateau is a learning-rate schedule; pass it as "
                        "fit(..., lr_schedule=ReduceLROnPlateau(...))")
    if isinstance(callbacks, Callback) or callable(callbacks):
        raise TypeError(f"callbacks: expected a sequence of callbacks, got the single "
                        f"{callbacks!r}; pass [{type(callbacks).__name__}(...)]")
    try:
        items = list(callbacks)
    except TypeError:
        raise TypeError(f"callbacks: expected a sequence of Callback instances or callables "
                        f"f(epoch, logs), got {callbacks!r}") from None
    for i, cb in enumerate(items):
        if not (isinstance(cb, Callback) or callable(cb)):
            raise TypeError(f"callbacks: item {i} is {cb!r}, not a Callback or a callable "
                            "f(epoch, logs)")
    return items


def _check_checkpoint(checkpoint: Any) -> str | None:
    if checkpoint is None:
        return None
    try:
        path = os.fspath(checkpoint)
    except TypeError:
        raise TypeError(f"checkpoint: expected a file path, got {checkpoint!r}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    # a symbolic link's target is what gets replaced; a directory, device or FIFO is refused
    folder = os.path.dirname(_state.target(path, "checkpoint:"))
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint: the folder {folder!r} does not exist")
    probe = os.path.join(folder, f".bp-{secrets.token_hex(6)}.probe")
    try:                            # found now, not after the first epoch has trained
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"checkpoint: cannot write in the folder {folder!r} ({e.strerror})") from None
    return path


def _read_checkpoint(path: str) -> _state.TrainingState:
    """The state in ``path``, checked whole (ValueError naming ``checkpoint``)."""
    try:
        return _state.read(path)
    except ValueError as e:
        raise ValueError(f"checkpoint: {e}") from None


def _resume_point(path: str, state: _state.TrainingState, net: "Network",
                  opt: _optimizers.Optimizer, keys: list[str]) -> _state.TrainingState:
    """``state``, read from ``path``, checked against this call before anything changes."""
    theirs, ours = state.header["architecture"], _state.architecture(net)
    if theirs != ours:
        raise ValueError(f"checkpoint: {path!r} holds a network of another architecture "
                         f"({theirs}), not this one ({ours}); pass another path or remove it")
    spec = state.header["optimizer"]
    if spec is not None and (spec["name"], spec["hyperparameters"]) != (opt.name,
                                                                       opt.hyperparameters()):
        raise ValueError(f"checkpoint: {path!r} was trained with {spec['name']} "
                         f"{spec['hyperparameters']}, this call uses {opt.name} "
                         f"{opt.hyperparameters()}; resume with the same optimizer")
    training = state.header["training"]
    if training is not None and training["epochs"] and training["keys"] != keys:
        raise ValueError(f"checkpoint: {path!r} was written by a fit that logged "
                         f"{training['keys']}, this call logs {keys} (validation_data, l1 or l2 "
                         "differ); resume with the same call")
    return state


def _logged_keys(penalized: bool, validation: bool, classification: bool) -> list[str]:
    """The keys every epoch logs, in order (see :class:`History`)."""
    keys = ["loss"] + (["data_loss"] if penalized else [])
    keys += ["learning_rate", "time", "samples_per_second"]
    if validation:
        keys += ["val_loss"] + (["val_data_loss"] if penalized else [])
        keys += ["val_accuracy"] if classification else []
    return keys


def _epoch_logs(net: "Network", data_loss: float, lr: float, seconds: float, n: int,
                val: tuple[Any, Any] | None, l1: float, l2: float) -> dict[str, float]:
    """The metrics of an epoch, in :func:`_logged_keys` order."""
    penalty = net.backend.penalty(net.W, l1, l2) if (l1 or l2) else 0.0
    logs = {"loss": data_loss + penalty}
    if l1 or l2:
        logs["data_loss"] = data_loss
    logs.update(learning_rate=lr, time=seconds, samples_per_second=n / max(seconds, 1e-9))
    if val is not None:
        result = net._evaluate(*val)
        logs["val_loss"] = result["loss"] + penalty
        if l1 or l2:
            logs["val_data_loss"] = result["loss"]
        if "accuracy" in result:
            logs["val_accuracy"] = result["accuracy"]
    return logs


def _nonfinite(net: "Network", logs: dict[str, float]) -> str:
    """What is not finite after an epoch (a logged number, a parameter), or ""."""
    for key, value in logs.items():
        if not math.isfinite(value):
            return f"{key} is {value}"
    names = (_state.parameter_names(net.n_layers, net.batch_norm)
             + _state.buffer_names(net.batch_norm))
    for name, p in zip(names, net.parameters() + net.buffers()):
        if not net.backend.all_finite(p):
            return f"{name} holds NaN or Inf"
    return ""


def _divergence_message(epoch: int, problem: str) -> str:
    where = f"epoch {epoch - 1}, the last finite one," if epoch else "the start of training"
    return (f"training diverged at epoch {epoch}: {problem}. The parameters and optimizer "
            f"state of {where} are restored. Remedies: a lower learning_rate, gradient "
            "clipping (clip_norm), or an initialisation and input scaling that keep the "
            "activations small")


def _train_end(callbacks: list[Any], net: "Network", history: History) -> None:
    for cb in callbacks:
        if isinstance(cb, Callback):
            cb.on_train_end(net, history)


def _call(cb: Any, epoch: int, logs: dict[str, float], net: "Network") -> bool:
    if isinstance(cb, Callback):
        return bool(cb.on_epoch_end(epoch, logs, net))
    return bool(cb(epoch, logs))


def _format(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {logs['loss']:.4f}"]
    parts += [f"{k} {v:.4f}" for k, v in logs.items() if k.startswith("val_")]
    parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
    return "  ".join(parts)


def _progress_bar(batches: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("verbose='progress' needs tqdm: pip install 'backprop[progress]'") from None
    return tqdm(total=batches, unit="batch")
