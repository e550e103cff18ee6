"""ReduceLROnPlateau, the linear warm-up and clipping by value: the rules against direct
transcriptions, on every backend, across a checkpoint resume, and their bad input.

(The parameter updates of fits with ``clip_value`` and ``warmup_steps`` are checked against
the per-sample oracle on every path in tests/test_network.py, FORMULA_CASES.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from support import RTOL, assert_close, make_network
from test_resume import problem
from test_state import TIMES, assert_same_state

import backprop
from backprop import state as bstate
from backprop.optimizers import ADAM_KIND, MOMENTUM_KIND, SGD_KIND, UpdateRule
from backprop.training import ReduceLROnPlateau, warmup_factors


# ---------------------------------------------------------------------- ReduceLROnPlateau

def torch_plateau(values, lr, factor=0.1, patience=10, min_lr=0.0, cooldown=0, mode="min",
                  threshold=1e-4, threshold_mode="rel", eps=1e-8):
    """The learning rate after each value: torch.optim.lr_scheduler.ReduceLROnPlateau.step
    written out again from PyTorch's source (is_better, in_cooldown, _reduce_lr)."""
    best = math.inf if mode == "min" else -math.inf
    bad = cool = 0
    rates = []
    for v in values:
        if mode == "min" and threshold_mode == "rel":
            better = v < best * (1.0 - threshold)
        elif mode == "min":
            better = v < best - threshold
        elif threshold_mode == "rel":
            better = v > best * (threshold + 1.0)
        else:
            better = v > best + threshold
        if better:
            best, bad = v, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > eps:
                lr = new
            cool, bad = cooldown, 0
        rates.append(lr)
    return rates


class FakeHistory:
    def __init__(self, key, values):
        self.history = {key: list(values)}
        self.epochs = len(values)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def keys(self):
        return list(self.history)


class Holder:
    history_ = None


PLATEAU_CASES = [
    dict(patience=2),
    dict(patience=0, factor=0.5, min_lr=0.02),
    dict(patience=1, cooldown=2, factor=0.5),
    dict(patience=1, threshold=0.05, threshold_mode="abs"),
    dict(patience=1, mode="max", factor=0.3),
    dict(patience=1, mode="max", threshold_mode="abs", threshold=0.01, cooldown=1),
]


@pytest.mark.parametrize("kw", PLATEAU_CASES)
def test_plateau_follows_pytorchs_rule(kw):
    rng = np.random.default_rng(0)
    values = list(np.cumsum(rng.normal(0, 1, 60)) * 0.1 + 5)   # a random walk: ups and downs
    expected = torch_plateau(values, 0.4, **kw)
    assert len(set(expected)) >= 3, "the case reduces the rate more than once"
    plateau = ReduceLROnPlateau(monitor="val_accuracy" if kw.get("mode") == "max" else "val_loss",
                                **kw)
    holder = Holder()
    plateau.on_train_begin(holder)
    key = plateau.monitor
    for epoch in range(len(values) + 1):
        holder.history_ = FakeHistory(key, values[:epoch])
        rate = plateau(epoch, 0.4)
        assert rate == (0.4 if epoch == 0 else expected[epoch - 1]), epoch
    # a resumed run: a fresh instance that sees the history first at epoch 37 agrees
    late = ReduceLROnPlateau(monitor=key, **kw)
    late.on_train_begin(holder)
    holder.history_ = FakeHistory(key, values[:37])
    assert late(37, 0.4) == expected[36]
    # auto mode is max for an accuracy
    assert ReduceLROnPlateau("val_accuracy")._maximize and not ReduceLROnPlateau("loss")._maximize


