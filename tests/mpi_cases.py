"""Run under ``mpiexec -n P``: data-parallel fits compared with one process (tests/test_distributed.py).

``python tests/mpi_cases.py CASES.json RESULT.json``: CASES is a list of dicts (network and fit
arguments, see :func:`run_case`); every rank runs each case's ``fit(distributed=True)``, rank 0
also the same fit in one process, and rank 0 writes a list of results: the largest difference
relative to the largest parameter between the distributed and the one-process parameters, the
largest difference between ranks, both histories' losses.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
from mpi4py import MPI

from backprop import Network
from backprop import state as _state
from backprop.distributed import Communicator


def data(case: dict) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case.get("data_seed", 0))
    n, n_in, n_out = case["n"], case["sizes"][0], case["sizes"][-1]
    X = rng.normal(size=(n, n_in))
    loss = case.get("loss", "cross_entropy")
    if loss == "cross_entropy":
        Y = rng.integers(0, n_out, n)
    elif loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, (n, n_out)).astype(np.float64)
    else:
        Y = rng.normal(size=(n, n_out))
    return X, Y


def network(case: dict, seed: int | None) -> Network:
    loss = case.get("loss", "cross_entropy")
    out = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(loss, "identity")
    hidden = case.get("activation", "tanh")
    sizes = case["sizes"]
    extra = {}
    for flag in ("batch_norm", "residual"):
        if case.get(flag):
            extra[flag] = True
    backend = case.get("backend", "numpy")
    return Network(sizes, [hidden] * (len(sizes) - 2) + [out], loss, dtype="float64",
                   backend=backend, device="cuda" if backend == "cupy" else "cpu", seed=seed,
                   dropout=case.get("dropout", 0.0), **extra)


def fit_args(case: dict) -> dict:
    args = dict(epochs=case.get("epochs", 3), batch_size=case.get("batch_size", 10),
                learning_rate=case.get("learning_rate", 0.05),
                optimizer=case.get("optimizer", "sgd"), seed=case.get("seed", 7),
                shuffle=case.get("shuffle", True), l1=case.get("l1", 0.0),
                l2=case.get("l2", 0.0), clip_norm=case.get("clip_norm"))
    for name in ("clip_value", "warmup_steps", "validation_split", "diagnostics"):
        if name in case:
            args[name] = case[name]
    return args


def flat(net: Network) -> np.ndarray:
    """Every parameter (W, b, then batch normalization's γ, β) and buffer (running mean and
    variance) as one host vector."""
    return np.concatenate([np.asarray(net.backend.to_numpy(p)).ravel()
                           for p in net.parameters() + net.buffers()])


def run_case(case: dict, comm: MPI.Comm) -> dict:
    rank, size = comm.Get_rank(), comm.Get_size()
    X, Y = data(case)
    weights = None
    if case.get("sample_weight"):
        weights = np.random.default_rng(5).uniform(0.1, 2.0, X.shape[0])
        for lo, hi in case.get("zero_weight", []):   # rows [lo, hi) weigh nothing
            weights[lo:hi] = 0.0
    args = fit_args(case)
    shard = case.get("shard", False)
    Xr, Yr, wr = X, Y, weights
    if shard:   # uneven parts: rank r holds rows [cut_r, cut_{r+1})
        cuts = [0] + [int(X.shape[0] * (r + 1) ** 2 / size ** 2) for r in range(size)]
        if "parts" in case:                      # the parts' sizes given (some may be 0)
            cuts = [int(c) for c in np.cumsum([0] + case["parts"])]
        Xr, Yr = X[cuts[rank]:cuts[rank + 1]], Y[cuts[rank]:cuts[rank + 1]]
        wr = None if weights is None else weights[cuts[rank]:cuts[rank + 1]]
    # replicas built from different seeds: rank 0's parameters must be broadcast
    net = network(case, seed=case.get("net_seed", 1) + (rank if case.get("skew_init") else 0))
    extra = {} if wr is None else {"sample_weight": wr}
    if "stop_on" in case:   # [rank, epoch]: a callback on that rank alone asks to stop there
        who, when = case["stop_on"]
        extra["callbacks"] = [lambda epoch, logs: rank == who and epoch == when]
    calls, device_calls, writes = [], [], []
    write, allreduce = _state.write, Communicator.allreduce

    def counted_write(path, state):
        writes.append(path)
        write(path, state)

    def counted_allreduce(self, buf, what):
        calls.append(what)
        allreduce(self, buf, what)

    _state.write, Communicator.allreduce = counted_write, counted_allreduce
    nccl = sys.modules["cupy"].cuda.nccl if case.get("backend") == "cupy" else None
    if nccl is not None:
        nccl_allreduce = nccl.NcclCommunicator.allReduce

        def counted_nccl(self, *args):
            device_calls.append(args[2])             # the count of elements summed
            nccl_allreduce(self, *args)
        nccl.NcclCommunicator.allReduce = counted_nccl
    try:
        if case.get("resume_at"):   # interrupted after resume_at epochs, resumed by a new network
            path = case["checkpoint"]
            net.fit(Xr, Yr, distributed=True, shard=shard, checkpoint=path,
                    **{**args, "epochs": case["resume_at"]}, **extra)
            net = network(case, seed=99 + rank)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            history = net.fit(Xr, Yr, distributed=True, shard=shard,
                              checkpoint=case.get("checkpoint"), **args, **extra)
    finally:
        Communicator.allreduce = allreduce
        _state.write = write
        if nccl is not None:
            nccl.NcclCommunicator.allReduce = nccl_allreduce
    mine = flat(net)
    every = comm.gather(mine, root=0)
    written = comm.gather(len(writes), root=0)
    # per rank, the warnings its fit gave (diagnostics': rank 0's alone)
    warned = comm.gather(len(caught), root=0)
    epochs_run = comm.gather((history.epochs, history.stopped_early), root=0)
    if rank != 0:
        return {}
    reference = network(case, seed=case.get("net_seed", 1))
    extra = {} if weights is None else {"sample_weight": weights}
    if "stop_on" in case:   # one process stops at the same epoch
        extra["callbacks"] = [lambda epoch, logs: epoch == case["stop_on"][1]]
    ref_history = reference.fit(X, Y, **args, **extra)
    ref = flat(reference)
    scale = max(np.abs(ref).max(), 1e-300)
    return {"relative": float(np.abs(mine - ref).max() / scale),
            "between_ranks": float(max(np.abs(p - mine).max() for p in every)),
            "loss": history["loss"], "ref_loss": ref_history["loss"],
            "steps": net.optimizer_.t, "ref_steps": reference.optimizer_.t,
            "allreduces": {what: calls.count(what) for what in calls},
            "epochs": args["epochs"], "nccl": device_calls, "epochs_run": epochs_run,
            "ref_epochs_run": [ref_history.epochs, ref_history.stopped_early],
            "n_parameters": net.n_parameters, "writes": written,
            "diagnostics": len(history.diagnostics), "warnings": warned,
            "val_loss": history.history.get("val_loss"),
            "ref_val_loss": ref_history.history.get("val_loss")}


def use_emulator() -> None:
    """CuPy is tests/emulator/fake_cupy.py (its NCCL stand-in sums over MPI)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import backprop.backends as backends
    from support import fake_cupy
    for name, module in fake_cupy().modules().items():
        sys.modules[name] = module
    installed = backends.is_installed
    backends.is_installed = lambda name: name == "cupy" or installed(name)


def main() -> None:
    cases = json.load(open(sys.argv[1]))
    if any(case.get("backend") == "cupy" for case in cases) and "--emulate-cuda" in sys.argv:
        use_emulator()
    comm = MPI.COMM_WORLD
    results = []
    for case in cases:      # an error on any rank aborts the job (fit's own rule)
        results.append(run_case(case, comm))
    if comm.Get_rank() == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
