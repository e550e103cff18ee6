"""The README's examples run: every code block after a ``<!-- readme-example -->`` line, in
order, in one temporary folder (python blocks in one namespace, sh blocks line by line with
``backprop`` as ``python -m backprop``); and its scikit-learn comparison table is the one the
benchmark wrote."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"<!-- readme-example -->\n```(\w+)\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    return BLOCK.findall(README)


def test_the_readme_has_its_examples():
    kinds = [kind for kind, _ in examples()]
    assert kinds.count("python") >= 3 and kinds.count("sh") >= 1


def test_readme_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    namespace: dict = {}
    for kind, code in examples():
        if kind == "python":
            exec(compile(code, "README.md", "exec"), namespace)
            continue
        for line in code.splitlines():
            command = shlex.split(line, comments=True)
            if not command:
                continue
            assert command[0] == "backprop", line
            result = subprocess.run([sys.executable, "-m", "backprop", *command[1:]],
                                    capture_output=True, text=True, env=env, timeout=300)
            assert result.returncode == 0, (line, result.stderr)
    assert (tmp_path / "iris.bp").exists() and (tmp_path / "predictions.csv").exists()
    assert (tmp_path / "model.onnx").exists()


def test_readme_table_is_the_benchmarks():
    written = (ROOT / "benchmarks/results/2vcpu-intel-xeon/sklearn-compare.md").read_text()
    table = [line for line in written.splitlines() if line.startswith("|")]
    section = README.split("<!-- sklearn-compare-table -->", 1)[1]
    shown = []
    for line in section.lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        shown.append(line)
    assert shown == table and len(table) == 6
