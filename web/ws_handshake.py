"""A WebSocket's first frame: ``hello`` (a visitor) or ``auth`` (an agent), and what follows.

Who the client is (a visitor identified by its device token or a signed identity, an agent by
an API token or the session cookie), the protocol version spoken (docs/protocol.md,
"Versions"), the engine subscription and its welcome, then the hello/auth result; the pump
starts only after that result, so replayed and live pushes follow it. The session is reached
through ``HandshakeHost`` (``web/ws_session.py``'s ``SocketSession``). A failure that ends the
connection raises ``CloseSocket``; one the client may correct answers an error frame.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import attrs
import trio
from quart import websocket

from engine import (
    AgentPrincipal,
    Connection,
    ConnectionMeta,
    EngineError,
    InvalidIdentity,
    InvalidMessage,
    VisitorIdentity,
    VisitorPrincipal,
    client_converter,
    error_result,
    read_hours,
    structure_frame,
    unstructure,
)
from storage import StorageUnavailable, Visitor, Workspace
from web.api_public import public_departments
from web.api_settings import read_widget_settings
from web.auth import Caller, session_caller, session_cookie_name, token_caller
from web.errors import ApiError
from web.mail import offline_text
from web.protocol import Auth as AuthFrame
from web.protocol import (
    AuthResult,
    CloseCode,
    Hello,
    HelloResult,
    ResultFrame,
    WireError,
    encode,
    negotiate,
)
from web.schemas_settings import WidgetConfig
from web.services import Services
from web.settings import Settings
from web.sockets import CloseSocket, LiveSocket

MAX_RESUME_ENTRIES = 100


class HandshakeHost(Protocol):
    """What the first frame reads and sets on its connection."""

    services: Services
    settings: Settings
    kind: str
    ip: str
    sock: LiveSocket
    workspace: Workspace | None
    caller: Caller | None
    visitor: Visitor | None
    open_conversation: str | None
    protocol: int
    session_cookie: str | None
    conn: Connection | None

    async def error(
        self,
        request_id: str | int | None,
        code: str,
        message: str,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None: ...

    async def send_text(self, text: str) -> None: ...

    def open_outbox(self) -> trio.MemorySendChannel[Any]:
        """A new outbox for the engine to fill; its receiving end feeds the pump."""
        ...

    def start_pump(self) -> None: ...

    async def recheck(self) -> tuple[int, str] | None: ...


class _AuthFailed(Exception):
    pass


async def first_frame(host: HandshakeHost, rid: str | int, frame: dict[str, Any]) -> None:
    """Validate ``hello``/``auth`` (and its ``resume``, ``protocol``), then run it."""
    body = {k: v for k, v in frame.items() if k not in ("id", "type")}
    cls: type[Any] = Hello if host.kind == "visitor" else AuthFrame
    try:
        parsed = structure_frame(body, cls)
    except InvalidMessage as err:
        await host.error(rid, err.code, str(err), err.field or None)
        return
    resume = parsed.resume
    if len(resume) > MAX_RESUME_ENTRIES or not all(
        isinstance(k, str) and len(k) <= 128 and type(v) is int and v >= 0
        for k, v in resume.items()
    ):
        await host.error(
            rid,
            WireError.INVALID_FIELD,
            f"resume maps up to {MAX_RESUME_ENTRIES} conversation ids to sequence numbers",
            "resume",
        )
        return
    version = negotiate(parsed.protocol)
    if version is None:
        await host.error(rid, WireError.INVALID_FIELD, "protocol is 1 or more", "protocol")
        return
    host.protocol = version
    try:
        if host.kind == "visitor":
            await _hello(host, rid, parsed)
        else:
            await _auth(host, rid, parsed)
    except StorageUnavailable:
        # The database cannot be read (down, or this node cut off from it): say "retry", and
        # close 1013 so the client reconnects, maybe to a node that reaches it.
        await host.error(rid, "storage_unavailable", "the database is unavailable; retry shortly")
        raise CloseSocket(CloseCode.TRY_AGAIN_LATER, "storage_unavailable") from None


async def _hello(host: HandshakeHost, rid: str | int, hello: Hello) -> None:
    workspace = host.workspace
    assert workspace is not None
    services = host.services
    ws_id = workspace.id
    user_agent = websocket.headers.get("User-Agent", "")[:512] or None
    identity = hello.identity
    try:
        found = await services.engine.identify_visitor(
            workspace,
            token=hello.token,
            identity=VisitorIdentity(user_id=identity.user_id, signature=identity.signature)
            if identity is not None
            else None,
            user_agent=user_agent,
            ip=host.ip,
        )
    except InvalidIdentity as err:
        await host.error(rid, err.code, str(err), err.field)
        return
    visitor, token = found.visitor, found.token
    # The IP was checked at the upgrade; a visitor created just now cannot be banned yet.
    if not found.created and await services.workspaces.is_banned(
        ws_id, visitor_id=visitor.id, ip=host.ip
    ):
        raise CloseSocket(CloseCode.POLICY, "banned")
    host.visitor = visitor
    services.sockets.bind(host.sock, workspace_id=ws_id, visitor_id=visitor.id)
    if found.identified and services.webhooks is not None:
        services.webhooks.signal(
            ws_id,
            "visitor.identified",
            {
                "visitor_id": visitor.id,
                "external_id": visitor.external_id,
                "first_time": found.first_time,
            },
        )
    page = hello.page
    meta = ConnectionMeta(
        ip=host.ip,
        user_agent=user_agent,
        page_url=page.url[:2048] if page else None,
        page_title=page.title[:512] if page and page.title else None,
        page_referrer=page.referrer[:2048] if page and page.referrer else None,
    )
    principal = VisitorPrincipal(workspace_id=ws_id, visitor_id=visitor.id)
    created = visitor if found.created else None
    welcome = _welcome(await _connect(host, principal, hello.resume, meta, created))
    conversation = welcome.get("conversation")
    if isinstance(conversation, dict) and conversation.get("state") != "closed":
        host.open_conversation = conversation.get("conversation_id")
    result = HelloResult(
        protocol=host.protocol,
        visitor_id=visitor.id,
        visitor_token=token,
        connection_id=host.sock.id,
        welcome=welcome,
        widget=client_converter.unstructure(await _widget_config(services, workspace, welcome)),
        heartbeat_interval_s=host.settings.websocket.ping_interval_s,
    )
    await host.send_text(encode(ResultFrame(id=rid, result=client_converter.unstructure(result))))
    host.start_pump()


async def _widget_config(
    services: Services, workspace: Workspace, welcome: dict[str, Any]
) -> WidgetConfig:
    """The public widget configuration of the hello result."""
    widget = read_widget_settings(workspace)
    mail = services.mailer.enabled
    return WidgetConfig(
        workspace_name=workspace.name,
        color=widget.color,
        title=widget.title,
        greeting=widget.greeting,
        position=widget.position,
        pre_chat_enabled=widget.pre_chat_enabled,
        pre_chat_fields=widget.pre_chat_fields,
        offline_form_enabled=widget.offline_form_enabled,
        offline_message=offline_text(widget.offline_message, mail_enabled=mail),
        sneak_peek=widget.sneak_peek,
        online=bool(welcome.get("agents_available", False)),
        mail_enabled=mail,
        departments=public_departments(await services.engine.public_groups(workspace.id)),
        open=read_hours(workspace.settings).open_for(None, time.time()),
    )


async def _auth(host: HandshakeHost, rid: str | int, frame: AuthFrame) -> None:
    services = host.services
    try:
        if frame.token:
            caller = await token_caller(services, frame.token)
            assert caller.token is not None
            if not {"admin", "agent"} & set(caller.token.scopes):
                raise _AuthFailed("the token's scopes do not allow the console socket")
        else:
            cookie = websocket.cookies.get(session_cookie_name(services.settings))
            if not cookie:
                raise _AuthFailed("send an API token or log in first (cookie)")
            caller = await session_caller(services, cookie)
            host.session_cookie = cookie
    except (ApiError, _AuthFailed) as err:
        message = err.message if isinstance(err, ApiError) else str(err)
        await host.error(rid, WireError.AUTH_FAILED, message)
        raise CloseSocket(CloseCode.POLICY, "authentication failed") from None
    limit = host.settings.websocket.max_sockets_per_agent
    live = services.sockets.of_agent(caller.workspace.id, caller.agent.id)
    if limit and len(live) >= limit:
        # Counted and claimed (``bind`` below) with no await in between, so concurrent
        # upgrades of one account cannot all pass the check.
        services.metrics.ws_refused["too_many_sockets"] += 1
        await host.error(
            rid,
            WireError.TOO_MANY_SOCKETS,
            f"this account already has {limit} live sockets; close a console tab",
        )
        raise CloseSocket(CloseCode.TOO_MANY_SOCKETS, "too many sockets for this account")
    host.caller = caller
    host.workspace = caller.workspace
    services.sockets.bind(
        host.sock,
        workspace_id=caller.workspace.id,
        agent_id=caller.agent.id,
        session_hash=caller.session.id_hash if caller.session else None,
        token_id=caller.token.id if caller.token else None,
    )
    host.sock.recheck = host.recheck
    principal = AgentPrincipal(
        workspace_id=caller.workspace.id,
        agent_id=caller.agent.id,
        role=caller.agent.role,
        display_name=caller.agent.display_name,
    )
    meta = ConnectionMeta(
        ip=host.ip, user_agent=websocket.headers.get("User-Agent", "")[:512] or None
    )
    conn = await _connect(host, principal, frame.resume, meta)
    result = AuthResult(
        protocol=host.protocol,
        agent_id=caller.agent.id,
        workspace_id=caller.workspace.id,
        role=caller.agent.role.value,
        display_name=caller.agent.display_name,
        connection_id=host.sock.id,
        welcome=_welcome(conn),
        heartbeat_interval_s=host.settings.websocket.ping_interval_s,
    )
    await host.send_text(encode(ResultFrame(id=rid, result=client_converter.unstructure(result))))
    host.start_pump()


async def recheck_agent(host: HandshakeHost) -> tuple[int, str] | None:
    """The agent's credential, re-read from storage: a close code if it ended.

    Called by the shared ``SocketRegistry.recheck_credentials`` pass (not per heartbeat);
    changes made through this server close the socket at once by themselves.
    """
    caller = host.caller
    assert caller is not None
    try:
        if caller.session is not None:
            fresh = await session_caller(host.services, host.session_cookie or "")
            host.caller = attrs.evolve(caller, agent=fresh.agent)
        elif caller.token is not None:
            record = await host.services.storage.find_api_token(caller.token.token_hash)
            if record is None or record.revoked_at is not None:
                return CloseCode.POLICY, "token revoked"
    except ApiError as err:
        return CloseCode.POLICY, err.message
    return None


async def _connect(
    host: HandshakeHost,
    principal: Any,
    resume: Any,
    meta: ConnectionMeta,
    new_visitor: Visitor | None = None,
) -> Connection:
    """``new_visitor``: the visitor row created for this connection (its actor reads nothing)."""
    outbox = host.open_outbox()
    try:
        conn = await host.services.gateway.connect(
            principal,
            outbox,
            connection_id=host.sock.id,
            resume=dict(resume),
            meta=meta,
            new_visitor=new_visitor,
        )
    except EngineError as err:
        raise CloseSocket(CloseCode.TRY_AGAIN_LATER, error_result(err).code) from None
    host.conn = conn
    return conn


def _welcome(conn: Connection) -> dict[str, Any]:
    if conn.welcome is None:
        return {}
    return unstructure(conn.welcome)  # type: ignore[arg-type]
