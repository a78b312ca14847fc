"""The registry of live WebSockets, so HTTP actions can reach them (logout, ban, shutdown).

Each connection registers a ``LiveSocket`` handle while it runs. ``close`` asks the connection to
end with a close code: it records the code and cancels the connection's scope; the connection's
own handler then sends the close frame and unregisters. Nothing here touches the socket directly.

``SocketRegistry.watch`` is the one timer task for every connection's deadlines (auth deadline,
dead peer, slow consumer): once a tick it asks each socket's ``check`` and closes those that
answer with a close code, instead of a watchdog task (and a timer) per connection; an idle
socket's ``check`` sets ``check_at``, so the tick skips it until a deadline or a ping could be
due, or until its outbox gets something (``LiveSocket.wake``). The same tick
feeds the overload gate (``web/overload.py``): its own lateness and how many sockets are backed
up while still draining (``LiveSocket.behind``).

Lookups by workspace, visitor, agent, session and API token go through indexes (a set of sockets
per key) kept by ``add``, ``bind`` and ``remove``, so closing one account's sockets costs the
same with ten or ten thousand other connections. A socket's identity fields are therefore set
only through ``SocketRegistry.bind``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import TYPE_CHECKING

import attrs
import trio

from engine import FailureLog
from web.protocol import CloseCode

if TYPE_CHECKING:
    from web.overload import OverloadGate

log = logging.getLogger("livechat.ws")


class CloseSocket(Exception):
    """Raised inside a connection's handler to end it with a close ``code`` (and ``reason``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@attrs.frozen
class GoingAway:
    """Put in a socket's outbox after its last push: the server serving it is shutting down,
    so the socket closes with 1001 and its client reconnects at once and resumes (in a cluster,
    the owner of the socket's workspace drains: ``web/cluster.py``)."""


GOING_AWAY = GoingAway()


@attrs.define(eq=False)
class LiveSocket:
    id: str
    kind: str  # "visitor" | "agent"
    workspace_id: str
    ip: str
    agent_id: str | None = None
    visitor_id: str | None = None
    session_hash: str | None = None  # the cookie session that authenticated it
    token_id: str | None = None
    connected_at: float = attrs.field(factory=time.time)
    close_code: int | None = None
    close_reason: str = ""
    cancel_scope: trio.CancelScope | None = None
    finished: bool = False  # its handler has ended and unregistered it (``wait_finished``)
    _finished_event: trio.Event | None = None  # created only for someone who waits
    # Called by ``SocketRegistry.watch`` with ``trio.current_time()``: a (code, reason) to close
    # the connection with, or None. Must not block or send (a send can hang on a peer that does
    # not read; the deadlines must keep running meanwhile).
    check: Callable[[float], tuple[int, str] | None] | None = None
    # Set by ``check``: the outbox is backed up but writes still complete (the peer reads; the
    # process is behind). Counted by ``watch`` for the overload gate.
    behind: bool = False
    # ``watch`` skips ``check`` until then (trio clock): set by ``check`` for an idle socket (no
    # deadline and no ping due before), reset by ``wake`` when its outbox gets something.
    check_at: float = -math.inf
    # Agent sockets only: re-read the credential (session or API token) from storage; a
    # (code, reason) when it no longer holds. Called by ``SocketRegistry.recheck_credentials``
    # once per credential and period, never per heartbeat.
    recheck: Callable[[], Awaitable[tuple[int, str] | None]] | None = None

    def wake(self) -> None:
        """Something to check from the next tick on (its pump took pushes)."""
        self.check_at = -math.inf

    def finish(self) -> None:
        """Its handler has ended (``SocketRegistry.remove``): wake whoever waits."""
        self.finished = True
        if self._finished_event is not None:
            self._finished_event.set()

    async def wait_finished(self) -> None:
        """Until ``finish`` (no event per socket unless someone waits, as at shutdown)."""
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        if self._finished_event is None:
            self._finished_event = trio.Event()
        await self._finished_event.wait()

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close with ``code``; the first request wins. Idempotent."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()


_Index = dict[Hashable, set[LiveSocket]]


def _keys(sock: LiveSocket) -> Iterator[tuple[str, Hashable]]:
    """The index entries of ``sock``: (index name, key) for each identity it has."""
    yield "kind", sock.kind
    yield "workspace", sock.workspace_id
    if sock.agent_id is not None:
        yield "agent", (sock.workspace_id, sock.agent_id)
    if sock.visitor_id is not None:
        yield "visitor", (sock.workspace_id, sock.visitor_id)
    if sock.session_hash is not None:
        yield "session", sock.session_hash
    if sock.token_id is not None:
        yield "token", sock.token_id


