"""Batch normalization: the kernels and the network against a direct transcription of its
formulas (tests/bn_oracle.py), float64 central differences of the training-mode batch loss
for every parameter kind (W, b, γ, β), every backend against NumPy, training against
evaluation mode, and its input errors."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
from bn_oracle import (bn_backward, bn_eval, bn_running, bn_train, batch_loss, forward,
                       params_of, set_batch_norm)
from support import (DEVICE, EPOCH_PATH_BACKENDS, RTOL, assert_allocates_nothing,
                     assert_change_close, assert_close, make_network, random_targets)

import backprop
from backprop import to_numpy
from backprop.activations import ELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh

#: (layer sizes, hidden activations, output activation, loss, batch_norm, residual)
CASES = [
    ([3, 5, 4, 2], [Tanh(), ReLU()], Identity(), "mse", True, False),
    ([4, 6, 6, 3], [ELU(0.5), Sigmoid()], Softmax(), "cross_entropy", True, True),
    ([5, 5, 4, 4, 2], [LeakyReLU(0.2), Tanh(), Softmax()], Sigmoid(), "binary_cross_entropy",
     [True, False, True], [True, False, False]),
]
IDS = ["bn", "bn-residual", "per-layer"]


def network(backend, case, dtype="float64", seed=1, **kw):
    sizes, hidden, output, loss, bn, res = case
    return make_network(backend, sizes, hidden + [output], loss, dtype=dtype, seed=seed,
                        batch_norm=bn, residual=res, **kw)


def data(case, n, seed=0):
    rng = np.random.default_rng(seed)
    sizes, _, _, loss, _, _ = case
    return rng.normal(0, 1, (n, sizes[0])), random_targets(rng, loss, n, sizes[-1])


# ---------------------------------------------------------------- the kernels

@pytest.mark.parametrize("activation", [Identity(), Tanh(), ELU(0.5), Softmax()], ids=str)
def test_kernels_match_the_transcription(backend, dtype, activation):
    """batch_norm_forward (train, with and without the running update; eval) and
    batch_norm_backward of each backend against the paper's formulas."""
    rng = np.random.default_rng(0)
    B, n = 7, 5
    net = make_network(backend, [2, n, 1], ["identity", "identity"], dtype=dtype)
    be = net.backend
    tol = RTOL[np.dtype(dtype)]
    Z = rng.normal(1.0, 2.0, (B, n))
    gamma, beta = 1 + 0.3 * rng.normal(size=n), 0.3 * rng.normal(size=n)
    rm, rv = rng.normal(size=n), rng.uniform(0.5, 2, n)
    dev = lambda x: be.asarray(np.array(x, net.dtype))            # noqa: E731  (a copy)
    for train, momentum in ((True, 0.1), (True, 0.0), (False, 0.1)):
        z, g, b, m, v = dev(Z), dev(gamma), dev(beta), dev(rm), dev(rv)
        zhat, A = be.empty((B, n), net.dtype), be.empty((B, n), net.dtype)
        mean, inv_std = be.empty((n,), net.dtype), be.empty((n,), net.dtype)
        be.batch_norm_forward(z, g, b, m, v, train, momentum, 1e-5, activation, zhat, mean,
                              inv_std, A)
        if train:
            y, cache = bn_train(Z, gamma, beta)
            mu, var = cache[1], cache[2]
            want_m, want_v = bn_running(rm, rv, Z, 0.1) if momentum else (rm, rv)
        else:
            y = bn_eval(Z, gamma, beta, rm, rv)
            mu, var, want_m, want_v = rm, rv, rm, rv
        from bn_oracle import rows
        assert_close(A, rows(activation, y), tol, f"A train={train}")
        assert_close(zhat, (Z - mu) / np.sqrt(var + 1e-5), tol, "Zhat")
        assert_close(mean, mu, tol, "mean")
        assert_close(inv_std, 1 / np.sqrt(var + 1e-5), tol, "inv_std")
        assert_close(m, want_m, tol, "running_mean")
        assert_close(v, want_v, tol, "running_var")
        if momentum == 0.0:       # untouched, bit for bit
            assert np.array_equal(to_numpy(m), np.asarray(rm, net.dtype))
            assert np.array_equal(to_numpy(v), np.asarray(rv, net.dtype))
    # backward, out of place and in place
    _, cache = bn_train(Z, gamma, beta)
    dy = rng.normal(size=(B, n))
    want_dx, want_dg, want_db = bn_backward(dy, cache)
    zhat, inv = dev(cache[3]), dev(1 / np.sqrt(cache[2] + 1e-5))
    for in_place in (False, True):
        G = dev(dy)
        out = G if in_place else be.empty((B, n), net.dtype)
        dg, db = be.empty((n,), net.dtype), be.empty((n,), net.dtype)
        be.batch_norm_backward(G, zhat, dev(gamma), inv, dg, db, out)
        assert_close(out, want_dx, 50 * tol, f"dx in_place={in_place}")
        assert_close(dg, want_dg, tol, "dgamma")
        assert_close(db, want_db, tol, "dbeta")


