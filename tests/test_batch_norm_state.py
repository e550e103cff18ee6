"""Batch normalization's state travels with the network: save/load, pickle, checkpoints and
resume, the rollback Snapshot and ``to(device)`` carry γ, β, the running statistics and their
optimizer buffers bit for bit; files of format version 1 (before batch normalization) load."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from support import DEVICE, assert_same_state, make_network
from test_state import rewrite

import backprop
from backprop import state as bstate
from backprop import to_numpy


def data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, n)


def trained(backend, optimizer="adam", epochs=2, **kw):
    net = make_network(backend, [4, 6, 6, 3], ["relu", "tanh", "softmax"], "cross_entropy",
                       seed=0, dtype="float64", batch_norm=[True, True], residual=True,
                       dropout=0.2)
    X, y = data()
    net.fit(X, y, epochs=epochs, batch_size=8, learning_rate=0.05, optimizer=optimizer, seed=1,
            **kw)
    return net


def same_network(a, b):
    timing = ("history.time", "history.samples_per_second")     # wall-clock: never equal
    arrays = [{k: v for k, v in bstate.capture(n).arrays.items() if k not in timing}
              for n in (a, b)]
    assert_same_state(*arrays, "state")
    X, _ = data(seed=3)
    assert np.array_equal(a.predict(X), b.predict(X))


def test_save_load_is_bit_exact(backend, tmp_path):
    net = trained(backend)
    state = bstate.capture(net)
    for name in ("gamma1", "beta2", "running_mean1", "running_var2", "optimizer.m.gamma1",
                 "optimizer.v.beta2"):
        assert name in state.arrays, name
    assert state.arrays["running_var1"].std() > 0 and state.header["architecture"][
        "batch_norm"] == [True, True]
    assert state.header["architecture"]["residual"] == [False, True]
    net.save(tmp_path / "m")
    loaded = backprop.load(tmp_path / "m", device=DEVICE[backend], backend=backend)
    assert loaded.batch_norm == net.batch_norm and loaded.residual == net.residual
    same_network(loaded, net)
    for a, b in zip(loaded.get_batch_norm(), net.get_batch_norm()):
        for key in ("gamma", "beta", "running_mean", "running_var"):
            assert np.array_equal(a[key], b[key])
    # both train on identically (optimizer buffers of γ, β included)
    X, y = data(seed=4)
    for n in (net, loaded):
        n.fit(X, y, epochs=2, batch_size=8, learning_rate=0.05, optimizer=n.optimizer_, seed=2)
    same_network(loaded, net)


def test_pickle_round_trip(backend):
    net = trained(backend, "momentum")
    same_network(pickle.loads(pickle.dumps(net)), net)


def test_a_resumed_fit_equals_the_uninterrupted_one(backend, tmp_path):
    X, y = data()
    whole = trained(backend, epochs=4)
    path = tmp_path / "ckpt"
    trained(backend, epochs=2, checkpoint=path)
    resumed = make_network(backend, [4, 6, 6, 3], ["relu", "tanh", "softmax"], "cross_entropy",
                           seed=0, dtype="float64", batch_norm=[True, True], residual=True,
                           dropout=0.2)
    resumed.fit(X, y, epochs=4, batch_size=8, learning_rate=0.05, optimizer="adam", seed=1,
                checkpoint=path)
    assert resumed.history_.epochs == 4
    same_network(resumed, whole)


def test_snapshot_restores_the_running_statistics(backend):
    net = trained(backend)
    snap = bstate.Snapshot(net)
    before = bstate.capture(net).arrays
    X, y = data(seed=5)
    net.fit(X, y, epochs=1, batch_size=8, learning_rate=0.05, optimizer=net.optimizer_)
    assert not np.array_equal(to_numpy(net.running_mean[0]), before["running_mean1"])
    snap.restore(net)
    after = bstate.capture(net).arrays
    for name in before:
        if not name.startswith("history"):
            assert np.array_equal(after[name], before[name]), name


def test_to_another_backend_and_back(backend):
    net = trained("numpy")
    reference = bstate.capture(net).arrays
    net.to(DEVICE[backend], backend)
    assert net.backend.name == backend
    assert all(net.backend.is_native(a) for a in net.parameters() + net.buffers())
    assert all(net.backend.is_native(s) for st in net.optimizer_.state for s in st)
    moved = bstate.capture(net).arrays
    for name in reference:
        assert np.array_equal(moved[name], reference[name]), name
    net.to("cpu", "numpy")
    back = bstate.capture(net).arrays
    for name in reference:
        assert np.array_equal(back[name], reference[name]), name
    # trains on where it is moved, as a network that never moved
    twin = trained("numpy")
    net.to(DEVICE[backend], backend)
    X, y = data(seed=6)
    for n in (net, twin):
        n.fit(X, y, epochs=1, batch_size=8, learning_rate=0.05, optimizer=n.optimizer_, seed=2)
    if DEVICE[backend] == "cuda":
        return      # it trained (kernels check their arrays' device); its dropout draws differ
    tol = 1e-9
    for a, b in zip(net.get_batch_norm(), twin.get_batch_norm()):
        for key in ("gamma", "beta", "running_mean", "running_var"):
            np.testing.assert_allclose(a[key], b[key], rtol=tol, atol=tol)


def test_a_version_1_file_loads_as_a_network_without_batch_norm(tmp_path):
    """A file written before batch normalization (version 1: no batch_norm or residual in
    the architecture) loads, and refuses what version 1 could not hold."""
    net = make_network("numpy", [4, 5, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    X, y = data()
    net.fit(X, y, epochs=1, batch_size=5, learning_rate=0.1, optimizer="adam")
    path = tmp_path / "old.bp"
    net.save(path)

    def as_version_1(h):
        del h["architecture"]["batch_norm"], h["architecture"]["residual"]
        return dict(h, version=1)
    rewrite(path, header=as_version_1)
    with open(path, "rb") as f:
        assert b'"version": 1' in f.read()
    old = backprop.load(path, backend="numpy")
    assert old.batch_norm == [False] and old.residual == [False]
    assert old.get_batch_norm() == [None]
    same_network(old, net)
    assert json.loads(json.dumps(bstate.capture(old).header))["version"] == 2


def test_bad_batch_norm_arrays_are_refused(tmp_path):
    net = trained("numpy")
    path = tmp_path / "m.bp"
    net.save(path)
    rewrite(path, drop=("running_var2.npy",))
    with pytest.raises(ValueError, match=r"missing arrays \['running_var2'\]"):
        backprop.load(path)
    net.save(path)
    rewrite(path, arrays={"gamma1": np.ones(5)})
    with pytest.raises(ValueError, match=r"gamma1 has shape \(5,\), expected \(6,\)"):
        backprop.load(path)
    net.save(path)
    rewrite(path, arrays={"running_var1": -np.ones(6)})
    with pytest.raises(ValueError, match="running_var1 is a variance and must be >= 0"):
        backprop.load(path)
