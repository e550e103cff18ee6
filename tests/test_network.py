"""The Network API: parameters, devices, persistence, optimizers, regularization, callbacks."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
import support
from support import (DEVICE, assert_change_close, assert_close, assert_path_ran, backend_paths,
                     make_network, on_path, walk_arrays)

import backprop
from backprop import Network, reference, to_numpy
from backprop.activations import ELU, Softmax, Tanh


def data(n=24, n_in=5, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, n_out, n)


def test_same_seed_same_parameters_on_every_backend(backend, dtype):
    ours = make_network(backend, [5, 7, 3], ["relu", "softmax"], "cross_entropy", seed=42,
                        dtype=dtype)
    reference = Network([5, 7, 3], ["relu", "softmax"], "cross_entropy", seed=42,
                        backend="numpy", dtype=dtype)
    for (W, b), (W0, b0) in zip(ours.get_parameters(), reference.get_parameters()):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
        assert W.dtype == np.dtype(dtype)


def test_initialisation_statistics():
    net = Network([400, 300, 200], ["relu", "tanh"], "mse", seed=0, backend="numpy")
    (W1, b1), (W2, _) = net.get_parameters()
    assert W1.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)            # he for relu
    assert W2.std() == pytest.approx(np.sqrt(2 / (300 + 200)), rel=0.02)    # xavier for tanh
    assert not b1.any()
    W = Network([400, 300], "relu", "mse", init="xavier_uniform", seed=0,
                backend="numpy").get_parameters()[0][0]
    assert np.abs(W).max() <= np.sqrt(6 / 700) and W.std() == pytest.approx(np.sqrt(2 / 700), rel=0.02)


def test_he_uniform_statistics():
    W = Network([400, 300], "relu", "mse", init="he_uniform", seed=0,
                backend="numpy").get_parameters()[0][0]
    assert np.abs(W).max() <= np.sqrt(6 / 400)                  # U(-√(6/n_in), √(6/n_in))
    assert np.abs(W).max() == pytest.approx(np.sqrt(6 / 400), rel=0.01)
    assert W.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)


def test_binary_accuracy_counts_each_output_unit(backend):
    """Several sigmoid outputs: the accuracy is the mean over samples and units of
    [ŷ >= 0.5] == [y >= 0.5] (a direct transcription), never above 1."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 4))
    Y = (rng.uniform(size=(30, 3)) > 0.5).astype(float)
    net = make_network(backend, [4, 5, 3], ["tanh", "sigmoid"], "binary_cross_entropy",
                       seed=1, dtype="float64")
    expected = np.mean((net.predict(X) >= 0.5) == (Y >= 0.5))
    assert net.evaluate(X, Y)["accuracy"] == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < 1


def test_get_parameters_returns_copies(backend):
    net = make_network(backend, [3, 2], "identity", "mse", seed=0)
    W, b = net.get_parameters()[0]
    W[...] = 7
    assert not np.array_equal(net.get_parameters()[0][0], W)


