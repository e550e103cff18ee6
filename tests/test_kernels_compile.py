"""The CUDA sources compile, warning-free, for sm_80 and sm_90, with every template the CuPy
backend asks NVRTC for instantiated (the same NAME_EXPRESSIONS list), and the CuPy-free logic
of the backend (source lookup, name expressions, launch shapes, error messages) is right.

CI: ``python -m pytest tests/test_kernels_compile.py`` (skips the nvcc part without nvcc).
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from backprop.backends import cupy as cupy_backend
from backprop.backends.base import Backend
from backprop.backends.cupy import (CTYPES, KERNELS, MAX_BLOCKS, MM_BK, NAME_EXPRESSIONS,
                                    SOURCE, SPLIT_BLOCKS, SPLIT_MIN_K, CuPyBackend, blocks,
                                    kernel_source, matmul_launch, matmul_splits, own_matmul,
                                    scratch_size, step_products)

ROOT = Path(__file__).resolve().parents[1]
KERNEL_DIR = ROOT / "kernels"
NVCC = shutil.which("nvcc") or ("/usr/local/bin/nvcc" if Path("/usr/local/bin/nvcc").exists()
                                 else None)


def instantiation_source(source: Path) -> str:
    """A translation unit that includes ``source`` and takes the address of every name
    expression, which instantiates each template exactly as NVRTC's name expressions do."""
    refs = ",\n    ".join(f"(void*)&{name}" for name in NAME_EXPRESSIONS)
    return (f'#include "{source}"\n'
            "extern void* const backprop_instances[];\n"
            f"void* const backprop_instances[] = {{\n    {refs}}};\n")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed: the CUDA compile check needs it")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", sorted(KERNEL_DIR.glob("*.cu")), ids=lambda p: p.name)
