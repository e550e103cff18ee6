"""Data-parallel training over MPI (mpi4py), with the gradients summed by NCCL on GPUs.

``fit(..., distributed=True)`` run by every process of an MPI job (``mpiexec -n 4 python
train.py``) trains one network: every rank holds a replica, and each step's gradients are
averaged over the ranks before the update, so that N ranks follow the trajectory of one
process with the same global batch (equal to rounding: only the order in which the rows'
gradients are summed differs).

The rules, in the order a fit applies them:

* **Communicator**: ``MPI.COMM_WORLD``, or ``comm=`` (an mpi4py communicator, or a
  :class:`Communicator` to set the ``timeout``). mpi4py is imported only then
  (``pip install 'backprop[mpi]'``).
* **Same arguments**: every rank calls fit with the same arguments and an equal network
  (rank 0 alone writes the checkpoint, but every rank passes its path; only X, Y and
  sample_weight differ, with ``shard``). Before any other collective, one Allgather of each
  rank's description of its settings (:func:`describe`: the architecture with activations,
  dtype, dropout, batch normalization and residual flags, the backend, the optimizer and its
  hyperparameters, epochs, batch_size, learning_rate, l1, l2, clip_norm, clip_value,
  warmup_steps, shuffle, whether a seed, a checkpoint, sample weights are given,
  validation_split, the validation data's checksums, the lr_schedule, diagnostics,
  on_nonfinite, shard) is compared on every rank (:func:`agree_settings`): a difference
  raises the same ValueError on every rank, naming the first setting that differs and each
  rank's value, rather than a silent divergence or a collective's timeout. Callbacks and
  ``verbose`` may differ (a logging callback on rank 0 alone).
* **Seed and state**: ``seed=None`` becomes a seed drawn on rank 0 and broadcast, so that
  the shuffle order and the dropout masks are the same on every rank. The parameters, the
  optimizer's buffers and step count are broadcast from rank 0 (replicas built with
  different seeds start equal). A checkpoint is read by rank 0 alone and its state
  broadcast; only rank 0 writes it, prints (``verbose``) and shows progress.
* **Batches**: the data set is N rows. By default every rank is given the whole data set
  (the same X, Y; N is its length). With ``shard=True`` each rank is given its own part:
  the global data set is the concatenation of the parts in rank order (global row
  ``offset_r + i`` is row i of rank r, offsets from an Allgather of the part sizes); a part
  may be empty (its feature count is checked still; the global N must be at least 1), and
  such a rank takes part in every step with no row. Each
  epoch one permutation of the N global rows is drawn from the shared generator and cut into
  global batches of ``batch_size`` rows (the last one partial), exactly as one process does.
  Without ``shard`` a global batch of B rows is split into contiguous, non-overlapping
  slices: rank r takes the rows ``[r·B // P, (r+1)·B // P)`` of it (P ranks; a slice may be
  empty). With ``shard`` rank r takes the batch's rows that it holds, in batch order.
* **Gradients**: a rank with b of the batch's B rows computes the sum of its rows' gradients
  divided by B (its output delta is scaled by b/B after the kernel's 1/b), so the sum over
  ranks is the global batch mean; the sum is one Allreduce over one contiguous buffer
  (:meth:`backprop.network.Network.flat_gradient`; the per-layer dW, db are views into it),
  then clipping (``clip_norm``, on the averaged gradient) and the optimizer step, identical on
  every rank. A rank with no row of a batch contributes zeros and still steps.
* **Batch normalization**: the statistics are the global batch's, as one process's: each
  normalized layer's column sums Σz are Allreduced, then (two passes, as one process)
  Σ(z − μ)², with the global row count B for the mean, the biased variance and the running
  variance's unbiased factor B/(B − 1); backward, ∂L/∂Z needs the global Σg and Σg ⊙ ẑ, one
  Allreduce of a buffer of their own (dγ, dβ in the gradient buffer keep the rank's sums,
  which the gradient Allreduce adds up once). Three Allreduces of n values per normalized
  layer and step; a rank with no row of a batch adds zeros to each.
* **Sample weights**: a step descends the global batch's weighted mean loss: a rank's output
  delta is scaled by its rows' share Σ_local w / Σ_batch w of the batch's weight sum (0 when
  the batch weighs nothing); the epoch loss is divided by the global Σ w. With ``shard`` a
  rank's own weights may all be 0 (the sum over the ranks must be positive), and
  ``validation_split`` is refused (each rank would hold out its own rows and log its own
  ``val_loss``).
* **Dropout**: masks are drawn per global row. Every rank draws the whole global batch's
  masks from the shared generator, exactly as one process draws them, and uses its rows of
  them.
* **Loss**: the epoch's summed loss is Allreduced, so every rank logs the global mean.
  Validation data is evaluated whole by every rank, also with ``shard``: it must be the
  same on every rank (checked by its checksums), so that every rank logs the same
  ``val_loss`` and its callbacks see the same logs.
* **Stopping**: after every epoch, one Allreduce of one value agrees the stop decision: when
  a callback on any rank asks to stop, every rank stops after that epoch (its
  ``history.stopped_early`` is True), so no rank is left waiting in the next epoch's
  collectives. Divergence needs no collective: it is decided from values equal on every
  rank (the global loss, the same validation data, the replicated parameters).
* **Failures**: an exception on any rank (bad data, a callback, Ctrl-C) prints that rank's
  traceback to stderr and aborts the communicator (``MPI_Abort``), which ends every process
  of the job with a non-zero exit status (a SystemExit's own code, ``sys.exit(3)``, else 1):
  no rank is left waiting in a collective. Every
  collective waits at most ``timeout`` seconds (polling a non-blocking MPI request), then
  raises TimeoutError (and so aborts the job). With one rank nothing is aborted: the
  exception propagates as without ``distributed``.
* **GPUs**: each rank trains on a GPU of its own (``device=f"cuda:{local_rank}"``: NCCL
  refuses two ranks on one GPU). On the cupy backend the gradient buffer is summed on the
  device by NCCL (``cupy.cuda.nccl``; the unique id is broadcast over MPI), on the stream the
  step's kernels run on, with no copy through the host. The deadline of the NCCL calls is
  watched once per epoch, when the loss is read (an event polled against ``timeout``). The
  step's CUDA-graph path (:meth:`CuPyBackend.train_epoch`) is bypassed when distributed:
  NCCL calls can be captured, but a replica's step is not one fixed shape (the uneven last
  batch, ``shard``'s varying row counts), its dropout slices the global masks with array
  copies a capture does not record, and the emulator cannot record NCCL in a graph, so the
  captured variant could not be tested here. The eager step costs its kernel launches
  (see benchmarks/results/2vcpu-intel-xeon/distributed.md).

Hooks for what other parts add (the interface they use): :meth:`Replica.allreduce` sums any
buffer of the backend's device across ranks (batch normalization's per-feature batch sums,
:meth:`Replica.batch_norm_forward` and :meth:`Replica.batch_norm_backward`);
:meth:`Replica.row_fraction` is the factor a rank's output delta is scaled by (with sample
weights: the rank's share of the global batch's weight sum rather than of its rows).
``fit(diagnostics=True)``: every rank diagnoses a probe of its own rows, with no collective;
rank 0 alone warns (a rank whose sharded part is empty has no probe: None per epoch).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    from .network import Network
    from .optimizers import Optimizer

#: environment variable giving the default :class:`Communicator` timeout, in seconds
TIMEOUT_ENV = "BACKPROP_DISTRIBUTED_TIMEOUT"
#: the default timeout of a collective (seconds): long enough for the slowest rank to start
#: (imports, loading data, compiling the numba kernels), short enough that a dead peer is
#: reported within minutes rather than never
DEFAULT_TIMEOUT = 300.0
#: seconds a wait spins on its MPI request before it sleeps between tests (see Communicator.poll)
SPIN = 0.05


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("distributed=True needs mpi4py and an MPI library: "
                          "pip install 'backprop[mpi]' (mpi4py and mpich)") from None
    return MPI


def batch_slice(rows: int, size: int, rank: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of a global batch of ``rows`` that ``rank`` of ``size`` takes
    (without ``shard``): ``lo = rank·rows // size``, ``hi = (rank+1)·rows // size``."""
    return rank * rows // size, (rank + 1) * rows // size


