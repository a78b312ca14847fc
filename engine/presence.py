"""Who is connected, and delivery to them: the connection directory, fan-out, rate limits.

The ``Hub`` is the engine's directory of live connections (by agent, by visitor, by workspace,
by watched conversation). It outlives every actor, so a conversation actor that crashes,
restarts or is passivated finds its subscribers again. Delivery is ``send_nowait`` only: a
connection whose outbox is full or gone is dropped on the spot (its outbox closed), and the
client resumes from its last seq. Only the Trio thread touches the hub, so it needs no lock.

Ephemeral signals (typing, sneak peek, viewing, presence) carry no seq and expire on the client
after ``expires_in_s``; ``RateLimiter`` bounds how often one sender may emit them (and how fast
a visitor may send durable messages).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TypeVar

import attrs
import trio

from engine.messages import Push, SessionClosed
from engine.principals import AgentPrincipal, Connection
from engine.visibility import for_visitor_push

__all__ = ["Hub", "RateLimiter", "TokenBucket"]


@attrs.define(slots=True)
class TokenBucket:
    """``rate_per_s`` tokens per second, at most ``burst`` saved up."""

    rate_per_s: float
    burst: float
    tokens: float
    updated_s: float

    def take(self, now_s: float) -> float:
        """Spend one token; returns 0 when allowed, else seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now_s - self.updated_s) * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s if self.rate_per_s > 0 else float("inf")


class RateLimiter:
    """Token buckets by key (e.g. ``("typing", connection_id)``); idle buckets are forgotten."""

    def __init__(
        self, *, rate_per_s: float, burst: float, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._buckets: dict[object, TokenBucket] = {}

    def check(self, key: object) -> float:
        """0 if ``key`` may act now (and counts it), else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._forget_full(now)
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, self._burst, now)
        return bucket.take(now)

    def forget(self, key: object) -> None:
        self._buckets.pop(key, None)

    def _forget_full(self, now: float) -> None:
        refill_s = self._burst / self._rate if self._rate > 0 else float("inf")
        for key in [k for k, b in self._buckets.items() if now - b.updated_s > refill_s]:
            del self._buckets[key]


class Hub:
    """Directory of live connections and the only place that writes to outboxes."""

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self._agents: dict[tuple[str, str], set[Connection]] = {}
        self._visitors: dict[tuple[str, str], set[Connection]] = {}
        self._workspace_agents: dict[str, set[Connection]] = {}
        self._workspace_visitors: dict[str, set[Connection]] = {}
        self._watchers: dict[str, set[Connection]] = {}  # conversation id -> connections
        self.dropped_slow = 0  # slow consumers dropped (for metrics)
        # Called with the connection after it is dropped (slow consumer or kick), so the facade
        # can run the same bookkeeping as a disconnect (agent grace period, visitor leaving).
        self.on_drop: Callable[[Connection], None] = lambda conn: None

    # -- registration

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        p = conn.principal
        if isinstance(p, AgentPrincipal):
            self._agents.setdefault((p.workspace_id, p.agent_id), set()).add(conn)
            self._workspace_agents.setdefault(p.workspace_id, set()).add(conn)
        else:
            self._visitors.setdefault((p.workspace_id, p.visitor_id), set()).add(conn)
            self._workspace_visitors.setdefault(p.workspace_id, set()).add(conn)

    def remove(self, conn: Connection) -> bool:
        """Forget ``conn``; False if it was not registered (already dropped)."""
        if self.connections.pop(conn.id, None) is None:
            return False
        p = conn.principal
        if isinstance(p, AgentPrincipal):
            _discard(self._agents, (p.workspace_id, p.agent_id), conn)
            _discard(self._workspace_agents, p.workspace_id, conn)
        else:
            _discard(self._visitors, (p.workspace_id, p.visitor_id), conn)
            _discard(self._workspace_visitors, p.workspace_id, conn)
        for conversation_id in conn.watching:
            _discard(self._watchers, conversation_id, conn)
        conn.watching.clear()
        return True

    def watch(self, conn: Connection, conversation_id: str) -> None:
        if conn.id in self.connections:
            conn.watching.add(conversation_id)
            self._watchers.setdefault(conversation_id, set()).add(conn)

    def unwatch(self, conn: Connection, conversation_id: str) -> None:
        conn.watching.discard(conversation_id)
        _discard(self._watchers, conversation_id, conn)

    # -- lookups

    def agent_connections(self, workspace_id: str, agent_id: str) -> set[Connection]:
        return self._agents.get((workspace_id, agent_id), _EMPTY)

    def visitor_connections(self, workspace_id: str, visitor_id: str) -> set[Connection]:
        return self._visitors.get((workspace_id, visitor_id), _EMPTY)

    def workspace_agent_connections(self, workspace_id: str) -> set[Connection]:
        return self._workspace_agents.get(workspace_id, _EMPTY)

    def workspace_visitor_connections(self, workspace_id: str) -> set[Connection]:
        return self._workspace_visitors.get(workspace_id, _EMPTY)

    def watchers(self, conversation_id: str) -> set[Connection]:
        return self._watchers.get(conversation_id, _EMPTY)

    def agent_online(self, workspace_id: str, agent_id: str) -> bool:
        return bool(self._agents.get((workspace_id, agent_id)))

    def visitor_online(self, workspace_id: str, visitor_id: str) -> bool:
        return bool(self._visitors.get((workspace_id, visitor_id)))

    # -- delivery

    def deliver(self, conn: Connection, push: Push) -> bool:
        """Queue ``push`` without waiting; a full or closed outbox drops the connection.

        A visitor's connection gets only what ``engine.visibility`` lets a visitor see: an
        internal event is skipped (True: nothing was lost), an event's agent-only data removed.
        """
        if conn.closed:
            return False
        if conn.for_visitor:
            visible = for_visitor_push(push)
            if visible is None:
                return True
            push = visible
        return self.deliver_visible(conn, push)

    def deliver_visible(self, conn: Connection, push: Push) -> bool:
        """``deliver`` for a push that is already what its recipient may see: the caller
        applied ``engine.visibility`` once for all its recipients (the conversation actor's
        fan-out), so it is not filtered again per connection and every tab gets the same
        object (encoded once). Drops a slow or closed connection like ``deliver``."""
        if conn.closed:
            return False
        try:
            conn.outbox.send_nowait(push)
        except trio.WouldBlock:
            self.dropped_slow += 1
            self.drop(conn)
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.drop(conn)
            return False
        return True

    def deliver_all(self, conns: Iterable[Connection], push: Push) -> int:
        sent = 0
        for conn in list(conns):
            sent += self.deliver(conn, push)
        return sent

    def drop(self, conn: Connection, *, reason: str | None = None) -> None:
        """Stop delivering to ``conn`` and close its outbox (the web layer closes the socket)."""
        if conn.closed:
            return
        if reason is not None:
            with contextlib.suppress(
                trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
            ):
                conn.outbox.send_nowait(SessionClosed(reason=reason))
        conn.closed = True
        conn.outbox.close()
        if self.remove(conn):
            self.on_drop(conn)

    def broadcast_agents(self, workspace_id: str, push: Push) -> None:
        self.deliver_all(self.workspace_agent_connections(workspace_id), push)

    def broadcast_visitors(self, workspace_id: str, push: Push) -> None:
        self.deliver_all(self.workspace_visitor_connections(workspace_id), push)


_EMPTY: set[Connection] = set()


K = TypeVar("K")


def _discard(index: dict[K, set[Connection]], key: K, conn: Connection) -> None:
    conns = index.get(key)
    if conns is not None:
        conns.discard(conn)
        if not conns:
            del index[key]
