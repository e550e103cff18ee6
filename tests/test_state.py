"""The training state (backprop/state.py): save/load bit-exact and atomic, every bad file
refused with a ValueError naming the problem, networks pickled with their state only."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest
from support import DEVICE, make_network

import backprop
from backprop import state as bstate


def data(n=40, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, n_out, n)


def trained(backend, optimizer="adam", dtype="float64", epochs=2, **kw):
    """A [5, 6, 3] classifier (leaky_relu α = 0.2, dropout) trained a little."""
    from backprop.activations import LeakyReLU
    net = make_network(backend, [5, 6, 3], [LeakyReLU(0.2), "softmax"], "cross_entropy",
                       seed=0, dtype=dtype, dropout=0.25)
    X, y = data()
    net.fit(X, y, epochs=epochs, batch_size=8, learning_rate=0.05, optimizer=optimizer,
            seed=1, validation_data=(X, y), l2=1e-3, **kw)
    return net


TIMES = ("history.time", "history.samples_per_second")


def assert_same_state(a, b, skip=()):
    """Two TrainingStates hold the same header and bit-identical arrays (but ``skip``)."""
    assert a.header == b.header
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        if name in skip:
            continue
        assert a.arrays[name].dtype == b.arrays[name].dtype, name
        assert np.array_equal(a.arrays[name], b.arrays[name]), name


# ---------------------------------------------------------------------- save and load

@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_save_load_round_trip_is_bit_exact(backend, tmp_path, optimizer):
    net = trained(backend, optimizer)
    path = tmp_path / "model"                       # no extension: written exactly there
    net.save(path)
    assert os.listdir(tmp_path) == ["model"]
    loaded = backprop.load(path, device=DEVICE[backend], backend=backend)
    assert_same_state(bstate.capture(loaded), bstate.capture(net))
    assert loaded.optimizer_.t == net.optimizer_.t > 0
    assert loaded.history_.history == net.history_.history
    X, _ = data()
    assert np.array_equal(loaded.predict(X), net.predict(X))
    # the file also reads as an npz of the arrays, beside its JSON header
    with np.load(path, allow_pickle=False) as npz:
        assert np.array_equal(npz["W1"], net.get_parameters()[0][0])
        header = json.loads(bytes(npz["header.json"]))
    assert header["format"] == "backprop.training_state" and header["version"] == 2


def test_loaded_network_continues_training_exactly(backend, tmp_path):
    """Parameters, optimizer buffers, t and the generators all come back: a loaded network
    trains on exactly as the original does."""
    net = trained(backend, "adam", dtype="float32")
    net.save(tmp_path / "m.npz")
    loaded = backprop.load(tmp_path / "m.npz", device=DEVICE[backend], backend=backend)
    X, y = data(seed=2)
    for n in (net, loaded):
        n.fit(X, y, epochs=2, batch_size=8, learning_rate=0.05, optimizer=n.optimizer_, seed=3)
    for (W, b), (W1, b1) in zip(net.get_parameters(), loaded.get_parameters()):
        assert np.array_equal(W, W1) and np.array_equal(b, b1)


def test_load_on_another_backend(backend, tmp_path):
    net = trained(backend)
    net.save(tmp_path / "m")
    cpu = backprop.load(tmp_path / "m", device="cpu", backend="numpy")
    for (W, b), (W1, b1) in zip(net.get_parameters(), cpu.get_parameters()):
        assert np.array_equal(W, W1) and np.array_equal(b, b1)
    assert cpu.optimizer_.t == net.optimizer_.t


def test_untrained_network_saves_without_optimizer_or_history(backend, tmp_path):
    net = make_network(backend, [3, 2], "sigmoid", "binary_cross_entropy", seed=0)
    net.save(tmp_path / "m")
    loaded = backprop.load(tmp_path / "m")
    assert loaded.optimizer_ is None and loaded.history_ is None
    assert np.array_equal(loaded.get_parameters()[0][0], net.get_parameters()[0][0])


def test_save_refuses_a_non_finite_network(backend, tmp_path):
    net = make_network(backend, [3, 4, 2], ["relu", "identity"], "mse", seed=0)
    net.save(tmp_path / "m")
    before = (tmp_path / "m").read_bytes()
    be = net.backend
    W = net.get_parameters()[1][0]
    W[0, 0] = np.nan
    be.copy(be.asarray(W), net.W[1])                 # as a diverged step would leave it
    with pytest.raises(ValueError, match="W2 contains NaN or Inf"):
        net.save(tmp_path / "m")
    assert (tmp_path / "m").read_bytes() == before
    with pytest.raises(ValueError, match="W2"):
        pickle.dumps(net)


def test_a_failed_save_leaves_the_previous_file_intact(backend, tmp_path, monkeypatch):
    net = trained(backend)
    path = tmp_path / "m.npz"
    net.save(path)
    before = path.read_bytes()
    calls = []

    def disk_full(f, array, **kw):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"\0" * 7)
            raise OSError(28, "No space left on device")
        return real(f, array, **kw)

    real = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    net.fit(*data(), epochs=1, batch_size=8, learning_rate=0.05, optimizer=net.optimizer_)
    with pytest.raises(OSError, match="No space"):
        net.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]          # the temporary file is removed
    monkeypatch.undo()
    assert backprop.load(path).optimizer_.t == 2 * 5


# ---------------------------------------------------------------------- bad files

def rewrite(path, header=None, arrays=None, drop=(), raw=None):
    """Copy the zip at ``path`` with its header edited (a function of the dict), arrays
    replaced or added (name -> array), members dropped, or raw members (name -> bytes)."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    if header is not None:
        members["header.json"] = json.dumps(header(json.loads(members["header.json"]))).encode()
    for name, array in (arrays or {}).items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asarray(array))
        members[f"{name}.npy"] = buf.getvalue()
    members.update(raw or {})
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            if name not in drop:
                zf.writestr(name, content)


