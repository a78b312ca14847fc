"""The WebSocket protocol's own frames (envelope, hello/auth, heartbeats), codes and close codes.

Chat commands, results and pushes are the engine's (``engine.messages`` via ``engine.codec``);
this module adds what only the transport knows: the request ``id`` envelope, the first frame
(``hello`` for visitors, ``auth`` for agents), ``ping``/``pong`` and the error codes of frames
that never reached the engine. Everything here is documented in ``docs/protocol.md``.

The boundary has one converter, ``engine.client_converter``, for the engine's messages and the
frames here alike (structured with ``engine.structure_frame``); ``encode``, ``encode_dict`` and
``with_request_id`` make the only JSON text a socket is sent (through ``strictjson.dumps``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from engine import client_converter
from web.strictjson import dumps

PROTOCOL_VERSION = 3  # the newest this server speaks; a client asks for one in hello/auth
MAX_REQUEST_ID_CHARS = 64


class CloseCode(enum.IntEnum):
    """Why the server closed the socket, and what the client should do (docs/protocol.md)."""

    NORMAL = 1000  # done; do not reconnect unless the user acts
    GOING_AWAY = 1001  # server shutdown or restart: reconnect with backoff, resume
    POLICY = 1008  # auth failed, logged out, banned, kicked: do NOT reconnect automatically
    TOO_BIG = 1009  # a frame above the hard limit: fix the client
    INTERNAL = 1011  # server bug: reconnect with backoff, resume
    TRY_AGAIN_LATER = 1013  # slow consumer or overload: reconnect with backoff, resume
    AUTH_TIMEOUT = 4000  # no hello/auth within the deadline: reconnect
    HEARTBEAT_TIMEOUT = 4001  # nothing heard from the client within the dead-peer timeout
    TOO_MANY_SOCKETS = 4002  # the account has ws_max_sockets_per_agent live sockets already
    PRIVILEGES_CHANGED = 4003  # the account's role changed: reconnect at once (fresh role)


class WireError(enum.StrEnum):
    """Error codes for frames rejected before the engine (engine codes are added to these)."""

    INVALID_JSON = "invalid_json"  # a text frame that is not JSON
    BINARY_FRAME = "binary_frame"  # binary frames are not part of the protocol
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
    FRAME_TOO_LARGE = "frame_too_large"  # above ws_max_message_bytes (soft limit)
    MISSING_FIELD = "missing_field"  # e.g. no "id" on a request
    INVALID_FIELD = "invalid_field"  # wrong JSON type or value (field names it)
    UNKNOWN_TYPE = "unknown_type"
    HELLO_REQUIRED = "hello_required"  # a command before the hello/auth frame
    ALREADY_AUTHENTICATED = "already_authenticated"
    AUTH_FAILED = "auth_failed"
    INVALID_IDENTITY = "invalid_identity"  # the identity signature does not verify
    FORBIDDEN = "forbidden"  # a command this principal may not send
    RATE_LIMITED = "rate_limited"
    TOO_MANY_SOCKETS = "too_many_sockets"  # then close 4002
    OVERLOADED = "overloaded"  # the server sheds load: resend after retry_after_s (same id)
    INTERNAL_ERROR = "internal_error"


RequestId = str | int


@attrs.frozen(kw_only=True)
class Identity:
    """Signed identity: ``signature`` = hex HMAC-SHA256(identity secret, ``user_id``)."""

    user_id: str
    signature: str


@attrs.frozen(kw_only=True)
class PageInfo:
    url: str
    title: str | None = None
    referrer: str | None = None


@attrs.frozen(kw_only=True)
class Hello:
    """A visitor's first frame (without the envelope's ``type`` and ``id``)."""

    TYPE: ClassVar[str] = "hello"
    protocol: int = 1  # the newest version the client speaks (absent: 1)
    token: str | None = None
    identity: Identity | None = None
    resume: Mapping[str, int] = attrs.field(factory=dict)
    page: PageInfo | None = None


@attrs.frozen(kw_only=True)
class Auth:
    """An agent's first frame: an API token, or ``null`` to use the session cookie."""

    TYPE: ClassVar[str] = "auth"
    protocol: int = 1  # the newest version the client speaks (absent: 1)
    token: str | None = None
    resume: Mapping[str, int] = attrs.field(factory=dict)


# ---------------------------------------------------------------- outbound


@attrs.frozen(kw_only=True)
class HelloResult:
    type: str = "hello"
    protocol: int  # the version spoken on this connection
    visitor_id: str
    visitor_token: str  # keep it (localStorage) and send it in the next hello
    connection_id: str
    welcome: Mapping[str, Any]  # the engine's welcome_visitor
    widget: Mapping[str, Any]  # the public widget configuration
    heartbeat_interval_s: float


@attrs.frozen(kw_only=True)
class AuthResult:
    type: str = "auth"
    protocol: int  # the version spoken on this connection
    agent_id: str
    workspace_id: str
    role: str
    display_name: str
    connection_id: str
    welcome: Mapping[str, Any]  # the engine's welcome_agent
    heartbeat_interval_s: float


@attrs.frozen(kw_only=True)
class ResultFrame:
    type: str = "result"
    id: RequestId
    result: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class ErrorFrame:
    type: str = "error"
    id: RequestId | None
    code: str
    message: str
    field: str | None = None
    retry_after_s: float | None = None


@attrs.frozen(kw_only=True)
class PingFrame:
    type: str = "ping"


@attrs.frozen(kw_only=True)
class PongFrame:
    type: str = "pong"
    id: RequestId | None = None


def negotiate(requested: int) -> int | None:
    """The version spoken: the client's newest, capped at ours; None if below 1."""
    return min(requested, PROTOCOL_VERSION) if requested >= 1 else None


def encode(frame: object) -> str:
    """One outbound frame (a class above) as compact JSON text, through the boundary's one
    converter (``engine.client_converter``)."""
    return dumps(client_converter.unstructure(frame))


def encode_dict(data: Mapping[str, Any]) -> str:
    """An engine-unstructured result or push (already a JSON-ready dict) as JSON text."""
    return dumps(data)


def with_request_id(text: str, request_id: RequestId) -> str:
    """``text`` (an encoded frame, a non-empty JSON object) with ``"id"`` added as its last
    key: exactly ``encode_dict({**frame, "id": request_id})``, without encoding the frame
    again. A push fanned out to many sockets is encoded once; only its sender's echo carries
    the request id (tests/web/test_wire.py checks the equality)."""
    return f'{text[:-1]},"id":{dumps(request_id)}}}'
