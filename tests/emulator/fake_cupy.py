"""A stand-in for the parts of CuPy the backend uses, running kernels/backprop.cu on the CPU.

It refuses what CuPy 14 refuses, so a host/device mix-up fails here as it would on a GPU:

- Arrays are a type of their own (:class:`ndarray`, holding host memory that poses as device
  memory), not a NumPy subclass: ``numpy.asarray`` of one raises, as CuPy's implicit
  conversion does; a NumPy array passed to a ufunc, a reduction, an operator, ``copyto``,
  ``matmul`` or a kernel raises ``TypeError: Unsupported type``. What CuPy 14.2 accepts is
  accepted: Python scalars in ufuncs (a 0-d result), NumPy ufuncs and functions called on
  device arrays (dispatched, ``__array_ufunc__``/``__array_function__``), lists and NumPy
  integer arrays as indices (copied to the device).
- ``RawModule`` kernels run in ``emulator.cpp`` (compiled with g++ on first use), which reads
  each argument as the type the kernel declares, as cuLaunchKernel does. Each argument is
  checked against the kernel's C signature, parsed from the source: a pointer takes a
  C-contiguous device array of the pointee's type (or ``numpy.uint64(0)``, a null pointer);
  a value parameter a NumPy scalar (or size-1 NumPy array, passed by value) of exactly its
  type, or the Python scalar CuPy marshals to that type (an int for ``long long``, a float
  for ``double``): CuPy passes a Python float as a double and a Python int as a 64-bit
  integer whatever the parameter says, so a Python float for ``float`` or an int for
  ``int`` is refused.
- Stream capture records launches with their argument values; ``Graph.launch`` replays them.
  During a capture these raise: cuBLAS (CuPy refuses it, cupy issue 6290), host-device copies
  and synchronisation (CUDA refuses them on a capturing stream), capture on the legacy (null)
  stream, a launch on the legacy stream while a blocking stream captures (the legacy stream
  would synchronise with it). Allocation raises too, though CuPy's relaxed capture mode lets
  it through: a buffer allocated during a capture returns to CuPy's pool and is reused while
  the graph still writes to it, so it is always a bug in our code. Array operations other than
  RawModule kernels (ufuncs, ``copyto``, assignments) raise during a capture: they would run
  eagerly here instead of being recorded, which CUDA would not do.
- ``cupy_backends.cuda.libs.cublas.setMathMode`` with the TF32 mode makes ``matmul`` round
  float32 inputs to TF32 (10 mantissa bits), so the TF32 path changes results as on a GPU.
- ``cupyx.allow_synchronize(False)`` makes every synchronisation raise.

It checks what the GPU would check about our code (argument types and order, kernel
arithmetic, graph replay logic, where arrays live), not CuPy, NVRTC or cuBLAS themselves.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import numbers
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import types
import weakref
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BARRIER_KERNELS = ("matmul", "loss", "sum_squares", "clip_factor", "weight_norm")   # with __syncthreads
__version__ = "14.2.0 (CPU emulator)"


def compiler() -> str | None:
    return shutil.which("g++")


def build(name_expressions: tuple[str, ...]) -> ctypes.CDLL:
    """Compile the emulator for these name expressions (cached by content)."""
    source = ROOT / "kernels" / "backprop.cu"
    entries = []
    for expr in name_expressions:
        barrier = "true" if expr.split("<")[0] in BARRIER_KERNELS else "false"
        entries.append(f'  {{"{expr}", [](const unsigned* g, const unsigned* b, void** a) '
                       f'{{ launch(&{expr}, {barrier}, g, b, a); }}}}')
    inc = ("using Launcher = void (*)(const unsigned*, const unsigned*, void**);\n"
           "static const std::pair<const char*, Launcher> LAUNCHERS[] = {\n"
           + ",\n".join(entries) + "\n};\n")
    digest = hashlib.sha1((inc + source.read_text() + (HERE / "emulator.cpp").read_text())
                          .encode()).hexdigest()[:16]
    build_dir = Path(tempfile.gettempdir()) / f"backprop-emulator-{digest}"
    lib = build_dir / "emulator.so"
    if not lib.exists():
        build_dir.mkdir(exist_ok=True)
        (build_dir / "instances.inc").write_text(inc)
        partial = build_dir / f"emulator.{id(entries)}.so"      # renamed when complete
        cmd = [compiler(), "-std=c++17", "-O1", "-shared", "-fPIC",
               f'-DKERNEL_SOURCE="{source}"', "-I", str(build_dir),
               "-o", str(partial), str(HERE / "emulator.cpp")]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"building the emulator failed:\n{out.stderr}")
        partial.replace(lib)
    dll = ctypes.CDLL(str(lib))
    dll.emulate.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint),
                            ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p)]
    dll.emulate.restype = ctypes.c_int
    return dll


class _State(threading.local):
    """What CUDA and CuPy keep per thread: the current stream, the capture this thread began,
    cupyx.allow_synchronize, the cuBLAS handle's math mode."""

    def __init__(self) -> None:
        self.capture = None          # (stream, recorded launches) while a stream captures
        self.streams: list = []      # the current-stream stack (empty: the legacy stream)
        self.allow_sync = True       # cupyx.allow_synchronize
        self.math_mode = 0           # cuBLAS math mode: 0 default, 3 TF32


