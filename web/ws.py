"""The WebSocket bridge: ``/ws/v1/visitor`` and ``/ws/v1/agent`` (docs/protocol.md).

One ``SocketSession`` per connection, owning a nursery with three tasks: the reader (decode a
frame, ask the engine, answer), the pump (engine outbox → socket) and the pinger (heartbeats,
revalidation of the credential). Its deadlines (auth, dead peer, slow consumer) are checked by
the one timer task shared by all connections (``SocketRegistry.watch``), through
``SocketSession._deadline_check``.

A peer that stops reading makes socket writes block, and Hypercorn shields its writes from
cancellation: the pump (or a reply) then waits until the peer reads again or the TCP connection
dies. It only ever blocks that one connection: the engine delivers with ``send_nowait``. Overload
policy (``web/overload.py``): an outbox above ``ws_outbox_size`` is backed up; it is cut (1013)
only when no socket write has completed for ``ws_slow_consumer_grace_s`` (the peer does not read),
or when it reaches ``ws_outbox_max_size`` (the engine drops the subscriber). A backed-up outbox
that still drains means the process is behind: senders get ``overloaded`` instead. Either way the
peer gets the frames already in flight, then the close, and resumes. Requests of one
connection are handled one after another, so a client's messages keep their order.

Cancellation: the client disconnecting cancels the handler (Quart-Trio); ``LiveSocket.close``
cancels it too, after recording the close code. Either way the ``finally`` disconnects from the
engine and sends the close frame, shielded and bounded by ``CLEANUP_TIMEOUT_S``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any

import attrs
import trio
from quart import Blueprint, Response, websocket

from engine import (
    AGENT_COMMANDS,
    VISITOR_COMMANDS,
    AddNote,
    AgentPrincipal,
    Close,
    Connection,
    ConnectionMeta,
    ConversationUpdate,
    EndChat,
    EngineError,
    EventPush,
    InvalidIdentity,
    InvalidMessage,
    LeaveOfflineMessage,
    MessageAck,
    SendMessage,
    SessionClosed,
    SetStatus,
    SetTyping,
    StartChat,
    Tag,
    UpdateProfile,
    VisitorIdentity,
    VisitorPrincipal,
    Whisper,
    check_frame,
    error_result,
    read_hours,
    structure_command,
    unstorable,
    unstructure,
)
from storage import Visitor, Workspace, WorkspaceStatus
from web import strictjson
from web.api_admin import read_widget_settings
from web.api_public import public_departments
from web.auth import (
    Caller,
    client_ip,
    session_caller,
    session_cookie_name,
    token_caller,
)
from web.errors import ApiError
from web.mail import offline_text
from web.origins import normalize_origin, origin_allowed
from web.protocol import (
    MAX_REQUEST_ID_CHARS,
    AuthResult,
    CloseCode,
    ErrorFrame,
    Hello,
    HelloResult,
    PingFrame,
    PongFrame,
    ResultFrame,
    WireError,
    encode,
    encode_dict,
)
from web.protocol import Auth as AuthFrame
from web.ratelimit import SlidingWindow
from web.schemas import WidgetConfig
from web.services import SERVICES_KEY, Services
from web.sockets import LiveSocket
from web.strictjson import JsonRejected
from web.tag_catalogue import UNKNOWN_TAG, uncatalogued, unknown_tag_message
from web.wire import api_converter, describe

log = logging.getLogger("livechat.ws")
ws = Blueprint("ws", __name__)

CLEANUP_TIMEOUT_S = 3.0
ECHO_MEMORY = 256  # client_msg_id -> request id, for pushes caused by a request
MAX_RESUME_ENTRIES = 100
MESSAGE_COMMANDS = (SendMessage, AddNote, Whisper, StartChat, LeaveOfflineMessage)


def _services() -> Services | None:
    from quart import current_app

    services: Services | None = current_app.config.get(SERVICES_KEY)
    return services


def _refuse(services: Services | None, status: int, reason: str) -> Response:
    if services is not None:
        services.metrics.ws_refused[reason] += 1
    body = json.dumps({"error": {"code": reason, "message": reason.replace("_", " ")}})
    return Response(body, status=status, content_type="application/json")


@ws.websocket("/ws/v1/visitor")
async def visitor_socket() -> Response | None:
    services = _services()
    if services is None or services.draining:
        return _refuse(services, 503, "not_ready")
    key = websocket.args.get("key", "")
    workspace = (
        await services.storage.get_workspace_by_widget_key(key) if 0 < len(key) <= 200 else None
    )
    if workspace is None or workspace.status is not WorkspaceStatus.ACTIVE:
        return _refuse(services, 404, "unknown_widget_key")
    if not origin_allowed(websocket.headers.get("Origin"), workspace, services.settings):
        return _refuse(services, 403, "origin_refused")
    ip = _ip(services)
    if await services.storage.is_banned(workspace.id, visitor_id=None, ip=ip):
        return _refuse(services, 403, "banned")
    if not services.connection_cap.acquire(ip):
        services.metrics.rate_limited["connections_per_ip"] += 1
        return _refuse(services, 429, "too_many_connections")
    try:
        await SocketSession(services, "visitor", workspace, ip).run()
    finally:
        services.connection_cap.release(ip)
    return None


@ws.websocket("/ws/v1/agent")
async def agent_socket() -> Response | None:
    services = _services()
    if services is None or services.draining:
        return _refuse(services, 503, "not_ready")
    origin = websocket.headers.get("Origin")
    if origin is not None and not _same_site_origin(services, origin):
        return _refuse(services, 403, "origin_refused")
    ip = _ip(services)
    if not services.connection_cap.acquire(ip):
        services.metrics.rate_limited["connections_per_ip"] += 1
        return _refuse(services, 429, "too_many_connections")
    try:
        await SocketSession(services, "agent", None, ip).run()
    finally:
        services.connection_cap.release(ip)
    return None


def _ip(services: Services) -> str:
    return client_ip(
        services.settings,
        remote_addr=websocket.remote_addr,
        forwarded=websocket.headers.get("X-Forwarded-For"),
    )


def _same_site_origin(services: Services, origin: str) -> bool:
    """The console is served by this server: its origin, or one the operator listed."""
    norm = normalize_origin(origin)
    if norm is None:
        return False
    own = {normalize_origin(services.settings.base_url)}
    own |= {normalize_origin(o) for o in services.settings.allowed_origins}
    host = websocket.headers.get("Host")
    if host:
        scheme = "https" if websocket.scheme in ("wss", "https") else "http"
        own.add(normalize_origin(f"{scheme}://{host}"))
    return norm in own


class _Closing(Exception):
    """Raised inside the session to end it with a close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@attrs.define(eq=False)
