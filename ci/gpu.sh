#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call of the device tool, in at most 5 minutes: the
# GPU's name and the environment report (5 + 15 s at most) and three stages whose limits add up to 255 s, each with
# 5 s of grace after its interrupt.
#   1. compile (40 s): the CUDA compile check, once (nvcc for sm_80 and sm_90 with warnings
#      as errors where nvcc exists; NVRTC through CuPy with the backend's options).
#   2. tests (115 s): the GPU-marked tests only (-m gpu): tests/test_cupy.py and the cupy
#      backend of every test that runs on each backend. The CPU backends and the emulator are
#      CI's work, not this machine's. BACKPROP_REQUIRE_GPU=1 makes them fail, not fall back
#      to the CPU emulator, when CuPy or the GPU is unusable.
#   3. benchmarks (100 s): benchmarks/gpu_vs_torch.py --budget 85 (counted from its start),
#      every run under a hard deadline: first the targets (backprop vs PyTorch eager on
#      64-32-10 b32, 784-256-128-10 b128, 4096x3-10 b1024), then the per-product table (our
#      matmul kernel vs cuBLAS), then the variants (cuBLAS only, no graphs, torch.compile).
# Each stage writes its log under $OUT as it runs (the tests one line each, -v), the benchmark
# rewrites its results after every run, and a stage past its limit gets SIGINT first, so
# pytest still prints its summary and writes tests.xml: a stage that fails or times out keeps
# what was measured and never stops the next stage.
# $OUT (default benchmarks/results/<gpu-name>/, or ./gpu-out without a GPU) gets 7 files (the device tool returns at most
# 8): status.txt (the environment and each stage's exit code), compile.log, tests.log,
# tests.xml, benchmarks.log, gpu_vs_torch.md, gpu_vs_torch.json. The benchmark's two files are
# also copied to benchmarks/results/<gpu-name>/ of this checkout, where they are committed
# (through the device tool, copy them there from $OUT).
# Exit status: a bit per failed stage, 1 compile, 2 tests, 4 benchmarks (0: all passed).
# Usage: OUT=/some/dir bash ci/gpu.sh
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
GPU_NAME=$(timeout 5 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
SLUG=$(echo "${GPU_NAME:-unknown-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' \
       | sed 's/^-*//; s/-*$//')
RESULTS="benchmarks/results/$SLUG"
[ -n "$GPU_NAME" ] && DEFAULT_OUT="$PWD/$RESULTS" || DEFAULT_OUT="$PWD/gpu-out"
OUT="${OUT:-$DEFAULT_OUT}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
export TORCHINDUCTOR_COMPILE_THREADS=1     # no compile-worker pool outliving a deadline
export BACKPROP_REQUIRE_GPU=1              # the GPU tests fail, not emulate, without a GPU
STATUS="$OUT/status.txt"

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, tee its log, record its status
    local name="$1" limit="$2"; shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee "$OUT/$name.log"
    timeout -s INT -k 5 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$STATUS"
    return "$rc"
}

environment() {
    date -u
    echo "GPU: ${GPU_NAME:-none found}; results: $RESULTS"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    nvcc --version 2>/dev/null | tail -n 2 || echo "nvcc: absent"
    "$PY" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__,
'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())" || true
    "$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.is_available())" || true
}
export -f environment
export GPU_NAME RESULTS PY
timeout -k 2 15 bash -c environment > "$STATUS" 2>&1 || echo "environment report: rc=$?" >> "$STATUS"

FAILED=0
PYTEST=("$PY" -m pytest -ra -p no:cacheprovider)
stage compile 40 "${PYTEST[@]}" -q tests/test_kernels_compile.py || FAILED=$((FAILED | 1))
stage tests 115 "${PYTEST[@]}" -v --durations=15 -m gpu --junitxml="$OUT/tests.xml" tests \
    || FAILED=$((FAILED | 2))
stage benchmarks 100 "$PY" benchmarks/gpu_vs_torch.py --quick --require-gpu --budget 85 \
    --out "$OUT" || FAILED=$((FAILED | 4))

if [ -f "$OUT/gpu_vs_torch.md" ]; then
    cat "$OUT/gpu_vs_torch.md"
    mkdir -p "$RESULTS"
    [ "$(cd "$OUT" && pwd)" = "$(cd "$RESULTS" && pwd)" ] || cp "$OUT"/gpu_vs_torch.* "$RESULTS"/
fi
echo "exit=$FAILED (bits: 1 compile, 2 tests, 4 benchmarks)" | tee -a "$STATUS"
exit "$FAILED"
