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

import sys
import threading
from typing import Any


class CallGuard:
    """Who is using a network now: the thread, how deeply nested, and whether it fits.

    The state is one tuple ``(owner thread, depth, fitting, outermost caller's frame)``,
    replaced by a single store, so an interrupt (a KeyboardInterrupt lands between any two
    bytecodes) finds a call entered or not, never half-way; :class:`_Use` undoes an entry
    that an interrupt cut short and restores the state it found when it leaves. An interrupt
    can still land where no Python code can catch it (on entering ``__exit__``): the state then
    names a call whose frame is no longer running, which :meth:`_stale` recognises, so the
    next call from any thread reclaims the network instead of waiting forever. Waiters
    re-check every 50 ms.
    """

    FREE = (None, 0, False, None)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)
        self._state: tuple[Any, ...] = self.FREE

    @property
    def _depth(self) -> int:
        """Nested calls of the thread using the network (0: free)."""
        return self._state[1]

    def call(self, what: str) -> "_Use":
        """Run ``what`` once no other thread uses the network (error during their fit)."""
        return _Use(self, what, False)

    def fit(self) -> "_Use":
        """Run ``fit`` alone (error while any other call uses the network)."""
        return _Use(self, "fit", True)

    def _stale(self) -> bool:
        """True when the state names a call that is no longer running: its outermost
        caller's frame is not on its thread's stack (an interrupt skipped its exit)."""
        owner, _, _, frame = self._state
        if owner is None:
            return False
        top = sys._current_frames().get(owner)
        while top is not None:
            if top is frame:
                return False
            top = top.f_back
        return True

    def _enter(self, use: "_Use") -> None:
        me = threading.get_ident()
        with self._lock:
            if self._state[0] == me and use.fit or self._state[0] not in (None, me):
                if self._stale():
                    self._state = self.FREE
            owner, depth, fitting, frame = self._state
            if use.fit and owner is not None:
                if owner == me:
                    raise RuntimeError("fit: called while this thread is already using the "
                                       "network (fit from inside a fit's callback?); return "
                                       "first")
                doing = "trained by fit" if fitting else "used (predict, evaluate, ...)"
                raise RuntimeError(f"fit: the network is being {doing} in another thread; "
                                   "fit needs it alone: wait for that call to return, or train "
                                   "a copy of the network")
            while owner not in (None, me):
                if fitting:
                    raise RuntimeError(f"{use.what}: the network is being trained by fit in "
                                       "another thread; wait for fit to return, or use a copy "
                                       "of the network (backprop.load of a saved one) meanwhile")
                self._free.wait(0.05)
                if self._stale():
                    self._state = self.FREE
                owner, depth, fitting, frame = self._state
            use.old = self._state
            use.new = (me, depth + 1, fitting or use.fit,
                       frame if depth else sys._getframe(2))   # the outermost guarded call
            self._state = use.new                      # entered: one store

    def _restore(self, use: "_Use") -> None:
        """Give back what ``use`` took: the state it found (if its entry happened)."""
        with self._lock:
            if self._state is use.new:
                self._state = use.old
                self._free.notify_all()


class _Use:
    """``with guard.call(what):`` / ``with guard.fit():``, a plain object (no generator):
    predict on a small network takes ~20 µs, and this costs ~1 µs of it."""

    __slots__ = ("guard", "what", "fit", "old", "new")

    def __init__(self, guard: CallGuard, what: str, fit: bool) -> None:
        self.guard, self.what, self.fit = guard, what, fit
        self.old = self.new = None

    def __enter__(self) -> None:
        try:
            self.guard._enter(self)
        except BaseException:          # an interrupt after the entry's store: undo it
            self._restore()
            raise

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        """Restore the state, even if interrupts land while it does; then re-raise the
        first of them."""
        interrupted = None
        while True:
            try:
                self.guard._restore(self)
                break
            except BaseException as e:  # noqa: BLE001 - finished first, raised below
                interrupted = interrupted or e
        if interrupted is not None:
            raise interrupted
