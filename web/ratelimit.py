"""Rate limits: sliding windows per key, login throttling with backoff, connection caps per IP.

In memory, per process. Every table is bounded: old entries are pruned as new keys arrive, so a
flood of distinct IPs cannot grow memory forever. In a cluster, the limits per IP and per
visitor (``SharedWindow``) are counted in Redis, so they hold across every node; when Redis
does not answer, each node falls back to its own window until Redis is back.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from web.bus import BusUnavailable

if TYPE_CHECKING:
    from web.bus import Bus

log = logging.getLogger("livechat.ratelimit")

Clock = Callable[[], float]
_MAX_KEYS = 100_000


class SlidingWindow:
    """At most ``limit`` events per ``window_s`` for each key."""

    def __init__(self, limit: int, window_s: float, *, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _trim(self, hits: deque[float], now: float) -> None:
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()

    def hit(self, key: str) -> float:
        """Record one event; returns 0 if allowed, else seconds until the next is allowed."""
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= _MAX_KEYS:
                self.prune()
            hits = self._hits[key] = deque()
        self._trim(hits, now)
        if len(hits) >= self.limit:
            return max(0.001, hits[0] + self.window_s - now)
        hits.append(now)
        return 0.0

    def count(self, key: str) -> int:
        hits = self._hits.get(key)
        if not hits:
            return 0
        self._trim(hits, self._clock())
        return len(hits)

    def reset(self, key: str) -> None:
        self._hits.pop(key, None)

    def prune(self) -> None:
        now = self._clock()
        for key in list(self._hits):
            hits = self._hits[key]
            self._trim(hits, now)
            if not hits:
                del self._hits[key]


class SharedWindow:
    """A ``SlidingWindow`` counted in Redis (``Bus.hit``) when the node has a bus, so one IP or
    visitor has one budget across the cluster; without a bus, or while Redis does not answer
    (then retried every ``retry_s``), the local window counts alone."""

    def __init__(
        self,
        name: str,
        local: SlidingWindow,
        bus: Bus | None = None,
        *,
        timeout_s: float = 0.25,
        retry_s: float = 5.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.local = local
        self.bus = bus
        self._timeout_s = timeout_s
        self._retry_s = retry_s
        self._clock = clock
        self._redis_down_until = 0.0

    async def hit(self, key: str) -> float:
        """Record one event; returns 0 if allowed, else seconds until the next is allowed."""
        if self.bus is not None and self._clock() >= self._redis_down_until:
            try:
                return await self.bus.hit(
                    f"{self.name}:{key}",
                    self.local.limit,
                    self.local.window_s,
                    timeout_s=self._timeout_s,
                )
            except BusUnavailable as err:
                log.warning("rate limit %s: %s; counting on this node alone", self.name, err)
                self._redis_down_until = self._clock() + self._retry_s
        return self.local.hit(key)

    async def count(self, key: str) -> int:
        """The events in ``key``'s window now (Redis's count, or this node's own)."""
        if self.bus is not None and self._clock() >= self._redis_down_until:
            try:
                return await self.bus.count(
                    f"{self.name}:{key}", self.local.window_s, timeout_s=self._timeout_s
                )
            except BusUnavailable as err:
                log.warning("rate limit %s: %s; counting on this node alone", self.name, err)
                self._redis_down_until = self._clock() + self._retry_s
        return self.local.count(key)


class LoginThrottle:
    """Throttle password guessing without ever locking an account for good.

    Per account: after ``free_failures`` consecutive failures each further attempt must wait
    1 s, 2 s, 4 s ... (capped at ``max_backoff_s``); a success resets it. Per IP: at most
    ``ip_failures`` failures in 15 minutes, across the cluster when ``bus`` is given (the
    per-account backoff stays per node). ``check`` returns the seconds to wait (0: go ahead).
    """

    def __init__(
        self,
        *,
        free_failures: int,
        max_backoff_s: float,
        ip_failures: int,
        bus: Bus | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._free = free_failures
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._accounts: dict[str, tuple[int, float]] = {}  # failures, time of last failure
        ips = SlidingWindow(ip_failures, 15 * 60.0, clock=clock)
        self._ips = SharedWindow("login_failures", ips, bus, clock=clock)

    async def check(self, *, account: str, ip: str) -> float:
        wait = 0.0
        if await self._ips.count(ip) >= self._ips.local.limit:
            wait = self._ips.local.window_s
        now = self._clock()
        failures, last = self._accounts.get(account, (0, 0.0))
        if failures >= self._free:
            backoff = min(self._max_backoff_s, 2.0 ** (failures - self._free))
            wait = max(wait, last + backoff - now)
        return max(0.0, wait)

    async def failed(self, *, account: str, ip: str) -> None:
        if len(self._accounts) >= _MAX_KEYS:
            cutoff = self._clock() - self._max_backoff_s
            for key in [k for k, (_, at) in self._accounts.items() if at < cutoff]:
                del self._accounts[key]
        failures, _ = self._accounts.get(account, (0, 0.0))
        self._accounts[account] = (failures + 1, self._clock())
        await self._ips.hit(ip)

    def succeeded(self, *, account: str) -> None:
        self._accounts.pop(account, None)


class HitWindow:
    """``SlidingWindow`` for a single key (one connection's own budget), without the table.

    Per connection and created on first use. The times are a sorted list, not a deque: an idle
    connection keeps a couple of them, and a list of two is a tenth of a deque's first block.
    """

    __slots__ = ("_clock", "_hits", "limit", "window_s")

    def __init__(self, limit: int, window_s: float, *, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: list[float] = []

    def hit(self) -> float:
        """Record one event; returns 0 if allowed, else seconds until the next is allowed."""
        now = self._clock()
        hits = self._hits
        cutoff = now - self.window_s
        if hits and hits[0] <= cutoff:
            del hits[: bisect.bisect_right(hits, cutoff)]
        if len(hits) >= self.limit:
            return max(0.001, hits[0] + self.window_s - now)
        hits.append(now)
        return 0.0


class ConnectionCap:
    """At most ``limit`` live WebSocket connections per client IP."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._live: dict[str, int] = {}

    def acquire(self, ip: str) -> bool:
        count = self._live.get(ip, 0)
        if count >= self.limit:
            return False
        self._live[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        count = self._live.get(ip, 0) - 1
        if count <= 0:
            self._live.pop(ip, None)
        else:
            self._live[ip] = count