_state = _State()
#: the emulator library, loaded once; its C++ state (threadIdx, the fibers) is global, so one
#: launch runs at a time (``lock``); ``launches`` counts the kernels run
_library = types.SimpleNamespace(dll=None, launches=0, lock=threading.Lock())


class CUDARuntimeError(RuntimeError):
    pass


def _refuse_in_capture(what: str) -> None:
    if _state.capture is not None:
        raise CUDARuntimeError(f"cudaErrorStreamCaptureUnsupported: {what} is not permitted "
                               "while a stream is capturing")


def _synchronize(what: str) -> None:
    _refuse_in_capture(what)
    if not _state.allow_sync:
        raise DeviceSynchronized(f"device synchronization by {what} is disallowed")


class DeviceSynchronized(RuntimeError):
    """cupyx's error for a synchronisation under ``allow_synchronize(False)``."""


# ---------------------------------------------------------------------- arrays

class _Device:
    def __init__(self, index: int = 0) -> None:
        self.id = index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        _synchronize("Device.synchronize")

    cublas_handle = 0


def _unsupported(x) -> TypeError:
    return TypeError(f"Unsupported type {type(x)}")


def _operand(x):
    """The host value behind a device array or a scalar operand; NumPy arrays are refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (bool, numbers.Number, np.generic)):
        return x
    raise _unsupported(x)


#: every live device allocation by its address: what NCCL accepts as a device pointer
_allocations: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()


def _new(a) -> "ndarray":
    """A freshly allocated device array holding ``a``."""
    _refuse_in_capture("memory allocation")
    a = np.asarray(a)
    if a.nbytes:
        _allocations[a.__array_interface__["data"][0]] = a
    return ndarray(a)


def _device_memory(ptr: int, count: int, dtype: np.dtype, what: str) -> np.ndarray:
    """The host memory posing as ``count`` elements of ``dtype`` at device pointer ``ptr``;
    ValueError unless it lies inside one live device allocation of that dtype."""
    if isinstance(ptr, bool) or not isinstance(ptr, numbers.Integral):
        raise TypeError(f"{what}: expected a device pointer (int), got {type(ptr)}")
    for start, base in list(_allocations.items()):
        if start <= ptr < start + base.nbytes:
            if base.dtype != dtype:
                raise ValueError(f"ncclInvalidArgument: {what} points into a {base.dtype} "
                                 f"allocation, the datatype says {dtype}")
            if (ptr - start) % dtype.itemsize or ptr + count * dtype.itemsize > start + base.nbytes:
                raise ValueError(f"ncclInvalidArgument: {what}: {count} elements of {dtype} "
                                 "run past the end of its device allocation")
            flat = base.reshape(-1)
            first = (ptr - start) // dtype.itemsize
            return flat[first:first + count]
    raise ValueError(f"ncclInvalidArgument: {what} ({ptr:#x}) is not device memory "
                     "(a host pointer?)")


def _no_capture(what: str) -> None:
    if _state.capture is not None:
        raise CUDARuntimeError(f"the emulator does not record {what} in a graph; only "
                               "RawModule kernels are captured")


class ndarray:
    """A device array: host memory posing as GPU memory, never converted implicitly."""

    __slots__ = ("_a", "__weakref__")
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        """``numpy.isfinite(device_array)`` runs on the device, as CuPy dispatches it."""
        if method != "__call__":
            return NotImplemented
        if out is not None:
            kwargs["out"] = out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _ufunc(ufunc)(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        """``numpy.argmax(device_array)`` and the like run on the device, as CuPy dispatches
        them; NumPy arrays among the arguments are refused."""
        _no_capture(func.__name__)
        values = [_operand(a) if isinstance(a, (ndarray, np.ndarray)) else a for a in args]
        result = func(*values, **{k: _operand(v) if isinstance(v, (ndarray, np.ndarray))
                                  else v for k, v in kwargs.items()})
        return _new(result) if isinstance(result, (np.ndarray, np.generic)) else result

    def __init__(self, a: np.ndarray) -> None:
        if not isinstance(a, np.ndarray):
            raise TypeError("internal: ndarray wraps a host numpy.ndarray")
        self._a = a

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    # attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    device = property(lambda self: _Device(0))

    @property
    def data(self):                                  # CuPy's MemoryPointer
        return types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0])

    @property
    def __cuda_array_interface__(self) -> dict:
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "version": 3,
                "data": (a.__array_interface__["data"][0], False),
                "strides": None if a.flags.c_contiguous else a.strides}

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        return self._a.__dlpack__()

    def __dlpack_device__(self):
        return (2, 0)                                # kDLCUDA, device 0

    def __len__(self) -> int:
        return len(self._a)

    def __repr__(self) -> str:
        return f"fake_cupy.ndarray({self._a!r})"

    # host <-> device
    def get(self, stream=None) -> np.ndarray:
        _synchronize("ndarray.get")
        return np.array(self._a)

    def set(self, arr, stream=None) -> None:
        _refuse_in_capture("a host-to-device copy")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"set: expected a numpy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("set: shape and dtype must match")
        np.copyto(self._a, arr)

    def _scalar(self, kind, what: str):
        if self._a.size != 1:
            raise TypeError(f"only size-1 arrays convert to Python {kind.__name__}")
        _synchronize(what)
        return kind(self._a.reshape(()).item())

    def __int__(self):
        return self._scalar(int, "int()")

    def __float__(self):
        return self._scalar(float, "float()")

    def __bool__(self):
        return self._scalar(bool, "bool()")

    def item(self):
        _synchronize("ndarray.item")
        return self._a.item()

    # shape and copies
    def reshape(self, *shape):
        a = self._a.reshape(*shape)
        if np.may_share_memory(a, self._a) or a.size == 0:
            return ndarray(a)                        # a view
        _no_capture("a reshape that copies")
        return _new(a)

    def ravel(self):
        return ndarray(self._a.ravel()) if self._a.flags.c_contiguous else _new(self._a.ravel())

    def astype(self, dtype, copy=True):
        if not copy and self._a.dtype == np.dtype(dtype):
            return self
        _no_capture("astype")
        return _new(self._a.astype(dtype))

    def copy(self):
        _no_capture("copy")
        return _new(self._a.copy())

    def fill(self, value) -> None:
        _no_capture("fill")
        self._a.fill(_operand(value))

    # indexing
    def _key(self, key):
        parts = key if isinstance(key, tuple) else (key,)
        advanced = False
        out = []
        for k in parts:
            if isinstance(k, ndarray):
                advanced = True
                out.append(k._a)
            elif isinstance(k, (np.ndarray, list)):  # CuPy copies host indices to the device
                _refuse_in_capture("a host-to-device copy of an index")
                advanced = True
                out.append(np.asarray(k))
            else:
                out.append(k)
        if not advanced and Ellipsis not in out:
            out.append(Ellipsis)                     # integer indices give 0-d views, as CuPy
        return tuple(out), advanced

    def __getitem__(self, key):
        key, advanced = self._key(key)
        if advanced:
            _no_capture("advanced indexing")
            return _new(self._a[key])
        return ndarray(self._a[key])

    def __setitem__(self, key, value) -> None:
        _no_capture("assignment")
        key, _ = self._key(key)
        self._a[key] = _operand(value)

    # reductions: 0-d device arrays, as CuPy returns
    def _reduce(self, fn, axis=None, keepdims=False, **kw):
        _no_capture(fn.__name__)
        return _new(fn(self._a, axis=axis, keepdims=keepdims, **kw))

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._reduce(np.sum, axis, keepdims, dtype=dtype)

    def min(self, axis=None, out=None, keepdims=False):
        return self._reduce(np.min, axis, keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return self._reduce(np.max, axis, keepdims)

    def all(self, axis=None, out=None, keepdims=False):
        return self._reduce(np.all, axis, keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return self._reduce(np.any, axis, keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._reduce(np.mean, axis, keepdims, dtype=dtype)

    def argmax(self, axis=None):
        _no_capture("argmax")
        return _new(np.argmax(self._a, axis=axis))

    # operators
    def _binary(self, other, fn):
        _no_capture(fn.__name__)
        return _new(fn(self._a, _operand(other)))

    def _rbinary(self, other, fn):
        _no_capture(fn.__name__)
        return _new(fn(_operand(other), self._a))

    def _inplace(self, other, fn):
        _no_capture(fn.__name__)
        fn(self._a, _operand(other), out=self._a)
        return self

    __add__ = lambda s, o: s._binary(o, np.add)
    __radd__ = lambda s, o: s._rbinary(o, np.add)
    __sub__ = lambda s, o: s._binary(o, np.subtract)
    __rsub__ = lambda s, o: s._rbinary(o, np.subtract)
    __mul__ = lambda s, o: s._binary(o, np.multiply)
    __rmul__ = lambda s, o: s._rbinary(o, np.multiply)
    __truediv__ = lambda s, o: s._binary(o, np.true_divide)
    __rtruediv__ = lambda s, o: s._rbinary(o, np.true_divide)
    __pow__ = lambda s, o: s._binary(o, np.power)
    __eq__ = lambda s, o: s._binary(o, np.equal)
    __ne__ = lambda s, o: s._binary(o, np.not_equal)
    __lt__ = lambda s, o: s._binary(o, np.less)
    __le__ = lambda s, o: s._binary(o, np.less_equal)
    __gt__ = lambda s, o: s._binary(o, np.greater)
    __ge__ = lambda s, o: s._binary(o, np.greater_equal)
    __and__ = lambda s, o: s._binary(o, np.logical_and)
    __or__ = lambda s, o: s._binary(o, np.logical_or)
    __iadd__ = lambda s, o: s._inplace(o, np.add)
    __isub__ = lambda s, o: s._inplace(o, np.subtract)
    __imul__ = lambda s, o: s._inplace(o, np.multiply)
    __itruediv__ = lambda s, o: s._inplace(o, np.true_divide)
    __neg__ = lambda s: s._rbinary(0, np.subtract)
    __abs__ = lambda s: _ufunc(np.absolute)(s)
    __hash__ = None


# ---------------------------------------------------------------------- module functions

def _ufunc(fn):
    """A CuPy ufunc or reduction over ``fn``: a device array among the inputs, no NumPy
    arrays, ``out`` (if given) a device array."""
    def call(*args, out=None, **kwargs):
        _no_capture(fn.__name__)
        values = [_operand(a) for a in args]
        if out is not None:
            if not isinstance(out, ndarray):
                raise _unsupported(out)
            fn(*values, out=out._a, **kwargs)
            return out
        return _new(fn(*values, **kwargs))
    call.__name__ = fn.__name__
    return call


isfinite, isnan, floor, abs, absolute, sqrt, exp, log, maximum, minimum, equal, argmax, sum = (
    _ufunc(f) for f in (np.isfinite, np.isnan, np.floor, np.absolute, np.absolute, np.sqrt,
                        np.exp, np.log, np.maximum, np.minimum, np.equal, np.argmax, np.sum))
int32, int64, uint64, float32, float64 = np.int32, np.int64, np.uint64, np.float32, np.float64


def empty(shape, dtype=float, order="C"):
    return _new(np.empty(shape, dtype))


def zeros(shape, dtype=float, order="C"):
    return _new(np.zeros(shape, dtype))


def ones(shape, dtype=float):
    return _new(np.ones(shape, dtype))


def arange(*args, dtype=None):
    return _new(np.arange(*args, dtype=dtype))


def asarray(x, dtype=None, order=None):
    """Device arrays pass through (cast when ``dtype`` differs); anything else is copied from
    the host (a DLPack producer goes through :func:`from_dlpack`)."""
    if isinstance(x, ndarray):
        return x if dtype is None or x.dtype == np.dtype(dtype) else x.astype(dtype)
    if hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
        return asarray(from_dlpack(x), dtype)
    _refuse_in_capture("a host-to-device copy")
    return _new(np.array(x, dtype))


def ascontiguousarray(x, dtype=None):
    if not isinstance(x, ndarray):
        raise _unsupported(x)
    if x.flags.c_contiguous and (dtype is None or x.dtype == np.dtype(dtype)):
        return x
    _no_capture("ascontiguousarray")
    return _new(np.ascontiguousarray(x._a, dtype))


def asnumpy(x, stream=None):
    if isinstance(x, ndarray):
        return x.get()
    return np.asarray(x)


def copyto(dst, src, casting="same_kind"):
    _no_capture("copyto")
    if not isinstance(dst, ndarray):
        raise _unsupported(dst)
    np.copyto(dst._a, _operand(src), casting=casting)


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32's 10-bit mantissa (round to nearest even)."""
    bits = x.astype(np.float32).view(np.uint32)
    lsb = (bits >> np.uint32(13)) & np.uint32(1)
    rounded = (bits + np.uint32(0xFFF) + lsb) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def matmul(a, b, out=None):
    """cuBLAS's product: refused during a capture (CuPy issue 6290); TF32 when the handle's
    math mode says so and the operands are float32."""
    _refuse_in_capture("a cuBLAS call")
    for x in (a, b) + (() if out is None else (out,)):
        if not isinstance(x, ndarray):
            raise _unsupported(x)
    x, y = a._a, b._a
    if _state.math_mode == cublas.CUBLAS_TF32_TENSOR_OP_MATH and x.dtype == np.float32:
        x, y = _tf32(x), _tf32(y)
    if out is None:
        return _new(np.matmul(x, y))
    np.matmul(x, y, out=out._a)
    return out


