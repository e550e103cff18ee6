"""Sample weights: the weighted mean loss Σ w_i L_i / Σ w_i and its exact gradient, on every
backend and path (step by step, numba's fused epoch, CUDA graphs).

Oracles: float64 central finite differences of ``net.loss(X, Y, w)``; the per-sample loss and
backpropagation of :mod:`backprop.reference`, weighted (tests/oracles.py); a weight of 2 is
the sample repeated (full batch); uniform weights are no weights (a power of two: bit for
bit); every backend's weighted fit equals the NumPy backend's.
"""

from __future__ import annotations

import warnings

import numpy as np
import oracles
import pytest
import support
from support import assert_change_close, assert_close, backend_paths, make_network, on_path

from backprop import Network, reference

RTOL = support.RTOL
#: (hidden, output, loss): every loss, and mse through a softmax (the Jacobian output delta)
CASES = [("tanh", "softmax", "cross_entropy"), ("relu", "sigmoid", "binary_cross_entropy"),
         ("sigmoid", "identity", "mse"), ("elu", "softmax", "mse")]


def problem(loss: str, n: int = 11, sizes=(3, 4, 3), seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]))
    Y = support.random_targets(rng, loss, n, sizes[-1])
    w = rng.uniform(0.0, 3.0, n)
    w[1] = 0.0                                   # a zero weight among them
    return X, Y, w


def network(backend: str, case, dtype: str = "float64", sizes=(3, 4, 3), **kw) -> Network:
    hidden, output, loss = case
    return make_network(backend, list(sizes), [hidden] * (len(sizes) - 2) + [output], loss,
                        dtype=dtype, seed=5, **kw)


def grads_host(net, X, Y, w=None):
    return [(net.backend.to_numpy(dW), net.backend.to_numpy(db))
            for dW, db in net.backward(X, Y, sample_weight=w)]


# ---------------------------------------------------------------- loss and gradient

@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_gradient_equals_finite_differences(backend, case):
    """backward(X, Y, w) is the gradient of loss(X, Y, w) = Σ w L / Σ w (float64, central
    differences over every parameter)."""
    X, Y, w = problem(case[2])
    net = network(backend, case)
    params = [p for pair in net.get_parameters() for p in pair]

    def f():
        net.set_parameters(list(zip(params[0::2], params[1::2])))
        return net.loss(X, Y, sample_weight=w)

    expected = oracles.finite_differences(f, params)
    net.set_parameters(list(zip(params[0::2], params[1::2])))
    got = [g for pair in grads_host(net, X, Y, w) for g in pair]
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e, 1e-6, f"parameter {i}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_loss_gradient_and_accuracy_equal_the_per_sample_reference(backend, case):
    X, Y, w = problem(case[2])
    net = network(backend, case)
    W, b = zip(*net.get_parameters())
    acts, loss = net.activations, net.loss_function
    Yh = Y
    expected = oracles.weighted_loss_sum(X, Yh, w, W, b, acts, loss) / w.sum()
    assert_close(net.loss(X, Y, sample_weight=w), expected, 1e-12, "loss")
    dW, db = oracles.weighted_gradients(X, Yh, w, W, b, acts, loss)
    for l, (g, (gW, gb)) in enumerate(zip(zip(dW, db), grads_host(net, X, Y, w))):
        assert_close(gW, g[0], 1e-10, f"dW{l + 1}")
        assert_close(gb, g[1], 1e-10, f"db{l + 1}")
    result = net.evaluate(X, Y, sample_weight=w)
    assert result["loss"] == pytest.approx(expected, rel=1e-12)
    if loss.classification:
        out = np.array([reference.forward_propagation(x, W, b, acts)[0][-1] for x in X])
        if loss.name == "cross_entropy":
            right = (out.argmax(1) == Yh.argmax(1)).astype(float)
        else:
            right = ((out >= 0.5) == (Yh >= 0.5)).mean(axis=1)
        assert result["accuracy"] == pytest.approx(np.sum(w * right) / np.sum(w), rel=1e-12)


