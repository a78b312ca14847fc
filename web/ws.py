"""The WebSocket endpoints: ``/ws/v1/visitor`` and ``/ws/v1/agent`` (docs/protocol.md).

What is checked before the upgrade is accepted (a known, active widget key, an allowed
``Origin``, the IP not banned, at most ``ws_max_connections_per_ip`` sockets per IP); a refusal
is an HTTP status with a JSON error body. The key and the bans are looked up in this process's
``WorkspaceCache`` (web/workspace_cache.py), not read from storage on each upgrade. An accepted
connection is a ``SocketSession`` (``web/ws_session.py``), its first frame
``web/ws_handshake.py``, its pushes ``web/ws_pump.py``.
"""

from __future__ import annotations

from quart import Blueprint, Response, websocket

from storage import WorkspaceStatus
from web.auth import client_ip
from web.httpapi import error_response
from web.origins import normalize_origin, origin_allowed
from web.services import SERVICES_KEY, Services
from web.ws_session import SocketSession

ws = Blueprint("ws", __name__)


def _services() -> Services | None:
    from quart import current_app

    services: Services | None = current_app.config.get(SERVICES_KEY)
    return services


def _refuse(services: Services | None, status: int, reason: str) -> Response:
    if services is not None:
        services.metrics.ws_refused[reason] += 1
    return error_response(status, reason, reason.replace("_", " "))


@ws.websocket("/ws/v1/visitor")
async def visitor_socket() -> Response | None:
    services = _services()
    if services is None or services.draining:
        return _refuse(services, 503, "not_ready")
    key = websocket.args.get("key", "")
    workspace = await services.workspaces.by_widget_key(key) if 0 < len(key) <= 200 else None
    if workspace is None or workspace.status is not WorkspaceStatus.ACTIVE:
        return _refuse(services, 404, "unknown_widget_key")
    if not origin_allowed(websocket.headers.get("Origin"), workspace, services.settings):
        return _refuse(services, 403, "origin_refused")
    ip = _ip(services)
    if await services.workspaces.is_banned(workspace.id, visitor_id=None, ip=ip):
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
    own = {normalize_origin(services.settings.server.base_url)}
    own |= {normalize_origin(o) for o in services.settings.server.allowed_origins}
    host = websocket.headers.get("Host")
    if host:
        scheme = "https" if websocket.scheme in ("wss", "https") else "http"
        own.add(normalize_origin(f"{scheme}://{host}"))
    return norm in own
