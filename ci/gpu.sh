#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call of the device tool, in at most 5 minutes: the
# stage limits add up to 270 s, plus the environment report and 5 s of kill grace a stage.
#   1. compile (45 s): the CUDA compile check, once (nvcc for sm_80 and sm_90 with warnings
#      as errors where nvcc exists; NVRTC through CuPy with the backend's options).
#   2. tests (120 s): the GPU-marked tests only (-m gpu): tests/test_cupy.py and the cupy
#      backend of every test that runs on each backend. The CPU backends and the emulator are
#      CI's work, not this machine's.
#   3. benchmarks (105 s): benchmarks/gpu_vs_torch.py --budget 95, every run under a hard
#      deadline: first the targets (backprop vs PyTorch eager on 64-32-10 b32,
#      784-256-128-10 b128, 4096x3-10 b1024), then the per-product table (our matmul kernel
#      vs cuBLAS), then the variants (cuBLAS only, no graphs, torch.compile).
# Each stage writes its log under $OUT as it runs (the tests' results also as JUnit XML), and
# the benchmark rewrites its results after every run, so a stage that fails or times out
# keeps what was measured and never stops the next stage.
# $OUT (default ./gpu-out) gets 7 files (the device tool returns at most 8): status.txt (the
# environment and each stage's exit code), compile.log, tests.log, tests.xml, benchmarks.log,
# gpu_vs_torch.md, gpu_vs_torch.json.
# Exit status: a bit per failed stage, 1 compile, 2 tests, 4 benchmarks (0: all passed).
# Usage: OUT=/some/dir bash ci/gpu.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export TORCHINDUCTOR_COMPILE_THREADS=1     # no compile-worker pool outliving a deadline
STATUS="$OUT/status.txt"

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, tee its log, record its status
    local name="$1" limit="$2"; shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee "$OUT/$name.log"
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$STATUS"
    return "$rc"
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc: absent"
    "$PY" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__,
'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())" || true
    "$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.is_available())" || true
} > "$STATUS" 2>&1

FAILED=0
PYTEST=("$PY" -m pytest -q -ra -p no:cacheprovider)
stage compile 45 "${PYTEST[@]}" tests/test_kernels_compile.py || FAILED=$((FAILED | 1))
stage tests 120 "${PYTEST[@]}" -m gpu --junitxml="$OUT/tests.xml" tests || FAILED=$((FAILED | 2))
stage benchmarks 105 "$PY" benchmarks/gpu_vs_torch.py --quick --budget 95 --out "$OUT" \
    || FAILED=$((FAILED | 4))

[ -f "$OUT/gpu_vs_torch.md" ] && cat "$OUT/gpu_vs_torch.md"
echo "exit=$FAILED (bits: 1 compile, 2 tests, 4 benchmarks)" | tee -a "$STATUS"
exit "$FAILED"