def test_kernels_compile_without_warnings(source, arch, tmp_path):
    unit = tmp_path / f"instantiate_{source.stem}.cu"
    if source.name == SOURCE:
        unit.write_text(instantiation_source(source))
    else:
        unit = source
    ptx = tmp_path / f"{source.stem}_{arch}.ptx"
    cmd = [NVCC, "-ptx", f"-arch={arch}", "-std=c++17", "-Werror", "all-warnings",
           "-o", str(ptx), str(unit)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stderr}"
    assert out.stderr.strip() == "", out.stderr
    if source.name == SOURCE:
        entries = re.findall(r"^\.(?:visible )?\.?entry\s+(\S+?)\(", ptx.read_text(), re.M)
        assert len(entries) == len(NAME_EXPRESSIONS), entries


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_nvrtc_compiles_the_name_expressions(arch):
    """What CuPy's RawModule does at run time, without a device: NVRTC with the backend's
    options resolves every name expression; the log is empty (no warnings)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001 - no CuPy, or CuPy without its NVRTC library
        pytest.skip(f"NVRTC through CuPy is unavailable: {type(e).__name__}: {e}")
    program = nvrtc.createProgram(kernel_source(), SOURCE, [], [])
    try:
        for name in NAME_EXPRESSIONS:
            nvrtc.addNameExpression(program, name)
        try:
            nvrtc.compileProgram(program, [*cupy_backend.COMPILE_OPTIONS,
                                           f"--gpu-architecture={arch}"])
        except Exception:
            pytest.fail(nvrtc.getProgramLog(program))
        assert nvrtc.getProgramLog(program).strip("\x00\n ") == ""
        lowered = {name: nvrtc.getLoweredName(program, name) for name in NAME_EXPRESSIONS}
        assert all(v.startswith("_Z") for v in lowered.values())
    finally:
        nvrtc.destroyProgram(program)


# ---------------------------------------------------------------- CuPy-free logic

def test_kernel_source_found_in_checkout():
    text = kernel_source()
    assert text == (KERNEL_DIR / SOURCE).read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="nothing.cu"):
        kernel_source("nothing.cu")


def test_kernel_source_prefers_the_installed_package(monkeypatch, tmp_path):
    """An installed wheel carries the sources as backprop/kernels/ (pyproject force-include)."""
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / SOURCE).write_text("// packaged copy\n")
    monkeypatch.setattr(cupy_backend.importlib.resources, "files", lambda package: tmp_path)
    assert kernel_source() == "// packaged copy\n"


def test_name_expressions_cover_every_kernel_for_both_dtypes():
    source = kernel_source()
    templates = set(re.findall(r"template <typename T>\s*__global__ void (\w+)\(", source))
    assert templates == set(KERNELS) | {"increment"}
    assert not re.search(r"^\s*#include", source, re.M)   # NVRTC has no standard headers
    for ctype in CTYPES.values():
        for name in KERNELS:
            assert f"{name}<{ctype}>" in NAME_EXPRESSIONS
    assert len(set(NAME_EXPRESSIONS)) == len(NAME_EXPRESSIONS)
    assert "--use_fast_math" not in cupy_backend.COMPILE_OPTIONS


def test_constants_agree_with_the_source():
    source = kernel_source()
    for name in ("REDUCE_THREADS", "MM_BM", "MM_BN", "MM_BK", "MM_THREADS"):
        value = int(re.search(rf"#define {name} (\d+)", source).group(1))
        assert value == getattr(cupy_backend, name)
    from backprop.activations import Code
    from backprop import losses, optimizers
    enum = dict(re.findall(r"(\w+) = (\d+)", source))
    for code in Code:
        assert int(enum[code.name]) == code.value
    assert int(enum["CROSS_ENTROPY"]) == losses.CROSS_ENTROPY
    assert int(enum["BINARY_CROSS_ENTROPY"]) == losses.BINARY_CROSS_ENTROPY
    assert int(enum["ADAM"]) == optimizers.ADAM_KIND
    assert int(enum["RMSPROP"]) == optimizers.RMSPROP_KIND
    assert int(enum["MOMENTUM"]) == optimizers.MOMENTUM_KIND


def test_launch_configuration():
    assert blocks(0) == 1 and blocks(1) == 1 and blocks(256) == 1 and blocks(257) == 2
    assert blocks(10 ** 12) == MAX_BLOCKS
    assert blocks(100, threads=32) == 4
    grid, block = matmul_launch(M=33, N=10, K=8)
    assert block == (16, 16, 1) and grid == (1, 1, 1)
    grid, _ = matmul_launch(M=130, N=300, K=16)
    assert grid == (5, 3, 1)
    # forward/delta: widths are (N, K), the batch M is free; weight_grad: widths (M, N)
    assert own_matmul(4096, 64, 32, trans_a=False)
    assert own_matmul(128, 256, 784, trans_a=False)              # MNIST's first layer
    assert not own_matmul(32, 2000, 64, trans_a=False)
    assert not own_matmul(32, 64, 1025, trans_a=False)
    assert own_matmul(64, 32, 100_000, trans_a=True)
    assert not own_matmul(64, 32, 10, trans_a=False, small_width=0)
    assert not own_matmul(64 * 65536, 8, 8, trans_a=False)      # gridDim.y limit


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (37, 5, 8), (128, 256, 784), (256, 784, 128),
                                   (2, 3, 100_000), (4096, 4096, 4096), (64, 64, 63),
                                   (64, 64, 64 * SPLIT_MIN_K + 1)])
def test_split_k_covers_k_exactly_once(M, N, K):
    """Chunks of a multiple of MM_BK tile [0, K) with no empty chunk; small outputs split
    until they have about SPLIT_BLOCKS blocks, keeping >= SPLIT_MIN_K of K per split."""
    splits, k_chunk = matmul_splits(M, N, K)
    assert k_chunk % MM_BK == 0 and splits >= 1
    assert (splits - 1) * k_chunk < K <= splits * k_chunk
    tiles = -(-M // 64) * -(-N // 64)
    if splits > 1:
        assert tiles < SPLIT_BLOCKS and k_chunk >= SPLIT_MIN_K
        assert splits * tiles < SPLIT_BLOCKS + tiles
    if tiles >= SPLIT_BLOCKS or K < 2 * SPLIT_MIN_K:
        assert splits == 1
    assert matmul_launch(M, N, K)[0][2] == splits


def test_step_products_and_their_scratch():
    products = step_products([784, 256, 128, 10], 128)
    assert products == [(128, 256, 784, False, True), (128, 128, 256, False, True),
                        (128, 10, 128, False, True), (256, 784, 128, True, False),
                        (128, 256, 128, True, False), (10, 128, 128, True, False),
                        (128, 256, 128, False, False), (128, 128, 10, False, False)]
    need = scratch_size(products, small_width=1024)
    assert need == max(matmul_splits(M, N, K)[0] * M * N for M, N, K, _, _ in products
                       if matmul_splits(M, N, K)[0] > 1)
    assert scratch_size(products, small_width=0) == 0           # all on cuBLAS: no partials
    assert scratch_size(step_products([4, 3], 2), small_width=1024) == 0


def test_cupy_backend_keeps_the_contract():
    """Importable without CuPy; the base signatures, no public methods added."""
    def public(cls):
        return {n: m for n, m in inspect.getmembers(cls, inspect.isfunction)
                if not n.startswith("_")}
    assert issubclass(CuPyBackend, Backend) and not inspect.isabstract(CuPyBackend)
    base, mine = public(Backend), public(CuPyBackend)
    assert set(mine) == set(base)
    for name, fn in mine.items():
        assert inspect.signature(fn) == inspect.signature(base[name]), name


def test_import_backprop_does_not_import_cupy():
    code = "import sys, backprop, backprop.backends.cupy; assert 'cupy' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def _fake_cupy(count=0, error=None):
    class CUDARuntimeError(RuntimeError):
        pass

    def get_device_count():
        if error:
            raise CUDARuntimeError(error)
        return count
    runtime = types.SimpleNamespace(getDeviceCount=get_device_count,
                                    CUDARuntimeError=CUDARuntimeError)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


@pytest.mark.parametrize("count,error,message", [
    (0, "cudaErrorNoDevice: no CUDA-capable device is detected",
     r"device 'cuda:0': CuPy is installed but no CUDA device is visible.*cudaErrorNoDevice"),
    (0, None, r"CuPy is installed but no CUDA device is visible"),
    (1, None, r"device 'cuda:1': only 1 CUDA device\(s\) are visible"),
])
def test_error_says_the_device_is_missing(monkeypatch, count, error, message):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count, error))
    device = "cuda:1" if count else "cuda:0"
    with pytest.raises(RuntimeError, match=message):
        CuPyBackend(device)


def test_error_says_cupy_is_missing(monkeypatch):
    import backprop.backends as backends
    from backprop import Network
    monkeypatch.setattr(backends, "is_installed", lambda name: name != "cupy")
    with pytest.raises(ImportError, match=r"'cupy' package.*backprop\[cuda\]"):
        Network([2, 3, 1], "relu", device="cuda")