def edit(**changes):
    def apply(h):
        for dotted, value in changes.items():
            *parents, key = dotted.split("__")
            d = h
            for p in parents:
                d = d[p]
            if value is KeyError:
                del d[key]
            else:
                d[key] = value
        return h
    return apply


def load_bytes(path, array):
    return np.lib.format.read_array(io.BytesIO(zipfile.ZipFile(path).read(f"{array}.npy")))


BAD_FILES = [  # (how the file is damaged, words the error must contain)
    (dict(header=edit(format="keras")), ["unknown format", "keras"]),
    (dict(header=edit(version=3)), ["unknown version 3"]),
    (dict(header=edit(version=1)), ["version 1 architecture", "batch_norm", "residual"]),
    (dict(header=edit(architecture__batch_norm=[True])), ["gamma1", "running_var1"]),
    (dict(header=edit(architecture__residual=[True])), ["residual", "layer 1"]),
    (dict(header=edit(architecture__batch_norm=True)), ["batch_norm", "list"]),
    (dict(header=edit(extra=1)), ["unknown keys", "extra"]),
    (dict(header=edit(training=KeyError)), ["missing keys", "training"]),
    (dict(header=edit(architecture__loss="hinge")), ["architecture", "hinge"]),
    (dict(header=edit(architecture__layer_sizes=[5, 6, 0])), ["architecture", "layer_sizes"]),
    (dict(header=edit(architecture__activations=[["relu", 0.5], ["softmax", 0]])),
     ["alpha"]),
    (dict(header=edit(architecture__dtype="float16")), ["dtype"]),
    (dict(header=edit(optimizer__name="adagrad")), ["unknown optimizer", "adagrad"]),
    (dict(header=edit(optimizer__hyperparameters__beta1=1.5)), ["beta1"]),
    (dict(header=edit(optimizer__hyperparameters__lr=0.1)), ["unknown keys", "lr"]),
    (dict(header=edit(optimizer__t=2 ** 63)), ["optimizer t"]),
    (dict(header=edit(optimizer__t=-1)), ["optimizer t"]),
    (dict(header=edit(generators__shuffle__state__inc=2 ** 128)), ["shuffle generator inc"]),
    (dict(header=edit(generators__dropout__bit_generator="MT19937")), ["dropout generator",
                                                                       "MT19937"]),
    (dict(header=edit(training__epochs=5)), ["history.loss", "shape"]),
    (dict(header=edit(training__keys=["loss", "loss"])), ["distinct"]),
    (dict(raw={"header.json": b'{"format": NaN}'}), ["non-finite", "NaN"]),
    (dict(raw={"header.json": b'{"format": 1e400}'}), ["1e400", "overflows"]),
    (dict(raw={"header.json": b"{not json"}), ["not valid JSON"]),
    (dict(drop=["header.json"]), ["no header.json"]),
    (dict(drop=["b2.npy"]), ["missing arrays", "b2"]),
    (dict(drop=["optimizer.v.W1.npy"]), ["missing arrays", "optimizer.v.W1"]),
    (dict(arrays={"W3": np.zeros((2, 2))}), ["unknown arrays", "W3"]),
    (dict(raw={"notes.txt": b"hello"}), ["unknown arrays", "notes.txt"]),
    (dict(arrays={"W1": np.zeros((5, 6))}), ["W1", "shape (5, 6)", "(6, 5)"]),
    (dict(arrays={"W1": np.zeros((6, 5), np.float32)}), ["W1", "dtype", "float64"]),
    (dict(arrays={"b1": np.full(6, np.nan)}), ["b1", "NaN"]),
    (dict(arrays={"optimizer.m.W2": np.full((3, 6), np.inf)}), ["optimizer.m.W2", "Inf"]),
    (dict(arrays={"optimizer.v.b2": -np.ones(3)}), ["optimizer.v.b2", ">= 0"]),
    (dict(arrays={"history.loss": np.array([1.0, np.inf])}), ["history.loss", "Inf"]),
    (dict(arrays={"W1": np.zeros((6, 5), object)}), ["W1", "dtype"]),
]