def from_dlpack(x):
    """A view of a DLPack producer's memory; only CUDA memory is accepted, as on a GPU."""
    device_type = int(x.__dlpack_device__()[0])
    if device_type not in (2, 13):                           # kDLCUDA, kDLCUDAManaged
        raise BufferError(f"from_dlpack: the producer is on device type {device_type}, "
                          "not CUDA")
    return ndarray(np.from_dlpack(x))


class _Generator:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=np.float64):
        return _new(self._rng.standard_normal(size, dtype=dtype))

    def random(self, size=None, dtype=np.float64, out=None):
        if out is None:
            return _new(self._rng.random(size, dtype=dtype))
        self._rng.random(out=out._a, dtype=dtype)
        return out


random = types.SimpleNamespace(default_rng=lambda seed=None: _Generator(seed))


# ---------------------------------------------------------------------- kernels

_C_TYPES = {"float": np.float32, "double": np.float64, "int": np.int32,
            "long long": np.int64, "unsigned long long": np.uint64}
_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
           np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.float32): ctypes.c_float,
           np.dtype(np.float64): ctypes.c_double}
_SIGNATURE = re.compile(r"template <typename T>\s*__global__ void (\w+)\(([^)]*)\)")


def signatures(code: str) -> dict[str, list[tuple[str, str, bool]]]:
    """Kernel name -> its parameters ``(name, C type, is_pointer)``, from the source."""
    result = {}
    for name, params in _SIGNATURE.findall(code):
        parsed = []
        for p in params.split(","):
            words = p.replace("*", " * ").split()
            pointer = "*" in words
            ctype = " ".join(w for w in words[:-1] if w not in ("const", "*"))
            parsed.append((words[-1], ctype, pointer))
        result[name] = parsed
    return result


