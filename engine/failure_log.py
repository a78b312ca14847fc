"""Warnings about a run of failures, rate-limited: an outage is a few lines, not thousands.

A node that loses its database fails every storage call until it is back: about 1,750 warnings
in a 30 s PostgreSQL outage when each failure was logged. ``FailureLog`` logs the first failure
of a run at once, then at most one summary line per ``interval_s`` (how many failed since the
last line, by exception type), and one line when a call succeeds again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["SUMMARY_INTERVAL_S", "FailureLog"]

SUMMARY_INTERVAL_S = 5.0


class FailureLog:
    """One kind of call (``what``, e.g. "storage call") and its current run of failures.

    ``failed`` for each failure, ``succeeded`` after each success (cheap while nothing fails).
    ``with_traceback``: the run's first line carries the traceback (failures that may be bugs).
    """

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
        self._run = 0  # failures since the last success
        self._suppressed: Counter[str] = Counter()  # by type, since the last line
        self._last_line_at = 0.0

    @property
    def failing(self) -> bool:
        """Whether the last call failed."""
        return self._run > 0

    def failed(self, exc: BaseException) -> None:
        self._run += 1
        now = self._clock()
        if self._run == 1:
            self._last_line_at = now
            self._log.warning(
                "%s failed: %s: %s",
                self.what,
                type(exc).__name__,
                exc,
                exc_info=exc if self._traceback else None,
            )
            return
        self._suppressed[type(exc).__name__] += 1
        if now - self._last_line_at >= self._interval_s:
            self._log.warning(
                "%s failed %d more times in %.1f s (%s)",
                self.what,
                self._suppressed.total(),
                now - self._last_line_at,
                _by_type(self._suppressed),
            )
            self._suppressed.clear()
            self._last_line_at = now

    def succeeded(self) -> None:
        if not self._run:
            return
        suppressed = self._suppressed
        unreported = (
            f" (the last {suppressed.total()} not logged: {_by_type(suppressed)})"
            if suppressed
            else ""
        )
        self._log.warning("%ss succeed again after %d failures%s", self.what, self._run, unreported)
        self._run = 0
        self._suppressed.clear()


def _by_type(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.most_common())