class Communicator:
    """An MPI communicator whose collectives fail after ``timeout`` seconds.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    timeout : float, optional
        Seconds a collective may take before TimeoutError; default the environment variable
        ``BACKPROP_DISTRIBUTED_TIMEOUT``, else :data:`DEFAULT_TIMEOUT` (300).

    Raises ImportError without mpi4py, TypeError for a ``comm`` that is not an mpi4py
    communicator, ValueError for a non-positive timeout.
    """

    def __init__(self, comm: Any = None, timeout: float | None = None) -> None:
        MPI = _mpi()
        if comm is None:
            comm = MPI.COMM_WORLD
        if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
            raise TypeError(f"comm: expected an mpi4py communicator (MPI.Comm), got {comm!r}")
        if timeout is None:
            raw = os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)
            try:
                timeout = float(raw)
            except ValueError:
                raise ValueError(f"{TIMEOUT_ENV}: expected a number of seconds, got {raw!r}") from None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        self.MPI = MPI
        self.comm = comm
        self.timeout = float(timeout)
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, timeout={self.timeout:g})"

    # ------------------------------------------------------------------ deadlines

    def wait(self, request: Any, what: str) -> None:
        """Complete a non-blocking MPI ``request``, or raise TimeoutError after ``timeout``."""
        self.poll(request.Test, what)

    def poll(self, done: Callable[[], bool], what: str) -> None:
        """Call ``done()`` until it is True, TimeoutError after ``timeout`` seconds.

        MPI progresses a non-blocking collective only inside such calls, so for the first
        :data:`SPIN` seconds it calls ``done()`` as fast as a blocking MPI call would, yielding
        the core between calls (``sched_yield``: measured as fast as a blocking Allreduce on
        an oversubscribed machine, where spinning without it was 10x slower), then sleeps
        0.1 ms between calls (a rank waiting long for a slow peer leaves it the core)."""
        if done():
            return
        start = time.monotonic()
        spin, deadline = start + SPIN, start + self.timeout
        while not done():
            os.sched_yield()
            now = time.monotonic()
            if now > spin:
                if now > deadline:
                    raise TimeoutError(
                        f"distributed: rank {self.rank} of {self.size}: {what} did not complete "
                        f"within the timeout of {self.timeout:g} s; another rank failed, stalled "
                        f"or never called it (set Communicator(timeout=...) or {TIMEOUT_ENV})")
                time.sleep(1e-4)

    # ------------------------------------------------------------------ collectives (host)

    def allreduce(self, buf: np.ndarray, what: str) -> None:
        """``buf ← Σ_ranks buf`` in place (a host array)."""
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM), what)

    def bcast(self, buf: np.ndarray, what: str, root: int = 0) -> None:
        """``buf ← buf of root`` in place (a host array)."""
        self.wait(self.comm.Ibcast(buf, root=root), what)

    def bcast_object(self, obj: Any, what: str, root: int = 0) -> Any:
        """``obj`` of ``root``, pickled (length, then bytes; both with the deadline)."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.rank == root else b""
        length = np.array([len(data)], dtype=np.int64)
        self.bcast(length, what, root)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root else \
            np.empty(int(length[0]), dtype=np.uint8)
        self.bcast(buf, what, root)
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def allgather_object(self, obj: Any, what: str) -> list[Any]:
        """Every rank's ``obj``, pickled, in rank order (the lengths, then the bytes: two
        collectives, both with the deadline)."""
        data = np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)
        counts = self.allgather_int(data.size, what)
        out = np.empty(sum(counts), dtype=np.uint8)
        displacements = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.wait(self.comm.Iallgatherv(data.copy(), [out, counts, displacements.tolist(),
                                                      self.MPI.BYTE]), what)
        return [pickle.loads(out[d:d + c].tobytes()) for d, c in zip(displacements, counts)]

    def allgather_int(self, value: int, what: str) -> list[int]:
        """Every rank's ``value``, in rank order."""
        out = np.empty(self.size, dtype=np.int64)
        self.wait(self.comm.Iallgather(np.array([value], dtype=np.int64), out), what)
        return [int(v) for v in out]

    # ------------------------------------------------------------------ failures

    @contextlib.contextmanager
    def abort_on_error(self) -> Iterator[None]:
        """An exception inside prints this rank's traceback to stderr and aborts the job
        (``MPI_Abort``) with status 1, or a SystemExit's own non-zero integer code
        (``sys.exit(3)`` in a callback ends the job with status 3 where the MPI library passes
        it on, as MPICH's ``mpiexec`` does); with one rank it propagates unchanged."""
        try:
            yield
        except BaseException as error:
            if self.size == 1:
                raise
            code = 1
            if isinstance(error, SystemExit) and isinstance(error.code, int) and error.code:
                code = error.code
            try:
                sys.stdout.flush()
                sys.stderr.write(f"backprop.distributed: rank {self.rank} of {self.size} "
                                 f"raised; aborting the job\n{traceback.format_exc()}")
                sys.stderr.flush()
            finally:
                self.comm.Abort(code)
            raise  # pragma: no cover - Abort does not return


