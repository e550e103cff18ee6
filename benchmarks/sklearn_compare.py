"""BackpropClassifier / BackpropRegressor side by side with scikit-learn's MLPClassifier /
MLPRegressor on the data sets scikit-learn ships.

Both get the same pipeline (StandardScaler, and for the regression target a standardized y),
the same hidden layers, optimizer (Adam, η = 0.001), α, batch size ("auto": min(200, n)) and
exactly ``--max-iter`` epochs (no early stop: tol=0, n_iter_no_change=max_iter). Scores are
5-fold cross-validation (stratified for classification; accuracy, R² for diabetes), mean ± std
over the folds; time is the mean fit time per fold (scikit-learn's ``cross_validate``).

    python benchmarks/sklearn_compare.py [--max-iter 200] [--out FILE.md] [--readme]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sklearn.compose import TransformedTargetRegressor          # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine  # noqa: E402
from sklearn.exceptions import ConvergenceWarning                 # noqa: E402
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor    # noqa: E402
from sklearn.pipeline import make_pipeline                        # noqa: E402
from sklearn.preprocessing import StandardScaler                  # noqa: E402

import backprop                                                   # noqa: E402
from backprop.sklearn import BackpropClassifier, BackpropRegressor  # noqa: E402

DATASETS = {"digits": (load_digits, "classification"),
            "breast_cancer": (load_breast_cancer, "classification"),
            "wine": (load_wine, "classification"),
            "diabetes": (load_diabetes, "regression")}
HIDDEN = (100,)


def estimators(task: str, max_iter: int, backend: str | None) -> dict[str, object]:
    common = dict(hidden_layer_sizes=HIDDEN, alpha=1e-4, learning_rate_init=1e-3,
                  max_iter=max_iter, tol=0.0, n_iter_no_change=max_iter, random_state=0)
    if task == "classification":
        return {"backprop": BackpropClassifier(backend=backend, **common),
                "scikit-learn": MLPClassifier(solver="adam", **common)}
    return {name: TransformedTargetRegressor(est, transformer=StandardScaler())
            for name, est in (("backprop", BackpropRegressor(backend=backend, **common)),
                              ("scikit-learn", MLPRegressor(solver="adam", **common)))}


def warm_up(backend: str | None) -> None:
    """Compile what the numba backend compiles on first use, outside the timed fits."""
    X = np.random.default_rng(0).normal(size=(64, 4))
    for task in ("classification", "regression"):
        for est in estimators(task, 2, backend).values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, (X[:, 0] > 0).astype(int) if task == "classification" else X[:, 0])


def compare(max_iter: int, backend: str | None) -> list[dict[str, object]]:
    warm_up(backend)
    rows = []
    for name, (load, task) in DATASETS.items():
        X, y = load(return_X_y=True)
        cv = (StratifiedKFold(5, shuffle=True, random_state=0) if task == "classification"
              else KFold(5, shuffle=True, random_state=0))
        for library, est in estimators(task, max_iter, backend).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                result = cross_validate(make_pipeline(StandardScaler(), est), X, y, cv=cv,
                                        scoring="accuracy" if task == "classification" else "r2")
            rows.append(dict(dataset=name, shape=X.shape, library=library,
                             metric="accuracy" if task == "classification" else "R²",
                             mean=result["test_score"].mean(), std=result["test_score"].std(),
                             fit_time=result["fit_time"].mean()))
            print(f"{name:14s} {library:12s} {rows[-1]['metric']:8s} "
                  f"{rows[-1]['mean']:.4f} ± {rows[-1]['std']:.4f}  "
                  f"{rows[-1]['fit_time']:.2f} s/fit", flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| data set (samples × features) | metric | backprop | scikit-learn | "
             "fit time backprop | fit time scikit-learn |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in DATASETS:
        ours, theirs = (next(r for r in rows if r["dataset"] == name and r["library"] == lib)
                        for lib in ("backprop", "scikit-learn"))
        n, d = ours["shape"]
        lines.append(f"| {name} ({n} × {d}) | {ours['metric']} | "
                     f"{ours['mean']:.3f} ± {ours['std']:.3f} | "
                     f"{theirs['mean']:.3f} ± {theirs['std']:.3f} | "
                     f"{ours['fit_time']:.2f} s | {theirs['fit_time']:.2f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--backend", default=None, help="default: backprop's default on cpu")
    parser.add_argument("--out", default=None, help="markdown file to write")
    parser.add_argument("--readme", action="store_true",
                        help="also put the table in README.md (after its marker line)")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = compare(args.max_iter, args.backend)
    seconds = time.perf_counter() - start
    import sklearn
    from backprop.backends import resolve_backend
    backend = resolve_backend("cpu", args.backend)[0]
    text = (f"# backprop vs scikit-learn's MLP\n\n"
            f"Command: `python benchmarks/sklearn_compare.py --max-iter {args.max_iter}"
            f"{' --backend ' + args.backend if args.backend else ''}` "
            f"({seconds:.0f} s in all).\n\n"
            f"Hidden layers {HIDDEN}, ReLU, Adam (η = 0.001), α = 1e-4, batch min(200, n), "
            f"exactly {args.max_iter} epochs, StandardScaler on X (and on y for diabetes); "
            f"5-fold cross-validation, mean ± std over the folds; fit time is the mean per fold "
            f"(after a warm-up fit that compiles the numba kernels). "
            f"backprop {backprop.__version__} on the {backend} backend in float32; "
            f"scikit-learn {sklearn.__version__} in float64. "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} at the end (the machine is shared: times are noisy).\n\n"
            + table(rows) + "\n")
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    if args.readme:
        update_readme(table(rows))


def update_readme(new_table: str, marker: str = "<!-- sklearn-compare-table -->") -> None:
    """Replace the table after ``marker`` in README.md with ``new_table``."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(path, encoding="utf-8") as f:
        head, tail = f.read().split(marker + "\n", 1)
    lines = tail.lstrip("\n").splitlines(keepends=True)
    while lines and lines[0].startswith("|"):
        lines.pop(0)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + marker + "\n\n" + new_table + "\n\n" + "".join(lines).lstrip("\n"))


if __name__ == "__main__":
    main()
