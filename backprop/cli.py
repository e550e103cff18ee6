"""The command line: ``python -m backprop`` or ``backprop``.

=========== =========================================================================
command     what it does
=========== =========================================================================
train       fit a network to a CSV, Parquet, .npy or .npz file and save it
predict     the labels (or probabilities, ``--proba``) a saved network gives a file
evaluate    a saved network's loss and accuracy (or R²) on a file with targets
info        version, backends, devices, NumPy/BLAS/threads, CuPy/CUDA
demo        train on scikit-learn's handwritten digits
bench       measure speed, the complexity table and memory; write a report
=========== =========================================================================

The loss follows the target when ``--loss`` is not given: a column of text, booleans or
integers holds class labels (softmax output, cross_entropy); a column of floats holds numbers
(identity output, mse). The model file is the library's own format (:mod:`backprop.state`, no
pickle) with the feature column names, the target's name and the class labels as metadata, so
``predict`` takes the columns it was trained on by name and answers in the user's own labels.
Files are described in :mod:`backprop.datafile`. A bad file or argument ends the command with
one line on stderr (``backprop: error: ...``) and exit status 2 (arguments) or 1 (anything
else); set ``BACKPROP_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
import warnings
from typing import Any, Sequence

import numpy as np

#: the output layer and loss for each task
TASKS = {"cross_entropy": ("softmax", "classification"),
         "binary_cross_entropy": ("sigmoid", "classification"),
         "mse": ("identity", "regression")}


class CommandError(Exception):
    """A problem to report in one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``backprop: error: ...`` and exit status 2."""

    def error(self, message: str) -> None:         # type: ignore[override]
        sys.stderr.write(f"backprop: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


# ---------------------------------------------------------------------- demo, bench

def load_digits_split(seed: int = 0):
    """scikit-learn's 8x8 handwritten digits (1,797 images), scaled to [0, 1], 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise CommandError("the demo needs scikit-learn's digits: pip install 'backprop[examples]'")
    digits = load_digits()
    X = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    cut = int(0.8 * len(X))
    return X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]]


