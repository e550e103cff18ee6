#!/usr/bin/env python3
"""Mutation check: one-line faults in backprop/ and kernels/ that the tests must catch.

Each mutation below changes one line of the library: the kernels of the contract (NumPy,
Numba and CUDA), every activation's σ', every optimizer, the losses, clipping, dropout, the
batching loop, device moves, saving and loading. Each is applied in turn to a scratch copy of
the repository (the real tree is never written) and the tests chosen for it are run there with
``pytest -x``; a mutation is *killed* when they fail (or time out), and *survives* when they
pass. First the un-mutated copy must pass every test file the selections use (the baseline),
so that a failure means the mutation was seen.

Usage (from anywhere; stdlib only, runs the tests with this interpreter):

    python ci/mutations.py                 # all mutations
    python ci/mutations.py -k cuda         # those whose name contains "cuda"
    python ci/mutations.py --list          # list them (and check each still applies)
    python ci/mutations.py --jobs 2        # two scratch copies at once

Prints a line per mutation (``killed``, ``SURVIVED`` or ``ERROR``, its seconds, its name),
then ``mutation score: K/N killed (P%)`` and each survivor with its file, line and tests.
Exits 0 when every mutation is killed, 1 when any survives or cannot run, 2 when the
baseline fails.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (which must occur exactly once in ``path``) by ``new``, which differs
    from it in one line (changed or deleted); ``tests``: the pytest arguments that must fail."""

    name: str
    path: str
    old: str
    new: str
    tests: str


NP, NB, NET, CU = ("backprop/backends/numpy.py", "backprop/backends/numba.py",
                   "backprop/network.py", "kernels/backprop.cu")
GRADIENTS = "tests/test_gradients.py -k '{b} and (reference or finite_differences)'"
FORMULAS = "tests/test_network.py -k 'formulas and {b} and float64'"
EMULATED = "tests/test_cupy.py -k '{k}'"
SW = "tests/test_sample_weight.py"
DIST = "backprop/distributed.py"
DIST_TESTS = "tests/test_distributed.py -k 'trajectory_numpy and 2'"
DIST_BN = "tests/test_distributed.py -k 'trajectory_batch_norm and 2'"