def test_forward_out_and_device_arrays(backend):
    net = make_network(backend, [5, 4, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    X, _ = data()
    y = net.forward(X)
    assert net.backend.is_native(y) and y.shape == (24, 3)
    out = net.backend.empty((24, 3), net.dtype)
    assert net.forward(X, out=out) is out
    assert_close(out, y, 0, "forward(out=)")
    assert_close(net.forward(net.backend.asarray(X)), y, 1e-6, "device input")
    assert np.allclose(to_numpy(y).sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="out"):
        net.forward(X, out=net.backend.empty((3, 3), net.dtype))


def test_forward_over_more_samples_than_one_inference_batch(backend, monkeypatch):
    import backprop.network
    monkeypatch.setattr(backprop.network, "INFERENCE_BATCH", 7)
    net = make_network(backend, [5, 4, 3], ["tanh", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    X, y = data()
    whole = [to_numpy(net.forward(X[i:i + 1]))[0] for i in range(len(X))]
    assert_close(net.forward(X), whole, 1e-12, "chunked forward")
    assert net.loss(X, y) == pytest.approx(np.mean([net.loss(X[i:i + 1], y[i:i + 1])
                                                    for i in range(len(X))]), rel=1e-12)


def test_labels_and_one_hot_give_the_same_gradients(backend):
    net = make_network(backend, [5, 4, 3], ["tanh", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    X, y = data()
    for (a, b), (c, d) in zip(net.backward(X, y), net.backward(X, np.eye(3)[y])):
        assert_close(a, c, 0, "dW")
        assert_close(b, d, 0, "db")


def test_save_and_load(backend, tmp_path):
    from backprop.activations import LeakyReLU
    net = make_network(backend, [5, 4, 3], [LeakyReLU(0.2), "softmax"], "cross_entropy", seed=0,
                       dtype="float64", dropout=0.25)
    X, y = data()
    net.fit(X, y, epochs=2, batch_size=8, learning_rate=0.1, seed=0)
    net.save(tmp_path / "net.npz")
    loaded = backprop.load(tmp_path / "net.npz", device=DEVICE[backend], backend=backend)
    assert loaded.activations == net.activations and loaded.dropout == [0.25]
    assert loaded.dtype == net.dtype and loaded.layer_sizes == net.layer_sizes
    assert_close(loaded.forward(X), net.forward(X), 0, "loaded forward")
    cpu = backprop.load(tmp_path / "net.npz", device="cpu", backend="numpy")
    assert_close(cpu.forward(X), net.forward(X), 1e-12, "loaded on the cpu")


@pytest.fixture
def tagged(monkeypatch):
    """Backend "tagged" (device "cpu"): a second CPU device whose arrays have a type of their
    own (support.TaggedBackend)."""
    import backprop.backends as backends
    monkeypatch.setitem(backends.BACKENDS, "tagged", ("support", "TaggedBackend", "cpu"))
    return "tagged"


def assert_arrays_of(net, array_type, where):
    arrays = list(walk_arrays(net))
    assert any(".state[" in path for path, _ in arrays)
    for path, a in arrays:
        assert type(a) is array_type, f"{where}: {path} is a {type(a).__name__}"


def test_to_moves_parameters_and_optimizer_state(backend, tagged):
    """A round trip through another device moves every array (parameters and the optimizer's
    state) there and back, and training then continues exactly as without the trip."""
    net = make_network(backend, [5, 4, 3], ["relu", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    twin = make_network(backend, [5, 4, 3], ["relu", "softmax"], "cross_entropy", seed=0,
                        dtype="float64")
    native = type(net.backend.empty((1,), net.dtype))
    X, y = data()
    for n in (net, twin):
        n.fit(X, y, epochs=2, batch_size=8, learning_rate=0.01, optimizer=backprop.Adam(), seed=0)
    net.to("cpu", tagged)
    assert net.backend.name == tagged
    assert_arrays_of(net, support.Tagged, "after to('cpu', 'tagged')")
    net.to(DEVICE[backend], backend)
    assert net.backend.name == backend
    assert_arrays_of(net, native, f"after to({DEVICE[backend]!r}, {backend!r})")
    for n in (net, twin):
        n.fit(X, y, epochs=1, batch_size=8, learning_rate=0.01, optimizer=n.optimizer_, seed=1)
    for (a, b), (c, d) in zip(net.get_parameters(), twin.get_parameters()):
        assert_close(a, c, 1e-12, "W")
        assert_close(b, d, 1e-12, "b")


def formula_problem(backend, dtype="float64", n=10):
    """A network with two hidden layers and nonzero biases (so a penalty wrongly applied to
    biases shows at once), and ``n`` samples."""
    rng = np.random.default_rng(4)
    net = make_network(backend, [4, 5, 4, 3], [Tanh(), ELU(0.5), Softmax()], "cross_entropy",
                       seed=0, dtype=dtype)
    net.set_parameters([(W, rng.normal(0, 0.3, b.shape)) for W, b in net.get_parameters()])
    X = rng.normal(size=(n, 4))
    y = rng.integers(0, 3, n)
    return net, X, y


def oracle_fit(net, X, y, before, **kw):
    """oracles.fit from the parameters ``before``, with ``net``'s architecture."""
    return oracles.fit([W for W, _ in before], [b for _, b in before], X, np.eye(3)[y],
                       net.activations, net.loss_function, **kw)


FORMULA_CASES = [  # (optimizer, fit keywords)
    ("sgd", {}),                               # plain SGD: the update folded into the product
    ("sgd", {"l2": 0.05}),                     # l2 alone is folded in too (β = 1 - 2ηλ₂)
    ("sgd", {"l1": 0.01, "l2": 0.02}),
    ("momentum", {"l2": 0.01}),
    ("nesterov", {"l1": 0.01}),
    ("rmsprop", {"l2": 0.01}),
    ("adam", {"l1": 0.01, "l2": 0.01}),
    ("adamw", {}),
    ("sgd", {"clip_norm": 0.05}),              # clipped at every step
    ("adam", {"clip_norm": 0.05, "l2": 0.01}),
    ("momentum", {"clip_norm": 100.0}),        # a bound above the norm: no clipping
    ("sgd", {"clip_value": 0.01}),             # clipping by value: no folded SGD update
    ("adam", {"clip_value": 0.02, "l1": 0.01}),
    ("momentum", {"clip_norm": 0.05, "clip_value": 0.01}),   # the norm first, then the value
    ("sgd", {"warmup_steps": 4}),              # a warm-up across the epoch boundary
    ("adam", {"warmup_steps": 100, "clip_value": 0.05}),     # warm-up longer than the fit
]
#: relative tolerance of the parameters' changes against the float64 oracle, by dtype
FORMULA_RTOL = {"float64": 1e-9, "float32": 1e-3}


#: every case on every path, but numba's fused epoch, which does not clip (such fits run
#: step by step, the path "steps")
FORMULA_PARAMS = [pytest.param(*bp.values, optimizer, kw, marks=bp.marks,
                               id=f"{bp.id}-{optimizer}-{kw}")
                  for bp in backend_paths() for optimizer, kw in FORMULA_CASES
                  if not (bp.values == ("numba", "epoch") and "clip_norm" in kw)]


@pytest.mark.parametrize("backend,path,optimizer,kw", FORMULA_PARAMS, indirect=["backend"])
def test_fit_follows_the_optimizer_formulas(backend, path, dtype, optimizer, kw, monkeypatch):
    """Two shuffled epochs of batches 4, 4, 2 against the seeds' per-sample gradients driven
    by each optimizer's formula (tests/oracles.py), on each path: the parameters' changes,
    the optimizer's step count and each epoch's loss."""
    net, X, y = formula_problem(backend, dtype)
    before = net.get_parameters()
    factors: list = []
    lr, epochs, batch_size = 0.1, 2, 4
    W, b, losses = oracle_fit(net, X, y, before, optimizer=optimizer, learning_rate=lr,
                              epochs=epochs, batch_size=batch_size,
                              orders=oracles.epoch_orders(len(X), epochs, True, 7),
                              clip_factors=factors, **kw)
    if {"clip_value", "warmup_steps"} & set(kw):     # the case is not vacuous
        plain = {k: v for k, v in kw.items() if k not in ("clip_value", "warmup_steps")}
        W_plain, _, _ = oracle_fit(net, X, y, before, optimizer=optimizer, learning_rate=lr,
                                   epochs=epochs, batch_size=batch_size,
                                   orders=oracles.epoch_orders(len(X), epochs, True, 7), **plain)
        moved = [np.linalg.norm(a - w0) for a, (w0, _) in zip(W, before)]
        assert all(np.linalg.norm(a - c) > 0.05 * m for a, c, m in zip(W, W_plain, moved))
    calls = on_path(monkeypatch, net, path)
    history = net.fit(X, y, epochs=epochs, batch_size=batch_size, learning_rate=lr,
                      optimizer=optimizer, seed=7, **kw)
    folded = (optimizer == "sgd" and not kw.get("l1") and "clip_norm" not in kw
              and "clip_value" not in kw)
    assert_path_ran(calls, path, folded_sgd=folded)
    if "clip_norm" in kw:
        assert (max(factors) < 1) == (kw["clip_norm"] < 1), factors
    steps = epochs * 3
    assert net.optimizer_.t == steps
    for l, ((W1, b1), (W0, b0)) in enumerate(zip(net.get_parameters(), before)):
        assert_change_close(W1, W[l], W0, FORMULA_RTOL[dtype], steps, f"W{l + 1}")
        assert_change_close(b1, b[l], b0, FORMULA_RTOL[dtype], steps, f"b{l + 1}")
    penalized = bool(kw.get("l1") or kw.get("l2"))
    rel = 1e-12 if dtype == "float64" else 1e-5
    assert history["data_loss" if penalized else "loss"] == pytest.approx(losses, rel=rel)
    # History's loss is what is minimised: the data loss plus the penalty at the epoch's end
    weights = [W1 for W1, _ in net.get_parameters()]
    penalty = sum(kw.get("l1", 0) * np.abs(W1).sum() + kw.get("l2", 0) * np.square(W1).sum()
                  for W1 in np.asarray(weights, dtype=object))
    assert history["loss"][-1] == pytest.approx(history["data_loss" if penalized else "loss"][-1]
                                                + penalty, rel=rel)


def test_gradient_clipping_limits_the_step(backend):
    """One full-batch SGD step clipped to c moves all parameters together by η c, along the
    gradient; a bound above the gradient's norm changes nothing."""
    lr, c = 0.5, 1e-3
    net, X, y = formula_problem(backend)
    grads = [(to_numpy(dW), to_numpy(db)) for dW, db in net.backward(X, y)]
    norm = np.sqrt(sum(np.sum(g ** 2) for pair in grads for g in pair))
    assert norm > 10 * c
    before = net.get_parameters()
    net.fit(X, y, epochs=1, batch_size=len(X), learning_rate=lr, clip_norm=c, shuffle=False)
    after = net.get_parameters()
    for (W1, b1), (W0, b0), (dW, db) in zip(after, before, grads):
        assert_change_close(W1, W0 - lr * (c / norm) * dW, W0, 1e-9, 1, "W")
        assert_change_close(b1, b0 - lr * (c / norm) * db, b0, 1e-9, 1, "b")
    step = np.sqrt(sum(np.sum((p1 - p0) ** 2)
                       for pair1, pair0 in zip(after, before) for p1, p0 in zip(pair1, pair0)))
    assert step == pytest.approx(lr * c, rel=1e-9)
    loose, _, _ = formula_problem(backend)
    plain, _, _ = formula_problem(backend)
    loose.fit(X, y, epochs=1, batch_size=len(X), learning_rate=lr, clip_norm=10 * norm,
              shuffle=False)
    plain.fit(X, y, epochs=1, batch_size=len(X), learning_rate=lr, shuffle=False)
    for (W1, b1), (W2, b2), (W0, b0) in zip(loose.get_parameters(), plain.get_parameters(),
                                            before):
        assert_change_close(W1, W2, W0, 1e-12, 1, "W")
        assert_change_close(b1, b2, b0, 1e-12, 1, "b")


def test_dropout(backend):
    net = make_network(backend, [20, 200, 200, 3], ["relu", "relu", "softmax"], "cross_entropy",
                       seed=0, dtype="float64", dropout=[0.5, 0.2])
    X, y = data(n=64, n_in=20)
    ws = net.workspace(64)
    be = net.backend
    net._forward(ws, be.asarray(X), train=True)
    masks = [to_numpy(m) for m in ws.mask]
    for mask, rate in zip(masks, (0.5, 0.2)):
        kept = mask > 0
        assert np.allclose(mask[kept], 1 / (1 - rate))
        assert kept.mean() == pytest.approx(1 - rate, abs=0.02)
    assert_close(ws.dropped[0], to_numpy(ws.A[0]) * masks[0], 1e-15, "dropped")
    # inference uses no dropout: the same as a network without it
    plain = make_network(backend, [20, 200, 200, 3], ["relu", "relu", "softmax"], "cross_entropy",
                         seed=0, dtype="float64")
    assert_close(net.forward(X), plain.forward(X), 0, "inference")
    # training with dropout still learns
    history = net.fit(X, y, epochs=30, batch_size=16, learning_rate=0.05, seed=0)
    assert history["loss"][-1] < history["loss"][0]


def test_history_validation_and_verbose(backend, capsys):
    """val_loss and val_accuracy of each epoch are those of the parameters at its end on the
    validation data (by the seeds' per-sample forward pass), not on the training data."""
    net = make_network(backend, [5, 8, 3], ["relu", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    X, y = data()
    X_val, y_val = data(n=15, seed=1)
    at_epoch_end = []
    history = net.fit(X, y, epochs=3, batch_size=5, learning_rate=0.1, seed=0,
                      validation_data=(X_val, y_val), verbose=True,
                      callbacks=[lambda epoch, logs: at_epoch_end.append(net.get_parameters())])
    assert history.epochs == 3
    assert set(history.keys()) == {"loss", "val_loss", "val_accuracy", "learning_rate", "time",
                                   "samples_per_second"}
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    for epoch, params in enumerate(at_epoch_end):
        W, b = [p[0] for p in params], [p[1] for p in params]
        loss = reference.batch_loss(X_val, np.eye(3)[y_val], W, b, net.activations,
                                    net.loss_function)
        outputs = [reference.forward_propagation(x, W, b, net.activations)[0][-1] for x in X_val]
        accuracy = np.mean(np.argmax(outputs, axis=1) == y_val)
        assert history["val_loss"][epoch] == pytest.approx(loss, rel=1e-12)
        assert history["val_accuracy"][epoch] == accuracy
        assert f"epoch {epoch + 1}/3" in out[epoch]
        assert f"val_loss {loss:.4f}" in out[epoch]
    assert len(set(history["val_loss"])) == 3


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("backend,path", backend_paths(), indirect=["backend"])
def test_epoch_loss_is_the_mean_of_the_batch_losses(backend, path, shuffle, monkeypatch):
    """Each epoch's loss is the mean over its samples of the loss each batch had at the
    parameters of its step: batches of 4, 4 and 2, over three epochs."""
    net, X, y = formula_problem(backend)
    before = net.get_parameters()
    orders = oracles.epoch_orders(len(X), 3, shuffle, 5)
    _, _, losses = oracle_fit(net, X, y, before, optimizer="adam", learning_rate=0.1, epochs=3,
                              batch_size=4, orders=orders)
    calls = on_path(monkeypatch, net, path)
    history = net.fit(X, y, epochs=3, batch_size=4, learning_rate=0.1, optimizer="adam",
                      shuffle=shuffle, seed=5)
    assert_path_ran(calls, path, folded_sgd=False)
    assert history["loss"] == pytest.approx(losses, rel=1e-12)
    assert len(set(history["loss"])) == 3


def test_lr_schedules_and_callbacks(backend):
    net = make_network(backend, [5, 4, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    X, y = data()
    seen = []
    history = net.fit(X, y, epochs=6, batch_size=8, learning_rate=0.4, seed=0,
                      lr_schedule=backprop.StepDecay(0.5, every=2),
                      callbacks=[lambda epoch, logs: seen.append(epoch) or epoch == 3])
    assert history["learning_rate"] == [0.4, 0.4, 0.2, 0.2]
    assert seen == [0, 1, 2, 3] and history.stopped_early
    assert backprop.ExponentialDecay(0.5)(2, 1.0) == 0.25
    assert backprop.InverseTimeDecay(1.0)(3, 1.0) == 0.25
    assert backprop.CosineDecay(10)(10, 1.0) == pytest.approx(0.0)


def test_early_stopping_restores_the_best_parameters(backend):
    net = make_network(backend, [5, 4, 3], ["tanh", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    X, y = data()
    stop = backprop.EarlyStopping(monitor="val_loss", patience=2)
    # a huge learning rate makes the validation loss get worse after the first epochs
    history = net.fit(X, y, epochs=50, batch_size=4, learning_rate=20.0, seed=0,
                      validation_data=(X, y), callbacks=[stop])
    assert history.stopped_early
    best = min(history["val_loss"])
    assert net.evaluate(X, y)["loss"] == pytest.approx(best, rel=1e-9)


def test_divergence_warns_and_stops(backend):
    net = make_network(backend, [5, 4, 1], ["relu", "identity"], "mse", seed=0)
    X = np.random.default_rng(0).normal(size=(32, 5)) * 100
    with pytest.warns(RuntimeWarning, match="diverged"):
        history = net.fit(X, X[:, 0] * 1e6, epochs=20, batch_size=8, learning_rate=10.0)
    assert history.epochs < 20


def test_binary_accuracy_and_predict_classes(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(float)
    net = make_network(backend, [2, 1], "sigmoid", "binary_cross_entropy", seed=0)
    net.fit(X, y, epochs=50, batch_size=20, learning_rate=1.0, seed=0)
    accuracy = net.evaluate(X, y)["accuracy"]
    assert accuracy > 0.95
    assert np.mean(net.predict_classes(X) == y) == pytest.approx(accuracy)
