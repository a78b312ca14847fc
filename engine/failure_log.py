"""Warnings about a run of failures, rate-limited: an outage is a few lines, not thousands.

A node that loses its database fails every storage call until it is back: about 1,750 warnings
in a 30 s PostgreSQL outage when each failure was logged. ``FailureLog`` writes at most one line
per ``interval_s``: the first failure after a quiet interval at once, then a summary (how many
failed since the last line, by exception type), and a line when calls succeed again. Calls that
fail and succeed by turns (a flapping database, reads some backends answer from a cache) are
held to the same budget: a recovery less than ``interval_s`` after the last line is reported
at the first success once the interval has passed, with the failures in between.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["SUMMARY_INTERVAL_S", "FailureLog"]

SUMMARY_INTERVAL_S = 5.0


class FailureLog:
    """One kind of call (``what``, e.g. "storage call") and its failures since the last
    recovery line. ``failed`` for each failure, ``succeeded`` after each success (cheap while
    nothing failed). ``with_traceback``: a first failure's line carries its traceback (for
    failures that may be bugs)."""

    __slots__ = (
        "_clock",
        "_interval_s",
        "_last_line_at",
        "_log",
        "_run",
        "_suppressed",
        "_traceback",
        "what",
    )

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        interval_s: float = SUMMARY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        with_traceback: bool = False,
    ) -> None:
        self.what = what
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._traceback = with_traceback
        self._run = 0  # failures since the last recovery line
        self._suppressed: Counter[str] = Counter()  # by type, since the last line
        self._last_line_at = -math.inf

    def failed(self, exc: BaseException) -> None:
        self._run += 1
        now = self._clock()
        if now - self._last_line_at < self._interval_s:
            self._suppressed[type(exc).__name__] += 1
            return
        since_s, self._last_line_at = now - self._last_line_at, now
        if self._run == 1:
            self._log.warning(
                "%s failed: %s: %s",
                self.what,
                type(exc).__name__,
                exc,
                exc_info=exc if self._traceback else None,
            )
            return
        self._suppressed[type(exc).__name__] += 1
        self._log.warning(
            "%s failed %d times in the last %.1f s (%s)",
            self.what,
            self._suppressed.total(),
            since_s,
            _by_type(self._suppressed),
        )
        self._suppressed.clear()

    def succeeded(self) -> None:
        if not self._run:
            return
        now = self._clock()
        if now - self._last_line_at < self._interval_s:
            return  # said at the first success after the interval
        suppressed = self._suppressed
        unreported = (
            f" (the last {suppressed.total()} not logged: {_by_type(suppressed)})"
            if suppressed
            else ""
        )
        self._log.warning("%ss succeed again after %d failures%s", self.what, self._run, unreported)
        self._last_line_at = now
        self._run = 0
        suppressed.clear()


def _by_type(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())
