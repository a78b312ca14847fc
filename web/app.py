"""The Quart-Trio application factory: blueprints per area, one error format, security headers.

``create_app(settings, services)`` wires the HTTP API, the WebSocket endpoints, the operations
endpoints and (when present) the frontend's pages. ``services`` comes from
``web.services.open_services``; without it (tools that only need the routes or the OpenAPI
document) everything but ``/healthz`` and ``/openapi.json`` answers 503 ``not_ready``.
"""

from __future__ import annotations

import logging
import secrets
import time

import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

import storage
from engine import DomainError, EngineError, client_message, error_code
from web import strictjson
from web.api_admin import api as admin_api
from web.api_agents import api as agents_api
from web.api_auth import api as auth_api
from web.api_catalogue import api as catalogue_api
from web.api_chats import api as chats_api
from web.api_hours import api as hours_api
from web.api_mail import api as mail_api
from web.api_ops import api as ops_api
from web.api_public import api as public_api
from web.api_security import api as security_api
from web.api_settings import api as settings_api
from web.api_triggers import api as triggers_api
from web.api_webhooks import api as webhooks_api
from web.auth import session_cookie_name
from web.errors import ApiError, PayloadTooLarge
from web.files import UPLOAD_PATHS
from web.files import api as files_api
from web.httpapi import ApiBlueprint, Operation, error_response
from web.openapi import build_openapi, render_docs_page
from web.services import SERVICES_KEY, Services
from web.settings import Settings

log = logging.getLogger("livechat.web")

API_BLUEPRINTS: tuple[ApiBlueprint, ...] = (
    auth_api,
    admin_api,  # workspaces and the audit log
    agents_api,  # agents and their API tokens
    catalogue_api,  # groups and canned responses
    settings_api,  # widget, routing, identity secret, tags
    chats_api,
    public_api,
    security_api,  # two-factor login and single sign-on
    mail_api,  # outgoing mail and the inbox
    files_api,  # files in chats
    webhooks_api,  # webhooks
    hours_api,  # business hours
    triggers_api,  # triggers and auto-replies
    ops_api,  # operators: the supervision tree, fault injection
)

_ENGINE_STATUS = {
    "not_found": 404,
    "forbidden": 403,
    "invalid_field": 400,
    "missing_field": 400,
    "unknown_type": 400,
    "already_assigned": 409,
    "agent_at_capacity": 409,
    "workspace_at_capacity": 409,
    "invalid_state": 409,
    "conversation_closed": 409,
    "rate_limited": 429,
}


def api_operations() -> list[Operation]:
    return [op for bp in API_BLUEPRINTS for op in bp.operations]


def create_app(settings: Settings, services: Services | None = None) -> QuartTrio:
    """Build the app for one settings object (and the running services)."""
    app = QuartTrio(__name__)
    app.config["LIVECHAT_SETTINGS"] = settings
    app.config[SERVICES_KEY] = services
    # File uploads stream up to files_max_bytes; every other body is held to http_max_body_bytes
    # in start_request below.
    app.config["MAX_CONTENT_LENGTH"] = max(
        settings.server.http_max_body_bytes, settings.files.max_bytes
    )
    app.config["BODY_TIMEOUT"] = settings.server.read_timeout_s
    for bp in API_BLUEPRINTS:
        app.register_blueprint(bp.blueprint)

    from web.ops import ops
    from web.ws import ws

    app.register_blueprint(ops)
    app.register_blueprint(ws)
    _register_pages(app)

    openapi = build_openapi(
        api_operations(),
        server_url=settings.server.base_url,
        session_cookie=session_cookie_name(settings),
    )
    app.config["LIVECHAT_OPENAPI"] = openapi
    docs_html = render_docs_page(openapi)

    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        return Response(strictjson.dumps(openapi), content_type="application/json")

    @app.get("/api/docs")
    async def api_docs() -> Response:
        return Response(docs_html, content_type="text/html; charset=utf-8")

    @app.before_request
    async def start_request() -> None:
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
        g.started = time.perf_counter()
        # Always consume the body (bounded by MAX_CONTENT_LENGTH), even when the answer is a
        # 404/405 that never looks at it: an unread body leaves the keep-alive connection
        # stuck and the client's next request on it would hang until the read timeout.
        if UPLOAD_PATHS.match(request.path) and request.method == "POST":
            return  # the upload handler streams the body, refusing it past the file limit
        if request.content_length or "Transfer-Encoding" in request.headers:
            limit = settings.server.http_max_body_bytes
            if request.content_length is not None and request.content_length > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            data = await request.get_data()
            if len(data) > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")

    @app.after_request
    async def finish_request(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        if request.path.startswith(("/api/", "/openapi.json")):
            response.headers["Cache-Control"] = "no-store"
            # JSON and the docs page: nothing to load, nothing to run, never framed. A file
            # download (web/files.py) keeps its own, stricter policy (sandbox).
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            )
        if response.status_code >= 400 and UPLOAD_PATHS.match(request.path):
            # A refused upload may leave its body unread: end the connection rather than let
            # the client's next request on it wait behind the rest of the file.
            response.headers["Connection"] = "close"
        if services is not None:
            services.metrics.http_requests[(request.method, str(response.status_code))] += 1
        log.info(
            "http %s %s %s %.1fms",
            request.method,
            request.path,
            response.status_code,
            (time.perf_counter() - getattr(g, "started", time.perf_counter())) * 1000,
            extra={"request_id": getattr(g, "request_id", ""), "ip": request.remote_addr},
        )
        return response

    @app.errorhandler(ApiError)
    async def api_error(err: ApiError) -> Response:
        response = error_response(err.status, err.code, err.message, err.field)
        if err.retry_after_s is not None:
            response.headers["Retry-After"] = str(max(1, int(err.retry_after_s + 0.999)))
        return response

    @app.errorhandler(storage.NotFound)
    async def storage_not_found(_err: storage.NotFound) -> Response:
        return error_response(404, "not_found", "not found")

    @app.errorhandler(storage.Conflict)
    async def storage_conflict(_err: storage.Conflict) -> Response:
        return error_response(409, "conflict", "conflicts with existing data")

    @app.errorhandler(storage.StorageUnavailable)
    async def storage_down(_err: storage.StorageUnavailable) -> Response:
        return error_response(
            503, "storage_unavailable", "the database is unavailable; retry later"
        )

    @app.errorhandler(EngineError)
    async def engine_error(err: EngineError) -> Response:
        code = error_code(err) or "engine_error"
        status = _ENGINE_STATUS.get(code, 503)
        field = err.field if isinstance(err, DomainError) else None
        return error_response(status, code, client_message(err), field)

    @app.errorhandler(trio.TooSlowError)
    async def too_slow(_err: trio.TooSlowError) -> Response:
        return error_response(503, "overloaded", "the server is busy; retry later")

    @app.errorhandler(HTTPException)
    async def http_error(err: HTTPException) -> Response:
        status = err.code or 500
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        if request.path.startswith("/api/") or status != 404:
            return error_response(
                status, codes.get(status, "http_error"), err.description or "error"
            )
        return err.get_response()  # type: ignore[return-value]

    @app.errorhandler(Exception)
    async def internal(err: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": getattr(g, "request_id", "")})
        return error_response(500, "internal", "internal error")

    return app


def _register_pages(app: QuartTrio) -> None:
    """The frontend's blueprint (console, demo, widget.js), when that module exists."""
    try:
        from web import pages
    except ModuleNotFoundError as err:
        if err.name != "web.pages":
            raise
        return
    app.register_blueprint(pages.pages)
