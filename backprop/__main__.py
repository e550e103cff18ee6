"""Command line: ``python -m backprop demo`` trains on handwritten digits; ``doctor`` shows
vanishing gradients and their remedies; ``bench`` measures."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def load_digits_split(seed: int = 0):
    """scikit-learn's 8x8 handwritten digits (1,797 images), scaled to [0, 1], 80/20 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit("the demo needs scikit-learn's digits: pip install 'backprop[examples]'")
    digits = load_digits()
    X = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(X))
    cut = int(0.8 * len(X))
    return X[order[:cut]], y[order[:cut]], X[order[cut:]], y[order[cut:]]


def demo(args: argparse.Namespace) -> None:
    from . import Network, available_backends
    X_train, y_train, X_test, y_test = load_digits_split()
    device = args.device or ("cuda" if "cupy" in available_backends() else "cpu")
    net = Network([64, 128, 64, 10], ["relu", "relu", "softmax"], "cross_entropy",
                  device=device, backend=args.backend, seed=0)
    print(f"{net}\ntraining on {len(X_train)} digits, testing on {len(X_test)}")
    start = time.perf_counter()
    history = net.fit(X_train, y_train, epochs=args.epochs, batch_size=32, learning_rate=0.05,
                      optimizer="momentum", seed=0, validation_data=(X_test, y_test),
                      verbose=True)
    seconds = time.perf_counter() - start
    result = net.evaluate(X_test, y_test)
    print(f"test accuracy {result['accuracy']:.2%}, test loss {result['loss']:.4f}")
    print(f"{history.epochs * len(X_train) / seconds:,.0f} samples/s over the whole fit "
          f"(validation included), best epoch "
          f"{max(history['samples_per_second']):,.0f} samples/s")


def doctor(args: argparse.Namespace) -> None:
    from . import doctor as _doctor
    if args.depth < 1 or args.epochs < 1:
        raise SystemExit("--depth and --epochs: expected positive integers")
    _doctor.run(depth=args.depth, epochs=args.epochs, plot=args.plot, device=args.device,
                backend=args.backend)


def bench(args: argparse.Namespace) -> None:
    from . import bench as _bench
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(_bench.SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}; choose from {_bench.SECTIONS}")
    _bench.run(quick=args.quick, out=args.out, plots=not args.no_plots, sections=sections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backprop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train on scikit-learn's handwritten digits")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if usable)")
    p.add_argument("--backend", default=None, help="numpy, numba or cupy (default: by device)")
    p.add_argument("--epochs", type=int, default=20)
    p.set_defaults(run=demo)
    p = sub.add_parser("doctor", help="a deep sigmoid network's vanishing gradients, "
                                      "diagnosed, and the same depth with the seeds' remedies")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--backend", default=None, help="numpy, numba or cupy (default: by device)")
    p.add_argument("--depth", type=int, default=20, help="hidden layers (default 20)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of training (default 20)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="draw the per-layer gradient norms into FILE (matplotlib)")
    p.set_defaults(run=doctor)
    p = sub.add_parser("bench", help="measure speed, the complexity table and memory; write a "
                                     "report (markdown, JSON, PNG plots)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (what CI runs)")
    p.add_argument("--out", default=None,
                   help="output folder (default: benchmarks/results/<machine>)")
    p.add_argument("--sections", default="speed,complexity,memory",
                   help="comma-separated subset of speed,complexity,memory to measure; the "
                        "others are kept from the report.json already in --out")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib)")
    p.set_defaults(run=bench)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