def _arg(kernel: str, param: tuple[str, str, bool], T: type, x):
    """The C value of one argument, checked against its parameter as a GPU would need it."""
    name, ctype, pointer = param
    expected = np.dtype(T if ctype == "T" else _C_TYPES[ctype])
    where = f"{kernel}: parameter '{ctype}{' *' if pointer else ''} {name}'"
    if isinstance(x, np.ndarray):
        if x.size != 1 or pointer:                       # CuPy passes size-1 by value
            raise TypeError(f"{where}: Unsupported type {type(x)} (a host array)")
        x = x.reshape(()).dtype.type(x.reshape(()).item()) if x.dtype == expected else x
    if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
        marshalled = {bool: np.bool_, int: np.int64, float: np.float64}[type(x)]
        if pointer or np.dtype(marshalled) != expected:
            raise TypeError(f"{where}: got a Python {type(x).__name__}, which CuPy passes as "
                            f"{np.dtype(marshalled).name}; pass numpy.{expected.name}")
        x = marshalled(x)
    if pointer:
        if isinstance(x, np.uint64) and x == 0:
            return ctypes.c_void_p(0)                            # a null pointer
        if not isinstance(x, ndarray):
            raise TypeError(f"{where}: expected a device array, got {type(x)}")
        if x.dtype != expected or not x.flags.c_contiguous:
            raise TypeError(f"{where}: expected a C-contiguous {expected.name} array, got "
                            f"{x.dtype.name} (C-contiguous: {x.flags.c_contiguous})")
        return ctypes.c_void_p(x.data.ptr)
    if type(x) is not expected.type:
        raise TypeError(f"{where}: expected numpy.{expected.name}, got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}")
    return _CTYPES[expected](x.item())


