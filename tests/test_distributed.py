"""Data-parallel training (backprop.distributed): N ranks follow one process's trajectory.

The multi-rank tests launch ``mpiexec -n 2`` and ``-n 3`` (more ranks than this machine's
cores: MPICH's hydra oversubscribes) on tests/mpi_cases.py, one launch running many cases and
reporting JSON; they are skipped, with the reason, where mpi4py or mpiexec is missing.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backprop import Network

from support import make_network

ROOT = Path(__file__).resolve().parents[1]
CASES = Path(__file__).with_name("mpi_cases.py")

HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
needs_mpi = pytest.mark.skipif(not HAVE_MPI4PY or MPIEXEC is None,
                               reason="needs mpi4py and mpiexec (pip install 'backprop[mpi]')")
HAVE_BATCH_NORM = "batch_norm" in inspect.signature(Network).parameters
HAVE_SAMPLE_WEIGHT = "sample_weight" in inspect.signature(Network.fit).parameters
TOLERANCE = 1e-10


def launch(ranks: int, args: list[str], timeout: float = 120,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                   "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, *args], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=timeout)


def run_cases(ranks: int, cases: list[dict], tmp_path: Path, *options: str,
              env: dict[str, str] | None = None) -> list[dict]:
    spec, out = tmp_path / "cases.json", tmp_path / "results.json"
    spec.write_text(json.dumps(cases))
    done = launch(ranks, [str(CASES), str(spec), str(out), *options], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def expected_allreduces(case: dict, r: dict) -> tuple[dict[str, int], list[int]]:
    """The Allreduces a fit makes: over MPI (by what they sum) and over NCCL (their element
    counts, in order). Per step one of the whole gradient buffer, and with batch
    normalization three per normalized layer (its column sums and squares forward, its
    gradient sums backward); per epoch one of the loss, and with sample weights and shard
    one of the batches' weight sums (and one of the data set's, per fit), and one of the
    stop decision."""
    steps, epochs = r["steps"], r["epochs_run"][0][0]
    hidden = case["sizes"][1:-1] if case.get("batch_norm") else []
    host = {"the Allreduce of the epoch's loss": epochs,
            "the Allreduce of the stop decision": epochs}
    if case.get("sample_weight") and case.get("shard"):
        host["the Allreduce of the weight sums"] = 1
        host["the Allreduce of the batches' weight sums"] = epochs
    per_step = {"the gradient Allreduce": 1,
                "the Allreduce of batch normalization's sums": len(hidden),
                "the Allreduce of batch normalization's squares": len(hidden),
                "the Allreduce of batch normalization's gradient sums": len(hidden)}
    if case.get("backend") == "cupy":          # the device buffers go through NCCL
        step = [n for n in hidden for _ in (0, 1)] + [2 * n for n in reversed(hidden)]
        return host, (step + [r["n_parameters"]]) * steps
    host.update({what: count * steps for what, count in per_step.items() if count})
    return host, []


def check(results: list[dict], cases: list[dict]) -> None:
    for case, r in zip(cases, results):
        assert r["steps"] == r["ref_steps"], case
        assert r["relative"] < TOLERANCE, (case, r["relative"])
        assert r["between_ranks"] == 0, (case, r["between_ranks"])      # replicas stay equal
        # every rank ran (and stopped after) the epochs one process runs
        assert all(e == r["ref_epochs_run"] for e in r["epochs_run"]), (case, r["epochs_run"])
        np.testing.assert_allclose(r["loss"], r["ref_loss"], rtol=TOLERANCE, err_msg=str(case))
        # one gradient Allreduce per step over the whole buffer (nothing per tensor), one
        # for each epoch's loss, batch normalization's and sample weights' sums
        host, device = expected_allreduces(case, r)
        assert r["allreduces"] == host, case
        assert r["nccl"] == device, case
        # rank 0 alone writes the checkpoint (at every epoch's end and the final state)
        assert r["writes"][1:] == [0] * (len(r["writes"]) - 1), case
        assert (r["writes"][0] > 0) == bool(case.get("checkpoint")), case


def trajectory_cases(backend: str) -> list[dict]:
    base = {"sizes": [5, 8, 6, 3], "n": 37, "batch_size": 10, "backend": backend,
            "skew_init": True}      # ranks built from different seeds: the broadcast matters
    cases = [{**base, "optimizer": name} for name in
             ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")]
    cases += [
        {**base, "optimizer": "adam", "dropout": 0.3},
        {**base, "optimizer": "momentum", "clip_norm": 0.05, "learning_rate": 0.5},
        {**base, "optimizer": "sgd", "l1": 0.01, "l2": 0.02},
        {**base, "optimizer": "adamw", "l2": 0.01, "dropout": 0.2, "clip_norm": 0.3},
        # partial last batch of 1 row: with 2 or 3 ranks some have no row of it
        {**base, "n": 31, "optimizer": "rmsprop", "dropout": 0.25},
        {**base, "n": 41, "batch_size": 64, "optimizer": "sgd"},         # one batch, all rows
        {**base, "optimizer": "adam", "shuffle": False, "loss": "mse", "activation": "relu"},
        {**base, "optimizer": "nesterov", "loss": "binary_cross_entropy"},
        # each rank its own uneven part of the data set
        {**base, "shard": True, "optimizer": "adam", "dropout": 0.3, "clip_norm": 0.5},
        {**base, "shard": True, "n": 29, "batch_size": 7, "optimizer": "sgd", "l2": 0.01},
    ]
    return cases


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_same_trajectory_numpy(ranks, tmp_path):
    """Every optimizer, dropout, clipping, l1/l2, uneven splits, partial last batch, shard:
    the parameters and losses of one process, to 1e-10 relative in float64."""
    cases = trajectory_cases("numpy")
    check(run_cases(ranks, cases, tmp_path), cases)


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_same_trajectory_numba(ranks, tmp_path):
    """The numba backend's fused epoch is bypassed when distributed: the step-wise path with
    the Allreduce gives the trajectory of one process's (fused or not) fit."""
    pytest.importorskip("numba")
    warm = Network([2, 3, 2], ["tanh", "softmax"], "cross_entropy", dtype="float64",
                   backend="numba", dropout=0.5)    # compiled (or loaded) here, once: the
    warm.fit(np.zeros((4, 2)), np.zeros(4, int), epochs=1, batch_size=2,   # ranks load it
             learning_rate=0.1, optimizer="adam", clip_norm=1.0)
    cases = [c for c in trajectory_cases("numba")
             if c["optimizer"] in ("sgd", "adam") or c.get("shard")]
    check(run_cases(ranks, cases, tmp_path), cases)


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_same_trajectory_cupy_emulated_nccl(ranks, tmp_path):
    """The cupy backend on the CPU emulator: the gradient buffer summed on the device by
    NCCL (the emulator's cupy.cuda.nccl, which refuses host pointers), the loss over MPI;
    the result is one process's (graph path) trajectory. Always emulated (one GPU cannot host
    two NCCL ranks), so not marked gpu: CI's work, not ci/gpu.sh's."""
    from support import fake_cupy
    if fake_cupy().compiler() is None:
        pytest.skip("g++, which the CUDA emulator needs, is absent")
    base = {"sizes": [5, 8, 3], "n": 37, "batch_size": 10, "backend": "cupy", "epochs": 2,
            "skew_init": True}
    cases = [{**base, "optimizer": "adam", "dropout": 0.3, "clip_norm": 0.5},
             {**base, "n": 31, "optimizer": "momentum", "l2": 0.01},
             {**base, "optimizer": "sgd", "shard": True}]
    check(run_cases(ranks, cases, tmp_path, "--emulate-cuda"), cases)


@pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py")
@pytest.mark.parametrize("backend", [pytest.param("cupy", marks=pytest.mark.gpu)], indirect=True)
def test_nccl_allreduce_on_the_device(backend):
    """The replica's NCCL path on one rank (on the GPU under ci/gpu.sh, else the emulator):
    the device buffer summed in place (one rank: unchanged), the epoch's event awaited, the
    communicator destroyed."""
    from mpi4py import MPI

    from backprop.distributed import Communicator, Replica, _nccl_communicator
    net = make_network("cupy", [3, 4, 2], ["tanh", "identity"], "mse", dtype="float64")
    X, Y = net._prepare(np.ones((5, 3)), np.zeros((5, 2)))
    comm = Communicator(MPI.COMM_SELF)
    replica = Replica(comm, net, X, Y, shard=False)
    try:
        replica._nccl, replica._nccl_dtype = _nccl_communicator(comm, net.backend, net.dtype)
    except ImportError as e:
        pytest.skip(str(e))
    flat = net.flat_gradient()
    values = np.arange(net.n_parameters, dtype=np.float64)
    net.backend.copy(net.backend.asarray(values), flat)
    replica.allreduce_gradients()
    np.testing.assert_array_equal(net.backend.to_numpy(flat), values)
    total = net.backend.asarray(np.array([2.5]))
    assert replica.epoch_total(total) == 2.5
    replica.close()
    assert replica._nccl is None


@pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py")
def test_emulated_nccl_refuses_what_nccl_refuses(monkeypatch):
    """The stand-in is no looser than NCCL: device pointers only, within their allocation."""
    from support import use_emulator
    fake = use_emulator(monkeypatch)
    from cupy.cuda import nccl
    comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
    x = fake.arange(6, dtype=np.float64)
    stream = fake.cuda.get_current_stream().ptr
    comm.allReduce(x.data.ptr, x.data.ptr, 6, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, stream)
    np.testing.assert_array_equal(x.get(), np.arange(6.0))       # one rank: the sum is x
    host = np.arange(6.0)
    with pytest.raises(ValueError, match="not device memory"):
        comm.allReduce(host.ctypes.data, host.ctypes.data, 6, nccl.NCCL_FLOAT64,
                       nccl.NCCL_SUM, stream)
    with pytest.raises(ValueError, match="run past the end"):
        comm.allReduce(x.data.ptr, x.data.ptr, 7, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, stream)
    with pytest.raises(ValueError, match="allocation, the datatype says float32"):
        comm.allReduce(x.data.ptr, x.data.ptr, 6, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, stream)
    with pytest.raises(TypeError, match="commId"):
        nccl.NcclCommunicator(1, (1, 2), 0)
    with pytest.raises(nccl.NcclError, match="ndev 2"):
        nccl.NcclCommunicator(2, nccl.get_unique_id(), 0)
    comm.destroy()


@needs_mpi
def test_resume_equals_uninterrupted(tmp_path):
    """A distributed fit stopped after 2 epochs and resumed (rank 0 reads the checkpoint and
    broadcasts it) by a new network ends where one process's uninterrupted fit ends."""
    cases = [{"sizes": [5, 8, 3], "n": 37, "batch_size": 10, "optimizer": "adam",
              "dropout": 0.3, "epochs": 4, "resume_at": 2, "skew_init": True,
              "checkpoint": str(tmp_path / "state.npz")},
             {"sizes": [5, 8, 3], "n": 37, "batch_size": 10, "optimizer": "momentum",
              "shard": True, "epochs": 3, "resume_at": 1, "checkpoint": str(tmp_path / "s2.npz")}]
    check(run_cases(3, cases, tmp_path), cases)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["s2.npz", "state.npz"]


def batch_norm_cases(backend: str) -> list[dict]:
    base = {"sizes": [5, 8, 8, 3], "n": 37, "batch_size": 10, "backend": backend,
            "batch_norm": True, "skew_init": True}
    return [
        {**base, "optimizer": "sgd"},
        {**base, "optimizer": "adam", "dropout": 0.2, "residual": True},
        {**base, "optimizer": "momentum", "shard": True},
        # a last batch of 1 row: ranks without a row of it still take part in every sum
        {**base, "n": 31, "optimizer": "rmsprop", "residual": True, "dropout": 0.25,
         "activation": "relu"},
        {**base, "shard": True, "n": 29, "batch_size": 7, "optimizer": "adamw",
         "clip_norm": 0.5, "residual": True},
    ]


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_same_trajectory_batch_norm(ranks, tmp_path):
    """Batch statistics synchronised across ranks: the global batch's mean and variance
    forward, its sums backward, the running averages with its B / (B - 1); with residual
    connections, dropout, shard and ranks without a row of the last batch: the parameters,
    γ, β, running averages and losses of one process."""
    cases = batch_norm_cases("numpy")
    check(run_cases(ranks, cases, tmp_path), cases)


@needs_mpi
def test_same_trajectory_batch_norm_numba(tmp_path):
    pytest.importorskip("numba")
    cases = [c for c in batch_norm_cases("numba") if c.get("residual")]
    check(run_cases(3, cases, tmp_path), cases)


