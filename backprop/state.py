"""The training state: the one place for what save/load, checkpoints, pickling, the rollback
after divergence and resume carry, and for its file format.

A network's training state is

============ ===================================================================================
architecture layer sizes, activations (name, α), loss, dtype, dropout rates, batch
             normalization and residual flags per hidden layer
parameters   W_l (n_l, n_{l-1}) and b_l (n_l,), l = 1..L; γ_l, β_l (n_l,) of each
             batch-normalized hidden layer
buffers      the running mean and running variance (n_l,) of each batch-normalized layer
optimizer    ``net.optimizer_``: name, hyperparameters, step count t, and its buffers per
             parameter (momentum's v, RMSProp's s, Adam's m and v)
generators   the shuffle generator of the last ``fit`` and the dropout generator of the backend
training     ``net.history_``: epochs done (the position of the learning-rate schedule), the
             metrics of every epoch, and how the fit ended (stopped early, diverged)
metadata     ``net.metadata`` (optional): what maps the user's data to the network and back,
             ``{"feature_names": [n_0 names], "target": name, "classes": [n_L labels]}``
             (each key optional; see :func:`check_metadata`)
============ ===================================================================================

The file (format ``backprop.training_state``, version 2) is a zip archive as ``numpy.savez``
writes it, uncompressed: a UTF-8 JSON ``header.json`` (everything but the arrays) and one
``.npy`` member per array, never pickled: ``W1, b1, ..., WL, bL``, then ``gamma<l>, beta<l>``
and the buffers ``running_mean<l>, running_var<l>`` of each batch-normalized hidden layer l,
and the optimizer's buffers ``optimizer.<buffer>.<W1|b1|...|gamma<l>|beta<l>>`` in the
network's dtype, and ``history.<key>`` (float64, one value per epoch). Version 1 (before batch
normalization and residual connections: no such flags in the architecture) is still read, as a
network without either. :func:`write` replaces the target atomically; :func:`check` (run by
:func:`read` and by unpickling) validates the whole state before anything is built and refuses
a bad one with a ValueError that names the problem.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import activations as _activations
from . import losses as _losses
from . import optimizers as _optimizers

if TYPE_CHECKING:
    from .network import Network

FORMAT = "backprop.training_state"
VERSION = 2
#: versions this module reads (1: no batch_norm/residual in the architecture)
READABLE = (1, 2)
HEADER = "header.json"

#: the states of the random generators a file may hold: field -> exclusive upper bound
GENERATORS: dict[str, dict[str, int]] = {
    "PCG64": {"state": 2 ** 128, "inc": 2 ** 128, "has_uint32": 2, "uinteger": 2 ** 32},
    "backprop.cuda.counter": {"key": 2 ** 64, "draws": 2 ** 64},
}
#: optimizer buffers that hold squares (must be >= 0)
SQUARES = {("rmsprop", "s"), ("adam", "v"), ("adamw", "v")}
_INT_LIMIT = 2 ** 63


@dataclass
class TrainingState:
    """A network's training state on the host: the JSON ``header`` and the named ``arrays``."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]


# ---------------------------------------------------------------------- network <-> state

def architecture(net: "Network") -> dict[str, Any]:
    """What defines the network's shape and function, as JSON values."""
    return {"layer_sizes": list(net.layer_sizes),
            "activations": [[a.name, a.alpha] for a in net.activations],
            "loss": net.loss_function.name, "dtype": net.dtype.name,
            "dropout": list(net.dropout), "batch_norm": list(net.batch_norm),
            "residual": list(net.residual)}


def parameter_names(n_layers: int, batch_norm: Any = ()) -> list[str]:
    """``W1, b1, W2, b2, ..., WL, bL``, then ``gamma<l>, beta<l>`` for each hidden layer l
    (1-based) with ``batch_norm[l - 1]``: the order of :meth:`Network.parameters`."""
    return ([f"{p}{l}" for l in range(1, n_layers + 1) for p in "Wb"]
            + [f"{p}{l}" for l, on in enumerate(batch_norm, start=1) if on
               for p in ("gamma", "beta")])