@pytest.mark.parametrize("activation", [Tanh(), Softmax()], ids=str)
def test_split_kernels_on_parts_of_a_batch(backend, dtype, activation):
    """The kernels of a batch split across processes (backprop.distributed): each part's
    sums, added up as the ranks' Allreduce adds them, give the whole batch's forward
    (statistics, running averages, Ẑ, A) and backward (∂L/∂Z, dγ, dβ) of the
    transcription."""
    rng = np.random.default_rng(1)
    B, n, parts = 7, 5, ((0, 3), (3, 4), (4, 7))
    net = make_network(backend, [2, n, 1], ["identity", "identity"], dtype=dtype)
    be, dt = net.backend, net.dtype
    tol = RTOL[np.dtype(dtype)]
    Z = rng.normal(1.0, 2.0, (B, n))
    gamma, beta = 1 + 0.3 * rng.normal(size=n), 0.3 * rng.normal(size=n)
    rm, rv = rng.normal(size=n), rng.uniform(0.5, 2, n)
    dev = lambda x: be.asarray(np.array(x, dt))                   # noqa: E731  (a copy)
    host = lambda x: np.asarray(to_numpy(x), np.float64)          # noqa: E731
    Zs = [dev(Z[a:b]) for a, b in parts]
    part = be.empty((n,), dt)

    def allreduce(center):          # Σ over the parts of their sums, as one Allreduce
        total = np.zeros(n)
        for z in Zs:
            be.batch_norm_sums(z, center, part)
            total += host(part)
        return dev(total)
    mean = allreduce(None)
    be.scale(mean, 1.0 / B)
    squares = allreduce(mean)
    m, v = dev(rm), dev(rv)
    be.batch_norm_finish(mean, squares, B, m, v, 0.1, 1e-5, squares)       # in place
    inv_std = squares
    y, cache = bn_train(Z, gamma, beta)
    want_m, want_v = bn_running(rm, rv, Z, 0.1)
    assert_close(mean, cache[1], tol, "mean")
    assert_close(inv_std, 1 / np.sqrt(cache[2] + 1e-5), tol, "inv_std")
    assert_close(m, want_m, tol, "running_mean")
    assert_close(v, want_v, tol, "running_var")
    from bn_oracle import rows
    dy = rng.normal(size=(B, n))
    want_dx, want_dg, want_db = bn_backward(dy, cache)
    sums = np.zeros((2, n))
    Gs, Zhats = [], []
    for (a, b), z in zip(parts, Zs):
        zhat, A = be.empty((b - a, n), dt), be.empty((b - a, n), dt)
        be.batch_norm_apply(z, mean, inv_std, dev(gamma), dev(beta), activation, zhat, A)
        assert_close(A, rows(activation, y)[a:b], tol, "A")
        assert_close(zhat, cache[3][a:b], tol, "Zhat")
        G, dg, db = dev(dy[a:b]), be.empty((n,), dt), be.empty((n,), dt)
        be.batch_norm_backward_sums(G, zhat, dg, db)
        sums += [host(dg), host(db)]
        Gs.append(G)
        Zhats.append(zhat)
    assert_close(dev(sums[0]), want_dg, tol, "dgamma")
    assert_close(dev(sums[1]), want_db, tol, "dbeta")
    for (a, b), G, zhat in zip(parts, Gs, Zhats):
        be.batch_norm_backward_apply(G, zhat, dev(gamma), inv_std, dev(sums[0]), dev(sums[1]),
                                     B, G)                                # in place
        assert_close(G, want_dx[a:b], 50 * tol, "dx")


