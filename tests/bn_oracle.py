"""A direct transcription of batch normalization and residual connections, float64 NumPy, that
shares no code with the library: the oracle of tests/test_batch_norm.py, test_residual.py and
test_gradcheck.py.

Batch normalization as Ioffe & Szegedy (2015) write it, Algorithm 1 and the backward pass of
their section 3, with torch.nn.BatchNorm1d's running averages (momentum 0.1, eps 1e-5, the
running variance from the unbiased batch variance). Activations and losses per sample from
backprop.reference (the seeds' formulas).
"""

from __future__ import annotations

import numpy as np

from backprop import reference

EPS, MOMENTUM = 1e-5, 0.1


def bn_train(x, gamma, beta, eps=EPS):
    """(y, cache) for a batch x (m, n): μ_B = 1/m Σ x_i; σ²_B = 1/m Σ (x_i - μ_B)²;
    x̂_i = (x_i - μ_B) / √(σ²_B + ε); y_i = γ x̂_i + β."""
    m = x.shape[0]
    mu = np.sum(x, axis=0) / m
    var = np.sum((x - mu) ** 2, axis=0) / m
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta, (x, mu, var, xhat, gamma, eps)


def bn_eval(x, gamma, beta, running_mean, running_var, eps=EPS):
    """y = γ (x - E[x]) / √(Var[x] + ε) + β with the running averages."""
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


def bn_running(running_mean, running_var, x, momentum=MOMENTUM):
    """torch's update: r ← (1 - momentum) r + momentum · statistic, unbiased variance."""
    m = x.shape[0]
    mu = x.mean(axis=0)
    unbiased = ((x - mu) ** 2).sum(axis=0) / (m - 1)
    return ((1 - momentum) * running_mean + momentum * mu,
            (1 - momentum) * running_var + momentum * unbiased)


def bn_backward(dy, cache):
    """(dx, dγ, dβ) by the chain rule of the paper, term by term:
    ∂l/∂x̂ = ∂l/∂y · γ; ∂l/∂σ² = Σ ∂l/∂x̂ (x - μ) · (-½)(σ² + ε)^(-3/2);
    ∂l/∂μ = Σ ∂l/∂x̂ · (-1/√(σ² + ε)) + ∂l/∂σ² · Σ -2 (x - μ) / m;
    ∂l/∂x = ∂l/∂x̂ / √(σ² + ε) + ∂l/∂σ² · 2 (x - μ) / m + ∂l/∂μ / m;
    ∂l/∂γ = Σ ∂l/∂y x̂; ∂l/∂β = Σ ∂l/∂y."""
    x, mu, var, xhat, gamma, eps = cache
    m = x.shape[0]
    dxhat = dy * gamma
    dvar = np.sum(dxhat * (x - mu), axis=0) * -0.5 * (var + eps) ** -1.5
    dmu = np.sum(-dxhat / np.sqrt(var + eps), axis=0) + dvar * np.sum(-2 * (x - mu), axis=0) / m
    dx = dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m + dmu / m
    return dx, np.sum(dy * xhat, axis=0), np.sum(dy, axis=0)


def rows(activation, z):
    """σ applied to each row of z (per sample, as the seeds write it)."""
    return np.array([reference.sigma(activation, r) for r in z])


def forward(params, X, activations, batch_norm, residual, mode, masks=None):
    """The network's output (B, n_L), float64, one batch.

    ``params``: {"W": [...], "b": [...], "gamma": [...], "beta": [...], "running_mean": [...],
    "running_var": [...]} (None entries for layers without batch normalization). ``mode``:
    "train" (batch statistics) or "eval" (running averages). Hidden layer l:
    Z = A_prev Wᵀ + b; Ẑ = BN(Z) where asked; H = σ(Ẑ); A = H + A_prev with a residual
    connection; then A ⊙ mask_l when ``masks`` are given (frozen dropout masks).
    """
    a = np.asarray(X, np.float64)
    L = len(params["W"])
    for l in range(L):
        z = a @ params["W"][l].T + params["b"][l]
        if l < L - 1 and batch_norm[l]:
            g, be = params["gamma"][l], params["beta"][l]
            z = (bn_train(z, g, be)[0] if mode == "train"
                 else bn_eval(z, g, be, params["running_mean"][l], params["running_var"][l]))
        h = rows(activations[l], z)
        if l < L - 1 and residual[l]:
            h = h + a
        if l < L - 1 and masks is not None and masks[l] is not None:
            h = h * masks[l]
        a = h
    return a


def batch_loss(params, X, Y, activations, loss, batch_norm, residual, mode="train"):
    """The mean per-sample loss of one batch (reference.sample_loss per row)."""
    out = forward(params, X, activations, batch_norm, residual, mode)
    return float(np.mean([reference.sample_loss(loss, o, y) for o, y in zip(out, Y)]))


def params_of(net):
    """The network's parameters and running statistics as float64 host arrays."""
    from backprop import to_numpy
    f = lambda x: None if x is None else np.array(to_numpy(x), np.float64)   # noqa: E731
    return {"W": [f(w) for w in net.W], "b": [f(b) for b in net.b],
            "gamma": [f(g) for g in net.gamma], "beta": [f(b) for b in net.beta],
            "running_mean": [f(m) for m in net.running_mean],
            "running_var": [f(v) for v in net.running_var]}


def set_batch_norm(net, rng, scale=0.3):
    """Random γ (around 1), β, running mean and variance (> 0) on every normalized layer,
    and random biases, so nothing sits at its initial symmetric value."""
    be = net.backend
    for l, on in enumerate(net.batch_norm):
        if not on:
            continue
        n = net.gamma[l].shape[0]
        for arr, values in ((net.gamma[l], 1 + scale * rng.normal(size=n)),
                            (net.beta[l], scale * rng.normal(size=n)),
                            (net.running_mean[l], scale * rng.normal(size=n)),
                            (net.running_var[l], rng.uniform(0.5, 2.0, n))):
            be.copy(be.asarray(values, net.dtype), arr)
    net.set_parameters([(W, rng.normal(0, 0.5, b.shape)) for W, b in net.get_parameters()])