@pytest.mark.parametrize("damage,words", BAD_FILES)
def test_load_refuses_a_bad_file_naming_the_problem(tmp_path, damage, words):
    net = trained("numpy")
    path = tmp_path / "m"
    net.save(path)
    rewrite(path, **damage)
    with pytest.raises(ValueError) as info:
        backprop.load(path)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"
    assert str(path) in str(info.value)


def test_load_refuses_files_that_are_not_states(tmp_path):
    net = trained("numpy")
    path = tmp_path / "m"
    net.save(path)
    whole = path.read_bytes()
    (tmp_path / "cut").write_bytes(whole[:len(whole) // 2])        # a disk filled mid-write
    (tmp_path / "text").write_text("W1 = [[1, 2]]")
    np.savez(tmp_path / "old.npz", config=np.array("{}"), W1=np.zeros((6, 5)))   # format 0
    for name, words in [("cut", "not a backprop state file"), ("text", "not a zip"),
                        ("old.npz", "no header.json")]:
        with pytest.raises(ValueError, match=words):
            backprop.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        backprop.load(tmp_path / "absent")


def test_array_shapes_are_checked_before_data_is_read(tmp_path, monkeypatch):
    net = trained("numpy")
    path = tmp_path / "m"
    net.save(path)
    rewrite(path, arrays={"W1": np.zeros((600, 500))})
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("data read"))
    with pytest.raises(ValueError, match="W1 has shape"):
        backprop.load(path)


# ---------------------------------------------------------------------- pickling

def test_pickle_carries_the_state_only_and_trains_identically(backend):
    net = make_network(backend, [64, 32, 10], ["relu", "softmax"], "cross_entropy", seed=0)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 64)), rng.integers(0, 10, 300)
    net.fit(X, y, epochs=1, batch_size=32, learning_rate=0.01, optimizer="adam", seed=0)
    net.predict(X[:5])
    net.predict(X)                                       # workspaces of several sizes exist
    blob = pickle.dumps(net)
    state_bytes = 3 * net.n_parameters * net.dtype.itemsize      # parameters + Adam's m, v
    assert len(blob) < state_bytes + 20_000, len(blob)
    twin = pickle.loads(blob)
    assert twin.backend.name == backend and not twin._workspaces
    assert np.array_equal(twin.predict(X), net.predict(X))
    for n in (net, twin):
        n.fit(X, y, epochs=2, batch_size=32, learning_rate=0.01, optimizer=n.optimizer_, seed=5)
    assert_same_state(bstate.capture(twin), bstate.capture(net), skip=TIMES)
    clone = copy.deepcopy(net)
    assert_same_state(bstate.capture(clone), bstate.capture(net))


def test_unpickling_checks_the_state(backend):
    net = make_network(backend, [3, 2], "identity", "mse", seed=0)
    pickled = net.__getstate__()
    pickled["arrays"]["W1"] = np.zeros((3, 2), net.dtype)
    with pytest.raises(ValueError, match="pickle: W1 has shape"):
        backprop.Network.__new__(backprop.Network).__setstate__(pickled)


# ---------------------------------------------------------------------- found by trying to break it