@needs_mpi
def test_same_trajectory_batch_norm_cupy_emulated_nccl(tmp_path):
    """The batch sums Allreduced on the device by the emulator's NCCL, between the steps'
    kernels; the result is one process's (graph path) trajectory."""
    from support import fake_cupy
    if fake_cupy().compiler() is None:
        pytest.skip("g++, which the CUDA emulator needs, is absent")
    cases = [{**c, "epochs": 2} for c in batch_norm_cases("cupy")[1::2]]
    check(run_cases(3, cases, tmp_path, "--emulate-cuda"), cases)


def sample_weight_cases(backend: str) -> list[dict]:
    base = {"sizes": [5, 8, 3], "n": 37, "batch_size": 10, "sample_weight": True,
            "backend": backend, "skew_init": True}
    return [
        {**base, "optimizer": "sgd"},
        {**base, "optimizer": "adam", "clip_norm": 0.3},
        {**base, "optimizer": "sgd", "shard": True},
        # in stored order: batch 2 weighs nothing at all, and in batch 1 the rows of rank 0
        # (2 ranks: rows 0-4; 3 ranks: 0-2) weigh nothing while the others' do
        {**base, "optimizer": "adam", "shuffle": False, "zero_weight": [[0, 5], [10, 20]]},
        {**base, "optimizer": "momentum", "shuffle": False, "zero_weight": [[0, 5], [10, 20]],
         "clip_value": 0.02, "warmup_steps": 6, "learning_rate": 0.3},
        # shard: rank 0's own rows (the first 4 with 3 ranks, 9 with 2) all weigh nothing
        {**base, "optimizer": "rmsprop", "shard": True, "zero_weight": [[0, 4]],
         "dropout": 0.2},
        {**base, "optimizer": "adamw", "shard": True, "clip_value": 0.05, "clip_norm": 0.5,
         "warmup_steps": 4},
        # with batch normalization (whose statistics ignore the weights, as in one process)
        {**base, "sizes": [5, 6, 6, 3], "optimizer": "adam", "batch_norm": True,
         "residual": True, "zero_weight": [[3, 12]], "n": 31},
        # a last global batch of 1 row, which batch normalization leaves out (shuffled: a
        # different row each epoch; stored order: the last row), with shard and weights
        {**base, "sizes": [5, 6, 3], "optimizer": "adam", "batch_norm": True, "n": 31,
         "shard": True},
        {**base, "sizes": [5, 6, 3], "optimizer": "sgd", "batch_norm": True, "n": 31,
         "shard": True, "shuffle": False},
    ]


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_same_trajectory_sample_weight(ranks, tmp_path):
    """Sample weights: each rank's output delta normalised by the global batch's weight sum
    (its rows' share of it), the loss by the data set's; with shard, batches and ranks
    whose rows all weigh nothing, clipping by value and the warm-up: one process's fit
    with the same weights."""
    cases = sample_weight_cases("numpy")
    check(run_cases(ranks, cases, tmp_path), cases)


@needs_mpi
def test_same_trajectory_sample_weight_numba_cupy(tmp_path):
    """The same on numba (whose one-process fit runs its fused epoch) and the cupy emulator
    (the graph path in one process, NCCL when distributed)."""
    pytest.importorskip("numba")
    from support import fake_cupy
    picked = sample_weight_cases("numba")[3:7:2]
    if fake_cupy().compiler() is not None:
        picked += [{**c, "backend": "cupy", "epochs": 2} for c in picked]
    check(run_cases(3, picked, tmp_path, "--emulate-cuda"), picked)


@needs_mpi
def test_validation_split_and_diagnostics(tmp_path):
    """validation_split (taken off before the replica is made: the same held-out rows on
    every rank) logs one process's val_loss; diagnostics=True diagnoses each rank's probe
    without a collective (no deadlock), and rank 0 alone warns."""
    base = {"sizes": [5, 8, 3], "n": 40, "batch_size": 10, "skew_init": True}
    cases = [{**base, "optimizer": "adam", "validation_split": 0.25, "sample_weight": True},
             {**base, "optimizer": "sgd", "validation_split": 0.3, "batch_norm": True,
              "sizes": [5, 8, 8, 3], "dropout": 0.2},
             {**base, "sizes": [5] + [8] * 10 + [3], "activation": "sigmoid",
              "learning_rate": 0.1, "diagnostics": True}]
    results = run_cases(3, cases, tmp_path)
    check(results, cases)
    for case, r in zip(cases[:2], results):
        assert len(r["val_loss"]) == r["epochs"], case
        np.testing.assert_allclose(r["val_loss"], r["ref_val_loss"], rtol=TOLERANCE)
    diagnosed = results[2]
    assert diagnosed["diagnostics"] == diagnosed["epochs"]
    assert diagnosed["warnings"][0] == 1 and diagnosed["warnings"][1:] == [0, 0], diagnosed


