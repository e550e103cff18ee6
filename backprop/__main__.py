"""``python -m backprop``: the command line of :mod:`backprop.cli`."""

from __future__ import annotations

import sys

from .cli import load_digits_split, main  # noqa: F401  (load_digits_split: the demo's data)

if __name__ == "__main__":
    main(sys.argv[1:])