def buffer_names(batch_norm: Any) -> list[str]:
    """``running_mean<l>, running_var<l>`` per batch-normalized hidden layer: the order of
    :meth:`Network.buffers`."""
    return [f"{p}{l}" for l, on in enumerate(batch_norm, start=1) if on
            for p in ("running_mean", "running_var")]


def capture(net: "Network") -> TrainingState:
    """The network's training state, copied to the host.

    ValueError when a parameter or optimizer buffer holds NaN or Inf (such a state could not
    be loaded), or when ``net.optimizer_`` is not one of the built-in optimizers.
    """
    be = net.backend
    names = parameter_names(net.n_layers, net.batch_norm)
    params = net.parameters()
    arrays = {name: np.array(be.to_numpy(p)) for name, p in zip(names, params)}
    arrays.update({name: np.array(be.to_numpy(b))
                   for name, b in zip(buffer_names(net.batch_norm), net.buffers())})
    optimizer = None
    opt = net.optimizer_
    if opt is not None and opt.state and opt.matches(params):
        if _optimizers.OPTIMIZERS.get(opt.name) is not type(opt):
            raise ValueError(f"optimizer_: {type(opt).__name__} is not a built-in optimizer "
                             f"({sorted(_optimizers.OPTIMIZERS)}), the only ones a state holds")
        optimizer = {"name": opt.name, "hyperparameters": opt.hyperparameters(), "t": opt.t}
        for name, buffers in zip(names, opt.state):
            for buffer, array in zip(opt.state_names, buffers):
                arrays[f"optimizer.{buffer}.{name}"] = np.array(be.to_numpy(array))
    for name, array in arrays.items():
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or Inf (the network diverged); a "
                             "non-finite network cannot be saved: fit rolls back to the last "
                             "finite epoch, or set finite parameters with set_parameters")
    shuffle = getattr(net, "_shuffle_rng", None)
    generators = {"shuffle": None if shuffle is None else shuffle.bit_generator.state,
                  "dropout": be.rng_state()}
    training = None
    history = getattr(net, "history_", None)
    if history is not None:
        keys = history.keys()
        training = {"epochs": history.epochs, "keys": keys,
                    "stopped_early": history.stopped_early,
                    "diverged_epoch": history.diverged_epoch}
        for key in keys:
            arrays[f"history.{key}"] = np.array(history[key], dtype=np.float64)
    header = {"format": FORMAT, "version": VERSION, "architecture": architecture(net),
              "optimizer": optimizer, "generators": generators, "training": training}
    if getattr(net, "metadata", None) is not None:
        header["metadata"] = net.metadata
    return check(TrainingState(header, arrays), "state")


def build(state: TrainingState, device: str = "cpu", backend: str | None = None,
          net: "Network | None" = None) -> "Network":
    """A network with a checked ``state`` on ``device`` (into ``net``, uninitialised, when
    given: unpickling)."""
    from .network import Network
    arch = state.header["architecture"]
    if net is None:
        net = Network.__new__(Network)
    Network.__init__(net, arch["layer_sizes"], _activation_objects(arch["activations"]),
                     arch["loss"], device=device, backend=backend, dtype=arch["dtype"],
                     dropout=arch["dropout"], init=_zeros, batch_norm=arch["batch_norm"],
                     residual=arch["residual"])
    restore(net, state)
    return net