SCRIPT = """
import sys, time
import numpy as np
from mpi4py import MPI
from backprop import Network
from backprop.distributed import Communicator
rank = MPI.COMM_WORLD.Get_rank()
mode = sys.argv[1]
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
net = Network([4, 6, 3], ["tanh", "softmax"], "cross_entropy", seed=1, backend="numpy")
kw = dict(epochs=3, batch_size=8, learning_rate=0.1, distributed=True)
if mode == "bad_data" and rank == 1:
    X = X[:, :3]                                  # the wrong number of features on rank 1
if mode == "other_data" and rank == 2:
    X = X[::-1]                                   # the rows in another order, without shard
if mode == "stall":
    def stall(epoch, logs):
        if rank == 1:
            time.sleep(60)
    kw.update(callbacks=[stall], comm=Communicator(timeout=1.5))
if mode == "verbose":
    kw.update(verbose=True)
if mode == "learning_rate" and rank == 1:         # settings that differ on one rank
    kw.update(learning_rate=0.2)
if mode == "checkpoint" and rank == 0:            # a checkpoint passed on rank 0 alone
    kw.update(checkpoint=sys.argv[2] + "/state.npz")
if mode == "validation":                          # rank 2 validates on other data
    kw.update(validation_data=(X[:10] * (2 if rank == 2 else 1), Y[:10]))
if mode == "exit":                                # sys.exit(3) in a callback on rank 1
    kw.update(callbacks=[lambda epoch, logs: rank == 1 and epoch == 1 and sys.exit(3)])
if mode == "split":                               # ranks 0, 1 train together, rank 2 alone
    kw.update(comm=MPI.COMM_WORLD.Split(0 if rank < 2 else 1, rank), seed=3)
    X = X * (2 if rank == 2 else 1)               # its own data: one world would refuse it
net.fit(X, Y, **kw)
if mode == "split":
    one = Network([4, 6, 3], ["tanh", "softmax"], "cross_entropy", seed=1, backend="numpy")
    one.fit(X, Y, epochs=3, batch_size=8, learning_rate=0.1, seed=3)
    with open(f"{sys.argv[2]}/difference{rank}", "w") as f:   # not stdout: ranks interleave
        f.write(repr(max(float(abs(a - b).max()) for pair, other in
                         zip(net.get_parameters(), one.get_parameters())
                         for a, b in zip(pair, other))))
if mode != "verbose":                             # its stdout is rank 0's epoch lines alone
    print("finished", rank, flush=True)
"""


@needs_mpi
@pytest.mark.parametrize("mode", ["bad_data", "stall", "other_data"])
def test_failing_rank_ends_the_job(mode, tmp_path):
    """A rank that raises (bad data on rank 1) or stalls (a collective past its timeout)
    ends every process within seconds, non-zero, with the failing rank's message."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    start = time.monotonic()
    done = launch(3 if mode == "other_data" else 2, [str(script), mode], timeout=60)
    seconds = time.monotonic() - start
    assert done.returncode != 0
    assert "finished" not in done.stdout
    assert seconds < 30, seconds
    if mode == "bad_data":
        assert "rank 1 of 2 raised" in done.stderr
        assert "ValueError: X: expected 4 features per sample" in done.stderr, done.stderr
    elif mode == "other_data":
        assert "rank 2 of 3 raised" in done.stderr
        assert "every rank must be given the same data set, but rank 2's checksums" in done.stderr
    else:
        assert "rank 0 of 2" in done.stderr and "timeout of 1.5 s" in done.stderr, done.stderr
        assert "TimeoutError" in done.stderr


@needs_mpi
@pytest.mark.parametrize("mode, ranks, message", [
    ("learning_rate", 2, "ValueError: learning_rate: every rank of a distributed fit must pass "
                         "the same arguments and network, but they differ (rank 0: 0.1; "
                         "rank 1: 0.2)"),
    ("checkpoint", 2, "ValueError: checkpoint: every rank of a distributed fit must pass the "
                      "same arguments and network, but they differ (rank 0: True; rank 1: "
                      "False)"),
    ("validation", 3, "ValueError: validation_data: every rank of a distributed fit must pass "
                      "the same arguments and network, but they differ (ranks 0, 1: ")])
def test_settings_differ_between_ranks(mode, ranks, message, tmp_path):
    """A setting that differs between ranks (a learning rate, a checkpoint given on rank 0
    alone, other validation data) is found before any other collective: every rank raises
    the same ValueError naming it and the ranks' values, within seconds (no timeout)."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    start = time.monotonic()
    done = launch(ranks, [str(script), mode, str(tmp_path)], timeout=60)
    assert done.returncode != 0
    assert time.monotonic() - start < 30
    assert message in done.stderr, done.stderr
    assert "TimeoutError" not in done.stderr and "finished" not in done.stdout
    assert not (tmp_path / "state.npz").exists()