class RawKernel:
    def __init__(self, name: str, params: list, T: type) -> None:
        self.name = name
        self.params = params
        self.T = T
        self.attributes = {}

    def __call__(self, grid, block, args, **kwargs):
        kernel = self.name.split("<")[0]
        if len(args) != len(self.params):
            raise TypeError(f"{kernel}: takes {len(self.params)} arguments, got {len(args)}")
        values = [_arg(kernel, p, self.T, a) for p, a in zip(self.params, args)]
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if not (0 < grid[0] < 2 ** 31 and 0 < grid[1] <= 65535 and 0 < grid[2] <= 65535
                and 0 < block[0] * block[1] * block[2] <= 1024 and block[2] <= 64):
            raise ValueError(f"{self.name}: grid {grid} / block {block} exceed CUDA's limits")
        launch = (self.name, grid, block, values)
        stream = get_current_stream()
        if _state.capture is not None:
            capturing, launches = _state.capture
            if stream is capturing:
                launches.append(launch)              # a graph node: arguments by value
                return
            if stream.null and not capturing.non_blocking:
                raise CUDARuntimeError("cudaErrorStreamCaptureImplicit: a launch on the "
                                       "legacy stream while a blocking stream captures")
        _run(launch)


def _run(launch) -> None:
    name, grid, block, values = launch
    pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    with _library.lock:
        rc = _library.dll.emulate(name.encode(), (ctypes.c_uint * 3)(*grid),
                                  (ctypes.c_uint * 3)(*block), pointers)
        _library.launches += 1
    if rc:
        raise RuntimeError(f"no kernel named {name!r} in the module")