class SocketRegistry:
    """The live sockets, by id and indexed by workspace, visitor, agent, session and token."""

    def __init__(self) -> None:
        self._live: dict[str, LiveSocket] = {}
        self._index: dict[str, _Index] = {
            name: {} for name in ("kind", "workspace", "agent", "visitor", "session", "token")
        }

    def add(self, sock: LiveSocket) -> None:
        self._live[sock.id] = sock
        self._link(sock)

    def bind(
        self,
        sock: LiveSocket,
        *,
        workspace_id: str,
        agent_id: str | None = None,
        visitor_id: str | None = None,
        session_hash: str | None = None,
        token_id: str | None = None,
    ) -> None:
        """Record who ``sock`` is (after hello/auth), moving it in the indexes."""
        live = self._live.get(sock.id) is sock
        if live:
            self._unlink(sock)
        sock.workspace_id = workspace_id
        sock.agent_id = agent_id
        sock.visitor_id = visitor_id
        sock.session_hash = session_hash
        sock.token_id = token_id
        if live:
            self._link(sock)

    def remove(self, sock: LiveSocket) -> None:
        if self._live.get(sock.id) is sock:
            del self._live[sock.id]
            self._unlink(sock)
        sock.finish()

    def _link(self, sock: LiveSocket) -> None:
        for name, key in _keys(sock):
            self._index[name].setdefault(key, set()).add(sock)

    def _unlink(self, sock: LiveSocket) -> None:
        for name, key in _keys(sock):
            index = self._index[name]
            members = index.get(key)
            if members is not None:
                members.discard(sock)
                if not members:
                    del index[key]

    def _find(self, name: str, key: Hashable) -> list[LiveSocket]:
        return list(self._index[name].get(key, ()))

    def __iter__(self) -> Iterator[LiveSocket]:
        return iter(list(self._live.values()))

    def __len__(self) -> int:
        return len(self._live)

    def of_agent(self, workspace_id: str, agent_id: str) -> list[LiveSocket]:
        return self._find("agent", (workspace_id, agent_id))

    def of_visitor(self, workspace_id: str, visitor_id: str) -> list[LiveSocket]:
        return self._find("visitor", (workspace_id, visitor_id))

    def of_session(self, session_hash: str) -> list[LiveSocket]:
        return self._find("session", session_hash)

    def of_token(self, token_id: str) -> list[LiveSocket]:
        return self._find("token", token_id)

    def of_workspace(self, workspace_id: str) -> list[LiveSocket]:
        return self._find("workspace", workspace_id)

    async def watch(self, tick_s: float, gate: OverloadGate | None = None) -> None:
        """Run every socket's ``check`` once per ``tick_s``, closing those past a deadline.

        One task for all connections. A check that raises is logged and that socket closed
        with 1011; the others are unaffected. Then ``gate`` is updated with the tick's lateness
        and the number of sockets ``behind``. Runs until cancelled.
        """
        while True:
            due = trio.current_time() + tick_s
            await trio.sleep_until(due)
            now = trio.current_time()
            behind = 0
            for sock in list(self._live.values()):
                if sock.check_at > now or sock.check is None or sock.close_code is not None:
                    continue  # idle until check_at: its ``behind`` is False
                try:
                    verdict = sock.check(now)
                except Exception:
                    log.exception("socket deadline check failed", extra={"connection_id": sock.id})
                    verdict = (CloseCode.INTERNAL, "internal error")
                if verdict is not None:
                    sock.close(*verdict)
                else:
                    behind += sock.behind
            if gate is not None:
                gate.update(lag_s=now - due, behind=behind, sockets=len(self._live))

    async def recheck_credentials(self, period_s: float, *, timeout_s: float) -> None:
        """Once per ``period_s``, re-read each distinct agent credential and close the sockets
        of those that ended. Runs until cancelled.

        Logout, revocation, password changes, role changes, bans and suspensions close the
        sockets at once, on every node of a cluster (``web/access.py``: pushed here, broadcast
        on the bus); this pass catches what was missed (an event lost on the bus, a
        ``livechat admin`` without a bus configured, another process on the same database)
        and sessions that expire. One storage read per live session or
        token, whatever its number of sockets; none for visitors. A check that fails (storage
        down, past ``timeout_s``) is logged and closes nothing: the next pass tries again. The
        failures are logged rate-limited (``FailureLog``): an outage fails every credential.
        """
        failures = FailureLog(
            log, "credential re-check", clock=trio.current_time, with_traceback=True
        )
        while True:
            await trio.sleep(period_s)
            groups: dict[Hashable, list[LiveSocket]] = {}
            for sock in self._find("kind", "agent"):
                if sock.recheck is None or sock.close_code is not None:
                    continue
                key = sock.session_hash or ("token", sock.token_id)
                groups.setdefault(key, []).append(sock)
            for socks in groups.values():
                recheck = socks[0].recheck
                assert recheck is not None
                try:
                    with trio.fail_after(timeout_s):
                        verdict = await recheck()
                except (Exception, trio.TooSlowError) as err:
                    failures.failed(err)
                    continue
                failures.succeeded()
                if verdict is not None:
                    for sock in socks:
                        sock.close(*verdict)

    async def close_all(self, code: int, reason: str, *, timeout_s: float) -> None:
        """Close every socket and wait (bounded) until their handlers have finished."""
        socks = list(self)
        for sock in socks:
            sock.close(code, reason)
        with trio.move_on_after(timeout_s):
            for sock in socks:
                await sock.wait_finished()
