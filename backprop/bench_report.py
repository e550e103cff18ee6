"""Writes a :func:`backprop.bench.run` report: ``report.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

SEEDS_TABLE = [  # operation, the seeds' time and space, the sweep op measured
    ("Forward pass", "O(Σ n_l·n_{l-1})", "O(Σ n_l)", "forward"),
    ("Backward pass", "O(Σ n_l·n_{l-1})", "O(Σ n_l)", "backward"),
    ("Full epoch / train step", "O(N·Σ n_l·n_{l-1})", "O(Σ n_l²)", "train_step"),
]


def write_json(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_plain) + "\n")


def write(report: dict[str, Any], out: Path, plots: bool = True) -> None:
    write_json(report, out)
    figures = make_plots(report, out) if plots else []
    (out / "report.md").write_text(markdown(report, figures))


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


# ---------------------------------------------------------------------- markdown

def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _ci(fit: dict[str, float]) -> str:
    return f"{fit['exponent']:.3f} [{fit['ci_low']:.3f}, {fit['ci_high']:.3f}]"


def markdown(report: dict[str, Any], figures: list[str]) -> str:
    m = report["machine"]
    peak = report["peak"]
    lines = [f"# backprop benchmark — {m['name']}", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {report['mode']} mode, "
             f"{sum(report['seconds'].values()):.0f} s of measuring. Regenerate with `python -m backprop bench`"
             f"{' --quick' if report['mode'] == 'quick' else ''}.", "",
             "## Machine", "",
             f"- CPU: {m['cpu']}, {m['cpu_count']} logical CPUs; GPU: {m['gpu'] or 'none'}",
             f"- platform: {m['platform']}",
             f"- threads: {m['threads']} (NumPy's BLAS; PyTorch set to the same)",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
             f"- NumPy BLAS (build): {m['numpy_blas'].get('name', '?')} "
             f"{m['numpy_blas'].get('version', '')}",
             "- thread pools: " + "; ".join(
                 f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads, "
                 f"{p.get('architecture', '')})" for p in m["threadpools"]),
             f"- backends measured: {', '.join(m['backends'])}",
             f"- float32 matrix-product peak (NumPy matmul {peak['shape'][0]}×{peak['shape'][1]} "
             f"· {peak['shape'][1]}×{peak['shape'][2]} and the two backward products, fastest "
             f"median): **{peak['gflops']:.1f} GFLOP/s** ("
             + ", ".join(f"`{k}` {v:.1f}" for k, v in peak["products"].items()) + ")",
             ""]
    lines += _speed_section(report)
    lines += _complexity_section(report)
    lines += _memory_section(report)
    if figures:
        lines += ["## Plots", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def _speed_section(report: dict[str, Any]) -> list[str]:
    rows = report["speed"]
    ours = [r["impl"] for r in rows if r["impl"].startswith("backprop-") and " " not in r["impl"]]
    ours = list(dict.fromkeys(ours))
    lines = ["## Speed: one training step and one forward pass, float32", "",
             "FLOP per batch of B: forward 2·B·Σ n_l·n_{l-1}; train step adds the weight "
             "gradients (the same) and the deltas 2·B·Σ_{l≥2} n_l·n_{l-1}. The roofline row is "
             "the arithmetic alone at the matmul peak. sklearn: `partial_fit` epochs "
             f"of {report['config']['epoch_samples']} samples divided into steps, and "
             "`predict_proba`; reference: the per-sample pseudocode in float64.", ""]
    head = ("| network | implementation | train samples/s | train GFLOP/s | % of peak "
            "| forward samples/s | forward GFLOP/s |")
    head += "".join(f" {o} ÷ this (train) |" for o in ours)
    lines += [head, "|" + " --- |" * (7 + len(ours))]
    by_net: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_net.setdefault(r["network"], {})[r["impl"]] = r
    for r in rows:
        t, f = r["train"], r["forward"]
        pct = f"{t['percent_of_peak']:.1f}" if "percent_of_peak" in t else "100"
        cells = [f"{r['network']} {'-'.join(map(str, r['sizes']))}, B={r['batch']}", r["impl"],
                 _num(t["samples_per_s"]), f"{t['gflops']:.2f}", pct,
                 _num(f["samples_per_s"]), f"{f['gflops']:.2f}"]
        for o in ours:
            mine = by_net[r["network"]].get(o)
            cells.append(f"{mine['train']['samples_per_s'] / t['samples_per_s']:.2f}"
                         if mine else "")
        lines.append("| " + " | ".join(cells) + " |")
    wide = by_net.get("wide", {}).get("backprop-numpy")
    if wide:
        lines += ["", f"**NumPy backend, wide network training step: "
                  f"{wide['train']['gflops']:.1f} GFLOP/s = "
                  f"{wide['train']['percent_of_peak']:.1f}% of the matmul peak** "
                  "(target ≥ 85%; PyTorch CPU ~60%, hand-written NumPy ~75%)."]
    return lines + [""]


def _complexity_section(report: dict[str, Any]) -> list[str]:
    lines = ["## The seeds' complexity table, measured", "",
             "Fitted log-log exponents with 95% t-intervals (least squares on log time). "
             "Predicted: 1.0 in N and in W = Σ n_l·n_{l-1} wherever matrix products dominate. "
             "Only points slower than "
             f"{report['config']['fit_floor_factor']:g}× the per-call floor enter a fit; the "
             "smaller sizes are overhead (Python calls, ufunc dispatch, BLAS start-up), which "
             "is flat in N and W — the plots show them as hollow markers. Train steps and "
             f"epochs here use the {report['config'].get('complexity_optimizer', 'sgd')} "
             "optimizer.", ""]
    for backend, c in report["complexity"].items():
        sN, sw, sd = c["N"], c["width"], c["depth"]
        lines += [f"### {backend}", "",
                  f"N: one batch of N rows of {'-'.join(map(str, sN['sizes']))} (forward, "
                  f"backward, step) and an epoch of N samples in batches of {sN['epoch_batch']}; "
                  f"W by width: [n, n, n, 10] at B={sw['batch']}; W by depth: "
                  f"[{sd['networks'][0][0]}]·(d+1) + [10] at B={sd['batch']}.", "",
                  "| operation | seeds' time | exponent in N (pred. 1) | exponent in W, width "
                  "(pred. 1) | exponent in W, depth (pred. 1) | seeds' space |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, t_pred, s_pred, op in SEEDS_TABLE:
            lines.append(f"| {name} | {t_pred} | {_ci(sN['fits'][op])} | {_ci(sw['fits'][op])} "
                         f"| {_ci(sd['fits'][op])} | {s_pred} |")
        lines.append(f"| Epoch of N samples (B={sN['epoch_batch']}) | O(N·Σ n_l·n_{{l-1}}) | "
                     f"{_ci(sN['fits']['epoch'])} | | | |")
        fits_from = ", ".join(f"{op} N ≥ {f['fit_from']:,}" for op, f in sN["fits"].items())
        lines += ["", f"Fit ranges in N: {fits_from}. In W (width): " + ", ".join(
            f"{op} W ≥ {f['fit_from']:,}" for op, f in sw["fits"].items()) + ".", "",
            "Per-call floor (1-1-2 network, batch 1): " + ", ".join(
                f"{op} {t * 1e6:.1f} µs" for op, t in c["floor"].items()) + ".", ""]
        lines += ["Backward / forward time (expected near 2; the FLOP ratio is "
                  "2 − n_0·n_1/W, lower for few layers of which the first is large):", "",
                  "| sweep | W | backward/forward measured | FLOP ratio |", "| --- | --- | --- | --- |"]
        for s in (sw, sd):
            for W, r, p in zip(s["x"], s["ratio"], s["predicted_ratio"]):
                lines.append(f"| {s['kind']} | {W:,} | {r:.2f} | {p:.2f} |")
        big = [r for s in (sw, sd) for W, r in zip(s["x"], s["ratio"])
               if W >= s["fits"]["forward"]["fit_from"]]
        if big:
            lines += ["", f"Median backward/forward over the sizes in the fits: "
                      f"**{sorted(big)[len(big) // 2]:.2f}**."]
        lines.append("")
    return lines


def _memory_section(report: dict[str, Any]) -> list[str]:
    mem = report["memory"]
    fa, fp = mem["fit_activations"], mem["fit_parameters"]
    lines = ["## Memory (NumPy backend, float32, tracemalloc)", "",
             f"Training workspace (activations, deltas, batch copies) per batch row against "
             f"Σ_{{l≥0}} n_l (the input included: the workspace keeps a copy of the batch): "
             f"exponent {_ci(fa)} (seeds: O(Σ n_l) per sample). Parameters, "
             f"gradients and Adam's two state buffers against W = Σ n_l·n_{{l-1}}: exponent "
             f"{_ci(fp)} (seeds: O(Σ n_l²)); 4 bytes × 4 copies = 16 bytes per weight expected.",
             "", "| layer sizes | Σ n_l | W | workspace bytes / row | params+grads+Adam bytes "
             "| bytes / parameter |", "| --- | --- | --- | --- | --- | --- |"]
    for r in mem["rows"]:
        sizes = r["sizes"]
        name = ("-".join(map(str, sizes)) if len(sizes) <= 6
                else f"{sizes[0]}×{len(sizes) - 1}-{sizes[-1]}")
        lines.append(f"| {name} | {r['units']:,} | {r['W']:,} | {r['workspace_bytes_per_row']:,.0f} "
                     f"| {r['parameter_state_bytes']:,} "
                     f"| {r['parameter_state_bytes'] / r['n_parameters']:.1f} |")
    return lines + [""]


# ---------------------------------------------------------------------- plots

OPS = {"forward": ("forward", "tab:blue"), "backward": ("backward (δ + dW)", "tab:orange"),
       "train_step": ("train step", "tab:green"), "epoch": ("epoch (B fixed)", "tab:red")}


def make_plots(report: dict[str, Any], out: Path) -> list[str]:
    """Draw every figure into ``out``; returns the file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    for backend, c in report["complexity"].items():
        names.append(_plot_complexity(plt, backend, c, out))
    names.append(_plot_throughput(plt, report, out))
    names.append(_plot_ratio(plt, report, out))
    names.append(_plot_memory(plt, report, out))
    return names


