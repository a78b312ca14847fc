"""Rate limits: sliding windows per key, login throttling with backoff, connection caps per IP.

In memory, per process. Every table is bounded: old entries are pruned as new keys arrive, so a
flood of distinct IPs cannot grow memory forever.

In a cluster, the limits per IP and per visitor (``SharedWindow``) hold one budget across every
node, counted locally and synced with Redis in batches (``SharedLimits``): counting each event
in Redis cost about 0.2 ms of the node's CPU per message. A node decides at once from the
key's cluster-wide count at its last sync plus its own hits since; every ``SYNC_INTERVAL_S``
one round trip adds its hits of every key in Redis and reads the totals back. Overshoot: a
node hears of the others' hits at its next sync, so a budget can be exceeded by what each
other node admits within one interval (a key a node has not seen lately counts from its own
window until then). When Redis does not answer a sync, each node falls back to its own
window for ``RETRY_S`` (N nodes: up to N times the limit), then syncs again. The backoff per
account after failed logins (``LoginThrottle``) holds across the nodes too, one Redis round
trip per login (logins are rare).
"""

from __future__ import annotations

import bisect
import hmac
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from engine import FailureLog
from web.bus import BusUnavailable, WindowSync
from web.metrics import BusMetrics

if TYPE_CHECKING:
    from web.bus import Bus

log = logging.getLogger("livechat.ratelimit")

Clock = Callable[[], float]
_AccountOp = Literal["read", "add", "reset"]
_MAX_KEYS = 100_000
# The cluster-wide windows (``SharedLimits``). A node learns of the other nodes' hits at its
# next sync: a budget is overshot by at most what each node admits in one interval.
SYNC_INTERVAL_S = 0.1
SYNC_TIMEOUT_S = 0.25  # a sync taking longer: Redis is silent, count alone for RETRY_S
RETRY_S = 5.0
SYNC_BATCH_KEYS = 1_000  # keys per round trip: a flood of IPs does not stall Redis in one script
# Redis keeps a window's hits per bucket of window / BUCKETS_PER_WINDOW: a hit counts until its
# bucket's end leaves the window (at most one bucket, 1/60 of the window, longer than exact).
BUCKETS_PER_WINDOW = 60
# The per-account login backoff in a cluster (``LoginThrottle``), one round trip per login.
LOGIN_TIMEOUT_S = 0.25  # Redis silent this long: the node counts accounts alone for RETRY_S
# Redis forgets an account's failures this long after the last one, beyond the backoff's cap:
# waiting that out gains a guesser nothing over waiting out the capped backoff each time (with
# the defaults: the free guesses and the backoff again, 12 guesses per 74 minutes, against 14).
ACCOUNT_FORGET_S = 3600.0


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


@attrs.define(slots=True)
class _Total:
    """A key's cluster-wide count at the last sync, good until its oldest hits leave."""

    count: int
    free_at: float  # this node's clock: when the oldest counted hits leave the window


class SharedWindow:
    """A ``SlidingWindow`` whose budget is shared by every node of a cluster (``SharedLimits``).

    A hit is decided here, without waiting for Redis: refused when the key's cluster-wide count
    at the last sync plus the hits counted here since reaches the limit, or when this node's
    own window is full. Without a bus, or while Redis is silent, the own window decides alone.
    """

    def __init__(self, name: str, local: SlidingWindow, limits: SharedLimits) -> None:
        self.name = name
        self.local = local
        self.bucket_s = local.window_s / BUCKETS_PER_WINDOW
        self._limits = limits
        self._unsynced: dict[str, int] = {}  # key -> hits not yet added in Redis (0: re-read)
        self._totals: dict[str, _Total] = {}

    def hit(self, key: str) -> float:
        """Record one event; returns 0 if allowed, else seconds until the next is allowed."""
        limits = self._limits
        if not limits.shared():
            return self.local.hit(key)
        unsynced = self._unsynced.get(key, 0)
        total = self._total(key)
        if total is not None and total.count + unsynced >= self.local.limit:
            self._unsynced[key] = unsynced  # read the total again at the next sync
            return max(0.001, total.free_at - limits.clock())
        wait = self.local.hit(key)
        if wait:
            return wait
        self._unsynced[key] = unsynced + 1
        limits.metrics.limit_unsynced += 1
        return 0.0

    def count(self, key: str) -> int:
        """The events in ``key``'s window now: the cluster's as this node knows it (and the
        total is read again at the next sync), or this node's own."""
        if not self._limits.shared():
            return self.local.count(key)
        unsynced = self._unsynced.setdefault(key, 0)
        total = self._total(key)
        return max(self.local.count(key), unsynced + (total.count if total else 0))

    def _total(self, key: str) -> _Total | None:
        """The key's cluster-wide count, unless some of it left the window since (then the
        count is unknown until the next sync, and this node's own window decides)."""
        total = self._totals.get(key)
        if total is not None and self._limits.clock() >= total.free_at:
            del self._totals[key]
            return None
        return total

    def take_unsynced(self) -> dict[str, int]:
        """The hits (and keys to re-read) since the last call, for a sync."""
        unsynced, self._unsynced = self._unsynced, {}
        return unsynced

    def set_total(self, key: str, count: int, free_at: float) -> None:
        """What a sync read back: ``count`` hits in the window, across the cluster."""
        if count <= 0:
            self._totals.pop(key, None)
            return
        if len(self._totals) >= _MAX_KEYS and key not in self._totals:
            now = self._limits.clock()
            for stale in [k for k, t in self._totals.items() if now >= t.free_at]:
                del self._totals[stale]
            if len(self._totals) >= _MAX_KEYS:
                self._totals.clear()  # unknown totals: each node's own window decides
        self._totals[key] = _Total(count, free_at)