def test_a_damaged_zip_of_any_kind_is_a_value_error(backend, tmp_path):
    """Damage the zip format itself (an unsupported compression method, a version field, a
    flag bit) rather than the state: still a ValueError naming the file."""
    net = trained(backend)
    path = tmp_path / "net.bp"
    net.save(path)
    good = path.read_bytes()
    central = good.rindex(b"PK\x01\x02")             # the last central-directory entry
    for offset, value in ((10, 99), (6, 0xFF), (8, 0x20)):   # method, version, flags
        damaged = bytearray(good)
        damaged[central + offset] = value
        path.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match=str(path.name)):
            backprop.load(path)


def test_save_keeps_the_mode_and_takes_long_names(backend, tmp_path):
    net = trained(backend)
    private = tmp_path / "private.bp"
    net.save(private)
    os.chmod(private, 0o600)
    net.save(private)
    assert os.stat(private).st_mode & 0o777 == 0o600
    long_name = tmp_path / ("m" * 250)                   # near the 255-byte name limit
    net.save(long_name)
    assert_same_state(bstate.capture(backprop.load(long_name, device=DEVICE[backend],
                                                   backend=backend)), bstate.capture(net))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long_name.name, "private.bp"])


def test_header_numbers_must_have_their_json_type(tmp_path):
    path = tmp_path / "net.bp"
    make_network("numpy", [2, 2], "tanh", "mse", seed=0).save(path)
    for version in (True, 1.0, "1"):
        rewrite(path, header=lambda h, v=version: dict(h, version=v))
        with pytest.raises(ValueError, match="unknown version"):
            backprop.load(path)


def test_parameters_and_activations_must_be_real_and_representable():
    from backprop.activations import ELU, LeakyReLU
    net = backprop.Network([2, 2], "tanh", "mse", backend="numpy", seed=0)
    W, b = net.get_parameters()[0]
    with pytest.raises(TypeError, match="parameters: layer 1 W must be a real numeric"):
        net.set_parameters([(W + 1j, b)])
    assert np.array_equal(net.get_parameters()[0][0], W)
    with pytest.raises(ValueError, match="activations: layer 1's leaky_relu.*float32"):
        backprop.Network([1, 1], LeakyReLU(1e39), "mse", backend="numpy")
    backprop.Network([1, 1], ELU(1e39), "mse", backend="numpy", dtype="float64")
    with pytest.raises(ValueError, match="activations: a softmax over the single unit of hidden"):
        backprop.Network([3, 1, 2], ["softmax", "identity"], "mse", backend="numpy")


def test_save_follows_a_symbolic_link_and_keeps_it(tmp_path):
    """The new file replaces the link's target (in the target's folder), the link stays a link
    to it; the same writer serves checkpoints and ONNX export (atomic_write)."""
    net = trained("numpy", epochs=1)
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "m.bp"
    real.write_bytes(b"old")
    link = tmp_path / "m.bp"
    link.symlink_to(real)
    net.save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert_same_state(bstate.read(real), bstate.capture(net))
    dangling = tmp_path / "new.bp"                       # a link to a file not yet written
    dangling.symlink_to(tmp_path / "real" / "new.bp")
    net.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "new.bp").is_file()
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["m.bp", "new.bp"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("kind", ["fifo", "directory", "link to a fifo"])
def test_writing_refuses_a_target_that_is_not_a_regular_file(tmp_path, kind):
    """A FIFO, a directory (or a link to one) is left as it is, refused by name before any
    work: save, the writer under it, checkpoints."""
    net = trained("numpy", epochs=1)
    path = tmp_path / "target"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(tmp_path / "fifo")
        if kind == "fifo":
            path = tmp_path / "fifo"
        else:
            path.symlink_to(tmp_path / "fifo")
    words = "a directory" if kind == "directory" else "a FIFO"
    filled = []
    with pytest.raises(ValueError, match=f"{path.name}.*is {words}; expected a regular file"):
        net.save(path)
    with pytest.raises(ValueError, match=f"is {words}"):
        bstate.atomic_write(path, filled.append)
    assert filled == []
    before = bstate.capture(net)
    with pytest.raises(ValueError, match=f"checkpoint: .*is {words}"):
        net.fit(*data(), epochs=1, batch_size=8, learning_rate=0.05, checkpoint=path)
    assert_same_state(bstate.capture(net), before)
    real = os.path.realpath(path)
    assert os.path.isdir(real) if kind == "directory" else stat.S_ISFIFO(os.stat(real).st_mode)
    assert not any(p.name.startswith(".bp-") for p in tmp_path.rglob("*"))
