"""Benchmarks: speed against the matrix-product peak and the peers, the seeds' complexity table
measured, and memory. ``python -m backprop bench`` runs :func:`run`; ``benchmarks/`` uses the
same functions under pytest-benchmark.

Work is counted in FLOP (a multiply-add is 2), for a batch of B rows and layer sizes n_0..n_L:

=============  ===========================================================
forward        2·B·Σ_{l=1..L} n_l·n_{l-1}
weight_grad    2·B·Σ_{l=1..L} n_l·n_{l-1}      (dW = δᵀ A_prev)
delta          2·B·Σ_{l=2..L} n_l·n_{l-1}      (no δ for the input layer)
backward       delta + weight_grad
train step     forward + backward               (≈ 6·B·W, W = Σ n_l·n_{l-1})
=============  ===========================================================

Times are medians of repeated samples; each sample runs the call enough times to last
``min_time`` seconds. Every network is ReLU hidden layers, a softmax output and cross-entropy,
trained with plain SGD, float32.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import optimizers, reference
from .backends import available_backends
from .network import Network

#: the core speed benchmark: (name, layer sizes, batch)
SPEED_NETWORKS = [("tiny", [64, 32, 10], 32),
                  ("mnist", [784, 256, 128, 10], 128),
                  ("wide", [1024, 1024, 1024, 1024, 10], 256)]

FULL = dict(
    speed_networks=SPEED_NETWORKS,
    repeat=5, min_time=0.02,
    peak_shape=(256, 1024, 1024),               # (B, n_in, n_out) of the wide network's products
    epoch_samples=2048,                         # samples per epoch for the epoch-based peers
    reference_networks=["tiny", "mnist"],       # the per-sample oracle is slow: small sizes only
    n_sweep=dict(sizes=[256, 512, 512, 10], N=[2 ** k for k in range(2, 13)], epoch_batch=32),
    width_sweep=dict(widths=[8, 16, 32, 64, 128, 256, 512, 1024, 2048], batch=128),
    depth_sweep=dict(width=128, depths=[1, 2, 4, 8, 16, 32, 64, 128, 256], batch=128),
    throughput=dict(widths=[16, 64, 256, 1024], batch=128),
    fit_floor_factor=20.0,
)

QUICK = dict(
    speed_networks=[("tiny", [64, 32, 10], 32), ("mnist", [784, 64, 10], 32),
                    ("wide", [128, 128, 128, 10], 32)],
    repeat=2, min_time=0.001,
    peak_shape=(32, 128, 128),
    epoch_samples=128,
    reference_networks=["tiny"],
    n_sweep=dict(sizes=[16, 16, 4], N=[2 ** k for k in range(1, 8)], epoch_batch=4),
    width_sweep=dict(widths=[4, 8, 16, 32, 64, 128], batch=8),
    depth_sweep=dict(width=16, depths=[1, 2, 4, 8, 16, 32, 64], batch=8),
    throughput=dict(widths=[8, 32], batch=16),
    fit_floor_factor=2.0,
)


# ---------------------------------------------------------------------- counting work

def weights(sizes: Sequence[int]) -> int:
    """W = Σ_l n_l·n_{l-1}, the number of weights."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flops(sizes: Sequence[int], batch: int) -> dict[str, int]:
    """FLOP of one batch: forward, delta, weight_grad, backward and train (see module doc)."""
    forward = 2 * batch * weights(sizes)
    delta = 2 * batch * weights(sizes[1:])
    return dict(forward=forward, delta=delta, weight_grad=forward,
                backward=delta + forward, train=2 * forward + delta)


# ---------------------------------------------------------------------- timing