@needs_mpi
def test_system_exit_code_ends_the_job(tmp_path):
    """sys.exit(3) in a callback on rank 1 ends the job promptly with status 3."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    start = time.monotonic()
    done = launch(2, [str(script), "exit"], timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode == 3, (done.returncode, done.stderr)
    assert "rank 1 of 2 raised" in done.stderr and "SystemExit: 3" in done.stderr


@needs_mpi
def test_stop_on_one_rank_and_empty_parts(tmp_path):
    """A callback that asks to stop on rank 1 alone stops every rank after that epoch (one
    process's history and parameters, no timeout); with shard a rank's part may be empty
    (parts of 0, 20 and 33 rows; with sample weights too)."""
    base = {"sizes": [5, 8, 3], "batch_size": 10, "skew_init": True, "epochs": 3}
    cases = [{**base, "n": 37, "optimizer": "adam", "epochs": 5, "stop_on": [1, 1]},
             {**base, "n": 37, "optimizer": "sgd", "shard": True, "stop_on": [2, 0]},
             {**base, "n": 53, "optimizer": "adam", "shard": True, "parts": [0, 20, 33],
              "dropout": 0.2, "diagnostics": True},
             {**base, "n": 53, "optimizer": "momentum", "shard": True, "parts": [20, 0, 33],
              "sample_weight": True, "batch_norm": True, "sizes": [5, 6, 6, 3]}]
    # a rank left in a collective would fail the launch after 30 s
    results = run_cases(3, cases, tmp_path, env={"BACKPROP_DISTRIBUTED_TIMEOUT": "30"})
    check(results, cases)
    assert results[0]["epochs_run"] == [[2, True]] * 3
    assert results[1]["epochs_run"] == [[1, True]] * 3
    assert results[2]["diagnostics"] == 3      # rank 0, no rows, no probe: None per epoch


@needs_mpi
def test_all_rows_on_rank_zero(tmp_path):
    """4 ranks, every row on rank 0 (the others' parts empty): one process's fit."""
    cases = [{"sizes": [5, 8, 3], "n": 29, "batch_size": 8, "epochs": 2, "optimizer": "adam",
              "shard": True, "parts": [29, 0, 0, 0], "dropout": 0.2}]
    check(run_cases(4, cases, tmp_path), cases)


@needs_mpi
def test_only_rank_zero_prints(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    done = launch(3, [str(script), "verbose"], timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"], lines


@needs_mpi
def test_comm_names_the_ranks(tmp_path):
    """comm= a communicator split from COMM_WORLD: ranks 0 and 1 train one network over it,
    rank 2 alone over its own; each ends as one process's fit (float32 rounding)."""
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    done = launch(3, [str(script), "split", str(tmp_path)], timeout=60)
    assert done.returncode == 0, done.stderr
    differences = [float((tmp_path / f"difference{rank}").read_text()) for rank in range(3)]
    assert max(differences) < 1e-5, differences


# ---------------------------------------------------------------- in one process

def test_arguments_checked_before_work():
    net = Network([3, 2], "sigmoid", "mse", seed=0)
    before = net.get_parameters()
    X, Y = np.zeros((4, 3)), np.zeros((4, 2))
    kw = dict(epochs=1, batch_size=2, learning_rate=0.1)
    with pytest.raises(ValueError, match="comm: only with distributed=True"):
        net.fit(X, Y, comm=object(), **kw)
    with pytest.raises(ValueError, match="shard: only with distributed=True"):
        net.fit(X, Y, shard=True, **kw)
    with pytest.raises(TypeError, match="distributed: expected True or False"):
        net.fit(X, Y, distributed="yes", **kw)
    with pytest.raises(TypeError, match="shard: expected True or False"):
        net.fit(X, Y, distributed=True, shard=1, **kw)
    if HAVE_MPI4PY:
        with pytest.raises(TypeError, match="comm: expected an mpi4py communicator"):
            net.fit(X, Y, distributed=True, comm=5, **kw)
        from backprop.distributed import Communicator
        with pytest.raises(ValueError, match="timeout: expected a positive number"):
            Communicator(timeout=0)
    for (W0, b0), (W1, b1) in zip(before, net.get_parameters()):
        assert np.array_equal(W0, W1) and np.array_equal(b0, b1)


@pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py")
def test_one_rank_equals_plain_fit(backend):
    """distributed=True on a one-rank communicator is the plain fit (the cupy emulator
    included: no NCCL with one rank)."""
    from mpi4py import MPI
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(23, 4)), rng.integers(0, 3, 23)

    def run(**kw):
        net = make_network(backend, [4, 7, 3], ["relu", "softmax"], "cross_entropy",
                           dtype="float64", seed=2, dropout=0.2)
        net.fit(X, Y, epochs=2, batch_size=5, learning_rate=0.1, optimizer="adam", seed=4,
                clip_norm=1.0, **kw)
        return np.concatenate([p.ravel() for pair in net.get_parameters() for p in pair])

    np.testing.assert_allclose(run(distributed=True, comm=MPI.COMM_SELF), run(),
                               rtol=0, atol=1e-14)


def test_rank_without_a_job():
    from backprop.distributed import rank
    assert rank() == 0                 # one process: rank 0 of COMM_WORLD, or no mpi4py at all
    if HAVE_MPI4PY:
        from mpi4py import MPI
        assert rank(MPI.COMM_SELF) == 0


def test_batch_slice_partitions():
    from backprop.distributed import batch_slice
    for rows in range(0, 12):
        for size in (1, 2, 3, 5):
            parts = [batch_slice(rows, size, r) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(h - l for l, h in parts) - min(h - l for l, h in parts) <= 1


def test_gradients_are_views_of_one_buffer(backend):
    """dW, db of every layer are consecutive views into flat_gradient(): one Allreduce
    buffer, no packing copy."""
    net = make_network(backend, [4, 5, 2], ["tanh", "identity"], "mse")
    flat = net.flat_gradient()
    assert tuple(flat.shape) == (net.n_parameters,)

    def address(a):
        return (a.__cuda_array_interface__ if hasattr(a, "__cuda_array_interface__")
                else a.__array_interface__)["data"][0]
    offset = 0
    for dW, db in net.gradients():
        for g, p in zip((dW, db), (net.W, net.b)):
            assert address(g) == address(flat) + offset * flat.itemsize
            offset += g.size
    assert offset == net.n_parameters


@pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py")
def test_timeout_default_and_deadline(monkeypatch):
    """The timeout: the environment's, else 300 s; a wait past it raises TimeoutError naming
    the collective, the rank and how to change it."""
    from mpi4py import MPI

    from backprop.distributed import DEFAULT_TIMEOUT, TIMEOUT_ENV, Communicator
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert Communicator(MPI.COMM_SELF).timeout == DEFAULT_TIMEOUT == 300
    monkeypatch.setenv(TIMEOUT_ENV, "0.2")
    comm = Communicator(MPI.COMM_SELF)
    assert comm.timeout == 0.2
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"rank 0 of 1: the test's wait did not complete "
                       r"within the timeout of 0.2 s.*BACKPROP_DISTRIBUTED_TIMEOUT"):
        comm.poll(lambda: False, "the test's wait")
    assert 0.2 <= time.monotonic() - start < 5
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="BACKPROP_DISTRIBUTED_TIMEOUT: expected a number"):
        Communicator(MPI.COMM_SELF)
    assert Communicator(MPI.COMM_SELF, timeout=7).timeout == 7.0


