"""One network, several threads: calls on a network run one at a time, and ``fit`` runs alone.

A network's workspaces, gradient buffers and its backend's scratch are reused by every call,
so two calls must never run on one network at the same time. :class:`CallGuard` enforces it:

- ``with guard.call(what)`` (predict, evaluate, loss, forward, backward, get/set_parameters,
  to, save): waits while another thread runs such a call, so concurrent ``predict`` and
  ``evaluate`` calls are correct; raises :class:`RuntimeError` while another thread runs
  ``fit`` (waiting could block a server for a whole training run).
- ``with guard.fit()``: raises :class:`RuntimeError` when any other call runs on the network,
  in another thread or (a fit inside a fit's callback) in this one.

Calls nest within one thread, so a callback may call ``predict`` or ``set_parameters`` during
``fit``. Independent networks never wait for each other.
"""

from __future__ import annotations

import threading
from typing import Any


class CallGuard:
    """Who is using a network now: the thread, how deeply nested, and whether it fits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self._owner: int | None = None      # thread id of the running call
        self._depth = 0                     # nested calls of that thread
        self._fitting = False               # a fit is among them

    def call(self, what: str) -> "_Use":
        """Run ``what`` once no other thread uses the network (error during their fit)."""
        return _Use(self, what, False)

    def fit(self) -> "_Use":
        """Run ``fit`` alone (error while any other call uses the network)."""
        return _Use(self, "fit", True)

    def _enter(self, what: str, fit: bool) -> None:
        me = threading.get_ident()
        with self._lock:
            if fit and self._owner is not None:
                if self._owner == me:
                    raise RuntimeError("fit: called while this thread is already using the "
                                       "network (fit from inside a fit's callback?); return "
                                       "first")
                doing = "trained by fit" if self._fitting else "used (predict, evaluate, ...)"
                raise RuntimeError(f"fit: the network is being {doing} in another thread; "
                                   "fit needs it alone: wait for that call to return, or train "
                                   "a copy of the network")
            while self._owner not in (None, me):
                if self._fitting:
                    raise RuntimeError(f"{what}: the network is being trained by fit in another "
                                       "thread; wait for fit to return, or use a copy of the "
                                       "network (backprop.load of a saved one) meanwhile")
                self._free.wait()
            self._owner = me
            self._depth += 1
            self._fitting = self._fitting or fit

    def _leave(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._owner, self._fitting = None, False
                self._free.notify_all()


class _Use:
    """``with guard.call(what):`` / ``with guard.fit():``, a plain object (no generator):
    predict on a small network takes ~20 µs, and this costs ~1 µs of it."""

    __slots__ = ("guard", "what", "fit")

    def __init__(self, guard: CallGuard, what: str, fit: bool) -> None:
        self.guard, self.what, self.fit = guard, what, fit

    def __enter__(self) -> None:
        self.guard._enter(self.what, self.fit)

    def __exit__(self, *exc: Any) -> None:
        self.guard._leave()