class _Limits:
    frames: SlidingWindow
    messages: SlidingWindow
    typing: SlidingWindow


class SocketSession:
    """One client connection, from accept to close."""

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
        self.send_lock = trio.Lock()
        self.last_heard = self.opened_at = trio.current_time()
        self.last_write = self.opened_at  # last socket write that completed (drain progress)
        self.backed_up_since: float | None = None  # outbox above ws_outbox_size since then
        self.last_check = self.opened_at  # previous ``_deadline_check``
        self.sock.check = self._deadline_check
        self.echo: OrderedDict[str, str | int] = OrderedDict()
        self.outbox: trio.MemoryReceiveChannel[Any] | None = None
        self.limited_since: float | None = None  # start of a streak of ignored rate limits
        self.retry_at = 0.0  # when the last rate_limited error said to retry
        self.nursery: trio.Nursery | None = None
        self.limits = _Limits(
            frames=SlidingWindow(settings.rate_frames_per_10s, 10.0, clock=trio.current_time),
            messages=SlidingWindow(settings.rate_messages_per_10s, 10.0, clock=trio.current_time),
            typing=SlidingWindow(settings.rate_typing_per_10s, 10.0, clock=trio.current_time),
        )

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
                        nursery.start_soon(self._pinger)
                        await self._read_loop()
                except* _Closing as group:
                    first = group.exceptions[0]
                    assert isinstance(first, _Closing)
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
            if self.outbox is not None:
                self.outbox.close()
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

    async def _send_text(self, text: str) -> None:
        async with self.send_lock:
            await websocket.send(text)
        self.last_write = trio.current_time()
        self.services.metrics.ws_frames_out[self.kind] += 1

    async def _error(
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
        await self._send_text(encode(frame))
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
        limit_s = self.settings.ws_rate_limited_close_after_s
        if limit_s > 0 and now - self.limited_since >= limit_s:
            self.services.metrics.rate_limited["closed_for_abuse"] += 1
            raise _Closing(CloseCode.POLICY, "rate limits ignored")

    # ------------------------------------------------------------ tasks

    def _deadline_check(self, now: float) -> tuple[int, str] | None:
        """Auth deadline, dead peer, slow consumer: the close code to end with, or None.

        Called about once a second by the shared timer (``SocketRegistry.watch``), which then
        records the code and cancels the connection (``LiveSocket.close``). It never sends: a
        send can block (see ``_pinger``), and these checks must keep running while one does;
        a send stuck in Hypercorn's shielded write to a peer that does not read only delays the
        unwinding, not the recorded code.
        """
        settings = self.settings
        if self.conn is None and now - self.opened_at >= settings.ws_auth_timeout_s:
            return CloseCode.AUTH_TIMEOUT, "no hello/auth in time"
        if now - self.last_heard >= settings.dead_peer_timeout_s:
            return CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout"
        outbox = self.outbox
        if outbox is None:
            return None
        stats = outbox.statistics()
        if stats.open_send_channels == 0:
            # The engine dropped us (outbox at its hard cap) and the pump has not noticed yet.
            return CloseCode.TRY_AGAIN_LATER, "slow consumer, resume"
        previous_check, self.last_check = self.last_check, now
        self.sock.behind = False
        if stats.current_buffer_used < settings.ws_outbox_size:
            self.backed_up_since = None
            return None
        if self.backed_up_since is None:
            self.backed_up_since = now
            return None
        if now - max(self.backed_up_since, self.last_write) >= settings.ws_slow_consumer_grace_s:
            return CloseCode.TRY_AGAIN_LATER, "slow consumer, resume"
        # Backed up since the last check and written to meanwhile: the peer reads, the process
        # is behind (the overload gate counts these; web/overload.py).
        self.sock.behind = self.last_write > previous_check
        return None

    async def _pinger(self) -> None:
        """Heartbeat pings and periodic re-validation of the credential.

        A send to a peer that stops reading blocks (Hypercorn shields its socket writes), so
        this runs apart from the deadline checks (``_deadline_check``).
        """
        while True:
            await trio.sleep(self.settings.ws_ping_interval_s)
            await self._send_text(encode(PingFrame()))
            await self._revalidate()

    async def _revalidate(self) -> None:
        """The credential may have ended since the upgrade (logout elsewhere, ban, revoke)."""
        storage = self.services.storage
        if self.caller is not None:
            try:
                if self.caller.session is not None:
                    fresh = await session_caller(self.services, self._session_cookie or "")
                    self.caller = attrs.evolve(self.caller, agent=fresh.agent)
                elif self.caller.token is not None:
                    await self._token_check()
            except ApiError as err:
                raise _Closing(CloseCode.POLICY, err.message) from None
        elif (
            self.visitor is not None
            and self.workspace is not None
            and await storage.is_banned(self.workspace.id, visitor_id=self.visitor.id, ip=self.ip)
        ):
            raise _Closing(CloseCode.POLICY, "banned")

    _session_cookie: str | None = None

    async def _token_check(self) -> None:
        assert self.caller is not None and self.caller.token is not None
        record = await self.services.storage.find_api_token(self.caller.token.token_hash)
        if record is None or record.revoked_at is not None:
            raise _Closing(CloseCode.POLICY, "token revoked")

    async def _pump(self, outbox: trio.MemoryReceiveChannel[Any]) -> None:
        """Engine pushes to the socket, in order; the end of the outbox ends the connection.

        Started after the hello/auth result (which carries the welcome) was sent, so replayed
        and live pushes always follow it.
        """
        async for push in outbox:
            batch = [push]
            while True:
                try:
                    batch.append(outbox.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for item in batch:
                await self._forward(item)
        raise _Closing(CloseCode.TRY_AGAIN_LATER, "slow consumer, resume")

    async def _forward(self, push: Any) -> None:
        if isinstance(push, SessionClosed):
            raise _Closing(CloseCode.POLICY, push.reason)
        text = _encode_push(push)
        if isinstance(push, EventPush):
            event = push.event
            if event.client_msg_id is not None and self._is_me(event.author_type, event.author_id):
                request_id = self.echo.get(event.client_msg_id)
                if request_id is not None:
                    # The echo to the sender carries its request id as the last key.
                    text = f'{text[:-1]},"id":{json.dumps(request_id, ensure_ascii=False)}}}'
        elif isinstance(push, ConversationUpdate) and self.kind == "visitor":
            conv = push.conversation
            if conv.state == "closed" and conv.conversation_id == self.open_conversation:
                self.open_conversation = None
        await self._send_text(text)

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
        max_bytes = self.settings.ws_max_message_bytes
        while True:
            data = await websocket.receive()
            self.last_heard = trio.current_time()
            self.services.metrics.ws_frames_in[self.kind] += 1
            if isinstance(data, bytes):
                await self._error(None, WireError.BINARY_FRAME, "frames must be text (JSON)")
                continue
            if len(data) * 4 > max_bytes and len(data.encode("utf-8", "surrogatepass")) > max_bytes:
                await self._error(
                    None, WireError.FRAME_TOO_LARGE, f"frames are limited to {max_bytes} bytes"
                )
                continue
            wait = self.limits.frames.hit("all")
            if wait:
                self.services.metrics.rate_limited["frames"] += 1
                await self._error(
                    None, WireError.RATE_LIMITED, "too many frames", retry_after_s=wait
                )
                continue
            await self._handle_text(data)

    async def _handle_text(self, text: str) -> None:
        try:
            frame = strictjson.loads(text)
        except JsonRejected as err:
            message = f"the frame is not accepted JSON: {err.message}"
            await self._error(None, WireError.INVALID_JSON, message, err.field)
            return
        if not isinstance(frame, dict):
            await self._error(None, WireError.NOT_AN_OBJECT, "a frame is a JSON object")
            return
        try:  # the one edge check: nothing unstorable reaches the engine or a group commit
            check_frame(frame)
        except InvalidMessage as err:
            rid = frame.get("id")
            usable = _valid_id(rid) and unstorable(rid) is None
            await self._error(rid if usable else None, err.code, str(err), err.field)
            return
        kind = frame.get("type")
        if kind == "pong":
            return
        if kind == "ping":
            rid = frame.get("id")
            await self._send_text(encode(PongFrame(id=rid if _valid_id(rid) else None)))
            return
        if "id" not in frame:
            await self._error(None, WireError.MISSING_FIELD, "requests need an id", field="id")
            return
        rid = frame["id"]
        if not _valid_id(rid):
            await self._error(
                None,
                WireError.INVALID_FIELD,
                f"id is a string (1-{MAX_REQUEST_ID_CHARS} characters) or an integer",
                field="id",
            )
            return
        first = "hello" if self.kind == "visitor" else "auth"
        if self.conn is None:
            if kind != first:
                await self._error(
                    rid, WireError.HELLO_REQUIRED, f"the first request must be {first!r}"
                )
                return
            await self._authenticate(rid, frame)
            return
        if kind in ("hello", "auth"):
            await self._error(rid, WireError.ALREADY_AUTHENTICATED, "already authenticated")
            return
        body = {k: v for k, v in frame.items() if k != "id"}
        try:
            command = structure_command(body)
        except InvalidMessage as err:
            await self._error(rid, err.code, str(err), err.field)
            return
        allowed = VISITOR_COMMANDS if self.kind == "visitor" else AGENT_COMMANDS
        if type(command) not in allowed:
            await self._error(
                rid, WireError.FORBIDDEN, f"{self.kind}s cannot send {kind!r}", field="type"
            )
            return
        if await self._uncatalogued_tags(rid, command):
            return
        if await self._rate_limited(rid, command):
            return
        client_msg_id = getattr(command, "client_msg_id", None)
        if isinstance(client_msg_id, str):
            self.echo[client_msg_id] = rid
            self.echo.move_to_end(client_msg_id)
            while len(self.echo) > ECHO_MEMORY:
                self.echo.popitem(last=False)
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
        await self._error(rid, UNKNOWN_TAG, unknown_tag_message(missing), field=field)
        return True

    async def _rate_limited(self, rid: str | int, command: Any) -> bool:
        metrics = self.services.metrics
        gate = self.services.overload
        if gate.shedding and isinstance(command, MESSAGE_COMMANDS):
            # Push back on senders before receivers fall behind (web/overload.py).
            await self._error(
                rid,
                WireError.OVERLOADED,
                "the server is busy; resend with the same client_msg_id after retry_after_s",
                retry_after_s=gate.retry_after(),
            )
            return True
        wait = 0.0
        what = ""
        if isinstance(command, SetTyping):
            wait, what = self.limits.typing.hit("all"), "typing"
        elif isinstance(command, UpdateProfile) and self.visitor is not None:
            # Each update writes the visitor row and is pushed to the workspace's agents.
            wait = self.services.profile_updates.hit(self.visitor.id)
            what = "profile_updates"
        elif isinstance(command, MESSAGE_COMMANDS):
            wait, what = self.limits.messages.hit("all"), "messages"
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
        await self._error(
            rid, WireError.RATE_LIMITED, f"rate limit ({what}); slow down", retry_after_s=wait
        )
        return True

    async def _request(self, rid: str | int, command: Any) -> None:
        assert self.conn is not None
        try:
            # One deadline per request, set where the request enters the engine
            # (``EngineConfig.ask_timeout_s``; past it: ``Overloaded``, code "overloaded").
            result = await self.services.gateway.request(self.conn, command)
        except trio.TooSlowError:  # not expected: the engine turns its deadline into Overloaded
            await self._error(rid, "overloaded", "the server did not answer in time")
            return
        except EngineError as err:
            error = error_result(err)
            await self._error(rid, error.code, error.message, error.field, error.retry_after_s)
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
        await self._send_text(encode(ResultFrame(id=rid, result=unstructure(result))))

    # ------------------------------------------------------------ first frame

    async def _authenticate(self, rid: str | int, frame: dict[str, Any]) -> None:
        body = {k: v for k, v in frame.items() if k not in ("id", "type")}
        cls: type[Any] = Hello if self.kind == "visitor" else AuthFrame
        try:
            parsed = api_converter.structure(body, cls)
        except Exception as err:
            code, field, message = describe(err, "")
            code = "invalid_field" if code in ("wrong_type", "invalid_value") else code
            await self._error(rid, code, message, field.lstrip(".") or None)
            return
        resume = parsed.resume
        if len(resume) > MAX_RESUME_ENTRIES or not all(
            isinstance(k, str) and len(k) <= 128 and type(v) is int and v >= 0
            for k, v in resume.items()
        ):
            await self._error(
                rid,
                WireError.INVALID_FIELD,
                f"resume maps up to {MAX_RESUME_ENTRIES} conversation ids to sequence numbers",
                "resume",
            )
            return
        if self.kind == "visitor":
            await self._hello(rid, parsed)
        else:
            await self._auth(rid, parsed)

    async def _hello(self, rid: str | int, hello: Hello) -> None:
        assert self.workspace is not None
        storage = self.services.storage
        ws_id = self.workspace.id
        user_agent = websocket.headers.get("User-Agent", "")[:512] or None
        identity = hello.identity
        try:
            found = await self.services.engine.identify_visitor(
                self.workspace,
                token=hello.token,
                identity=VisitorIdentity(user_id=identity.user_id, signature=identity.signature)
                if identity is not None
                else None,
                user_agent=user_agent,
                ip=self.ip,
            )
        except InvalidIdentity as err:
            await self._error(rid, err.code, str(err), err.field)
            return
        visitor, token = found.visitor, found.token
        identified, first_time = found.identified, found.first_time
        if await storage.is_banned(ws_id, visitor_id=visitor.id, ip=self.ip):
            raise _Closing(CloseCode.POLICY, "banned")
        self.visitor = visitor
        self.sock.visitor_id = visitor.id
        if identified and self.services.webhooks is not None:
            self.services.webhooks.signal(
                ws_id,
                "visitor.identified",
                {
                    "visitor_id": visitor.id,
                    "external_id": visitor.external_id,
                    "first_time": first_time,
                },
            )
        page = hello.page
        meta = ConnectionMeta(
            ip=self.ip,
            user_agent=user_agent,
            page_url=page.url[:2048] if page else None,
            page_title=page.title[:512] if page and page.title else None,
            page_referrer=page.referrer[:2048] if page and page.referrer else None,
        )
        principal = VisitorPrincipal(workspace_id=ws_id, visitor_id=visitor.id)
        conn = await self._connect(principal, hello.resume, meta)
        welcome = _welcome(conn)
        conversation = welcome.get("conversation")
        if isinstance(conversation, dict) and conversation.get("state") != "closed":
            self.open_conversation = conversation.get("conversation_id")
        widget = read_widget_settings(self.workspace)
        widget_config = WidgetConfig(
            workspace_name=self.workspace.name,
            color=widget.color,
            title=widget.title,
            greeting=widget.greeting,
            position=widget.position,
            pre_chat_enabled=widget.pre_chat_enabled,
            pre_chat_fields=widget.pre_chat_fields,
            offline_form_enabled=widget.offline_form_enabled,
            offline_message=offline_text(
                widget.offline_message, mail_enabled=self.services.mailer.enabled
            ),
            sneak_peek=widget.sneak_peek,
            online=bool(welcome.get("agents_available", False)),
            mail_enabled=self.services.mailer.enabled,
            departments=await public_departments(self.services.storage, self.workspace.id),
            open=read_hours(self.workspace.settings).open_for(None, time.time()),
        )
        result = HelloResult(
            visitor_id=visitor.id,
            visitor_token=token,
            connection_id=self.sock.id,
            welcome=welcome,
            widget=api_converter.unstructure(widget_config),
            heartbeat_interval_s=self.settings.ws_ping_interval_s,
        )
        await self._send_text(encode(ResultFrame(id=rid, result=api_converter.unstructure(result))))
        self._start_pump()

    async def _auth(self, rid: str | int, frame: AuthFrame) -> None:
        try:
            if frame.token:
                caller = await token_caller(self.services, frame.token)
                assert caller.token is not None
                if not {"admin", "agent"} & set(caller.token.scopes):
                    raise _AuthFailed("the token's scopes do not allow the console socket")
            else:
                cookie = websocket.cookies.get(session_cookie_name(self.services.settings))
                if not cookie:
                    raise _AuthFailed("send an API token or log in first (cookie)")
                caller = await session_caller(self.services, cookie)
                self._session_cookie = cookie
        except (ApiError, _AuthFailed) as err:
            message = err.message if isinstance(err, ApiError) else str(err)
            await self._error(rid, WireError.AUTH_FAILED, message)
            raise _Closing(CloseCode.POLICY, "authentication failed") from None
        limit = self.settings.ws_max_sockets_per_agent
        live = self.services.sockets.of_agent(caller.workspace.id, caller.agent.id)
        if limit and len(live) >= limit:
            # Counted and claimed (``sock.agent_id`` below) with no await in between, so
            # concurrent upgrades of one account cannot all pass the check.
            self.services.metrics.ws_refused["too_many_sockets"] += 1
            await self._error(
                rid,
                WireError.TOO_MANY_SOCKETS,
                f"this account already has {limit} live sockets; close a console tab",
            )
            raise _Closing(CloseCode.TOO_MANY_SOCKETS, "too many sockets for this account")
        self.caller = caller
        self.workspace = caller.workspace
        self.sock.workspace_id = caller.workspace.id
        self.sock.agent_id = caller.agent.id
        self.sock.session_hash = caller.session.id_hash if caller.session else None
        self.sock.token_id = caller.token.id if caller.token else None
        principal = AgentPrincipal(
            workspace_id=caller.workspace.id,
            agent_id=caller.agent.id,
            role=caller.agent.role,
            display_name=caller.agent.display_name,
        )
        meta = ConnectionMeta(
            ip=self.ip, user_agent=websocket.headers.get("User-Agent", "")[:512] or None
        )
        conn = await self._connect(principal, frame.resume, meta)
        result = AuthResult(
            agent_id=caller.agent.id,
            workspace_id=caller.workspace.id,
            role=caller.agent.role.value,
            display_name=caller.agent.display_name,
            connection_id=self.sock.id,
            welcome=_welcome(conn),
            heartbeat_interval_s=self.settings.ws_ping_interval_s,
        )
        await self._send_text(encode(ResultFrame(id=rid, result=api_converter.unstructure(result))))
        self._start_pump()

    async def _connect(self, principal: Any, resume: Any, meta: ConnectionMeta) -> Connection:
        # Room up to the hard cap; above ``ws_outbox_size`` the outbox only counts as backed up.
        send, receive = trio.open_memory_channel[Any](self.settings.ws_outbox_max_size)
        self.outbox = receive
        try:
            conn = await self.services.gateway.connect(
                principal, send, connection_id=self.sock.id, resume=dict(resume), meta=meta
            )
        except EngineError as err:
            error = error_result(err)
            raise _Closing(CloseCode.TRY_AGAIN_LATER, error.code) from None
        self.conn = conn
        return conn

    def _start_pump(self) -> None:
        assert self.nursery is not None and self.outbox is not None
        self.nursery.start_soon(self._pump, self.outbox)


_ENCODED_PUSHES: dict[int, tuple[Any, str]] = {}
_ENCODED_PUSHES_MAX = 512


def _encode_push(push: Any) -> str:
    """A push as JSON text, encoded once for all the connections it is fanned out to.

    The engine hands the same (immutable) push object to every recipient. Entries hold the
    push itself, so its ``id`` cannot be reused while cached; the oldest go first.
    """
    key = id(push)
    cached = _ENCODED_PUSHES.get(key)
    if cached is not None and cached[0] is push:
        return cached[1]
    text = encode_dict(unstructure(push))
    _ENCODED_PUSHES[key] = (push, text)
    if len(_ENCODED_PUSHES) > _ENCODED_PUSHES_MAX:
        del _ENCODED_PUSHES[next(iter(_ENCODED_PUSHES))]
    return text


def _welcome(conn: Connection) -> dict[str, Any]:
    if conn.welcome is None:
        return {}
    return unstructure(conn.welcome)  # type: ignore[arg-type]


class _AuthFailed(Exception):
    pass


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**53) < value < 2**53
    return isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS
