"""The fully connected network: parameters, forward and backward passes, training entry points.

Layer l = 1..L computes ``Z = A_prev @ W.T + b`` and ``A = σ(Z)`` with W of shape
(n_l, n_{l-1}); samples are rows. All arithmetic is done by the backend's kernels on buffers
that are allocated once per batch size (a :class:`Workspace`) and reused.

A network owns everything it mutates: its parameters, workspaces and gradient buffers, and its
own backend instance (scratch, dropout's random generator). Networks in different threads are
independent; calls on one network from several threads are serialised (:mod:`backprop.guard`).
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import activations as _activations
from . import init as _init
from . import losses as _losses
from . import optimizers as _optimizers
from . import state as _state
from .backends import get_backend, resolve_backend, to_numpy
from .backends.base import Array, Backend
from .guard import CallGuard
from .validation import check_architecture, check_dtype, check_X, check_Y

if TYPE_CHECKING:
    from .distributed import Replica
    from .training import Callback, History

#: largest batch a forward pass over many samples runs at once (bounds workspace memory)
INFERENCE_BATCH = 4096
#: training workspaces kept: those of the current fit's batch size and its partial last batch
TRAIN_WORKSPACES = 2


class Workspace:
    """Every array one training step of batch size B touches besides the parameters.

    ``A[l]`` (B, n_{l+1}): activations of layer l+1 (hidden layers keep no Z); ``Z`` (B, n_L):
    the output pre-activation; ``delta[l]`` like ``A[l]``; with dropout, ``mask[l]`` and
    ``dropped[l]`` (the input of the next layer); ``X``, ``Y``, ``index``: a gathered batch;
    ``total``: the summed loss (float64); ``scale``: the clipping factor.

    Only a training step (:meth:`Network.train_step`) draws masks into ``mask`` and applies
    them; no other pass reads them.
    """

    def __init__(self, backend: Backend, sizes: Sequence[int], dtype: np.dtype, batch: int,
                 dropout: Sequence[float], train: bool) -> None:
        self.batch = batch
        n_out = sizes[-1]
        self.A = [backend.empty((batch, n), dtype) for n in sizes[1:]]
        self.Z = backend.empty((batch, n_out), dtype)
        self.total = backend.zeros((1,), np.float64)
        self.delta: list[Array] = []
        self.mask: list[Array | None] = []
        self.dropped: list[Array | None] = []
        if train:
            self.delta = [backend.empty((batch, n), dtype) for n in sizes[1:]]
            self.mask = [backend.empty((batch, n), dtype) if rate else None
                         for n, rate in zip(sizes[1:-1], dropout)]
            self.dropped = [backend.empty((batch, n), dtype) if rate else None
                            for n, rate in zip(sizes[1:-1], dropout)]
            self.X = backend.empty((batch, sizes[0]), dtype)
            self.Y = backend.empty((batch, n_out), dtype)
            self.index = backend.empty((batch,), np.int64)
            self.scale = backend.zeros((1,), dtype)

    def rows(self, batch: int) -> "Workspace":
        """A workspace of ``batch`` <= ``self.batch`` rows that uses this one's leading rows
        (no allocation but the views; ``total`` and ``scale`` are shared)."""
        if batch == self.batch:
            return self
        view = Workspace.__new__(Workspace)
        view.__dict__.update(self.__dict__)
        view.batch = batch
        for name in ("A", "delta", "mask", "dropped"):
            setattr(view, name, [None if a is None else a[:batch] for a in getattr(self, name)])
        for name in ("Z", "X", "Y", "index"):
            if hasattr(self, name):
                setattr(view, name, getattr(self, name)[:batch])
        return view


class Network:
    """A fully connected network trained with backpropagation.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_input, n_hidden_1, ..., n_output]``, at least two sizes, each >= 1.
    activations : str, Activation or sequence of them
        One per layer after the input, or one for all: ``identity``, ``sigmoid``, ``tanh``,
        ``relu``, ``leaky_relu``, ``elu``, ``softmax`` (see :mod:`backprop.activations`).
    loss : str
        ``mse``, ``binary_cross_entropy`` (sigmoid output) or ``cross_entropy`` (softmax output).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    backend : str, optional
        ``"numpy"`` or ``"numba"`` on cpu, ``"cupy"`` on cuda; default: see
        :func:`backprop.backends.default_backend`.
    dtype : str
        ``"float32"`` (default) or ``"float64"``.
    init : str, callable or sequence of them, optional
        Per-layer initializer (:mod:`backprop.init`); default ``he`` for relu, leaky_relu and
        elu layers, ``xavier`` otherwise. Biases start at zero.
    seed : int, optional
        Seed of the initial parameters; the same seed gives the same network everywhere.
    dropout : float or sequence of float
        Inverted-dropout rate after each hidden layer (one for all, or one per hidden layer),
        0 <= rate < 1; applied only while training.

    Notes
    -----
    The mode of every pass is explicit: a training step (:meth:`train_step`, run by
    :meth:`fit`) is the only pass that draws or applies dropout masks. :meth:`forward`,
    :meth:`predict`, :meth:`loss`, :meth:`evaluate` and :meth:`backward` run without dropout,
    read nothing another pass left in a workspace, and change no parameter, optimizer state,
    gradient buffer or training workspace (the inference passes only write their own scratch,
    the inference workspaces; :meth:`backward` works in buffers of its own, made per call).
    """

    def __init__(self, layer_sizes: Sequence[int], activations: Any, loss: str = "mse", *,
                 device: str = "cpu", backend: str | None = None, dtype: Any = "float32",
                 init: Any = None, seed: int | None = None, dropout: Any = 0.0) -> None:
        sizes = _check_layer_sizes(layer_sizes)
        n_layers = len(sizes) - 1
        self.layer_sizes = sizes
        self.activations = _per_layer("activations", activations, n_layers, _activations.get)
        self.loss_function = _losses.get(loss)
        self.dtype = check_dtype(dtype)
        check_architecture(sizes, self.activations, self.loss_function, self.dtype)
        inits = _per_layer("init", init, n_layers, lambda s: None if s is None else _init.get(s))
        self.dropout = _check_dropout(dropout, n_layers - 1)
        self._guard = CallGuard()
        self._attach(get_backend(device, backend))
        self.optimizer_: _optimizers.Optimizer | None = None
        #: the History of the last fit (a resumed fit's includes the epochs before the resume)
        self.history_: History | None = None
        self._shuffle_rng: np.random.Generator | None = None   # the last fit's shuffle order

        rng = np.random.default_rng(seed)
        host = []
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            scheme = inits[l] or _init.get(self.activations[l].default_init)
            W = np.asarray(scheme(rng, n_out, n_in), dtype=np.float64)
            if W.shape != (n_out, n_in) or not np.isfinite(W).all():
                raise ValueError(f"init: layer {l + 1} initializer must return finite values of "
                                 f"shape {(n_out, n_in)}, got shape {W.shape}")
            host.append((W, np.zeros(n_out)))
        self.W: list[Array] = []
        self.b: list[Array] = []
        self._load_host_parameters(host)

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def n_layers(self) -> int:
        """L, the number of layers with parameters."""
        return len(self.layer_sizes) - 1

    @property
    def n_parameters(self) -> int:
        """Σ_l n_l (n_{l-1} + 1)."""
        return sum(n_out * (n_in + 1)
                   for n_in, n_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]))

    def __repr__(self) -> str:
        acts = [str(a) for a in self.activations]
        return (f"Network({self.layer_sizes}, {acts}, {self.loss_function.name!r}, "
                f"device={self.device!r}, backend={self.backend.name!r}, dtype={self.dtype.name!r})")

    def _attach(self, backend: Backend) -> None:
        """Make ``backend`` (an instance of this network's own) the network's, with no
        workspaces or gradient buffers yet: everything a network holds besides its
        parameters, optimizer, history and ``_guard`` is made here, and none of it needs
        saving or pickling."""
        self.backend = backend
        #: training workspaces by batch size, least recently used first (TRAIN_WORKSPACES)
        self._workspaces: dict[int, Workspace] = {}
        #: during a fit, the training workspaces from before it, reused if it asks for them
        self._previous: dict[int, Workspace] = {}
        #: the one inference workspace: the largest chunk so far, sliced for smaller ones
        #: (the last slice is kept: a server repeats request sizes)
        self._inference: Workspace | None = None
        self._inference_rows: Workspace | None = None
        self._grads: list[tuple[Array, Array]] | None = None
        self._flat_grad: Array | None = None   # the one buffer the _grads are views of

    # ------------------------------------------------------------------ parameters

    def _load_host_parameters(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        be = self.backend
        self.W = [be.asarray(np.ascontiguousarray(W, dtype=self.dtype)) for W, _ in pairs]
        self.b = [be.asarray(np.ascontiguousarray(b, dtype=self.dtype)) for _, b in pairs]
        self._grads = self._flat_grad = None
        self.optimizer_ = None

    def parameters(self) -> list[Array]:
        """The parameter arrays on the device, flat: W1, b1, W2, b2, ..."""
        return [p for pair in zip(self.W, self.b) for p in pair]

    def get_parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """NumPy copies of ``(W, b)`` per layer; W of shape (n_l, n_{l-1}), b of shape (n_l,)."""
        with self._guard.call("get_parameters"):
            be = self.backend
            return [(np.array(be.to_numpy(W)), np.array(be.to_numpy(b)))
                    for W, b in zip(self.W, self.b)]

    def set_parameters(self, pairs: Sequence[tuple[Any, Any]]) -> None:
        """Copy in ``(W, b)`` per layer from arrays of any backend; validated before any write
        (shapes; ValueError for NaN, Inf, or values outside the range of the network's dtype)."""
        if len(pairs) != self.n_layers:
            raise ValueError(f"parameters: expected {self.n_layers} (W, b) pairs, got {len(pairs)}")
        host = []
        for l, pair in enumerate(pairs):
            if len(pair) != 2:
                raise ValueError(f"parameters: layer {l + 1} expected a (W, b) pair")
            n_out, n_in = self.layer_sizes[l + 1], self.layer_sizes[l]
            W, b = (np.asarray(to_numpy(p)) for p in pair)
            for name, p in (("W", W), ("b", b)):
                if p.dtype.kind not in "biuf":
                    raise TypeError(f"parameters: layer {l + 1} {name} must be a real numeric "
                                    f"array, got dtype {p.dtype}")
            W, b = W.astype(np.float64), b.astype(np.float64)
            if W.shape != (n_out, n_in) or b.shape != (n_out,):
                raise ValueError(f"parameters: layer {l + 1} expected W of shape {(n_out, n_in)} "
                                 f"and b of shape {(n_out,)}, got {W.shape} and {b.shape}")
            if not (np.isfinite(W).all() and np.isfinite(b).all()):
                raise ValueError(f"parameters: layer {l + 1} contains NaN or Inf")
            biggest = max(np.abs(W).max(initial=0), np.abs(b).max(initial=0))
            with np.errstate(over="ignore"):
                if not np.isfinite(self.dtype.type(biggest)):
                    raise ValueError(f"parameters: layer {l + 1} has values outside the range of "
                                     f"{self.dtype.name} (largest magnitude {biggest:.4g})")
            host.append((W, b))
        with self._guard.call("set_parameters"):
            for l, (W, b) in enumerate(host):
                self.backend.copy(self.backend.asarray(W, self.dtype), self.W[l])
                self.backend.copy(self.backend.asarray(b, self.dtype), self.b[l])

    def to(self, device: str, backend: str | None = None) -> "Network":
        """Move parameters and optimizer state to another device/backend, in place; the
        network gets a backend instance of its own there (workspaces are made anew)."""
        if resolve_backend(device, backend) == (self.backend.name, self.backend.device):
            return self
        with self._guard.call("to"):
            source, target = self.backend, get_backend(device, backend)
            W = [target.asarray(source.to_numpy(W)) for W in self.W]
            b = [target.asarray(source.to_numpy(b)) for b in self.b]
            state = self.optimizer_
            if state is not None:
                state.state = [tuple(target.asarray(source.to_numpy(s)) for s in st)
                               for st in state.state]
            self._attach(target)
            self.W, self.b = W, b
        return self

    def save(self, path: str | Path) -> None:
        """Write the whole training state to exactly ``path`` (see :mod:`backprop.state`):
        architecture, parameters, optimizer state, generators and history, atomically (the
        previous file stays intact if writing fails). ValueError for a non-finite network;
        RuntimeError while another thread trains it (its state would be torn between steps)."""
        with self._guard.call("save"):
            state = _state.capture(self)
        _state.write(path, state)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu",
             backend: str | None = None) -> "Network":
        """The network saved at ``path`` by :meth:`save`, on ``device``, with its optimizer
        (``optimizer_``), history (``history_``) and generators; the file is checked whole
        first (ValueError naming the problem)."""
        return _state.build(_state.read(path), device, backend)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled: the training state and the device, no workspace or scratch buffer
        (RuntimeError while another thread trains the network)."""
        with self._guard.call("pickle"):
            state = _state.capture(self)
        return {"device": self.device, "backend": self.backend.name,
                "header": state.header, "arrays": state.arrays}

    def __setstate__(self, pickled: dict[str, Any]) -> None:
        state = _state.check(_state.TrainingState(pickled["header"], pickled["arrays"]), "pickle")
        _state.build(state, pickled["device"], pickled["backend"], net=self)

    # ------------------------------------------------------------------ workspaces

    def workspace(self, batch: int, train: bool = True) -> Workspace:
        """The buffers for batches of ``batch`` rows.

        Training (``train``): allocated on first use and kept for the TRAIN_WORKSPACES batch
        sizes used last (a fit's batch size and its partial last batch); an older one is
        released, and so are, at the end of a fit, those it did not use. Inference: one
        workspace, grown (at least doubling, up to INFERENCE_BATCH)
        when a larger batch comes and sliced (:meth:`Workspace.rows`) for smaller ones, so a
        network serving requests of any size keeps at most one.
        """
        if not train:
            ws = self._inference
            if ws is None or ws.batch < batch:
                size = batch if ws is None else max(batch, min(2 * ws.batch, INFERENCE_BATCH))
                self._inference = self._inference_rows = ws = None   # release the old first
                ws = self._inference = Workspace(self.backend, self.layer_sizes, self.dtype,
                                                 size, self.dropout, train=False)
            if self._inference_rows is None or self._inference_rows.batch != batch:
                self._inference_rows = ws.rows(batch)
            return self._inference_rows
        ws = self._workspaces.pop(batch, None) or self._previous.pop(batch, None)
        if ws is None:
            while len(self._workspaces) >= TRAIN_WORKSPACES:
                del self._workspaces[next(iter(self._workspaces))]   # least recently used
            ws = Workspace(self.backend, self.layer_sizes, self.dtype, batch, self.dropout,
                           train=True)
        self._workspaces[batch] = ws                  # now the most recently used
        return ws

    def gradients(self) -> list[tuple[Array, Array]]:
        """The gradient buffers ``(dW, db)`` per layer (allocated on first use, then kept):
        views, in the order W1, b1, W2, b2, ..., into one contiguous buffer of
        :attr:`n_parameters` elements (:meth:`flat_gradient`), which a data-parallel fit sums
        across processes with a single Allreduce and no packing copy."""
        if self._grads is None:
            flat = self._flat_grad = self.backend.zeros((self.n_parameters,), self.dtype)
            self._grads, offset = [], 0
            for W, b in zip(self.W, self.b):
                views = []
                for p in (W, b):
                    views.append(flat[offset:offset + p.size].reshape(p.shape))
                    offset += p.size
                self._grads.append((views[0], views[1]))
        return self._grads

    def flat_gradient(self) -> Array:
        """The one contiguous buffer (n_parameters,) that :meth:`gradients` are views of."""
        self.gradients()
        return self._flat_grad

    # ------------------------------------------------------------------ the algorithm

    def _forward(self, ws: Workspace, X: Array, train: bool,
                 replica: "Replica | None" = None) -> list[Array]:
        """Forward propagation into ``ws``; returns the input of every layer (a[0..L-1]).

        ``train``: a training step's pass, which draws fresh dropout masks into ``ws.mask`` and
        applies them; otherwise no mask is drawn, read or applied. With a data-parallel
        ``replica`` the masks are those of the replica's rows of the global batch
        (:meth:`backprop.distributed.Replica.dropout`).
        """
        be = self.backend
        inputs = [X]
        last = self.n_layers - 1
        for l in range(self.n_layers):
            Z = ws.Z if l == last else ws.A[l]
            be.forward(inputs[l], self.W[l], self.b[l], self.activations[l], Z, ws.A[l])
            if l < last:
                rate = self.dropout[l]
                if train and rate:
                    if replica is None:
                        be.dropout(ws.A[l], rate, ws.mask[l], ws.dropped[l])
                    else:
                        replica.dropout(l, ws.A[l], rate, ws.mask[l], ws.dropped[l])
                    inputs.append(ws.dropped[l])
                else:
                    inputs.append(ws.A[l])
        return inputs

    def _backward(self, ws: Workspace, inputs: list[Array], Y: Array, *, train: bool,
                  grads: list[tuple[Array, Array]] | None = None,
                  sgd: _optimizers.UpdateRule | None = None,
                  replica: "Replica | None" = None) -> None:
        """δ for every layer, then the weight gradients into ``grads`` (default
        :meth:`gradients`); with an SGD ``rule`` each layer is updated in place instead (after
        its δ_{l-1} is computed).

        ``train``: the backward pass of a training step, whose forward pass (``train=True``)
        drew the dropout masks in ``ws``: δ of a dropped layer is multiplied by its mask.
        Otherwise no mask is read. A data-parallel ``replica`` rescales the output delta from
        its b rows' 1/b to the global batch's 1/B, so that the sum of every replica's
        gradients is the global batch mean.
        """
        be = self.backend
        L = self.n_layers
        be.output_delta(ws.A[-1], Y, self.activations[-1], self.loss_function, ws.delta[-1])
        if replica is not None:
            be.scale(ws.delta[-1], replica.row_fraction(ws.batch))
        if grads is None:
            grads = self.gradients()
        for l in range(L - 1, -1, -1):
            if l > 0:  # δ_{l-1} = (δ_l W_l) ⊙ σ'(a_{l-1}), needs W_l before its update
                be.delta(ws.delta[l], self.W[l], ws.A[l - 1], self.activations[l - 1],
                         ws.delta[l - 1])
                if train and self.dropout[l - 1]:
                    be.multiply(ws.delta[l - 1], ws.mask[l - 1])
            dW, db = grads[l]
            if sgd is None:
                be.weight_grad(ws.delta[l], inputs[l], dW, db)
            else:
                be.sgd_weight_update(ws.delta[l], inputs[l], self.W[l], self.b[l], sgd, dW, db)

    def train_step(self, ws: Workspace, X: Array, Y: Array, optimizer: _optimizers.Optimizer,
                   learning_rate: float, l1: float = 0.0, l2: float = 0.0,
                   clip_norm: float | None = None, replica: "Replica | None" = None) -> None:
        """One mini-batch step on device arrays ``X`` (B, n_0), ``Y`` (B, n_L) of ``ws``'s
        batch size: forward, loss (added to ``ws.total``), backward, update. Allocates nothing.

        With a data-parallel ``replica`` (:class:`backprop.distributed.Replica`) X, Y are this
        process's rows of a global batch: the gradients are summed over every replica (one
        Allreduce of :meth:`gradients`' one buffer) before clipping and the update.
        """
        be = self.backend
        inputs = self._forward(ws, X, train=True, replica=replica)
        be.loss(ws.A[-1], ws.Z, Y, self.activations[-1], self.loss_function, ws.total)
        if (replica is None and optimizer.kind == _optimizers.SGD_KIND and not l1
                and clip_norm is None):
            rule_w, _ = optimizer.rules(learning_rate, l2=l2)
            self._backward(ws, inputs, Y, train=True, sgd=rule_w)
            return
        self._backward(ws, inputs, Y, train=True, replica=replica)
        if replica is not None:
            replica.allreduce_gradients()
        self._apply_gradients(ws, optimizer, learning_rate, l1, l2, clip_norm)

    def _apply_gradients(self, ws: Workspace, optimizer: _optimizers.Optimizer,
                         learning_rate: float, l1: float, l2: float,
                         clip_norm: float | None) -> None:
        """Clip (factor into ``ws.scale``) and take the optimizer step with :meth:`gradients`."""
        be = self.backend
        grads = [g for pair in self.gradients() for g in pair]
        scale: Any = 1.0
        if clip_norm is not None:
            be.grad_scale(grads, clip_norm, ws.scale)
            scale = ws.scale
        optimizer.step(be, self.parameters(), grads, learning_rate, l1, l2, scale)

    # ------------------------------------------------------------------ public API

    def _inference_chunks(self, X: Array):
        """(rows slice, workspace outputs after the forward pass) over X in bounded batches."""
        n = X.shape[0]
        for start in range(0, n, INFERENCE_BATCH):
            stop = min(start + INFERENCE_BATCH, n)
            ws = self.workspace(stop - start, train=False)
            self._forward(ws, X[start:stop], train=False)
            yield slice(start, stop), ws

    def forward(self, X: Any, out: Array | None = None) -> Array:
        """The output activations ŷ (n_samples, n_L) on the network's device.

        ``out``, if given, is a device array of that shape to write into (no allocation).
        Calls from several threads run one at a time (see :mod:`backprop.guard`).
        """
        with self._guard.call("forward"):
            return self._outputs(X, out)

    def _outputs(self, X: Any, out: Array | None) -> Array:
        X = check_X(self.backend, X, self.layer_sizes[0], self.dtype)
        shape = (X.shape[0], self.layer_sizes[-1])
        if out is None:
            out = self.backend.empty(shape, self.dtype)
        elif (tuple(out.shape) != shape or out.dtype != self.dtype
              or not self.backend.is_native(out)):
            raise ValueError(f"out: expected a {self.dtype.name} array of shape {shape} on "
                             f"{self.device}")
        for rows, ws in self._inference_chunks(X):
            self.backend.copy(ws.A[-1], out[rows])
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The output activations as a NumPy array (n_samples, n_L)."""
        with self._guard.call("predict"):
            return self.backend.to_numpy(self._outputs(X, None))

    def predict_classes(self, X: Any) -> np.ndarray:
        """Class labels: argmax of the outputs (one output unit: ŷ >= 0.5)."""
        y = self.predict(X)
        if y.shape[1] == 1:
            return (y[:, 0] >= 0.5).astype(np.int64)
        return np.argmax(y, axis=1)

    def _prepare(self, X: Any, Y: Any, names: tuple[str, str] = ("X", "Y")) -> tuple[Array, Array]:
        """X and Y checked and on the device; errors name them as ``names``."""
        X = check_X(self.backend, X, self.layer_sizes[0], self.dtype, name=names[0])
        Y = check_Y(self.backend, Y, X.shape[0], self.layer_sizes[-1], self.loss_function,
                    self.dtype, name=names[1], x_name=names[0])
        return X, Y

    def loss(self, X: Any, Y: Any) -> float:
        """The mean per-sample loss over (X, Y)."""
        with self._guard.call("loss"):
            X, Y = self._prepare(X, Y)
            return self._mean_loss(X, Y)

    def _mean_loss(self, X: Array, Y: Array) -> float:
        be = self.backend
        total = 0.0
        for rows, ws in self._inference_chunks(X):
            ws.total[0] = 0
            be.loss(ws.A[-1], ws.Z, Y[rows], self.activations[-1], self.loss_function, ws.total)
            total += float(be.to_numpy(ws.total)[0])
        return total / X.shape[0]

    def backward(self, X: Any, Y: Any) -> list[tuple[Array, Array]]:
        """Gradients ``(dW, db)`` per layer on the device: the batch mean of the per-sample
        gradients of the loss over all of (X, Y) as one batch (no dropout).

        Runs in a workspace and gradient arrays of its own, made for this call: it reads no
        dropout mask and changes nothing in the network.
        """
        with self._guard.call("backward"):
            X, Y = self._prepare(X, Y)
            be = self.backend
            ws = Workspace(be, self.layer_sizes, self.dtype, X.shape[0],
                           [0.0] * len(self.dropout), train=True)
            grads = [(be.empty(W.shape, self.dtype), be.empty(b.shape, self.dtype))
                     for W, b in zip(self.W, self.b)]
            inputs = self._forward(ws, X, train=False)
            self._backward(ws, inputs, Y, train=False, grads=grads)
            return grads

    def evaluate(self, X: Any, Y: Any) -> dict[str, float]:
        """``{"loss": mean loss}``, plus ``"accuracy"`` for the classification losses."""
        with self._guard.call("evaluate"):
            X, Y = self._prepare(X, Y)
            return self._evaluate(X, Y)

    def _evaluate(self, X: Array, Y: Array) -> dict[str, float]:
        result = {"loss": self._mean_loss(X, Y)}
        if self.loss_function.classification:
            correct = 0
            xp = self.backend.xp
            for rows, ws in self._inference_chunks(X):
                y_hat, y = ws.A[-1], Y[rows]
                if self.loss_function.code == _losses.CROSS_ENTROPY:
                    correct += int((xp.argmax(y_hat, axis=1) == xp.argmax(y, axis=1)).sum())
                else:   # binary: each output unit thresholded at 0.5
                    correct += int(((y_hat >= 0.5) == (y >= 0.5)).sum()) / y.shape[1]
            result["accuracy"] = correct / X.shape[0]
        return result

    def fit(self, X: Any, Y: Any, *, epochs: int, batch_size: int, learning_rate: float,
            optimizer: str | _optimizers.Optimizer = "sgd", shuffle: bool = True,
            seed: int | None = None, validation_data: tuple[Any, Any] | None = None,
            l1: float = 0.0, l2: float = 0.0, clip_norm: float | None = None,
            lr_schedule: Any = None, callbacks: Sequence["Callback"] = (),
            verbose: bool | str = False, checkpoint: str | Path | None = None,
            on_nonfinite: str = "warn", distributed: bool = False, comm: Any = None,
            shard: bool = False) -> "History":
        """Mini-batch gradient descent, as in the seeds; see :func:`backprop.training.fit`.

        ``distributed=True`` trains data-parallel over the ranks of an MPI job (``comm``,
        ``shard``: see :mod:`backprop.distributed`).

        Raises RuntimeError, before any work, when another call (predict, evaluate, fit...)
        is running on this network in another thread; while fit runs, such calls from other
        threads raise RuntimeError in turn (see :mod:`backprop.guard`).
        """
        from .training import fit
        with self._guard.fit():
            if verbose in (True, "progress") and _lead(comm if distributed else False):
                notice = self.backend.compile_notice(self.dtype)
                if notice:
                    print(notice, flush=True)
            # the fit keeps the training workspaces it uses (reusing those of a previous fit
            # of the same batch sizes) and the others are released when it ends
            self._previous, self._workspaces = self._workspaces, {}
            try:
                return fit(self, X, Y, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, optimizer=optimizer, shuffle=shuffle,
                           seed=seed, validation_data=validation_data, l1=l1, l2=l2,
                           clip_norm=clip_norm, lr_schedule=lr_schedule, callbacks=callbacks,
                           verbose=verbose, checkpoint=checkpoint, on_nonfinite=on_nonfinite,
                           distributed=distributed, comm=comm, shard=shard)
            finally:
                self._previous = {}


# ---------------------------------------------------------------------- helpers

def _lead(comm: Any) -> bool:
    """False on the ranks other than 0 of a distributed fit (``comm`` False: not one)."""
    if comm is False:
        return True
    from .distributed import rank
    try:
        return rank(comm) == 0
    except Exception:       # not a communicator: fit raises the clear error
        return True


def _check_layer_sizes(layer_sizes: Any) -> list[int]:
    try:
        sizes = list(layer_sizes)
    except TypeError:
        raise TypeError(f"layer_sizes: expected a sequence of positive integers, got "
                        f"{layer_sizes!r}") from None
    if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
                             for n in sizes):
        raise ValueError(f"layer_sizes: expected at least two positive integers "
                         f"[n_input, ..., n_output], got {layer_sizes!r}")
    return [int(n) for n in sizes]


def _per_layer(name: str, spec: Any, n: int, get: Any) -> list[Any]:
    """One entry per layer from a single spec or a sequence of n specs."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ValueError(f"{name}: expected one entry per layer after the input ({n}), "
                             f"got {len(spec)}")
        return [get(s) for s in spec]
    return [get(spec)] * n


def _check_dropout(dropout: Any, n_hidden: int) -> list[float]:
    rates = list(dropout) if isinstance(dropout, (list, tuple)) else [dropout] * n_hidden
    if len(rates) != n_hidden:
        raise ValueError(f"dropout: expected one rate per hidden layer ({n_hidden}), got {len(rates)}")
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 <= r < 1:
            raise ValueError(f"dropout: rates must be numbers with 0 <= rate < 1, got {r!r}")
    return [float(r) for r in rates]