def test_plateau_in_fit_reduces_after_the_logged_metric_stalls(backend):
    X, y = problem()
    net = make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=1, threshold=0.02)
    h = net.fit(X, y, epochs=12, batch_size=16, learning_rate=0.5, seed=1,
                validation_data=(X[:40], y[:40]), lr_schedule=plateau)
    expected = torch_plateau(h["val_loss"], 0.5, factor=0.5, patience=1, threshold=0.02)
    assert h["learning_rate"] == [0.5] + expected[:-1]
    assert min(h["learning_rate"]) < 0.5, "the case reduces the rate"
    # a second fit starts afresh
    h2 = net.fit(X, y, epochs=2, batch_size=16, learning_rate=0.5, seed=1,
                 validation_data=(X[:40], y[:40]), lr_schedule=plateau)
    assert h2["learning_rate"][0] == 0.5


def test_resume_with_plateau_and_warmup_is_bit_identical(backend, tmp_path):
    """Stopped after epoch 4 of 8 in the middle of a plateau's count and of the warm-up
    (13 steps per epoch, warm-up 60 steps), resumed: the same state as an uninterrupted fit."""
    X, y = problem()
    fit = dict(epochs=8, batch_size=16, learning_rate=0.3, optimizer="momentum", seed=3,
               validation_data=(X[:50], y[:50]), warmup_steps=60, clip_value=0.05)

    def schedule():
        return ReduceLROnPlateau("val_loss", factor=0.5, patience=0, threshold=0.2)

    def network():
        return make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)

    whole = network()
    h = whole.fit(X, y, lr_schedule=schedule(), **fit)
    assert h["learning_rate"][-1] < 0.3 and len(set(h["learning_rate"])) > 5
    path = tmp_path / "ckpt"
    network().fit(X, y, checkpoint=path, lr_schedule=schedule(), **{**fit, "epochs": 4})
    resumed = network()
    h2 = resumed.fit(X, y, checkpoint=path, lr_schedule=schedule(), **fit)
    assert h2["learning_rate"] == h["learning_rate"]
    assert_same_state(bstate.capture(resumed), bstate.capture(whole), skip=TIMES)


def test_plateau_bad_input():
    for kw, name in [(dict(factor=1.0), "factor"), (dict(factor=0), "factor"),
                     (dict(factor=True), "factor"), (dict(patience=-1), "patience"),
                     (dict(patience=1.5), "patience"), (dict(min_lr=-1), "min_lr"),
                     (dict(cooldown=-2), "cooldown"), (dict(mode="up"), "mode"),
                     (dict(threshold=-0.1), "threshold"), (dict(threshold_mode="x"),
                                                           "threshold_mode"),
                     (dict(monitor=""), "monitor"), (dict(eps=math.nan), "eps")]:
        with pytest.raises(ValueError, match=name):
            ReduceLROnPlateau(**kw)
    with pytest.raises(RuntimeError, match="outside fit"):
        ReduceLROnPlateau()(0, 0.1)


def test_plateau_misuse_in_fit_is_refused_before_any_work(backend):
    X, y = problem()
    net = make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    before = net.get_parameters()
    with pytest.raises(ValueError, match="ReduceLROnPlateau monitors 'val_loss'"):
        net.fit(X, y, epochs=1, batch_size=16, learning_rate=0.1,
                lr_schedule=ReduceLROnPlateau())
    with pytest.raises(TypeError, match="lr_schedule=ReduceLROnPlateau"):
        net.fit(X, y, epochs=1, batch_size=16, learning_rate=0.1,
                callbacks=[ReduceLROnPlateau("loss")])
    for (W, b), (W0, b0) in zip(net.get_parameters(), before):
        assert (W == W0).all() and (b == b0).all()


# ---------------------------------------------------------------------- warm-up

def test_warmup_factors_are_the_linear_ramp():
    assert warmup_factors(0, 5, 0) is None and warmup_factors(0, 5, 1) is None
    assert warmup_factors(3, 5, 4) is None
    np.testing.assert_array_equal(warmup_factors(0, 3, 4), [0.25, 0.5, 0.75])
    np.testing.assert_array_equal(warmup_factors(2, 4, 4), [0.75, 1.0, 1.0, 1.0])


