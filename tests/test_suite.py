"""The suite itself: no assertion that cannot fail.

An assertion helper (``assert_close``, ``close``, ...) returns None. Joined with ``and`` or
``or``, negated, compared or asserted, its value decides nothing and the helpers after it
never run: ``assert_close(a, b) and assert_close(c, d)`` checks only a and b.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = [ROOT / "tests", ROOT / "benchmarks"]


def sources() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), str(path))
            for folder in SUITES for path in sorted(folder.rglob("*.py"))}


def returns_none(fn: ast.FunctionDef) -> bool:
    """No ``return value`` and no ``yield`` in the function's own body."""
    def own_nodes(node):
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                      ast.ClassDef)):
                yield child
                yield from own_nodes(child)
    return not any(isinstance(n, (ast.Yield, ast.YieldFrom))
                   or isinstance(n, ast.Return) and n.value is not None for n in own_nodes(fn))


def none_helpers(modules: dict[Path, ast.Module]) -> set[str]:
    """Names of the suite's module-level functions that return None wherever a function of
    that name is defined (tests themselves, ``test_*``, and builtins' names excluded)."""
    verdicts: dict[str, set[bool]] = {}
    for module in modules.values():
        for node in module.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_"):
                verdicts.setdefault(node.name, set()).add(returns_none(node))
    return {name for name, v in verdicts.items() if v == {True} and name not in dir(builtins)}


def dead_uses(module: ast.Module, helpers: set[str]) -> list[int]:
    """Lines where a helper's (None) value is used as a condition or an operand."""
    def calls_helper(node) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
                and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
                in helpers)
    lines = []
    for node in ast.walk(module):
        if isinstance(node, ast.BoolOp):
            operands = node.values
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            operands = [node.operand]
        elif isinstance(node, (ast.Assert, ast.If, ast.While, ast.IfExp)):
            operands = [node.test]
        else:
            continue
        lines += [op.lineno for op in operands if calls_helper(op)]
    return sorted(set(lines))


def test_the_suite_finds_its_helpers():
    helpers = none_helpers(sources())
    assert {"assert_close", "assert_change_close", "assert_same_state", "close"} <= helpers
    assert "make_network" not in helpers and "data" not in helpers


def test_no_assertion_helper_is_used_as_a_value():
    modules = sources()
    helpers = none_helpers(modules)
    found = [f"{path.relative_to(ROOT)}:{line}" for path, module in modules.items()
             for line in dead_uses(module, helpers)]
    assert not found, f"an assertion helper's None used as a value (the rest never runs): {found}"


def test_the_check_sees_the_pattern():
    """The check flags what it is for, and not the ordinary uses."""
    helpers = {"assert_close"}
    bad = ast.parse("assert_close(a, b) and assert_close(c, d)\n"
                    "assert assert_close(a, b)\n"
                    "x = not assert_close(a, b)\n")
    good = ast.parse("assert_close(a, b)\nassert close_enough(a, b) and ok\n")
    assert dead_uses(bad, helpers) == [1, 2, 3]
    assert dead_uses(good, helpers) == []


def test_every_mutation_of_the_mutation_check_still_applies(monkeypatch):
    """ci/mutations.py: each fault's line is still in the code, once, and changes one line
    (run the check itself with ``python ci/mutations.py``)."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("mutations", ROOT / "ci" / "mutations.py")
    mutations = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "mutations", mutations)
    spec.loader.exec_module(mutations)
    assert len(mutations.MUTATIONS) >= 30
    assert len({m.name for m in mutations.MUTATIONS}) == len(mutations.MUTATIONS)
    stale = {m.name: why for m in mutations.MUTATIONS
             if (why := mutations.check(m, ROOT)) is not None}
    assert not stale, f"update ci/mutations.py: {stale}"
    assert mutations.one_line_change("a\nb\nc", "a\nB\nc")
    assert mutations.one_line_change("a\nb\nc", "a\nc")
    assert not mutations.one_line_change("a\nb", "A\nB")
