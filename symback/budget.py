"""Budgets for SymPy's open-ended work (simplify): a document never waits on it.

``sp.simplify`` has no bound on its running time: two tanh-sigmoid layers
made it run for minutes.  A step that only makes a formula shorter is
skipped past a size, and given a wall-clock budget where the platform
allows one (a timer signal, main thread only); past either it is left out.
"""
from __future__ import annotations

import signal
import threading

__all__ = ["within"]


class _OutOfTime(BaseException):
    """Not an Exception: SymPy's own ``except Exception`` blocks must not swallow it."""

# A signal whose handler raises while Python runs a garbage collector's callback is printed as
# "Exception ignored" and lost: the timer repeats every _AGAIN seconds until the work stops.
_AGAIN = 0.05


def within(seconds: float, work, default=None):
    """work(), or `default` when it takes longer than `seconds` (where a timer can stop it)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return work()

    running = [True]

    def stop(signum, frame):
        if running[0]:      # a timer that fires once the work is over (in `finally`) stops nothing
            raise _OutOfTime

    previous, left = signal.signal(signal.SIGALRM, stop), 0.0
    try:                    # set and cleared inside: however early or late the timer fires, it is caught
        try:
            left = signal.setitimer(signal.ITIMER_REAL, seconds, _AGAIN)[0]
            return work()
        finally:
            running[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _OutOfTime:
        return default
    finally:
        signal.signal(signal.SIGALRM, previous)
        if left:        # someone else's timer was running: give it back what was left
            signal.setitimer(signal.ITIMER_REAL, left)
