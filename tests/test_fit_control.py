"""What fit does besides steps: divergence rolls back, callbacks and schedules start afresh
every fit, EarlyStopping restores its best epoch, History reports the loss minimised."""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import pytest
from support import make_network
from test_state import TIMES

import backprop
from backprop import state as bstate


def exploding(n=256, seed=0):
    """The issue's example: x ~ N(0, 10²), y = 100 x·w; learning_rate 1 diverges."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 10, size=(n, 4))
    return X, 100 * X @ rng.normal(size=4)


def regressor(backend, **kw):
    return make_network(backend, [4, 16, 1], ["relu", "identity"], "mse", seed=0, **kw)


# ---------------------------------------------------------------------- divergence

def test_divergence_restores_the_last_finite_epoch(backend, tmp_path):
    X, y = exploding()
    # a schedule that grows the rate: finite for the first epochs, then NaN
    kw = dict(batch_size=32, optimizer="momentum", seed=0, lr_schedule=lambda e, lr: lr * 10 ** e)
    net = regressor(backend)
    with pytest.warns(RuntimeWarning) as record:
        history = net.fit(X, y, epochs=10, learning_rate=1e-7, **kw)
    message = str(record[0].message)
    k = history.diverged_epoch
    assert k is not None and 0 < k < 10 and history.epochs == k
    assert f"diverged at epoch {k}" in message and f"epoch {k - 1}, the last finite" in message
    for remedy in ("learning_rate", "clip_norm", "initialisation"):
        assert remedy in message
    assert all(np.isfinite(v).all() for v in history.history.values())
    twin = regressor(backend)
    twin.fit(X, y, epochs=k, learning_rate=1e-7, **kw)
    ours, theirs = bstate.capture(net), bstate.capture(twin)
    for name, array in theirs.arrays.items():       # parameters, optimizer buffers, history
        if name not in TIMES:
            assert np.array_equal(ours.arrays[name], array), name
    assert ours.header["optimizer"] == theirs.header["optimizer"]      # t included
    net.save(tmp_path / "m")                         # a usable network: saves and loads
    assert backprop.load(tmp_path / "m").history_.diverged_epoch == k


def test_divergence_in_the_first_epoch_restores_the_initial_network(backend):
    X, y = exploding()
    net = regressor(backend)
    initial = net.get_parameters()
    with pytest.warns(RuntimeWarning, match="diverged at epoch 0.*start of training"):
        history = net.fit(X, y, epochs=5, batch_size=32, learning_rate=1.0, seed=0)
    assert history.epochs == 0 and history.diverged_epoch == 0 and net.optimizer_.t == 0
    for (W, b), (W0, b0) in zip(net.get_parameters(), initial):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def test_on_nonfinite_raise(backend):
    X, y = exploding()
    net = regressor(backend)
    initial = net.get_parameters()
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # no warning: an error instead
        with pytest.raises(FloatingPointError, match="diverged at epoch 0"):
            net.fit(X, y, epochs=5, batch_size=32, learning_rate=1.0, on_nonfinite="raise")
    assert np.array_equal(net.get_parameters()[0][0], initial[0][0])
    assert net.history_.diverged_epoch == 0
    with pytest.raises(ValueError, match="on_nonfinite: expected 'warn' or 'raise'"):
        net.fit(X, y, epochs=1, batch_size=32, learning_rate=0.1, on_nonfinite="ignore")


# ---------------------------------------------------------------------- callbacks

def classification(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def classifier(backend, seed=0):
    return make_network(backend, [5, 8, 3], ["tanh", "softmax"], "cross_entropy", seed=seed,
                        dtype="float64")


def test_one_early_stopping_serves_many_fits(backend):
    """Net A stops early after a good best epoch; then net B, with the same instance, trains
    while improving (never as good as A) and is neither stopped nor given A's parameters."""
    X, y = classification()
    stop = backprop.EarlyStopping(monitor="val_loss", patience=2)
    a = classifier(backend)
    ha = a.fit(X, y, epochs=300, batch_size=8, learning_rate=2.0, seed=0,
               validation_data=(X, y), callbacks=[stop])
    assert ha.stopped_early and stop.best_epoch + 2 < 15
    b = classifier(backend, seed=1)
    hb = b.fit(X, y, epochs=15, batch_size=16, learning_rate=0.05, seed=0,
               validation_data=(X, y), callbacks=[stop])
    assert np.all(np.diff(hb["val_loss"]) < 0)        # b improved every epoch...
    assert min(hb["val_loss"]) > min(ha["val_loss"])  # ...never reaching a's best...
    assert not hb.stopped_early and hb.epochs == 15   # ...and was not stopped
    assert stop.best_epoch == 14 and stop.best == hb["val_loss"][-1]
    assert b.evaluate(X, y)["loss"] == pytest.approx(hb["val_loss"][-1], rel=1e-12)


