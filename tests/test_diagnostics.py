"""net.diagnose and fit(diagnostics=True): the measurements against the seeds' per-sample
algorithm (backprop.reference) in float64, the verdicts on networks built to have each
problem and on healthy ones, the thresholds at their boundaries, and that nothing changes."""

from __future__ import annotations

import inspect
import math
import warnings

import numpy as np
import pytest
from support import RTOL, assert_same_state, make_network, state_arrays
from test_resume import problem

import backprop
from backprop import diagnostics as dg
from backprop import reference
from backprop.diagnostics import DiagnosticWarning, LayerDiagnosis


def data(n=48, n_in=8, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(n, n_in))
    return X, np.argmax(X[:, :n_out], axis=1)


def kinds(d):
    return sorted({v.kind for v in d.verdicts})


# ---------------------------------------------------------------------- measurements

def test_measurements_match_the_per_sample_algorithm(backend, dtype):
    """Every per-layer number, recomputed from backprop.reference in float64."""
    X, y = data()
    acts = ["relu", "sigmoid", "tanh", "softmax"]
    net = make_network(backend, [8, 10, 9, 7, 3], acts, "cross_entropy", seed=2, dtype=dtype)
    params = net.get_parameters()
    params[0] = (params[0][0], params[0][1] - np.linspace(0, 1.5, 10))    # some dead units
    params[1] = (params[1][0] * 3, np.linspace(-12, 12, 9))                # saturation
    net.set_parameters(params)
    d = net.diagnose(X, y, learning_rate=0.3)
    W = [p[0].astype(np.float64) for p in net.get_parameters()]
    b = [p[1].astype(np.float64) for p in net.get_parameters()]
    Y = np.eye(3)[y]
    dW, db = reference.batch_gradients(X, Y, W, b, net.activations, net.loss_function)
    n = len(X)
    deltas = [np.zeros((n, w.shape[0])) for w in W]
    zs = [np.zeros((n, w.shape[0])) for w in W]
    for i in range(n):
        _, db_i = reference.backpropagation(X[i], Y[i], W, b, net.activations, net.loss_function)
        _, z = reference.forward_propagation(X[i], W, b, net.activations)
        for l in range(len(W)):
            deltas[l][i] = db_i[l] / n            # δ of the batch-mean loss
            zs[l][i] = z[l + 1]
    rtol = 50 * RTOL[np.dtype(dtype)]
    assert d.samples == n and d.learning_rate == 0.3 and len(d.layers) == 4
    for l, layer in enumerate(d.layers):
        assert layer.layer == l + 1 and layer.activation == acts[l]
        assert layer.grad_norm == pytest.approx(np.linalg.norm(dW[l]), rel=rtol)
        assert layer.bias_grad_norm == pytest.approx(np.linalg.norm(db[l]), rel=rtol)
        assert layer.delta_norm == pytest.approx(np.linalg.norm(deltas[l]), rel=rtol)
        assert layer.weight_norm == pytest.approx(np.linalg.norm(W[l]), rel=rtol)
        assert layer.update_ratio == pytest.approx(
            0.3 * np.linalg.norm(dW[l]) / np.linalg.norm(W[l]), rel=rtol)
    # fractions of units: float32 may round a unit at the threshold the other way
    slack = 0 if dtype == "float64" else 1 / 7 + 1e-12
    inactive = np.mean(np.all(zs[0] <= 0, axis=0))
    assert 0 < inactive < 1
    assert abs(d.layers[0].inactive_fraction - inactive) <= slack
    s = 1 / (1 + np.exp(-zs[1]))
    saturated = np.mean(np.mean(4 * s * (1 - s) < 0.01, axis=0) > 0.5)
    assert 0 < saturated < 1
    assert abs(d.layers[1].saturated_fraction - saturated) <= slack
    tanh_sat = np.mean(np.mean(1 - np.tanh(zs[2]) ** 2 < 0.01, axis=0) > 0.5)
    assert abs(d.layers[2].saturated_fraction - tanh_sat) <= slack
    assert d.layers[0].saturated_fraction is None and d.layers[1].inactive_fraction is None
    assert d.layers[3].inactive_fraction is None and d.layers[3].saturated_fraction is None
    assert d.grad_norms == [layer.grad_norm for layer in d.layers]
    assert "layer" in str(d) and isinstance(d.as_dict()["layers"], tuple)


def test_diagnose_changes_nothing(backend):
    """After a fit (optimizer state, workspaces, gradient buffers all present): every array
    the network holds is bit-identical after diagnose, and so is the next fit."""
    X, y = problem()
    nets = [make_network(backend, [6, 12, 3], ["relu", "softmax"], "cross_entropy", seed=0,
                         dropout=0.2) for _ in range(2)]
    for net in nets:
        net.fit(X, y, epochs=2, batch_size=16, learning_rate=0.1, optimizer="adam", seed=1)
    before = state_arrays(nets[0])
    nets[0].diagnose(X, y, learning_rate=0.1)
    assert_same_state(state_arrays(nets[0]), before, "diagnose")
    for net in nets:
        net.fit(X, y, epochs=1, batch_size=16, learning_rate=0.1, optimizer=net.optimizer_,
                seed=2)
    for (Wa, ba), (Wb, bb) in zip(nets[0].get_parameters(), nets[1].get_parameters()):
        assert np.array_equal(Wa, Wb) and np.array_equal(ba, bb)


def test_diagnose_bad_input(backend):
    X, y = data()
    net = make_network(backend, [8, 5, 3], ["relu", "softmax"], "cross_entropy", seed=0)
    for lr in (0, -1.0, math.nan, "0.1", True):
        with pytest.raises(ValueError, match="learning_rate"):
            net.diagnose(X, y, learning_rate=lr)
    with pytest.raises(ValueError, match="X"):
        net.diagnose(X[:, :5], y)
    with pytest.raises(ValueError, match="Y"):
        net.diagnose(X, y[:10])


# ---------------------------------------------------------------------- verdicts

def deep_sigmoid(backend, depth=20, width=16):
    return make_network(backend, [8] + [width] * depth + [3], ["sigmoid"] * depth + ["softmax"],
                        "cross_entropy", seed=0)


def test_deep_sigmoid_network_has_vanishing_gradients(backend):
    X, y = data()
    d = deep_sigmoid(backend).diagnose(X, y)
    assert kinds(d) == ["vanishing"]
    g = d.grad_norms
    assert max(g) / g[0] > 1e6
    (v,) = d.verdicts
    assert v.message.startswith("vanishing gradients: ‖∂L/∂W‖ falls ")
    assert "to layer 1 — use ReLU, batch normalization, residual connections or He/Xavier " \
           "initialisation" in v.message
    assert str(v) == v.message and "residual connections" in v.remedies


def test_huge_initialisation_explodes(backend):
    X, y = data()
    net = make_network(backend, [8, 16, 16, 16, 16, 3], ["relu"] * 4 + ["softmax"],
                       "cross_entropy", seed=0)
    net.set_parameters([(W * 6, b) for W, b in net.get_parameters()])
    d = net.diagnose(X, y, learning_rate=0.1)
    assert "exploding" in kinds(d)
    v = next(v for v in d.verdicts if v.kind == "exploding")
    assert "gradient clipping" in v.message and "a lower learning rate" in v.message
    assert max(layer.update_ratio for layer in d.layers) >= 1


def test_relus_with_a_large_negative_bias_are_dead(backend):
    X, y = data()
    net = make_network(backend, [8, 20, 20, 3], ["relu", "relu", "softmax"], "cross_entropy",
                       seed=0)
    params = net.get_parameters()
    bias = np.where(np.arange(20) < 13, -20.0, 5.0)       # 13 of 20 units never fire
    params[1] = (params[1][0], bias)
    net.set_parameters(params)
    d = net.diagnose(X, y)
    assert kinds(d) == ["dead_relu"]
    (v,) = d.verdicts
    assert d.layers[1].inactive_fraction == pytest.approx(0.65)
    assert v.layer == 2 and v.message == (
        "dead ReLUs: 65% of layer 2's units never fire — use Leaky ReLU or ELU, a lower "
        "learning rate or careful initialisation")


def test_saturated_tanh_units(backend):
    X, y = data()
    net = make_network(backend, [8, 16, 16, 3], ["tanh", "tanh", "softmax"], "cross_entropy",
                       seed=0)
    net.set_parameters([(W * 30, b) for W, b in net.get_parameters()])
    d = net.diagnose(X * 4 - 2, y)
    assert "saturation" in kinds(d)
    assert all(v.layer in (1, 2) for v in d.verdicts if v.kind == "saturation")


HEALTHY = [
    ([8, 32, 16, 3], ["relu", "relu", "softmax"]),
    ([8, 32] + [32] * 7 + [3], ["relu"] * 8 + ["softmax"]),  # deep, He (width 16 loses
    # over half of its last layer's units in 5 epochs: deep narrow ReLU networks do)
    ([8, 32, 16, 3], ["tanh", "tanh", "softmax"]),
    ([8, 32, 16, 3], ["sigmoid", "sigmoid", "softmax"]),
    ([8, 32, 16, 3], ["elu", "leaky_relu", "softmax"]),
]


@pytest.mark.parametrize("sizes,acts", HEALTHY)
def test_healthy_networks_raise_no_verdict(backend, sizes, acts):
    X, y = data()
    net = make_network(backend, sizes, acts, "cross_entropy", seed=0)
    d = net.diagnose(X, y, learning_rate=0.1)
    assert d.healthy, [str(v) for v in d.verdicts]
    net.fit(X, y, epochs=5, batch_size=8, learning_rate=0.1, seed=0)
    d = net.diagnose(X, y, learning_rate=0.1)
    assert d.healthy, [str(v) for v in d.verdicts]


