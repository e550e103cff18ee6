"""The mini-batch training loop: shuffle, batches, steps, callbacks, progress, history.

Each epoch draws a permutation of the samples (the seeds' ``shuffle(X, Y)``), cuts it into
batches of ``batch_size`` (the last, partial batch included) and takes one optimizer step per
batch. The loss of an epoch is the mean of the per-sample losses seen during its forward
passes, read from the device once per epoch.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from . import optimizers as _optimizers
from .validation import check_nonnegative_float, check_positive_float, check_positive_int

if TYPE_CHECKING:
    from .network import Network


class History:
    """Per-epoch metrics of a :func:`fit`: ``history["loss"][k]`` is epoch k's mean loss.

    Keys: ``loss``, ``learning_rate``, ``time`` (seconds), ``samples_per_second``, and with
    validation data ``val_loss`` (and ``val_accuracy`` for classification).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epochs = 0
        self.stopped_early = False

    def append(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
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
    """Hooks called by :func:`fit`. Return True from a hook to stop training."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], network: "Network") -> bool | None:
        return None


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs; with
    ``restore_best`` the parameters of the best epoch are put back."""

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        self.monitor = monitor
        self.patience = check_positive_int("patience", patience)
        self.min_delta = check_nonnegative_float("min_delta", min_delta)
        self.restore_best = restore_best
        self.best = math.inf
        self.best_epoch = -1
        self._best_parameters: Any = None
        self._sign = -1.0 if monitor.endswith("accuracy") else 1.0   # accuracy: larger is better

    def on_epoch_end(self, epoch: int, logs: dict[str, float], network: "Network") -> bool:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not among the logged "
                           f"metrics {sorted(logs)}; pass validation_data to fit for val_*")
        value = self._sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            if self.restore_best:
                self._best_parameters = network.get_parameters()
            return False
        if epoch - self.best_epoch >= self.patience:
            if self.restore_best and self._best_parameters is not None:
                network.set_parameters(self._best_parameters)
            return True
        return False


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


# ---------------------------------------------------------------- the loop

def run_epoch(net: "Network", X: Any, Y: Any, order: Any, batch_size: int,
              optimizer: _optimizers.Optimizer, learning_rate: float, l1: float = 0.0,
              l2: float = 0.0, clip_norm: float | None = None) -> float:
    """One epoch of steps over device arrays X, Y in ``order`` (device int64 array, or None
    for the stored order). Returns the summed per-sample loss (one read from the device)."""
    be = net.backend
    n = X.shape[0]
    full = net.workspace(batch_size)
    tail = n % batch_size
    spaces = [full] + ([net.workspace(tail)] if tail and n > batch_size else [])
    for ws in spaces:
        ws.total[0] = 0
    if not be.train_epoch(net, X, Y, order, batch_size, optimizer, learning_rate, l1, l2,
                          clip_norm, full.total):
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            ws = full if stop - start == batch_size else spaces[-1]
            if order is None:
                Xb, Yb = X[start:stop], Y[start:stop]
            else:
                be.take_rows(X, order[start:stop], ws.X)
                be.take_rows(Y, order[start:stop], ws.Y)
                Xb, Yb = ws.X, ws.Y
            net.train_step(ws, Xb, Yb, optimizer, learning_rate, l1, l2, clip_norm)
    return sum(float(be.to_numpy(ws.total)[0]) for ws in spaces)