class RawModule:
    def __init__(self, code=None, options=(), name_expressions=None, **kwargs):
        assert name_expressions, "the backend must pass name_expressions"
        self.name_expressions = tuple(name_expressions)
        self.signatures = signatures(code)
        with _library.lock:
            if _library.dll is None:
                _library.dll = build(self.name_expressions)

    def get_function(self, name: str) -> RawKernel:
        if name not in self.name_expressions:
            raise KeyError(f"{name!r} is not among the name expressions")
        kernel, ctype = name[:-1].split("<", 1)
        return RawKernel(name, self.signatures[kernel], _C_TYPES[ctype])


# ---------------------------------------------------------------------- streams and graphs

class Graph:
    def __init__(self, launches) -> None:
        self.launches = launches

    def launch(self, stream=None) -> None:
        for launch in self.launches:
            _run(launch)


class Event:
    def record(self, stream=None) -> None:
        pass

    @property
    def done(self) -> bool:          # cudaEventQuery: no synchronisation; work runs eagerly here
        return True

    def synchronize(self) -> None:
        _synchronize("Event.synchronize")


class Stream:
    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None) -> None:
        self.null = null
        self.non_blocking = non_blocking

    @property
    def ptr(self) -> int:            # the cudaStream_t; 0 is the legacy stream
        return 0 if self.null else id(self)

    def __enter__(self):
        _state.streams.append(self)
        return self

    def __exit__(self, *exc):
        _state.streams.pop()
        return False

    def begin_capture(self, mode=None) -> None:
        if self.null:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: the legacy stream "
                                   "cannot be captured")
        if _state.capture is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: a stream is already capturing")
        _state.capture = (self, [])

    def end_capture(self) -> Graph:
        if _state.capture is None or _state.capture[0] is not self:
            raise CUDARuntimeError("cudaErrorIllegalState: this stream is not capturing")
        graph, _state.capture = Graph(_state.capture[1]), None
        return graph

    def record(self, event=None) -> Event:
        return event or Event()

    def wait_event(self, event) -> None:
        pass

    def synchronize(self) -> None:
        _synchronize("Stream.synchronize")