def layer(l, g, w=1e6, act="relu", inactive=None, saturated=None):
    return LayerDiagnosis(l, act, g, 0.0, 0.0, w, 0.1 * g / w, inactive, saturated)


def test_the_thresholds_at_their_boundaries():
    """Each verdict fires exactly at its documented threshold (learning rate 0.1)."""
    F = dg.VANISHING_FACTOR

    def verdicts(layers):
        return sorted(v.kind for v in dg.verdicts(layers, 0.1))

    assert verdicts([layer(1, 1.0), layer(2, F * 0.99), layer(3, 2.0)]) == []
    assert verdicts([layer(1, 1.0), layer(2, F), layer(3, 2.0)]) == ["vanishing"]
    E = dg.EXPLODING_FACTOR
    assert verdicts([layer(1, 0.99 * E), layer(2, 1.0), layer(3, 2.0)]) == []
    assert verdicts([layer(1, E), layer(2, 1.0), layer(3, 2.0)]) == ["exploding"]
    U = dg.EXPLODING_UPDATE_RATIO           # ratio = 0.1 g / w
    assert verdicts([layer(1, 2.0, w=0.2 / (0.99 * U)), layer(2, 2.0)]) == []
    assert verdicts([layer(1, 2.0, w=0.2 / U), layer(2, 2.0)]) == ["exploding"]
    assert verdicts([layer(1, math.inf), layer(2, 1.0)]) == ["exploding"]
    assert verdicts([layer(1, math.nan), layer(2, 1.0)]) == ["exploding"]
    D = dg.DEAD_FRACTION
    assert verdicts([layer(1, 1.0, inactive=D - 0.01), layer(2, 1.0)]) == []
    assert verdicts([layer(1, 1.0, inactive=D), layer(2, 1.0)]) == ["dead_relu"]
    assert verdicts([layer(1, 1.0, act="leaky_relu", inactive=1.0), layer(2, 1.0)]) == []
    S = dg.SATURATED_FRACTION
    assert verdicts([layer(1, 1.0, act="tanh", saturated=S - 0.01), layer(2, 1.0)]) == []
    assert verdicts([layer(1, 1.0, act="tanh", saturated=S), layer(2, 1.0)]) == ["saturation"]
    assert verdicts([layer(1, 0.0), layer(2, 0.0)]) == []           # no gradient at all
    assert verdicts([layer(1, 0.0), layer(2, 1.0)]) == ["vanishing"]


def test_saturation_counts_units_saturated_for_most_samples():
    """σ'/max σ' below SATURATION_LEVEL on more than SATURATED_SAMPLES of the rows."""
    slope = np.array([[0.001, 0.001, 0.5], [0.001, 0.5, 0.5], [0.001, 0.001, 0.5],
                      [0.5, 0.5, 0.001]])
    assert dg._saturated(slope) == pytest.approx(1 / 3)     # column 0 (3/4); column 1 is 2/4
    assert dg._saturated(np.full((4, 2), dg.SATURATION_LEVEL)) == 0.0


# ---------------------------------------------------------------------- fit(diagnostics=True)

@pytest.fixture
def every_epoch(monkeypatch):
    """Diagnose every epoch whatever it costs (these tiny fits' epochs are about one
    diagnosis long: the 2% budget would skip most)."""
    monkeypatch.setattr(dg, "TIME_SHARE", math.inf)


def test_fit_with_diagnostics_trains_the_same_and_keeps_a_diagnosis_per_epoch(backend,
                                                                              every_epoch):
    X, y = problem()
    nets = [make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0,
                         dropout=0.1) for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiagnosticWarning)
        h = nets[0].fit(X, y, epochs=3, batch_size=16, learning_rate=0.1, seed=4,
                        diagnostics=True)
    h2 = nets[1].fit(X, y, epochs=3, batch_size=16, learning_rate=0.1, seed=4)
    assert h["loss"] == h2["loss"] and h2.diagnostics == []
    for (Wa, ba), (Wb, bb) in zip(nets[0].get_parameters(), nets[1].get_parameters()):
        assert np.array_equal(Wa, Wb) and np.array_equal(ba, bb)
    assert len(h.diagnostics) == 3 and all(d.healthy for d in h.diagnostics)
    assert all(d.samples == dg.PROBE_SIZE for d in h.diagnostics)
    assert h.diagnostics[0].grad_norms != h.diagnostics[2].grad_norms
    # the probe: PROBE_SIZE rows drawn with fit's seed; epoch 2's diagnosis is diagnose on it
    rows = np.sort(np.random.default_rng(4).choice(len(X), dg.PROBE_SIZE, replace=False))
    again = nets[0].diagnose(X[rows], y[rows], learning_rate=0.1)
    for a, b in zip(again.layers, h.diagnostics[-1].layers):
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-12)