def test_one_row_batch_keeps_the_running_variance_finite(backend):
    """B = 1: the unbiased variance is undefined; the update uses the biased one (0)."""
    be = make_network(backend, [2, 3, 1], ["identity", "identity"], dtype="float64").backend
    dev = lambda x: be.asarray(np.asarray(x, np.float64))          # noqa: E731
    z, m, v = dev([[1.0, 2.0, 3.0]]), dev(np.zeros(3)), dev(np.ones(3))
    out = [be.empty((1, 3), np.float64) for _ in range(2)] + [be.empty((3,), np.float64)
                                                              for _ in range(2)]
    be.batch_norm_forward(z, dev(np.ones(3)), dev(np.zeros(3)), m, v, True, 0.1, 1e-5,
                          Identity(), out[0], out[2], out[3], out[1])
    assert_close(m, [0.1, 0.2, 0.3], 1e-12, "running_mean")
    assert_close(v, [0.9, 0.9, 0.9], 1e-12, "running_var")
    assert_close(out[1], np.zeros((1, 3)), 1e-12, "A")


# ---------------------------------------------------------------- the network

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradients_match_finite_differences(backend, case):
    """net.backward (W, b, γ, β) against float64 central differences of the transcribed
    training-mode batch loss."""
    rng = np.random.default_rng(2)
    net = network(backend, case)
    set_batch_norm(net, rng)
    X, Y = data(case, 6)
    p = params_of(net)
    acts, bn, res = net.activations, net.batch_norm, net.residual
    f = lambda: batch_loss(p, X, Y, acts, net.loss_function, bn, res)   # noqa: E731
    grads = net.backward(X, Y)
    kinds = [("W", l, dW) for l, (dW, _) in enumerate(grads)] + \
            [("b", l, db) for l, (_, db) in enumerate(grads)]
    for l, pair in enumerate(grads.batch_norm):
        assert (pair is not None) == bn[l]
        if pair is not None:
            kinds += [("gamma", l, pair[0]), ("beta", l, pair[1])]
    for kind, l, analytic in kinds:
        (numeric,) = oracles.finite_differences(f, [p[kind][l]], h=1e-6)
        a = np.asarray(to_numpy(analytic))
        err = np.linalg.norm(a - numeric)
        scale = np.linalg.norm(a) + np.linalg.norm(numeric)
        assert err <= 1e-6 * scale + 1e-9, f"{kind}{l + 1}: {a} vs {numeric}"
    # the biases of a normalized layer have no effect in training mode: both are ~0
    for l, on in enumerate(bn):
        if on:
            assert np.abs(to_numpy(grads[l][1])).max() < 1e-12


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_evaluation_uses_the_running_statistics(backend, case):
    """forward/predict/loss/evaluate equal the transcription in evaluation mode and change
    nothing; backward equals the training-mode transcription and changes nothing."""
    rng = np.random.default_rng(3)
    net = network(backend, case)
    set_batch_norm(net, rng)
    X, Y = data(case, 9)
    p = params_of(net)
    want = forward(p, X, net.activations, net.batch_norm, net.residual, "eval")
    assert_close(net.predict(X), want, 1e-10, "predict")
    assert_close(net.forward(X), want, 1e-10, "forward")
    assert net.loss(X, Y) == pytest.approx(
        batch_loss(p, X, Y, net.activations, net.loss_function, net.batch_norm, net.residual,
                   "eval"), rel=1e-10)
    net.evaluate(X, Y)
    net.backward(X, Y)
    assert net._batch_loss(*net._prepare(X, Y)) == pytest.approx(
        batch_loss(p, X, Y, net.activations, net.loss_function, net.batch_norm, net.residual),
        rel=1e-10)
    after = params_of(net)
    for key in p:
        for a, b in zip(after[key], p[key]):
            assert (a is None and b is None) or np.array_equal(a, b), key
    # with the running statistics set to this batch's, evaluation equals training mode
    # (up to the unbiased/biased variance: set the biased one)
    be = net.backend
    a = np.asarray(X, np.float64)
    for l in range(net.n_layers - 1):
        z = a @ p["W"][l].T + p["b"][l]
        if net.batch_norm[l]:
            be.copy(be.asarray(z.mean(0), net.dtype), net.running_mean[l])
            be.copy(be.asarray(z.var(0), net.dtype), net.running_var[l])
            z = bn_train(z, p["gamma"][l], p["beta"][l])[0]
        from bn_oracle import rows
        h = rows(net.activations[l], z)
        a = h + a if net.residual[l] else h
    assert_close(net.predict(X), forward(p, X, net.activations, net.batch_norm, net.residual,
                                         "train"), 1e-10, "eval with batch statistics")


