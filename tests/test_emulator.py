"""The CUDA emulator's stand-in for CuPy refuses what CuPy refuses.

A permissive stand-in hides crashes: labels once reached CuPy ufuncs as a host array, which
CuPy refuses and the old stand-in (NumPy's ufuncs under CuPy's names) accepted. Each test
here shows one refusal, so the stand-in cannot grow permissive again unnoticed.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import fake_cupy

from backprop.backends.cupy import NAME_EXPRESSIONS, kernel_source

cp = fake_cupy()
pytestmark = pytest.mark.skipif(cp.compiler() is None, reason="the CUDA emulator needs g++")


@pytest.fixture(scope="module")
def module():
    return cp.RawModule(code=kernel_source(), options=("-std=c++17",),
                        name_expressions=NAME_EXPRESSIONS)


def multiply_args(x, y):
    return (x, y, np.int64(x.size))


def test_arrays_are_not_numpy_arrays():
    x = cp.zeros((3,), np.float32)
    assert not isinstance(x, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.array(x, dtype=np.float64)
    np.testing.assert_array_equal(x.get(), np.zeros(3, np.float32))    # explicit: fine
    # NumPy's ufuncs and functions dispatch to the device, as CuPy's __array_ufunc__ and
    # __array_function__ do: the results stay device arrays
    assert isinstance(np.isfinite(x), cp.ndarray) and isinstance(np.argmax(x), cp.ndarray)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.add(x, np.ones(3, np.float32))


@pytest.mark.parametrize("call", [
    lambda h, d: cp.isfinite(h), lambda h, d: cp.floor(h), lambda h, d: cp.argmax(h),
    lambda h, d: cp.maximum(d, h), lambda h, d: d + h, lambda h, d: d == h,
    lambda h, d: cp.copyto(d, h), lambda h, d: cp.matmul(d.reshape(3, 1), h.reshape(1, 3)),
    lambda h, d: d.__setitem__(slice(None), h), lambda h, d: cp.ascontiguousarray(h),
    lambda h, d: h + d],
    ids=["isfinite", "floor", "argmax", "maximum", "add", "equal", "copyto", "matmul",
         "setitem", "ascontiguousarray", "radd"])
def test_numpy_arrays_are_refused(call):
    host, device = np.ones(3), cp.ones((3,))
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        call(host, device)


def test_what_cupy_accepts_is_accepted():
    """CuPy 14.2 wraps Python scalars in ufuncs (a 0-d result) and copies host indices to the
    device; refusing these would invent failures a GPU does not have."""
    assert isinstance(cp.isfinite(1.0), cp.ndarray) and bool(cp.isfinite(1.0))
    assert bool((cp.ones((2,)) * 2.0 == 2.0).all())
    d = cp.arange(5)
    np.testing.assert_array_equal(d[[0, 2]].get(), [0, 2])
    np.testing.assert_array_equal(d[np.array([4, 1])].get(), [4, 1])


def test_kernel_arguments_must_match_the_c_signature(module):
    kernel = module.get_function("multiply<float>")           # (T* x, const T* y, long long n)
    x, y = cp.ones((4,), np.float32), cp.ones((4,), np.float32)
    kernel((1,), (32,), multiply_args(x, y))                  # the right types: runs
    kernel((1,), (32,), (x, y, 4))               # a Python int is passed as a long long
    kernel((1,), (32,), (x, y, np.array([4])))   # a size-1 NumPy array, by value
    bad = {
        "host array": (x, np.ones(4, np.float32), np.int64(4)),
        "Python float for long long": (x, y, 4.0),
        "int32 for long long": (x, y, np.int32(4)),
        "size-1 int32 array for long long": (x, y, np.array([4], np.int32)),
        "float64 array for float*": (x, cp.ones((4,), np.float64), np.int64(4)),
        "non-contiguous array": (x, cp.ones((8,), np.float32)[::2], np.int64(4)),
        "too few arguments": (x, y),
    }
    for what, args in bad.items():
        with pytest.raises(TypeError):
            kernel((1,), (32,), args)
    scale = module.get_function("output_delta<float>")   # (..., int code, T alpha, int, T, ...)
    A = cp.ones((4,), np.float32)
    good = (A, A, cp.empty((4,), np.float32), np.int64(4), np.int64(4), np.int32(0),
            np.float32(0), np.int32(1), np.float32(0.25), np.uint64(0), np.uint64(0))
    scale((1,), (32,), good)
    for i, wrong in ((6, 0.0), (6, np.float64(0)), (5, 0), (5, np.int64(0)), (5, True)):
        args = list(good)
        args[i] = wrong
        with pytest.raises(TypeError, match="output_delta: parameter"):
            scale((1,), (32,), tuple(args))


def test_capture_refuses_allocation_cublas_copies_and_synchronisation(module):
    x = cp.ones((4,), np.float32)
    m = cp.ones((2, 2), np.float32)
    host = np.ones((4,), np.float32)
    finite = cp.zeros((4,), bool)
    refused = {
        "allocation": lambda: cp.empty((4,), np.float32),
        "zeros": lambda: cp.zeros((4,), np.float32),
        "an operator's result": lambda: x + 1,
        "cuBLAS": lambda: cp.matmul(m, m, out=m),
        "host-to-device copy": lambda: cp.asarray(host),
        "set": lambda: x.set(host),
        "device-to-host copy": lambda: x.get(),
        "float()": lambda: float(x[0]),
        "device synchronisation": lambda: cp.cuda.Device(0).synchronize(),
        "stream synchronisation": lambda: cp.cuda.get_current_stream().synchronize(),
        "an eager ufunc": lambda: cp.isfinite(x, out=finite),
        "a reshape that copies": lambda: m.T.reshape(4),
    }
    for what, call in refused.items():
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            try:
                with pytest.raises((cp.CUDARuntimeError, RuntimeError)):
                    call()
            finally:
                stream.end_capture()
    kernel = module.get_function("multiply<float>")
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        kernel((1,), (32,), multiply_args(x, x))              # a kernel: recorded, not run
        graph = stream.end_capture()
    np.testing.assert_array_equal(x.get(), np.ones(4, np.float32))
    graph.launch(stream)
    graph.launch(stream)
    np.testing.assert_array_equal(x.get(), np.ones(4, np.float32))   # 1 · 1 · 1


def test_graph_replays_the_recorded_arguments(module):
    kernel = module.get_function("increment<int>")
    counter = cp.zeros((1,), np.int32)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        kernel((1,), (1,), (counter,))
        graph = stream.end_capture()
    assert int(counter[0]) == 0
    for _ in range(3):
        graph.launch(stream)
    assert int(counter[0]) == 3


def test_legacy_stream_cannot_capture(module):
    with pytest.raises(cp.CUDARuntimeError, match="legacy stream"):
        cp.cuda.Stream(null=True).begin_capture()
    with pytest.raises(cp.CUDARuntimeError, match="legacy stream"):
        cp.cuda.get_current_stream().begin_capture()          # the default stream is legacy
    x = cp.ones((4,), np.float32)
    kernel = module.get_function("multiply<float>")
    for non_blocking in (False, True):
        stream = cp.cuda.Stream(non_blocking=non_blocking)
        with stream:
            stream.begin_capture()
        try:                              # capturing, but this launch is on the legacy stream
            if non_blocking:              # no implicit synchronisation: CUDA allows it
                kernel((1,), (32,), multiply_args(x, x))
            else:
                with pytest.raises(cp.CUDARuntimeError, match="legacy stream"):
                    kernel((1,), (32,), multiply_args(x, x))
        finally:
            stream.end_capture()


def test_allow_synchronize_false_refuses_synchronisation():
    x = cp.ones((2,), np.float32)
    with cp.cupyx.allow_synchronize(False):
        with pytest.raises(cp.DeviceSynchronized):
            x.get()
        with pytest.raises(cp.DeviceSynchronized):
            bool(x[0])
    assert x.get().sum() == 2


def test_tf32_math_mode_rounds_float32_products():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 256)), rng.standard_normal((256, 32))
    exact = a @ b
    x, y = cp.asarray(a, np.float32), cp.asarray(b, np.float32)
    cp.cublas.setMathMode(0, cp.cublas.CUBLAS_TF32_TENSOR_OP_MATH)
    try:
        tf32 = cp.matmul(x, y).get()
    finally:
        cp.cublas.setMathMode(0, cp.cublas.CUBLAS_DEFAULT_MATH)
    fp32 = cp.matmul(x, y).get()
    error = lambda z: np.linalg.norm(z - exact) / np.linalg.norm(exact)  # noqa: E731
    assert error(fp32) < 1e-6 < 1e-4 < error(tf32) < 1e-2
