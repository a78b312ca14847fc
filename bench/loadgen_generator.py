"""One load-generator child's traffic: its sockets, what is in flight, the counters of a phase.

Every message a child sends is tracked by its ``client_msg_id`` from the moment it is sent to the
moment the other side of its pair receives it; after each phase the child waits (bounded by
``drain_s``) for the stragglers, then counts what never arrived, and what arrived twice as
duplicated. It behaves as docs/protocol.md asks of a client: a socket the server closes with a
resumable code is reopened with ``resume``; a ``resync_required`` is answered by fetching the gap
with ``get_history`` (those deliveries count as ``via_history``); every send not yet acknowledged
on the old socket is sent again, with the same ``client_msg_id``, on the new one; a refusal with
``retry_after_s`` (or ``overloaded``) is sent again after the wait. What never arrived is then
split by what the server said: acknowledged but never delivered (``acked_undelivered``: a server
bug, always), not acknowledged (``unacked``: lost after resend), or refused without a retry hint
(``given_up``: the client's choice). A message that arrives after its phase gave up on it is
``late``, not lost. A child reports its own CPU time so the parent can say when the load
generator, not the server, was the bottleneck.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from bench.loadgen_io import BIN_S, cpu_seconds_self, emit
from bench.wire import (
    Acked,
    Delivery,
    HistoryPage,
    PairLink,
    Parsed,
    Rejected,
    Reply,
    Resync,
    Wire,
)

PROGRESS_INTERVAL_S = 0.5
# docs/protocol.md: reconnect and resume; 1006 (no close frame: the TCP connection dropped) too,
# as the widget does after a network drop.
RESUMABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1013, 4001})
RECONNECT_TIMEOUT_S = 30.0
DRAIN_CAP_FACTOR = 6  # a drain never lasts more than this many times its no-progress limit
# Refusals a client resends even without retry_after_s (docs/protocol.md: nothing was stored).
RETRY_CODES = frozenset({"overloaded", "storage_unavailable", "rate_limited", "shutting_down"})
DEFAULT_RETRY_S = 1.0
# A send with no answer after this long is sent again (same client_msg_id), as the widget does
# after its request timeout: a refusal the client cannot match to a request (a frame-rate limit
# answers with "id": null) must not turn into a silent loss.
REQUEST_TIMEOUT_S = 20.0
SWEEP_INTERVAL_S = 2.0


def frame_id(frame: str) -> str:
    """The ``client_msg_id`` of a message frame (the load generator's frames are compact JSON
    with it as ``"id"``, see ``Wire.message_frame``); "" when there is none."""
    try:
        found = json.loads(frame).get("client_msg_id")
    except ValueError:
        return ""
    return found if isinstance(found, str) else ""


@attrs.define
class _PhaseStats:
    """Counters for one phase; reset at the start of each phase."""

    start: float = 0.0
    sent: dict[str, int] = attrs.field(factory=lambda: {"v2a": 0, "a2v": 0})
    delivered: dict[str, int] = attrs.field(factory=lambda: {"v2a": 0, "a2v": 0})
    latency_s: dict[str, list[float]] = attrs.field(factory=lambda: {"v2a": [], "a2v": []})
    bins: list[int] = attrs.field(factory=list)
    send_lag_s: list[float] = attrs.field(factory=list)
    duplicates: int = 0
    unexpected: int = 0
    seq_violations: int = 0
    send_errors: int = 0
    closed_sockets: int = 0
    echoes: int = 0
    other_frames: int = 0
    heartbeats: int = 0
    replies: int = 0
    paced: int = 0  # sends that waited for the server's per-connection frame budget
    retried: int = 0  # sends rejected with retry_after_s and sent again (same client_msg_id)
    rejected: dict[str, int] = attrs.field(factory=dict)  # server error code -> count
    retried_codes: dict[str, int] = attrs.field(factory=dict)  # refusals resent later, by code
    close_reasons: dict[str, int] = attrs.field(factory=dict)
    reconnects: int = 0  # sockets reopened with resume after the server closed them
    reconnect_failures: int = 0
    resent: int = 0  # unacknowledged sends sent again (same client_msg_id) after a reconnect
    timed_out: int = 0  # sends with no answer after REQUEST_TIMEOUT_S, sent again
    given_up: int = 0  # refused without a retry hint: the client dropped them
    resyncs: int = 0  # resync_required received (then the gap is fetched with get_history)
    via_history: int = 0  # first deliveries that came from such a history fetch


class Generator:
    """The child's state: its sockets, what is in flight, the counters of the current phase."""

    def __init__(self, wire: Wire, config: dict[str, Any]) -> None:
        self.wire = wire
        self.config = config
        self.body = "x" * int(config.get("body_bytes", 64))
        self.links: list[PairLink] = []
        self.idle: list[WebSocketConnection] = []
        self.pending: dict[str, float] = {}
        self.delivered_ids: set[str] = set()
        self.counters: dict[tuple[int, str], int] = {}
        self.last_seq: dict[tuple[str, int], int] = {}  # resume point: live and history
        self.live_seq: dict[tuple[str, int], int] = {}  # last pushed live: must only grow
        self.fetched_first: set[str] = set()  # first seen in a history page, not live yet
        self.stats = _PhaseStats()
        self.closed_loop_until = 0.0
        self.closing = False
        self.connect_errors: list[str] = []
        self._drained = trio.Event()  # set whenever nothing is in flight any more
        self.frame_budget = wire.max_frames_per_10s
        self.sent_at: dict[int, list[float]] = {}  # id(ws) -> recent send times, for pacing
        # Not yet delivered, for retries and resends: (pair, sending role, frame).
        self.frames: dict[str, tuple[PairLink, str, str]] = {}
        self.acked: set[str] = set()  # acknowledged by the server (durable)
        self.last_sent: dict[str, float] = {}  # msg_id -> when it was last (re)sent
        self.given_up_total = 0
        self.retry_nursery: trio.Nursery | None = None  # set while a phase runs
        self.late_ids: set[str] = set()  # counted lost by an earlier phase's drain
        self.closed_total = 0  # sockets the server closed since they were opened
        self.late_total = 0  # messages delivered after their phase had counted them lost
        self.reconnects_total = 0
        self.socket_nursery: trio.Nursery | None = None  # where reopened sockets live
        self.close_reasons_total: dict[str, int] = {}

    # -- connecting ---------------------------------------------------------------------------

    async def open_all(self, nursery: trio.Nursery, readers: trio.Nursery) -> dict[str, Any]:
        """Open every socket of this child; a visitor socket is read from the moment it is open
        (it must answer the server's heartbeats however long the others take to connect)."""
        self.socket_nursery = nursery
        indices: list[int] = list(self.config["indices"])
        idle_mode = self.config["mode"] == "idle"
        limiter = trio.CapacityLimiter(int(self.config.get("connect_concurrency", 64)))
        timeout_s = float(self.config.get("connect_timeout_s", 30.0))
        heartbeat_s = float(self.config.get("heartbeat_s", 0) or 0)
        handshake_s: list[float] = []
        opened: dict[int, PairLink | WebSocketConnection] = {}
        done = 0
        started = trio.current_time()

        async def open_one(index: int) -> None:
            nonlocal done
            async with limiter:
                t0 = trio.current_time()
                try:
                    with trio.fail_after(timeout_s):
                        if idle_mode:
                            opened[index] = await self.wire.open_idle(nursery, index, {})
                        else:
                            opened[index] = await self.wire.open_pair(nursery, index, {})
                except (OSError, trio.TooSlowError, ConnectionClosed, Exception) as err:
                    if len(self.connect_errors) < 20:
                        self.connect_errors.append(f"{index}: {type(err).__name__}: {err}")
                    else:
                        self.connect_errors.append("")
                    return
                handshake_s.append(trio.current_time() - t0)
                done += 1
                found = opened[index]
                if isinstance(found, PairLink):
                    routes: dict[str | None, PairLink] = {found.conversation_id: found}
                    readers.start_soon(self.read_socket, found.visitor, "visitor", routes)
                else:
                    readers.start_soon(self.read_idle, found)
                    if heartbeat_s > 0:
                        readers.start_soon(self.keep_alive, found, heartbeat_s)

        async def report() -> None:
            while True:
                emit({"event": "progress", "connected": done})
                await trio.sleep(PROGRESS_INTERVAL_S)

        async with trio.open_nursery() as inner:
            inner.start_soon(report)
            async with trio.open_nursery() as openers:
                for index in indices:
                    openers.start_soon(open_one, index)
            inner.cancel_scope.cancel()
        elapsed = trio.current_time() - started
        for index in indices:
            found = opened.get(index)
            if isinstance(found, PairLink):
                self.links.append(found)
            elif found is not None:
                self.idle.append(found)
        return {
            "event": "ready",
            "connected": done,
            "connect_errors": len(self.connect_errors),
            "connect_error_samples": [e for e in self.connect_errors if e][:5],
            "connect_s": elapsed,
            "handshake_us": [round(s * 1e6) for s in handshake_s],
        }

    # -- traffic --------------------------------------------------------------------------------

    async def send(self, link: PairLink, direction: str) -> None:
        key = (link.index, direction)
        n = self.counters.get(key, 0) + 1
        self.counters[key] = n
        msg_id = f"{direction[0]}{link.index}.{n}"
        role = "visitor" if direction == "v2a" else "agent"
        frame = self.wire.message_frame(role, link, msg_id, self.body)
        await self._pace(link.visitor if role == "visitor" else link.agent)
        self.pending[msg_id] = trio.current_time()
        self.frames[msg_id] = (link, role, frame)
        self.stats.sent[direction] += 1
        await self._send_on(link, role, frame)

    async def _send_on(self, link: PairLink, role: str, frame: str) -> None:
        """Send on the pair's current socket of ``role``. A send that meets a closed socket stays
        in ``frames``: the reconnect sends it again (or here, if the socket was already
        replaced)."""
        ws = link.visitor if role == "visitor" else link.agent
        self.last_sent[frame_id(frame)] = trio.current_time()
        try:
            await ws.send_message(frame)
        except ConnectionClosed:
            self.stats.send_errors += 1
            current = link.visitor if role == "visitor" else link.agent
            if current is not ws:
                with suppress(ConnectionClosed):
                    await current.send_message(frame)

    async def _pace(self, ws: WebSocketConnection) -> None:
        """Stay inside the server's per-connection frame budget (90 % of it, per 10 s)."""
        if self.frame_budget is None:
            return
        budget = max(1, int(self.frame_budget * 0.9))
        times = self.sent_at.setdefault(id(ws), [])
        now = trio.current_time()
        while times and times[0] <= now - 10.0:
            times.pop(0)
        if len(times) >= budget:
            self.stats.paced += 1
            await trio.sleep_until(times[0] + 10.0)
            times.pop(0)
        times.append(trio.current_time())

    async def _send_frame(self, ws: WebSocketConnection, text: str) -> None:
        await self._pace(ws)
        try:
            await ws.send_message(text)
        except ConnectionClosed:
            self.stats.send_errors += 1

    def _on_closed(self, err: ConnectionClosed) -> None:
        if self.closing:
            return
        self.stats.closed_sockets += 1
        self.closed_total += 1
        reason = err.reason
        key = f"{getattr(reason, 'code', '?')} {getattr(reason, 'reason', '') or ''}".strip()
        self.stats.close_reasons[key] = self.stats.close_reasons.get(key, 0) + 1
        self.close_reasons_total[key] = self.close_reasons_total.get(key, 0) + 1

    def _on_rejected(self, rejected: Rejected) -> None:
        """A refused send is retried after ``retry_after_s`` (as a client must), else counted."""
        stats = self.stats
        msg_id = rejected.request_id
        in_flight = self.frames.get(msg_id) if msg_id is not None else None
        retry = rejected.retry_after_s is not None or rejected.code in RETRY_CODES
        nursery = self.retry_nursery or self.socket_nursery
        if in_flight is not None and retry and nursery is not None:
            stats.retried += 1
            stats.retried_codes[rejected.code] = stats.retried_codes.get(rejected.code, 0) + 1
            wait_s = rejected.retry_after_s or DEFAULT_RETRY_S
            assert msg_id is not None
            nursery.start_soon(self._resend, msg_id, wait_s)
            return
        key = f"{rejected.code}: {rejected.message}"[:120]
        stats.rejected[key] = stats.rejected.get(key, 0) + 1
        if msg_id is not None and in_flight is not None:
            stats.given_up += 1
            self.given_up_total += 1
            self.pending.pop(msg_id, None)
            self.frames.pop(msg_id, None)
            self.late_ids.discard(msg_id)
            if not self.pending:
                self._drained.set()

    async def _resend(self, msg_id: str, wait_s: float) -> None:
        await trio.sleep(wait_s)
        in_flight = self.frames.get(msg_id)
        if in_flight is None:
            return  # delivered meanwhile
        link, role, frame = in_flight
        await self._pace(link.visitor if role == "visitor" else link.agent)
        await self._send_on(link, role, frame)

    def _on_delivery(
        self, role: str, link: PairLink, msg_id: str, seq: int | None, *, history: bool = False
    ) -> bool:
        """Record a delivery; True when it is a first delivery of a message to ``role``.

        ``history``: fetched after a ``resync_required``. Pages overlap what arrives live on
        the resumed socket (an event stored before the page was read can still be on its way
        as a push), so a message seen in both is one delivery, not a duplicate, and history
        seqs do not count against the order of live pushes.
        """
        stats = self.stats
        key = (role, link.index)
        if seq is not None:
            self.last_seq[key] = max(seq, self.last_seq.get(key, 0))
            if not history:
                last = self.live_seq.get(key)
                if last is not None and seq <= last:
                    stats.seq_violations += 1
                else:
                    self.live_seq[key] = seq
        own = "v" if role == "visitor" else "a"
        if not msg_id or msg_id[0] not in "va":
            return False  # a system event or the pair's opening message: only its seq matters
        if msg_id.startswith(own):
            stats.echoes += 1
            return False
        now = trio.current_time()
        sent_at = self.pending.pop(msg_id, None)
        if not self.pending:
            self._drained.set()
        elif sent_at is not None and len(self.pending) % 64 == 0:
            self._drained.set()  # progress: lets _drain see that stragglers still arrive
        if sent_at is None:
            if msg_id in self.late_ids:
                self.late_ids.discard(msg_id)
                self.frames.pop(msg_id, None)
                self.delivered_ids.add(msg_id)
                self.late_total += 1  # counted lost by its phase: the drain gave up too early
                stats.via_history += history
                if history:
                    self.fetched_first.add(msg_id)
            elif history:
                pass  # already delivered live: pages overlap
            elif msg_id in self.fetched_first:
                self.fetched_first.discard(msg_id)  # its live push, after the page: overlap
            elif msg_id in self.delivered_ids:
                stats.duplicates += 1
            else:
                stats.unexpected += 1
            return False
        self.frames.pop(msg_id, None)
        stats.via_history += history
        self.delivered_ids.add(msg_id)
        if history:
            self.fetched_first.add(msg_id)
        direction = "v2a" if own == "a" else "a2v"
        stats.delivered[direction] += 1
        stats.latency_s[direction].append(now - sent_at)
        index = int((now - stats.start) / BIN_S)
        if index >= 0:
            bins = stats.bins
            if index >= len(bins):
                bins.extend([0] * (index + 1 - len(bins)))
            bins[index] += 1
        return True

    def socket_routes(self) -> list[tuple[WebSocketConnection, str, dict[str | None, PairLink]]]:
        """Each distinct socket once, with its role and the pairs it carries by conversation.

        An agent socket may carry several pairs (several chats per agent); a visitor socket, or
        a relay socket, carries one (its route is also filed under ``None``).
        """
        by_socket: dict[int, tuple[WebSocketConnection, str, dict[str | None, PairLink]]] = {}
        for link in self.links:
            for role, ws in (("visitor", link.visitor), ("agent", link.agent)):
                entry = by_socket.setdefault(id(ws), (ws, role, {}))
                entry[2][link.conversation_id] = link
        return list(by_socket.values())

    async def read_socket(
        self, ws: WebSocketConnection, role: str, routes: dict[str | None, PairLink]
    ) -> None:
        """Read one socket until it closes: record deliveries, answer heartbeats, reply (closed
        loop) on the pair the delivery belongs to."""
        parse = self.wire.parse
        only = next(iter(routes.values())) if len(routes) == 1 else None
        while True:
            try:
                text = await ws.get_message()
            except ConnectionClosed as err:
                self._on_closed(err)
                reopened = await self._reopen(ws, role, routes, err)
                if reopened is None:
                    return
                ws = reopened
                continue
            if not isinstance(text, str):
                self.stats.other_frames += 1
                continue
            for parsed in parse(role, text):
                await self._on_frame(ws, role, routes, only, parsed)

    async def _on_frame(
        self,
        ws: WebSocketConnection,
        role: str,
        routes: dict[str | None, PairLink],
        only: PairLink | None,
        parsed: Parsed,
    ) -> None:
        if isinstance(parsed, Resync):
            self.stats.resyncs += 1
            await self._fetch_history(ws, parsed.conversation_id, parsed.from_seq)
        elif isinstance(parsed, HistoryPage):
            await self._on_history(ws, role, routes, only, parsed)
        elif not isinstance(parsed, Delivery):
            await self._on_other(ws, parsed)
        else:
            link = only or routes.get(parsed.conversation_id)
            if link is None:
                self.stats.other_frames += 1  # a conversation this process does not drive
                return
            first = self._on_delivery(role, link, parsed.client_msg_id, parsed.seq)
            if first and trio.current_time() < self.closed_loop_until:
                await self.send(link, "a2v" if role == "agent" else "v2a")

    async def _fetch_history(
        self, ws: WebSocketConnection, conversation_id: str, after: int
    ) -> None:
        frame = self.wire.history_frame(conversation_id, after)
        if frame is not None:
            await self._send_frame(ws, frame)

    async def _on_history(
        self,
        ws: WebSocketConnection,
        role: str,
        routes: dict[str | None, PairLink],
        only: PairLink | None,
        page: HistoryPage,
    ) -> None:
        """Deliveries fetched after a resync; the next page while there is more."""
        link = only or routes.get(page.conversation_id)
        if link is None:
            self.stats.other_frames += 1
            return
        for event in page.events:
            first = self._on_delivery(role, link, event.client_msg_id, event.seq, history=True)
            if first and trio.current_time() < self.closed_loop_until:
                await self.send(link, "a2v" if role == "agent" else "v2a")
        seqs = [e.seq for e in page.events if e.seq is not None]
        if page.has_more and seqs:
            await self._fetch_history(ws, page.conversation_id, max(seqs))

    async def _resend_unacked(
        self, fresh: WebSocketConnection, role: str, links: list[PairLink]
    ) -> None:
        """After a reconnect: every send of ``role`` on ``links`` that was never acknowledged,
        again, in order, with its ``client_msg_id`` (a duplicate gets the original ack)."""
        ids = {id(link) for link in links}
        again = [
            frame
            for msg_id, (link, r, frame) in list(self.frames.items())
            if r == role and id(link) in ids and msg_id not in self.acked
        ]
        self.stats.resent += len(again)
        for frame in again:
            self.last_sent[frame_id(frame)] = trio.current_time()
            await self._send_frame(fresh, frame)

    async def _sweep(self, nursery: trio.Nursery) -> None:
        """Resend what has had no answer for ``REQUEST_TIMEOUT_S`` (the client's request
        timeout); runs while a phase runs. Each resend paces itself in its own task, so one
        socket at its frame budget does not hold up the others."""
        while True:
            await trio.sleep(SWEEP_INTERVAL_S)
            now = trio.current_time()
            for msg_id in list(self.frames):
                if msg_id in self.acked:
                    continue
                if now - self.last_sent.get(msg_id, now) < REQUEST_TIMEOUT_S:
                    continue
                if msg_id not in self.pending and msg_id not in self.late_ids:
                    continue
                self.stats.timed_out += 1
                self.last_sent[msg_id] = now  # not again before its own timeout
                nursery.start_soon(self._resend, msg_id, 0.0)

    async def _reopen(
        self,
        ws: WebSocketConnection,
        role: str,
        routes: dict[str | None, PairLink],
        err: ConnectionClosed,
    ) -> WebSocketConnection | None:
        """Reconnect and resume as the protocol says, when the close asks for it."""
        code = getattr(err.reason, "code", None)
        if self.closing or code not in RESUMABLE_CLOSE_CODES or self.socket_nursery is None:
            return None
        # One socket can carry several chats: each link once (links are not hashable).
        links = list({id(link): link for link in routes.values()}.values())
        last_seq = {
            str(link.conversation_id): self.last_seq.get((role, link.index), 0) for link in links
        }
        try:
            with trio.fail_after(RECONNECT_TIMEOUT_S):
                fresh = await self.wire.reopen(self.socket_nursery, role, links, last_seq)
        except (OSError, trio.TooSlowError, ConnectionClosed, Exception):
            self.stats.reconnect_failures += 1
            return None
        if fresh is None:
            return None
        for link in links:
            if role == "visitor":
                link.visitor = fresh
            else:
                link.agent = fresh
        self.stats.reconnects += 1
        self.reconnects_total += 1
        self.socket_nursery.start_soon(self._resend_unacked, fresh, role, links)
        return fresh

    async def _on_other(self, ws: WebSocketConnection, parsed: Any) -> None:
        if isinstance(parsed, Acked):
            self.acked.add(parsed.request_id)
        elif isinstance(parsed, Reply):
            self.stats.replies += 1
            await self._send_frame(ws, parsed.text)
        elif isinstance(parsed, Rejected):
            self._on_rejected(parsed)
        else:
            self.stats.other_frames += 1

    async def read_idle(self, ws: WebSocketConnection) -> None:
        parse = self.wire.parse
        while True:
            try:
                text = await ws.get_message()
            except ConnectionClosed as err:
                self._on_closed(err)
                return
            for parsed in parse("visitor", text) if isinstance(text, str) else [None]:
                await self._on_other(ws, None if isinstance(parsed, Delivery) else parsed)

    def _reset(self) -> None:
        self.pending.clear()  # ``frames`` stays: an earlier phase's leftovers may still be resent
        self.stats = _PhaseStats(start=trio.current_time())

    async def _progress(self, stop: trio.Event) -> None:
        while not stop.is_set():
            s = self.stats
            emit(
                {
                    "event": "progress",
                    "sent": sum(s.sent.values()),
                    "delivered": sum(s.delivered.values()),
                    "heartbeats": s.heartbeats,
                }
            )
            with trio.move_on_after(PROGRESS_INTERVAL_S):
                await stop.wait()

    async def _drain(self, drain_s: float) -> float:
        """Wait for the messages still in flight while they keep arriving.

        Gives up after ``drain_s`` without a single delivery (or ``DRAIN_CAP_FACTOR`` times that
        in all); what is still in flight then is lost for this phase (and ``late`` if it turns
        up in a later one).
        """
        started = trio.current_time()
        with trio.move_on_after(drain_s * DRAIN_CAP_FACTOR):
            while self.pending or self.late_ids:
                before = len(self.pending) + len(self.late_ids)
                resent_before = self.stats.timed_out + self.stats.resent + self.stats.retried
                self._drained = trio.Event()
                with trio.move_on_after(drain_s):
                    await self._drained.wait()
                resent = self.stats.timed_out + self.stats.resent + self.stats.retried
                waiting = len(self.pending) + len(self.late_ids)
                if waiting and waiting >= before and resent == resent_before:
                    break
        return trio.current_time() - started

    async def open_loop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        rate = float(cmd["rate_msgs_s"])  # this child's share, both directions together
        duration_s = float(cmd["duration_s"])
        links = self.links
        per_direction = rate / (2 * max(1, len(links)))
        interval = 1.0 / per_direction if per_direction > 0 else duration_s + 1
        self._reset()
        start = self.stats.start
        end = start + duration_s
        rng = random.Random(1)

        async def sender(link: PairLink, direction: str, first: float) -> None:
            lag = self.stats.send_lag_s
            t = first
            while t < end:
                await trio.sleep_until(t)
                lag.append(trio.current_time() - t)
                await self.send(link, direction)
                t += interval

        def start_senders(nursery: trio.Nursery) -> None:
            for link in links:
                for direction in ("v2a", "a2v"):
                    nursery.start_soon(sender, link, direction, start + rng.random() * interval)

        return await self._run_phase(cmd, start_senders, end)

    async def closed_loop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        duration_s = float(cmd["duration_s"])
        window = int(cmd.get("window", 1))
        self._reset()
        end = self.stats.start + duration_s
        self.closed_loop_until = end

        async def kick(link: PairLink) -> None:
            for _ in range(window):
                await self.send(link, "v2a")

        def start_senders(nursery: trio.Nursery) -> None:
            for link in self.links:
                nursery.start_soon(kick, link)

        try:
            return await self._run_phase(cmd, start_senders, end)
        finally:
            self.closed_loop_until = 0.0

    async def _run_phase(
        self, cmd: dict[str, Any], start_senders: Callable[[trio.Nursery], None], end: float
    ) -> dict[str, Any]:
        cpu0 = cpu_seconds_self()
        t0 = trio.current_time()
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._progress, stop)
            if self.wire.acknowledges:
                nursery.start_soon(self._sweep, nursery)
            self.retry_nursery = nursery
            async with trio.open_nursery() as senders:
                start_senders(senders)
                await trio.sleep_until(end)
                self.closed_loop_until = 0.0
            sending_s = trio.current_time() - t0
            cpu_sending = cpu_seconds_self() - cpu0
            drain_s = await self._drain(float(cmd.get("drain_s", 5.0)))
            self.retry_nursery = None
            stop.set()
            nursery.cancel_scope.cancel()  # retries still sleeping: their messages count as lost
        s = self.stats
        lost = len(self.pending)
        acked_undelivered = sum(1 for msg_id in self.pending if msg_id in self.acked)
        self.late_ids.update(self.pending)  # still watched for: a late arrival is not a loss
        self.pending.clear()
        outstanding_acked = sum(1 for msg_id in self.late_ids if msg_id in self.acked)
        lag = sorted(s.send_lag_s)
        return {
            "event": "result",
            "sent": s.sent,
            "delivered": s.delivered,
            "lost": lost,
            # This phase's messages not delivered when it ended, by what the server had said.
            "acked_undelivered": acked_undelivered,
            "unacked": lost - acked_undelivered,
            # Every phase so far: still not delivered now (the run's final figures).
            "outstanding_acked": outstanding_acked,
            "outstanding_unacked": len(self.late_ids) - outstanding_acked,
            "given_up": s.given_up,
            "given_up_total": self.given_up_total,
            "resent": s.resent,
            "timed_out": s.timed_out,
            "resyncs": s.resyncs,
            "via_history": s.via_history,
            "duplicates": s.duplicates,
            "unexpected": s.unexpected,
            "seq_violations": s.seq_violations,
            "send_errors": s.send_errors,
            "closed_sockets": s.closed_sockets,
            "echoes": s.echoes,
            "other_frames": s.other_frames,
            "latency_us": {k: [round(v * 1e6) for v in vs] for k, vs in s.latency_s.items()},
            "bins": s.bins,
            "bin_s": BIN_S,
            "elapsed_s": sending_s,
            "drain_s": drain_s,
            "cpu_s": cpu_sending,
            "send_lag_p99_ms": round(lag[int(0.99 * (len(lag) - 1))] * 1000, 3) if lag else None,
            "paced": s.paced,
            "late_total": self.late_total,
            "reconnects": s.reconnects,
            "reconnect_failures": s.reconnect_failures,
            "retried": s.retried,
            "retried_codes": s.retried_codes,
            "replies": s.replies,
            "rejected": s.rejected,
            "close_reasons": s.close_reasons,
        }

    async def keep_alive(self, ws: WebSocketConnection, interval_s: float) -> None:
        """Send a heartbeat every ``interval_s`` for the socket's whole life (from its opening,
        not only during ``hold``: a long connect phase must not look like a dead client)."""
        frame = self.wire.heartbeat_frame()
        await trio.sleep(random.random() * interval_s)
        while not self.closing:
            try:
                if frame is None:
                    await ws.ping()
                else:
                    await self._pace(ws)
                    await ws.send_message(frame)
            except ConnectionClosed:
                self.stats.send_errors += 1
                return
            self.stats.heartbeats += 1
            await trio.sleep(interval_s)

    async def hold(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Keep the idle sockets open for ``duration_s`` (they heartbeat on their own) and count
        what happened meanwhile."""
        duration_s = float(cmd["duration_s"])
        self._reset()
        end = self.stats.start + duration_s
        cpu0 = cpu_seconds_self()

        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._progress, stop)
            await trio.sleep_until(end)
            stop.set()
        return {
            "event": "result",
            "heartbeats": self.stats.heartbeats,
            "send_errors": self.stats.send_errors,
            "closed_sockets": self.stats.closed_sockets,
            "open": len(self.idle) - self.closed_total,
            "closed_before": self.closed_total - self.stats.closed_sockets,
            "replies": self.stats.replies,
            "rejected": self.stats.rejected,
            "close_reasons": self.close_reasons_total,
            "elapsed_s": trio.current_time() - self.stats.start,
            "cpu_s": cpu_seconds_self() - cpu0,
        }
