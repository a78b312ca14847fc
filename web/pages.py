"""The browser-facing pages: the widget loader and iframe app, the agent console, the demo site.

Everything here is static files plus two small templates; the pages talk to the server only
through the public protocol (``/ws/v1/...``) and the admin API (``/api/v1/...``). Each response
carries strict security headers: a Content-Security-Policy without inline scripts, ``nosniff``,
and ``frame-ancestors`` chosen per page (the console can never be framed; the widget frame only
by the workspace's allowed origins, or by anyone when the workspace lists none).
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
from quart import Blueprint, Response, current_app, render_template, request

import widget
from web.services import SERVICES_KEY
from web.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONSOLE_DIR = STATIC_DIR / "console"
DEMO_STATIC_DIR = STATIC_DIR / "demo"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
WIDGET_DIR = widget.ASSETS_DIR

_SERVED_SUFFIXES = {
    ".html",
    ".js",
    ".css",
    ".svg",
    ".png",
    ".ico",
    ".txt",
    ".woff2",
    ".mp3",
    ".wav",
}
_MIME_OVERRIDES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
STORAGE_DEADLINE_S = 5.0

DEMO_PAGES: Mapping[str, str] = {
    "": "Home",
    "pricing": "Pricing",
    "docs": "Documentation",
    "contact": "Contact",
}

pages_blueprint = Blueprint("pages", __name__, template_folder=str(TEMPLATES_DIR))


# ---------------------------------------------------------------- static files


@attrs.frozen
class _Asset:
    body: bytes
    etag: str
    content_type: str


def _resolve(base: Path, rel: str) -> Path | None:
    """The file ``rel`` inside ``base``, or None: no traversal, no dotfiles, no source code."""
    if not rel or "\\" in rel or "\x00" in rel:
        return None
    parts = rel.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    path = (base / rel).resolve()
    if base.resolve() not in path.parents or path.suffix not in _SERVED_SUFFIXES:
        return None
    return path if path.is_file() else None


async def _load(path: Path) -> _Asset:
    body = await trio.Path(path).read_bytes()
    content_type = _MIME_OVERRIDES.get(path.suffix) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )
    if content_type.startswith("text/") or content_type == "image/svg+xml":
        content_type += "; charset=utf-8"
    etag = hashlib.sha256(body).hexdigest()[:32]
    return _Asset(body=body, etag=etag, content_type=content_type)


async def _file_response(path: Path, headers: Mapping[str, str]) -> Response:
    asset = await _load(path)
    if request.headers.get("If-None-Match", "").strip('W/"') == asset.etag:
        response = Response(b"", status=304)
    else:
        response = Response(asset.body, status=200, content_type=asset.content_type)
    response.headers["ETag"] = f'"{asset.etag}"'
    # Revalidate every time: no build step means no content hashes in file names.
    response.headers["Cache-Control"] = "no-cache"
    for name, value in headers.items():
        response.headers[name] = value
    return response


def _not_found() -> Response:
    response = Response("not found\n", status=404, content_type="text/plain; charset=utf-8")
    response.headers.update(_base_headers())
    return response


# ---------------------------------------------------------------- security headers


def _base_headers() -> dict[str, str]:
    return {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }


def _csp(*, frame_ancestors: str, frame_src: str = "'none'", img_src: str = "'self' data:") -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {img_src}",
            "connect-src 'self'",
            "font-src 'self'",
            "media-src 'self' data:",
            f"frame-src {frame_src}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )


def console_headers() -> dict[str, str]:
    return {
        **_base_headers(),
        # The widget preview in the admin screens is the real widget frame, same origin.
        "Content-Security-Policy": _csp(
            frame_ancestors="'none'", frame_src="'self'", img_src="'self' data: blob: https:"
        ),
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def widget_frame_headers(allowed_origins: tuple[str, ...]) -> dict[str, str]:
    ancestors = " ".join(("'self'", *allowed_origins)) if allowed_origins else "*"
    return {
        **_base_headers(),
        "Content-Security-Policy": _csp(
            frame_ancestors=ancestors, img_src="'self' data: blob: https:"
        ),
        # The host page needs to know nothing more than our origin.
        "Referrer-Policy": "no-referrer",
    }


def demo_headers() -> dict[str, str]:
    return {
        **_base_headers(),
        "Content-Security-Policy": _csp(frame_ancestors="'self'", frame_src="'self'"),
    }


# ---------------------------------------------------------------- storage lookups


def _storage() -> Any | None:
    """The app's storage (``None`` while the server is starting)."""
    services = current_app.config.get(SERVICES_KEY)
    return None if services is None else services.storage


async def _workspace_by_key(key: str) -> Any | None:
    storage = _storage()
    if storage is None or not key:
        return None
    with trio.move_on_after(STORAGE_DEADLINE_S):
        return await storage.get_workspace_by_widget_key(key)
    return None


async def _demo_workspace() -> Any | None:
    storage = _storage()
    if storage is None:
        return None
    with trio.move_on_after(STORAGE_DEADLINE_S):
        workspaces = await storage.list_workspaces()
        active = [w for w in workspaces if str(getattr(w, "status", "active")) == "active"]
        for workspace in active:
            if "demo" in workspace.name.lower():
                return workspace
        return active[0] if active else None
    return None


def _public_base() -> str:
    settings: Settings | None = current_app.config.get("LIVECHAT_SETTINGS")
    public_url = settings.server.public_url if settings is not None else None
    if public_url:
        return public_url.rstrip("/")
    return request.host_url.rstrip("/")


# ---------------------------------------------------------------- routes: widget


@pages_blueprint.get("/widget.js")
async def widget_loader() -> Response:
    """The loader customers embed; any site may load it."""
    response = await _file_response(
        WIDGET_DIR / "loader.js",
        {**_base_headers(), "Cross-Origin-Resource-Policy": "cross-origin"},
    )
    return response


@pages_blueprint.get("/widget/<path:rel>")
async def widget_asset(rel: str) -> Response:
    path = _resolve(WIDGET_DIR, rel)
    if path is None:
        return _not_found()
    if path.suffix == ".html":
        workspace = await _workspace_by_key(request.args.get("key", ""))
        origins = tuple(getattr(workspace, "allowed_origins", ()) or ())
        return await _file_response(path, widget_frame_headers(origins))
    return await _file_response(path, _base_headers())


# ---------------------------------------------------------------- routes: console


@pages_blueprint.get("/console")
@pages_blueprint.get("/console/")
async def console_index() -> Response:
    return await _file_response(CONSOLE_DIR / "index.html", console_headers())


@pages_blueprint.get("/console/<path:rel>")
async def console_asset(rel: str) -> Response:
    path = _resolve(CONSOLE_DIR, rel)
    if path is None:
        return _not_found()
    return await _file_response(path, console_headers())


# ---------------------------------------------------------------- routes: demo site


@pages_blueprint.get("/demo")
@pages_blueprint.get("/demo/")
@pages_blueprint.get("/demo/<page>")
async def demo_page(page: str = "") -> Response:
    if page not in DEMO_PAGES:
        path = _resolve(DEMO_STATIC_DIR, page)
        if path is None:
            return _not_found()
        return await _file_response(path, _base_headers())
    workspace = await _demo_workspace()
    html = await render_template(
        "demo.html",
        page=page,
        title=DEMO_PAGES[page],
        pages=DEMO_PAGES,
        base=_public_base(),
        widget_key=getattr(workspace, "widget_key", None),
    )
    response = Response(html, status=200, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(demo_headers())
    return response


# The app factory registers ``pages.pages``; both names refer to the one blueprint.
pages = pages_blueprint
