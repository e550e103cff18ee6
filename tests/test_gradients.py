"""Exactness: the gradients equal finite differences (float64) of the seeds' loss, and the
seeds' per-sample algorithm in backprop.reference; every activation (Leaky ReLU and ELU also at
a non-default α) at hidden layers, every loss/output pairing, batch 1 and width-1 layers."""

from __future__ import annotations

import numpy as np
import oracles
import pytest
from support import ACTIVATIONS, PAIRINGS, assert_close, make_network, random_targets

from backprop import reference, to_numpy
from backprop.activations import ELU, LeakyReLU, ReLU, Softmax, Tanh

SHAPES = [  # (layer sizes, batch): batch 1 and width-1 layers included
    ([3, 5, 4], 7),
    ([4, 1, 3], 5),
    ([1, 6, 2], 1),
    ([5, 4, 3, 2], 3),
]


def randomize_biases(net, rng):
    """Nonzero biases, so no pre-activation sits exactly on ReLU's kink at z = 0."""
    net.set_parameters([(W, rng.normal(0, 0.5, b.shape)) for W, b in net.get_parameters()])


def finite_difference_gradients(net, X, Y):
    """Central differences of the seeds' mean loss (backprop.reference, per sample) at the
    network's parameters: the oracle shares nothing with the network's kernels."""
    W, b = (list(p) for p in zip(*net.get_parameters()))
    numeric = oracles.finite_differences(
        lambda: reference.batch_loss(X, Y, W, b, net.activations, net.loss_function),
        [p for pair in zip(W, b) for p in pair])
    return list(zip(numeric[0::2], numeric[1::2]))


def gradients_match_finite_differences(net, X, Y):
    analytic = net.backward(X, Y)
    numeric = finite_difference_gradients(net, X, Y)
    for l, ((dW, db), (nW, nb)) in enumerate(zip(analytic, numeric)):
        a = np.concatenate([to_numpy(dW).ravel(), to_numpy(db).ravel()])
        n = np.concatenate([nW.ravel(), nb.ravel()])
        scale = max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12)
        assert np.linalg.norm(a - n) / scale <= 1e-6, f"layer {l + 1}: {a} vs {n}"


@pytest.mark.parametrize("loss,output", PAIRINGS, ids=str)
@pytest.mark.parametrize("hidden", ACTIVATIONS, ids=str)
def test_gradients_match_finite_differences(backend, loss, output, hidden):
    """Every hidden activation (twice: δ passes through its σ' at two layers) with every
    loss/output pairing."""
    sizes, batch = [3, 4, 4, 3], 3
    rng = np.random.default_rng(0)
    net = make_network(backend, sizes, [hidden, hidden, output], loss, dtype="float64", seed=1)
    randomize_biases(net, rng)
    X = rng.normal(0, 1, (batch, sizes[0]))
    gradients_match_finite_differences(net, X, random_targets(rng, loss, batch, sizes[-1]))


@pytest.mark.parametrize("hidden,output,loss", [(Tanh(), Softmax(), "cross_entropy"),
                                                (LeakyReLU(0.2), ELU(0.5), "mse")], ids=str)
@pytest.mark.parametrize("sizes,batch", SHAPES, ids=str)
def test_gradients_match_finite_differences_on_every_shape(backend, sizes, batch, hidden,
                                                           output, loss):
    rng = np.random.default_rng(1)
    acts = [hidden] * (len(sizes) - 2) + [output]
    net = make_network(backend, sizes, acts, loss, dtype="float64", seed=2)
    randomize_biases(net, rng)
    X = rng.normal(0, 1, (batch, sizes[0]))
    gradients_match_finite_differences(net, X, random_targets(rng, loss, batch, sizes[-1]))


#: (layer sizes, batch, hidden activation, loss, output activation): every hidden activation
#: with every pairing on two hidden layers, and every shape with every pairing
REFERENCE_CASES = ([(SHAPES[-1][0], SHAPES[-1][1], hidden, loss, output)
                    for hidden in ACTIVATIONS for loss, output in PAIRINGS]
                   + [(sizes, batch, hidden, loss, output)
                      for (sizes, batch), hidden in zip(SHAPES[:-1], [Tanh(), ELU(0.5), LeakyReLU(0.2)])
                      for loss, output in PAIRINGS])


@pytest.mark.parametrize("sizes,batch,hidden,loss,output", REFERENCE_CASES, ids=str)
def test_backward_equals_per_sample_reference(backend, sizes, batch, hidden, loss, output):
    rng = np.random.default_rng(batch + len(sizes))
    acts = [hidden] * (len(sizes) - 2) + [output]
    net = make_network(backend, sizes, acts, loss, dtype="float64", seed=3)
    randomize_biases(net, rng)
    X = rng.normal(0, 1, (batch, sizes[0]))
    Y = random_targets(rng, loss, batch, sizes[-1])
    W = [p[0] for p in net.get_parameters()]
    b = [p[1] for p in net.get_parameters()]
    dW, db = reference.batch_gradients(X, Y, W, b, net.activations, net.loss_function)
    for l, (gW, gb) in enumerate(net.backward(X, Y)):
        assert_close(gW, dW[l], 1e-12, f"dW{l + 1}")
        assert_close(gb, db[l], 1e-12, f"db{l + 1}")
    expected = reference.batch_loss(X, Y, W, b, net.activations, net.loss_function)
    assert net.loss(X, Y) == pytest.approx(expected, rel=1e-12)
    assert_close(net.forward(X), [reference.forward_propagation(x, W, b, net.activations)[0][-1]
                                  for x in X], 1e-12, "forward")