_LEGACY = Stream(null=True)


def get_current_stream() -> Stream:
    return _state.streams[-1] if _state.streams else _LEGACY


def _elapsed_time(start, stop) -> float:
    return 0.0


# ---------------------------------------------------------------------- NCCL

class NcclError(RuntimeError):
    pass


class NcclCommunicator:
    """``cupy.cuda.nccl.NcclCommunicator`` over the processes of ``MPI.COMM_WORLD`` (one
    emulated GPU each): the collectives run as MPI ones on the memory behind the device
    pointers. It refuses what NCCL refuses: a ``commId`` that is not a unique id or differs
    between ranks, ``ndev`` other than the number of processes, a rank out of range, host
    pointers, counts past the end of an allocation; and (this emulator) a datatype other
    than the allocation's, or a call during a stream capture."""

    def __init__(self, ndev: int, commId: tuple, rank: int) -> None:
        from mpi4py import MPI
        if not (isinstance(commId, tuple) and len(commId) == NCCL_UNIQUE_ID_BYTES
                and all(isinstance(c, int) for c in commId)):
            raise TypeError("commId: expected the tuple get_unique_id() returns")
        world = MPI.COMM_WORLD
        if ndev != world.Get_size() or not 0 <= rank < ndev or rank != world.Get_rank():
            raise NcclError(f"ncclInvalidArgument: ndev {ndev}, rank {rank}: this emulator "
                            f"joins the {world.Get_size()} MPI processes, this one rank "
                            f"{world.Get_rank()}")
        if len(set(world.allgather(commId))) != 1:
            raise NcclError("ncclInvalidUsage: the ranks passed different unique ids")
        self._comm = world.Dup()
        self._rank, self._size = rank, ndev

    def rank_id(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int,
                  stream: int) -> None:
        from mpi4py import MPI
        if _state.capture is not None:
            raise CUDARuntimeError("the emulator does not record NCCL calls in a graph")
        if datatype not in _NCCL_DTYPES:
            raise NcclError(f"ncclInvalidArgument: datatype {datatype!r}")
        if op != NCCL_SUM:
            raise NcclError(f"this emulator implements only NCCL_SUM, got op {op!r}")
        if isinstance(stream, bool) or not isinstance(stream, int):
            raise TypeError(f"stream: expected a cudaStream_t (int), got {type(stream)}")
        dtype = _NCCL_DTYPES[datatype]
        send = _device_memory(sendbuf, count, dtype, "sendbuf")
        recv = _device_memory(recvbuf, count, dtype, "recvbuf")
        if sendbuf == recvbuf:
            self._comm.Allreduce(MPI.IN_PLACE, recv, op=MPI.SUM)
        else:
            self._comm.Allreduce(send, recv, op=MPI.SUM)

    def destroy(self) -> None:
        self._comm.Free()