@pytest.mark.parametrize("clip", [None, 1e9], ids=["folded-sgd", "optimizer-step"])
@pytest.mark.parametrize("case", CASES[1:2], ids=IDS[1:2])
def test_a_training_step_matches_the_transcription(backend, dtype, case, clip):
    """One SGD step with l2 > 0 from random γ, β: the running statistics update as torch's,
    W, b, γ, β change by η times the transcribed gradient, γ and β without the penalty.
    Both SGD paths: the update folded into the backward pass, and (a clip_norm that never
    clips) the optimizer's step over every parameter."""
    rng = np.random.default_rng(4)
    net = network(backend, case, dtype=dtype)
    set_batch_norm(net, rng)
    X, Y = data(case, 8)
    p = params_of(net)
    lr, l2 = 0.05, 0.3
    # the transcribed gradient: central differences of the transcribed loss (float64)
    f = lambda: batch_loss(p, X, Y, net.activations, net.loss_function, net.batch_norm,   # noqa
                           net.residual)
    grads = {k: oracles.finite_differences(f, [x for x in p[k] if x is not None], h=1e-6)
             for k in ("W", "b", "gamma", "beta")}
    net.fit(X, Y, epochs=1, batch_size=8, learning_rate=lr, l2=l2, shuffle=False,
            clip_norm=clip)
    after = params_of(net)
    tol = {np.dtype("float64"): 1e-6, np.dtype("float32"): 2e-3}[net.dtype]
    for k in ("W", "b", "gamma", "beta"):
        before = [x for x in p[k] if x is not None]
        now = [x for x in after[k] if x is not None]
        for i, (b0, b1, g) in enumerate(zip(before, now, grads[k])):
            step = g + (2 * l2 * b0 if k == "W" else 0)
            if k == "b" and i < len(net.batch_norm) and net.batch_norm[i]:
                assert_close(b1, b0, 10 * RTOL[net.dtype], "b of a normalized layer")
                continue                           # its gradient is 0: b does not move
            assert_change_close(b1, b0 - lr * step, b0, tol, 1, f"{k}[{i}]")
    a = np.asarray(X, np.float64)
    for l in range(net.n_layers - 1):       # the running statistics of each normalized layer
        z = a @ p["W"][l].T + p["b"][l]
        if net.batch_norm[l]:
            m, v = bn_running(p["running_mean"][l], p["running_var"][l], z)
            assert_close(after["running_mean"][l], m, RTOL[net.dtype] * 10, "running_mean")
            assert_close(after["running_var"][l], v, RTOL[net.dtype] * 10, "running_var")
            z = bn_train(z, p["gamma"][l], p["beta"][l])[0]
        from bn_oracle import rows
        h = rows(net.activations[l], z)
        a = h + a if net.residual[l] else h


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_every_backend_fits_as_numpy(backend, dtype, optimizer):
    """A fit with batch normalization and residual connections (every optimizer, clipping,
    dropout) gives the NumPy backend's parameters, running statistics and losses."""
    case = CASES[1]
    X, Y = data(case, 37, seed=5)
    kw = dict(epochs=3, batch_size=8, learning_rate=0.05, optimizer=optimizer, seed=3,
              clip_norm=5.0 if optimizer == "momentum" else None)
    nets = [network(name, case, dtype=dtype, seed=7) for name in (backend, "numpy")]
    starts = [params_of(n) for n in nets]
    hist = [n.fit(X, Y, **kw) for n in nets]
    tol = {np.dtype("float64"): 1e-9, np.dtype("float32"): 2e-3}[nets[0].dtype]
    ours, ref = (params_of(n) for n in nets)
    for key in ours:
        for i, (a, b, b0) in enumerate(zip(ours[key], ref[key], starts[1][key])):
            if key == "b" and i < len(nets[1].batch_norm) and nets[1].batch_norm[i]:
                assert np.array_equal(a, starts[0][key][i]), "b of a normalized layer moved"
                continue
            if b is not None:
                assert_change_close(a, b, b0, tol, 15, f"{key}[{i}]")
    assert hist[0]["loss"] == pytest.approx(hist[1]["loss"], rel=tol)
    assert nets[0].evaluate(X, Y)["loss"] == pytest.approx(nets[1].evaluate(X, Y)["loss"],
                                                           rel=tol)


