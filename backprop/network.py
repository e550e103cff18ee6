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
from .validation import per_layer as _sequence
from .validation import (check_architecture, check_dtype, check_sample_weight, check_X,
                         check_Y)

if TYPE_CHECKING:
    from .diagnostics import Diagnosis
    from .distributed import Replica
    from .training import Callback, History

#: largest batch a forward pass over many samples runs at once (bounds workspace memory)
INFERENCE_BATCH = 4096
#: training workspaces kept: those of the current fit's batch size and its partial last batch
TRAIN_WORKSPACES = 2
#: batch normalization's running-average momentum and variance epsilon (torch.nn.BatchNorm1d's)
BN_MOMENTUM = 0.1
BN_EPS = 1e-5
_IDENTITY = _activations.Identity()


class Workspace:
    """Every array one training step of batch size B touches besides the parameters.

    ``A[l]`` (B, n_{l+1}): activations of layer l+1 (hidden layers keep no Z); ``Z`` (B, n_L):
    the output pre-activation; ``delta[l]`` like ``A[l]``; with dropout, ``mask[l]`` and
    ``dropped[l]`` (the input of the next layer); ``X``, ``Y``, ``index``, ``weight`` (the
    batch's sample weights, (B,)): a gathered batch; ``total``: the summed loss (float64);
    ``scale``: the clipping factor.

    Hidden layer l with batch normalization: ``Zhat[l]`` (B, n) the normalized Ẑ, ``mean[l]``
    and ``inv_std[l]`` (n,) the statistics used; with a residual connection: ``H[l]`` (B, n)
    the activation before the skip is added (σ' is computed from it) and, in training,
    ``E[l]`` (B, n) the gradient ∂L/∂A[l] that also flows down the skip. None elsewhere.

    Only a training step (:meth:`Network.train_step`) draws masks into ``mask`` and applies
    them; no other pass reads them.
    """

    def __init__(self, backend: Backend, sizes: Sequence[int], dtype: np.dtype, batch: int,
                 dropout: Sequence[float], train: bool, batch_norm: Sequence[bool] = (),
                 residual: Sequence[bool] = ()) -> None:
        self.batch = batch
        n_out = sizes[-1]
        hidden = sizes[1:-1]
        bn = list(batch_norm) or [False] * len(hidden)
        res = list(residual) or [False] * len(hidden)
        self.A = [backend.empty((batch, n), dtype) for n in sizes[1:]]
        self.Z = backend.empty((batch, n_out), dtype)
        self.total = backend.zeros((1,), np.float64)
        self.Zhat = [backend.empty((batch, n), dtype) if f else None for n, f in zip(hidden, bn)]
        self.mean = [backend.empty((n,), dtype) if f else None for n, f in zip(hidden, bn)]
        self.inv_std = [backend.empty((n,), dtype) if f else None for n, f in zip(hidden, bn)]
        self.H = [backend.empty((batch, n), dtype) if f else None for n, f in zip(hidden, res)]
        self.E: list[Array | None] = [None] * len(hidden)
        self.delta: list[Array] = []
        self.mask: list[Array | None] = []
        self.dropped: list[Array | None] = []
        if train:
            self.E = [backend.empty((batch, n), dtype) if f else None for n, f in zip(hidden, res)]
            self.delta = [backend.empty((batch, n), dtype) for n in sizes[1:]]
            self.mask = [backend.empty((batch, n), dtype) if rate else None
                         for n, rate in zip(sizes[1:-1], dropout)]
            self.dropped = [backend.empty((batch, n), dtype) if rate else None
                            for n, rate in zip(sizes[1:-1], dropout)]
            self.X = backend.empty((batch, sizes[0]), dtype)
            self.Y = backend.empty((batch, n_out), dtype)
            self.index = backend.empty((batch,), np.int64)
            self.weight = backend.empty((batch,), dtype)
            self.scale = backend.zeros((1,), dtype)

    def take(self, backend: Backend, X: Array, Y: Array, weight: Array | None,
             order: Array | None, start: int, stop: int) -> tuple[Array, Array, Array | None]:
        """Rows ``start:stop`` of an epoch's ``order`` (device int64; None: the stored order)
        of X, Y and ``weight`` (or None): views in the stored order, else gathered into this
        workspace's ``X``, ``Y``, ``weight`` (``stop - start`` == its batch size)."""
        if order is None:
            return X[start:stop], Y[start:stop], None if weight is None else weight[start:stop]
        backend.take_rows(X, order[start:stop], self.X)
        backend.take_rows(Y, order[start:stop], self.Y)
        if weight is None:
            return self.X, self.Y, None
        backend.take_rows(weight, order[start:stop], self.weight)
        return self.X, self.Y, self.weight

    def rows(self, batch: int) -> "Workspace":
        """A workspace of ``batch`` <= ``self.batch`` rows that uses this one's leading rows
        (no allocation but the views; ``total`` and ``scale`` are shared)."""
        if batch == self.batch:
            return self
        view = Workspace.__new__(Workspace)
        view.__dict__.update(self.__dict__)
        view.batch = batch
        for name in ("A", "delta", "mask", "dropped", "Zhat", "H", "E"):
            setattr(view, name, [None if a is None else a[:batch] for a in getattr(self, name)])
        for name in ("Z", "X", "Y", "index", "weight"):
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
    batch_norm : bool or sequence of bool
        Batch normalization of each hidden layer's Z before its activation (one flag for all,
        or one per hidden layer): ``A = σ(γ ⊙ (Z - μ) / √(σ² + ε) + β)`` with learnable γ
        (init 1) and β (init 0), ε = 1e-5. A training step uses the batch's mean μ and biased
        variance σ² and updates the running averages (momentum 0.1, the running variance
        from the unbiased batch variance, as ``torch.nn.BatchNorm1d``); every other pass
        (forward, predict, loss, evaluate) uses the running averages, except
        :meth:`backward`, which differentiates the training-mode batch loss. γ and β are
        updated by the optimizer like biases: no L1/L2 penalty (AdamW's decoupled decay
        applies to them, as to every parameter in PyTorch's default AdamW). The bias b of a
        normalized layer has no effect in training mode (the batch mean removes it): its
        gradient is 0 up to rounding, and training leaves b where it is (Adam or RMSProp
        would otherwise scale that rounding noise up to steps of size η). With
        ``sample_weight``, the batch statistics μ, σ² and the running averages are those of
        the batch's rows unweighted, as in PyTorch's ``BatchNorm1d`` and Keras'
        ``BatchNormalization`` (which take no weights): a row of weight 0 still moves them
        and normalizes the others, and a weight of 2 is not the row repeated (the loss and
        its gradient are weighted; the normalization is not).
    residual : bool or sequence of bool
        A skip connection around hidden layers: ``A_l = σ(BN(Z_l)) + A_{l-1}``, A_{l-1} the
        layer's input (after the previous layer's dropout in training). ``True`` adds one
        around every hidden layer whose input width equals its output width and silently
        skips the others; a per-layer list that asks for one where the widths differ raises
        ValueError listing those layers and their sizes.

    A "sequence" of per-layer values (``activations``, ``init``, ``dropout``, ``batch_norm``,
    ``residual``) is a list, tuple, range, 1-d NumPy array or any other
    ``collections.abc.Sequence`` (a string is one value).

    Notes
    -----
    The mode of every pass is explicit: a training step (:meth:`train_step`, run by
    :meth:`fit`) is the only pass that draws or applies dropout masks. :meth:`forward`,
    :meth:`predict`, :meth:`loss`, :meth:`evaluate` and :meth:`backward` run without dropout,
    read nothing another pass left in a workspace, and change no parameter, optimizer state,
    gradient buffer or training workspace (the inference passes only write their own scratch,
    the inference workspaces; :meth:`backward` works in buffers of its own, made per call).

    ``metadata`` (None, or a JSON dict checked by :func:`backprop.state.check_metadata` when
    saved: feature names, target name, class labels) travels with :meth:`save` and pickle.
    """

    metadata: dict[str, Any] | None = None

    def __init__(self, layer_sizes: Sequence[int], activations: Any, loss: str = "mse", *,
                 device: str = "cpu", backend: str | None = None, dtype: Any = "float32",
                 init: Any = None, seed: int | None = None, dropout: Any = 0.0,
                 batch_norm: Any = False, residual: Any = False) -> None:
        sizes = _check_layer_sizes(layer_sizes)
        n_layers = len(sizes) - 1
        self.layer_sizes = sizes
        self.activations = _per_layer("activations", activations, n_layers, _activations.get)
        self.loss_function = _losses.get(loss)
        self.dtype = check_dtype(dtype)
        check_architecture(sizes, self.activations, self.loss_function, self.dtype)
        inits = _per_layer("init", init, n_layers, lambda s: None if s is None else _init.get(s))
        self.dropout = _check_dropout(dropout, n_layers - 1)
        #: per hidden layer: batch normalization of Z before the activation
        self.batch_norm = _check_flags("batch_norm", batch_norm, n_layers - 1)
        #: per hidden layer: a residual connection A = σ(Ẑ) + A_prev
        self.residual = _check_residual(residual, sizes)
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
        #: batch normalization's γ (init 1), β (init 0), running mean (0) and running
        #: variance (1) per hidden layer, None for a layer without it
        self.gamma: list[Array | None] = []
        self.beta: list[Array | None] = []
        self.running_mean: list[Array | None] = []
        self.running_var: list[Array | None] = []
        self._init_batch_norm()

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
        """Σ_l n_l (n_{l-1} + 1), plus 2 n_l for each hidden layer with batch normalization."""
        return (sum(n_out * (n_in + 1)
                    for n_in, n_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
                + sum(2 * n for n, f in zip(self.layer_sizes[1:-1], self.batch_norm) if f))

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
        self._bn_grads: list[tuple[Array, Array] | None] | None = None
        self._flat_grad: Array | None = None   # the one buffer both are views of

    # ------------------------------------------------------------------ parameters

    def _load_host_parameters(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        be = self.backend
        self.W = [be.asarray(np.ascontiguousarray(W, dtype=self.dtype)) for W, _ in pairs]
        self.b = [be.asarray(np.ascontiguousarray(b, dtype=self.dtype)) for _, b in pairs]
        self._grads = self._bn_grads = self._flat_grad = None
        self.optimizer_ = None

    def _init_batch_norm(self) -> None:
        """γ = 1, β = 0, running mean 0 and running variance 1 for every batch-normalized layer."""
        be, dt = self.backend, self.dtype
        hidden = list(zip(self.layer_sizes[1:-1], self.batch_norm))
        #: indices in parameters() of the biases of normalized layers, which training leaves
        self._frozen = frozenset(2 * l + 1 for l, f in enumerate(self.batch_norm) if f)
        self.gamma = [be.asarray(np.ones(n, dt)) if f else None for n, f in hidden]
        self.beta = [be.zeros((n,), dt) if f else None for n, f in hidden]
        self.running_mean = [be.zeros((n,), dt) if f else None for n, f in hidden]
        self.running_var = [be.asarray(np.ones(n, dt)) if f else None for n, f in hidden]
        self._grads = self._bn_grads = self._flat_grad = None

    def parameters(self) -> list[Array]:
        """The parameter arrays on the device, flat: W1, b1, W2, b2, ..., WL, bL, then γ, β
        of each batch-normalized hidden layer in order (the names of
        :func:`backprop.state.parameter_names`)."""
        return ([p for pair in zip(self.W, self.b) for p in pair]
                + [p for g, b in zip(self.gamma, self.beta) if g is not None for p in (g, b)])

    def buffers(self) -> list[Array]:
        """The arrays a training step changes besides the parameters (PyTorch's buffers):
        running mean and running variance of each batch-normalized hidden layer, in order."""
        return [p for m, v in zip(self.running_mean, self.running_var) if m is not None
                for p in (m, v)]

    def get_batch_norm(self) -> list[dict[str, Any] | None]:
        """Per hidden layer, NumPy copies of its batch normalization, or None without it:
        ``{"gamma", "beta", "running_mean", "running_var"}`` arrays (n_l,) and the scalars
        ``"eps"``, ``"momentum"``. Inference computes ``Z = A_prev Wᵀ + b``,
        ``Ẑ = γ (Z - running_mean) / √(running_var + eps) + β``, ``A = σ(Ẑ)``."""
        with self._guard.call("get_batch_norm"):
            be = self.backend
            out: list[dict[str, Any] | None] = []
            for l in range(self.n_layers - 1):
                if not self.batch_norm[l]:
                    out.append(None)
                    continue
                out.append({"gamma": np.array(be.to_numpy(self.gamma[l])),
                            "beta": np.array(be.to_numpy(self.beta[l])),
                            "running_mean": np.array(be.to_numpy(self.running_mean[l])),
                            "running_var": np.array(be.to_numpy(self.running_var[l])),
                            "eps": BN_EPS, "momentum": BN_MOMENTUM})
            return out

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
            bn = [[None if x is None else target.asarray(source.to_numpy(x)) for x in group]
                  for group in (self.gamma, self.beta, self.running_mean, self.running_var)]
            state = self.optimizer_
            if state is not None:
                state.state = [tuple(target.asarray(source.to_numpy(s)) for s in st)
                               for st in state.state]
            self._attach(target)
            self.W, self.b = W, b
            self.gamma, self.beta, self.running_mean, self.running_var = bn
        return self

    def save(self, path: str | Path) -> None:
        """Write the whole training state to exactly ``path`` (see :mod:`backprop.state`):
        architecture, parameters, optimizer state, generators and history, atomically (the
        previous file stays intact if writing fails; a symbolic link keeps pointing at the new
        file). ValueError for a non-finite network or a ``path`` that is an existing directory,
        device, FIFO or socket;
        RuntimeError while another thread trains it (its state would be torn between steps)."""
        _state.target(path)             # a directory, device or FIFO refused before any work
        with self._guard.call("save"):
            state = _state.capture(self)
        _state.write(path, state)

    def to_onnx(self, path: str | Path) -> None:
        """Write the inference pass as a standard ONNX graph to exactly ``path``, atomically:
        input ``X`` (batch, n_0), output ``Y`` (batch, n_L) in the network's dtype (see
        :mod:`backprop.export`; needs the ``onnx`` package). ValueError for a network
        with NaN or Inf parameters."""
        from .export import to_onnx
        to_onnx(self, path)

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
                                                 size, self.dropout, train=False,
                                                 batch_norm=self.batch_norm,
                                                 residual=self.residual)
            if self._inference_rows is None or self._inference_rows.batch != batch:
                self._inference_rows = ws.rows(batch)
            return self._inference_rows
        ws = self._workspaces.pop(batch, None) or self._previous.pop(batch, None)
        if ws is None:
            while len(self._workspaces) >= TRAIN_WORKSPACES:
                del self._workspaces[next(iter(self._workspaces))]   # least recently used
            ws = Workspace(self.backend, self.layer_sizes, self.dtype, batch, self.dropout,
                           train=True, batch_norm=self.batch_norm, residual=self.residual)
        self._workspaces[batch] = ws                  # now the most recently used
        return ws

    def gradients(self) -> list[tuple[Array, Array]]:
        """The gradient buffers ``(dW, db)`` per layer (allocated on first use, then kept):
        views into one contiguous buffer of :attr:`n_parameters` elements
        (:meth:`flat_gradient`), in the order of :meth:`parameters` (W1, b1, ..., WL, bL,
        then batch normalization's dγ, dβ, :meth:`batch_norm_gradients`), which a
        data-parallel fit sums across processes with a single Allreduce and no packing copy."""
        if self._grads is None:
            params = self.parameters()
            flat = self.backend.zeros((sum(p.size for p in params),), self.dtype)
            views, offset = [], 0
            for p in params:
                views.append(flat[offset:offset + p.size].reshape(p.shape))
                offset += p.size
            L = self.n_layers
            rest = iter(views[2 * L:])
            self._bn_grads = [None if g is None else (next(rest), next(rest)) for g in self.gamma]
            self._grads = [(views[2 * l], views[2 * l + 1]) for l in range(L)]
            self._flat_grad = flat
        return self._grads

    def batch_norm_gradients(self) -> list[tuple[Array, Array] | None]:
        """The gradient buffers ``(dγ, dβ)`` per hidden layer, None without batch
        normalization: views into :meth:`flat_gradient`'s tail (see :meth:`gradients`)."""
        self.gradients()
        return self._bn_grads

    def _new_bn_grads(self) -> list[tuple[Array, Array] | None]:
        be = self.backend
        return [None if g is None else (be.empty(g.shape, self.dtype), be.empty(g.shape, self.dtype))
                for g in self.gamma]

    def _flat_gradients(self) -> list[Array]:
        """The gradient buffers in the order of :meth:`parameters`."""
        return ([g for pair in self.gradients() for g in pair]
                + [g for pair in self.batch_norm_gradients() if pair is not None for g in pair])

    def flat_gradient(self) -> Array:
        """The one contiguous buffer (n_parameters,) that :meth:`gradients` and
        :meth:`batch_norm_gradients` are views of, in the order of :meth:`parameters`."""
        self.gradients()
        return self._flat_grad

    # ------------------------------------------------------------------ the algorithm

    def _forward(self, ws: Workspace, X: Array, train: bool,
                 batch_stats: bool | None = None,
                 replica: "Replica | None" = None) -> list[Array]:
        """Forward propagation into ``ws``; returns the input of every layer (a[0..L-1]).

        ``train``: a training step's pass, which draws fresh dropout masks into ``ws.mask`` and
        applies them, and updates batch normalization's running statistics; otherwise no mask
        is drawn, read or applied and no running statistic changes. ``batch_stats`` (default:
        ``train``): batch normalization uses the batch's statistics (else the running ones).
        With a data-parallel ``replica`` the masks are those of the replica's rows of the
        global batch (:meth:`backprop.distributed.Replica.dropout`).
        """
        be = self.backend
        inputs = [X]
        last = self.n_layers - 1
        if batch_stats is None:
            batch_stats = train
        for l in range(self.n_layers):
            if l == last:
                be.forward(inputs[l], self.W[l], self.b[l], self.activations[l], ws.Z, ws.A[l])
                break
            out = ws.H[l] if self.residual[l] else ws.A[l]
            if self.batch_norm[l]:
                Zhat = ws.Zhat[l]
                be.forward(inputs[l], self.W[l], self.b[l], _IDENTITY, Zhat, Zhat)
                # a replica's batch statistics are those of the global batch
                bn = be if replica is None or not batch_stats else replica
                bn.batch_norm_forward(Zhat, self.gamma[l], self.beta[l], self.running_mean[l],
                                      self.running_var[l], batch_stats,
                                      BN_MOMENTUM if train else 0.0, BN_EPS,
                                      self.activations[l], Zhat, ws.mean[l], ws.inv_std[l], out)
            else:
                be.forward(inputs[l], self.W[l], self.b[l], self.activations[l], out, out)
            if self.residual[l]:
                be.add(out, inputs[l], ws.A[l])
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
                  bn_grads: list[tuple[Array, Array] | None] | None = None,
                  sgd: _optimizers.UpdateRule | None = None,
                  sample_weight: Array | None = None,
                  replica: "Replica | None" = None) -> None:
        """δ for every layer, then the weight gradients into ``grads`` (default
        :meth:`gradients`) and batch normalization's into ``bn_grads`` (default
        :meth:`batch_norm_gradients`); with an SGD ``rule`` each layer's W and b are updated
        in place instead (after its δ_{l-1} is computed; γ and β are left to the caller).

        ``train``: the backward pass of a training step, whose forward pass (``train=True``)
        drew the dropout masks in ``ws``: δ of a dropped layer is multiplied by its mask.
        Otherwise no mask is read. Batch normalization is differentiated through the batch
        statistics, so the forward pass must have used them (``batch_stats``).
        ``sample_weight`` (B,): the gradient of the batch's weighted mean loss (see
        :mod:`backprop.backends.base`). A data-parallel ``replica`` rescales the output delta
        from its b rows' 1/b to the global batch's 1/B, so that the sum of every replica's
        gradients is the global batch mean.
        """
        be = self.backend
        L = self.n_layers
        be.output_delta(ws.A[-1], Y, self.activations[-1], self.loss_function, ws.delta[-1],
                        sample_weight)
        if replica is not None:
            be.scale(ws.delta[-1], replica.row_fraction(ws.batch))
        if grads is None:
            grads = self.gradients()
        if bn_grads is None and any(self.batch_norm):
            bn_grads = self.batch_norm_gradients()
        for l in range(L - 1, -1, -1):
            if l > 0:  # δ_{l-1} from δ_l, needs W_l before its update
                self._hidden_delta(ws, l - 1, train, bn_grads, replica)
            dW, db = grads[l]
            if sgd is not None and l < L - 1 and self.batch_norm[l]:
                be.weight_grad(ws.delta[l], inputs[l], dW, db)
                be.update(self.W[l], dW, (), sgd)    # b stays: see Network's batch_norm
            elif sgd is None:
                be.weight_grad(ws.delta[l], inputs[l], dW, db)
            else:
                be.sgd_weight_update(ws.delta[l], inputs[l], self.W[l], self.b[l], sgd, dW, db)

    def _hidden_delta(self, ws: Workspace, h: int, train: bool,
                      bn_grads: list[tuple[Array, Array] | None] | None,
                      replica: "Replica | None" = None) -> None:
        """δ of hidden layer h from δ_{h+1}: ``E = ∂L/∂A_h = (δ_{h+1} W_{h+1} + [skip] E_{h+1})
        ⊙ mask_h``, ``δ_h = E ⊙ σ'(H_h)`` (H_h = A_h without a skip), then through batch
        normalization (its dγ, dβ into ``bn_grads[h]``; a ``replica`` differentiates through
        the global batch's statistics, :meth:`backprop.distributed.Replica.batch_norm_backward`)."""
        be = self.backend
        above = h + 1
        skip_above = above < self.n_layers - 1 and self.residual[above]
        masked = train and self.dropout[h]
        act = self.activations[h]
        if not (self.residual[h] or skip_above):       # the plain path: σ' fused in the product
            be.delta(ws.delta[above], self.W[above], ws.A[h], act, ws.delta[h])
            if masked:
                be.multiply(ws.delta[h], ws.mask[h])
        else:
            E = ws.E[h] if self.residual[h] else ws.delta[h]   # kept for the skip below
            be.delta(ws.delta[above], self.W[above], E, _IDENTITY, E)
            if skip_above:
                be.add(E, ws.E[above], E)
            if masked:
                be.multiply(E, ws.mask[h])
            be.activation_backward(E, ws.H[h] if self.residual[h] else ws.A[h], act,
                                   ws.delta[h])
        if self.batch_norm[h]:
            dgamma, dbeta = bn_grads[h]
            bn = be if replica is None else replica
            bn.batch_norm_backward(ws.delta[h], ws.Zhat[h], self.gamma[h], ws.inv_std[h],
                                   dgamma, dbeta, ws.delta[h])

    def train_step(self, ws: Workspace, X: Array, Y: Array, optimizer: _optimizers.Optimizer,
                   learning_rate: float, l1: float = 0.0, l2: float = 0.0,
                   clip_norm: float | None = None, clip_value: float | None = None,
                   sample_weight: Array | None = None,
                   replica: "Replica | None" = None) -> None:
        """One mini-batch step on device arrays ``X`` (B, n_0), ``Y`` (B, n_L) of ``ws``'s
        batch size: forward, loss (added to ``ws.total``), backward, update. Allocates nothing.
        ``sample_weight`` (B,): the step descends the batch's weighted mean loss
        ``Σ w_b L_b / Σ w_b`` and ``ws.total`` gains ``Σ w_b L_b``.

        Clipping: the gradient is scaled to global L2 norm ``clip_norm`` first (the norm of
        the unclipped gradient), then each component clipped to [-clip_value, clip_value].

        With a data-parallel ``replica`` (:class:`backprop.distributed.Replica`) X, Y are this
        process's rows of a global batch: the gradients are summed over every replica (one
        Allreduce of :meth:`flat_gradient`) before clipping and the update.
        """
        be = self.backend
        inputs = self._forward(ws, X, train=True, replica=replica)
        be.loss(ws.A[-1], ws.Z, Y, self.activations[-1], self.loss_function, ws.total,
                sample_weight)
        if (replica is None and optimizer.kind == _optimizers.SGD_KIND and not l1
                and clip_norm is None and clip_value is None):
            rule_w, rule_b = optimizer.rules(learning_rate, l2=l2)
            self._backward(ws, inputs, Y, train=True, sgd=rule_w, sample_weight=sample_weight)
            if self._frozen:                         # γ, β: the biases' rule
                for p, g in zip(self.parameters()[2 * self.n_layers:],
                                self._flat_gradients()[2 * self.n_layers:]):
                    be.update(p, g, (), rule_b)
            return
        self._backward(ws, inputs, Y, train=True, sample_weight=sample_weight, replica=replica)
        if replica is not None:
            replica.allreduce_gradients()
        self._apply_gradients(ws, optimizer, learning_rate, l1, l2, clip_norm, clip_value)

    def _apply_gradients(self, ws: Workspace, optimizer: _optimizers.Optimizer,
                         learning_rate: float, l1: float, l2: float,
                         clip_norm: float | None, clip_value: float | None) -> None:
        """Clip (the norm's factor into ``ws.scale``) and take the optimizer step with every
        gradient (:meth:`_flat_gradients`)."""
        be = self.backend
        grads = self._flat_gradients()
        scale: Any = 1.0
        if clip_norm is not None:
            be.grad_scale(grads, clip_norm, ws.scale)
            scale = ws.scale
        optimizer.step(be, self.parameters(), grads, learning_rate, l1, l2, scale,
                       clip_value or 0.0, weights=self.n_layers, frozen=self._frozen)

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

    def _prepare(self, X: Any, Y: Any, names: tuple[str, str] = ("X", "Y"),
                 empty: bool = False) -> tuple[Array, Array]:
        """X and Y checked and on the device; errors name them as ``names``; ``empty``: 0
        samples accepted (a rank's part of a sharded data set)."""
        X = check_X(self.backend, X, self.layer_sizes[0], self.dtype, name=names[0],
                    empty=empty)
        Y = check_Y(self.backend, Y, X.shape[0], self.layer_sizes[-1], self.loss_function,
                    self.dtype, name=names[1], x_name=names[0], empty=empty)
        return X, Y

    def _prepare_weight(self, sample_weight: Any, n: int, name: str = "sample_weight",
                        part: bool = False) -> Array | None:
        """``sample_weight`` checked (:func:`backprop.validation.check_sample_weight`, whose
        ``part`` this passes on) and on the device in the network's dtype; None stays None."""
        if sample_weight is None:
            return None
        return check_sample_weight(self.backend, sample_weight, n, self.dtype, name=name,
                                   part=part)

    def loss(self, X: Any, Y: Any, sample_weight: Any = None) -> float:
        """The mean per-sample loss over (X, Y); with ``sample_weight`` (n_samples,) the
        weighted mean ``Σ_i w_i L_i / Σ_i w_i`` (``numpy.average``'s, as scikit-learn's MLP
        losses take it). Errors name ``sample_weight`` (see :meth:`fit`)."""
        with self._guard.call("loss"):
            X, Y = self._prepare(X, Y)
            w = self._prepare_weight(sample_weight, X.shape[0])
            return self._loss_sum(X, Y, w) / self._rows_weight(X, w)

    def _loss_sum(self, X: Array, Y: Array, w: Array | None) -> float:
        """``Σ_i w_i L_i`` (w_i = 1 without weights) over (X, Y), in inference chunks."""
        be = self.backend
        total = 0.0
        for rows, ws in self._inference_chunks(X):
            ws.total[0] = 0
            be.loss(ws.A[-1], ws.Z, Y[rows], self.activations[-1], self.loss_function, ws.total,
                    None if w is None else w[rows])
            total += float(be.to_numpy(ws.total)[0])
        return total

    def _rows_weight(self, X: Array, w: Array | None) -> float:
        """The denominator of a mean over X's rows: their number, or ``Σ w`` with weights."""
        return X.shape[0] if w is None else weight_sum(self.backend, w)

    def backward(self, X: Any, Y: Any, sample_weight: Any = None) -> "Gradients":
        """Gradients ``(dW, db)`` per layer on the device: the batch mean of the per-sample
        gradients of the loss over all of (X, Y) as one batch (no dropout); with
        ``sample_weight`` (n_samples,) the gradient of the weighted mean loss
        ``Σ_i w_i L_i / Σ_i w_i``, i.e. ``Σ_i (w_i / Σ w) ∇L_i``.

        With batch normalization these are the gradients of the *training-mode* batch loss:
        (X, Y) is one batch normalized with its own mean and biased variance (ValueError
        for a single row), exactly as a training step without dropout would see it (the
        loss :func:`backprop.gradcheck` differentiates numerically); the running statistics
        are neither used nor changed.
        The result's ``batch_norm`` attribute holds ``(dγ, dβ)`` per hidden layer (None
        without batch normalization).

        Runs in a workspace and gradient arrays of its own, made for this call: it reads no
        dropout mask and changes nothing in the network.
        """
        with self._guard.call("backward"):
            X, Y = self._prepare(X, Y)
            self._check_batch_rows(X)
            w = self._prepare_weight(sample_weight, X.shape[0])
            return self._backward_pass(X, Y, sample_weight=w)[2]

    def _check_batch_rows(self, X: Array) -> None:
        """ValueError when X, taken as one training-mode batch, has 1 row and the network
        normalises a layer: its batch variance is 0, every Ẑ is β and no gradient depends on
        the batch (PyTorch's BatchNorm1d refuses it: "Expected more than 1 value per channel
        when training")."""
        if any(self.batch_norm) and X.shape[0] < 2:
            raise ValueError(f"X: batch normalization needs at least 2 rows in a batch; got "
                             f"{X.shape[0]} row")

    def _backward_buffers(self, rows: int) -> tuple[Workspace, "Gradients"]:
        """A workspace of ``rows`` rows and gradient arrays of :meth:`backward`'s own, made
        anew (``fit(diagnostics=True)`` keeps one pair for its probe batch)."""
        be = self.backend
        ws = Workspace(be, self.layer_sizes, self.dtype, rows, [0.0] * len(self.dropout),
                       train=True, batch_norm=self.batch_norm, residual=self.residual)
        grads = Gradients((be.empty(W.shape, self.dtype), be.empty(b.shape, self.dtype))
                          for W, b in zip(self.W, self.b))
        grads.batch_norm = self._new_bn_grads()
        return ws, grads

    def _backward_pass(self, X: Array, Y: Array, buffers: tuple[Workspace, Any] | None = None,
                       sample_weight: Array | None = None
                       ) -> tuple[Workspace, list[Array], "Gradients"]:
        """:meth:`backward` on checked device arrays, in ``buffers`` (from
        :meth:`_backward_buffers`) or new ones: returns the workspace (activations and δ of
        every layer), every layer's input and the gradients. The one place both
        :meth:`backward` and :func:`backprop.diagnostics.diagnose` take their pass from."""
        ws, grads = buffers if buffers is not None else self._backward_buffers(X.shape[0])
        inputs = self._forward(ws, X, train=False, batch_stats=True)
        self._backward(ws, inputs, Y, train=False, grads=grads, bn_grads=grads.batch_norm,
                       sample_weight=sample_weight)
        return ws, inputs, grads

    def diagnose(self, X: Any, Y: Any, learning_rate: float = 0.01) -> "Diagnosis":
        """Per-layer gradient norms, update ratios, dead and saturated units, and verdicts
        naming vanishing or exploding gradients and dead ReLUs with the seeds' remedies: see
        :func:`backprop.diagnostics.diagnose`. Changes nothing in the network."""
        from .diagnostics import diagnose
        return diagnose(self, X, Y, learning_rate)

    def _batch_loss(self, X: Array, Y: Array) -> float:
        """The mean loss of (X, Y) (device arrays) as one training-mode batch without dropout:
        what :meth:`backward` differentiates (batch statistics; nothing changes)."""
        ws = Workspace(self.backend, self.layer_sizes, self.dtype, X.shape[0],
                       [0.0] * len(self.dropout), train=False, batch_norm=self.batch_norm,
                       residual=self.residual)
        self._forward(ws, X, train=False, batch_stats=True)
        self.backend.loss(ws.A[-1], ws.Z, Y, self.activations[-1], self.loss_function, ws.total)
        return float(self.backend.to_numpy(ws.total)[0]) / X.shape[0]

    def evaluate(self, X: Any, Y: Any, sample_weight: Any = None) -> dict[str, float]:
        """``{"loss": mean loss}``, plus ``"accuracy"`` for the classification losses (the
        fraction of samples classified right: argmax for cross_entropy, each output unit
        thresholded at 0.5 for binary_cross_entropy, averaged over the units). With
        ``sample_weight`` (n_samples,) both are weighted means, ``Σ w_i x_i / Σ w_i``
        (scikit-learn's ``accuracy_score(..., sample_weight=)``)."""
        with self._guard.call("evaluate"):
            X, Y = self._prepare(X, Y)
            w = self._prepare_weight(sample_weight, X.shape[0])
            return self._evaluate(X, Y, w)

    def _evaluate(self, X: Array, Y: Array, w: Array | None = None) -> dict[str, float]:
        seen = self._rows_weight(X, w)
        result = {"loss": self._loss_sum(X, Y, w) / seen}
        if self.loss_function.classification:
            correct = 0.0
            xp = self.backend.xp
            for rows, ws in self._inference_chunks(X):
                y_hat, y = ws.A[-1], Y[rows]
                if self.loss_function.code == _losses.CROSS_ENTROPY:
                    right = xp.argmax(y_hat, axis=1) == xp.argmax(y, axis=1)
                else:   # binary: each output unit thresholded at 0.5
                    right = (y_hat >= 0.5) == (y >= 0.5)
                if w is None:
                    correct += int(right.sum()) / (1 if right.ndim == 1 else y.shape[1])
                else:   # per sample: the fraction of its units right, times its weight
                    per_sample = right if right.ndim == 1 else right.mean(axis=1)
                    correct += float((per_sample * w[rows].astype(np.float64)).sum())
            result["accuracy"] = correct / seen
        return result

    def fit(self, X: Any, Y: Any, *, epochs: int, batch_size: int, learning_rate: float,
            optimizer: str | _optimizers.Optimizer = "sgd", shuffle: bool = True,
            seed: int | None = None, validation_data: tuple[Any, Any] | None = None,
            l1: float = 0.0, l2: float = 0.0, clip_norm: float | None = None,
            lr_schedule: Any = None, callbacks: Sequence["Callback"] = (),
            verbose: bool | str = False, checkpoint: str | Path | None = None,
            on_nonfinite: str = "warn", clip_value: float | None = None,
            warmup_steps: int = 0, diagnostics: bool = False, sample_weight: Any = None,
            validation_split: float = 0.0, distributed: bool = False, comm: Any = None,
            shard: bool = False) -> "History":
        """Mini-batch gradient descent, as in the seeds; see :func:`backprop.training.fit`
        (``sample_weight``: per-sample weights, each step descending its batch's weighted
        mean loss; ``validation_split``: the last fraction of the rows held out, as Keras;
        ``distributed``: data-parallel over MPI, see :mod:`backprop.distributed`).

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
                           clip_value=clip_value, warmup_steps=warmup_steps,
                           diagnostics=diagnostics, sample_weight=sample_weight,
                           validation_split=validation_split, distributed=distributed,
                           comm=comm, shard=shard)
            finally:
                self._previous = {}


class Gradients(list):
    """:meth:`Network.backward`'s result: a list of ``(dW, db)`` per layer, and
    ``batch_norm``: ``(dγ, dβ)`` per hidden layer, None for a layer without batch
    normalization."""

    batch_norm: list[tuple[Array, Array] | None]


# ---------------------------------------------------------------------- helpers

def weight_sum(backend: Backend, w: Array) -> float:
    """``Σ w`` in float64 (one read from the device)."""
    return float(backend.to_numpy(w.sum(dtype=np.float64)))


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
    """One entry per layer from a single spec or a sequence of n specs (a list, tuple,
    NumPy array, ...: :func:`backprop.validation.per_layer`)."""
    entries = _named_sequence(name, spec)
    if entries is not None:
        if len(entries) != n:
            raise ValueError(f"{name}: expected one entry per layer after the input ({n}), "
                             f"got {len(entries)}")
        return [get(s) for s in entries]
    return [get(spec)] * n


def _named_sequence(name: str, spec: Any) -> list[Any] | None:
    try:
        return _sequence(spec)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _check_dropout(dropout: Any, n_hidden: int) -> list[float]:
    rates = _named_sequence("dropout", dropout)
    rates = [dropout] * n_hidden if rates is None else rates
    if len(rates) != n_hidden:
        raise ValueError(f"dropout: expected one rate per hidden layer ({n_hidden}), got {len(rates)}")
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 <= r < 1:
            raise ValueError(f"dropout: rates must be numbers with 0 <= rate < 1, got {r!r}")
    return [float(r) for r in rates]


def _check_flags(name: str, spec: Any, n_hidden: int) -> list[bool]:
    """One bool per hidden layer from a bool or a sequence of n_hidden bools."""
    flags = _named_sequence(name, spec)
    flags = [spec] * n_hidden if flags is None else flags
    if len(flags) != n_hidden:
        raise ValueError(f"{name}: expected one flag per hidden layer ({n_hidden}), got "
                         f"{len(flags)}")
    for f in flags:
        if not isinstance(f, (bool, np.bool_)):
            raise TypeError(f"{name}: expected True/False, or one per hidden layer, got {spec!r}")
    return [bool(f) for f in flags]


def _check_residual(spec: Any, sizes: Sequence[int]) -> list[bool]:
    """The residual flags: ``True`` marks every hidden layer whose input and output widths
    are equal; a list must ask only for such layers (ValueError listing the others)."""
    n_hidden = len(sizes) - 2
    fits = [sizes[l] == sizes[l + 1] for l in range(n_hidden)]
    if isinstance(spec, (bool, np.bool_)):
        return [bool(spec) and f for f in fits]
    flags = _check_flags("residual", spec, n_hidden)
    bad = [f"layer {l + 1} ({sizes[l]} -> {sizes[l + 1]})"
           for l in range(n_hidden) if flags[l] and not fits[l]]
    if bad:
        raise ValueError(f"residual: a skip connection needs a hidden layer whose input width "
                         f"equals its output width; these differ: {', '.join(bad)}")
    return flags