def _fit_line(ax: Any, x: list[float], fit: dict[str, float], color: str) -> None:
    lo = fit["fit_from"]
    xs = [v for v in x if v >= lo]
    ax.plot(xs, [fit["prefactor"] * v ** fit["exponent"] for v in xs], "-", color=color,
            alpha=0.6, lw=2)


def _panel(ax: Any, s: dict[str, Any], floor: dict[str, float], xlabel: str, title: str) -> None:
    for op, times in s["times"].items():
        label, color = OPS[op]
        fit = s["fits"][op]
        inside = [v >= fit["fit_from"] for v in s["x"]]
        ax.scatter([x for x, i in zip(s["x"], inside) if i], [t for t, i in zip(times, inside) if i],
                   color=color, zorder=3, s=22)
        ax.scatter([x for x, i in zip(s["x"], inside) if not i],
                   [t for t, i in zip(times, inside) if not i],
                   facecolors="none", edgecolors=color, zorder=3, s=22)
        _fit_line(ax, s["x"], fit, color)
        ax.plot([], [], "o-", color=color,
                label=f"{label}: slope {fit['exponent']:.2f} ± "
                      f"{(fit['ci_high'] - fit['ci_low']) / 2:.2f}")
    ax.axhline(floor["train_step"], color="gray", ls=":", lw=1)
    ax.text(s["x"][0], floor["train_step"] * 1.15, "per-call floor: train step of a 1-1-2 net",
            fontsize=7, color="gray")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("seconds (median)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def _plot_complexity(plt: Any, backend: str, c: dict[str, Any], out: Path) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    sN, sw, sd = c["N"], c["width"], c["depth"]
    _panel(axes[0], sN, c["floor"], "N (samples)",
           f"time vs N — {'-'.join(map(str, sN['sizes']))}, one batch of N rows")
    _panel(axes[1], sw, c["floor"], "W = Σ n_l·n_{l-1} (weights)",
           f"time vs W, width varied — [n, n, n, 10], B={sw['batch']}")
    _panel(axes[2], sd, c["floor"], "W = Σ n_l·n_{l-1} (weights)",
           f"time vs W, depth varied — width {sd['networks'][0][0]}, B={sd['batch']}")
    fig.suptitle(f"backprop ({backend}): the seeds' complexity table — filled points are fitted "
                 f"(line), hollow ones sit on the per-call overhead floor; expected slope 1",
                 fontsize=11)
    fig.tight_layout()
    name = f"complexity_{backend}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _plot_throughput(plt: Any, report: dict[str, Any], out: Path) -> str:
    t = report["throughput"]
    peak = report["peak"]["gflops"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    roof = [peak * 1e9 / f for f in t["train_flops_per_sample"]]
    ax1.plot(t["widths"], roof, "k--", lw=1.5, label=f"roofline: {peak:.0f} GFLOP/s matmul peak")
    for impl, values in t["samples_per_s"].items():
        style = "o-" if impl.startswith("backprop") else "s--"
        ax1.plot(t["widths"], values, style, label=impl)
        ax2.plot(t["widths"], [v * f / 1e9 for v, f in zip(values, t["train_flops_per_sample"])],
                 style, label=impl)
    ax2.axhline(peak, color="k", ls="--", lw=1.5, label="matmul peak")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width n of [n, n, n, 10]")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("training samples/s (median)")
    ax1.set_title(f"training throughput, batch {t['batch']}, float32", fontsize=10)
    ax2.set_ylabel("achieved GFLOP/s (6·B·W per step)")
    ax2.set_title("achieved FLOP rate against the matmul peak", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    return "throughput.png"


def _plot_ratio(plt: Any, report: dict[str, Any], out: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 5))
    for backend, c in report["complexity"].items():
        for s, marker in ((c["width"], "o-"), (c["depth"], "s-")):
            ax.plot(s["x"], s["ratio"], marker, label=f"{backend}, {s['kind']} varied (measured)")
            ax.plot(s["x"], s["predicted_ratio"], ":", color="gray")
    ax.plot([], [], ":", color="gray", label="FLOP ratio (δ + dW) / forward")
    ax.axhline(2, color="k", lw=1, label="2 (seeds: backward ~ forward)")
    ax.set_xscale("log")
    ax.set_xlabel("W = Σ n_l·n_{l-1}")
    ax.set_ylabel("backward time / forward time")
    ax.set_ylim(0, max(4.0, max(max(s["ratio"]) for c in report["complexity"].values()
                                for s in (c["width"], c["depth"])) * 1.1))
    ax.set_title("backward (δ + weight gradients) over forward time", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "backward_forward_ratio.png", dpi=110)
    plt.close(fig)
    return "backward_forward_ratio.png"


def _plot_memory(plt: Any, report: dict[str, Any], out: Path) -> str:
    mem = report["memory"]
    rows = mem["rows"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key_x, key_y, fit, xl, yl in (
            (ax1, "units", "workspace_bytes_per_row", mem["fit_activations"],
             "Σ_{l≥0} n_l (units, input included)",
             "training workspace bytes per batch row"),
            (ax2, "W", "parameter_state_bytes", mem["fit_parameters"], "W = Σ n_l·n_{l-1}",
             "parameters + gradients + Adam state, bytes")):
        x = [r[key_x] for r in rows]
        ax.scatter(x, [r[key_y] for r in rows], zorder=3)
        xs = sorted(x)
        ax.plot(xs, [fit["prefactor"] * v ** fit["exponent"] for v in xs], "-", alpha=0.6,
                label=f"fit: slope {fit['exponent']:.3f} (expected 1)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_title("activation memory: O(Σ n_l) per sample", fontsize=10)
    ax2.set_title("parameter memory: O(Σ n_l·n_{l-1})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    return "memory.png"