def test_backend_gradients_equal_numpy(backend, dtype):
    case = CASES[2]
    X, Y = data(case, 11, seed=6)
    ours, ref = (network(name, case, dtype=dtype, seed=8) for name in (backend, "numpy"))
    rng = np.random.default_rng(1)
    set_batch_norm(ours, rng)
    set_batch_norm(ref, np.random.default_rng(1))
    tol = RTOL[np.dtype(dtype)]
    assert_close(ours.forward(X), ref.forward(X), tol, "forward")
    g1, g2 = ours.backward(X, Y), ref.backward(X, Y)
    for (a, b), (c, d) in zip(g1, g2):
        assert_close(a, c, 10 * tol, "dW")
    for p, q in zip(g1.batch_norm, g2.batch_norm):
        if q is not None:
            assert_close(p[0], q[0], 10 * tol, "dgamma")
            assert_close(p[1], q[1], 10 * tol, "dbeta")


def test_running_statistics_change_only_in_training_steps(backend):
    case = CASES[0]
    net = network(backend, case, dtype="float32")
    X, Y = data(case, 20)
    start = net.get_batch_norm()
    assert start[0]["momentum"] == 0.1 and start[0]["eps"] == 1e-5
    assert np.array_equal(start[0]["gamma"], np.ones(5)) and not start[0]["beta"].any()
    assert not start[0]["running_mean"].any() and np.array_equal(start[0]["running_var"],
                                                                 np.ones(5))
    net.predict(X), net.loss(X, Y), net.evaluate(X, Y), net.backward(X, Y)
    for a, b in zip(net.get_batch_norm(), start):
        for k in ("running_mean", "running_var", "gamma", "beta"):
            assert np.array_equal(a[k], b[k])
    net.fit(X, Y, epochs=1, batch_size=5, learning_rate=0.01)
    moved = net.get_batch_norm()
    assert not np.array_equal(moved[0]["running_mean"], start[0]["running_mean"])
    assert not np.array_equal(moved[1]["running_var"], start[1]["running_var"])


def test_bias_penalty_and_optimizer_state_cover_gamma_and_beta(backend):
    """γ, β have optimizer state of their own (Adam's m, v) and no L1/L2 penalty: with a
    zero data gradient (identical rows: every Ẑ is 0, so dγ = 0), l1/l2 move W but not γ."""
    case = CASES[0]
    net = network(backend, case, dtype="float64")
    X = np.ones((4, 3))
    Y = np.zeros((4, 2))
    net.fit(X, Y, epochs=1, batch_size=4, learning_rate=0.1, optimizer="adam", l1=0.5, l2=0.5)
    assert len(net.optimizer_.state) == len(net.parameters()) == 6 + 4
    bn = net.get_batch_norm()
    assert np.array_equal(bn[0]["gamma"], np.ones(5))          # dγ = 0 and no penalty