def restore(net: "Network", state: TrainingState,
            optimizer: _optimizers.Optimizer | None = None) -> None:
    """Put a checked ``state`` of the same architecture into ``net``: parameters, optimizer
    (into ``optimizer`` when given, whose name and hyperparameters the caller has matched),
    generators and history. The dropout generator is restored when the backend's is of the
    same kind (not across CPU and CUDA)."""
    from .training import History
    be = net.backend
    arrays = state.arrays
    names = parameter_names(net.n_layers, net.batch_norm)
    params = net.parameters()
    for name, p in zip(names, params):
        be.copy(be.asarray(arrays[name]), p)
    for name, b in zip(buffer_names(net.batch_norm), net.buffers()):
        be.copy(be.asarray(arrays[name]), b)
    spec = state.header["optimizer"]
    if spec is None:
        net.optimizer_ = optimizer
    else:
        opt = optimizer or _optimizers.OPTIMIZERS[spec["name"]](**spec["hyperparameters"])
        opt.reset(be, params)
        for name, buffers in zip(names, opt.state):
            for buffer, array in zip(opt.state_names, buffers):
                be.copy(be.asarray(arrays[f"optimizer.{buffer}.{name}"]), array)
        opt.t = spec["t"]
        net.optimizer_ = opt
    generators = state.header["generators"]
    shuffle = generators["shuffle"]
    net._shuffle_rng = None
    if shuffle is not None:
        net._shuffle_rng = np.random.Generator(np.random.PCG64())
        net._shuffle_rng.bit_generator.state = shuffle
    dropout = generators["dropout"]
    if dropout is not None and dropout["bit_generator"] == be.rng_state()["bit_generator"]:
        be.set_rng_state(dropout)
    training = state.header["training"]
    net.history_ = None
    if training is not None:
        history = History()
        history.history = {k: arrays[f"history.{k}"].tolist() for k in training["keys"]}
        history.epochs = training["epochs"]
        history.stopped_early = training["stopped_early"]
        history.diverged_epoch = training["diverged_epoch"]
        net.history_ = history
    if "metadata" in state.header:
        net.metadata = state.header["metadata"]


def _zeros(rng: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    return np.zeros((n_out, n_in))


def _activation_objects(specs: list[list[Any]]) -> list[_activations.Activation]:
    cls = _activations.ACTIVATIONS
    return [cls[name](alpha) if alpha else cls[name]() for name, alpha in specs]


# ---------------------------------------------------------------------- rollback in memory

class Snapshot:
    """Device copies of what a training step changes: the parameters, batch normalization's
    running statistics, the optimizer's buffers and its step count. :meth:`take` records them,
    :meth:`restore` puts them back (the rollback after divergence, EarlyStopping's best
    epoch). Buffers are allocated once."""

    def __init__(self, net: "Network") -> None:
        be = net.backend
        self.optimizer = net.optimizer_
        self.params = [be.empty(p.shape, p.dtype) for p in _changing(net)]
        self.buffers = [be.empty(s.shape, s.dtype) for s in self._live_buffers()]
        self.t = 0
        self.take(net)

    def _live_buffers(self) -> list[Any]:
        return [] if self.optimizer is None else [s for st in self.optimizer.state for s in st]

    def take(self, net: "Network") -> None:
        be = net.backend
        for p, copy in zip(_changing(net), self.params):
            be.copy(p, copy)
        for s, copy in zip(self._live_buffers(), self.buffers):
            be.copy(s, copy)
        self.t = 0 if self.optimizer is None else self.optimizer.t

    def restore(self, net: "Network") -> None:
        be = net.backend
        for p, copy in zip(_changing(net), self.params):
            be.copy(copy, p)
        for s, copy in zip(self._live_buffers(), self.buffers):
            be.copy(copy, s)
        if self.optimizer is not None:
            self.optimizer.t = self.t


def _changing(net: "Network") -> list[Any]:
    """The network's arrays a training step changes: parameters, then buffers."""
    return net.parameters() + net.buffers()


# ---------------------------------------------------------------------- the file

def write(path: str | os.PathLike[str], state: TrainingState) -> None:
    """Write ``state`` to exactly ``path``, atomically (:func:`atomic_write`)."""

    def fill(f: Any) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(HEADER, json.dumps(state.header, allow_nan=False, indent=1))
            for name, array in state.arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=array.nbytes > 2 ** 30) as m:
                    np.lib.format.write_array(m, np.ascontiguousarray(array),
                                              allow_pickle=False)

    atomic_write(path, fill)


