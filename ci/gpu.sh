#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call of the device tool (at most 600 s a command;
# the stage limits below add up to 570 s):
#   1. compile: the CUDA compile check (nvcc, sm_80 + sm_90, warnings are errors; NVRTC too)
#   2. tests: the whole test suite, every backend, the cupy one included (gpu-marked tests)
#   3. no_graphs: the CuPy tests again with CUDA graphs off (BACKPROP_CUDA_GRAPHS=0)
#   4. benchmarks: benchmarks/gpu_vs_torch.py (backprop on CuPy, its variants, PyTorch eager
#      and torch.compile, each product of a step on our kernel vs cuBLAS)
# Logs and results go to $OUT (default ./gpu-out), 7 files (the device tool returns at most
# 8): status.txt (environment + each stage's exit code), a log per stage, gpu_vs_torch.md and
# .json. A stage that fails or times out does not stop the next; the exit status is that of
# the tests stage. Usage: OUT=/some/dir bash ci/gpu.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
STATUS="$OUT/status.txt"

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, tee its log, record its status
    local name="$1" limit="$2"; shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee "$OUT/$name.log"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc" | tee -a "$STATUS"
    return "$rc"
}

{
    date -u
    nvidia-smi || true
    nvcc --version || true
    "$PY" -c "import cupy; cupy.show_config()" || true
    "$PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.is_available())" || true
} > "$STATUS" 2>&1

stage compile 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_compile.py
stage tests 220 "$PY" -m pytest -q -ra -p no:cacheprovider tests
TESTS_RC=$?
stage no_graphs 60 env BACKPROP_CUDA_GRAPHS=0 "$PY" -m pytest -q -ra -p no:cacheprovider \
    tests/test_cupy.py -k "not graphs"
stage benchmarks 230 "$PY" benchmarks/gpu_vs_torch.py --quick --budget 170 --out "$OUT"

[ -f "$OUT/gpu_vs_torch.md" ] && cat "$OUT/gpu_vs_torch.md"
cat "$STATUS"
exit "$TESTS_RC"