# ---------------------------------------------------------------- bad input

def test_bad_flags():
    with pytest.raises(TypeError, match="batch_norm"):
        backprop.Network([2, 3, 1], "tanh", batch_norm="yes")
    with pytest.raises(ValueError, match=r"batch_norm: expected one flag per hidden layer \(2\)"):
        backprop.Network([2, 3, 3, 1], "tanh", batch_norm=[True])
    with pytest.raises(TypeError, match="residual"):
        backprop.Network([2, 3, 1], "tanh", residual=1)


# ---------------------------------------------------------------- the whole-epoch paths

@pytest.mark.parametrize("backend", [pytest.param(b, marks=[pytest.mark.gpu] if DEVICE[b] == "cuda"
                                                  else []) for b in EPOCH_PATH_BACKENDS],
                         indirect=True)
@pytest.mark.parametrize("optimizer,clip,dropout", [("sgd", None, 0.0), ("adam", 1.0, 0.2),
                                                    ("momentum", None, 0.0)])
def test_cuda_graphs_run_and_change_nothing(backend, dtype, optimizer, clip, dropout):
    """On cupy the epoch runs as CUDA graph replays with batch normalization and residual
    connections, bit-identical to the same kernels launched eagerly; numba declines its fused
    epoch for these networks (the measured fallback: step by step), with the same result."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(100, 8))
    Y = np.eye(3)[rng.integers(0, 3, 100)]
    results = []
    for fast in (False, True):
        net = make_network(backend, [8, 8, 8, 3], ["relu", "tanh", "softmax"], "cross_entropy",
                           dtype=dtype, seed=3, batch_norm=True, residual=True, dropout=dropout)
        if backend == "cupy":
            net.backend.graphs = fast
        calls = []
        original = net.backend.train_epoch
        net.backend.train_epoch = lambda *a, **k: calls.append(original(*a, **k)) or calls[-1]
        hist = net.fit(X, Y, epochs=2, batch_size=16, learning_rate=0.05, optimizer=optimizer,
                       clip_norm=clip, seed=4)
        if backend == "cupy":
            plan = net.backend._plans.get(net)
            assert calls == [fast, fast], "the CUDA graph path did not take the epochs"
            assert (plan is not None and plan.graph is not None) == fast
        else:
            assert calls == [False, False], "numba's fused epoch ran batch normalization"
        results.append((hist["loss"], params_of(net)))
    (loss0, p0), (loss1, p1) = results
    assert loss0 == loss1
    for key in p0:
        for a, b in zip(p0[key], p1[key]):
            assert (a is None and b is None) or np.array_equal(a, b), key


@pytest.mark.parametrize("optimizer,clip", [("sgd", None), ("adam", 1.0)])
@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_a_step_allocates_nothing(backend_name, optimizer, clip):
    """Once the workspace exists, a step with batch normalization and residual connections
    allocates no array (every array here is >= 128 KiB, a step's transient peak must stay
    below that)."""
    net = make_network(backend_name, [128, 256, 256, 128], ["relu", "tanh", "softmax"],
                       "cross_entropy", seed=0, dropout=[0.1, 0.0], batch_norm=True,
                       residual=True)
    assert net.residual == [False, True]
    rng = np.random.default_rng(0)
    X = net.backend.asarray(rng.normal(size=(256, 128)), net.dtype)
    Y = net.backend.asarray(np.eye(128)[rng.integers(0, 128, 256)], net.dtype)
    opt = backprop.optimizers.get(optimizer)
    opt.reset(net.backend, net.parameters())
    ws = net.workspace(256)
    assert_allocates_nothing(lambda: net.train_step(ws, X, Y, opt, 0.01, clip_norm=clip))
