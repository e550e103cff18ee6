"""The GPU run's scripts work before a GPU is at hand: benchmarks/gpu_vs_torch.py measures in
the issue's order, keeps every result when a run fails or outlives its deadline, and
ci/gpu.sh keeps within the device machine's time with an exit code that names the stage."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pytest
from support import fake_cupy, use_emulator

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_vs_torch",
                                                  ROOT / "benchmarks" / "gpu_vs_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(fake_cupy().compiler() is None, reason="the CUDA emulator needs g++")
def test_benchmark_order_deadlines_and_partial_results(tmp_path, monkeypatch):
    use_emulator(monkeypatch)
    script = load_script()
    monkeypatch.setattr(script, "TARGETS", [("t1", [6, 5, 3], 4), ("t2", [5, 4, 2], 8)])
    monkeypatch.setattr(script, "EXTRA", [("x", [4, 3, 2], 4)])
    monkeypatch.setattr(script, "n_samples", lambda batch, sizes, quick: 4 * batch)
    monkeypatch.setattr(script, "cublas_peak", lambda: 1.0)
    order = []
    measure = script.bench_backprop

    def traced(sizes, batch, X, Y, epochs, **how):
        order.append(("backprop", tuple(sizes), tuple(sorted(how))))
        if sizes == [5, 4, 2] and not how:
            time.sleep(5)                                  # outlives its 1 s deadline
        return measure(sizes, batch, X, Y, epochs, **how)

    def product(backend, M, N, K, trans_a, trans_b):
        order.append(("product", (M, N, K)))
        if M == 5 and N == 6:
            raise RuntimeError("a failing product")
        return {"M": M, "N": N, "K": K, "trans_a": trans_a, "trans_b": trans_b, "splits": 1,
                "own_us": 1.0, "cublas_us": 2.0}
    monkeypatch.setattr(script, "bench_backprop", traced)
    monkeypatch.setattr(script, "bench_product", product)
    start = time.perf_counter()
    result = script.run(tmp_path, quick=True, budget=60, run_limit=1.0)
    assert time.perf_counter() - start < 30
    kinds = [entry[0] for entry in order]
    first_product = kinds.index("product")
    assert kinds[:first_product] == ["backprop", "backprop"]          # the targets first
    assert order[:2] == [("backprop", (6, 5, 3), ()), ("backprop", (5, 4, 2), ())]
    assert "backprop" in kinds[first_product:]                          # variants after
    saved = json.loads((tmp_path / "gpu_vs_torch.json").read_text())
    assert saved == json.loads(json.dumps(result))
    runs = {case["name"]: case["runs"] for case in saved["cases"]}
    assert "Deadline" in runs["t2"]["backprop cupy"]["error"]
    assert runs["t1"]["backprop cupy"]["train_samples_per_s"] > 0
    assert runs["t1"]["backprop cupy"]["graphs"] is True
    assert runs["t1"]["backprop cupy, cuBLAS only"]["graphs"] is False
    assert runs["x"]["backprop cupy"]["train_samples_per_s"] > 0        # after a timeout
    products = {case["name"]: case["products"] for case in saved["cases"]}
    assert any("error" in r for r in products["t1"].values())
    assert all("own_us" in r for r in products["x"].values())
    report = (tmp_path / "gpu_vs_torch.md").read_text()
    assert "failed: Deadline" in report and "failed: RuntimeError: a failing product" in report


def test_gpu_script_fits_the_device_budget():
    """The stage limits of ci/gpu.sh leave room in one 5-minute call, -m gpu selects the GPU
    tests only, and the exit status has a bit per stage."""
    text = (ROOT / "ci" / "gpu.sh").read_text()
    limits = [int(n) for n in re.findall(r"^stage \w+ (\d+) ", text, re.M)]
    assert "timeout -s INT -k 5 " in text                  # each stage: SIGINT, then 5 s grace
    before = [int(a) + int(b or 0) for b, a in           # the GPU name and environment report
              re.findall(r"timeout (?:-k (\d+) )?(\d+) (?:nvidia-smi|bash -c environment)", text)]
    assert len(limits) == 3 and len(before) == 2
    assert sum(before) + sum(limits) + 5 * len(limits) <= 300
    assert re.search(r"^stage tests \d+ .*-m gpu", text, re.M)
    assert text.count("test_kernels_compile") == 1
    assert re.search(r"--budget (\d+)", text) and int(re.search(r"--budget (\d+)", text)[1]) < \
        int(re.search(r"^stage benchmarks (\d+)", text, re.M)[1])
    assert "FAILED | 1" in text and "FAILED | 2" in text and "FAILED | 4" in text
    assert "BACKPROP_REQUIRE_GPU=1" in text and "--require-gpu" in text   # no silent fallback