def measure(fn: Callable[[], Any], repeat: int = 7, min_time: float = 0.05,
            sync: Callable[[], Any] = lambda: None) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` samples of >= ``min_time`` each."""
    fn()
    sync()
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or number >= 1 << 20:
            break
        number = max(2 * number, int(number * 1.2 * min_time / max(elapsed, 1e-9)))
    samples = [elapsed / number]
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def matmul_peak(shape: Sequence[int], dtype: Any = np.float32, repeat: int = 7,
                min_time: float = 0.05) -> dict[str, Any]:
    """GFLOP/s of NumPy's matrix products of one layer of width n at batch B, 2·B·n_in·n_out
    FLOP each: forward ``A @ Wᵀ``, delta ``δ @ W`` and weight gradient ``δᵀ @ A``. The peak
    is the fastest of the three medians."""
    B, n_in, n_out = shape
    rng = np.random.default_rng(0)
    A = rng.standard_normal((B, n_in)).astype(dtype)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    D = rng.standard_normal((B, n_out)).astype(dtype)
    Z, G, dW = np.empty((B, n_out), dtype), np.empty((B, n_in), dtype), np.empty_like(W)
    products = {"A @ W.T": lambda: np.matmul(A, W.T, out=Z),
                "delta @ W": lambda: np.matmul(D, W, out=G),
                "delta.T @ A": lambda: np.matmul(D.T, A, out=dW)}
    gflops = {name: 2 * B * n_in * n_out / measure(f, repeat, min_time) / 1e9
              for name, f in products.items()}
    return dict(shape=list(shape), dtype=np.dtype(dtype).name, products=gflops,
                gflops=max(gflops.values()))


# ---------------------------------------------------------------------- our networks

def make_data(sizes: Sequence[int], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs (n, n_0) float32 and class labels 0..n_L-1 (every class present)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    labels = (np.arange(n) % sizes[-1]).astype(np.int64)
    rng.shuffle(labels)
    return X, labels


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    Y = np.zeros((len(labels), n_classes), np.float32)
    Y[np.arange(len(labels)), labels] = 1
    return Y


def make_network(sizes: Sequence[int], backend: str, batch_norm: bool = False,
                 residual: bool = False) -> Network:
    """ReLU hidden layers, softmax output, cross-entropy; float32; on the backend's device;
    optionally batch normalization and residual connections on every hidden layer (that fits)."""
    device = "cuda" if backend == "cupy" else "cpu"
    return Network(sizes, ["relu"] * (len(sizes) - 2) + ["softmax"], "cross_entropy",
                   device=device, backend=backend, seed=0, batch_norm=batch_norm,
                   residual=residual)


class Prepared:
    """A network, one batch on its device and the workspaces: the calls the benchmarks time."""

    def __init__(self, sizes: Sequence[int], batch: int, backend: str = "numpy",
                 learning_rate: float = 1e-3, optimizer: str = "sgd", batch_norm: bool = False,
                 residual: bool = False, weighted: bool = False) -> None:
        self.net = net = make_network(sizes, backend, batch_norm, residual)
        be = net.backend
        X, labels = make_data(sizes, batch)
        self.X = be.asarray(X)
        self.Y = be.asarray(one_hot(labels, sizes[-1]))
        self.ws = net.workspace(batch, train=True)
        self.ws_infer = net.workspace(batch, train=False)
        self.optimizer = optimizers.get(optimizer)
        self.optimizer.reset(be, net.parameters())
        self.learning_rate = learning_rate
        #: ``weighted``: the step takes sample weights (uniform in [0.5, 2)), as a weighted fit
        self.weight = (be.asarray(np.random.default_rng(1).uniform(0.5, 2.0, batch), net.dtype)
                       if weighted else None)
        self.sync = be.synchronize
        self.inputs = net._forward(self.ws, self.X, train=False, batch_stats=True)

    def train_step(self) -> None:
        """Forward, loss, backward and SGD update of one batch (``Network.train_step``)."""
        self.net.train_step(self.ws, self.X, self.Y, self.optimizer, self.learning_rate,
                            sample_weight=self.weight)

    def forward(self) -> None:
        """One inference forward pass of the batch."""
        self.net._forward(self.ws_infer, self.X, train=False)

    def backward(self) -> None:
        """δ of every layer and the weight gradients (delta + weight_grad), no update."""
        self.net._backward(self.ws, self.inputs, self.Y, train=False)


def time_epoch(sizes: Sequence[int], n: int, batch: int, backend: str = "numpy",
               repeat: int = 7, min_time: float = 0.05, optimizer: str = "sgd",
               batch_norm: bool = False, residual: bool = False) -> float:
    """Seconds of one epoch of n samples in batches of ``batch`` (``training.run_epoch``:
    the backend's whole-epoch path where it has one)."""
    from .training import run_epoch
    net = make_network(sizes, backend, batch_norm, residual)
    be = net.backend
    X, labels = make_data(sizes, n)
    X, Y = be.asarray(X), be.asarray(one_hot(labels, sizes[-1]))
    opt = optimizers.get(optimizer)
    opt.reset(be, net.parameters())
    order = be.asarray(np.random.default_rng(0).permutation(n))
    return measure(lambda: run_epoch(net, X, Y, order, min(batch, n), opt, 1e-3),
                   repeat, min_time, be.synchronize)


# ---------------------------------------------------------------------- peers

def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def sklearn_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def torch_mlp(sizes: Sequence[int]) -> Any:
    """PyTorch's twin of :func:`make_network`: Linear layers with ReLU between them; the
    softmax is left to ``torch.nn.CrossEntropyLoss``, which fuses it with the loss."""
    import torch
    layers: list[Any] = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if l < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def time_torch(sizes: Sequence[int], batch: int, device: str = "cpu", threads: int | None = None,
               repeat: int = 7, min_time: float = 0.05) -> dict[str, float]:
    """PyTorch: seconds of one SGD training step and of one forward pass (inference mode)."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_mlp(sizes).to(device)
    X, labels = make_data(sizes, batch)
    X, y = torch.from_numpy(X).to(device), torch.from_numpy(labels).to(device)
    criterion = torch.nn.CrossEntropyLoss()       # softmax + cross-entropy, fused
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        criterion(model(X), y).backward()
        opt.step()

    def forward() -> None:
        with torch.inference_mode():
            model(X)

    return dict(train=measure(step, repeat, min_time, sync),
                forward=measure(forward, repeat, min_time, sync))


def time_sklearn(sizes: Sequence[int], batch: int, n: int, repeat: int = 7,
                 min_time: float = 0.05) -> dict[str, Any]:
    """scikit-learn MLPClassifier (sgd, no momentum): seconds of one ``partial_fit`` epoch of
    n samples in batches of ``batch``, per batch; and of ``predict_proba`` on one batch."""
    import warnings
    from sklearn.neural_network import MLPClassifier
    X, labels = make_data(sizes, n)
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="sgd",
                        batch_size=batch, learning_rate_init=1e-3, momentum=0.0,
                        nesterovs_momentum=False, alpha=0.0, shuffle=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X, labels, classes=np.arange(sizes[-1]))
        epoch = measure(lambda: clf.partial_fit(X, labels), repeat, min_time)
    forward = measure(lambda: clf.predict_proba(X[:batch]), repeat, min_time)
    steps = math.ceil(n / batch)
    return dict(train=epoch / steps, forward=forward, epoch=epoch,
                dtype=str(clf.coefs_[0].dtype))


def time_reference(sizes: Sequence[int], batch: int, repeat: int = 3,
                   min_time: float = 0.0) -> dict[str, float]:
    """The seeds' per-sample pseudocode (``backprop.reference``, float64): one SGD step."""
    net = make_network(sizes, "numpy")
    W = [np.asarray(w, np.float64) for w, _ in net.get_parameters()]
    b = [np.asarray(v, np.float64) for _, v in net.get_parameters()]
    X, labels = make_data(sizes, batch)
    X, Y = X.astype(np.float64), one_hot(labels, sizes[-1]).astype(np.float64)
    acts, loss = net.activations, net.loss_function

    def step() -> None:
        dW, db = reference.batch_gradients(X, Y, W, b, acts, loss)
        for l in range(len(W)):
            W[l] -= 1e-3 * dW[l]
            b[l] -= 1e-3 * db[l]

    def forward() -> None:
        for x in X:
            reference.forward_propagation(x, W, b, acts)

    return dict(train=measure(step, repeat, min_time), forward=measure(forward, repeat, min_time))


# ---------------------------------------------------------------------- fits

def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided Student-t quantile (scipy when present, else the normal 1.96 bound)."""
    try:
        from scipy import stats
        return float(stats.t.ppf(0.5 + level / 2, df))
    except ImportError:  # pragma: no cover - scipy is optional
        return 1.96


def fit_power(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least squares log y = log c + k log x; k with its 95% t-interval."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    A = np.stack([np.ones_like(lx), lx], axis=1)
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    n = len(lx)
    resid = ly - A @ coef
    if n > 2:
        s2 = float(resid @ resid) / (n - 2)
        se = math.sqrt(s2 / float(((lx - lx.mean()) ** 2).sum()))
        half = t_quantile(n - 2) * se
    else:
        half = float("nan")
    return dict(exponent=float(coef[1]), ci_low=float(coef[1] - half),
                ci_high=float(coef[1] + half), prefactor=float(math.exp(coef[0])), points=n)


def fit_above_floor(x: Sequence[float], t: Sequence[float], floor: float,
                    factor: float) -> dict[str, Any]:
    """:func:`fit_power` over the points slower than ``factor`` × the per-call floor (the
    smaller ones are overhead, not arithmetic); at least the 3 largest points."""
    keep = [i for i, ti in enumerate(t) if ti >= factor * floor]
    if len(keep) < 3:
        keep = list(range(len(t)))[-3:]
    fit = fit_power([x[i] for i in keep], [t[i] for i in keep])
    fit["fit_from"] = x[keep[0]]
    return fit


# ---------------------------------------------------------------------- complexity sweeps

#: the sweeps train with the seeds' plain mini-batch gradient descent
COMPLEXITY_OPTIMIZER = "sgd"

def overhead_floor(backend: str, repeat: int, min_time: float) -> dict[str, float]:
    """Per-call cost with no arithmetic: forward, backward and train step of a 1-1-2 network,
    batch 1, and an epoch of 1 sample."""
    p = Prepared([1, 1, 2], 1, backend, optimizer=COMPLEXITY_OPTIMIZER)
    out = {op: measure(getattr(p, op), repeat, min_time, p.sync)
           for op in ("forward", "backward", "train_step")}
    out["epoch"] = time_epoch([1, 1, 2], 1, 1, backend, repeat, min_time, COMPLEXITY_OPTIMIZER)
    return out


def time_ops(sizes: Sequence[int], batch: int, backend: str, repeat: int,
             min_time: float) -> dict[str, float]:
    """Seconds of forward, backward and train step for one batch."""
    p = Prepared(sizes, batch, backend, optimizer=COMPLEXITY_OPTIMIZER)
    return {op: measure(getattr(p, op), repeat, min_time, p.sync)
            for op in ("forward", "backward", "train_step")}


def sweep_N(cfg: dict, backend: str, floor: dict, repeat: int, min_time: float) -> dict:
    """Time against N: one batch of N rows (forward, backward, step) and an epoch of N samples."""
    sizes, Ns, eb = cfg["sizes"], cfg["N"], cfg["epoch_batch"]
    times: dict[str, list[float]] = {"forward": [], "backward": [], "train_step": [], "epoch": []}
    for N in Ns:
        for op, t in time_ops(sizes, N, backend, repeat, min_time).items():
            times[op].append(t)
        times["epoch"].append(time_epoch(sizes, N, eb, backend, repeat, min_time,
                                         COMPLEXITY_OPTIMIZER))
    return dict(sizes=sizes, epoch_batch=eb, x=Ns, times=times)


def sweep_W(kind: str, cfg: dict, backend: str, repeat: int, min_time: float) -> dict:
    """Time against W: width n of [n, n, n, 10], or depth d of [w] + [w]·d + [10]."""
    if kind == "width":
        nets = [[n, n, n, 10] for n in cfg["widths"]]
    else:
        nets = [[cfg["width"]] * (d + 1) + [10] for d in cfg["depths"]]
    times: dict[str, list[float]] = {"forward": [], "backward": [], "train_step": []}
    for sizes in nets:
        for op, t in time_ops(sizes, cfg["batch"], backend, repeat, min_time).items():
            times[op].append(t)
    return dict(kind=kind, batch=cfg["batch"], networks=nets, x=[weights(s) for s in nets],
                times=times,
                predicted_ratio=[flops(s, 1)["backward"] / flops(s, 1)["forward"] for s in nets])


def fit_sweep(sweep: dict, floor: dict, factor: float) -> dict[str, dict]:
    return {op: fit_above_floor(sweep["x"], t, floor[op], factor)
            for op, t in sweep["times"].items()}


# ---------------------------------------------------------------------- memory

def traced_bytes(make: Callable[[], Any]) -> int:
    """Bytes allocated on the host by ``make()`` and still held (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


def memory(networks: Sequence[Sequence[int]], batch: int) -> dict[str, Any]:
    """Activations: workspace bytes per batch row against Σ_{l>=0} n_l (the workspace keeps
    the batch's X and Y too: 4·(n_0 + 2·Σ_{l>=1} n_l + 2·n_L) + 8 bytes). Parameters, gradients
    and Adam's two state buffers against W (all float32, NumPy backend)."""
    rows = []
    for sizes in networks:
        net = make_network(sizes, "numpy")
        ws_bytes = traced_bytes(lambda: net.workspace(batch, train=True))
        net._workspaces.clear()

        def params_and_state() -> Any:
            n = make_network(sizes, "numpy")
            n.gradients()
            opt = optimizers.Adam()
            opt.reset(n.backend, n.parameters())
            return n, opt
        rows.append(dict(sizes=list(sizes), units=sum(sizes), W=weights(sizes),
                         n_parameters=net.n_parameters,
                         workspace_bytes_per_row=ws_bytes / batch,
                         parameter_state_bytes=traced_bytes(params_and_state)))
    return dict(batch=batch, rows=rows,
                fit_activations=fit_power([r["units"] for r in rows],
                                          [r["workspace_bytes_per_row"] for r in rows]),
                fit_parameters=fit_power([r["W"] for r in rows],
                                         [r["parameter_state_bytes"] for r in rows]))


# ---------------------------------------------------------------------- the machine

def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of the BLAS / OpenMP libraries loaded (empty without it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
            "architecture", "filepath")
    return [{k: v for k, v in lib.items() if k in keep} for lib in threadpool_info()]


def blas_threads() -> int:
    """Threads of NumPy's BLAS (threadpoolctl), else the CPU count."""
    for lib in blas_info():
        if lib.get("user_api") == "blas":
            return int(lib["num_threads"])
    return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_generation() -> str:
    """'zen2' etc. from /proc/cpuinfo's AMD family/model, when the model name does not say."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return ""
    if fields.get("vendor_id") != "AuthenticAMD" or not fields.get("cpu family", "").isdigit():
        return ""
    family, model = int(fields["cpu family"]), int(fields.get("model", "0"))
    if family == 23:
        return "zen2" if model >= 0x30 else "zen"
    return {25: "zen3", 26: "zen5"}.get(family, "")


def machine_name() -> str:
    """A folder name for the results, e.g. ``2vcpu-amd-epyc-zen2``."""
    words = "".join(c if c.isalnum() else " " for c in cpu_model().lower()).split()
    words = [w for w in words if w not in ("processor", "cpu", "with", "core", "tm", "r")]
    gen = _cpu_generation()
    if gen and gen not in words:
        words.append(gen)
    return "-".join([f"{os.cpu_count() or 1}vcpu"] + words[:5])


def machine_info() -> dict[str, Any]:
    """The machine, the versions of everything measured, BLAS and thread counts."""
    versions = {"python": sys.version.split()[0], "numpy": np.__version__}
    for name in ("backprop", "scipy", "numba", "cupy", "torch", "sklearn", "matplotlib"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    try:
        numpy_config = np.show_config(mode="dicts")
        numpy_blas = numpy_config.get("Build Dependencies", {}).get("blas", {})
    except (TypeError, AttributeError):  # pragma: no cover - numpy < 1.25
        numpy_blas = {}
    gpu = None
    if "cupy" in available_backends():
        import cupy
        gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return dict(name=machine_name(), cpu=cpu_model(), cpu_count=os.cpu_count(),
                platform=platform.platform(), gpu=gpu, versions=versions,
                numpy_blas=numpy_blas, threadpools=blas_info(), threads=blas_threads(),
                backends=available_backends())


# ---------------------------------------------------------------------- the report

def _rates(sizes: Sequence[int], batch: int, seconds: float, op: str) -> dict[str, float]:
    work = flops(sizes, batch)[op]
    return dict(seconds=seconds, samples_per_s=batch / seconds, gflops=work / seconds / 1e9)


def speed(cfg: dict, backends: Sequence[str], peak: float, threads: int,
          log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train step and forward pass of each speed network: our backends, the peers, roofline."""
    rows = []
    rep, mt = cfg["repeat"], cfg["min_time"]
    for name, sizes, batch in cfg["speed_networks"]:
        per_sample = flops(sizes, 1)
        rows.append(dict(network=name, sizes=sizes, batch=batch, impl="roofline (matmul peak)",
                         train=dict(samples_per_s=peak * 1e9 / per_sample["train"], gflops=peak),
                         forward=dict(samples_per_s=peak * 1e9 / per_sample["forward"],
                                      gflops=peak)))
        timed: list[tuple[str, dict[str, float]]] = []
        for backend in backends:
            p = Prepared(sizes, batch, backend)
            timed.append((f"backprop-{backend}",
                          dict(train=measure(p.train_step, rep, mt, p.sync),
                               forward=measure(p.forward, rep, mt, p.sync))))
        if torch_available():
            import torch
            timed.append(("pytorch-cpu", time_torch(sizes, batch, "cpu", threads, rep, mt)))
            if torch.cuda.is_available():
                timed.append(("pytorch-cuda", time_torch(sizes, batch, "cuda", None, rep, mt)))
        if sklearn_available():
            timed.append(("sklearn-mlp", time_sklearn(sizes, batch, cfg["epoch_samples"],
                                                      rep, mt)))
        if name in cfg["reference_networks"]:
            timed.append(("reference (per-sample)", time_reference(sizes, batch)))
        for impl, t in timed:
            row = dict(network=name, sizes=sizes, batch=batch, impl=impl,
                       train=_rates(sizes, batch, t["train"], "train"),
                       forward=_rates(sizes, batch, t["forward"], "forward"))
            for op in ("train", "forward"):
                row[op]["percent_of_peak"] = 100 * row[op]["gflops"] / peak
            rows.append(row)
            log(f"  {name:5s} {impl:24s} train {row['train']['samples_per_s']:12,.0f} samples/s "
                f"{row['train']['gflops']:7.1f} GFLOP/s ({row['train']['percent_of_peak']:5.1f}% "
                f"of peak)  forward {row['forward']['samples_per_s']:12,.0f} samples/s")
    return rows


def throughput(cfg: dict, backends: Sequence[str], threads: int) -> dict[str, Any]:
    """Training samples/s of [n, n, n, 10] against the width n, for each backend and peer."""
    tc = cfg["throughput"]
    rep, mt, batch = cfg["repeat"], cfg["min_time"], tc["batch"]
    series: dict[str, list[float]] = {}
    nets = [[n, n, n, 10] for n in tc["widths"]]
    for sizes in nets:
        for backend in backends:
            p = Prepared(sizes, batch, backend)
            series.setdefault(f"backprop-{backend}", []).append(
                batch / measure(p.train_step, rep, mt, p.sync))
        if torch_available():
            series.setdefault("pytorch-cpu", []).append(
                batch / time_torch(sizes, batch, "cpu", threads, rep, mt)["train"])
        if sklearn_available():
            series.setdefault("sklearn-mlp", []).append(
                batch / time_sklearn(sizes, batch, max(cfg["epoch_samples"] // 4, batch),
                                     rep, mt)["train"])
    return dict(widths=tc["widths"], batch=batch, networks=nets, samples_per_s=series,
                train_flops_per_sample=[flops(s, 1)["train"] for s in nets])


SECTIONS = ("speed", "complexity", "memory")


def run(quick: bool = False, out: str | Path | None = None, plots: bool = True,
        sections: Sequence[str] = SECTIONS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure ``sections`` (speed: peak, speed networks, throughput; complexity; memory),
    write ``report.json``, ``report.md`` and the plots to ``out`` (default
    ``benchmarks/results/<machine>``) and return the report. Sections not measured now are
    kept from the ``report.json`` already in ``out`` (a full run can be taken in chunks)."""
    cfg = QUICK if quick else FULL
    rep, mt = cfg["repeat"], cfg["min_time"]
    started = time.perf_counter()
    say = log
    log = lambda msg: say(f"[{time.perf_counter() - started:4.0f} s] {msg}")  # noqa: E731
    machine = machine_info()
    threads = machine["threads"]
    backends = machine["backends"]
    out = Path(out) if out is not None else Path("benchmarks") / "results" / machine["name"]
    report: dict[str, Any] = {}
    previous = out / "report.json"
    mode = "quick" if quick else "full"
    if set(sections) != set(SECTIONS) and previous.exists():
        import json
        report = json.loads(previous.read_text())
        if report.get("mode") != mode:
            report = {}
    report.update(mode=mode, machine=machine,
                  config=dict(cfg, complexity_optimizer=COMPLEXITY_OPTIMIZER))
    report.setdefault("seconds", {})
    log(f"machine {machine['name']} ({machine['cpu']}, {threads} BLAS threads), "
        f"backends {backends}, {mode} mode, sections {list(sections)}")

    if "speed" in sections or "peak" not in report:
        peak = report["peak"] = matmul_peak(cfg["peak_shape"], np.float32, rep, mt)
        log(f"float32 matmul peak {peak['gflops']:.1f} GFLOP/s at {peak['shape']}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in peak["products"].items()))
    peak = report["peak"]
    if "speed" in sections:
        t0 = time.perf_counter()
        log("speed (train step, forward pass):")
        report["speed"] = speed(cfg, backends, peak["gflops"], threads, log)
        log("throughput against width")
        report["throughput"] = throughput(cfg, backends, threads)
        again = matmul_peak(cfg["peak_shape"], np.float32, rep, mt)   # the machine is shared:
        log(f"float32 matmul peak again: {again['gflops']:.1f} GFLOP/s")  # keep the better one
        if again["gflops"] > peak["gflops"]:
            report["peak"] = again
        report["peak"]["measured"] = [peak["gflops"], again["gflops"]]
        best = report["peak"]["gflops"]
        for row in report["speed"]:
            if row["impl"].startswith("roofline"):
                per_sample = flops(row["sizes"], 1)
                for op in ("train", "forward"):
                    row[op] = dict(samples_per_s=best * 1e9 / per_sample[op], gflops=best)
            for op in ("train", "forward"):
                if "percent_of_peak" in row[op]:
                    row[op]["percent_of_peak"] = 100 * row[op]["gflops"] / report["peak"]["gflops"]
        report["seconds"]["speed"] = time.perf_counter() - t0

    if "complexity" in sections:
        t0 = time.perf_counter()
        report["complexity"] = complexity(cfg, backends, log)
        report["seconds"]["complexity"] = time.perf_counter() - t0
    if "memory" in sections:
        t0 = time.perf_counter()
        wc = cfg["width_sweep"]
        report["memory"] = memory([[n, n, n, 10] for n in wc["widths"]]
                                  + [[cfg["depth_sweep"]["width"]] * (d + 1) + [10]
                                     for d in cfg["depth_sweep"]["depths"]], wc["batch"])
        report["seconds"]["memory"] = time.perf_counter() - t0
    from . import bench_report
    missing = [k for k in ("speed", "complexity", "memory") if k not in report]
    if missing:
        bench_report.write_json(report, out)
        log(f"wrote {out}/report.json; run the sections {missing} for report.md and the plots")
        return report
    bench_report.write(report, out, plots=plots)
    log(f"wrote {out}/report.md, report.json{' and plots' if plots else ''}")
    return report


def complexity(cfg: dict, backends: Sequence[str], log: Callable[[str], None]) -> dict[str, Any]:
    """Per backend: the overhead floor, the N, width and depth sweeps, fits and ratios."""
    rep, mt = cfg["repeat"], cfg["min_time"]
    result: dict[str, Any] = {}
    for backend in backends:
        floor = overhead_floor(backend, rep, mt)
        log(f"complexity on {backend}: per-call floor (1-1-2 network) "
            + ", ".join(f"{k} {v * 1e6:.1f} µs" for k, v in floor.items()))
        sN = sweep_N(cfg["n_sweep"], backend, floor, rep, mt)
        log("  N sweep done")
        sWw = sweep_W("width", cfg["width_sweep"], backend, rep, mt)
        sWd = sweep_W("depth", cfg["depth_sweep"], backend, rep, mt)
        for s in (sN, sWw, sWd):
            s["fits"] = fit_sweep(s, floor, cfg["fit_floor_factor"])
            s["ratio"] = [b / f for b, f in zip(s["times"]["backward"], s["times"]["forward"])]
        result[backend] = dict(floor=floor, N=sN, width=sWw, depth=sWd)
        for label, s in (("N", sN), ("W (width)", sWw), ("W (depth)", sWd)):
            log(f"  exponents in {label}: " + ", ".join(
                f"{op} {f['exponent']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}]"
                for op, f in s["fits"].items()))
    return result