def test_a_weight_of_two_is_the_sample_repeated(backend):
    case = CASES[0]
    X, Y, w = problem(case[2])
    w = np.ones(len(X))
    w[[2, 7]] = 2.0
    Xr, Yr = np.concatenate([X, X[[2, 7]]]), np.concatenate([Y, Y[[2, 7]]])
    net = network(backend, case)
    assert net.loss(X, Y, sample_weight=w) == pytest.approx(net.loss(Xr, Yr), rel=1e-13)
    for (gW, gb), (rW, rb) in zip(grads_host(net, X, Y, w), grads_host(net, Xr, Yr)):
        assert_close(gW, rW, 1e-12, "dW")
        assert_close(gb, rb, 1e-12, "db")
    # full-batch fits: the same trajectory
    nets = [network(backend, case) for _ in range(2)]
    before = nets[0].get_parameters()
    h_w = nets[0].fit(X, Y, sample_weight=w, epochs=3, batch_size=64, learning_rate=0.1,
                      optimizer="adam", seed=1)
    h_r = nets[1].fit(Xr, Yr, epochs=3, batch_size=64, learning_rate=0.1, optimizer="adam",
                      seed=1)
    np.testing.assert_allclose(h_w["loss"], h_r["loss"], rtol=1e-12)
    for (W0, b0), (W1, b1), (Wi, bi) in zip(nets[0].get_parameters(), nets[1].get_parameters(),
                                             before):
        assert_change_close(W0, W1, Wi, 1e-10, 3, "W")
        assert_change_close(b0, b1, bi, 1e-10, 3, "b")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_weights_are_no_weights(backend, dtype):
    """Weights all 2.0 (a power of two: w · (1 / Σ w) rounds exactly to 1 / B) train bit for bit
    as no weights; weights all 0.3 to rounding. Partial last batch, shuffled."""
    case = CASES[0]
    X, Y, _ = problem(case[2], n=23)
    runs = {}
    for name, w in (("none", None), ("two", np.full(23, 2.0)), ("0.3", np.full(23, 0.3))):
        net = network(backend, case, dtype)
        h = net.fit(X, Y, sample_weight=w, epochs=2, batch_size=5, learning_rate=0.1,
                    optimizer="momentum", seed=3)
        runs[name] = (h["loss"], net.get_parameters())
    assert runs["two"][0] == runs["none"][0]
    for (W2, b2), (W0, b0) in zip(runs["two"][1], runs["none"][1]):
        np.testing.assert_array_equal(W2, W0)
        np.testing.assert_array_equal(b2, b0)
    tol = RTOL[np.dtype(dtype)] * 10
    np.testing.assert_allclose(runs["0.3"][0], runs["none"][0], rtol=tol)
    for (W3, b3), (W0, b0) in zip(runs["0.3"][1], runs["none"][1]):
        assert_close(W3, W0, tol, "W")
        assert_close(b3, b0, tol, "b")


# ---------------------------------------------------------------- whole fits, every path

FIT_CASES = [("sgd", None), ("adam", None), ("sgd", 0.5)]


@pytest.mark.parametrize("backend,path", backend_paths(), indirect=["backend"])
@pytest.mark.parametrize("optimizer,clip", [c for c in FIT_CASES if c[1] is None])
def test_fit_equals_the_weighted_reference_and_numpy(backend, path, optimizer, clip, monkeypatch):
    """A weighted fit (shuffled, a partial last batch, a batch of zero weights possible) on
    every backend and path equals the per-sample reference and the NumPy backend."""
    check_weighted_fit(backend, path, optimizer, clip, monkeypatch)


# numba's fused epoch declines clipping by norm: such fits run (and are tested on) its steps path
@pytest.mark.parametrize("backend,path",
                         backend_paths(skip=lambda b, path: b == "numba" and path == "epoch"),
                         indirect=["backend"])
@pytest.mark.parametrize("optimizer,clip", [c for c in FIT_CASES if c[1] is not None])
def test_clipped_fit_equals_the_weighted_reference_and_numpy(backend, path, optimizer, clip,
                                                             monkeypatch):
    check_weighted_fit(backend, path, optimizer, clip, monkeypatch)