def target(path: str | os.PathLike[str], what: str = "path") -> str:
    """The file :func:`atomic_write` would replace for ``path``: symbolic links resolved (the
    link keeps pointing at the new file), checked to be a regular file or absent.

    Raises ``ValueError`` naming ``what`` and the path when it is an existing directory,
    device, FIFO or socket: renaming a new file over those would replace them (``/dev/null``
    would become a regular file), so they are refused before any work."""
    name = os.fspath(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    real = os.path.realpath(name)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as e:
        raise ValueError(f"{what} {name!r} cannot be written: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        shown = name if real == os.path.abspath(name) else f"{name} (-> {real})"
        raise ValueError(f"{what} {shown!r} is {file_kind(mode)}; expected a regular file "
                         "(or a new file's name)")
    return real


def file_kind(mode: int) -> str:
    """What an ``os.stat`` mode is, in words: "a regular file", "a directory", "a FIFO",
    "a socket", "a device" or "not a regular file"."""
    return ("a regular file" if stat.S_ISREG(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file")


def readable(path: str, noun: str = "file") -> None:
    """ValueError unless ``path`` names an existing regular file (symbolic links followed):
    "PATH: no such NOUN" when nothing is there, else what is there ("PATH: is a directory,
    not a NOUN"; a device, a FIFO, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{path}: no such {noun}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path}: is {file_kind(mode)}, not a {noun}")


def atomic_write(path: str | os.PathLike[str], fill: Any) -> None:
    """Write a file to exactly ``path``, atomically: ``fill(f)`` writes into a new binary file
    in the same folder, which is flushed to disk (fsync), then renamed over ``path`` (and the
    folder synced), so a failure at any point leaves the previous file intact.

    A symbolic link is followed: the new file replaces the link's target, in the target's
    folder, and the link is kept. ``path`` must be a regular file or not exist: an existing
    directory, device, FIFO or socket raises ``ValueError`` (:func:`target`) before ``fill``
    runs."""
    path = target(path)
    folder = os.path.dirname(os.path.abspath(path))
    # a short name of its own (a target name near the 255-byte limit still works); the mode of
    # the file it replaces (a private model stays private), else the umask's default
    tmp = os.path.join(folder, f".bp-{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if os.name == "posix":          # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read(path: str | os.PathLike[str]) -> TrainingState:
    """The checked state in the file at ``path`` (written by :func:`write`).

    ValueError naming the problem for anything else: not a zip archive, no or bad header,
    unknown format or version, missing or unknown keys or arrays, wrong dtypes or shapes,
    non-finite values, values out of range. Array shapes and dtypes are checked from the
    ``.npy`` headers before any array is read. FileNotFoundError when there is no file.
    """
    where = os.fspath(path)
    try:
        zf = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as e:
        raise ValueError(f"{where}: not a backprop state file (not a zip/npz archive: {e})") from None
    with zf:
        try:
            names = zf.namelist()
            if len(set(names)) != len(names):
                raise ValueError(f"{where}: the archive has duplicate members")
            if HEADER not in names:
                raise ValueError(f"{where}: no {HEADER}: not a backprop state file (files "
                                 "written before format version 1 hold no header)")
            header = _parse_header(zf.read(HEADER), where)
            expected = _check_header(header, where)
            members = {n[:-4]: n for n in names if n.endswith(".npy")}
            others = [n for n in names if n != HEADER and not n.endswith(".npy")]
            _check_names(expected, list(members) + others, where)
            for name, (shape, dtype) in expected.items():
                stored_shape, stored_dtype = _npy_layout(zf, members[name], where)
                _check_layout(name, stored_shape, stored_dtype, shape, dtype, where)
            arrays = {}
            for name in expected:
                with zf.open(members[name]) as f:
                    try:
                        arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
                    except ValueError as e:
                        raise ValueError(f"{where}: {members[name]} is damaged: {e}") from None
        except (zipfile.BadZipFile, EOFError, OSError, KeyError, NotImplementedError,
                RuntimeError, UnicodeDecodeError) as e:   # unsupported zip features, bad bytes
            raise ValueError(f"{where}: a damaged archive ({type(e).__name__}: {e})") from None
    return check(TrainingState(header, arrays), where)


def check(state: TrainingState, where: str) -> TrainingState:
    """``state`` itself when it is whole and consistent; else ValueError naming the problem
    (prefixed with ``where``, the file or "pickle")."""
    if not isinstance(state.header, dict) or not isinstance(state.arrays, dict):
        raise ValueError(f"{where}: expected a header dict and a dict of arrays")
    expected = _check_header(state.header, where)
    _check_names(expected, list(state.arrays), where)
    spec = state.header["optimizer"]
    for name, (shape, dtype) in expected.items():
        array = state.arrays[name]
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{where}: {name} is a {type(array).__name__}, not an array")
        _check_layout(name, array.shape, array.dtype, shape, dtype, where)
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: {name} contains NaN or Inf")
        parts = name.split(".")
        if parts[0] == "optimizer" and (spec["name"], parts[1]) in SQUARES and (array < 0).any():
            raise ValueError(f"{where}: {name} holds squares and must be >= 0")
        if name.startswith("running_var") and (array < 0).any():
            raise ValueError(f"{where}: {name} is a variance and must be >= 0")
    return state


# ---------------------------------------------------------------------- checks

def _parse_header(raw: bytes, where: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{where}: {HEADER} holds the non-finite value {constant}")

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{where}: {HEADER} holds {text}, which overflows float64")
        return value

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=refuse, parse_float=finite_float)
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: {HEADER} is not UTF-8: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: {HEADER} is not valid JSON: {e}") from None


def _keys(d: Any, required: set[str], what: str, where: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: {what} must be a JSON object, got {d!r}")
    missing, unknown = sorted(required - set(d)), sorted(set(d) - required)
    if missing or unknown:
        raise ValueError(f"{where}: {what} has missing keys {missing} and unknown keys {unknown}")


def _int(value: Any, what: str, where: str, low: int = 0, high: int = _INT_LIMIT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise ValueError(f"{where}: {what} must be an integer in [{low}, {high}), got {value!r}")
    return value


def _check_header(header: Any, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Check the header whole; the arrays it calls for: name -> (shape, dtype)."""
    if isinstance(header, dict) and header.get("format") != FORMAT:
        raise ValueError(f"{where}: unknown format {header.get('format')!r}; expected {FORMAT!r}")
    if isinstance(header, dict) and (type(header.get("version")) is not int
                                     or header.get("version") not in READABLE):  # not true, 1.0
        raise ValueError(f"{where}: unknown version {header.get('version')!r} of {FORMAT}; "
                         f"this backprop reads versions {list(READABLE)}")
    _keys(header, {"format", "version", "architecture", "optimizer", "generators", "training",
                   *(("metadata",) if isinstance(header, dict) and "metadata" in header else ())},
          "the header", where)
    _upgrade(header, where)
    sizes, dtype, bn = _check_architecture(header["architecture"], where)
    if "metadata" in header:
        try:
            check_metadata(header["metadata"], sizes, header["architecture"]["loss"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    shapes = {}
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[f"W{l}"], shapes[f"b{l}"] = (n_out, n_in), (n_out,)
    for l, (n, on) in enumerate(zip(sizes[1:-1], bn), start=1):
        if on:
            shapes[f"gamma{l}"] = shapes[f"beta{l}"] = (n,)
    expected = {name: (shape, dtype) for name, shape in shapes.items()}
    for l, (n, on) in enumerate(zip(sizes[1:-1], bn), start=1):
        if on:
            expected[f"running_mean{l}"] = expected[f"running_var{l}"] = ((n,), dtype)
    spec = header["optimizer"]
    if spec is not None:
        _keys(spec, {"name", "hyperparameters", "t"}, "optimizer", where)
        cls = _optimizers.OPTIMIZERS.get(spec["name"]) if isinstance(spec["name"], str) else None
        if cls is None:
            raise ValueError(f"{where}: unknown optimizer {spec['name']!r}; expected one of "
                             f"{sorted(_optimizers.OPTIMIZERS)}")
        _keys(spec["hyperparameters"], set(cls().hyperparameters()),
              f"optimizer {spec['name']!r} hyperparameters", where)
        try:
            cls(**spec["hyperparameters"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: optimizer hyperparameters: {e}") from None
        _int(spec["t"], "optimizer t", where)
        for buffer in cls.state_names:
            expected.update({f"optimizer.{buffer}.{name}": (shape, dtype)
                             for name, shape in shapes.items()})
    generators = header["generators"]
    _keys(generators, {"shuffle", "dropout"}, "generators", where)
    for use, state in generators.items():
        if state is not None:
            _check_generator(state, f"the {use} generator", where)
    if generators["shuffle"] is not None and generators["shuffle"]["bit_generator"] != "PCG64":
        raise ValueError(f"{where}: the shuffle generator must be PCG64")
    training = header["training"]
    if training is not None:
        _keys(training, {"epochs", "keys", "stopped_early", "diverged_epoch"}, "training", where)
        epochs = _int(training["epochs"], "training epochs", where)
        keys = training["keys"]
        if (not isinstance(keys, list) or len(set(map(str, keys))) != len(keys)
                or not all(isinstance(k, str) and k and "/" not in k for k in keys)):
            raise ValueError(f"{where}: training keys must be distinct names, got {keys!r}")
        if not isinstance(training["stopped_early"], bool):
            raise ValueError(f"{where}: training stopped_early must be true or false")
        if training["diverged_epoch"] is not None:
            _int(training["diverged_epoch"], "training diverged_epoch", where, high=epochs + 1)
        expected.update({f"history.{k}": ((epochs,), np.dtype(np.float64)) for k in keys})
    return expected


def _upgrade(header: dict[str, Any], where: str) -> None:
    """A version 1 header as version 2, in place: no batch normalization, no residual
    connections (what every network of version 1 was)."""
    arch = header["architecture"]
    if header["version"] == 1 and isinstance(arch, dict):
        late = sorted({"batch_norm", "residual"} & set(arch))
        if late:
            raise ValueError(f"{where}: a version 1 architecture has the keys {late}, which "
                             "came with version 2")
        if not isinstance(arch.get("layer_sizes"), list):
            return                                  # refused by _check_architecture
        n_hidden = max(len(arch["layer_sizes"]) - 2, 0)
        arch["batch_norm"] = [False] * n_hidden
        arch["residual"] = [False] * n_hidden
        header["version"] = VERSION


def check_metadata(metadata: Any, layer_sizes: list[int], loss: str) -> None:
    """Refuse metadata that does not fit the network (ValueError naming the key).

    ``metadata`` is a dict with the optional keys ``feature_names`` (n_0 distinct non-empty
    strings: the input columns, in order), ``target`` (the target column: a string, an
    integer index or null) and ``classes`` (for the classification losses: distinct labels,
    strings, integers, finite numbers or booleans, one per output unit, or two for a single
    sigmoid unit: the label of output k is ``classes[k]``).
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata: expected a JSON object, got {metadata!r}")
    unknown = sorted(set(metadata) - {"feature_names", "target", "classes"})
    if unknown:
        raise ValueError(f"metadata: unknown keys {unknown}; expected feature_names, target, "
                         "classes")
    names = metadata.get("feature_names")
    if names is not None and (not isinstance(names, list) or len(names) != layer_sizes[0]
                              or not all(isinstance(n, str) and n for n in names)
                              or len(set(names)) != len(names)):
        raise ValueError(f"metadata: feature_names must be {layer_sizes[0]} distinct non-empty "
                         f"strings (the network's inputs), got {names!r}")
    target = metadata.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        raise ValueError(f"metadata: target must be a column name or index, got {target!r}")
    classes = metadata.get("classes")
    if classes is None:
        return
    n_out = layer_sizes[-1]
    expected = 2 if n_out == 1 and loss == "binary_cross_entropy" else n_out
    if loss not in ("cross_entropy", "binary_cross_entropy"):
        raise ValueError(f"metadata: classes are only for the classification losses, not {loss!r}")
    scalar = (str, int, float, bool)
    if (not isinstance(classes, list) or len(classes) != expected
            or not all(isinstance(c, scalar) and not (isinstance(c, float) and not math.isfinite(c))
                       for c in classes)
            or len({(type(c), c) for c in classes}) != len(classes)):
        raise ValueError(f"metadata: classes must be {expected} distinct labels (strings, "
                         f"numbers or booleans), one per output, got {classes!r}")


def _check_architecture(arch: Any, where: str) -> tuple[list[int], np.dtype, list[bool]]:
    from .network import _check_dropout, _check_flags, _check_layer_sizes, _check_residual
    from .validation import check_architecture, check_dtype
    _keys(arch, {"layer_sizes", "activations", "loss", "dtype", "dropout", "batch_norm",
                 "residual"}, "architecture", where)
    try:
        sizes = _check_layer_sizes(arch["layer_sizes"])
        if max(sizes) >= 2 ** 31:
            raise ValueError(f"layer_sizes: sizes must be below 2**31, got {sizes}")
        specs = arch["activations"]
        if not isinstance(specs, list) or len(specs) != len(sizes) - 1:
            raise ValueError(f"activations: expected {len(sizes) - 1} [name, alpha] pairs, "
                             f"got {specs!r}")
        for spec in specs:
            if (not isinstance(spec, list) or len(spec) != 2
                    or spec[0] not in _activations.ACTIVATIONS
                    or isinstance(spec[1], bool) or not isinstance(spec[1], (int, float))):
                raise ValueError(f"activations: expected [name, alpha] with a name from "
                                 f"{sorted(_activations.ACTIVATIONS)}, got {spec!r}")
        acts = _activation_objects(specs)
        if any(a.alpha != spec[1] or spec[1] and type(a).__init__ is _activations.Activation.__init__
               for a, spec in zip(acts, specs)):
            raise ValueError(f"activations: alpha is only a parameter of leaky_relu and elu, "
                             f"got {specs!r}")
        if not isinstance(arch["loss"], str):
            raise ValueError(f"loss: expected a name, got {arch['loss']!r}")
        if not isinstance(arch["dtype"], str):
            raise ValueError(f"dtype: expected a name, got {arch['dtype']!r}")
        dtype = check_dtype(arch["dtype"])
        check_architecture(sizes, acts, _losses.get(arch["loss"]), dtype)
        if not isinstance(arch["dropout"], list):
            raise ValueError(f"dropout: expected a list of rates, got {arch['dropout']!r}")
        _check_dropout(arch["dropout"], len(sizes) - 2)
        for name in ("batch_norm", "residual"):
            if not isinstance(arch[name], list):
                raise ValueError(f"{name}: expected a list of flags, got {arch[name]!r}")
        bn = _check_flags("batch_norm", arch["batch_norm"], len(sizes) - 2)
        _check_residual(arch["residual"], sizes)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: architecture {e}") from None
    return sizes, dtype, bn


def _check_generator(state: Any, what: str, where: str) -> None:
    kind = state.get("bit_generator") if isinstance(state, dict) else None
    if kind not in GENERATORS:
        raise ValueError(f"{where}: {what} is of unknown kind {kind!r}; expected one of "
                         f"{sorted(GENERATORS)}")
    fields = GENERATORS[kind]
    if kind == "PCG64":             # NumPy's layout: {"state": {"state", "inc"}, ...}
        _keys(state, {"bit_generator", "state", "has_uint32", "uinteger"}, what, where)
        _keys(state["state"], {"state", "inc"}, f"{what} state", where)
        values = {**state["state"], "has_uint32": state["has_uint32"],
                  "uinteger": state["uinteger"]}
    else:
        _keys(state, {"bit_generator", *fields}, what, where)
        values = {f: state[f] for f in fields}
    for field, high in fields.items():
        _int(values[field], f"{what} {field}", where, high=high)


def _npy_layout(zf: zipfile.ZipFile, member: str, where: str) -> tuple[Any, np.dtype]:
    """(shape, dtype) from the header of a ``.npy`` member, reading none of its data."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    with zf.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in readers:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = readers[version](f)
        except ValueError as e:
            raise ValueError(f"{where}: {member} is not a .npy array: {e}") from None
    return shape, dtype


def _check_names(expected: dict[str, Any], present: list[str], where: str) -> None:
    missing = sorted(set(expected) - set(present))
    unknown = sorted(set(present) - set(expected))
    if missing or unknown:
        raise ValueError(f"{where}: missing arrays {missing} and unknown arrays {unknown}")


def _check_layout(name: str, shape: tuple[int, ...], dtype: np.dtype,
                  expected_shape: tuple[int, ...], expected_dtype: np.dtype, where: str) -> None:
    if np.dtype(dtype) != expected_dtype:
        raise ValueError(f"{where}: {name} has dtype {np.dtype(dtype).str}, expected "
                         f"{expected_dtype.name}")
    if tuple(shape) != tuple(expected_shape):
        raise ValueError(f"{where}: {name} has shape {tuple(shape)}, expected "
                         f"{tuple(expected_shape)}")