def test_fit_warns_once_per_problem_kind(backend, every_epoch):
    X, y = data(n=64)
    net = deep_sigmoid(backend, depth=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = net.fit(X, y, epochs=3, batch_size=16, learning_rate=0.1, seed=0, diagnostics=True)
    ours = [w for w in caught if issubclass(w.category, DiagnosticWarning)]
    assert len(ours) == 1 and "epoch 0: vanishing gradients" in str(ours[0].message)
    assert all(kinds(d) == ["vanishing"] for d in h.diagnostics)
    assert ours[0].filename == __file__                       # points at the fit call


def test_resumed_fit_pads_the_diagnoses_of_the_earlier_run(backend, tmp_path, every_epoch):
    X, y = problem()
    path = tmp_path / "ckpt"
    kw = dict(batch_size=16, learning_rate=0.1, seed=4, diagnostics=True, checkpoint=path)
    first = make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    first.fit(X, y, epochs=2, **kw)
    resumed = make_network(backend, [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    h = resumed.fit(X, y, epochs=4, **kw)
    assert h.diagnostics[:2] == [None, None] and all(d is not None for d in h.diagnostics[2:])
    assert len(h.diagnostics) == h.epochs == 4


def test_schedule_keeps_diagnosing_within_its_share():
    """DiagnosisSchedule on given times: the first epoch always; then a diagnosis whenever
    the diagnosing time plus the last cost stays within share · training time."""
    cheap = dg.DiagnosisSchedule(0.02)
    for _ in range(10):                       # 1% of a 1-second epoch: every epoch
        assert cheap.due(1.0)
        cheap.spent(0.01)
    costly = dg.DiagnosisSchedule(0.02)       # 25.5% of an epoch (as with 160 rows)
    due = []
    for epoch in range(45):
        if costly.due(1.0):
            due.append(epoch)
            costly.spent(0.255)
    assert due == [0, 25, 38]                 # 0.51 <= 0.02·26, 0.765 <= 0.02·39
    assert costly.diagnosing - 0.255 <= 0.02 * costly.training
    always = dg.DiagnosisSchedule(math.inf)
    for _ in range(3):
        assert always.due(1e-9)
        always.spent(1.0)


def test_fit_skips_diagnoses_that_would_exceed_the_budget(monkeypatch):
    """A diagnosis made to cost 50 ms or more after epochs of about 1 ms: the first epoch is
    diagnosed, later ones only within 2% of the training time (a second would need 2.5 s)."""
    import time
    from backprop import training
    real = training._diagnose_epoch

    def slow(*args):
        time.sleep(0.05)
        real(*args)
    monkeypatch.setattr(training, "_diagnose_epoch", slow)
    X, y = problem()
    net = make_network("numpy", [6, 12, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    h = net.fit(X, y, epochs=6, batch_size=16, learning_rate=0.1, seed=4, diagnostics=True)
    done = sum(d is not None for d in h.diagnostics)
    assert h.diagnostics[0] is not None and None in h.diagnostics
    assert done - 1 <= dg.TIME_SHARE * sum(h["time"]) / 0.05      # the budget, measured


def test_diagnose_is_exported():
    assert backprop.DiagnosticWarning is DiagnosticWarning
    assert issubclass(DiagnosticWarning, UserWarning)
    assert backprop.Diagnosis is dg.Diagnosis


HAS_BN_RESIDUAL = {"batch_norm", "residual"} <= set(
    inspect.signature(backprop.Network).parameters)


@pytest.mark.skipif(not HAS_BN_RESIDUAL, reason="needs Network(batch_norm=, residual=) from "
                                                "helper 'bn' of issue 11 (not merged here)")
def test_dead_units_behind_batch_norm_and_a_skip_connection(backend):
    """With a skip, A_l = σ(BN(z)) + A_{l-1} is positive where the input is: the dead units
    are read from σ(BN(z)) itself. β = -50 puts BN(z) (|·| <= √(B - 1) before β) below 0."""
    X, y = data(n=48, n_in=16)
    net = make_network(backend, [16, 16, 16, 3], ["relu", "relu", "softmax"], "cross_entropy",
                       seed=0, batch_norm=True, residual=True)
    be = net.backend
    be.copy(be.asarray(np.where(np.arange(16) < 10, -50.0, 0.0), net.dtype), net.beta[1])
    d = net.diagnose(X, y)
    assert d.layers[1].inactive_fraction == 10 / 16
    assert d.layers[0].inactive_fraction < 0.5
    assert kinds(d) == ["dead_relu"] and d.verdicts[0].layer == 2
