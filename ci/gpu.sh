#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call (a device machine runs at most ~10 minutes):
#   1. the CUDA compile check (nvcc, sm_80 + sm_90, warnings are errors)
#   2. the GPU tests (tests/test_cupy.py and every `gpu`-marked test of the shared suite)
#   3. the same GPU tests with CUDA graphs off (BACKPROP_CUDA_GRAPHS=0)
#   4. benchmarks/gpu_vs_torch.py (backprop on CuPy vs PyTorch eager / torch.compile)
#   5. the whole test suite (every backend)
# Logs and results go to $OUT (default ./gpu-out), at most 8 files (the device tool returns no
# more): status.txt (environment + each stage's exit code), a log per stage, and the benchmark's
# gpu_vs_torch.md/.json. A stage that fails or times out does not stop the next; the exit
# status is that of the GPU tests. Usage: OUT=/some/dir ci/gpu.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
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

stage compile 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_compile.py
stage gpu_tests 200 "$PY" -m pytest -q -ra -p no:cacheprovider -m gpu tests
GPU_RC=$?
stage gpu_tests_no_graphs 90 env BACKPROP_CUDA_GRAPHS=0 "$PY" -m pytest -q -ra -p no:cacheprovider \
    tests/test_cupy.py -k "not graphs"
stage benchmarks 200 "$PY" benchmarks/gpu_vs_torch.py --quick --budget 150 --out "$OUT"
stage all_tests 150 "$PY" -m pytest -q -ra -p no:cacheprovider tests

[ -f "$OUT/gpu_vs_torch.md" ] && cat "$OUT/gpu_vs_torch.md"
cat "$STATUS"
exit "$GPU_RC"