def get_unique_id() -> tuple:
    return tuple(int(b) - 128 for b in np.random.default_rng().integers(0, 256,
                                                                       NCCL_UNIQUE_ID_BYTES))


NCCL_UNIQUE_ID_BYTES = 128
NCCL_SUM, NCCL_FLOAT32, NCCL_FLOAT64 = 0, 7, 8
_NCCL_DTYPES = {NCCL_FLOAT32: np.dtype(np.float32), NCCL_FLOAT64: np.dtype(np.float64)}
nccl = types.ModuleType("cupy.cuda.nccl")
nccl.NcclCommunicator, nccl.NcclError, nccl.get_unique_id = NcclCommunicator, NcclError, get_unique_id
nccl.NCCL_SUM, nccl.NCCL_FLOAT32, nccl.NCCL_FLOAT64 = NCCL_SUM, NCCL_FLOAT32, NCCL_FLOAT64


cuda = types.SimpleNamespace(
    Device=_Device, Stream=Stream, Graph=Graph, Event=Event, nccl=nccl,
    get_current_stream=get_current_stream, get_elapsed_time=_elapsed_time,
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=CUDARuntimeError,
                                  is_hip=False,
                                  getDeviceProperties=lambda i: {"name": b"CPU emulator"}))


# ---------------------------------------------------------------------- cuBLAS and cupyx

def _set_math_mode(handle, mode) -> None:
    _state.math_mode = int(mode)


cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
cublas.CUBLAS_DEFAULT_MATH, cublas.CUBLAS_TF32_TENSOR_OP_MATH = 0, 3
cublas.setMathMode = _set_math_mode
cublas.getMathMode = lambda handle: _state.math_mode


@contextlib.contextmanager
def allow_synchronize(allow: bool):
    saved, _state.allow_sync = _state.allow_sync, bool(allow)
    try:
        yield
    finally:
        _state.allow_sync = saved


cupyx = types.ModuleType("cupyx")
cupyx.allow_synchronize = allow_synchronize


def modules() -> dict[str, types.ModuleType]:
    """The ``sys.modules`` entries that make this module CuPy: ``cupy``, ``cupyx`` and the
    ``cupy_backends`` packages down to ``cublas``."""
    me = sys.modules[__name__]
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = cublas
    cuda_pkg = types.ModuleType("cupy_backends.cuda")
    cuda_pkg.libs = libs
    backends = types.ModuleType("cupy_backends")
    backends.cuda = cuda_pkg
    return {"cupy": me, "cupy.cuda": cuda, "cupy.cuda.nccl": nccl, "cupyx": cupyx,
            "cupy_backends": backends,
            "cupy_backends.cuda": cuda_pkg, "cupy_backends.cuda.libs": libs,
            "cupy_backends.cuda.libs.cublas": cublas}