@pytest.mark.parametrize("batch_size", [4, 5, 13])   # 13 samples: partial last batch for 4, 5
def test_fit_equals_reference_training_loop(backend, batch_size):
    rng = np.random.default_rng(7)
    sizes = [3, 6, 4, 2]
    net = make_network(backend, sizes, ["tanh", "relu", "softmax"], "cross_entropy",
                       dtype="float64", seed=1)
    X = rng.normal(0, 1, (13, 3))
    labels = rng.integers(0, 2, 13)
    W = [p[0] for p in net.get_parameters()]
    b = [p[1] for p in net.get_parameters()]
    order_rng = np.random.default_rng(11)   # fit(seed=11) shuffles with this generator
    order = [order_rng.permutation(13) for _ in range(3)]
    W_ref, b_ref = reference.train(X, np.eye(2)[labels], W, b, net.activations,
                                   net.loss_function, 0.3, 3, batch_size, order)
    net.fit(X, labels, epochs=3, batch_size=batch_size, learning_rate=0.3, seed=11)
    for l, (gW, gb) in enumerate(net.get_parameters()):
        assert_close(gW, W_ref[l], 1e-12, f"W{l + 1}")
        assert_close(gb, b_ref[l], 1e-12, f"b{l + 1}")


def test_cross_entropy_is_stable_for_large_logits(backend):
    net = make_network(backend, [2, 3], "softmax", "cross_entropy", dtype="float32", seed=0)
    net.set_parameters([(np.array([[1e4, 0], [0, 1e4], [-1e4, 0]]), np.zeros(3))])
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = net.loss(X, [1, 0])        # wrong class by a margin of 1e4
    assert np.isfinite(loss) and loss == pytest.approx(1e4, rel=1e-6)
    grads = net.backward(X, [1, 0])
    assert all(np.isfinite(to_numpy(g)).all() for pair in grads for g in pair)


def test_binary_cross_entropy_is_stable_for_large_logits(backend):
    net = make_network(backend, [1, 1], "sigmoid", "binary_cross_entropy", dtype="float32", seed=0)
    net.set_parameters([(np.array([[200.0]]), np.zeros(1))])
    assert net.loss([[1.0], [-1.0]], [0.0, 1.0]) == pytest.approx(200.0, rel=1e-6)
    assert net.loss([[1.0], [-1.0]], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("hidden", [Tanh(), ReLU(), ELU(0.5)], ids=str)
def test_dropout_gradients_match_finite_differences_with_the_masks_frozen(backend, hidden):
    """A training step with dropout: its loss and gradient are those of the network whose
    hidden outputs are multiplied by the masks it drew (read back from its workspace),
    computed per sample by the oracle and differentiated by central differences."""
    sizes, n, lr = [4, 6, 5, 3], 8, 1.0
    rng = np.random.default_rng(6)
    net = make_network(backend, sizes, [hidden, hidden, Softmax()], "cross_entropy",
                       dtype="float64", seed=0, dropout=[0.5, 0.3])
    randomize_biases(net, rng)
    X = rng.normal(0, 1, (n, sizes[0]))
    Y = np.eye(3)[rng.integers(0, 3, n)]
    before = net.get_parameters()
    history = net.fit(X, Y, epochs=1, batch_size=n, learning_rate=lr, shuffle=False, seed=2)
    masks = [to_numpy(m) for m in net.workspace(n).mask]
    for mask, rate in zip(masks, (0.5, 0.3)):
        assert set(np.unique(mask)) == {0.0, 1 / (1 - rate)}
    gradients = [((W0 - W1) / lr, (b0 - b1) / lr)
                 for (W0, b0), (W1, b1) in zip(before, net.get_parameters())]
    W, b = (list(p) for p in zip(*before))
    loss = lambda: oracles.masked_loss(W, b, X, Y, net.activations, net.loss_function, masks)
    assert history["loss"][0] == pytest.approx(loss(), rel=1e-12)
    numeric = oracles.finite_differences(loss, [p for pair in zip(W, b) for p in pair])
    for l, ((gW, gb), nW, nb) in enumerate(zip(gradients, numeric[0::2], numeric[1::2])):
        a = np.concatenate([gW.ravel(), gb.ravel()])
        e = np.concatenate([nW.ravel(), nb.ravel()])
        assert np.linalg.norm(a - e) <= 1e-6 * np.linalg.norm(e), f"layer {l + 1}"