def test_settings_description():
    """What the ranks compare: every setting fit's behaviour depends on, the same in every
    process (a schedule or function described without its address), the validation data
    by its shape and checksums."""
    from backprop import StepDecay
    from backprop.distributed import _callable_description, describe
    from backprop.optimizers import get
    net = Network([3, 4, 2], ["relu", "identity"], "mse", seed=0, dtype="float64",
                  dropout=0.1)
    val = net._prepare(np.ones((5, 3)), np.zeros((5, 2))) + (None,)
    d = describe(net, get("adam"), val, epochs=3, lr_schedule=StepDecay(0.5, 2), shard=False)
    assert d["layer_sizes"] == [3, 4, 2] and d["dropout"] == [0.1]
    assert d["activations"][0][0] == "relu" and d["dtype"] == "float64"
    assert d["backend"] == net.backend.name and d["optimizer"][0] == "adam"
    assert d["validation_data"][0] == ((5, 3), (15.0, 45.0)) and d["validation_data"][2] is None
    assert d["lr_schedule"] == "backprop.training.StepDecay(every=2, factor=0.5)"
    assert " at 0x" not in _callable_description(test_settings_description)
    assert _callable_description(lambda e, lr: lr).endswith("<lambda>")
    other = describe(net, get("sgd"), None)
    assert other["optimizer"][0] == "sgd" and other["validation_data"] is None