def demo(args: argparse.Namespace) -> None:
    from . import Network, available_backends
    X_train, y_train, X_test, y_test = load_digits_split()
    device = args.device or ("cuda" if "cupy" in available_backends() else "cpu")
    net = Network([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy",
                  device=device, backend=args.backend, seed=0)
    print(f"{net}\ntraining on {len(X_train)} digits, testing on {len(X_test)}")
    start = time.perf_counter()
    history = net.fit(X_train, y_train, epochs=args.epochs, batch_size=32, learning_rate=0.05,
                      optimizer="momentum", seed=0, validation_data=(X_test, y_test),
                      verbose=True)
    seconds = time.perf_counter() - start
    result = net.evaluate(X_test, y_test)
    print(f"test accuracy {result['accuracy']:.2%}, test loss {result['loss']:.4f}")
    print(f"{history.epochs * len(X_train) / seconds:,.0f} samples/s over the whole fit "
          f"(validation included), best epoch "
          f"{max(history['samples_per_second']):,.0f} samples/s")


def doctor(args: argparse.Namespace) -> None:
    from . import doctor as _doctor
    if args.depth < 1 or args.epochs < 1:
        raise ValueError("--depth and --epochs: expected positive integers")
    if args.plot is not None:
        _doctor.check_plot(args.plot, name="--plot")      # before the training, not after
    _doctor.run(depth=args.depth, epochs=args.epochs, plot=args.plot, device=args.device,
                backend=args.backend)


def bench(args: argparse.Namespace) -> None:
    from . import bench as _bench
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(_bench.SECTIONS)
    if unknown:
        raise CommandError(f"--sections: unknown {sorted(unknown)}; choose from {_bench.SECTIONS}")
    _bench.run(quick=args.quick, out=args.out, plots=not args.no_plots, sections=sections)


# ---------------------------------------------------------------------- train

def parse_layers(text: str) -> list[int]:
    """``"128,64"`` -> [128, 64]; ``""`` -> [] (no hidden layer)."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as "
                                         f"128,64, got {text!r}")
    return [int(p) for p in parts]


def _integer(low: int) -> Any:
    """An argparse type: an integer >= ``low`` (argparse names the option in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _python(value: Any) -> Any:
    """A NumPy scalar as the Python scalar JSON writes."""
    return value.item() if isinstance(value, np.generic) else value


def infer_loss(y: np.ndarray, loss: str | None, column: Any) -> str:
    """The loss for a target column: as given, or cross_entropy for labels (text, booleans,
    integers) and mse for floats."""
    if loss is None:
        return "mse" if y.dtype.kind == "f" else "cross_entropy"
    if loss == "mse" and y.dtype.kind not in "biuf":
        raise CommandError(f"--loss mse needs a numeric target; column {column!r} holds "
                           f"{y.dtype} values")
    return loss


def _labels(y: np.ndarray, column: Any) -> list[Any]:
    values = [_python(v) for v in y.tolist()] if y.dtype == object else y.tolist()
    if any(v is None or type(v).__name__ == "NAType"
           or (isinstance(v, float) and not np.isfinite(v)) for v in values):
        raise CommandError(f"the target {column!r} has missing values")
    return values


def check_out(path: str) -> str:
    """``--out``'s file, checked before any work: its folder exists, and it is a regular file
    or a new name (a directory, device or FIFO would be replaced: refused). Symbolic links are
    followed (:func:`backprop.state.target`)."""
    from .state import target
    try:
        real = target(path, "--out")
    except ValueError as e:
        raise CommandError(str(e)) from None
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise CommandError(f"--out: the folder {folder} does not exist")
    return real


def check_activation(name: str) -> None:
    """The hidden layers' activation: a known name, not softmax (the output's alone)."""
    from .activations import ACTIVATIONS
    hidden = sorted(set(ACTIVATIONS) - {"softmax"})
    if name == "softmax":
        raise CommandError("--activation softmax is an output activation (it normalises a "
                           f"whole layer to probabilities); for hidden layers choose one of "
                           f"{', '.join(hidden)}")
    if name not in ACTIVATIONS:
        raise CommandError(f"--activation: unknown {name!r}; choose one of {', '.join(hidden)}")


#: training memory per parameter, beyond the parameter itself: its gradient (the optimizer's
#: buffers are added per optimizer); per sample of a batch and unit: Z, A, dZ and a spare
WORK_PER_UNIT = 4


def training_bytes(sizes: Sequence[int], batch: int, itemsize: int, buffers: int) -> int:
    """A lower estimate of the memory a fit takes: parameters, gradients and ``buffers``
    optimizer buffers per parameter, and the batch's workspaces (``WORK_PER_UNIT`` arrays of
    batch × units per layer)."""
    params = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    return itemsize * (params * (2 + buffers) + WORK_PER_UNIT * batch * sum(sizes[1:]))


def physical_memory() -> int | None:
    """The machine's memory in bytes, where the system says (POSIX sysconf), else None."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(sizes: Sequence[int], args: argparse.Namespace) -> None:
    """Refuse, before allocating, a CPU network whose training would not fit in the machine's
    memory (it would be killed by the system, with no message)."""
    from .optimizers import OPTIMIZERS
    if not str(args.device).startswith("cpu"):
        return                      # a GPU's allocator reports its own out-of-memory error
    total = physical_memory()
    opt = OPTIMIZERS.get(args.optimizer)
    need = training_bytes(sizes, min(args.batch_size, 1 << 20), np.dtype(args.dtype).itemsize,
                          len(opt.state_names) if opt is not None else 2)
    if total is not None and need > total:
        raise CommandError(f"--layers {','.join(map(str, sizes[1:-1]))}: training this network "
                           f"needs at least {need / 2 ** 30:,.1f} GiB, more than this "
                           f"machine's {total / 2 ** 30:,.1f} GiB of memory; use smaller "
                           "layers (or --batch-size)")


def train(args: argparse.Namespace) -> None:
    from . import Network, datafile
    check_activation(args.activation)
    out = check_out(args.out)
    X, y, names, key = datafile.split(datafile.read(args.data), args.data, args.target)
    loss = infer_loss(y, args.loss, args.target)
    output, task = TASKS[loss]
    values = _labels(y, args.target)
    metadata: dict[str, Any] = {"feature_names": names, "target": key}
    if task == "classification":
        try:
            classes = sorted(set(values))
        except TypeError:
            raise CommandError(f"the target {args.target!r} mixes labels of several types "
                               "(text and numbers); make them one type") from None
        if len(classes) < 2:
            raise CommandError(f"the target {args.target!r} holds a single class "
                               f"({classes}); classification needs two or more")
        if loss == "binary_cross_entropy" and len(classes) != 2:
            raise CommandError(f"--loss binary_cross_entropy needs two classes, the target "
                               f"{args.target!r} has {len(classes)}; use cross_entropy")
        index = {c: k for k, c in enumerate(classes)}
        target = np.array([index[v] for v in values], dtype=np.int64)
        n_out = 1 if loss == "binary_cross_entropy" else len(classes)
        if n_out == 1:
            target = target.astype(np.float64).reshape(-1, 1)
        metadata["classes"] = classes
    else:
        target = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        n_out = 1
    check_memory([X.shape[1], *args.layers, n_out], args)
    net = Network([X.shape[1], *args.layers, n_out],
                  [args.activation] * len(args.layers) + [output], loss, device=args.device,
                  backend=args.backend, dtype=args.dtype, seed=args.seed)
    net.metadata = {k: v for k, v in metadata.items() if v is not None}
    options: dict[str, Any] = {}
    if args.validation_split:
        options["validation_split"] = args.validation_split
    lead = True
    if args.distributed:            # every rank of `mpiexec -n P backprop train ...` runs this
        from . import distributed
        options["distributed"] = True   # every rank reads the whole DATA (no shard: the
        lead = distributed.rank() == 0    # class labels and columns are the same on each)
    progress = lead and sys.stdout.isatty() and _has("tqdm")
    try:                            # a diverged fit saves nothing: one line, exit status 1
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            history = net.fit(X, target, epochs=args.epochs, batch_size=args.batch_size,
                              learning_rate=args.learning_rate, optimizer=args.optimizer,
                              seed=args.seed, verbose="progress" if progress else False,
                              on_nonfinite="raise", **options)
    except FloatingPointError as e:
        epoch = net.history_.diverged_epoch if net.history_ is not None else None
        raise CommandError(f"training diverged{'' if epoch is None else f' at epoch {epoch}'} "
                           f"(the loss or parameters became NaN or infinite; nothing saved to "
                           f"{args.out}): lower --learning-rate (now {args.learning_rate:g}), "
                           "or scale the features") from e
    if not lead:                    # rank 0 alone writes the model and prints
        return
    net.save(out)
    last = {k: v[-1] for k, v in history.history.items()
            if k in ("loss", "val_loss", "val_accuracy")}
    summary = "  ".join(f"{k} {v:.4f}" for k, v in last.items())
    print(f"trained {net} for {history.epochs} epochs on {len(X)} samples: {summary}; "
          f"saved to {args.out}")


# ---------------------------------------------------------------------- predict, evaluate

def _load_model(path: str, device: str, backend: str | None) -> Any:
    from . import Network
    from .state import readable
    try:
        readable(path, "model file")    # missing, a directory, /dev/null: said which
    except ValueError as e:
        raise CommandError(str(e)) from None
    return Network.load(path, device=device, backend=backend)


def _features(net: Any, path: str, target: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    from . import datafile
    meta = net.metadata or {}
    data = datafile.read(path)
    drop = meta.get("target")
    if (target is None and isinstance(data, datafile.Table) and data.indexed
            and isinstance(drop, int) and len(data.columns) == net.layer_sizes[0] + 1):
        target = str(drop)          # an .npy array that still holds the target column
    X, y, _, _ = datafile.split(data, path, target, features=meta.get("feature_names"))
    if X.shape[1] != net.layer_sizes[0]:
        raise CommandError(f"{path}: has {X.shape[1]} feature columns, the model expects "
                           f"{net.layer_sizes[0]}")
    return X, y


def _probabilities(net: Any, X: np.ndarray) -> np.ndarray:
    p = net.predict(X).astype(np.float64)
    return np.column_stack([1 - p[:, 0], p[:, 0]]) if net.loss_function.name == \
        "binary_cross_entropy" else p


def predict(args: argparse.Namespace) -> None:
    net = _load_model(args.model, args.device, args.backend)
    X, _ = _features(net, args.data, None)   # y: an .npy's target column, ignored
    meta = net.metadata or {}
    classes = meta.get("classes")
    name = str(meta.get("target", "prediction"))
    if classes is None:
        if args.proba:
            raise CommandError(f"--proba: {args.model} is a regression model (no classes)")
        outputs = net.predict(X)
        n_out = outputs.shape[1]
        header = [name] if n_out == 1 else [f"{name}_{k}" for k in range(n_out)]
        rows = outputs.tolist()
    elif args.proba:
        header, rows = [str(c) for c in classes], _probabilities(net, X).tolist()
    else:
        header = [name]
        rows = [[classes[k]] for k in np.argmax(_probabilities(net, X), axis=1)]
    out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if args.out:
            out.close()


def evaluate(args: argparse.Namespace) -> None:
    net = _load_model(args.model, args.device, args.backend)
    X, y = _features(net, args.data, args.target)
    classes = (net.metadata or {}).get("classes")
    values = _labels(y, args.target)
    if classes is None:
        Y = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        result = net.evaluate(X, Y)
        residual = ((net.predict(X).astype(np.float64) - Y) ** 2).sum()
        total = ((Y - Y.mean()) ** 2).sum()
        result["r2"] = 1 - residual / total if total > 0 else float("nan")
    else:
        index = {c: k for k, c in enumerate(classes)}
        unknown = sorted({str(v) for v in values if v not in index})
        if unknown:
            raise CommandError(f"{args.data}: target labels {unknown[:10]} were not seen in "
                               f"training (the model knows {classes})")
        labels = np.array([index[v] for v in values], dtype=np.int64)
        Y = labels.astype(np.float64).reshape(-1, 1) if net.layer_sizes[-1] == 1 else labels
        result = net.evaluate(X, Y)
    print(f"samples {len(X)}  " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()))


# ---------------------------------------------------------------------- info

def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def info(args: argparse.Namespace) -> None:
    from . import __version__
    from .backends import BACKENDS, get_backend, is_installed
    print(f"backprop {__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    print(f"numpy {np.__version__}")
    try:
        from threadpoolctl import threadpool_info
        for lib in threadpool_info():
            print(f"  {lib.get('internal_api')} {lib.get('version')} ({lib.get('user_api')}): "
                  f"{lib.get('num_threads')} threads")
    except ImportError:
        print("  BLAS and threads: install threadpoolctl to see them")
    print(f"cpus {os.cpu_count()}")
    for name, (_, _, kind) in BACKENDS.items():
        if not is_installed(name):
            print(f"backend {name} ({kind}): not installed")
            continue
        try:
            get_backend(kind, name)
            version = _version(name if name != "numpy" else "numpy")
            print(f"backend {name} ({kind}): available{version}")
        except Exception as e:      # a missing device or driver: say which
            print(f"backend {name} ({kind}): unavailable: {_one_line(e)}")
    if _has("cupy"):
        try:
            import cupy
            runtime = cupy.cuda.runtime
            print(f"cuda runtime {runtime.runtimeGetVersion()}, "
                  f"driver {runtime.driverGetVersion()}")
            for i in range(runtime.getDeviceCount()):
                props = runtime.getDeviceProperties(i)
                name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
                print(f"device cuda:{i}: {name}, {props['totalGlobalMem'] / 2 ** 30:.1f} GiB")
        except Exception as e:
            print(f"cuda: unavailable: {_one_line(e)}")
    else:
        print("devices: cpu (CuPy is not installed: pip install 'backprop[cuda]')")


def _version(module: str) -> str:
    try:
        from importlib.metadata import version
        return f", {module} {version(module)}"
    except Exception:
        return ""


# ---------------------------------------------------------------------- the parser

def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = _Parser(prog="backprop", description="Fully connected networks trained with "
                     "backpropagation: train on a file, predict, evaluate, inspect.")
    parser.add_argument("--version", action="version", version=f"backprop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def device_options(p: argparse.ArgumentParser, default: str | None = "cpu") -> None:
        p.add_argument("--device", default=default, help="cpu, cuda or cuda:N (default: cpu)")
        p.add_argument("--backend", default=None, help="numpy, numba or cupy (default: by device)")

    p = sub.add_parser("train", help="fit a network to a data file and save it")
    p.add_argument("data", help="a .csv, .parquet, .npy or .npz file")
    p.add_argument("--target", required=True, help="the target: a column name (.csv, "
                   ".parquet), a column index (.npy) or an array name (.npz)")
    p.add_argument("--out", required=True, help="the model file to write")
    p.add_argument("--layers", type=parse_layers, default=[64],
                   help="hidden layer sizes, comma-separated (default: 64)")
    p.add_argument("--activation", default="relu", help="of the hidden layers: identity, sigmoid, "
                   "tanh, relu (default), leaky_relu, elu (softmax is the output's alone)")
    p.add_argument("--loss", choices=sorted(TASKS), default=None,
                   help="default: cross_entropy for class labels, mse for numbers")
    p.add_argument("--epochs", type=_integer(1), default=20)
    p.add_argument("--batch-size", type=_integer(1), default=32)
    p.add_argument("--learning-rate", type=float, default=0.001)
    p.add_argument("--optimizer", default="adam", help="sgd, momentum, nesterov, rmsprop, "
                   "adam (default), adamw")
    p.add_argument("--validation-split", type=float, default=0.0,
                   help="fraction of the samples held out for validation (default: 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seed", type=_integer(0), default=0)
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: run as `mpiexec -n P backprop train ...`; "
                        "every rank reads DATA, --batch-size is the global batch, rank 0 "
                        "writes --out")
    device_options(p)
    p.set_defaults(run=train)

    p = sub.add_parser("predict", help="predictions of a saved model, as CSV")
    p.add_argument("model")
    p.add_argument("data", help="a .csv, .parquet, .npy or .npz file of features")
    p.add_argument("--out", default=None, help="CSV file to write (default: stdout)")
    p.add_argument("--proba", action="store_true", help="one probability column per class")
    device_options(p)
    p.set_defaults(run=predict)

    p = sub.add_parser("evaluate", help="a saved model's loss and accuracy or R² on a file")
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--target", required=True)
    device_options(p)
    p.set_defaults(run=evaluate)

    p = sub.add_parser("info", help="version, backends, devices, BLAS and threads")
    p.set_defaults(run=info)

    p = sub.add_parser("demo", help="train on scikit-learn's handwritten digits")
    device_options(p, default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.set_defaults(run=demo)

    p = sub.add_parser("doctor", help="a deep sigmoid network's vanishing gradients, "
                                      "diagnosed, and the same depth with the seeds' remedies")
    device_options(p)
    p.add_argument("--depth", type=int, default=20, help="hidden layers (default 20)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of training (default 20)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="draw the per-layer gradient norms into FILE (matplotlib)")
    p.set_defaults(run=doctor)

    p = sub.add_parser("bench", help="measure speed, the complexity table and memory; write a "
                                     "report (markdown, JSON, PNG plots)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (what CI runs)")
    p.add_argument("--out", default=None,
                   help="output folder (default: benchmarks/results/<machine>)")
    p.add_argument("--sections", default="speed,complexity,memory",
                   help="comma-separated subset of speed,complexity,memory to measure; the "
                        "others are kept from the report.json already in --out")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib)")
    p.set_defaults(run=bench)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run a command; a failure is one line on stderr and exit status 1 (2: bad arguments,
    130: interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():     # one line each, no source line quoted
            warnings.showwarning = _show_warning
            args.run(args)
    except KeyboardInterrupt:
        sys.stderr.write("backprop: interrupted\n")
        sys.exit(130)
    except SystemExit:
        raise
    except BrokenPipeError:         # `backprop predict ... | head`
        sys.exit(1)
    except Exception as e:
        if os.environ.get("BACKPROP_DEBUG", "0") not in ("", "0"):
            raise
        known = isinstance(e, (CommandError, ValueError, TypeError, OSError, ImportError,
                               FloatingPointError))
        sys.stderr.write(f"backprop: error: {'' if known else type(e).__name__ + ': '}"
                         f"{_one_line(e)}\n")
        sys.exit(1)


def _show_warning(message: Any, category: type, filename: str, lineno: int,
                  file: Any = None, line: Any = None) -> None:
    """A warning as one line on stderr: ``backprop: warning: <message>``."""
    sys.stderr.write(f"backprop: warning: {' '.join(str(message).split())}\n")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