def check_weighted_fit(backend, path, optimizer, clip, monkeypatch):
    case = CASES[0]
    X, Y, w = problem(case[2], n=29, sizes=(4, 8, 3), seed=2)
    w[:5] = 0.0
    net = network(backend, case, sizes=(4, 8, 3))
    calls = on_path(monkeypatch, net, path)
    ref = network("numpy", case, sizes=(4, 8, 3))
    before = ref.get_parameters()
    kw = dict(sample_weight=w, epochs=2, batch_size=8, learning_rate=0.2, optimizer=optimizer,
              clip_norm=clip, seed=4)
    hist = net.fit(X, Y, **kw)
    hist_ref = ref.fit(X, Y, **kw)
    support.assert_path_ran(calls, path, folded_sgd=optimizer == "sgd" and clip is None)
    if backend == "cupy" and path == "epoch":
        plan = net.backend._plans.get(net)
        assert plan is not None and plan.graph is not None, "the CUDA graph did not run"
    factors: list = []
    W, b, losses = oracles.fit(*zip(*before), X, Y, net.activations,
                               net.loss_function, optimizer=optimizer, learning_rate=0.2,
                               epochs=2, batch_size=8, orders=oracles.epoch_orders(29, 2, True, 4),
                               clip_norm=clip, clip_factors=factors, sample_weight=w)
    np.testing.assert_allclose(hist["loss"], losses, rtol=1e-10)
    np.testing.assert_allclose(hist["loss"], hist_ref["loss"], rtol=1e-10)
    for l, ((Wn, bn), (Wr, br), (Wi, bi)) in enumerate(zip(net.get_parameters(),
                                                           ref.get_parameters(), before)):
        assert_change_close(Wn, W[l], Wi, 1e-8, 8, f"W{l + 1} vs reference")
        assert_change_close(bn, b[l], bi, 1e-8, 8, f"b{l + 1} vs reference")
        assert_change_close(Wn, Wr, Wi, 1e-9, 8, f"W{l + 1} vs numpy")
        assert_change_close(bn, br, bi, 1e-9, 8, f"b{l + 1} vs numpy")


@pytest.mark.parametrize("backend,path", backend_paths(), indirect=["backend"])
def test_a_batch_of_zero_weights_takes_no_step(backend, path, monkeypatch):
    """Stored order, batches of 4: the first batch's weights are all 0, so its SGD step changes
    nothing (no NaN) and the fit equals one on the second batch alone."""
    case = CASES[0]
    X, Y, _ = problem(case[2], n=8)
    w = np.array([0, 0, 0, 0, 1, 3, 0.5, 2.0])
    nets = [network(backend, case, dtype="float32") for _ in range(2)]
    calls = on_path(monkeypatch, nets[0], path)
    h0 = nets[0].fit(X, Y, sample_weight=w, epochs=1, batch_size=4, learning_rate=0.5,
                     shuffle=False)
    support.assert_path_ran(calls, path, folded_sgd=True)
    h1 = nets[1].fit(X[4:], Y[4:], sample_weight=w[4:], epochs=1, batch_size=4,
                     learning_rate=0.5, shuffle=False)
    for (W0, b0), (W1, b1) in zip(nets[0].get_parameters(), nets[1].get_parameters()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)
    assert h0["loss"][0] == pytest.approx(h1["loss"][0], rel=1e-6)   # the same weighted mean


# ---------------------------------------------------------------- with the rest of fit

def test_dropout_draws_the_same_masks_with_weights(backend):
    """Weights do not touch dropout's draws: uniform power-of-two weights with dropout train
    bit for bit as no weights; other weights train differently."""
    case = CASES[0]
    X, Y, w = problem(case[2], n=20, sizes=(4, 8, 3))
    out = []
    for weights in (None, np.full(20, 4.0), w):
        net = network(backend, case, sizes=(4, 8, 3), dropout=0.3)
        net.fit(X, Y, sample_weight=weights, epochs=2, batch_size=6, learning_rate=0.2, seed=5)
        out.append(net.get_parameters()[0][0])
    np.testing.assert_array_equal(out[1], out[0])
    assert not np.allclose(out[2], out[0])


