"""The CuPy backend without a GPU: its Python code and kernels/backprop.cu, run on the CPU.

``tests/emulator/fake_cupy.py`` stands in for CuPy (NumPy arrays, kernels compiled with g++ and
run with a fiber per CUDA thread, stream capture recorded and replayed as a graph), so the GPU
tests of test_cupy.py run here against the NumPy backend. This checks our side: kernel
arithmetic, the argument types and order of every launch, the graph/step-counter logic.
It does not check CuPy, NVRTC, cuBLAS or real device behaviour (see test_cupy.py for those).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import test_cupy as gpu_tests

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("fake_cupy", HERE / "emulator" / "fake_cupy.py")
fake_cupy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_cupy)

pytestmark = pytest.mark.skipif(fake_cupy.compiler() is None,
                                reason="g++ is needed to build the CUDA emulator")


@pytest.fixture
def emu(monkeypatch):
    """A CuPyBackend on the emulator, registered as the 'cuda' backend for this test."""
    import backprop.backends as backends
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(backends, "is_installed", lambda name: name != "numba")
    return backends.get_backend("cuda", "cupy")


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.mark.parametrize("trans_a,trans_b", gpu_tests.LAYOUTS)
@pytest.mark.parametrize("M,N,K", gpu_tests.MATMUL_SHAPES)
def test_matmul(emu, dtype, M, N, K, trans_a, trans_b):
    gpu_tests.test_matmul(dtype, emu, M, N, K, trans_a, trans_b)


@pytest.mark.parametrize("n_in,n_out", gpu_tests.WIDTHS)
@pytest.mark.parametrize("act", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
                                 "softmax"])
def test_forward_and_delta(emu, dtype, act, n_in, n_out):
    gpu_tests.test_forward_and_delta(dtype, emu, act, n_in, n_out)


@pytest.mark.parametrize("n_in,n", gpu_tests.WIDTHS)
def test_weight_grad(emu, dtype, n_in, n):
    gpu_tests.test_weight_grad(dtype, emu, n_in, n)


@pytest.mark.parametrize("loss,act", gpu_tests.PAIRINGS)
def test_output_delta_and_loss(emu, dtype, loss, act):
    gpu_tests.test_output_delta_and_loss(dtype, emu, loss, act)


@pytest.mark.parametrize("scale", ["none", "float", "device"])
@pytest.mark.parametrize("name", sorted(gpu_tests.RULES))
def test_update(emu, dtype, name, scale):
    gpu_tests.test_update(dtype, emu, name, scale)


def test_grad_scale_multiply_take_rows(emu, dtype):
    gpu_tests.test_grad_scale_multiply_take_rows(dtype, emu)


def test_dropout(emu, dtype):
    gpu_tests.test_dropout(dtype, emu)


@pytest.mark.parametrize("sizes", [[6, 16, 4], [300, 24, 10]])
@pytest.mark.parametrize("optimizer,clip", [("sgd", None), ("adam", 1.0), ("nesterov", None)])
def test_fit_equals_numpy(emu, sizes, optimizer, clip):
    gpu_tests.test_fit_equals_numpy(sizes, optimizer, clip)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("optimizer,clip,l1,dropout", gpu_tests.GRAPH_CASES)
def test_graphs_change_nothing(emu, dtype, optimizer, clip, l1, dropout, shuffle):
    launches = fake_cupy._state.launches
    gpu_tests.test_graphs_change_nothing(dtype, emu, optimizer, clip, l1, dropout, shuffle)
    assert fake_cupy._state.launches > launches


def test_no_graphs_with_wide_layers(emu):
    gpu_tests.test_no_graphs_with_wide_layers(emu)


def test_to_cpu_and_back_keeps_optimizer_state(emu):
    gpu_tests.test_to_cpu_and_back_keeps_optimizer_state(emu)