def agree_settings(comm: Communicator, settings: dict[str, Any]) -> None:
    """Check that every rank calls fit with the same settings (:func:`describe`), before any
    collective that depends on them: one Allgather of every rank's description, compared on
    every rank in the same order, so that every rank raises the same ValueError naming the
    first setting that differs and each rank's value of it (rather than training apart or
    waiting out the timeout in a collective another rank never calls)."""
    every = comm.allgather_object(list(settings.items()),
                                  "the Allgather of the fit's settings")
    first = dict(every[0])
    for key in first:
        values = [repr(dict(d).get(key, "(not given)")) for d in every]
        if len(set(values)) > 1:
            groups: dict[str, list[int]] = {}
            for r, v in enumerate(values):
                groups.setdefault(v, []).append(r)
            listing = "; ".join(f"rank{'s' if len(ranks) > 1 else ''} "
                                f"{', '.join(map(str, ranks))}: {v}"
                                for v, ranks in groups.items())
            raise ValueError(f"{key}: every rank of a distributed fit must pass the same "
                             f"arguments and network, but they differ ({listing})")


def describe(net: "Network", optimizer: "Optimizer", val: Any,
             **settings: Any) -> dict[str, Any]:
    """What :func:`agree_settings` compares: the network's architecture (layer sizes,
    activations, loss, dtype, dropout, batch normalization, residual), its backend's name,
    the optimizer's kind and hyperparameters, the validation data's shape and float64
    checksums (every rank evaluates it: it must be the same on every rank, also with
    ``shard``), and fit's other ``settings`` as given (JSON-like values; a callable is
    described by its type, and its public attributes or repr)."""
    from .state import architecture
    out: dict[str, Any] = dict(architecture(net))
    out["backend"] = net.backend.name
    out["optimizer"] = (optimizer.name, optimizer.hyperparameters())
    if val is None:
        out["validation_data"] = None
    else:
        be = net.backend
        out["validation_data"] = [None if a is None else
                                  (tuple(a.shape), _checksums(be, a.reshape(a.shape[0], -1)))
                                  for a in val]
    for key, value in settings.items():
        out[key] = _callable_description(value) if callable(value) else value
    return out