def test_restore_best_at_the_end_whatever_ended_training(backend):
    X, y = classification()
    stop = backprop.EarlyStopping(monitor="val_loss", patience=100)      # never runs out
    net = classifier(backend)
    history = net.fit(X, y, epochs=25, batch_size=4, learning_rate=20.0, seed=0,
                      validation_data=(X, y), callbacks=[stop])
    assert not history.stopped_early and history.epochs == 25
    best = int(np.argmin(history["val_loss"]))
    assert best < 24 and stop.best_epoch == best
    assert net.evaluate(X, y)["loss"] == pytest.approx(history["val_loss"][best], rel=1e-12)
    twin = classifier(backend)                         # the optimizer state is the best epoch's
    twin.fit(X, y, epochs=best + 1, batch_size=4, learning_rate=20.0, seed=0)
    assert net.optimizer_.t == twin.optimizer_.t
    for (W, b), (W1, b1) in zip(net.get_parameters(), twin.get_parameters()):
        assert np.array_equal(W, W1) and np.array_equal(b, b1)


def test_early_stopping_reports_best_in_the_monitored_sign(backend):
    X, y = classification()
    stop = backprop.EarlyStopping(monitor="val_accuracy", patience=3)
    history = classifier(backend).fit(X, y, epochs=12, batch_size=8, learning_rate=0.5, seed=0,
                                      validation_data=(X, y), callbacks=[stop])
    assert 0 < stop.best <= 1 and stop.best == max(history["val_accuracy"])
    assert stop.best_epoch == history["val_accuracy"].index(stop.best)


def test_callbacks_and_schedules_see_every_fit_begin_and_end(backend):
    X, y = classification()
    events = []

    class Probe(backprop.Callback):
        def on_train_begin(self, network):
            events.append(("begin", network))

        def on_train_end(self, network, history):
            events.append(("end", history.epochs))

    class Schedule:
        def on_train_begin(self, network):
            self.calls = 0

        def __call__(self, epoch, lr):
            self.calls += 1
            return lr

    probe, schedule = Probe(), Schedule()
    a, b = classifier(backend), classifier(backend, seed=1)
    for net in (a, b):
        net.fit(X, y, epochs=3, batch_size=8, learning_rate=0.1, callbacks=[probe],
                lr_schedule=schedule)
        assert schedule.calls == 3
    assert events == [("begin", a), ("end", 3), ("begin", b), ("end", 3)]


def test_bad_callbacks_are_refused_before_any_work(backend):
    X, y = classification()
    net = classifier(backend)
    before = net.get_parameters()
    for bad, words in [([lambda e, logs: False, 3], "item 1 is 3"),
                       (backprop.EarlyStopping(), "single"), (5, "sequence")]:
        with pytest.raises(TypeError, match=words):
            net.fit(X, y, epochs=1, batch_size=8, learning_rate=0.1, callbacks=bad)
    assert net.history_ is None and net.optimizer_ is None
    assert np.array_equal(net.get_parameters()[0][0], before[0][0])


# ---------------------------------------------------------------------- the loss reported

