"""The CuPy backend: cuBLAS matrix products and fused CUDA kernels from ``kernels/``.

Parameters, optimizer state and workspaces live on one GPU. Each kernel of the contract is a
matrix product into a preallocated output followed by one fused kernel from
``kernels/backprop.cu``: bias + activation, δ ⊙ σ'(a) (softmax: the Jacobian product), the
output delta, the loss (added into ``total[0]`` on the device), the bias column sums, the
clipping factor, the optimizer update (one kernel switching on ``rule.kind``), dropout, batch
normalization (the column statistics and its backward pass one thread per column, summed in
double; the normalization and σ one elementwise kernel), the residual add. The
templates are compiled once per process with NVRTC, for float and double, on first use.

Nothing in a training step waits for the device; the loss is read once per epoch.

Matrix products: one whose layer widths are at most ``small_width`` (1024; env
``BACKPROP_CUDA_SMALL_WIDTH``) runs on our own ``matmul`` kernel (64 × 64 register-blocked
tiles, K split across blocks when the output alone would not fill the GPU, the partials
summed in a fixed order); a wider one on cuBLAS (``cupy.matmul(..., out=)``).

CUDA graphs: CuPy refuses cuBLAS calls during stream capture, so graphs need every product of
the step on our own kernel. :meth:`CuPyBackend.train_epoch` then captures one training step
for the batch shape and replays it once per batch: rows are gathered inside the graph from a
device copy of the epoch's order at ``step[0] · B``, and the learning rate and Adam's bias
corrections are read from a device table ``schedule[step[0]]`` filled once per epoch (a
warm-up's per-step rates included), so one capture serves every step and epoch. The same kernels run without graphs, so results are
identical either way (dropout too: its masks are drawn in the kernel from a counter kept on
the device). Graphs are off with ``BACKPROP_CUDA_GRAPHS=0``.

TF32: off by default, so float32 results match the CPU. ``CUPY_TF32=1`` (CuPy's own variable,
read when CuPy is imported) or ``CuPyBackend(device, tf32=True)`` lets cuBLAS use TF32 tensor
cores for float32 products (sm_80+); our own small-width kernel never does.
"""

from __future__ import annotations

import importlib.resources
import os
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..activations import Activation, Code
from ..losses import Loss
from ..optimizers import UpdateRule
from . import is_cuda_array
from .base import Array, Backend

#: the kernel templates of kernels/backprop.cu, each instantiated for every dtype in CTYPES
KERNELS = ("bias_activation", "bias_softmax", "activation_backward", "softmax_backward",
           "output_delta", "matmul", "sum_splits", "column_sum", "loss", "weight_norm",
           "sum_squares", "clip_factor", "update", "dropout", "multiply", "scale", "take_rows",
           "batch_norm_stats", "batch_norm_apply", "batch_norm_backward", "batch_norm_sums",
           "batch_norm_finish", "batch_norm_backward_sums", "batch_norm_backward_apply", "add")
#: NumPy dtype name -> C type of the template argument
CTYPES = {"float32": "float", "float64": "double"}
#: the counter kernel's C types: the graph's step number, dropout's draw number
COUNTER_CTYPES = {"int32": "int", "uint64": "unsigned long long"}
#: every name expression the backend asks NVRTC for (also what the compile check instantiates)
NAME_EXPRESSIONS = tuple(f"{k}<{c}>" for c in CTYPES.values() for k in KERNELS) + tuple(
    f"increment<{c}>" for c in COUNTER_CTYPES.values())
#: NVRTC options. No --use_fast_math (no approximate exp/tanh/division), but CuPy adds
#: -ftz=true and NVRTC contracts a * b + c into FMAs, so float32 results match the CPU backends
#: to tolerance (1e-4 relative in the tests), not bitwise
COMPILE_OPTIONS = ("-std=c++17",)
SOURCE = "backprop.cu"

THREADS = 256           # threads per block of the grid-stride kernels
REDUCE_THREADS = 256    # threads of a reduction block (REDUCE_THREADS in backprop.cu)
NORM_BLOCKS = 128       # most blocks one gradient array's sum of squares is spread over
MM_BM = MM_BN = 64      # matmul: the C tile of one block (MM_BM, MM_BN in backprop.cu)
MM_BK = 16              # matmul: k per shared-memory slab (MM_BK)
MM_THREADS = 256        # matmul: threads per block, 16 × 16 (MM_THREADS)
SPLIT_BLOCKS = 256      # split K until a product has about this many blocks (~2 per SM)...
SPLIT_MIN_K = 64        # ...while each split keeps at least this much of K
MAX_BLOCKS = 65535      # grid-stride kernels need no more blocks than this
MAX_GRID_Y = 65535      # CUDA's limit on gridDim.y (matmul rows / MM_BM)
SMALL_WIDTH = 1024      # widths up to this use our own (capturable) matmul
CUDA_COUNTER = "backprop.cuda.counter"   # rng_state's name of the dropout generator


# ---------------------------------------------------------------------- CuPy-free helpers

def kernel_source(name: str = SOURCE) -> str:
    """The text of a CUDA source file: ``backprop/kernels/`` of an installed wheel, else the
    top-level ``kernels/`` folder of a source checkout."""
    packaged = importlib.resources.files("backprop") / "kernels" / name
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "kernels" / name
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")
    raise FileNotFoundError(f"CUDA source {name!r} not found in {packaged} or {checkout}")