MUTATIONS = [
    # ---- the NumPy backend: every kernel of the contract, every σ'
    Mutation("numpy forward without the bias", NP,
             "np.copyto(Z, b)\n", "np.copyto(Z, 0)\n", GRADIENTS.format(b="numpy")),
    Mutation("numpy sigmoid σ' = a (1 + a)", NP,
             "np.subtract(1, A, out=s)", "np.add(1, A, out=s)", GRADIENTS.format(b="numpy")),
    Mutation("numpy tanh σ' = 1 + a²", NP,
             "np.subtract(1, s, out=s)", "np.add(1, s, out=s)", GRADIENTS.format(b="numpy")),
    Mutation("numpy relu σ' = 1 at a = 0", NP,
             "slower\n            np.greater(A, 0, out=s)",
             "slower\n            np.greater_equal(A, 0, out=s)", GRADIENTS.format(b="numpy")),
    Mutation("numpy leaky_relu σ' slope hard-coded to 0.01", NP,
             "s *= 1.0 - activation.alpha\n            s += activation.alpha",
             "s *= 1.0 - activation.alpha\n            s += 0.01", GRADIENTS.format(b="numpy")),
    Mutation("numpy elu σ' without (1 - α)[a > 0]", NP,
             "            s += activation.alpha\n            s += step\n",
             "            s += activation.alpha\n", GRADIENTS.format(b="numpy")),
    Mutation("numpy softmax σ' (Jacobian) sign", NP,
             "G -= row", "G += row", GRADIENTS.format(b="numpy")),
    Mutation("numpy output delta not divided by B", NP,
             "delta *= 1.0 / A.shape[0]", "delta *= 1.0", GRADIENTS.format(b="numpy")),
    Mutation("numpy output delta fused for every pairing", NP,
             "if not loss.fused_with(activation):", "if False:", GRADIENTS.format(b="numpy")),
    Mutation("numpy delta without σ'", NP,
             "        _matmul(delta_next, W_next, delta)\n"
             "        self._backprop_activation(delta, A, activation)\n",
             "        _matmul(delta_next, W_next, delta)\n", GRADIENTS.format(b="numpy")),
    Mutation("numpy weight_grad db as a mean", NP,
             "_matmul(delta.T, A_prev, dW)\n        np.sum(delta, axis=0, out=db)",
             "_matmul(delta.T, A_prev, dW)\n        np.mean(delta, axis=0, out=db)",
             GRADIENTS.format(b="numpy")),
    Mutation("numpy mse loss without ½", NP,
             "total[0] += 0.5 * self._sum_squares(s, 1.0)",
             "total[0] += self._sum_squares(s, 1.0)",
             "tests/test_gradients.py -k 'numpy and reference'"),
    Mutation("numpy binary cross-entropy log instead of log1p", NP,
             "np.log1p(t, out=t)", "np.log(t, out=t)",
             "tests/test_gradients.py -k 'numpy and reference'"),
    Mutation("numpy cross-entropy without the row maximum", NP,
             "            np.max(Z, axis=1, keepdims=True, out=m)",
             "            m.fill(0)",
             "tests/test_gradients.py -k 'numpy and large_logits'"),
    Mutation("numpy sgd update doubled", NP,
             "np.multiply(g, lr, out=s)", "np.multiply(g, 2 * lr, out=s)",
             FORMULAS.format(b="numpy")),
    Mutation("numpy momentum v = μ v - g", NP,
             "            v += g\n", "            v -= g\n", FORMULAS.format(b="numpy")),
    Mutation("numpy nesterov without the look-ahead", NP,
             "np.multiply(v, rule.momentum, out=s)", "np.multiply(v, 0.0, out=s)",
             FORMULAS.format(b="numpy")),
    Mutation("numpy rmsprop without the square root", NP,
             "np.sqrt(sq, out=s)", "np.copyto(s, sq)", FORMULAS.format(b="numpy")),
    Mutation("numpy adam without bias correction of m", NP,
             "s *= lr / rule.bias_correction1", "s *= lr", FORMULAS.format(b="numpy")),
    Mutation("numpy adamw decay without η", NP,
             "param *= 1.0 - lr * rule.weight_decay", "param *= 1.0 - rule.weight_decay",
             FORMULAS.format(b="numpy")),
    Mutation("numpy l1 as |p| instead of sign(p)", NP,
             "np.sign(param, out=s)", "np.abs(param, out=s)", FORMULAS.format(b="numpy")),
    Mutation("numpy l2 without the 2", NP,
             "np.multiply(param, 2.0 * rule.l2, out=s)", "np.multiply(param, rule.l2, out=s)",
             FORMULAS.format(b="numpy")),
    Mutation("numpy clipping factor inverted", NP,
             "out[0] = 1.0 if norm <= max_norm else max_norm / norm",
             "out[0] = 1.0 if norm <= max_norm else norm / max_norm",
             "tests/test_network.py -k 'numpy and (clipping or formulas and clip)'"),
    Mutation("numpy folded sgd: l2 without the 2", NP,
             "beta=1.0 - 2.0 * lr * rule.l2)", "beta=1.0 - lr * rule.l2)",
             FORMULAS.format(b="numpy")),
    Mutation("numpy folded sgd: bias step doubled", NP,
             "        db *= lr\n", "        db *= 2 * lr\n", FORMULAS.format(b="numpy")),
    Mutation("numpy dropout keeps units with u < rate", NP,
             "np.greater_equal(mask, rate, out=mask)", "np.less(mask, rate, out=mask)",
             "tests/test_network.py -k 'numpy and dropout'"),
    Mutation("numpy dropout mask not scaled by 1 / (1 - rate)", NP,
             "mask *= 1.0 / (1.0 - rate)", "mask *= 1.0",
             "tests/test_gradients.py -k 'numpy and dropout'"),
    # ---- the network: dropout in both passes, the modes, device moves, saving and loading
    Mutation("dropout's mask not applied to δ in the backward pass", NET,
             "                be.multiply(ws.delta[h], ws.mask[h])\n",
             "                pass\n", "tests/test_gradients.py -k 'numpy and dropout'"),
    Mutation("dropout's mask drawn but not applied in the forward pass", NET,
             "                inputs.append(ws.dropped[l])\n",
             "                inputs.append(ws.A[l])\n",
             "tests/test_gradients.py -k 'numpy and dropout'"),
    Mutation("backward applies dropout (issue 14)", NET,
             "self._backward(ws, inputs, Y, train=False, grads=grads, bn_grads",
             "self._backward(ws, inputs, Y, train=True, grads=grads, bn_grads",
             "tests/test_modes.py -k numpy"),
    Mutation("to() leaves the optimizer state on the old device", NET,
             "state.state = [tuple(target.asarray(source.to_numpy(s)) for s in st)",
             "state.state = [tuple(s for s in st)",
             "tests/test_network.py -k 'numpy and to_moves'"),
    Mutation("save drops the activations' α", "backprop/state.py",
             '"activations": [[a.name, a.alpha] for a in net.activations],',
             '"activations": [[a.name, 0.0] for a in net.activations],',
             "tests/test_network.py -k 'numpy and save_and_load'"),
    Mutation("load ignores the saved dtype", "backprop/state.py",
             'arch["loss"], device=device, backend=backend, dtype=arch["dtype"],',
             'arch["loss"], device=device, backend=backend,',
             "tests/test_network.py -k 'numpy and save_and_load'"),
    # ---- the training loop, optimizers and losses
    Mutation("the batching loop drops the partial last batch", "backprop/training.py",
             "        for k, start in enumerate(range(0, n, batch_size)):",
             "        for k, start in enumerate(range(0, n - batch_size + 1, batch_size)):",
             "tests/test_network.py -k 'numpy and epoch_loss'"),
    Mutation("the epoch loss divided by the batch size", "backprop/training.py",
             "logs = _epoch_logs(net, total / (seen - dropped),",
             "logs = _epoch_logs(net, total / batch_size,",
             "tests/test_network.py -k 'numpy and epoch_loss'"),
    Mutation("shuffle never shuffles", "backprop/training.py",
             "                    order = be.asarray(perm)\n",
             "                    order = None\n", FORMULAS.format(b="numpy")),
    Mutation("validation on the training data", "backprop/training.py",
             "result = net._evaluate(*val)", "result = net._evaluate(X, Y)",
             "tests/test_network.py -k 'numpy and history'"),
    Mutation("the learning-rate schedule one epoch ahead", "backprop/training.py",
             "float(lr_schedule(epoch, learning_rate))",
             "float(lr_schedule(epoch + 1, learning_rate))",
             "tests/test_network.py -k 'numpy and lr_schedules'"),
    Mutation("l1 and l2 applied to biases", "backprop/optimizers.py",
             "biases = self._rule(learning_rate, grad_scale=grad_scale, clip_value=clip_value)",
             "biases = self._rule(learning_rate, l1=l1, l2=l2, grad_scale=grad_scale, "
             "clip_value=clip_value)",
             FORMULAS.format(b="numpy")),
    Mutation("adam's bias correction one step late", "backprop/optimizers.py",
             "bias_correction1=1.0 - self.beta1 ** self.t,",
             "bias_correction1=1.0 - self.beta1 ** (self.t + 1),", FORMULAS.format(b="numpy")),
    Mutation("mse + sigmoid treated as a fused pair", "backprop/losses.py",
             '"mse": Loss("mse", MSE, None, Code.IDENTITY,',
             '"mse": Loss("mse", MSE, None, Code.SIGMOID,',
             "tests/test_gradients.py -k 'numpy and reference'"),
    # ---- the Numba backend's compiled kernels and fused epoch
    Mutation("numba leaky_relu σ' slope hard-coded to 0.01", NB,
             "d = one if a > zero else alpha\n", "d = one if a > zero else one / 100\n",
             GRADIENTS.format(b="numba")),
    Mutation("numba elu σ' = a + 1", NB,
             "d = one if a > zero else a + alpha", "d = one if a > zero else a + one",
             GRADIENTS.format(b="numba")),
    Mutation("numba softmax without the row maximum", NB,
             "                Z[i, j] += b[j]\n                m = max(m, Z[i, j])\n",
             "                Z[i, j] += b[j]\n",
             "tests/test_gradients.py -k 'numba and large_logits'"),
    Mutation("numba weight_grad db keeps the last row only", NB,
             "db[j] += delta[i, j]", "db[j] = delta[i, j]", GRADIENTS.format(b="numba")),
    Mutation("numba cross-entropy loss sign", NB,
             "total += w * (float(Y[i, j]) * ((m - float(Z[i, j])) + lse))",
             "total += w * (float(Y[i, j]) * ((m + float(Z[i, j])) + lse))",
             "tests/test_gradients.py -k 'numba and reference'"),
    Mutation("numba adam without bias correction of v", NB,
             "math.sqrt(v * adam_c2)", "math.sqrt(v)", FORMULAS.format(b="numba")),
    Mutation("numba fused epoch regularizes biases", NB,
             "eps, bc1, bc2, weight_decay, 0.0, 0.0, 1.0, clip_value)",
             "eps, bc1, bc2, weight_decay, l1, l2, 1.0, clip_value)", FORMULAS.format(b="numba-epoch")),
    Mutation("numba fused epoch drops the partial last batch", NB,
             "    for start in range(0, n, batch_size):",
             "    for start in range(0, n - batch_size + 1, batch_size):",
             FORMULAS.format(b="numba-epoch")),
    # ---- the CUDA kernels (run by the CPU emulator where there is no GPU: tests/test_cupy.py
    # and the cupy backend of every backend-fixture test)
    Mutation("cuda tanh σ' = 1 + a²", CU,
             "case TANH: return T(1) - a * a;", "case TANH: return T(1) + a * a;",
             EMULATED.format(k="forward_and_delta and tanh")),
    Mutation("cuda elu σ' = α", CU,
             "case ELU: return a > T(0) ? T(1) : a + alpha;",
             "case ELU: return a > T(0) ? T(1) : alpha;",
             EMULATED.format(k="forward_and_delta and elu")),
    Mutation("cuda forward without the bias", CU,
             "T z = Z[i] + b[i % cols];", "T z = Z[i];",
             EMULATED.format(k="forward_and_delta and relu")),
    Mutation("cuda softmax σ' (Jacobian) sign", CU,
             "o[c] = (g[c] - dot) * a[c] * scale;", "o[c] = (g[c] + dot) * a[c] * scale;",
             EMULATED.format(k="forward_and_delta and softmax")),
    Mutation("cuda output delta not divided by B", CU,
             "delta[i] = g * (weight ? weight[i / cols] * norm : inv_batch);",
             "delta[i] = g * (weight ? weight[i / cols] * norm : T(1));",
             EMULATED.format(k="output_delta_and_loss")),
    Mutation("cuda matmul keeps the last k only", CU,
             "acc[i][j] += a[i] * b[j];", "acc[i][j] = a[i] * b[j];",
             EMULATED.format(k="matmul")),
    Mutation("cuda column sum keeps the last row only", CU,
             "s += (double)delta[r * cols + c];", "s = (double)delta[r * cols + c];",
             EMULATED.format(k="weight_grad")),
    Mutation("cuda mse loss without ½", CU,
             "sum += w * (0.5 * d * d);", "sum += w * (d * d);",
             EMULATED.format(k="output_delta_and_loss")),
    Mutation("cuda cross-entropy without the row maximum", CU,
             "            for (long long c = 1; c < cols; ++c) top = (double)z[c] > top ? "
             "(double)z[c] : top;\n", "",
             "tests/test_gradients.py -k 'cupy and large_logits'"),
    Mutation("cuda momentum update with g instead of v", CU,
             "change = nesterov ? lr * (momentum * v + g) : lr * v;",
             "change = nesterov ? lr * (momentum * v + g) : lr * g;",
             EMULATED.format(k="update and momentum")),
    Mutation("cuda adam update without bias correction of m", CU,
             "change = (lr / c1) * (m / (sqrt(v / c2) + eps));",
             "change = lr * (m / (sqrt(v / c2) + eps));", EMULATED.format(k="update and adam")),
    Mutation("cuda clipping factor inverted", CU,
             "T(1) : T((double)max_norm / norm);", "T(1) : T(norm / (double)max_norm);",
             EMULATED.format(k="grad_scale")),
    Mutation("cuda dropout keeps units with u < rate", CU,
             "const T m = u >= rate ? scale : T(0);", "const T m = u < rate ? scale : T(0);",
             EMULATED.format(k="dropout")),
    Mutation("cuda leaky relu σ' slope fixed at 0.01", CU,
             "case LEAKY_RELU: return a > T(0) ? T(1) : alpha;",
             "case LEAKY_RELU: return a > T(0) ? T(1) : T(0.01);",
             EMULATED.format(k="forward_and_delta and leaky")),
    Mutation("cuda norm partials sized without the split count (graphs silently off)",
             "backprop/backends/cupy.py", "need = max(need, splits * M * N)",
             "need = max(need, M * N)", EMULATED.format(k="fit_equals_numpy and float32")),
    Mutation("cuda graph of a capture dropped (eager steps)", "backprop/backends/cupy.py",
             "        plan.graph = graph", "        plan.graph = None",
             EMULATED.format(k="graphs_change_nothing and float32")),
    # ---- found by a fresh-eyes review of the suite
    Mutation("early stopping one epoch late", "backprop/training.py",
             "return epoch - self.best_epoch >= self.patience",
             "return epoch - self.best_epoch > self.patience",
             "tests/test_fit_control.py -k rule_names"),
    Mutation("early stopping min_delta with the wrong sign", "backprop/training.py",
             "self._sign * value < self._sign * self.best - self.min_delta",
             "self._sign * value < self._sign * self.best + self.min_delta",
             "tests/test_fit_control.py -k rule_names"),
    Mutation("callbacks after a stopping one miss its epoch", "backprop/training.py",
             "history.stopped_early = any([_call(cb, epoch, logs, net) for cb in callbacks])",
             "history.stopped_early = any(_call(cb, epoch, logs, net) for cb in callbacks)",
             "tests/test_fit_control.py -k 'numpy and another_one_stops'"),
    Mutation("binary accuracy not averaged over the output units", NET,
             "correct += int(right.sum()) / (1 if right.ndim == 1 else y.shape[1])",
             "correct += int(right.sum())",
             "tests/test_network.py -k 'numpy and binary_accuracy_counts'"),
    # ---- sample weights (tests/test_sample_weight.py) and validation_split
    Mutation("numpy weighted delta not normalised by Σ w", NP,
             "np.multiply(sample_weight.reshape(-1, 1), weight_norm(sample_weight), out=row)",
             "np.multiply(sample_weight.reshape(-1, 1), 1.0 / len(sample_weight), out=row)",
             f"{SW} -k 'numpy and finite_differences'"),
    Mutation("numpy weight norm 1/Σw of a zero batch is Inf", NP,
             "return sample_weight.dtype.type(1.0 / total if total > 0 else 0.0)",
             "return sample_weight.dtype.type(1.0 / total if total >= 0 else 0.0)",
             f"{SW} -k 'numpy and zero_weights'"),
    Mutation("numpy weighted loss ignores the weights", NP,
             "        y *= weight.reshape(-1, 1)\n", "",
             f"{SW} -k 'numpy and per_sample_reference'"),
    Mutation("network weighted means (loss, accuracy) divided by N", NET,
             "return X.shape[0] if w is None else weight_sum(self.backend, w)",
             "return X.shape[0]",
             f"{SW} -k 'numpy and per_sample_reference'"),
    Mutation("weighted epoch loss divided by N", "backprop/training.py",
             "seen = (m if weight is None else weight_sum(be, weight) if replica is None",
             "seen = (m if weight is None else m if replica is None",
             f"{SW} -k 'numpy and reference_and_numpy'"),
    Mutation("shuffled weights not gathered with their rows", NET,
             "        backend.take_rows(weight, order[start:stop], self.weight)\n", "",
             f"{SW} -k 'numpy-steps and reference_and_numpy'"),
    Mutation("numba weighted delta: Σ w of the first row only", NB,
             "    for i in range(B):\n        total += float(weight[i])\n",
             "    for i in range(B):\n        total = float(weight[i])\n",
             f"{SW} -k 'numba and finite_differences'"),
    Mutation("numba fused epoch gathers the weights of the stored order", NB,
             "wb[i] = sw[order[start + i]]", "wb[i] = sw[start + i]",
             f"{SW} -k 'numba-epoch and reference_and_numpy'"),
    Mutation("cuda weight norm without the reciprocal", CU,
             "out[0] = s > 0.0 ? T(1.0 / s) : T(0);", "out[0] = s > 0.0 ? T(s) : T(0);",
             f"{SW} -k 'cupy and finite_differences'"),
    Mutation("cuda weighted loss of the first row's weight", CU,
             "const double w = weight ? (double)weight[r] : 1.0;",
             "const double w = weight ? (double)weight[0] : 1.0;",
             f"{SW} -k 'cupy and per_sample_reference'"),
    Mutation("cuda graph gathers no weights", "backprop/backends/cupy.py",
             "                    gathered.append((sample_weight, ws.weight))\n", "",
             f"{SW} -k 'cupy-epoch and reference_and_numpy'"),
    Mutation("validation_split holds out the first rows", "backprop/training.py",
             "return X[:at], Y[:at], w_train, (X[at:], Y[at:], w_val)",
             "return X[n - at:], Y[n - at:], w_train, (X[:n - at], Y[:n - at], w_val)",
             "tests/test_validation_split.py -k 'numpy and last_rows'"),
    Mutation("validation_split rounds the training rows up", "backprop/training.py",
             "at = int(math.floor(n * (1.0 - split)))", "at = int(math.ceil(n * (1.0 - split)))",
             "tests/test_validation_split.py -k 'numpy and last_rows'"),
    Mutation("he_uniform bound √(3/n_in)", "backprop/init.py",
             "limit = np.sqrt(6.0 / n_in)", "limit = np.sqrt(3.0 / n_in)",
             "tests/test_network.py -k he_uniform"),
    Mutation("a nested call during fit forgets the fit", "backprop/guard.py",
             "use.new = (me, depth + 1, fitting or use.fit,",
             "use.new = (me, depth + 1, use.fit,",
             "tests/test_state_ownership.py -k 'numpy and keeps_other_threads'"),
    # ---- batch normalization, residual connections, gradcheck
    Mutation("numpy batch norm running variance biased", NP,
             "np.multiply(var, momentum * rows / max(rows - 1, 1), out=c)",
             "np.multiply(var, momentum, out=c)",
             "tests/test_batch_norm.py -k 'numpy and kernels_match'"),
    Mutation("numpy batch norm backward without the Zhat term", NP,
             "np.multiply(Zhat, dgamma, out=s)                   # Zhat ⊙ dgamma + dbeta",
             "np.multiply(Zhat, 0.0, out=s)",
             "tests/test_batch_norm.py -k 'numpy and gradients_match'"),
    Mutation("numpy batch norm eval with the running mean's sign flipped", NP,
             "            np.copyto(mean, running_mean)\n",
             "            np.negative(running_mean, out=mean)\n",
             "tests/test_batch_norm.py -k 'numpy and evaluation_uses'"),
    Mutation("numba batch norm backward without dβ", NB,
             "out[i, j] = gamma[j] * inv_std[j] * (G[i, j] - (dbeta[j] + Zhat[i, j] * dgamma[j]) * r)",
             "out[i, j] = gamma[j] * inv_std[j] * (G[i, j] - (Zhat[i, j] * dgamma[j]) * r)",
             "tests/test_batch_norm.py -k 'numba and kernels_match'"),
    Mutation("numba batch norm eval without the running mean", NB,
             "                Zhat[i, j] = Z[i, j] - mean[j]\n",
             "                Zhat[i, j] = Z[i, j]\n",
             "tests/test_batch_norm.py -k 'numba and evaluation_uses'"),
    Mutation("cuda batch norm running mean without momentum", CU,
             "running_mean[c] = (T)((1.0 - k) * (double)running_mean[c] + k * m);",
             "running_mean[c] = (T)m;",
             "tests/test_batch_norm.py -k 'cupy and kernels_match'"),
    Mutation("cuda batch norm backward dgamma from G alone", CU,
             "sgz += g * (double)Zhat[r * cols + c];", "sgz += g;",
             "tests/test_batch_norm.py -k 'cupy and gradients_match'"),
    Mutation("residual backward drops the skip's gradient", NET,
             "                be.add(E, ws.E[above], E)\n", "                pass\n",
             "tests/test_residual.py -k 'numpy and transcription'"),
    Mutation("residual forward adds the input before dropout", NET,
             "                be.add(out, inputs[l], ws.A[l])",
             "                be.add(out, inputs[l] if l == 0 else ws.A[l - 1], ws.A[l])",
             "tests/test_residual.py -k 'numpy and dropout'"),
    Mutation("batch norm γ gets the weights' L2 penalty", "backprop/optimizers.py",
             "rule_w if i % 2 == 0 and i < pairs else rule_b)",
             "rule_w if i % 2 == 0 else rule_b)",
             "tests/test_batch_norm.py -k 'numpy and training_step_matches and step'"),
    Mutation("running statistics updated outside training steps", NET,
             "BN_MOMENTUM if train else 0.0, BN_EPS,", "BN_MOMENTUM, BN_EPS,",
             "tests/test_batch_norm.py -k 'numpy and only_in_training'"),
    Mutation("state forgets the running variance", "backprop/state.py",
             "            for p in (\"running_mean\", \"running_var\")]",
             "            for p in (\"running_mean\",)]",
             "tests/test_batch_norm_state.py -k 'numpy and bit_exact'"),
    Mutation("gradcheck differences one-sided", "backprop/gradcheck.py",
             "            flat[i] = saved - eps\n", "            flat[i] = saved\n",
             "tests/test_gradcheck.py -k 'numpy and correct'"),
    Mutation("batch norm fit trains a 1-row last batch", "backprop/training.py",
             "    drop = normalised and n % batch_size == 1\n", "    drop = False\n",
             "tests/test_batch_norm_batches.py -k 'numpy and tail'"),
    Mutation("batch norm epoch loss counts the row left out", "backprop/training.py",
             "logs = _epoch_logs(net, total / (seen - dropped),",
             "logs = _epoch_logs(net, total / seen,",
             "tests/test_batch_norm_batches.py -k 'numpy and tail and weighted'"),
    Mutation("cuda graph epoch counts the rows of X, not of the order", "backprop/backends/cupy.py",
             "n = X.shape[0] if order is None else order.shape[0]     # the rows trained on",
             "n = X.shape[0]",
             "tests/test_batch_norm_batches.py -k 'cupy and tail'"),
    Mutation("gradcheck layer scale 1000x", "backprop/gradcheck.py",
             "scale[layer] = max(scale.get(layer, 0.0), float(np.abs(numeric).max()))",
             "scale[layer] = max(scale.get(layer, 0.0), 1e3 * float(np.abs(numeric).max()))",
             "tests/test_gradcheck.py -k 'numpy and dgamma'"),
    Mutation("gradcheck frozen bias judged by its numeric side only", "backprop/gradcheck.py",
             "error = (np.maximum(np.abs(a), np.abs(numeric)) if is_frozen",
             "error = (np.abs(numeric) if is_frozen",
             "tests/test_gradcheck.py -k 'frozen_bias'"),
    Mutation("diagnostics every epoch whatever they cost", "backprop/diagnostics.py",
             "return self.last is None or self.diagnosing + self.last <= self.share * self.training",
             "return True",
             "tests/test_diagnostics.py -k 'schedule or budget'"),
    # ---- clipping by value, the warm-up, ReduceLROnPlateau, the diagnostics (issue 11)
    Mutation("doctor: numpy clip_value's upper bound 2c", NP,
             "np.clip(g, -c, c, out=g)", "np.clip(g, -c, 2 * c, out=g)",
             "tests/test_schedules.py -k 'update_clips and numpy'"),
    Mutation("doctor: numba clip_value's lower bound +c", NB,
             "            elif g < -c:\n                g = -c\n",
             "            elif g < -c:\n                g = c\n",
             "tests/test_schedules.py -k 'update_clips and numba'"),
    Mutation("doctor: cuda clip_value's lower bound +c", CU,
             "else if (g < -clip_value) g = -clip_value;", "else if (g < -clip_value) g = clip_value;",
             "tests/test_schedules.py -k 'update_clips and cupy'"),
    Mutation("doctor: plain SGD's folded update ignores clip_value", NET,
             "                and clip_norm is None and clip_value is None):",
             "                and clip_norm is None and True):",
             "tests/test_network.py -k 'formulas and numpy-steps and clip_value and float64'"),
    Mutation("doctor: numba fused epoch uses the first step's rate for every step", NB,
             "        lr = rates[start // batch_size]", "        lr = rates[0]",
             "tests/test_network.py -k 'formulas and numba-epoch and warmup and float64'"),
    Mutation("doctor: cuda graphs ignore the warm-up's per-step rates", "backprop/backends/cupy.py",
             "            lr = learning_rate if rates is None else float(rates[k])",
             "            lr = learning_rate",
             "tests/test_network.py -k 'formulas and cupy-epoch and warmup and float64'"),
    Mutation("doctor: warm-up factor s/k instead of (s + 1)/k", "backprop/training.py",
             "    return np.minimum(1.0, (s + 1.0) / warmup_steps)",
             "    return np.minimum(1.0, s / warmup_steps + 0.01)",
             "tests/test_schedules.py -k warmup"),
    Mutation("doctor: plateau reduces at patience bad epochs, not after", "backprop/training.py",
             "        if self.num_bad_epochs > self.patience:",
             "        if self.num_bad_epochs >= self.patience:",
             "tests/test_schedules.py -k plateau_follows"),
    Mutation("doctor: plateau counts bad epochs during the cooldown", "backprop/training.py",
             "            self.cooldown_counter -= 1\n            self.num_bad_epochs = 0\n",
             "            self.cooldown_counter -= 1\n",
             "tests/test_schedules.py -k plateau_follows"),
    Mutation("doctor: plateau not rebuilt from the history on resume", "backprop/training.py",
             "        for e in range(self._seen, epoch):",
             "        for e in range(max(self._seen, epoch - 1), epoch):",
             "tests/test_schedules.py -k 'plateau_follows or resume_with_plateau'"),
    Mutation("doctor: vanishing verdict above, not at, its factor", "backprop/diagnostics.py",
             "fall >= VANISHING_FACTOR", "fall > VANISHING_FACTOR",
             "tests/test_diagnostics.py -k thresholds"),
    Mutation("doctor: dead units counted when inactive for any sample", "backprop/diagnostics.py",
             "                inactive = float(np.mean(np.all(a <= 0, axis=0)))",
             "                inactive = float(np.mean(np.any(a <= 0, axis=0)))",
             "tests/test_diagnostics.py -k 'measurements and numpy'"),
    Mutation("doctor: saturation counted for half the samples, not most", "backprop/diagnostics.py",
             "axis=0) > SATURATED_SAMPLES))", "axis=0) >= SATURATED_SAMPLES))",
             "tests/test_diagnostics.py -k saturation_counts"),
    Mutation("doctor: update ratio without the learning rate", "backprop/diagnostics.py",
             "update_ratio=_ratio(learning_rate * grad_norm, weight_norm)",
             "update_ratio=_ratio(grad_norm, weight_norm)",
             "tests/test_diagnostics.py -k 'measurements and numpy'"),
    # ---- the scikit-learn estimators, the command line, ONNX export
    Mutation("estimator alpha not halved for l2", "backprop/sklearn.py",
             "l2=self.alpha / (2 * batch * mean_weight)", "l2=self.alpha / (batch * mean_weight)",
             "tests/test_sklearn.py -k alpha_matches"),
    Mutation("estimator penalty not divided by the mean weight", "backprop/sklearn.py",
             "mean_weight = 1.0 if weights is None else float(np.mean(weights))",
             "mean_weight = 1.0",
             "tests/test_sklearn.py -k 'alpha_matches or equivalence_in_float64'"),
    Mutation("a failed fit does not put the estimator's attributes back", "backprop/sklearn.py",
             "            self.__dict__.update(before)\n", "",
             "tests/test_sklearn.py -k 'failed_refit or failed_first'"),
    Mutation("a failed partial_fit does not put the network back", "backprop/sklearn.py",
             "            if snapshot:                # partial_fit trains",
             "            if not snapshot:            # partial_fit trains",
             "tests/test_sklearn.py -k 'partial_fit_that_diverges'"),
    Mutation("partial_fit accepts class_weight='balanced'", "backprop/sklearn.py",
             "isinstance(self.class_weight, str) and self.class_weight == \"balanced\":",
             "isinstance(self.class_weight, str) and self.class_weight == \"balance\":",
             "tests/test_sklearn.py -k balanced"),
    Mutation("saving replaces a FIFO (any non-directory) with a file", "backprop/state.py",
             "    if not stat.S_ISREG(mode):\n        shown",
             "    if stat.S_ISDIR(mode):\n        shown",
             "tests/test_state.py -k regular_file"),
    Mutation("saving replaces a symbolic link with a file", "backprop/state.py",
             "    real = os.path.realpath(name)", "    real = os.path.abspath(name)",
             "tests/test_state.py -k symbolic"),
    Mutation("binary predict_proba columns swapped", "backprop/sklearn.py",
             "return np.column_stack([1 - p[:, 0], p[:, 0]])",
             "return np.column_stack([p[:, 0], 1 - p[:, 0]])",
             "tests/test_sklearn.py -k binary_is_one"),
    Mutation("stopping patience one epoch short", "backprop/sklearn.py",
             "patience=self.n_iter_no_change, min_delta=self.tol,",
             "patience=self.n_iter_no_change - 1, min_delta=self.tol,",
             "tests/test_sklearn.py -k stopping_rules"),
    Mutation("cli probabilities of a sigmoid unit swapped", "backprop/cli.py",
             "return np.column_stack([1 - p[:, 0], p[:, 0]]) if",
             "return np.column_stack([p[:, 0], 1 - p[:, 0]]) if",
             "tests/test_cli.py -k binary_loss"),
    Mutation("onnx Gemm without transB", "backprop/export.py",
             "constant(f\"b{l}\", b)], [z], transB=1,", "constant(f\"b{l}\", b)], [z], transB=0,",
             "tests/test_onnx.py -k every_output"),
    Mutation("onnx leaky_relu without its alpha", "backprop/export.py",
             "if act.code in (Code.LEAKY_RELU, Code.ELU):", "if act.code == Code.ELU:",
             "tests/test_onnx.py -k every_hidden"),
    Mutation("onnx residual adds the activation to itself", "backprop/export.py",
             "make_node(\"Add\", [activated, current], [out],",
             "make_node(\"Add\", [activated, activated], [out],",
             "tests/test_onnx.py"),
    # ---- data parallelism (backprop/distributed.py): each needs mpi4py and mpiexec
    Mutation("distributed: a rank's gradient is its rows' mean, not its share of the batch",
             DIST, "return rows / self._batch_rows", "return 1.0", DIST_TESTS),
    Mutation("distributed: batch slices overlap by a row", DIST,
             "return rank * rows // size, (rank + 1) * rows // size",
             "return rank * rows // size, min(rows, (rank + 1) * rows // size + 1)",
             "tests/test_distributed.py -k 'batch_slice or (trajectory_numpy and 3)'"),
    Mutation("distributed: dropout uses the batch's first rows' masks", DIST,
             "be.copy(M[lo:hi], mask)", "be.copy(M[:hi - lo], mask)", DIST_TESTS),
    Mutation("distributed: parameters not broadcast from rank 0", DIST,
             '            self.comm.bcast(host, "the broadcast of the initial parameters")\n',
             "", DIST_TESTS),
    Mutation("distributed: the epoch's loss is this rank's, not the sum", DIST,
             '            self.comm.allreduce(value, "the Allreduce of the epoch\'s loss")\n',
             "            pass\n", DIST_TESTS),
    Mutation("distributed: shard rows not shifted by the rank's offset", DIST,
             "return order[where] - self.offset,", "return order[where] % self.n_local,",
             DIST_TESTS),
    Mutation("distributed: batch normalization's column sums not Allreduced (a rank's mean)",
             DIST, "        be.batch_norm_sums(Z, None, mean)\n"
             "        self.allreduce(mean, \"the Allreduce of batch normalization's sums\")\n",
             "        be.batch_norm_sums(Z, None, mean)\n", DIST_BN),
    Mutation("distributed: dβ Allreduced in the gradient buffer too (summed twice)", DIST,
             "        be.copy(dbeta, sums[1])\n",
             "        self.allreduce(dbeta); be.copy(dbeta, sums[1])\n", DIST_BN),
    Mutation("distributed: batch normalization's backward divides by the rank's rows", DIST,
             "                                     self._batch_rows, out)",
             "                                     G.shape[0], out)", DIST_BN),
    Mutation("distributed: sample weights' share ignored (rows' share instead)", DIST,
             "        if self._fraction is not None:\n            return self._fraction",
             "        if False:\n            return self._fraction",
             "tests/test_distributed.py -k 'sample_weight and 2'"),
    Mutation("distributed: the ranks' settings not compared (the check skipped)", DIST,
             "    for key in first:\n        values = [repr(dict(d).get(key",
             "    for key in ():\n        values = [repr(dict(d).get(key",
             "tests/test_distributed.py -k 'settings_differ and learning_rate'"),
    Mutation("distributed: the stop decision not agreed (each rank its own)", DIST,
             "        return bool(flag[0] > 0)", "        return stop",
             "tests/test_distributed.py -k stop_on_one"),
    Mutation("numpy scale ignores its factor", NP,
             "np.multiply(x, x.dtype.type(factor), out=x)", "np.multiply(x, 1, out=x)",
             DIST_TESTS),
    Mutation("cuda scale ignores its factor", CU,
             "GRID_STRIDE(i, n) x[i] = x[i] * factor;", "GRID_STRIDE(i, n) x[i] = x[i];",
             "tests/test_distributed.py -k 'cupy_emulated_nccl and 2'"),
]


