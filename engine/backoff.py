"""When to try a storage read again during an outage: doubling waits, capped, reset by a
success. An actor that waits for storage asks `Backoff.due` on each message (its ticks
included) instead of sleeping: time in an actor comes from its messages, never from timers."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["FIRST_WAIT_S", "MAX_WAIT_S", "Backoff"]

FIRST_WAIT_S = 0.5
MAX_WAIT_S = 5.0  # storage back: the next try comes at most this late (plus one tick)


class Backoff:
    """The next try is due ``FIRST_WAIT_S`` after a first failure, then twice as long after
    each further one, at most ``MAX_WAIT_S``; anything is due after a success."""

    __slots__ = ("_clock", "_wait_s", "due_at")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._wait_s = FIRST_WAIT_S
        self.due_at = -math.inf

    def due(self) -> bool:
        return self._clock() >= self.due_at

    def failed(self) -> None:
        self.due_at = self._clock() + self._wait_s
        self._wait_s = min(MAX_WAIT_S, self._wait_s * 2)

    def succeeded(self) -> None:
        self._wait_s = FIRST_WAIT_S
        self.due_at = -math.inf
