"""Checkpoints, resume after SIGKILL, and Ctrl-C: training stops only at step boundaries and
a rerun of the same call ends bit-identical to an uninterrupted fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from support import make_network
from test_state import TIMES, assert_same_state

import backprop
from backprop import state as bstate

ROOT = Path(__file__).resolve().parents[1]


def problem(n=203, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, (X[:, 0] + X[:, 1] ** 2 > 1).astype(np.int64) + (X[:, 2] > 0.5)


FIT = dict(epochs=6, batch_size=16, learning_rate=0.02, optimizer="adam", seed=7, l2=1e-4,
           lr_schedule=backprop.StepDecay(0.5, every=2))


def network(backend, dropout=0.0):
    return make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0,
                        dropout=dropout)


# ---------------------------------------------------------------------- in-process resume

@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_resumed_fit_equals_the_uninterrupted_one(backend, tmp_path, dropout):
    X, y = problem()
    whole = network(backend, dropout)
    whole.fit(X, y, validation_data=(X[:50], y[:50]), **FIT)
    path = tmp_path / "ckpt"
    first = network(backend, dropout)
    first.fit(X, y, validation_data=(X[:50], y[:50]), checkpoint=path, **{**FIT, "epochs": 4})
    assert bstate.read(path).header["training"]["epochs"] == 4
    resumed = network(backend, dropout)           # a fresh process would start like this
    history = resumed.fit(X, y, validation_data=(X[:50], y[:50]), checkpoint=path, **FIT)
    assert history.epochs == 6 and resumed.optimizer_.t == 6 * 13
    assert_same_state(bstate.capture(resumed), bstate.capture(whole), skip=TIMES)
    assert_same_state(bstate.read(path), bstate.capture(whole), skip=TIMES)
    # the same call once more: the run is complete, nothing trains, and fit says so
    again = network(backend, dropout)
    with pytest.warns(UserWarning, match="finished its 6 epochs; nothing left to train"):
        history = again.fit(X, y, validation_data=(X[:50], y[:50]), checkpoint=path, **FIT)
    assert history.epochs == 6
    assert_same_state(bstate.capture(again), bstate.capture(whole), skip=TIMES)


def test_checkpoint_refuses_another_network_and_bad_files(tmp_path):
    X, y = problem()
    path = tmp_path / "ckpt"
    network("numpy").fit(X, y, checkpoint=path, **{**FIT, "epochs": 1})
    before = path.read_bytes()
    other = make_network("numpy", [6, 7, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    params = other.get_parameters()
    with pytest.raises(ValueError, match="checkpoint: .* another architecture"):
        other.fit(X, y, checkpoint=path, **FIT)
    with pytest.raises(ValueError, match="checkpoint: .* trained with adam"):
        network("numpy").fit(X, y, checkpoint=path, **{**FIT, "optimizer": "sgd"})
    with pytest.raises(ValueError, match="checkpoint: .* logged"):
        network("numpy").fit(X, y, checkpoint=path, validation_data=(X, y), **FIT)
    assert path.read_bytes() == before and other.history_ is None
    assert all(np.array_equal(W, W0) for (W, _), (W0, _) in zip(other.get_parameters(), params))
    path.write_bytes(before[:100])
    with pytest.raises(ValueError, match="checkpoint: .* not a backprop state file"):
        network("numpy").fit(X, y, checkpoint=path, **FIT)
    with pytest.raises(ValueError, match="checkpoint: the folder"):
        network("numpy").fit(X, y, checkpoint=tmp_path / "no" / "ckpt", **FIT)
    with pytest.raises(TypeError, match="checkpoint"):
        network("numpy").fit(X, y, checkpoint=3.5, **FIT)


# ---------------------------------------------------------------------- SIGKILL, a real process

CHILD = r"""
import os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import backprop, backprop.training as training
from test_resume import FIT, network, problem

backend, dropout, path, kill_step, kill_write = sys.argv[2], float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
steps = 0
run_epoch = training.run_epoch