def _callable_description(f: Any) -> str:
    """A description of a callable that is the same in every process (no address)."""
    name = getattr(f, "__qualname__", None)
    if name is not None:                                    # a function, a class
        return f"{getattr(f, '__module__', '')}.{name}"
    kind = f"{type(f).__module__}.{type(f).__qualname__}"
    text = repr(f)
    if " at 0x" not in text:                                # a repr of its own
        return text
    public = {k: v for k, v in sorted(vars(f).items()) if not k.startswith("_")} \
        if hasattr(f, "__dict__") else {}
    return f"{kind}({', '.join(f'{k}={v!r}' for k, v in public.items())})"


def rank(comm: Any = None) -> int:
    """This process's rank in ``comm`` (None: ``MPI.COMM_WORLD``; a :class:`Communicator`
    too), 0 without mpi4py: what a program's own output checks, to print on rank 0 alone
    (``if distributed.rank() == 0: print(...)``), as fit does."""
    if isinstance(comm, Communicator):
        return comm.rank
    if comm is None:
        try:
            from mpi4py import MPI
        except ImportError:
            return 0
        comm = MPI.COMM_WORLD
    return int(comm.Get_rank())


def communicator(comm: Any) -> Communicator:
    """``comm`` as a :class:`Communicator` (None: ``MPI.COMM_WORLD``)."""
    return comm if isinstance(comm, Communicator) else Communicator(comm)