@pytest.mark.parametrize("l1,l2", [(0.0, 0.5), (0.01, 0.0), (0.02, 0.3)])
def test_history_loss_is_data_loss_plus_penalty(backend, l1, l2):
    X, y = classification(n=30)
    net = classifier(backend)
    data_loss = net.loss(X, y)                          # one full batch: the epoch's data loss
    history = net.fit(X, y, epochs=1, batch_size=30, learning_rate=0.1, shuffle=False,
                      l1=l1, l2=l2, validation_data=(X[:10], y[:10]))
    weights = [W for W, _ in net.get_parameters()]     # the parameters the epoch ends with
    penalty = sum(l1 * np.abs(W).sum() + l2 * (W ** 2).sum() for W in weights)
    assert history["data_loss"][0] == pytest.approx(data_loss, rel=1e-12)
    assert history["loss"][0] == pytest.approx(data_loss + penalty, rel=1e-12)
    val = net.loss(X[:10], y[:10])
    assert history["val_data_loss"][0] == pytest.approx(val, rel=1e-12)
    assert history["val_loss"][0] == pytest.approx(val + penalty, rel=1e-12)


def test_no_penalty_no_data_loss_key(backend):
    X, y = classification(n=30)
    history = classifier(backend).fit(X, y, epochs=1, batch_size=8, learning_rate=0.1)
    assert "data_loss" not in history and "val_data_loss" not in history


# ---------------------------------------------------------------------- found by trying to break it

def test_an_interrupt_in_a_diverging_epoch_restores_the_last_finite_state(backend, monkeypatch):
    """Ctrl-C landing after an epoch's parameters have already gone non-finite (before the
    epoch's end, where divergence is checked) still rolls back to the last finite epoch."""
    from support import force_step_path
    X, y = exploding()
    net = regressor(backend)
    force_step_path(monkeypatch, net.backend)
    initial = net.get_parameters()
    step = net.train_step

    def step_then_interrupt_once_not_finite(*args, **kwargs):
        step(*args, **kwargs)
        if not all(net.backend.all_finite(p) for p in net.parameters()):
            raise KeyboardInterrupt
    monkeypatch.setattr(net, "train_step", step_then_interrupt_once_not_finite)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=5, batch_size=8, learning_rate=1.0, seed=0)
    assert net.optimizer_.t == 0
    for (W, b), (W0, b0) in zip(net.get_parameters(), initial):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def test_a_checkpoint_with_nothing_left_to_train_says_so(backend, tmp_path):
    X, y = exploding()
    path = tmp_path / "run.ckpt"
    with pytest.warns(RuntimeWarning, match="diverged"):
        regressor(backend).fit(X, y, epochs=3, batch_size=32, learning_rate=1.0, seed=0,
                               checkpoint=path)
    with pytest.warns(UserWarning, match="checkpoint: .*diverged at epoch 0.*nothing left"):
        regressor(backend).fit(X, y, epochs=3, batch_size=32, learning_rate=1e-5, seed=0,
                               checkpoint=path)
    done = tmp_path / "done.ckpt"
    regressor(backend).fit(X / 100, y / 1e4, epochs=2, batch_size=32, learning_rate=1e-3,
                           seed=0, checkpoint=done)
    with pytest.warns(UserWarning, match="finished its 2 epochs"):
        regressor(backend).fit(X / 100, y / 1e4, epochs=2, batch_size=32, learning_rate=1e-3,
                               seed=0, checkpoint=done)