def fit(net: "Network", X: Any, Y: Any, *, epochs: int, batch_size: int, learning_rate: float,
        optimizer: str | _optimizers.Optimizer = "sgd", shuffle: bool = True,
        seed: int | None = None, validation_data: tuple[Any, Any] | None = None,
        l1: float = 0.0, l2: float = 0.0, clip_norm: float | None = None,
        lr_schedule: Callable[[int, float], float] | None = None,
        callbacks: Sequence[Callback | Callable[..., Any]] = (),
        verbose: bool | str = False) -> History:
    """Train ``net`` by mini-batch gradient descent and return the :class:`History`.

    Parameters
    ----------
    X, Y : arrays
        Samples (N, n_input) and targets (N, n_output), or integer class labels (N,) for
        cross_entropy; host or device arrays of any numeric dtype.
    epochs, batch_size : int
        Passes over the data, and samples per step (the last batch may be smaller).
    learning_rate : float
        η; with ``lr_schedule(epoch, η)`` the rate of each epoch.
    optimizer : str or Optimizer
        ``sgd`` (default), ``momentum``, ``nesterov``, ``rmsprop``, ``adam``, ``adamw``, or an
        instance (whose state carries over between calls).
    shuffle, seed : bool, int
        Shuffle each epoch with ``numpy.random.default_rng(seed)`` (also seeds dropout).
    validation_data : (X_val, Y_val), optional
        Evaluated after each epoch: ``val_loss`` and, for classification, ``val_accuracy``.
    l1, l2 : float
        Regularization: the loss gains l1 Σ|W| + l2 Σ W² (weights only, not biases).
    clip_norm : float, optional
        Clip the gradient to this global L2 norm before each update.
    callbacks : sequence
        :class:`Callback` instances, or callables ``f(epoch, logs)``; a True result stops.
    verbose : bool or "progress"
        Print one line per epoch, or show a tqdm progress bar.
    """
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    learning_rate = check_positive_float("learning_rate", learning_rate)
    l1 = check_nonnegative_float("l1", l1)
    l2 = check_nonnegative_float("l2", l2)
    if clip_norm is not None:
        clip_norm = check_positive_float("clip_norm", clip_norm)
    if lr_schedule is not None and not callable(lr_schedule):
        raise TypeError(f"lr_schedule: expected a callable (epoch, learning_rate) -> float, "
                        f"got {lr_schedule!r}")
    if verbose not in (False, True, 0, 1, "progress"):
        raise ValueError(f"verbose: expected True, False or 'progress', got {verbose!r}")
    opt = _optimizers.get(optimizer)
    X, Y = net._prepare(X, Y)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a pair (X_val, Y_val)")
        val = (net._prepare(validation_data[0], validation_data[1]))
    bar = _progress_bar(epochs) if verbose == "progress" else None

    params = net.parameters()
    if not opt.matches(params):
        opt.reset(net.backend, params)
    net.optimizer_ = opt
    be = net.backend
    be.seed(seed)
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    batch_size = min(batch_size, n)
    history = History()
    for epoch in range(epochs):
        lr = learning_rate if lr_schedule is None else float(lr_schedule(epoch, learning_rate))
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr_schedule: gave learning rate {lr!r} at epoch {epoch}; "
                             "expected a positive finite number")
        order = be.asarray(rng.permutation(n)) if shuffle else None
        start = time.perf_counter()
        total = run_epoch(net, X, Y, order, batch_size, opt, lr, l1, l2, clip_norm)
        seconds = time.perf_counter() - start
        logs = {"loss": total / n, "learning_rate": lr, "time": seconds,
                "samples_per_second": n / seconds if seconds > 0 else math.inf}
        if val is not None:
            logs.update({f"val_{k}": v for k, v in net._evaluate(*val).items()})
        history.append(logs)
        if bar is not None:
            bar.set_postfix(loss=f"{logs['loss']:.4g}")
            bar.update(1)
        elif verbose:
            print(_format(epoch, epochs, logs), file=sys.stdout, flush=True)
        if not math.isfinite(logs["loss"]):
            warnings.warn(f"training diverged at epoch {epoch}: the loss is {logs['loss']}; "
                          "lower the learning rate or pass clip_norm", RuntimeWarning, stacklevel=3)
            break
        if any(_call(cb, epoch, logs, net) for cb in list(callbacks)):
            history.stopped_early = True
            break
    if bar is not None:
        bar.close()
    return history


def _call(cb: Any, epoch: int, logs: dict[str, float], net: "Network") -> bool:
    if isinstance(cb, Callback):
        return bool(cb.on_epoch_end(epoch, logs, net))
    return bool(cb(epoch, logs))


def _format(epoch: int, epochs: int, logs: dict[str, float]) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {logs['loss']:.4f}"]
    parts += [f"{k} {v:.4f}" for k, v in logs.items() if k.startswith("val_")]
    parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
    return "  ".join(parts)


def _progress_bar(epochs: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("verbose='progress' needs tqdm: pip install 'backprop[progress]'") from None
    return tqdm(total=epochs, unit="epoch")