def blocks(n: int, threads: int = THREADS) -> int:
    """Blocks of a grid-stride launch over n items: ⌈n / threads⌉, at least 1, at most
    MAX_BLOCKS (the loop covers the rest)."""
    return max(1, min(_cdiv(int(n), threads), MAX_BLOCKS))


def norm_blocks(n: int) -> int:
    """Blocks of the clipping norm's ``sum_squares`` over n elements (each writes a pair of
    partials: a scaled sum of squares and its power-of-two exponent)."""
    return min(NORM_BLOCKS, blocks(n, REDUCE_THREADS))


def matmul_splits(M: int, N: int, K: int) -> tuple[int, int]:
    """(splits, k_chunk) of the split-K matmul for ``C (M, N) = op(A) @ op(B)``, inner size K.

    A product with fewer than SPLIT_BLOCKS tiles of C (a small batch or a thin layer over a
    long K, like 784 inputs) would leave most of the GPU idle, so K is cut into ``splits``
    chunks of ``k_chunk`` (a multiple of MM_BK, at least SPLIT_MIN_K unless K is shorter)
    computed by separate blocks and summed in order. A function of the shape alone: the same
    product splits, and rounds, the same way on every GPU.
    """
    tiles = _cdiv(M, MM_BM) * _cdiv(N, MM_BN)
    splits = max(1, min(_cdiv(SPLIT_BLOCKS, tiles), K // SPLIT_MIN_K))
    k_chunk = _cdiv(_cdiv(K, splits), MM_BK) * MM_BK
    return _cdiv(K, k_chunk), k_chunk


def matmul_launch(M: int, N: int, K: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block) of the matmul kernel for an (M, N) output with inner size K."""
    splits, _ = matmul_splits(M, N, K)
    return (_cdiv(N, MM_BN), _cdiv(M, MM_BM), splits), (16, 16, 1)


def own_matmul(M: int, N: int, K: int, trans_a: bool, small_width: int = SMALL_WIDTH) -> bool:
    """True when ``C (M, N) = op(A) @ op(B)`` (inner size K) runs on our matmul kernel.

    The layer widths are (N, K), or (M, N) for the weight gradient (``trans_a``: δᵀ A_prev);
    the other size is the batch. Widths up to ``small_width`` only: past them cuBLAS is
    expected to gain more than the launch overhead that CUDA graphs save (an estimate until
    the per-product table of ``benchmarks/gpu_vs_torch.py`` has been measured on a GPU).
    """
    widths = (M, N) if trans_a else (N, K)
    return max(widths) <= small_width and _cdiv(M, MM_BM) <= MAX_GRID_Y


Product = tuple[int, int, int, bool, bool]   # (M, N, K, trans_a, trans_b) of op(A) @ op(B)


def step_products(layer_sizes: Sequence[int], batch: int) -> list[Product]:
    """``(M, N, K, trans_a, trans_b)`` of every matrix product of one training step
    (network.py): forward ``Z = A_prev Wᵀ`` and ``dW = δᵀ A_prev`` per layer,
    ``δ_next W_next`` per hidden layer."""
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:]))
    return ([(batch, n_out, n_in, False, True) for n_in, n_out in pairs]
            + [(n_out, n_in, batch, True, False) for n_in, n_out in pairs]
            + [(batch, n_in, n_out, False, False) for n_in, n_out in pairs[1:]])


def scratch_size(products: Sequence[Product], small_width: int) -> int:
    """Elements of split-K partials (splits · M · N) the largest of these products needs on
    our matmul kernel; 0 when none of them splits."""
    need = 0
    for M, N, K, trans_a, _ in products:
        splits, _ = matmul_splits(M, N, K)
        if splits > 1 and own_matmul(M, N, K, trans_a, small_width):
            need = max(need, splits * M * N)
    return need


def _cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for positive integers."""
    return -(-a // b)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


def _device_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


#: (cupy module, device index) -> the compiled RawModule; (..., name, dtype) -> its function.
#: Per device and read-only, so shared by every backend instance (one per network).
_COMPILED: dict[tuple[Any, ...], Any] = {}
_COMPILE_LOCK = threading.Lock()


def _compiled_function(cp: Any, device: Any, index: int, name: str, dtype_name: str) -> Any:
    """``name<ctype>`` of kernels/backprop.cu on device ``index``, compiled with NVRTC once
    per process and device (under a lock, so concurrent first calls compile it once)."""
    key = (cp, index, name, dtype_name)
    fn = _COMPILED.get(key)
    if fn is None:
        with _COMPILE_LOCK, device:
            fn = _COMPILED.get(key)
            if fn is None:
                module = _COMPILED.get((cp, index))
                if module is None:
                    module = _COMPILED[(cp, index)] = cp.RawModule(
                        code=kernel_source(), options=COMPILE_OPTIONS,
                        name_expressions=NAME_EXPRESSIONS)
                ctype = (COUNTER_CTYPES if name == "increment" else CTYPES)[dtype_name]
                fn = _COMPILED[key] = module.get_function(f"{name}<{ctype}>")
    return fn


# ---------------------------------------------------------------------- the backend

class CuPyBackend(Backend):
    """Kernels as cuBLAS products and fused RawModule kernels on one CUDA device."""

    name = "cupy"

    def __init__(self, device: str = "cuda:0", tf32: bool | None = None) -> None:
        super().__init__(device)
        import cupy
        self.xp = cupy
        self.index = _device_index(device)
        try:
            count = cupy.cuda.runtime.getDeviceCount()
            error = ""
        except cupy.cuda.runtime.CUDARuntimeError as e:
            count, error = 0, f" ({e})"
        if count == 0:
            raise RuntimeError(f"device {device!r}: CuPy is installed but no CUDA device is "
                               f"visible{error}; check the NVIDIA driver and CUDA_VISIBLE_DEVICES")
        if self.index >= count:
            raise RuntimeError(f"device {device!r}: only {count} CUDA device(s) are visible "
                               f"(cuda:0 … cuda:{count - 1})")
        self._device = cupy.cuda.Device(self.index)
        #: TF32 tensor cores for float32 cuBLAS products (off by default)
        self.tf32 = _env_flag("CUPY_TF32") if tf32 is None else bool(tf32)
        #: capture and replay training steps as CUDA graphs where possible
        self.graphs = os.environ.get("BACKPROP_CUDA_GRAPHS", "1") != "0"
        #: widths up to this use our own matmul kernel (and allow graphs); 0: always cuBLAS
        self.small_width = int(os.environ.get("BACKPROP_CUDA_SMALL_WIDTH", SMALL_WIDTH))
        self._functions: dict[tuple[str, str], Any] = {}
        self._plans: Any = weakref.WeakKeyDictionary()    # network -> _GraphPlan
        self._capture: tuple[Array, Array] | None = None  # (schedule, step) while capturing
        self._scratch: dict[tuple[str, str], Array] = {}  # (use, dtype name) -> buffer
        self._rng_state = self.zeros((2,), np.uint64)     # dropout: [key, draws so far]
        self._draws = self._rng_state[1:]
        self.seed(None)

    # ------------------------------------------------------------------ compiling, launching

    def _kernel(self, name: str, dtype: Any) -> Any:
        """The compiled ``name<ctype>`` (the module is compiled on first use per device)."""
        key = (name, np.dtype(dtype).name)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = _compiled_function(self.xp, self._device, self.index,
                                                           *key)
        return fn

    def _launch(self, name: str, dtype: Any, grid: Any, block: Any, args: tuple) -> None:
        with self._device:
            self._kernel(name, dtype)(grid, block, args)

    def _check(self, dtype: Any, *pairs: tuple[Array, tuple[int, ...]]) -> None:
        """Each array is a C-contiguous array of this device, of ``dtype`` and its shape."""
        for x, shape in pairs:
            if not self.is_native(x) or not x.flags.c_contiguous or x.dtype != dtype:
                raise ValueError(f"expected a C-contiguous {np.dtype(dtype).name} array on "
                                 f"{self.device}, got {type(x).__name__} {getattr(x, 'dtype', '')}")
            if tuple(x.shape) != tuple(shape):
                raise ValueError(f"expected an array of shape {tuple(shape)}, got {tuple(x.shape)}")

    def _matmul(self, a: Array, trans_a: bool, b: Array, trans_b: bool, out: Array) -> None:
        """``out (M, N) = op(a) @ op(b)``; op transposes a stored array when asked."""
        M, N = out.shape
        K = a.shape[0] if trans_a else a.shape[1]
        if own_matmul(M, N, K, trans_a, self.small_width):
            splits, k_chunk = matmul_splits(M, N, K)
            target = (out if splits == 1
                      else self._scratch_for("split_k", splits * M * N, out.dtype))
            grid, block = matmul_launch(M, N, K)
            self._launch("matmul", out.dtype, grid, block,
                         (a, b, target, np.int32(M), np.int32(N), np.int32(K),
                          np.int32(trans_a), np.int32(trans_b), np.int32(k_chunk)))
            if splits > 1:
                self._launch("sum_splits", out.dtype, (blocks(M * N),), (THREADS,),
                             (target, out, np.int64(M * N), np.int32(splits)))
            return
        with self._device:
            if self.tf32 and out.dtype == np.float32:
                self._cublas_tf32(a.T if trans_a else a, b.T if trans_b else b, out)
            else:
                self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)

    def _scratch_for(self, use: str, size: int, dtype: Any) -> Array:
        """The scratch buffer for ``use`` ("split_k" partials, "norm" partials) and ``dtype``,
        grown to at least ``size`` elements.

        One buffer per use and dtype serves every launch: they run in order on one stream. It
        grows only outside a capture (:meth:`_graph_plan` reserves it first), so a graph's
        nodes never point at a buffer that was replaced; a replaced buffer stays alive in the
        plans that captured it.
        """
        key = (use, np.dtype(dtype).name)
        scratch = self._scratch.get(key)
        if scratch is None or scratch.size < size:
            if self._capture is not None:
                raise RuntimeError(f"{use} scratch of {size} elements was not reserved "
                                   "before the capture")
            scratch = self._scratch[key] = self.empty((size,), dtype)
        return scratch

    def _cublas_tf32(self, a: Array, b: Array, out: Array) -> None:
        from cupy_backends.cuda.libs import cublas
        handle = self._device.cublas_handle
        cublas.setMathMode(handle, getattr(cublas, "CUBLAS_TF32_TENSOR_OP_MATH", 3))
        try:
            self.xp.matmul(a, b, out=out)
        finally:
            cublas.setMathMode(handle, getattr(cublas, "CUBLAS_DEFAULT_MATH", 0))

    # ------------------------------------------------------------------ plumbing

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Array:
        with self._device:
            return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        with self._device:
            return self.xp.zeros(shape, dtype=dtype)

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """NumPy input is copied to the device once; CuPy arrays of this device and foreign
        device arrays (DLPack, else ``__cuda_array_interface__``) are used without a copy when
        dtype and layout already fit."""
        cp = self.xp
        with self._device:
            if not isinstance(x, cp.ndarray):
                # DLPack first: from_dlpack passes our stream, so CuPy waits for the
                # producer's; PyTorch exports __cuda_array_interface__ v2 without a stream
                if hasattr(x, "__dlpack__") and is_cuda_array(x):
                    x = cp.from_dlpack(x)                 # PyTorch, JAX... (no copy)
                elif hasattr(x, "__cuda_array_interface__"):
                    x = cp.asarray(x)                     # Numba... (no copy)
                else:
                    host = np.asarray(x, dtype=dtype)     # cast on the host, copy once
                    return cp.asarray(np.ascontiguousarray(host))
            if x.device.id != self.index:                 # another GPU: one peer copy
                with x.device:
                    src = cp.ascontiguousarray(x)
                x = cp.empty(src.shape, src.dtype)
                x.data.copy_from_device(src.data, src.nbytes)
            if dtype is not None and x.dtype != dtype:
                x = x.astype(dtype)
            return cp.ascontiguousarray(x)

    def to_numpy(self, x: Array) -> np.ndarray:
        if isinstance(x, self.xp.ndarray):
            return self.xp.asnumpy(x)
        return np.asarray(x)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, self.xp.ndarray) and x.device.id == self.index

    def all_finite(self, x: Array) -> bool:
        with self._device:
            return bool(self.xp.isfinite(x).all())

    def synchronize(self) -> None:
        self._device.synchronize()

    def seed(self, seed: int | None) -> None:
        """Dropout's draws restart from a key drawn with ``numpy.random.default_rng(seed)``.
        The state ``[key, draws]`` lives on the device, so captured graphs read the new one."""
        key = np.random.default_rng(seed).integers(0, 2 ** 64, dtype=np.uint64)
        with self._device:
            self._rng_state.set(np.array([key, 0], np.uint64))

    def rng_state(self) -> dict[str, Any]:
        """``{"bit_generator": "backprop.cuda.counter", "key": k, "draws": d}``: the device
        state ``[key, draws]`` that every dropout kernel reads."""
        with self._device:
            key, draws = (int(v) for v in self._rng_state.get())
        return {"bit_generator": CUDA_COUNTER, "key": key, "draws": draws}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        if state.get("bit_generator") != CUDA_COUNTER:
            raise ValueError(f"rng state: expected a {CUDA_COUNTER} state, got "
                             f"{state.get('bit_generator')!r}")
        with self._device:     # written in place: captured graphs keep reading this array
            self._rng_state.set(np.array([state["key"], state["draws"]], np.uint64))

    def take_rows(self, X: Array, index: Array, out: Array) -> None:
        rows, cols = out.shape if out.ndim == 2 else (out.shape[0], 1)   # 1-D: weights
        self._check(X.dtype, (X, (X.shape[0], *out.shape[1:])), (out, out.shape))
        self._check(np.int64, (index, (rows,)))
        self._launch("take_rows", X.dtype, (blocks(rows * cols),), (THREADS,),
                     (X, index, np.uint64(0), out, np.int64(rows * cols), np.int64(rows),
                      np.int64(cols)))

    def copy(self, src: Array, out: Array) -> None:
        if not self.is_native(src):
            src = self.asarray(src, out.dtype)
        with self._device:
            self.xp.copyto(out, src)

    # ------------------------------------------------------------------ kernels

    def forward(self, A_prev: Array, W: Array, b: Array, activation: Activation,
                Z: Array, A: Array) -> None:
        B, n_in = A_prev.shape
        n_out = W.shape[0]
        T = _scalar(W.dtype)
        self._check(W.dtype, (A_prev, (B, n_in)), (W, (n_out, n_in)), (b, (n_out,)),
                    (Z, (B, n_out)), (A, (B, n_out)))
        self._matmul(A_prev, False, W, True, Z)
        if activation.code == Code.SOFTMAX:
            self._launch("bias_softmax", W.dtype, (blocks(B),), (THREADS,),
                         (b, Z, A, np.int64(B), np.int64(n_out)))
        else:
            self._launch("bias_activation", W.dtype, (blocks(B * n_out),), (THREADS,),
                         (b, Z, A, np.int64(B * n_out), np.int64(n_out),
                          np.int32(activation.code), T(activation.alpha)))

    def output_delta(self, A: Array, Y: Array, activation: Activation, loss: Loss,
                     delta: Array, sample_weight: Array | None = None) -> None:
        B, n = A.shape
        T = _scalar(A.dtype)
        self._check(A.dtype, (A, (B, n)), (Y, (B, n)), (delta, (B, n)))
        fused = loss.fused_with(activation)
        jacobian = activation.code == Code.SOFTMAX and not fused
        inv_batch = T(1.0 / B)
        null = np.uint64(0)
        weight = norm = null
        if sample_weight is not None:      # rows scaled by w_r / Σ w before the Jacobian (linear)
            self._check(A.dtype, (sample_weight, (B,)))
            weight = sample_weight
            norm = self._scratch_for("weight_norm", 1, A.dtype)
            self._launch("weight_norm", A.dtype, (1,), (REDUCE_THREADS,),
                         (sample_weight, np.int64(B), norm))
        self._launch("output_delta", A.dtype, (blocks(B * n),), (THREADS,),
                     (A, Y, delta, np.int64(B * n), np.int64(n), np.int32(activation.code),
                      T(activation.alpha), np.int32(fused or jacobian),
                      T(1) if jacobian else inv_batch, weight, norm))
        if jacobian:   # mse + softmax: a ⊙ (g - Σ g a) / B with g = ŷ - y
            self._launch("softmax_backward", A.dtype, (blocks(B),), (THREADS,),
                         (delta, A, delta, np.int64(B), np.int64(n),
                          inv_batch if sample_weight is None else T(1)))

    def delta(self, delta_next: Array, W_next: Array, A: Array, activation: Activation,
              delta: Array) -> None:
        B, n = A.shape
        n_next = W_next.shape[0]
        self._check(A.dtype, (delta_next, (B, n_next)), (W_next, (n_next, n)), (A, (B, n)),
                    (delta, (B, n)))
        self._matmul(delta_next, False, W_next, False, delta)
        if activation.code != Code.IDENTITY:
            self._activation_backward(delta, A, activation, delta)

    def _activation_backward(self, G: Array, A: Array, activation: Activation,
                             out: Array) -> None:
        B, n = A.shape
        T = _scalar(A.dtype)
        if activation.code == Code.SOFTMAX:
            self._launch("softmax_backward", A.dtype, (blocks(B),), (THREADS,),
                         (G, A, out, np.int64(B), np.int64(n), T(1)))
        else:
            self._launch("activation_backward", A.dtype, (blocks(B * n),), (THREADS,),
                         (G, A, out, np.int64(B * n), np.int32(activation.code),
                          T(activation.alpha)))

    def activation_backward(self, G: Array, A: Array, activation: Activation,
                            out: Array) -> None:
        self._check(A.dtype, (G, A.shape), (A, A.shape), (out, A.shape))
        self._activation_backward(G, A, activation, out)

    def batch_norm_forward(self, Z: Array, gamma: Array, beta: Array, running_mean: Array,
                           running_var: Array, train: bool, momentum: float, eps: float,
                           activation: Activation, Zhat: Array, mean: Array, inv_std: Array,
                           A: Array) -> None:
        B, n = Z.shape
        T = _scalar(Z.dtype)
        self._check(Z.dtype, (Z, (B, n)), (Zhat, (B, n)), (A, (B, n)),
                    *((v, (n,)) for v in (gamma, beta, running_mean, running_var, mean,
                                          inv_std)))
        self._launch("batch_norm_stats", Z.dtype, (blocks(n),), (THREADS,),
                     (Z, running_mean, running_var, mean, inv_std, np.int64(B), np.int64(n),
                      np.int32(bool(train)), T(momentum), T(eps)))
        self._batch_norm_apply(Z, mean, inv_std, gamma, beta, activation, Zhat, A)

    def _batch_norm_apply(self, Z: Array, mean: Array, inv_std: Array, gamma: Array,
                          beta: Array, activation: Activation, Zhat: Array, A: Array) -> None:
        B, n = Z.shape
        T = _scalar(Z.dtype)
        softmax = activation.code == Code.SOFTMAX
        self._launch("batch_norm_apply", Z.dtype, (blocks(B * n),), (THREADS,),
                     (Z, mean, inv_std, gamma, np.uint64(0) if softmax else beta, Zhat, A,
                      np.int64(B * n), np.int64(n),
                      np.int32(Code.IDENTITY if softmax else activation.code),
                      T(activation.alpha)))
        if softmax:                                # + beta, then softmax per row, in place
            self._launch("bias_softmax", Z.dtype, (blocks(B),), (THREADS,),
                         (beta, A, A, np.int64(B), np.int64(n)))

    def batch_norm_backward(self, G: Array, Zhat: Array, gamma: Array, inv_std: Array,
                            dgamma: Array, dbeta: Array, out: Array) -> None:
        B, n = G.shape
        self._check(G.dtype, (G, (B, n)), (Zhat, (B, n)), (out, (B, n)),
                    *((v, (n,)) for v in (gamma, inv_std, dgamma, dbeta)))
        self._launch("batch_norm_backward", G.dtype, (blocks(n),), (THREADS,),
                     (G, Zhat, gamma, inv_std, dgamma, dbeta, out, np.int64(B), np.int64(n)))

    def batch_norm_sums(self, Z: Array, center: Array | None, out: Array) -> None:
        B, n = Z.shape
        self._check(Z.dtype, (Z, (B, n)), (out, (n,)), *(() if center is None else
                                                          ((center, (n,)),)))
        self._launch("batch_norm_sums", Z.dtype, (blocks(n),), (THREADS,),
                     (Z, np.uint64(0) if center is None else center, out, np.int64(B),
                      np.int64(n)))

    def batch_norm_finish(self, mean: Array, squares: Array, rows: int, running_mean: Array,
                          running_var: Array, momentum: float, eps: float,
                          inv_std: Array) -> None:
        n = mean.shape[0]
        T = _scalar(mean.dtype)
        self._check(mean.dtype, *((v, (n,)) for v in (mean, squares, running_mean,
                                                      running_var, inv_std)))
        self._launch("batch_norm_finish", mean.dtype, (blocks(n),), (THREADS,),
                     (mean, squares, running_mean, running_var, inv_std, np.int64(rows),
                      np.int64(n), T(momentum), T(eps)))

    def batch_norm_apply(self, Z: Array, mean: Array, inv_std: Array, gamma: Array,
                         beta: Array, activation: Activation, Zhat: Array, A: Array) -> None:
        B, n = Z.shape
        self._check(Z.dtype, (Z, (B, n)), (Zhat, (B, n)), (A, (B, n)),
                    *((v, (n,)) for v in (mean, inv_std, gamma, beta)))
        self._batch_norm_apply(Z, mean, inv_std, gamma, beta, activation, Zhat, A)

    def batch_norm_backward_sums(self, G: Array, Zhat: Array, dgamma: Array,
                                 dbeta: Array) -> None:
        B, n = G.shape
        self._check(G.dtype, (G, (B, n)), (Zhat, (B, n)), (dgamma, (n,)), (dbeta, (n,)))
        self._launch("batch_norm_backward_sums", G.dtype, (blocks(n),), (THREADS,),
                     (G, Zhat, dgamma, dbeta, np.int64(B), np.int64(n)))

    def batch_norm_backward_apply(self, G: Array, Zhat: Array, gamma: Array, inv_std: Array,
                                  dgamma: Array, dbeta: Array, rows: int, out: Array) -> None:
        B, n = G.shape
        self._check(G.dtype, (G, (B, n)), (Zhat, (B, n)), (out, (B, n)),
                    *((v, (n,)) for v in (gamma, inv_std, dgamma, dbeta)))
        self._launch("batch_norm_backward_apply", G.dtype, (blocks(B * n),), (THREADS,),
                     (G, Zhat, gamma, inv_std, dgamma, dbeta, out, np.int64(B * n),
                      np.int64(n), np.int64(rows)))

    def add(self, x: Array, y: Array, out: Array) -> None:
        self._check(x.dtype, (x, x.shape), (y, x.shape), (out, x.shape))
        self._launch("add", x.dtype, (blocks(x.size),), (THREADS,),
                     (x, y, out, np.int64(x.size)))

    def weight_grad(self, delta: Array, A_prev: Array, dW: Array, db: Array) -> None:
        B, n = delta.shape
        n_in = A_prev.shape[1]
        self._check(delta.dtype, (delta, (B, n)), (A_prev, (B, n_in)), (dW, (n, n_in)),
                    (db, (n,)))
        self._matmul(delta, True, A_prev, False, dW)
        self._launch("column_sum", delta.dtype, (blocks(n),), (THREADS,),
                     (delta, db, np.int64(B), np.int64(n)))

    def loss(self, A: Array, Z: Array, Y: Array, activation: Activation, loss: Loss,
             total: Array, sample_weight: Array | None = None) -> None:
        B, n = A.shape
        self._check(A.dtype, (A, (B, n)), (Z, (B, n)), (Y, (B, n)))
        self._check(np.float64, (total, (1,)))
        if sample_weight is not None:
            self._check(A.dtype, (sample_weight, (B,)))
        self._launch("loss", A.dtype, (1,), (REDUCE_THREADS,),
                     (A, Z, Y, np.int64(B), np.int64(n), np.int32(loss.code), total,
                      np.uint64(0) if sample_weight is None else sample_weight))

    def update(self, param: Array, grad: Array, state: tuple[Array, ...],
               rule: UpdateRule) -> None:
        T = _scalar(param.dtype)
        self._check(param.dtype, (param, param.shape), (grad, param.shape),
                    *((s, param.shape) for s in state))
        needed = {1: 1, 2: 1, 3: 2}.get(rule.kind, 0)
        if len(state) < needed:
            raise ValueError(f"update: kind {rule.kind} needs {needed} state arrays, "
                             f"got {len(state)}")
        null = np.uint64(0)
        s0 = state[0] if len(state) > 0 else null
        s1 = state[1] if len(state) > 1 else null
        scale = rule.grad_scale
        if isinstance(scale, self.xp.ndarray):
            self._check(param.dtype, (scale, (1,)))
            scale_value, scale_ptr = T(1), scale
        else:
            scale_value, scale_ptr = T(float(scale)), null
        schedule, step = self._capture if self._capture is not None else (null, null)
        n = param.size
        self._launch("update", param.dtype, (blocks(n),), (THREADS,),
                     (param, grad, s0, s1, np.int64(n), np.int32(rule.kind),
                      T(rule.learning_rate), T(rule.momentum), np.int32(rule.nesterov),
                      T(rule.beta1), T(rule.beta2), T(rule.eps), T(rule.bias_correction1),
                      T(rule.bias_correction2), T(rule.weight_decay), T(rule.l1), T(rule.l2),
                      scale_value, scale_ptr, T(rule.clip_value), schedule, step))

    def grad_scale(self, grads: Sequence[Array], max_norm: float, out: Array) -> None:
        T = _scalar(out.dtype)
        self._check(out.dtype, (out, (1,)), *((g, g.shape) for g in grads))
        if not grads:
            with self._device:
                out.fill(1)
            return
        counts = [norm_blocks(g.size) for g in grads]
        partials = self._scratch_for("norm", 2 * sum(counts), np.float64)   # (s_b, e_b) pairs
        offset = 0
        for g, count in zip(grads, counts):
            self._launch("sum_squares", out.dtype, (count,), (REDUCE_THREADS,),
                         (g, np.int64(g.size), partials[2 * offset:2 * (offset + count)]))
            offset += count
        self._launch("clip_factor", out.dtype, (1,), (REDUCE_THREADS,),
                     (partials, np.int64(offset), out, T(max_norm)))

    def dropout(self, A: Array, rate: float, mask: Array, out: Array) -> None:
        T = _scalar(A.dtype)
        self._check(A.dtype, (A, A.shape), (mask, A.shape), (out, A.shape))
        self._launch("dropout", A.dtype, (blocks(A.size),), (THREADS,),
                     (A, mask, out, np.int64(A.size), T(rate), T(1.0 / (1.0 - rate)),
                      self._rng_state))
        self._launch("increment", np.uint64, (1,), (1,), (self._draws,))

    def multiply(self, x: Array, y: Array) -> None:
        self._check(x.dtype, (x, x.shape), (y, x.shape))
        self._launch("multiply", x.dtype, (blocks(x.size),), (THREADS,),
                     (x, y, np.int64(x.size)))

    def scale(self, x: Array, factor: float) -> None:
        self._check(x.dtype, (x, x.shape))
        self._launch("scale", x.dtype, (blocks(x.size),), (THREADS,),
                     (x, np.int64(x.size), _scalar(x.dtype)(factor)))

    # ------------------------------------------------------------------ CUDA graphs

    def train_epoch(self, network: Any, X: Array, Y: Array, order: Array | None,
                    batch_size: int, optimizer: Any, learning_rate: float, l1: float,
                    l2: float, clip_norm: float | None, total: Array,
                    clip_value: float | None = None, rates: np.ndarray | None = None,
                    sample_weight: Array | None = None) -> bool:
        """The epoch's full batches as replays of one captured step (see the module
        docstring; sample weights are gathered in the graph like the rows of X and Y), then
        the partial batch eagerly. False (nothing done) where graphs do not
        apply: graphs off, a product on cuBLAS (a width above ``small_width``), fewer than
        two batches, or a capture of this configuration that failed (it warns once)."""
        n = X.shape[0] if order is None else order.shape[0]     # the rows trained on
        steps = n // batch_size
        ws = network.workspace(batch_size)
        if not (self.graphs and steps >= 2 and total is ws.total
                and all(own_matmul(M, N, K, trans_a, self.small_width) for M, N, K, trans_a, _
                        in step_products(network.layer_sizes, batch_size))
                and self.is_native(X) and self.is_native(Y)
                and X.flags.c_contiguous and Y.flags.c_contiguous
                and (sample_weight is None or (self.is_native(sample_weight)
                                               and sample_weight.flags.c_contiguous))
                and (order is None or (self.is_native(order) and order.dtype == np.int64))
                and hasattr(self.xp.cuda.Stream, "begin_capture")
                and not self.xp.cuda.runtime.is_hip):
            return False
        plan = self._graph_plan(network, ws, X, Y, order is None, optimizer, learning_rate,
                                l1, l2, clip_norm, clip_value, steps, sample_weight)
        if plan is None:
            return False
        schedule = np.empty((steps, 3), dtype=network.dtype)
        for k in range(steps):                     # the step counter advances as eagerly
            lr = learning_rate if rates is None else float(rates[k])
            rule, _ = optimizer.rules(lr, l1, l2)
            schedule[k] = (rule.learning_rate, rule.bias_correction1, rule.bias_correction2)
        cp = self.xp
        with self._device:
            current = cp.cuda.get_current_stream()
            stream = plan.stream
            stream.wait_event(current.record())
            with stream:
                plan.schedule.set(schedule, stream=stream)
                if order is not None:
                    cp.copyto(plan.index[:order.shape[0]], order)   # all rows, or N - 1
                plan.step.fill(0)
                for _ in range(steps):
                    plan.graph.launch(stream)
            current.wait_event(stream.record())
        tail = n - steps * batch_size
        if tail:                                   # the partial batch, as run_epoch does it
            ws_tail = network.workspace(tail)
            Xb, Yb, wb = ws_tail.take(self, X, Y, sample_weight, order, steps * batch_size, n)
            lr = learning_rate if rates is None else float(rates[steps])
            network.train_step(ws_tail, Xb, Yb, optimizer, lr, l1, l2, clip_norm, clip_value,
                               wb)
        return True

    def _graph_plan(self, network: Any, ws: Any, X: Array, Y: Array, stored_order: bool,
                    optimizer: Any, learning_rate: float, l1: float, l2: float,
                    clip_norm: float | None, clip_value: float | None, steps: int,
                    sample_weight: Array | None = None) -> "_GraphPlan | None":
        """The captured step for this configuration (captured once, kept per network)."""
        grads = network.gradients()                # allocate before capturing
        need = scratch_size(step_products(network.layer_sizes, ws.batch), self.small_width)
        scratch = [self._scratch_for("split_k", need, network.dtype)] if need else []
        if sample_weight is not None:
            scratch += [sample_weight, ws.weight,
                        self._scratch_for("weight_norm", 1, network.dtype)]
        if clip_norm is not None:
            scratch.append(self._scratch_for("norm", 2 * sum(norm_blocks(g.size)
                                                         for g in network._flat_gradients()),
                                             np.float64))
        bn_grads = network.batch_norm_gradients()
        arrays = [X, Y, ws.total, ws.scale, ws.Z, ws.X, ws.Y, *ws.A, *ws.delta, *scratch,
                  *(m for m in ws.mask + ws.dropped if m is not None), self._rng_state,
                  *(a for a in ws.Zhat + ws.mean + ws.inv_std + ws.H + ws.E if a is not None),
                  *network.parameters(), *network.buffers(),
                  *(g for pair in grads for g in pair),
                  *(g for pair in bn_grads if pair is not None for g in pair),
                  *(s for st in optimizer.state for s in st)]
        key = (tuple(a.data.ptr for a in arrays), tuple(tuple(a.shape) for a in arrays),
               ws.batch, stored_order, id(optimizer), repr(optimizer), optimizer.kind,
               l1, l2, clip_norm, clip_value, tuple(map(str, network.activations)),
               network.loss_function.name, steps, tuple(network.batch_norm),
               tuple(network.residual), sample_weight is not None)
        plan = self._plans.get(network)
        if plan is not None and plan.key == key:
            return plan if plan.graph is not None else None
        self._compile(network.dtype)               # outside the capture: its errors are real
        try:
            plan = self._capture_step(network, ws, X, Y, stored_order, optimizer,
                                      learning_rate, l1, l2, clip_norm, clip_value, steps, key,
                                      arrays, sample_weight)
        except RuntimeError as e:                  # CUDA/CuPy refused the capture
            warnings.warn(f"CUDA graph capture failed; this configuration trains without "
                          f"graphs: {e}", RuntimeWarning, stacklevel=4)
            plan = _GraphPlan(key, arrays, stream=None, schedule=None, index=None, step=None)
        self._plans[network] = plan                # a failed plan (graph None) is not retried
        return plan if plan.graph is not None else None

    def _compile(self, dtype: Any) -> None:
        """Compile and load every kernel a step may launch (nothing may compile in a capture)."""
        for name in KERNELS:
            getattr(self._kernel(name, dtype), "attributes", None)
        for counter in COUNTER_CTYPES:
            getattr(self._kernel("increment", counter), "attributes", None)

    def _capture_step(self, network: Any, ws: Any, X: Array, Y: Array, stored_order: bool,
                      optimizer: Any, learning_rate: float, l1: float, l2: float,
                      clip_norm: float | None, clip_value: float | None, steps: int,
                      key: tuple, arrays: list,
                      sample_weight: Array | None = None) -> "_GraphPlan":
        cp = self.xp
        dtype = network.dtype
        with self._device:
            plan = _GraphPlan(key, arrays, stream=cp.cuda.Stream(non_blocking=True),
                              schedule=cp.zeros((steps, 3), dtype),
                              index=None if stored_order else cp.zeros((X.shape[0],), np.int64),
                              step=cp.zeros((1,), np.int32))
        rows = ws.batch
        null = np.uint64(0)
        t = optimizer.t
        with self._device, plan.stream:
            plan.stream.begin_capture()
            try:
                gathered = [(X, ws.X), (Y, ws.Y)]
                if sample_weight is not None:
                    gathered.append((sample_weight, ws.weight))
                for source, out in gathered:
                    cols = out.shape[1] if out.ndim == 2 else 1
                    self._launch("take_rows", dtype, (blocks(rows * cols),), (THREADS,),
                                 (source, null if stored_order else plan.index, plan.step, out,
                                  np.int64(rows * cols), np.int64(rows), np.int64(cols)))
                self._capture = (plan.schedule, plan.step)
                network.train_step(ws, ws.X, ws.Y, optimizer, learning_rate, l1, l2, clip_norm,
                                   clip_value, None if sample_weight is None else ws.weight)
                self._launch("increment", np.int32, (1,), (1,), (plan.step,))
            finally:
                self._capture = None
                optimizer.t = t
                graph = plan.stream.end_capture()
        plan.graph = graph
        return plan


class _GraphPlan:
    """One captured training step and the device buffers its replays read."""

    def __init__(self, key: tuple, arrays: list, stream: Any, schedule: Array,
                 index: Array | None, step: Array) -> None:
        self.key = key
        self.arrays = arrays        # kept alive: the graph holds their addresses
        self.stream = stream
        self.schedule = schedule    # (steps, 3): η, 1 - β₁ᵗ, 1 - β₂ᵗ of each step
        self.index = index          # the epoch's order (None: stored order)
        self.step = step            # the step being replayed
        self.graph: Any = None


def _scalar(dtype: Any) -> Any:
    """The NumPy scalar type kernel arguments of type T must have."""
    return np.dtype(dtype).type