def test_errors_found_before_any_work(backend, tmp_path, monkeypatch):
    """An EarlyStopping whose metric the fit never logs, and a checkpoint folder that cannot
    be written, are refused before the first step, naming the argument."""
    X, y = classification()
    net = classifier(backend)
    before = net.get_parameters()
    with pytest.raises(ValueError, match="callbacks: EarlyStopping monitors 'val_loss'"):
        net.fit(X, y, epochs=2, batch_size=8, learning_rate=0.1,
                callbacks=[backprop.EarlyStopping()])
    real_open = os.open

    def read_only_folder(path, *args, **kwargs):
        if str(path).endswith(".probe"):
            raise PermissionError(13, "Read-only file system")
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", read_only_folder)
    with pytest.raises(ValueError, match="checkpoint: cannot write in the folder"):
        net.fit(X, y, epochs=2, batch_size=8, learning_rate=0.1, checkpoint=tmp_path / "c")
    assert net.optimizer_ is None or net.optimizer_.t == 0
    for (W, b), (W0, b0) in zip(net.get_parameters(), before):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def test_one_early_stopping_cannot_serve_two_fits_at_once(backend):
    """Shared by two concurrent fits, its best epoch would be copied from one network into
    the other: the second fit is refused instead."""
    X, y = classification()
    stop = backprop.EarlyStopping(monitor="loss", patience=50)
    first, second = classifier(backend, seed=0), classifier(backend, seed=1)
    inside, release = threading.Event(), threading.Event()

    def hold(epoch, logs):
        inside.set()
        release.wait(30)
    errors = []
    worker = threading.Thread(target=lambda: first.fit(
        X, y, epochs=2, batch_size=8, learning_rate=0.1, callbacks=[stop, hold]))
    worker.start()
    try:
        assert inside.wait(30)
        with pytest.raises(RuntimeError, match="EarlyStopping is in use"):
            second.fit(X, y, epochs=1, batch_size=8, learning_rate=0.1, callbacks=[stop])
    finally:
        release.set()
        worker.join(60)
    assert not errors
    second.fit(X, y, epochs=1, batch_size=8, learning_rate=0.1, callbacks=[stop])   # now free


def test_a_division_by_zero_in_an_update_diverges_instead_of_raising(backend):
    """Adam's eps = 1e-50 is 0 in float32; with a gradient that is 0 the update divides 0 by
    0. Every backend then treats it as divergence (rolled back), never as an exception from
    half-way through an update."""
    X, y = exploding(64)
    X[:, 0] = 0
    net = make_network(backend, [4, 8, 1], "tanh", "mse", seed=0)
    initial = net.get_parameters()
    with pytest.warns(RuntimeWarning, match="diverged at epoch 0"):
        net.fit(X, y, epochs=2, batch_size=16, learning_rate=0.01, seed=0,
                optimizer=backprop.Adam(eps=1e-50))
    assert net.optimizer_.t == 0
    for (W, b), (W0, b0) in zip(net.get_parameters(), initial):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


@pytest.mark.parametrize("monitor,values,patience,min_delta,stop_at,best", [
    ("val_loss", [1.0, 0.9, 0.95, 0.95, 0.95], 2, 0.0, 3, 0.9),     # best at 1, stops 1 + 2
    ("val_loss", [1.0, 0.9, 0.95, 0.85, 0.9, 0.9, 0.9], 3, 0.0, 6, 0.85),
    ("val_loss", [1.0, 0.85, 0.85, 0.85], 2, 0.2, 2, 1.0),         # < min_delta: no gain
    ("val_loss", [1.0, 0.85, 0.7, 0.7, 0.7], 2, 0.2, 4, 0.7),       # 0.7 beats 1.0 by 0.3
    ("val_loss", [1.0, 0.79, 0.7, 0.7, 0.7], 2, 0.2, 3, 0.79),
    ("val_accuracy", [0.5, 0.6, 0.6, 0.55], 2, 0.0, 3, 0.6),       # larger is better
    ("val_accuracy", [0.5, 0.55, 0.58], 1, 0.1, 1, 0.5),
])
def test_early_stopping_stops_at_the_epoch_its_rule_names(monitor, values, patience, min_delta,
                                                          stop_at, best):
    """The rule, transcribed: an epoch improves when it beats the best by more than
    min_delta (in the monitored quantity's direction); training stops at the first epoch
    that is ``patience`` epochs after the best one."""
    stop = backprop.EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta,
                                  restore_best=False)
    stop.on_train_begin(None)
    decisions = [stop.on_epoch_end(epoch, {monitor: v}, None) for epoch, v in enumerate(values)]
    assert decisions.index(True) == stop_at and not any(decisions[:stop_at])
    assert stop.best == best


def test_every_callback_sees_the_epoch_another_one_stops_at(backend):
    X, y = classification()
    net = classifier(backend)
    seen = []
    history = net.fit(X, y, epochs=5, batch_size=8, learning_rate=0.1,
                      callbacks=[lambda epoch, logs: epoch == 1,
                                 lambda epoch, logs: seen.append(epoch)])
    assert history.stopped_early and history.epochs == 2 and seen == [0, 1]
