"""``python -m backprop bench --quick`` end to end: the report has the expected structure and
every number in it is finite and positive. No timing thresholds: speed is reported, not tested."""

import importlib.util
import json
import math

import pytest

from backprop import bench
from backprop.__main__ import main


def _numbers(x, path="report"):
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return
    if isinstance(x, (int, float)):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    plots = importlib.util.find_spec("matplotlib") is not None   # the 'bench' extra
    main(["bench", "--quick", "--out", str(out)] + ([] if plots else ["--no-plots"]))
    return out


def test_files(report_dir):
    names = {p.name for p in report_dir.iterdir()}
    assert {"report.json", "report.md"} <= names
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("plots need matplotlib (pip install 'backprop[bench]')")
    assert {"throughput.png", "backward_forward_ratio.png", "memory.png"} <= names
    assert any(n.startswith("complexity_") and n.endswith(".png") for n in names)


def test_structure(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    assert report["mode"] == "quick"
    assert report["machine"]["threads"] >= 1 and report["machine"]["backends"]
    impls = {r["impl"] for r in report["speed"]}
    assert {f"backprop-{b}" for b in report["machine"]["backends"]} <= impls
    assert {r["network"] for r in report["speed"]} == {"tiny", "mnist", "wide"}
    for backend, c in report["complexity"].items():
        assert set(c) == {"floor", "N", "width", "depth"}
        for sweep in ("N", "width", "depth"):
            s = c[sweep]
            assert len(s["x"]) >= 6
            for op, fit in s["fits"].items():
                assert fit["ci_low"] <= fit["exponent"] <= fit["ci_high"]
    assert report["memory"]["rows"]


def test_numbers_finite_positive(report_dir):
    report = json.loads((report_dir / "report.json").read_text())
    for section in ("peak", "speed", "throughput", "memory"):
        for path, value in _numbers(report[section], section):
            if path.endswith(("exponent", "ci_low", "ci_high")):
                assert math.isfinite(value), path
            else:
                assert math.isfinite(value) and value > 0, path
    for path, value in _numbers(report["complexity"], "complexity"):
        assert math.isfinite(value), path
        if not path.endswith(("exponent", "ci_low", "ci_high")):
            assert value > 0, path


def test_markdown(report_dir):
    text = (report_dir / "report.md").read_text()
    for heading in ("## Machine", "## Speed", "## The seeds' complexity table", "## Memory"):
        assert heading in text


def test_full_sweeps_cover_two_decades():
    """The full run measures >= 6 sizes over >= 2 decades in N, in width and in depth."""
    cfg = bench.FULL
    Ns = cfg["n_sweep"]["N"]
    Ws = [bench.weights([n, n, n, 10]) for n in cfg["width_sweep"]["widths"]]
    Wd = [bench.weights([cfg["depth_sweep"]["width"]] * (d + 1) + [10])
          for d in cfg["depth_sweep"]["depths"]]
    for x in (Ns, Ws, Wd):
        assert len(x) >= 6 and max(x) / min(x) >= 100


def test_flops():
    f = bench.flops([64, 32, 10], 32)
    assert f["forward"] == 2 * 32 * (64 * 32 + 32 * 10)
    assert f["delta"] == 2 * 32 * 32 * 10
    assert f["train"] == f["forward"] + f["delta"] + f["weight_grad"]


def test_fit_power_recovers_exponent():
    x = [2.0 ** k for k in range(8)]
    fit = bench.fit_power(x, [3.0 * v ** 1.5 for v in x])
    assert abs(fit["exponent"] - 1.5) < 1e-9 and abs(fit["prefactor"] - 3.0) < 1e-9
