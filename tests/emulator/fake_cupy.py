"""A stand-in for the parts of CuPy the backend uses, running kernels/backprop.cu on the CPU.

Arrays are NumPy arrays (a subclass with ``.data.ptr`` and ``.device``); ``RawModule`` kernels
run in ``emulator.cpp`` (compiled with g++ on first use), which reads each argument as the type
the kernel declares, as cuLaunchKernel does; stream capture records launches, with their
argument values, and ``Graph.launch`` replays them. It checks what the GPU would check about
our code (argument types and order, kernel arithmetic, graph replay logic), not CuPy itself.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
import threading
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BARRIER_KERNELS = ("matmul", "loss", "sum_squares", "clip_factor")   # with __syncthreads


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
        cmd = [compiler(), "-std=c++17", "-O1", "-shared", "-fPIC",
               f'-DKERNEL_SOURCE="{source}"', "-I", str(build_dir),
               "-o", str(lib), str(HERE / "emulator.cpp")]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"building the emulator failed:\n{out.stderr}")
    dll = ctypes.CDLL(str(lib))
    dll.emulate.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint),
                            ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p)]
    dll.emulate.restype = ctypes.c_int
    return dll


# ---------------------------------------------------------------------- arrays

class _Device:
    def __init__(self, index: int = 0) -> None:
        self.id = index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        pass

    cublas_handle = 0


class ndarray(np.ndarray):
    """A NumPy array posing as device memory."""

    @property
    def data(self):                                  # noqa: D401 - CuPy's MemoryPointer
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0],
                                     copy_from_device=None)

    @property
    def device(self):
        return _Device(0)

    def set(self, arr, stream=None) -> None:
        np.copyto(self.view(np.ndarray), arr)

    def get(self):
        return np.array(self.view(np.ndarray))


def _dev(x):
    return x.view(ndarray) if isinstance(x, np.ndarray) else x


def empty(shape, dtype=float):
    return np.empty(shape, dtype).view(ndarray)


def zeros(shape, dtype=float):
    return np.zeros(shape, dtype).view(ndarray)


def asarray(x, dtype=None):
    if isinstance(x, ndarray):                       # already "on the device": no copy
        return x if dtype is None or x.dtype == dtype else x.astype(dtype)
    return np.array(x, dtype).view(ndarray)          # host -> device is a copy


def ascontiguousarray(x, dtype=None):
    return np.ascontiguousarray(x, dtype).view(ndarray)


def asnumpy(x):
    return np.array(np.asarray(x).view(np.ndarray))


def copyto(dst, src):
    np.copyto(dst, src)


def matmul(a, b, out=None):
    return np.matmul(a, b, out=out)


def from_dlpack(x):
    return np.from_dlpack(x).view(ndarray)


isfinite, argmax, arange, floor, abs, int64, float32, float64, int32 = (
    np.isfinite, np.argmax, np.arange, np.floor, np.abs, np.int64, np.float32, np.float64,
    np.int32)


class _Generator:
    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)

    def random(self, size=None, dtype=np.float64, out=None):
        assert out is not None and tuple(out.shape) == tuple(size)
        self._rng.random(out=out.view(np.ndarray), dtype=dtype)
        return out


random = types.SimpleNamespace(default_rng=lambda seed=None: _Generator(seed))


# ---------------------------------------------------------------------- kernels, streams, graphs

_CTYPES = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
           np.dtype(np.uint64): ctypes.c_uint64, np.dtype(np.float32): ctypes.c_float,
           np.dtype(np.float64): ctypes.c_double}
# the emulator's C++ state is global: one launch runs at a time (lock); a stream capture records
# the launches of its own thread (capturing), as CUDA records those of the capturing stream
_state = types.SimpleNamespace(dll=None, launches=0, lock=threading.Lock())
_capture = threading.local()


def _arg(x):
    """The C value of one kernel argument, as CuPy marshals it."""
    if isinstance(x, np.ndarray) and x.ndim > 0 or isinstance(x, ndarray):
        if not isinstance(x, ndarray):
            raise TypeError("a host NumPy array was passed to a kernel")
        return ctypes.c_void_p(x.data.ptr)
    if isinstance(x, np.generic):
        return _CTYPES[np.dtype(type(x))](x.item())
    if isinstance(x, bool):
        return ctypes.c_bool(x)
    if isinstance(x, int):
        return ctypes.c_int64(x)
    if isinstance(x, float):
        return ctypes.c_double(x)
    raise TypeError(f"unsupported kernel argument {type(x).__name__}")


class RawKernel:
    def __init__(self, name: str) -> None:
        self.name = name
        self.attributes = {}

    def __call__(self, grid, block, args, **kwargs):
        values = [_arg(a) for a in args]
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if not (0 < grid[0] < 2 ** 31 and 0 < grid[1] <= 65535 and 0 < grid[2] <= 65535
                and 0 < block[0] * block[1] * block[2] <= 1024 and block[2] <= 64):
            raise ValueError(f"{self.name}: grid {grid} / block {block} exceed CUDA's limits")
        launch = (self.name, grid, block, values)
        capturing = getattr(_capture, "launches", None)
        if capturing is not None:
            capturing.append(launch)                 # a graph node: arguments by value
        else:
            _run(launch)


def _run(launch) -> None:
    name, grid, block, values = launch
    pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
    with _state.lock:
        rc = _state.dll.emulate(name.encode(), (ctypes.c_uint * 3)(*grid),
                                (ctypes.c_uint * 3)(*block), pointers)
        _state.launches += 1
    if rc:
        raise RuntimeError(f"no kernel named {name!r} in the module")


class RawModule:
    def __init__(self, code=None, options=(), name_expressions=None, **kwargs):
        assert name_expressions, "the backend must pass name_expressions"
        self.name_expressions = tuple(name_expressions)
        if _state.dll is None:
            _state.dll = build(self.name_expressions)

    def get_function(self, name: str) -> RawKernel:
        if name not in self.name_expressions:
            raise KeyError(f"{name!r} is not among the name expressions")
        return RawKernel(name)


class Graph:
    def __init__(self, launches) -> None:
        self.launches = launches

    def launch(self, stream=None) -> None:
        for launch in self.launches:
            _run(launch)


class Stream:
    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None) -> None:
        self._graph = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self, mode=None) -> None:
        assert getattr(_capture, "launches", None) is None
        _capture.launches = []

    def end_capture(self) -> Graph:
        graph, _capture.launches = Graph(_capture.launches), None
        return graph

    def record(self, event=None):
        return object()

    def wait_event(self, event) -> None:
        pass


class CUDARuntimeError(RuntimeError):
    pass


cuda = types.SimpleNamespace(
    Device=_Device, Stream=Stream, Graph=Graph,
    get_current_stream=lambda: Stream(),
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=CUDARuntimeError,
                                  is_hip=False))
