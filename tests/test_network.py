"""The Network API: parameters, devices, persistence, optimizers, regularization, callbacks."""

from __future__ import annotations

import numpy as np
import pytest
from support import DEVICE, assert_close, make_network

import backprop
from backprop import Network, to_numpy


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
        assert_close(a, c, 0, "dW") and assert_close(b, d, 0, "db")


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


def test_to_moves_parameters_and_optimizer_state(backend):
    net = make_network(backend, [5, 4, 3], ["relu", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    twin = make_network(backend, [5, 4, 3], ["relu", "softmax"], "cross_entropy", seed=0,
                        dtype="float64")
    X, y = data()
    for n in (net, twin):
        n.fit(X, y, epochs=2, batch_size=8, learning_rate=0.01, optimizer=backprop.Adam(), seed=0)
    net.to("cpu", "numpy").to(DEVICE[backend], backend)      # a round trip
    assert net.backend.name == backend
    for n in (net, twin):
        n.fit(X, y, epochs=1, batch_size=8, learning_rate=0.01, optimizer=n.optimizer_, seed=1)
    for (a, b), (c, d) in zip(net.get_parameters(), twin.get_parameters()):
        assert_close(a, c, 1e-12, "W") and assert_close(b, d, 1e-12, "b")


def one_step(backend, optimizer, steps=1, **fit_kwargs):
    """Parameters before, gradients at each step, and parameters after ``steps`` full-batch
    steps of ``optimizer`` (shuffle off, so each step sees the whole batch)."""
    net = make_network(backend, [4, 3, 2], ["tanh", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    X, y = data(n=6, n_in=4, n_out=2)
    before = net.get_parameters()
    grads = []
    opt = backprop.optimizers.get(optimizer)
    for _ in range(steps):
        grads.append([(to_numpy(a), to_numpy(b)) for a, b in net.backward(X, y)])
        net.fit(X, y, epochs=1, batch_size=6, shuffle=False, optimizer=opt, **fit_kwargs)
    return before, grads, net.get_parameters()


def test_sgd_with_l1_l2_matches_the_formula(backend):
    lr, l1, l2 = 0.1, 0.01, 0.02
    before, grads, after = one_step(backend, "sgd", learning_rate=lr, l1=l1, l2=l2)
    for (W, b), (dW, db), (W1, b1) in zip(before, grads[0], after):
        assert_close(W1, W - lr * (dW + l1 * np.sign(W) + 2 * l2 * W), 1e-12, "W")
        assert_close(b1, b - lr * db, 1e-12, "b")          # biases are not regularized


def test_sgd_with_only_l2_takes_the_fused_path_and_matches(backend):
    lr, l2 = 0.1, 0.05
    before, grads, after = one_step(backend, "sgd", learning_rate=lr, l2=l2)
    for (W, b), (dW, db), (W1, b1) in zip(before, grads[0], after):
        assert_close(W1, W - lr * (dW + 2 * l2 * W), 1e-12, "W")
        assert_close(b1, b - lr * db, 1e-12, "b")


@pytest.mark.parametrize("name", ["momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_optimizers_match_their_formulas(backend, name):
    lr, steps = 0.05, 3
    before, grads, after = one_step(backend, name, steps=steps, learning_rate=lr)
    for layer in range(2):
        for k in range(2):                       # W, then b
            p = before[layer][k].copy()
            s1 = np.zeros_like(p)
            s2 = np.zeros_like(p)
            for t in range(1, steps + 1):
                g = grads[t - 1][layer][k]
                if name in ("momentum", "nesterov"):
                    s1 = 0.9 * s1 + g
                    p = p - lr * (g + 0.9 * s1 if name == "nesterov" else s1)
                elif name == "rmsprop":
                    s1 = 0.9 * s1 + 0.1 * g * g
                    p = p - lr * g / (np.sqrt(s1) + 1e-8)
                else:
                    if name == "adamw":
                        p = p - lr * 0.01 * p
                    s1 = 0.9 * s1 + 0.1 * g
                    s2 = 0.999 * s2 + 0.001 * g * g
                    p = p - lr * (s1 / (1 - 0.9 ** t)) / (np.sqrt(s2 / (1 - 0.999 ** t)) + 1e-8)
            assert_close(after[layer][k], p, 1e-10, f"{name} layer {layer + 1} param {k}")


def test_gradient_clipping_limits_the_step(backend):
    lr, c = 0.5, 1e-3
    before, grads, after = one_step(backend, "sgd", learning_rate=lr, clip_norm=c)
    norm = np.sqrt(sum(np.sum(g ** 2) for pair in grads[0] for g in pair))
    assert norm > c
    for (W, b), (dW, db), (W1, b1) in zip(before, grads[0], after):
        assert_close(W1, W - lr * dW * (c / norm), 1e-12, "W")
        assert_close(b1, b - lr * db * (c / norm), 1e-12, "b")
    # a bound above the norm changes nothing
    _, _, unclipped = one_step(backend, "sgd", learning_rate=lr)
    _, _, loose = one_step(backend, "sgd", learning_rate=lr, clip_norm=10 * norm)
    for (W, b), (W1, b1) in zip(unclipped, loose):
        assert_close(W1, W, 1e-14, "W")


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
    net = make_network(backend, [5, 8, 3], ["relu", "softmax"], "cross_entropy", seed=0)
    X, y = data()
    history = net.fit(X, y, epochs=3, batch_size=5, learning_rate=0.1, seed=0,
                      validation_data=(X, y), verbose=True)
    assert history.epochs == 3
    assert set(history.keys()) >= {"loss", "val_loss", "val_accuracy", "learning_rate",
                                   "samples_per_second"}
    assert history["val_loss"][-1] == pytest.approx(net.evaluate(X, y)["loss"])
    out = capsys.readouterr().out
    assert out.count("epoch") == 3 and "val_accuracy" in out


def test_epoch_loss_is_the_mean_of_the_batch_losses(backend):
    net = make_network(backend, [5, 4, 3], ["tanh", "softmax"], "cross_entropy", seed=0,
                       dtype="float64")
    X, y = data(n=10)
    loss_before = net.loss(X, y)
    history = net.fit(X, y, epochs=1, batch_size=10, learning_rate=0.1, shuffle=False)
    assert history["loss"][0] == pytest.approx(loss_before, rel=1e-12)


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