def counting_run_epoch(*args, between_steps=None, **kw):
    global steps
    def step():                     # the Python loop: killed mid-epoch, between two steps
        global steps
        steps += 1
        if steps == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        between_steps()
    before = steps
    total = run_epoch(*args, between_steps=step, **kw)
    if steps == before:             # a compiled epoch: killed before its checkpoint is written
        steps += -(-args[1].shape[0] // args[4])
        if steps >= kill_step > 0:
            os.kill(os.getpid(), signal.SIGKILL)
    return total

replace = os.replace
def killing_replace(src, dst):      # killed inside the checkpoint's write, before the rename
    global kill_write
    kill_write -= 1
    if kill_write == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

training.run_epoch = counting_run_epoch
os.replace = killing_replace
X, y = problem()
network(backend, dropout).fit(X, y, validation_data=(X[:50], y[:50]), checkpoint=path, **FIT)
"""


def run_child(backend, dropout, path, kill_step=0, kill_write=0):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "tests"), backend,
                           str(dropout), str(path), str(kill_step), str(kill_write)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("backend,dropout,kill_step,kill_write", [
    ("numpy", 0.3, 45, 0),          # mid-epoch 3 (13 steps an epoch)
    ("numpy", 0.0, 0, 3),           # during the third checkpoint's write
    ("numba", 0.0, 40, 0),          # the fused epoch: after its compiled call, before the write
    ("numba", 0.3, 30, 0),          # dropout: the per-step path, mid-epoch 2
])
def test_a_fit_killed_with_sigkill_resumes_bit_identical(tmp_path, backend, dropout, kill_step,
                                                         kill_write):
    from support import unavailable
    if unavailable(backend):
        pytest.skip(unavailable(backend))
    reference = run_child(backend, dropout, tmp_path / "whole")
    assert reference.returncode == 0, reference.stderr
    path = tmp_path / "ckpt"
    killed = run_child(backend, dropout, path, kill_step, kill_write)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = bstate.read(path).header["training"]["epochs"]
    assert 0 < done < FIT["epochs"]
    resumed = run_child(backend, dropout, path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(bstate.read(path), bstate.read(tmp_path / "whole"), skip=TIMES)
    left = sorted(set(os.listdir(tmp_path)) - {"ckpt", "whole"})
    assert len(left) == (1 if kill_write else 0) and all(n.endswith(".tmp") for n in left)


# ---------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_inside_a_step_stops_at_its_end(backend, monkeypatch):
    """SIGINT raised between two layers' updates: the step finishes, every parameter and
    optimizer.t agree with the uninterrupted run after that many steps."""
    X, y = problem()
    kw = dict(FIT, clip_norm=5.0)          # the per-step path on numba (no fused epoch)...
    n_params, k = 4, 20                    # W1, b1, W2, b2; interrupt step 20 (epoch 1)

    def per_step(net):                     # ...and on cupy (no graph replays)
        if hasattr(net.backend, "graphs"):
            monkeypatch.setattr(net.backend, "graphs", False)
        return net

    reference = per_step(network(backend))
    taken = []
    step = reference.train_step

    def recording_step(*a, **kws):
        step(*a, **kws)
        if reference.optimizer_.t == k:
            taken.append(bstate.capture(reference))
    monkeypatch.setattr(reference, "train_step", recording_step)
    reference.fit(X, y, **kw)

    net = per_step(network(backend))
    be = net.backend
    calls = []
    update = be.update

    def interrupting_update(*a, **kws):
        calls.append(1)
        if len(calls) == (k - 1) * n_params + 2:       # after W1 and b1 of step k
            signal.raise_signal(signal.SIGINT)
        update(*a, **kws)
    monkeypatch.setattr(be, "update", interrupting_update)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, **kw)
    monkeypatch.undo()
    assert net.optimizer_.t == k and len(calls) == k * n_params
    assert net.history_.epochs == 1 and len(net.history_["loss"]) == 1
    ours, theirs = bstate.capture(net), taken[0]
    for name in bstate.parameter_names(2):
        assert np.array_equal(ours.arrays[name], theirs.arrays[name]), name
        for buffer in ("m", "v"):
            key = f"optimizer.{buffer}.{name}"
            assert np.array_equal(ours.arrays[key], theirs.arrays[key]), key
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_from_another_thread_during_compiled_epochs(backend):
    """A timer thread's SIGINT (as a terminal's Ctrl-C) lands anywhere, compiled epochs
    (numba's fused one) included: training stops at an epoch or step boundary, history and
    optimizer.t agree with the parameters."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 16))
    y = rng.integers(0, 4, 4000)
    kw = dict(batch_size=32, learning_rate=0.01, optimizer="adam", seed=0)
    net = make_network(backend, [16, 32, 4], ["relu", "softmax"], "cross_entropy", seed=0)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))

    class StartTimer(backprop.Callback):
        def on_train_begin(self, network):
            timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            net.fit(X, y, epochs=400, callbacks=[StartTimer()], **kw)
    finally:
        timer.cancel()
    done, t = net.history_.epochs, net.optimizer_.t
    assert done >= 0 and done * 125 <= t < (done + 1) * 125
    twin = make_network(backend, [16, 32, 4], ["relu", "softmax"], "cross_entropy", seed=0)
    if t == done * 125:                      # stopped at an epoch's end: replay as many
        if done:
            twin.fit(X, y, epochs=done, **kw)
            for (W, b), (W1, b1) in zip(net.get_parameters(), twin.get_parameters()):
                assert np.array_equal(W, W1) and np.array_equal(b, b1)
            assert twin.history_["loss"] == net.history_["loss"]


