"""Who is calling: cookie sessions, bearer API tokens, CSRF, the client IP.

Secrets are random (``secrets.token_urlsafe``) and stored only as SHA-256 hashes: the session
cookie value, API tokens and visitor tokens. A stolen database therefore holds no usable
credential. Sessions end after ``session_idle_timeout_s`` without use and after
``session_absolute_timeout_s`` in any case; every login mints a new session id (no fixation).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import attrs
from quart import request

from storage import Agent, ApiToken, Role, Session, Workspace, WorkspaceStatus
from web.errors import Forbidden, Unauthorized
from web.services import Services
from web.settings import Settings

SESSION_COOKIE = "lc_session"  # over plain HTTP
SECURE_SESSION_COOKIE = "__Host-lc_session"  # over TLS (or an https public URL)
CSRF_HEADER = "X-CSRF-Token"
SESSION_TOUCH_EVERY_S = 60.0
SERVER_OPERATOR_KEY = "server_operator"  # workspace setting: its owners run the server


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@attrs.frozen(kw_only=True)
class Caller:
    agent: Agent
    workspace: Workspace
    session: Session | None = None
    token: ApiToken | None = None

    @property
    def actor(self) -> str:
        if self.token is not None:
            return f"token:{self.token.id}"
        return f"agent:{self.agent.id}"

    @property
    def server_operator(self) -> bool:
        return bool(self.workspace.settings.get(SERVER_OPERATOR_KEY)) and (
            self.agent.role.value == "owner"
        )


def client_ip(
    settings: Settings, *, remote_addr: str | None = None, forwarded: str | None = None
) -> str:
    """The client's IP; ``X-Forwarded-For`` only when the operator trusts its proxy."""
    if remote_addr is None and forwarded is None:
        remote_addr = request.remote_addr
        forwarded = request.headers.get("X-Forwarded-For")
    if settings.server.trust_proxy_headers and forwarded:
        return forwarded.split(",")[0].strip()[:64]
    return (remote_addr or "unknown")[:64]


async def _active_agent(
    services: Services, workspace_id: str, agent_id: str
) -> tuple[Agent, Workspace]:
    workspace = await services.storage.get_workspace(workspace_id)
    agent = await services.storage.get_agent(workspace_id, agent_id)
    if workspace is None or agent is None or not agent.enabled:
        raise Unauthorized("the account is not active", code="unauthenticated")
    if workspace.status is not WorkspaceStatus.ACTIVE:
        raise Forbidden("the workspace is suspended", code="workspace_suspended")
    return agent, workspace


async def session_caller(services: Services, cookie_value: str) -> Caller:
    """Resolve a session cookie; expired sessions are deleted and answer 401."""
    id_hash = hash_secret(cookie_value)
    session = await services.storage.get_session(id_hash)
    if session is None:
        raise Unauthorized("not logged in", code="unauthenticated")
    now = time.time()
    settings = services.settings
    if (
        now - session.last_seen_at > settings.accounts.session_idle_timeout_s
        or now - session.created_at > settings.accounts.session_absolute_timeout_s
    ):
        await services.storage.delete_session(id_hash)
        raise Unauthorized("the session has expired", code="session_expired")
    agent, workspace = await _active_agent(services, session.workspace_id, session.agent_id)
    if agent.role is Role.BOT:  # made a bot after logging in: a bot has no sessions
        await services.storage.delete_session(id_hash)
        raise Unauthorized("not logged in", code="unauthenticated")
    if now - session.last_seen_at > SESSION_TOUCH_EVERY_S:
        await services.storage.touch_session(id_hash, now)
    return Caller(agent=agent, workspace=workspace, session=session)


async def token_caller(services: Services, token: str) -> Caller:
    record = await services.storage.find_api_token(hash_secret(token))
    if record is None or record.revoked_at is not None:
        raise Unauthorized("invalid API token", code="unauthenticated")
    agent, workspace = await _active_agent(services, record.workspace_id, record.agent_id)
    return Caller(agent=agent, workspace=workspace, token=record)


async def authenticate(services: Services, ip: str) -> Caller:
    """The caller of this HTTP request: bearer token first, else the session cookie."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use 'Authorization: Bearer <token>'", code="unauthenticated")
        return await token_caller(services, value.strip())
    cookie = request.cookies.get(session_cookie_name(services.settings))
    if not cookie:
        raise Unauthorized("not logged in", code="unauthenticated")
    return await session_caller(services, cookie)


def check_csrf(caller: Caller) -> None:
    """Cookie-authenticated state changes must echo the session's CSRF token in a header."""
    if caller.session is None:
        return  # bearer tokens are not sent by browsers on their own: no CSRF
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent, caller.session.csrf_token):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header", code="csrf_failed")


async def start_session(services: Services, agent: Agent) -> tuple[str, Session]:
    """A brand-new session for ``agent``: returns the cookie value (shown once) and the record."""
    cookie_value = new_secret()
    now = time.time()
    session = Session(
        id_hash=hash_secret(cookie_value),
        agent_id=agent.id,
        workspace_id=agent.workspace_id,
        csrf_token=secrets.token_urlsafe(24),
        created_at=now,
        last_seen_at=now,
    )
    await services.storage.create_session(session)
    return cookie_value, session


def cookie_is_secure(settings: Settings) -> bool:
    return settings.server.tls_enabled or settings.server.base_url.startswith("https://")


def session_cookie_name(settings: Settings) -> str:
    """``__Host-lc_session`` when served over TLS (ASVS 5.0 3.3.1): browsers then take the
    cookie only if it is Secure, for Path=/ and without Domain, so neither a sibling subdomain
    nor a plain-HTTP response can plant or overwrite it. ``lc_session`` over plain HTTP (local
    development), where browsers would refuse the prefixed name."""
    return SECURE_SESSION_COOKIE if cookie_is_secure(settings) else SESSION_COOKIE