@pytest.mark.skipif(not HAVE_MPI4PY, reason="needs mpi4py")
def test_sharded_weights_and_split_checked_before_work():
    """With shard, a rank's own weights may all be 0 (the sum over the ranks is checked),
    and validation_split is refused (each rank would log its own val_loss)."""
    from mpi4py import MPI
    net = Network([3, 2], "sigmoid", "mse", seed=0, dtype="float64")
    before = net.get_parameters()
    X, Y = np.ones((4, 3)), np.zeros((4, 2))
    kw = dict(epochs=1, batch_size=2, learning_rate=0.1, distributed=True,
              comm=MPI.COMM_SELF, shard=True)
    with pytest.raises(ValueError, match="every weight of every rank's part is 0"):
        net.fit(X, Y, sample_weight=np.zeros(4), **kw)
    with pytest.raises(ValueError, match="validation_split: not with shard=True"):
        net.fit(X, Y, validation_split=0.25, **kw)
    with pytest.raises(ValueError, match="sample_weight: every weight is 0"):   # no shard
        net.fit(X, Y, sample_weight=np.zeros(4), **{**kw, "shard": False})
    # an empty part: its feature count still checked, the global size must be >= 1
    with pytest.raises(ValueError, match="X: expected 3 features per sample"):
        net.fit(np.ones((0, 4)), np.zeros((0, 2)), **kw)
    with pytest.raises(ValueError, match=r"the ranks' parts hold \[0\] rows; the data set "
                       "needs at least one sample"):
        net.fit(np.ones((0, 3)), np.zeros((0, 2)), **kw)
    with pytest.raises(ValueError, match="X: expected at least one sample"):   # no shard
        net.fit(np.ones((0, 3)), np.zeros((0, 2)), **{**kw, "shard": False})
    for (W0, b0), (W1, b1) in zip(before, net.get_parameters()):
        assert np.array_equal(W0, W1) and np.array_equal(b0, b1)


@needs_mpi
def test_command_line_train_distributed(tmp_path):
    """`mpiexec -n 2 python -m backprop train ... --distributed`: rank 0 alone prints and writes
    the model, whose parameters are those of the same command run in one process."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(45, 3))
    labels = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    data = tmp_path / "data.csv"
    rows = ("".join(f"{float(v)!r}," for v in x) + f"{y}\n" for x, y in zip(X, labels))
    data.write_text("a,b,c,label\n" + "".join(rows))
    command = ["-m", "backprop", "train", str(data), "--target", "label", "--layers", "5",
               "--epochs", "3", "--batch-size", "8", "--dtype", "float64", "--backend", "numpy"]
    done = launch(2, [*command, "--out", str(tmp_path / "two.bp"), "--distributed"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("trained Network") == 1 and "saved to" in done.stdout
    one = subprocess.run([sys.executable, *command, "--out", str(tmp_path / "one.bp")],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    two, single = (Network.load(tmp_path / name).get_parameters() for name in ("two.bp", "one.bp"))
    for (W2, b2), (W1, b1) in zip(two, single):
        np.testing.assert_allclose(W2, W1, rtol=TOLERANCE, atol=1e-12)
        np.testing.assert_allclose(b2, b1, rtol=TOLERANCE, atol=1e-12)