def one_line_change(old: str, new: str) -> bool:
    """``new`` is ``old`` with exactly one line changed or deleted."""
    a, b = old.splitlines(), new.splitlines()
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    return len(a) == len(b) + 1 and any(a[:i] + a[i + 1:] == b for i in range(len(a)))


def check(mutation: Mutation, root: Path) -> str | None:
    """Why ``mutation`` cannot be applied to the tree at ``root``, or None."""
    path = root / mutation.path
    if not path.is_file():
        return f"{mutation.path} does not exist"
    count = path.read_text(encoding="utf-8").count(mutation.old)
    if count != 1:
        return f"its line occurs {count} times in {mutation.path} (expected once)"
    if not one_line_change(mutation.old, mutation.new):
        return "it changes more or less than one line"
    return None


def source_files(root: Path) -> list[Path]:
    """The repository's files (git's tracked and untracked-but-not-ignored), relative."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                             capture_output=True, check=True)
        return [Path(p) for p in out.stdout.decode().split("\0") if p and (root / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", "build", "dist"}
        return [p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(root).parts)]


class Scratch:
    """A copy of the repository in a temporary folder, where one mutation at a time is
    applied and the tests run."""

    def __init__(self, files: list[Path]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="backprop-mutations-"))
        for rel in files:
            (self.dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, self.dir / rel)
        (self.dir / ".tmp").mkdir()

    def env(self, numba_cache: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PYTHONPATH=str(self.dir) + os.pathsep + env.get("PYTHONPATH", ""),
                   PYTHONDONTWRITEBYTECODE="1",        # no stale .pyc of a mutant, ever
                   NUMBA_CACHE_DIR=str(numba_cache),
                   TMPDIR=str(self.dir / ".tmp"))      # emulator builds of mutated kernels
        return env

    def pytest(self, args: list[str], timeout: float, numba_cache: Path) -> tuple[int | None, str]:
        """(exit status or None on timeout, output tail) of pytest -x on ``args``."""
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
        try:
            out = subprocess.run(cmd, cwd=self.dir, env=self.env(numba_cache), timeout=timeout,
                                 capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return None, ""
        return out.returncode, (out.stdout + out.stderr)[-3000:]

    def run(self, mutation: Mutation, timeout: float,
            verbose: bool = False) -> tuple[str, float, str]:
        """(status, seconds, detail) of one mutation: killed, SURVIVED or ERROR."""
        path = self.dir / mutation.path
        original = path.read_bytes()
        stat = path.stat()
        start = time.perf_counter()
        # a mutated numba.py compiles into a cache of its own, so the shared one stays valid
        own_cache = mutation.path == NB
        cache = Path(tempfile.mkdtemp(dir=self.dir / ".tmp")) if own_cache else \
            self.dir / ".numba-cache"
        try:
            path.write_text(original.decode("utf-8").replace(mutation.old, mutation.new),
                            encoding="utf-8")
            status, output = self.pytest(shlex.split(mutation.tests), timeout, cache)
        finally:
            path.write_bytes(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            if own_cache:
                shutil.rmtree(cache, ignore_errors=True)
        seconds = time.perf_counter() - start
        if status is None:
            return "killed", seconds, f"(timed out after {timeout:.0f}s)"
        shown = f"\n{output}" if verbose else ""
        if status in (1, 2):           # tests failed, or the mutant broke collection
            return "killed", seconds, shown
        if status == 0:
            return "SURVIVED", seconds, shown
        reason = "the selection runs no test" if status == 5 else f"pytest exited {status}"
        return "ERROR", seconds, f"{reason}\n{output}"

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def baseline_args(mutations: list[Mutation]) -> list[str]:
    """pytest arguments that select every test of the mutations' selections: their files, and
    their -k expressions joined with ``or`` (none when a selection has none)."""
    files: list[str] = []
    expressions: list[str | None] = []
    for m in mutations:
        args = shlex.split(m.tests)
        expression = None
        for i, arg in enumerate(args):
            if arg == "-k" and i + 1 < len(args):
                expression = args[i + 1]
            elif (i == 0 or args[i - 1] != "-k") and arg not in files:
                files.append(arg)
        expressions.append(expression)
    if None in expressions:
        return files
    return files + ["-k", " or ".join(f"({e})" for e in dict.fromkeys(expressions))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="match", default="",
                        help="only the mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--jobs", type=int, default=1, help="scratch copies run at once")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds a mutation's tests may run (past it: killed)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the un-mutated run of the selected test files")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the end of each mutation's pytest output")
    args = parser.parse_args(argv)

    mutations = [m for m in MUTATIONS if args.match.lower() in m.name.lower()]
    problems = [(m, check(m, ROOT)) for m in mutations]
    problems = [(m, why) for m, why in problems if why]
    if args.list or problems:
        for m in mutations:
            print(f"{m.name:55s} {m.path}  [{m.tests}]")
        for m, why in problems:
            print(f"ERROR: mutation {m.name!r} does not apply: {why}")
        print(f"{len(mutations)} mutations")
        return 1 if problems else 0
    if not mutations:
        print(f"no mutation's name contains {args.match!r}")
        return 1

    began = time.perf_counter()
    files = source_files(ROOT)
    scratches = [Scratch(files) for _ in range(max(1, min(args.jobs, len(mutations))))]
    try:
        if not args.no_baseline:
            tests = baseline_args(mutations)
            print(f"baseline: the un-mutated copy passes the selected tests of "
                  f"{' '.join(t for t in tests if t.endswith('.py'))}", flush=True)
            status, output = scratches[0].pytest(tests, None,
                                                 scratches[0].dir / ".numba-cache")
            if status != 0:
                print(output)
                print(f"baseline failed (pytest exited {status}): fix the tests first")
                return 2
        free = list(scratches)
        lock = threading.Lock()
        results: dict[int, tuple[str, float, str]] = {}

        def run(index: int) -> None:
            with lock:
                scratch = free.pop()
            try:
                result = scratch.run(mutations[index], args.timeout, args.verbose)
            finally:
                with lock:
                    free.append(scratch)
            results[index] = result
            status, seconds, detail = result
            with lock:
                print(f"{status:8s} {seconds:6.1f}s  {mutations[index].name}"
                      + (f"  {detail}" if detail else ""), flush=True)

        with ThreadPoolExecutor(len(scratches)) as pool:
            list(pool.map(run, range(len(mutations))))
    finally:
        for scratch in scratches:
            scratch.remove()

    killed = sum(results[i][0] == "killed" for i in results)
    survivors = [mutations[i] for i in sorted(results) if results[i][0] == "SURVIVED"]
    errors = [mutations[i] for i in sorted(results) if results[i][0] == "ERROR"]
    minutes, seconds = divmod(time.perf_counter() - began, 60)
    print(f"\nmutation score: {killed}/{len(mutations)} killed "
          f"({100 * killed / len(mutations):.1f}%) in {int(minutes)}m{seconds:02.0f}s")
    for title, group in (("survived", survivors), ("could not run", errors)):
        if group:
            print(f"{title}:")
            for m in group:
                line = next(line for line in m.new.splitlines() + [""]
                            if line not in m.old.splitlines()) or "(line deleted)"
                print(f"  {m.name}\n    {m.path}: {line.strip()}\n    tests: {m.tests}")
    return 0 if not survivors and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