def test_warmup_composes_with_a_schedule_per_step(backend, monkeypatch):
    """Each step's rate is the schedule's rate of its epoch times min(1, (s + 1)/k): recorded
    from the rules the optimizer builds, on the backend's own path."""
    X, y = problem(n=40)
    net = make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    opt = backprop.SGD()
    seen = []
    rules = opt.rules

    def recording(learning_rate, *args, **kw):
        seen.append(learning_rate)
        return rules(learning_rate, *args, **kw)
    monkeypatch.setattr(opt, "rules", recording)
    net.fit(X, y, epochs=3, batch_size=16, learning_rate=0.2, optimizer=opt, seed=0,
            warmup_steps=5, lr_schedule=backprop.StepDecay(0.5, every=1), l1=1e-3)
    expected = [0.2 * 0.5 ** (s // 3) * min(1, (s + 1) / 5) for s in range(9)]
    if backend == "numba":      # the fused epoch builds one rule per epoch, rates per step
        assert seen == [0.2 * 0.5 ** e for e in range(3)]
    else:                       # (cupy's CUDA graph capture builds one rule more, first)
        assert len(seen) == 9 + (backend == "cupy")
        assert seen[-9:] == pytest.approx(expected, rel=1e-15)
    assert net.optimizer_.t == 9


def test_warmup_and_clip_value_bad_input(backend):
    X, y = problem(n=20)
    net = make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    for kw, name in [(dict(warmup_steps=-1), "warmup_steps"), (dict(warmup_steps=2.0),
                                                                "warmup_steps"),
                     (dict(warmup_steps=True), "warmup_steps"), (dict(clip_value=0), "clip_value"),
                     (dict(clip_value=-1.0), "clip_value"), (dict(clip_value=math.inf),
                                                             "clip_value"),
                     (dict(clip_value="1"), "clip_value"), (dict(diagnostics="yes"),
                                                            "diagnostics")]:
        with pytest.raises(ValueError, match=name):
            net.fit(X, y, epochs=1, batch_size=8, learning_rate=0.1, **kw)
    assert net.optimizer_ is None


# ---------------------------------------------------------------------- clip_value in update

@pytest.mark.parametrize("kind", [SGD_KIND, MOMENTUM_KIND, ADAM_KIND])
def test_update_clips_each_component_after_the_norm_factor(backend, dtype, kind):
    """Backend.update against its formula written out: g = clip(s · grad, -c, c) + l2 terms;
    NaN stays NaN."""
    net = make_network(backend, [3, 4], ["identity"], "mse", dtype=dtype)
    be = net.backend
    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(4, 3))
    g0 = rng.normal(size=(4, 3)) * 3
    scale, c, lr, l2 = 0.5, 0.4, 0.1, 0.01
    g = np.clip(scale * g0, -c, c) + 2 * l2 * p0
    assert (np.abs(scale * g0) > c).mean() > 0.3
    rule = UpdateRule(kind, lr, momentum=0.9, bias_correction1=0.1, bias_correction2=0.001,
                      l2=l2, grad_scale=scale, clip_value=c)
    if kind == SGD_KIND:
        expected, state = p0 - lr * g, ()
    elif kind == MOMENTUM_KIND:
        v = 0.2 * np.ones_like(p0)
        expected, state = p0 - lr * (0.9 * v + g), (v,)
    else:
        m, v = 0.1 * np.ones_like(p0), 0.2 * np.ones_like(p0)
        m1, v1 = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        expected, state = p0 - lr * (m1 / 0.1) / (np.sqrt(v1 / 0.001) + 1e-8), (m, v)
    param = be.asarray(p0, dtype)
    be.update(param, be.asarray(g0, dtype), tuple(be.asarray(s, dtype) for s in state), rule)
    assert_close(param, expected, 10 * RTOL[np.dtype(dtype)], "param")
    g0[0, 0] = np.nan
    param = be.asarray(p0, dtype)
    be.update(param, be.asarray(g0, dtype), tuple(be.asarray(s, dtype) for s in state), rule)
    out = be.to_numpy(param)
    assert np.isnan(out[0, 0]) and np.isfinite(out.ravel()[1:]).all()
