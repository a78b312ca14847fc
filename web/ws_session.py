"""One WebSocket connection, from accept to close: the reader and the connection's deadlines.

``SocketSession.run`` owns a nursery with two tasks: the reader (decode a frame, ask the
engine, answer; requests of one connection one after another, so a client's messages keep
their order) and, after the hello/auth result, the pump (``web/ws_pump.py``: engine outbox →
socket, and the heartbeat pings). The first frame is ``web/ws_handshake.py``. Its deadlines
(auth, dead peer, slow consumer) are checked by the one timer task shared by all connections
(``SocketRegistry.watch``) through ``SocketSession.deadline_check``, which also queues the
heartbeat pings (one after ``ping_interval_s`` with nothing written: a pong to the client's own
ping does as much); the tick skips an idle connection until its next deadline or ping could be
due (``next_due``). A heartbeat is a frame
only: logout, revocation, password and role changes, bans and suspensions close the sockets
concerned at once (``LiveSocket.close``, found through the registry's indexes), and one shared
pass (``SocketRegistry.recheck_credentials``) re-reads each live agent credential once per
interval for changes made outside this process and for expiry.

A peer that stops reading makes socket writes block, and Hypercorn shields its writes from
cancellation: the pump (or a reply) then waits until the peer reads again or the TCP connection
dies. It only ever blocks that one connection: the engine delivers with ``send_nowait``. Overload
policy (``web/overload.py``): an outbox above ``ws_outbox_size`` is backed up; it is cut (1013)
only when no socket write has completed for ``ws_slow_consumer_grace_s`` (the peer does not read),
or when it reaches ``ws_outbox_max_size`` (the engine drops the subscriber). A backed-up outbox
that still drains means the process is behind: senders get ``overloaded`` instead. Either way the
peer gets the frames already in flight, then the close, and resumes.

Cancellation: the client disconnecting cancels the handler (Quart-Trio); ``LiveSocket.close``
cancels it too, after recording the close code. Either way the ``finally`` disconnects from the
engine and sends the close frame, shielded and bounded by ``CLEANUP_TIMEOUT_S``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from typing import Any

import trio
from quart import websocket

from engine import (
    AGENT_COMMANDS,
    VISITOR_COMMANDS,
    AddNote,
    Close,
    Connection,
    ConversationUpdate,
    EndChat,
    EngineError,
    InvalidMessage,
    LeaveOfflineMessage,
    MessageAck,
    SendMessage,
    SetStatus,
    SetTyping,
    StartChat,
    Tag,
    UpdateProfile,
    Whisper,
    check_frame,
    error_result,
    structure_command,
    unstorable,
    unstructure,
)
from storage import Visitor, Workspace
from web import strictjson
from web.auth import Caller
from web.protocol import (
    MAX_REQUEST_ID_CHARS,
    CloseCode,
    ErrorFrame,
    PongFrame,
    ResultFrame,
    WireError,
    encode,
)
from web.ratelimit import HitWindow
from web.services import Services
from web.sockets import CloseSocket, LiveSocket
from web.strictjson import JsonRejected
from web.tag_catalogue import UNKNOWN_TAG, uncatalogued, unknown_tag_message
from web.ws_handshake import first_frame, recheck_agent
from web.ws_pump import PING, HeldEcho, Pump

log = logging.getLogger("livechat.ws")

CLEANUP_TIMEOUT_S = 3.0
MESSAGE_COMMANDS = (SendMessage, AddNote, Whisper, StartChat, LeaveOfflineMessage)


class SocketSession:
    """One client connection, from accept to close (slotted: one per idle socket)."""

    __slots__ = (
        "auth_timeout_s",
        "backed_up_since",
        "caller",
        "conn",
        "dead_peer_timeout_s",
        "frames_window",
        "ip",
        "kind",
        "last_check",
        "last_heard",
        "last_write",
        "limited_since",
        "messages_window",
        "next_due",
        "next_ping",
        "nursery",
        "open_conversation",
        "opened_at",
        "outbox",
        "ping_interval_s",
        "protocol",
        "pump",
        "retry_at",
        "services",
        "session_cookie",
        "settings",
        "sock",
        "typing_window",
        "visitor",
        "workspace",
    )

    def __init__(self, services: Services, kind: str, workspace: Workspace | None, ip: str) -> None:
        settings = services.settings
        self.services = services
        self.settings = settings
        self.kind = kind
        self.workspace = workspace
        self.ip = ip
        self.sock = LiveSocket(
            id=secrets.token_urlsafe(12),
            kind=kind,
            workspace_id=workspace.id if workspace else "",
            ip=ip,
        )
        self.conn: Connection | None = None
        self.caller: Caller | None = None
        self.visitor: Visitor | None = None
        self.open_conversation: str | None = None
        self.protocol = 1  # negotiated in hello/auth (docs/protocol.md, "Versions")
        self.last_heard = self.opened_at = trio.current_time()
        self.last_write = self.opened_at  # last socket write that completed (drain progress)
        self.backed_up_since: float | None = None  # outbox above ws_outbox_size since then
        self.last_check = self.opened_at  # previous ``deadline_check``
        self.sock.check = self.deadline_check
        self.pump: Pump | None = None  # with the outbox, at the hello/auth
        self.outbox: trio.MemorySendChannel[Any] | None = None  # the engine's end, for pings
        ws_settings = settings.websocket
        self.auth_timeout_s = ws_settings.auth_timeout_s
        self.dead_peer_timeout_s = ws_settings.effective_dead_peer_timeout_s
        self.ping_interval_s = ws_settings.ping_interval_s
        self.next_ping = math.inf  # set when the outbox opens
        # No deadline can pass and no ping is due before this (trio clock): ``deadline_check``
        # returns at once until then, unless the pump is busy. Computed from ``last_heard``
        # as it was, so a later frame only makes it early, never late.
        self.next_due = self.opened_at + min(self.auth_timeout_s, self.dead_peer_timeout_s)
        self.limited_since: float | None = None  # start of a streak of ignored rate limits
        self.retry_at = 0.0  # when the last rate_limited error said to retry
        self.nursery: trio.Nursery | None = None
        # The connection's own rate windows, each created on first use (``_window``).
        self.frames_window: HitWindow | None = None
        self.messages_window: HitWindow | None = None  # agents only
        self.typing_window: HitWindow | None = None
        self.session_cookie: str | None = None  # the cookie an agent authenticated with

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        services = self.services
        await websocket.accept()
        services.sockets.add(self.sock)
        services.metrics.ws_connections_total[self.kind] += 1
        services.metrics.ws_connections_open[self.kind] += 1
        self.last_heard = self.opened_at = trio.current_time()
        log.info("ws open", extra={"connection_id": self.sock.id, "kind": self.kind})
        try:
            with trio.CancelScope() as scope:
                self.sock.cancel_scope = scope
                if self.sock.close_code is not None:
                    scope.cancel()
                try:
                    async with trio.open_nursery() as nursery:
                        self.nursery = nursery
                        await self._read_loop()
                except* CloseSocket as group:
                    first = group.exceptions[0]
                    assert isinstance(first, CloseSocket)
                    self.sock.close(first.code, first.reason)
                except* Exception:
                    log.exception("ws handler failed", extra={"connection_id": self.sock.id})
                    self.sock.close(CloseCode.INTERNAL, "internal error")
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        services = self.services
        code = self.sock.close_code or CloseCode.NORMAL
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLEANUP_TIMEOUT_S):
                if self.conn is not None:
                    try:
                        await services.gateway.disconnect(self.conn)
                    except Exception:
                        log.exception("engine disconnect failed")
            if self.pump is not None:
                self.pump.outbox.close()
            with trio.move_on_after(CLEANUP_TIMEOUT_S), contextlib.suppress(Exception):
                # Fails when the peer is already gone: nothing left to tell it.
                await websocket.close(int(code), self.sock.close_reason[:120])
        services.sockets.remove(self.sock)
        services.metrics.ws_connections_open[self.kind] -= 1
        services.metrics.ws_closes[int(code)] += 1
        log.info(
            "ws closed %s %s",
            int(code),
            self.sock.close_reason,
            extra={"connection_id": self.sock.id, "kind": self.kind},
        )

    # ------------------------------------------------------------ sending

    async def send_text(self, text: str) -> None:
        """One frame. The reader and the pump both send, with no lock of ours: Hypercorn
        encodes each message whole (wsproto, no await) and serialises the socket writes."""
        await websocket.send(text)
        self.last_write = trio.current_time()
        self.services.metrics.ws_frames_out[self.kind] += 1

    async def error(
        self,
        request_id: str | int | None,
        code: str,
        message: str,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.services.metrics.ws_errors[code] += 1
        frame = ErrorFrame(
            id=request_id, code=code, message=message, field=field, retry_after_s=retry_after_s
        )
        await self.send_text(encode(frame))
        if code == WireError.RATE_LIMITED and retry_after_s is not None:
            self._note_rate_limited(retry_after_s)

    def _note_rate_limited(self, retry_after_s: float) -> None:
        """End a connection that keeps ignoring ``retry_after_s`` (1008, "rate limits ignored").

        A rejection that arrives before the retry time announced by the previous one continues
        the client's streak; one that comes after it (the client waited as told) starts a new
        streak. A streak older than ``ws_rate_limited_close_after_s`` closes the socket.
        """
        now = trio.current_time()
        if self.limited_since is None or now >= self.retry_at:
            self.limited_since = now
        self.retry_at = max(self.retry_at, now + retry_after_s)
        limit_s = self.settings.websocket.rate_limited_close_after_s
        if limit_s > 0 and now - self.limited_since >= limit_s:
            self.services.metrics.rate_limited["closed_for_abuse"] += 1
            raise CloseSocket(CloseCode.POLICY, "rate limits ignored")

    # ------------------------------------------------------------ tasks

    def deadline_check(self, now: float) -> tuple[int, str] | None:
        """Auth deadline, dead peer, slow consumer: the close code to end with, or None; and
        the heartbeat ping, queued into the outbox when due.

        Called about once a second by the shared timer (``SocketRegistry.watch``), which then
        records the code and cancels the connection (``LiveSocket.close``). It never sends: a
        send can block (module docstring), and these checks must keep running while one does; a
        send stuck in Hypercorn's shielded write to a peer that does not read only delays the
        unwinding, not the recorded code. Before ``next_due``, with the pump parked on its
        empty outbox, there is nothing to check.
        """
        pump = self.pump
        if now < self.next_due and (pump is None or pump.parked):
            self.last_check = now
            self.backed_up_since = None
            self.sock.behind = False
            self.sock.check_at = self.next_due  # until then, or until the pump wakes
            return None
        verdict = self._check(now)
        next_due = self.last_heard + self.dead_peer_timeout_s
        if self.conn is None:
            next_due = min(next_due, self.opened_at + self.auth_timeout_s)
        self.next_due = min(next_due, self.next_ping)
        return verdict

    def _check(self, now: float) -> tuple[int, str] | None:
        settings = self.settings
        if self.conn is None and now - self.opened_at >= self.auth_timeout_s:
            return CloseCode.AUTH_TIMEOUT, "no hello/auth in time"
        if now - self.last_heard >= self.dead_peer_timeout_s:
            return CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"
        pump = self.pump
        if pump is None:
            return None
        if now >= self.next_ping and pump.parked and self.outbox is not None:
            # A busy pump writes frames anyway: its ping waits until it parks. A frame written
            # meanwhile (a pong to the client's own ping, a push) did what a ping does.
            if now - self.last_write >= self.ping_interval_s:
                with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                    self.outbox.send_nowait(PING)
                self.next_ping = now + self.ping_interval_s
            else:
                self.next_ping = self.last_write + self.ping_interval_s
        outbox = pump.outbox
        stats = outbox.statistics()
        if stats.open_send_channels == 0:
            # The engine dropped us (outbox at its hard cap) and the pump has not noticed yet.
            return CloseCode.TRY_AGAIN_LATER, "slow consumer, resume"
        previous_check, self.last_check = self.last_check, now
        self.sock.behind = False
        if stats.current_buffer_used < settings.engine.outbox_size:
            self.backed_up_since = None
            return None
        if self.backed_up_since is None:
            self.backed_up_since = now
            return None
        if (
            now - max(self.backed_up_since, self.last_write)
            >= settings.websocket.slow_consumer_grace_s
        ):
            return CloseCode.TRY_AGAIN_LATER, "slow consumer, resume"
        # Backed up since the last check and written to meanwhile: the peer reads, the process
        # is behind (the overload gate counts these; web/overload.py).
        self.sock.behind = self.last_write > previous_check
        return None

    def _on_update(self, push: ConversationUpdate) -> None:
        conv = push.conversation
        if (
            self.kind == "visitor"
            and conv.state == "closed"
            and conv.conversation_id == self.open_conversation
        ):
            self.open_conversation = None

    def _is_me(self, author_type: str, author_id: str | None) -> bool:
        if self.kind == "visitor":
            return (
                author_type == "visitor"
                and self.visitor is not None
                and (author_id == self.visitor.id)
            )
        return (
            author_type == "agent"
            and self.caller is not None
            and (author_id == self.caller.agent.id)
        )

    # ------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        max_bytes = self.settings.websocket.max_message_bytes
        while True:
            data = await websocket.receive()
            self.last_heard = trio.current_time()
            self.services.metrics.ws_frames_in[self.kind] += 1
            if isinstance(data, bytes):
                await self.error(None, WireError.BINARY_FRAME, "frames must be text (JSON)")
                continue
            if len(data) * 4 > max_bytes and len(data.encode("utf-8", "surrogatepass")) > max_bytes:
                await self.error(
                    None, WireError.FRAME_TOO_LARGE, f"frames are limited to {max_bytes} bytes"
                )
                continue
            if self.frames_window is None:
                self.frames_window = _window(self.settings.rate_limits.frames_per_10s)
            wait = self.frames_window.hit()
            if wait:
                self.services.metrics.rate_limited["frames"] += 1
                await self.error(
                    None, WireError.RATE_LIMITED, "too many frames", retry_after_s=wait
                )
                continue
            await self._handle_text(data)

    async def _handle_text(self, text: str) -> None:
        try:
            frame = strictjson.loads(text)
        except JsonRejected as err:
            message = f"the frame is not accepted JSON: {err.message}"
            await self.error(None, WireError.INVALID_JSON, message, err.field)
            return
        if not isinstance(frame, dict):
            await self.error(None, WireError.NOT_AN_OBJECT, "a frame is a JSON object")
            return
        try:  # the one edge check: nothing unstorable reaches the engine or a group commit
            check_frame(frame)
        except InvalidMessage as err:
            rid = frame.get("id")
            usable = _valid_id(rid) and unstorable(rid) is None
            await self.error(rid if usable else None, err.code, str(err), err.field)
            return
        kind = frame.get("type")
        if kind == "pong":
            return
        if kind == "ping":
            rid = frame.get("id")
            await self.send_text(encode(PongFrame(id=rid if _valid_id(rid) else None)))
            return
        if "id" not in frame:
            await self.error(None, WireError.MISSING_FIELD, "requests need an id", field="id")
            return
        rid = frame["id"]
        if not _valid_id(rid):
            await self.error(
                None,
                WireError.INVALID_FIELD,
                f"id is a string (1-{MAX_REQUEST_ID_CHARS} characters) or an integer",
                field="id",
            )
            return
        first = "hello" if self.kind == "visitor" else "auth"
        if self.conn is None:
            if kind != first:
                await self.error(
                    rid, WireError.HELLO_REQUIRED, f"the first request must be {first!r}"
                )
                return
            await first_frame(self, rid, frame)
            return
        if kind in ("hello", "auth"):
            await self.error(rid, WireError.ALREADY_AUTHENTICATED, "already authenticated")
            return
        body = {k: v for k, v in frame.items() if k != "id"}
        try:
            command = structure_command(body)
        except InvalidMessage as err:
            await self.error(rid, err.code, str(err), err.field)
            return
        allowed = VISITOR_COMMANDS if self.kind == "visitor" else AGENT_COMMANDS
        if type(command) not in allowed:
            await self.error(
                rid, WireError.FORBIDDEN, f"{self.kind}s cannot send {kind!r}", field="type"
            )
            return
        if await self._uncatalogued_tags(rid, command):
            return
        if await self._rate_limited(rid, command):
            return
        client_msg_id = getattr(command, "client_msg_id", None)
        if isinstance(client_msg_id, str) and self.pump is not None:
            self.pump.remember(client_msg_id, rid)
        await self._request(rid, command)

    async def _uncatalogued_tags(self, rid: str | int, command: Any) -> bool:
        """Refuse (``unknown_tag``) tags outside a non-empty catalogue; read fresh, so a
        catalogue changed while the socket is open applies at once."""
        added = command.add if isinstance(command, Tag) else None
        if isinstance(command, Close):
            added = command.tags
        if not added or self.workspace is None:
            return False
        current = await self.services.storage.get_workspace(self.workspace.id)
        missing = uncatalogued(current.settings if current else {}, added)
        if not missing:
            return False
        field = "add" if isinstance(command, Tag) else "tags"
        await self.error(rid, UNKNOWN_TAG, unknown_tag_message(missing), field=field)
        return True

    async def _rate_limited(self, rid: str | int, command: Any) -> bool:
        metrics = self.services.metrics
        gate = self.services.overload
        if gate.shedding and isinstance(command, MESSAGE_COMMANDS):
            # Push back on senders before receivers fall behind (web/overload.py).
            await self.error(
                rid,
                WireError.OVERLOADED,
                "the server is busy; resend with the same client_msg_id after retry_after_s",
                retry_after_s=gate.retry_after(),
            )
            return True
        wait = 0.0
        what = ""
        if isinstance(command, SetTyping):
            if self.typing_window is None:
                self.typing_window = _window(self.settings.rate_limits.typing_per_10s)
            wait = self.typing_window.hit()
            what = "typing"
        elif isinstance(command, UpdateProfile) and self.visitor is not None:
            # Each update writes the visitor row and is pushed to the workspace's agents.
            wait = self.services.profile_updates.hit(self.visitor.id)
            what = "profile_updates"
        elif isinstance(command, MESSAGE_COMMANDS):
            # One window per key: an agent's connection here; a visitor's messages are
            # limited per visitor (all its tabs) by the engine's token bucket, and per IP here.
            if self.kind == "agent":
                if self.messages_window is None:
                    self.messages_window = _window(self.settings.rate_limits.messages_per_10s)
                wait = self.messages_window.hit()
                what = "messages"
            if not wait:
                wait, what = self.services.ip_messages.hit(self.ip), "ip_messages"
            new_conversation = isinstance(command, LeaveOfflineMessage) or (
                isinstance(command, SendMessage)
                and self.kind == "visitor"
                and command.conversation_id is None
                and self.open_conversation is None
            )
            if not wait and new_conversation:
                wait = self.services.ip_new_conversations.hit(self.ip)
                what = "new_conversations"
        if not wait:
            return False
        metrics.rate_limited[what] += 1
        await self.error(
            rid, WireError.RATE_LIMITED, f"rate limit ({what}); slow down", retry_after_s=wait
        )
        return True

    async def _request(self, rid: str | int, command: Any) -> None:
        client_msg_id = getattr(command, "client_msg_id", None)
        pump = self.pump
        if self.protocol < 2 or not isinstance(client_msg_id, str) or pump is None:
            await self._ask(rid, command, None)
            return
        held = pump.hold(client_msg_id)
        try:
            await self._ask(rid, command, held)
        finally:
            pump.release(held)

    async def _ask(self, rid: str | int, command: Any, held: HeldEcho | None) -> None:
        assert self.conn is not None
        try:
            # One deadline per request, set where the request enters the engine
            # (``EngineConfig.ask_timeout_s``; past it: ``Overloaded``, code "overloaded").
            result = await self.services.gateway.request(self.conn, command)
        except trio.TooSlowError:  # not expected: the engine turns its deadline into Overloaded
            await self.error(rid, "overloaded", "the server did not answer in time")
            return
        except EngineError as err:
            error = error_result(err)
            await self.error(rid, error.code, error.message, error.field, error.retry_after_s)
            return
        if (
            isinstance(command, SetStatus)
            and self.caller is not None
            and self.services.webhooks is not None
        ):
            agent = self.caller.agent
            self.services.webhooks.signal(
                agent.workspace_id,
                "agent.status",
                {
                    "agent_id": agent.id,
                    "display_name": agent.display_name,
                    "status": command.status,
                },
            )
        if self.kind == "visitor":
            if isinstance(result, MessageAck) and isinstance(command, SendMessage):
                self.open_conversation = result.conversation_id
            elif isinstance(command, EndChat):
                self.open_conversation = None
        data = unstructure(result)
        if held is not None and isinstance(result, MessageAck) and not result.duplicate:
            # Protocol 2: the result carries the event (no echo frame to this socket). The
            # engine fans out as it answers, so the pump normally has it already.
            assert self.pump is not None
            event = await self.pump.take(held)
            if event is not None:
                data["event"] = event
        await self.send_text(encode(ResultFrame(id=rid, result=data)))

    # ------------------------------------------------------------ first frame (ws_handshake)

    def open_outbox(self) -> trio.MemorySendChannel[Any]:
        """Room up to the hard cap; above ``ws_outbox_size`` the outbox only counts as backed up."""
        send, receive = trio.open_memory_channel[Any](self.settings.websocket.outbox_max_size)
        self.pump = Pump(
            receive,
            send=self.send_text,
            is_me=self._is_me,
            on_update=self._on_update,
            on_wake=self.sock.wake,
        )
        self.outbox = send
        self.next_ping = trio.current_time() + self.ping_interval_s
        self.next_due = min(self.next_due, self.next_ping)
        return send

    def start_pump(self) -> None:
        assert self.nursery is not None and self.pump is not None
        self.pump.batch = self.protocol >= 3
        self.nursery.start_soon(self.pump.run)

    async def recheck(self) -> tuple[int, str] | None:
        return await recheck_agent(self)


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**53) < value < 2**53
    return isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS


def _window(limit: int) -> HitWindow:
    """A connection's own window: ``limit`` events per 10 s."""
    return HitWindow(limit, 10.0, clock=trio.current_time)