class SharedLimits:
    """One node's ``SharedWindow``s and their sync with Redis: every ``SYNC_INTERVAL_S``,
    ``serve`` adds the hits counted here since the last sync, for every window and key, and
    reads the cluster-wide totals back, in one round trip (``Bus.sync_windows``; one per
    ``SYNC_BATCH_KEYS`` keys).

    A sync that fails or takes over ``sync_timeout_s`` (``SYNC_TIMEOUT_S``): its hits stay in
    the nodes' own windows only, and for ``RETRY_S`` every window counts on this node alone;
    then syncs resume.
    Without a bus (one process) the windows are their own windows and nothing syncs.
    """

    def __init__(
        self,
        bus: Bus | None,
        *,
        clock: Clock = time.monotonic,
        sync_timeout_s: float = SYNC_TIMEOUT_S,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.sync_timeout_s = sync_timeout_s
        self.metrics = bus.metrics if bus is not None else BusMetrics()
        self._windows: list[SharedWindow] = []
        self._alone_until = 0.0

    def window(
        self, name: str, limit: int, window_s: float, *, clock: Clock = time.monotonic
    ) -> SharedWindow:
        """A new window shared by every node (``name`` must be the same on each)."""
        window = SharedWindow(name, SlidingWindow(limit, window_s, clock=clock), self)
        self._windows.append(window)
        return window

    def shared(self) -> bool:
        """Whether the cluster's counts decide (a bus, and Redis answered the last sync)."""
        return self.bus is not None and self.clock() >= self._alone_until

    async def sync(self) -> bool:
        """One round trip: add what was counted here, read the totals back. False (and this
        node counts alone for ``RETRY_S``) when Redis did not answer in time."""
        batch: list[WindowSync] = []
        targets: list[tuple[SharedWindow, str]] = []
        added = 0
        for window in self._windows:
            for key, add in window.take_unsynced().items():
                batch.append(
                    WindowSync(f"{window.name}:{key}", window.local.window_s, window.bucket_s, add)
                )
                targets.append((window, key))
                added += add
        if not batch or self.bus is None:
            return True
        try:
            for start in range(0, len(batch), SYNC_BATCH_KEYS):
                chunk = batch[start : start + SYNC_BATCH_KEYS]
                sent_at = self.clock()
                try:
                    answers = await self.bus.sync_windows(chunk, timeout_s=self.sync_timeout_s)
                except BusUnavailable as err:
                    self.metrics.limit_syncs["failed"] += 1
                    self.metrics.limit_fallbacks += 1
                    self._alone_until = self.clock() + RETRY_S
                    log.warning(
                        "rate limits: %s; counting on this node alone for %g s", err, RETRY_S
                    )
                    return False
                self.metrics.limit_syncs["ok"] += 1
                chunk_targets = targets[start : start + SYNC_BATCH_KEYS]
                for (window, key), (count, free_in_s) in zip(chunk_targets, answers, strict=True):
                    window.set_total(key, count, sent_at + free_in_s)
        finally:  # added in Redis, or dropped from the cluster's count (cancelled too)
            self.metrics.limit_unsynced -= added
        return True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sync every ``SYNC_INTERVAL_S`` (while Redis answers) until cancelled. A sync cut
        short by cancellation loses its batch from the cluster's count only. Runs as the child
        ``sync`` of the supervisor ``limits`` (web/supervision.py): a crash restarts it."""
        task_status.started()
        while True:
            await trio.sleep(SYNC_INTERVAL_S)
            if self.shared():
                await self.sync()


class LoginThrottle:
    """Throttle password guessing without ever locking an account for good.

    Per account: after ``free_failures`` consecutive failures each further attempt must wait
    1 s, 2 s, 4 s ... (capped at ``max_backoff_s``); a success resets it. Per IP: at most
    ``ip_failures`` failures in 15 minutes. ``check`` returns the seconds to wait (0: go ahead).

    In a cluster (``limits`` has a bus) both hold across the nodes: the IP's failures as a
    ``SharedWindow``, the account's in Redis, read or changed in one round trip per call
    (``Bus.login_failures``: logins are rare), on Redis's clock, under a key that hides the
    username (an HMAC keyed by the cluster's secret key). This node remembers the last count it
    heard for each account: when Redis does not answer within ``LOGIN_TIMEOUT_S`` it goes on
    from there alone for ``RETRY_S`` (N nodes: up to N times the attempts meanwhile), and says
    so in the log (a line per ``SUMMARY_INTERVAL_S`` at most) and in
    ``livechat_bus_unavailable_total{what="login_throttle"}``. Without a bus nothing is awaited.
    """

    def __init__(
        self,
        *,
        free_failures: int,
        max_backoff_s: float,
        ip_failures: int,
        limits: SharedLimits | None = None,
        secret_key: str = "",
        clock: Clock = time.monotonic,
    ) -> None:
        self._free = free_failures
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._accounts: dict[str, tuple[int, float]] = {}  # failures, time of last failure
        limits = limits or SharedLimits(None, clock=clock)
        self._bus = limits.bus
        self._ips = limits.window("login_failures", ip_failures, 15 * 60.0, clock=clock)
        self._key = hmac.new(secret_key.encode(), b"livechat login throttle v1", "sha256").digest()
        self._alone_until = 0.0
        self._redis_failures = FailureLog(log, "login throttle round trip to Redis", clock=clock)

    async def check(self, *, account: str, ip: str) -> float:
        wait = 0.0
        if self._ips.count(ip) >= self._ips.local.limit:
            wait = self._ips.local.window_s
        failures, since_s = await self._account(account, "read")
        if failures >= self._free:
            backoff = min(self._max_backoff_s, 2.0 ** (failures - self._free))
            wait = max(wait, backoff - since_s)
        return max(0.0, wait)

    async def failed(self, *, account: str, ip: str) -> None:
        self._ips.hit(ip)
        await self._account(account, "add")

    async def succeeded(self, *, account: str) -> None:
        await self._account(account, "reset")

    async def _account(self, account: str, op: _AccountOp) -> tuple[int, float]:
        """The account's failures and the seconds since the last one, after ``op``: the
        cluster's when Redis answers (and remembered here), else this node's own count."""
        shared = await self._shared(account, op)
        now = self._clock()
        if shared is not None:
            failures, since_s = shared
            self._remember(account, failures, now - since_s)
            return shared
        failures, last = self._accounts.get(account, (0, now))
        if op == "reset":
            failures = 0
        elif op == "add":
            failures, last = failures + 1, now
        self._remember(account, failures, last)
        return failures, now - last

    async def _shared(self, account: str, op: _AccountOp) -> tuple[int, float] | None:
        """``op`` in Redis; None without a bus, or while this node counts alone. A success
        is always sent: a reset lost would throttle the account's owner later."""
        bus = self._bus
        if bus is None or (op != "reset" and self._clock() < self._alone_until):
            return None
        digest = hmac.new(self._key, account.encode(), "sha256").hexdigest()[:32]
        try:
            answer = await bus.login_failures(
                f"login_account:{digest}",
                op,
                forget_after_s=self._max_backoff_s + ACCOUNT_FORGET_S,
                timeout_s=LOGIN_TIMEOUT_S,
            )
        except BusUnavailable as err:
            self._alone_until = self._clock() + RETRY_S
            self._redis_failures.failed(err)
            return None
        self._redis_failures.succeeded()
        return answer

    def _remember(self, account: str, failures: int, last: float) -> None:
        if not failures:
            self._accounts.pop(account, None)
            return
        if len(self._accounts) >= _MAX_KEYS and account not in self._accounts:
            cutoff = self._clock() - self._max_backoff_s
            for key in [k for k, (_, at) in self._accounts.items() if at < cutoff]:
                del self._accounts[key]
        self._accounts[account] = (failures, last)


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
