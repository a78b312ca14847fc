"""Which site origins may embed a workspace's widget (the WebSocket upgrade and CORS check)."""

from __future__ import annotations

from urllib.parse import urlsplit

from storage import Workspace
from web.settings import Settings

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, default port dropped; ``None`` if malformed."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def allowed_origins(workspace: Workspace, settings: Settings) -> set[str]:
    out: set[str] = set()
    for origin in (
        *workspace.allowed_origins,
        *settings.server.allowed_origins,
        settings.server.base_url,
    ):
        norm = normalize_origin(origin)
        if norm:
            out.add(norm)
    return out


def origin_allowed(origin: str | None, workspace: Workspace, settings: Settings) -> bool:
    """Browsers always send ``Origin`` on a WebSocket upgrade; non-browser clients (bench,
    server-side integrations) may omit it and are not subject to cross-site hijacking."""
    if origin is None:
        return True
    norm = normalize_origin(origin)
    return norm is not None and norm in allowed_origins(workspace, settings)