class Replica:
    """One rank's part in a data-parallel fit: the rows it takes of each global batch, the
    gradient sum, the global dropout masks. Made by :func:`backprop.training.fit`.

    ``n_global`` is the global data set's size N; ``n_local`` this rank's rows.
    """

    def __init__(self, comm: Communicator, net: "Network", X: Any, Y: Any, shard: bool,
                 weight: Any = None) -> None:
        n_local = X.shape[0]
        self.comm = comm
        self.net = net
        self.shard = shard
        self.rank, self.size = comm.rank, comm.size
        sizes = comm.allgather_int(n_local, "the Allgather of the data set sizes")
        if shard:
            self.offset = sum(sizes[:self.rank])
            self.n_global = sum(sizes)
            if self.n_global < 1:
                raise ValueError(f"X: with shard=True the ranks' parts hold {sizes} rows; the "
                                 "data set needs at least one sample")
        else:
            if len(set(sizes)) != 1:
                raise ValueError(f"X: without shard=True every rank must be given the whole "
                                 f"data set, but the ranks hold {sizes} rows; pass shard=True "
                                 "to give each rank its own part")
            # the same data everywhere, in the same order: checked by float64 checksums
            mine = _checksums(net.backend, X) + _checksums(net.backend, Y)
            if weight is not None:
                mine += _checksums(net.backend, weight.reshape(-1, 1))
            theirs = comm.bcast_object(mine, "the broadcast of the data set's checksums")
            if mine != theirs:
                raise ValueError(f"X, Y: without shard=True every rank must be given the same "
                                 f"data set, but rank {self.rank}'s checksums {mine} differ "
                                 f"from rank 0's {theirs}; pass shard=True to give each rank "
                                 "its own part")
            self.offset = 0
            self.n_global = n_local
        self.n_local = n_local
        #: this rank's sample weights (device, (n_local,)) and a float64 host copy, or None
        self.weight = weight
        self._w_host = None if weight is None else np.asarray(
            net.backend.to_numpy(weight), dtype=np.float64)
        self._w_total = float(n_local if weight is None else self._w_host.sum())
        if weight is not None and shard:
            total = np.array([self._w_total])
            comm.allreduce(total, "the Allreduce of the weight sums")
            self._w_total = float(total[0])
            if not self._w_total > 0:
                raise ValueError("sample_weight: every weight of every rank's part is 0; at "
                                 "least one sample needs a positive weight")
            if not np.isfinite(self._w_total):
                raise ValueError(f"sample_weight: the ranks' weights sum to {self._w_total} "
                                 "in float64; scale them down")
        self._fraction: float | None = None   # the current batch's weight share (weights)
        self._batch_rows = 0                  # the current global batch's size
        self._slice: tuple[int, int] | None = None  # its rows' positions here (no shard)
        self._positions: Any = None           # their positions (shard), a device int64 view
        self._masks: list[tuple[Any, Any] | None] = []
        self._nccl: Any = None
        self._nccl_dtype: Any = None
        self._bn_sums: dict[int, Any] = {}    # per width n: batch normalization's (2, n) sums

    @property
    def weight_total(self) -> float:
        """Σ w over the global data set (N without weights): the epoch loss's denominator."""
        return float(self.n_global) if self._w_host is None else self._w_total

    # ------------------------------------------------------------------ start of a fit

    def agree_seed(self, seed: int | None) -> int | None:
        """Rank 0's seed, or (None) a seed drawn on rank 0: the same on every rank."""
        if seed is None and self.rank == 0:
            seed = secrets.randbits(63)
        return self.comm.bcast_object(seed, "the broadcast of the seed")

    def agree_stop(self, stop: bool) -> bool:
        """Whether any rank stops after this epoch (a callback of its own asked to): one
        Allreduce of one value per epoch, so that every rank stops at the same epoch."""
        if self.size == 1:
            return stop
        flag = np.array([1.0 if stop else 0.0])
        self.comm.allreduce(flag, "the Allreduce of the stop decision")
        return bool(flag[0] > 0)

    def broadcast_state(self, optimizer: "Optimizer") -> None:
        """Rank 0's parameters, buffers (batch normalization's running averages), optimizer
        buffers and step count on every rank."""
        net, be = self.net, self.net.backend
        arrays = (list(net.parameters()) + list(net.buffers())
                  + [s for st in optimizer.state for s in st])
        for a in arrays:
            host = np.array(be.to_numpy(a))
            self.comm.bcast(host, "the broadcast of the initial parameters")
            be.copy(be.asarray(host), a)
        t = np.array([optimizer.t], dtype=np.int64)
        self.comm.bcast(t, "the broadcast of the optimizer's step count")
        optimizer.t = int(t[0])

    def prepare(self, batch_size: int) -> None:
        """Allocate what the steps need (once per fit): the gradient buffer and its device
        communicator, and one global-batch-sized mask buffer per dropout layer."""
        net, be = self.net, self.net.backend
        flat = net.flat_gradient()
        self._masks = [None if not rate else
                       (be.empty((batch_size, n), net.dtype), be.empty((batch_size, n), net.dtype))
                       for n, rate in zip(net.layer_sizes[1:-1], net.dropout)]
        self._bn_sums = {n: be.empty((2, n), net.dtype)
                         for n, f in zip(net.layer_sizes[1:-1], net.batch_norm) if f}
        if be.name == "cupy" and self.size > 1 and self._nccl is None:
            self._nccl, self._nccl_dtype = _nccl_communicator(self.comm, be, flat.dtype)

    def close(self) -> None:
        """Release the NCCL communicator (at the end of the fit, on every rank)."""
        if self._nccl is not None:
            nccl, self._nccl = self._nccl, None
            nccl.destroy()

    # ------------------------------------------------------------------ the step's hooks

    def row_fraction(self, rows: int) -> float:
        """b / B: the factor a rank's output delta (the kernel's 1/b) is scaled by, so that its
        gradient is the sum over its b rows divided by the global batch's B rows. With sample
        weights, its rows' share of the global batch's weight sum, Σ_local w / Σ_batch w (the
        kernel's output delta has w_i / Σ_local w), 0 when the batch's weights are all 0."""
        if self._fraction is not None:
            return self._fraction
        return rows / self._batch_rows

    def allreduce(self, buf: Any, what: str = "an Allreduce") -> None:
        """``buf ← Σ_ranks buf`` in place, for a contiguous array on the network's device
        (NCCL on the device for cupy; MPI on host memory otherwise)."""
        be = self.net.backend
        if self._nccl is not None:
            from cupy.cuda import nccl
            with be._device:                 # the stream the step's kernels run on
                stream = be.xp.cuda.get_current_stream()
                self._nccl.allReduce(buf.data.ptr, buf.data.ptr, buf.size,
                                     _NCCL_TYPES[np.dtype(buf.dtype).name](nccl), nccl.NCCL_SUM,
                                     stream.ptr)
            return
        if self.size > 1:
            self.comm.allreduce(buf, what)

    def allreduce_gradients(self) -> None:
        """Sum the gradient buffer over the ranks: one Allreduce per step."""
        self.allreduce(self.net.flat_gradient(), "the gradient Allreduce")

    def batch_norm_forward(self, Z: Any, gamma: Any, beta: Any, running_mean: Any,
                           running_var: Any, train: bool, momentum: float, eps: float,
                           activation: Any, Zhat: Any, mean: Any, inv_std: Any, A: Any) -> None:
        """The backend's ``batch_norm_forward`` (training mode) with the statistics of the
        global batch of B rows, this rank's rows of it in Z: ``mean = Σ_ranks Σ_rows Z / B``,
        then ``var = Σ_ranks Σ_rows (Z - mean)² / B`` (two passes, as one process; two
        Allreduces of n values), the running averages moved with the unbiased factor
        B / (B - 1)."""
        be, rows = self.net.backend, self._batch_rows
        be.batch_norm_sums(Z, None, mean)
        self.allreduce(mean, "the Allreduce of batch normalization's sums")
        be.scale(mean, 1.0 / rows)
        be.batch_norm_sums(Z, mean, inv_std)
        self.allreduce(inv_std, "the Allreduce of batch normalization's squares")
        be.batch_norm_finish(mean, inv_std, rows, running_mean, running_var, momentum, eps,
                             inv_std)
        be.batch_norm_apply(Z, mean, inv_std, gamma, beta, activation, Zhat, A)

    def batch_norm_backward(self, G: Any, Zhat: Any, gamma: Any, inv_std: Any, dgamma: Any,
                            dbeta: Any, out: Any) -> None:
        """The backend's ``batch_norm_backward`` through the global batch's statistics:
        ``∂L/∂Z`` needs the global ``Σ G`` and ``Σ G ⊙ Ẑ``, summed (one Allreduce of 2n
        values) in a buffer of their own; ``dgamma``, ``dbeta`` (views into the gradient
        buffer) keep this rank's sums, which the gradient Allreduce adds up."""
        be = self.net.backend
        sums = self._bn_sums[G.shape[1]]
        be.batch_norm_backward_sums(G, Zhat, dgamma, dbeta)
        be.copy(dgamma, sums[0])
        be.copy(dbeta, sums[1])
        self.allreduce(sums, "the Allreduce of batch normalization's gradient sums")
        be.batch_norm_backward_apply(G, Zhat, gamma, inv_std, sums[0], sums[1],
                                     self._batch_rows, out)

    def _batch_norm_without_rows(self, ws: Any) -> None:
        """A step in which this rank has no row, with batch normalization: it adds zeros to
        every sum the others' forward and backward passes Allreduce, in their order, and
        moves its running averages as they do (``ws``: scratch for the statistics)."""
        net, be = self.net, self.net.backend
        from .network import BN_EPS, BN_MOMENTUM
        rows = self._batch_rows
        layers = [l for l, f in enumerate(net.batch_norm) if f]
        for l in layers:
            mean, inv_std = ws.mean[l], ws.inv_std[l]
            mean.fill(0)
            self.allreduce(mean, "the Allreduce of batch normalization's sums")
            be.scale(mean, 1.0 / rows)
            inv_std.fill(0)
            self.allreduce(inv_std, "the Allreduce of batch normalization's squares")
            be.batch_norm_finish(mean, inv_std, rows, net.running_mean[l], net.running_var[l],
                                 BN_MOMENTUM, BN_EPS, inv_std)
        for l in reversed(layers):
            sums = self._bn_sums[net.layer_sizes[l + 1]]
            sums.fill(0)
            self.allreduce(sums, "the Allreduce of batch normalization's gradient sums")

    def dropout(self, layer: int, A: Any, rate: float, mask: Any, out: Any) -> None:
        """Dropout with the masks one process would draw for the global batch: the whole
        batch's mask is drawn (same generator, same shape, so the same draws) and this rank's
        rows of it are used: ``mask = M[rows]``, ``out = A ⊙ mask``."""
        be = self.net.backend
        full, scratch = self._masks[layer]
        rows = self._batch_rows
        M, S = full[:rows], scratch[:rows]
        be.dropout(S, rate, M, S)
        if self._positions is None:
            lo, hi = self._slice
            be.copy(M[lo:hi], mask)
        else:
            be.take_rows(M, self._positions, mask)
        be.copy(A, out)
        be.multiply(out, mask)

    def _draw_masks(self) -> None:
        """A step in which this rank has no row: the global masks are still drawn, so that
        its generator stays where the others' are."""
        be = self.net.backend
        rows = self._batch_rows
        for layer, pair in enumerate(self._masks):
            if pair is not None:
                M, S = pair[0][:rows], pair[1][:rows]
                be.dropout(S, self.net.dropout[layer], M, S)

    # ------------------------------------------------------------------ the epoch

    def plan(self, order: np.ndarray | None, batch_size: int) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray | None]:
        """This rank's rows of every global batch of an epoch (host arrays): the local row
        indices in batch order, the count per batch, and (shard) their positions within their
        batch (without shard the positions are :func:`batch_slice`)."""
        order = (np.arange(self.n_global, dtype=np.int64) if order is None
                 else np.asarray(order, np.int64))
        n, B = len(order), batch_size
        starts = np.arange(0, n, B)
        if not self.shard:
            parts, counts = [], []
            for start in starts:
                lo, hi = batch_slice(min(B, n - start), self.size, self.rank)
                parts.append(order[start + lo:start + hi])
                counts.append(hi - lo)
            return np.concatenate(parts), np.array(counts, dtype=np.int64), None
        owned = (order >= self.offset) & (order < self.offset + self.n_local)
        where = np.flatnonzero(owned)
        counts = np.bincount(where // B, minlength=len(starts)).astype(np.int64)
        return order[where] - self.offset, counts, (where % B).astype(np.int64)

    def run_epoch(self, X: Any, Y: Any, order: np.ndarray | None, batch_size: int,
                  optimizer: "Optimizer", learning_rate: float, l1: float, l2: float,
                  clip_norm: float | None, between_steps: Callable[[], None] | None,
                  clip_value: float | None = None, rates: np.ndarray | None = None) -> float:
        """One epoch of global batches (see the module docstring); X, Y this rank's device
        arrays, ``order`` the permutation of the N global rows (None: stored order);
        ``rates`` each step's learning rate (a warm-up), else ``learning_rate``. Returns the
        global summed (weighted) per-sample loss."""
        net, be = self.net, self.net.backend
        n, B = self.n_global if order is None else len(order), batch_size
        local, counts, positions = self.plan(order, B)
        shares = self._weight_shares(order, B, local, counts)
        index = be.asarray(local)
        where = None if positions is None else be.asarray(positions)
        cap = int(counts.max(initial=0))
        full = net.workspace(max(cap, 1))
        full.total[0] = 0
        views: dict[int, Any] = {}
        done = 0
        for k, start in enumerate(range(0, n, B)):
            rows, b = min(B, n - start), int(counts[k])
            self._batch_rows = rows
            if positions is None:
                self._slice = batch_slice(rows, self.size, self.rank)
            else:
                self._positions = where[done:done + b]
            lr = learning_rate if rates is None else float(rates[k])
            if shares is not None:
                self._fraction = shares[k]
            if b:
                ws = views.get(b) or views.setdefault(b, full.rows(b))
                Xb, Yb, wb = ws.take(be, X, Y, self.weight, index, done, done + b)
                net.train_step(ws, Xb, Yb, optimizer, lr, l1, l2, clip_norm, clip_value, wb,
                               replica=self)
            else:
                self._draw_masks()
                self._batch_norm_without_rows(full)
                net.flat_gradient().fill(0)
                self.allreduce_gradients()
                net._apply_gradients(full, optimizer, lr, l1, l2, clip_norm, clip_value)
            done += b
            if between_steps is not None:
                between_steps()
        self._positions = None
        self._fraction = None
        return self.epoch_total(full.total)

    def _weight_shares(self, order: np.ndarray | None, B: int, local: np.ndarray,
                       counts: np.ndarray) -> np.ndarray | None:
        """Per global batch of the epoch, this rank's share Σ_local w / Σ_batch w of the
        batch's weight sum (0 where it is 0); None without weights. Without shard each rank
        holds every weight, so the batch sums are computed here; with shard they are the
        sum over ranks of the local sums, one Allreduce per epoch."""
        if self._w_host is None:
            return None
        bounds = np.concatenate([[0], np.cumsum(counts)])
        mine = np.array([self._w_host[local[a:z]].sum() for a, z in zip(bounds[:-1], bounds[1:])])
        if self.shard:
            batch = mine.copy()
            self.comm.allreduce(batch, "the Allreduce of the batches' weight sums")
        else:
            w = self._w_host if order is None else self._w_host[np.asarray(order, np.int64)]
            batch = np.array([w[s:s + B].sum() for s in range(0, len(w), B)])
        self.epoch_weight = float(batch.sum())   # the weight of the rows the epoch trains
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(batch > 0, mine / np.where(batch > 0, batch, 1.0), 0.0)

    def epoch_total(self, total: Any) -> float:
        """The sum over ranks of a device ``total`` (one float64), read once per epoch; on
        NCCL the device work queued before it is awaited against the deadline first."""
        be = self.net.backend
        if self._nccl is not None:
            with be._device:
                event = be.xp.cuda.Event()
                event.record()
            self.comm.poll(lambda: event.done, "the epoch's NCCL gradient Allreduces")
        value = np.array([float(be.to_numpy(total)[0])], dtype=np.float64)
        if self.size > 1:
            self.comm.allreduce(value, "the Allreduce of the epoch's loss")
        return float(value[0])


def _checksums(be: Any, A: Any) -> tuple[float, float]:
    """``(Σ a, Σ_i (i + 1) Σ_j a_ij)`` of a device array in float64: equal data sets give
    equal sums; the row-weighted one also tells the rows' order apart."""
    rows = A.reshape(A.shape[0], -1).sum(axis=1, dtype=np.float64)
    weights = be.asarray(np.arange(1, A.shape[0] + 1, dtype=np.float64))
    return float(rows.sum()), float((rows * weights).sum())


_NCCL_TYPES = {"float32": lambda nccl: nccl.NCCL_FLOAT32,
               "float64": lambda nccl: nccl.NCCL_FLOAT64}


def _nccl_communicator(comm: Communicator, be: Any, dtype: Any) -> tuple[Any, Any]:
    """A NCCL communicator over the ranks of ``comm`` on the backend's device: the unique id
    made on rank 0 and broadcast over MPI."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        raise ImportError("distributed=True on the cupy backend needs NCCL: CuPy's "
                          "cupy.cuda.nccl (pip install nvidia-nccl-cu12)") from None
    uid = nccl.get_unique_id() if comm.rank == 0 else None
    uid = comm.bcast_object(uid, "the broadcast of the NCCL unique id")
    with be._device:
        return nccl.NcclCommunicator(comm.size, uid, comm.rank), _NCCL_TYPES[np.dtype(dtype).name]
