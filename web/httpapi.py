"""The admin API's plumbing: declared operations, authentication, role checks, JSON in and out.

Every endpoint is declared once with ``ApiBlueprint.op``: method, path, request/query/response
classes, who may call it. The declaration drives the Quart route, the checks done before the
handler runs, and the OpenAPI document (``web.openapi``), so they cannot disagree.

Order of checks for each call: authenticate (cookie session or bearer token; 401), workspace
active (403), role (403), token scope (403), CSRF for cookie-authenticated state changes (403),
then the body (400). Handlers look objects up *within the caller's workspace*, so another
workspace's id is simply not found (404) — never a 403 that would confirm it exists.
"""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
from quart import Blueprint, Response, request

from engine import unstorable
from storage import Role
from web import strictjson
from web.auth import Caller, authenticate, check_csrf, client_ip
from web.errors import BadRequest, Forbidden, PayloadTooLarge
from web.schemas import ErrorBody, ErrorDetail
from web.services import Services, current_services
from web.strictjson import JsonRejected
from web.wire import FieldInvalid, structure_body, unstructure

API_PREFIX = "/api/v1"
JSON = "application/json"
ROLE_RANK = {Role.BOT: 0, Role.AGENT: 1, Role.SUPERVISOR: 2, Role.ADMIN: 3, Role.OWNER: 4}
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SESSION_ONLY = "session"  # ``Operation.scope``: console sessions only, no API token
NO_BODY: Any = object()  # what ``_json_body`` answers for a request without a body
BODY_REQUIRED = frozenset({"PUT", "PATCH"})  # no body (PUT: or ``{}``): 400 ``body_required``

Handler = Callable[..., Awaitable[Any]]


@attrs.frozen(kw_only=True)
class Operation:
    method: str
    path: str  # OpenAPI form under /api/v1, e.g. "/agents/{agent_id}"
    operation_id: str
    summary: str
    tag: str
    body: type | None
    query: type | None
    response: type | None  # None: ``stream`` content types, or 204
    status: int
    auth: bool  # False: public
    role: Role
    operator: bool  # server operators only
    stream: tuple[str, ...] = ()
    description: str | None = None
    # A token needs ``admin`` or this scope (``read`` is not enough even for a GET): exports,
    # and ``admin`` itself for GETs that reveal a credential (the identity secret).
    # ``SESSION_ONLY``: no token at all (changes to one's own second factor).
    scope: str | None = None

    @property
    def token_scopes(self) -> tuple[str, ...]:
        """The API token scopes any one of which allows this operation (docs/admin-api.md)."""
        if self.scope == SESSION_ONLY:
            return ()
        if self.scope is not None:
            return tuple(dict.fromkeys(("admin", self.scope)))
        return ("admin", "read") if self.method == "GET" else ("admin",)

    @property
    def errors(self) -> tuple[int, ...]:
        codes = [400] if (self.body or self.query) else []
        codes += [401, 403, 404]
        if self.method in STATE_CHANGING:
            codes.append(409)
        codes.append(429)
        return tuple(sorted(set(codes)))


@attrs.frozen(kw_only=True)
class Call:
    """What a handler gets: the services, the caller (None for public operations), the IP."""

    services: Services
    caller: Caller
    ip: str

    @property
    def workspace_id(self) -> str:
        return self.caller.workspace.id


@attrs.frozen(kw_only=True)
class PublicCall:
    services: Services
    ip: str