def test_checkpoint_resume_with_the_same_weights(backend, tmp_path):
    """The weights are data, not state: a fit resumed from its checkpoint with the same weights
    ends bit for bit as the uninterrupted one."""
    case = CASES[0]
    X, Y, w = problem(case[2], n=20)
    kw = dict(sample_weight=w, batch_size=6, learning_rate=0.1, optimizer="adam", seed=2)
    straight = network(backend, case)
    h = straight.fit(X, Y, epochs=4, **kw)
    path = tmp_path / "ck"
    network(backend, case).fit(X, Y, epochs=2, checkpoint=path, **kw)
    resumed = network(backend, case)
    h2 = resumed.fit(X, Y, epochs=4, checkpoint=path, **kw)
    assert h2["loss"] == h["loss"]
    for (W0, b0), (W1, b1) in zip(straight.get_parameters(), resumed.get_parameters()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_divergence_rolls_back_a_weighted_fit():
    X, Y, w = problem("mse", n=20)
    net = network("numpy", CASES[2], dtype="float32")
    good = net.fit(X, Y, sample_weight=w, epochs=1, batch_size=5, learning_rate=0.01)
    saved = net.get_parameters()
    with pytest.warns(RuntimeWarning, match="diverged at epoch 0"):
        h = net.fit(X, Y * 1e30, sample_weight=w * 1e30, epochs=3, batch_size=5,
                    learning_rate=1e30)
    assert h.diverged_epoch == 0 and good.epochs == 1
    for (W0, b0), (W1, b1) in zip(saved, net.get_parameters()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_weighted_validation_data():
    case = CASES[0]
    X, Y, w = problem(case[2], n=20)
    net = network("numpy", case)
    h = net.fit(X[:14], Y[:14], validation_data=(X[14:], Y[14:], w[14:]), epochs=1,
                batch_size=7, learning_rate=0.1)
    expected = net.evaluate(X[14:], Y[14:], sample_weight=w[14:])
    assert h["val_loss"] == [expected["loss"]]
    assert h["val_accuracy"] == [expected["accuracy"]]
    with pytest.raises(ValueError, match=r"validation_data\[2\]"):
        net.fit(X, Y, validation_data=(X, Y, -w), epochs=1, batch_size=7, learning_rate=0.1)


# ---------------------------------------------------------------- bad weights

BAD = [("2-D", lambda w: w.reshape(-1, 1), ValueError, "1-D"),
       ("short", lambda w: w[:-1], ValueError, "has 10 weights"),
       ("NaN", lambda w: np.where(np.arange(len(w)) == 3, np.nan, w), ValueError, "NaN"),
       ("Inf", lambda w: np.where(np.arange(len(w)) == 3, np.inf, w), ValueError, "NaN or Inf"),
       ("negative", lambda w: -w, ValueError, ">= 0"),
       ("zeros", lambda w: 0 * w, ValueError, "every weight is 0"),
       ("tiny in float32", lambda w: w * 1e-50, ValueError, "every weight is 0"),
       ("strings", lambda w: np.array(["a"] * len(w)), TypeError, "numeric"),
       ("scalar", lambda w: 2.0, ValueError, "1-D")]


@pytest.mark.parametrize("what,make,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_weights_are_refused_before_any_work(what, make, error, match):
    case = CASES[0]
    X, Y, w = problem(case[2])
    w = w + 0.1
    net = network("numpy", case, dtype="float32")
    before = support.state_arrays(net)
    for call in (lambda: net.fit(X, Y, sample_weight=make(w), epochs=1, batch_size=4,
                                 learning_rate=0.1),
                 lambda: net.loss(X, Y, sample_weight=make(w)),
                 lambda: net.evaluate(X, Y, sample_weight=make(w)),
                 lambda: net.backward(X, Y, sample_weight=make(w))):
        with pytest.raises(error, match=match) as info:
            call()
        assert "sample_weight" in str(info.value)
    support.assert_same_state(support.state_arrays(net), before, "a refused call")


def test_pandas_and_integer_weights():
    pd = pytest.importorskip("pandas")
    case = CASES[0]
    X, Y, _ = problem(case[2])
    w = np.arange(1, 12)
    net = network("numpy", case)
    expected = net.loss(X, Y, sample_weight=w.astype(float))
    assert net.loss(X, Y, sample_weight=w) == expected
    assert net.loss(X, Y, sample_weight=pd.Series(w)) == expected
    assert net.loss(X, Y, sample_weight=pd.Series(w, dtype="Int64")) == expected
    assert net.loss(X, Y, sample_weight=list(w)) == expected
    with pytest.raises(ValueError, match="sample_weight: contains NaN"):
        net.loss(X, Y, sample_weight=pd.Series([1.0, None] + [1.0] * 9, dtype="Float64"))


def test_no_weights_take_no_new_work(backend):
    """sample_weight=None keeps the unweighted kernels: the weighted ones are never passed a
    weight (and an all-ones weight array gives the same loss to rounding)."""
    case = CASES[0]
    X, Y, _ = problem(case[2])
    net = network(backend, case)
    be = net.backend
    seen = []
    original = be.output_delta

    def spy(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("sample_weight"))
        return original(*args, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        be.output_delta = spy
        try:
            net.fit(X, Y, epochs=1, batch_size=4, learning_rate=0.1, optimizer="adam")
            net.backward(X, Y)
        finally:
            del be.output_delta
    assert seen and all(s is None for s in seen)
    assert net.loss(X, Y, sample_weight=np.ones(len(X))) == pytest.approx(net.loss(X, Y),
                                                                          rel=1e-14)


def test_the_readme_example_runs(capsys):
    """README's "Sample weights and validation_split" example, as written."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("### Sample weights and validation_split", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    val_loss, result = capsys.readouterr().out.split(" ", 1)
    assert float(val_loss) == pytest.approx(eval(result)["loss"], rel=1e-6)


def test_batch_norm_statistics_ignore_the_weights(backend):
    """The documented exception to 'a weight of 2 is the sample repeated': batch
    normalization's batch statistics and running averages are the rows' unweighted ones (as
    PyTorch's BatchNorm1d and Keras' BatchNormalization, which take no weights). Oracle: one
    full-batch step's running mean and variance, 0.9 · init + 0.1 · the batch's plain mean and
    unbiased variance of Z = X W₁ᵀ + b₁ over every row, zero-weight rows included."""
    case = ("tanh", "softmax", "cross_entropy")
    X, Y, w = problem(case[2])
    w[[3, 4, 5]] = 0.0                            # rows that weigh nothing still count
    net = network(backend, case, batch_norm=True)
    W1, b1 = net.get_parameters()[0]
    Z = X @ W1.T + b1
    net.fit(X, Y, sample_weight=w, epochs=1, batch_size=len(X), learning_rate=0.1,
            optimizer="sgd", seed=0)
    bn = net.get_batch_norm()[0]
    assert_close(bn["running_mean"], 0.1 * Z.mean(axis=0), 1e-12, "running_mean")
    assert_close(bn["running_var"], 0.9 + 0.1 * Z.var(axis=0, ddof=1), 1e-12, "running_var")
    kept = w > 0                                  # the weighted statistics would differ
    assert not np.allclose(bn["running_mean"], 0.1 * Z[kept].mean(axis=0), rtol=1e-3)
    # and a weight of 2 is not the row repeated: the repeated row moves the statistics
    w2 = np.ones(len(X))
    w2[2] = 2.0
    a, b = network(backend, case, batch_norm=True), network(backend, case, batch_norm=True)
    a.fit(X, Y, sample_weight=w2, epochs=1, batch_size=64, learning_rate=0.1, optimizer="sgd",
          seed=0)
    b.fit(np.concatenate([X, X[[2]]]), np.concatenate([Y, Y[[2]]]), epochs=1, batch_size=64,
          learning_rate=0.1, optimizer="sgd", seed=0)
    assert_close(a.get_batch_norm()[0]["running_mean"], 0.1 * Z.mean(axis=0), 1e-12, "mean")
    assert not np.allclose(a.get_batch_norm()[0]["running_mean"],
                           b.get_batch_norm()[0]["running_mean"], rtol=1e-6)