def test_ctrl_c_runs_the_users_handler_at_a_step_boundary_and_restores_it():
    X, y = problem()
    seen = []

    def handler(signum, frame):
        seen.append(signum)                  # the user's handler chooses not to raise

    previous = signal.signal(signal.SIGINT, handler)
    try:
        net = network("numpy")
        net.fit(X, y, callbacks=[lambda e, logs: e == 1 and signal.raise_signal(signal.SIGINT)],
                **FIT)
        assert seen == [signal.SIGINT] and net.history_.epochs == FIT["epochs"]
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_keeps_the_completed_epochs_and_calls_on_train_end(backend):
    X, y = problem()
    ends = []

    class Probe(backprop.Callback):
        def on_epoch_end(self, epoch, logs, network):
            if epoch == 2:
                signal.raise_signal(signal.SIGINT)

        def on_train_end(self, network, history):
            ends.append(history.epochs)

    net = network(backend)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, callbacks=[Probe()], **FIT)
    assert net.history_.epochs == 3 and ends == [3] and net.optimizer_.t == 3 * 13
    twin = network(backend)
    twin.fit(X, y, **{**FIT, "epochs": 3})
    assert twin.history_["loss"] == net.history_["loss"]


def test_fit_in_a_thread_installs_no_handler():
    X, y = problem()
    errors = []

    def work():
        try:
            network("numpy").fit(X, y, **FIT)
        except BaseException as e:           # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors and signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------------- the CuPy backend, emulated

def test_cuda_state_and_resume_on_the_emulator(tmp_path, monkeypatch):
    """The CuPy backend (on the CPU emulator of tests/emulator): dropout's device generator
    [key, draws] is saved and restored, so a resumed fit (graphs with dropout) is bit-identical;
    save/load and pickling carry the state."""
    import pickle

    from support import fake_cupy, use_emulator
    if fake_cupy().compiler() is None:
        pytest.skip("g++ is needed to build the CUDA emulator")
    use_emulator(monkeypatch)
    X, y = problem(n=100)

    def net():
        return backprop.Network([6, 12, 3], ["tanh", "softmax"], "cross_entropy",
                                device="cuda", seed=0, dropout=0.3)
    kw = dict(FIT, epochs=3, batch_size=32)
    whole = net()
    whole.fit(X, y, **kw)
    path = tmp_path / "ckpt"
    net().fit(X, y, checkpoint=path, **{**kw, "epochs": 2})
    state = bstate.read(path)
    assert state.header["generators"]["dropout"]["bit_generator"] == "backprop.cuda.counter"
    assert state.header["generators"]["dropout"]["draws"] > 0
    resumed = net()
    resumed.fit(X, y, checkpoint=path, **kw)
    assert_same_state(bstate.capture(resumed), bstate.capture(whole), skip=TIMES)
    twin = pickle.loads(pickle.dumps(whole))
    assert twin.device == "cuda:0"
    assert_same_state(bstate.capture(twin), bstate.capture(whole))
    whole.save(tmp_path / "m")
    cpu = backprop.load(tmp_path / "m", device="cpu", backend="numpy")
    for (W, b), (W1, b1) in zip(cpu.get_parameters(), whole.get_parameters()):
        assert np.array_equal(W, W1) and np.array_equal(b, b1)
    assert cpu.optimizer_.t == whole.optimizer_.t