class ApiBlueprint:
    """A Quart blueprint whose routes are declared operations."""

    def __init__(self, name: str, tag: str) -> None:
        self.blueprint = Blueprint(name, __name__, url_prefix=API_PREFIX)
        self.tag = tag
        self.operations: list[Operation] = []

    def op(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type | None = None,
        query: type | None = None,
        response: type | None = None,
        status: int = 200,
        auth: bool = True,
        role: Role = Role.AGENT,
        operator: bool = False,
        stream: tuple[str, ...] = (),
        description: str | None = None,
        scope: str | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            operation = Operation(
                method=method,
                path=path,
                operation_id=handler.__name__,
                summary=summary,
                tag=self.tag,
                body=body,
                query=query,
                response=response,
                status=status,
                auth=auth,
                role=role,
                operator=operator,
                stream=stream,
                description=description or (handler.__doc__ or "").strip() or None,
                scope=scope,
            )
            self.operations.append(operation)
            rule = path.replace("{", "<").replace("}", ">")

            async def view(**path_params: str) -> Response:
                return await _dispatch(operation, handler, path_params)

            view.__name__ = handler.__name__
            self.blueprint.add_url_rule(rule, handler.__name__, view, methods=[method])
            return handler

        return register


async def _dispatch(op: Operation, handler: Handler, path_params: dict[str, str]) -> Response:
    services = current_services()
    ip = client_ip(services.settings)
    kwargs: dict[str, Any] = dict(path_params)
    call: Call | PublicCall
    if op.auth:
        caller = await authenticate(services, ip)
        if ROLE_RANK[caller.agent.role] < ROLE_RANK[op.role]:
            raise Forbidden(f"this needs the {op.role.value} role or higher")
        if op.operator and not caller.server_operator:
            raise Forbidden("this needs a server operator")
        if caller.token is not None and not set(caller.token.scopes) & set(op.token_scopes):
            raise Forbidden("the token's scopes do not allow this", code="scope_denied")
        if op.method in STATE_CHANGING:
            check_csrf(caller)
        call = Call(services=services, caller=caller, ip=ip)
    else:
        call = PublicCall(services=services, ip=ip)
    if op.query is not None:
        kwargs["query"] = parse_query(op.query)
    if op.body is not None:
        data = await _json_body(services)
        if (data is NO_BODY and op.method in BODY_REQUIRED) or (op.method == "PUT" and data == {}):
            # A PUT replaces and a PATCH changes: sending nothing must not mean "reset".
            raise BadRequest(
                f"{op.method} needs a JSON body (PUT: every field; PATCH: the fields to change)",
                code="body_required",
                field="$",
            )
        kwargs["body"] = structure_body({} if data is NO_BODY else data, op.body)
    result = await handler(call, **kwargs)
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(b"", status=204)
    return json_response(result, op.status)


def json_response(obj: Any, status: int = 200) -> Response:
    """``obj`` (a response class) through the API's one converter, as JSON."""
    return Response(strictjson.dumps(unstructure(obj)), status=status, content_type=JSON)


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    """Every non-2xx JSON answer: ``{"error": {"code", "message", "field"}}`` (``ErrorBody``)."""
    return json_response(
        ErrorBody(error=ErrorDetail(code=code, message=message, field=field)), status
    )


async def _json_body(services: Services) -> Any:
    """The decoded JSON body; ``NO_BODY`` when the request has no body at all."""
    limit = services.settings.server.http_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    raw = await request.get_data(as_text=False)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    if not raw:
        return NO_BODY
    try:
        body = strictjson.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise BadRequest("the body is not valid JSON", code="invalid_json", field="$") from None
    except JsonRejected as err:
        field = f"$.{err.field}" if err.field else "$"
        message = f"the body is not accepted JSON: {err.message}"
        raise BadRequest(message, code="invalid_json", field=field) from None
    found = unstorable(body)  # the one edge check: nothing unstorable reaches storage
    if found is not None:
        path, reason = found
        field = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        raise BadRequest(f"{field}: {reason}", code="invalid_value", field=field)
    return body


def parse_query(cls: type[Any]) -> Any:
    """Query parameters into ``cls``: typed by its annotations, validated by its validators."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):
        raw = request.args.get(field.name)
        if raw is None:
            if field.default is attrs.NOTHING:
                raise BadRequest(
                    f"query parameter {field.name!r} is required",
                    code="missing_field",
                    field=field.name,
                )
            continue
        values[field.name] = _query_value(field.name, raw, hints[field.name])
    try:
        return cls(**values)
    except FieldInvalid as err:
        raise BadRequest(err.message, code="invalid_value", field=err.field) from None


def _query_value(name: str, raw: str, tp: Any) -> Any:
    options = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    target = options[0] if len(options) == 1 else tp
    origin = typing.get_origin(target)
    try:
        if target is int:
            number = int(raw)
            if unstorable(number) is not None:  # beyond the databases' 64-bit integers
                raise ValueError(raw)
            return number
        if target is float:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
            return value
        if target is bool:
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
        if origin is typing.Literal:
            if raw not in typing.get_args(target):
                allowed = ", ".join(typing.get_args(target))
                raise BadRequest(f"must be one of: {allowed}", code="invalid_value", field=name)
            return raw
    except ValueError:
        raise BadRequest(f"{name} has the wrong type", code="wrong_type", field=name) from None
    if len(raw) > 500:
        raise BadRequest(f"{name} is too long", code="invalid_value", field=name)
    if unstorable(raw) is not None:
        raise BadRequest(
            f"{name} contains NUL or an unpaired surrogate", code="invalid_value", field=name
        )
    return raw


def bad_cursor() -> BadRequest:
    return BadRequest(
        "the cursor is not one this server issued", code="invalid_value", field="cursor"
    )


def streaming_response(chunks: AsyncIterator[str], content_type: str, filename: str) -> Response:
    async def body() -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk.encode("utf-8")

    response = Response(body(), status=200, content_type=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.timeout = None  # a large export may take longer than the default response timeout
    return response
