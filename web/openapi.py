"""The OpenAPI 3.1 document of ``/api/v1``, built from the declared operations, and a docs page.

The page at ``/api/docs`` is plain HTML rendered by the server from the same document (no CDN,
no JavaScript framework): operations grouped by tag with their parameters, bodies and answers.
"""

from __future__ import annotations

import html
import json
import typing
from collections.abc import Iterable
from typing import Any

import attrs

from web.httpapi import API_PREFIX, Operation
from web.jsonschema import SchemaBuilder
from web.schemas import ErrorBody

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Invalid body or parameter (code and field say which)",
    401: "Not authenticated",
    403: "Forbidden (role, scope, CSRF, suspended workspace)",
    404: "Not found (also: belongs to another workspace)",
    409: "Conflict",
    413: "Body too large",
    429: "Rate limited or login throttled (see Retry-After)",
    503: "Not ready or storage unavailable",
}


def build_openapi(
    operations: Iterable[Operation], *, server_url: str, session_cookie: str = "lc_session"
) -> dict[str, Any]:
    builder = SchemaBuilder()
    error_ref = builder.ref(ErrorBody)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        item: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
        }
        if op.description and op.description != op.summary:
            item["description"] = op.description
        params: list[dict[str, Any]] = []
        for name in _path_params(op.path):
            params.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                }
            )
        if op.query is not None:
            hints = typing.get_type_hints(op.query)
            for field in attrs.fields(op.query):
                schema = dict(builder.of(hints[field.name]))
                schema = _non_null(schema)
                for key in ("minLength", "maxLength", "minimum", "maximum", "pattern"):
                    if key in field.metadata:
                        schema[key] = field.metadata[key]
                if schema.get("type") == "string" and "maxLength" not in schema:
                    schema["maxLength"] = 500
                params.append(
                    {
                        "name": field.name,
                        "in": "query",
                        "required": field.default is attrs.NOTHING,
                        "schema": schema,
                    }
                )
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": builder.ref(op.body)}},
            }
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": _STATUS_TEXT.get(op.status, "OK")}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": builder.ref(op.response)}}
        elif op.stream:
            ok["content"] = {ct: {"schema": {"type": "string"}} for ct in op.stream}
        responses[str(op.status)] = ok
        for code in (*op.errors, 503):
            responses[str(code)] = {
                "description": _STATUS_TEXT[code],
                "content": {"application/json": {"schema": error_ref}},
            }
        item["responses"] = responses
        if op.auth:
            item["security"] = [{"session": [], "csrf": []}, {"bearer": []}]
            # Who may call it: the lowest role, server operators only, token scopes that allow it.
            item["x-livechat-access"] = {
                "role": op.role.value,
                "operator": op.operator,
                "token_scopes": list(op.token_scopes),
            }
        else:
            item["security"] = []
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "livechat admin API",
            "version": "1",
            "description": (
                'JSON over HTTPS. Errors are {"error": {"code", "message", "field"}}. '
                f"Authenticate with the {session_cookie} cookie (state changes also need the "
                "X-CSRF-Token header from /auth/login or /me) or with 'Authorization: Bearer "
                "<API token>'. Another workspace's ids answer 404, like missing ones."
            ),
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": builder.components,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": session_cookie},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _path_params(path: str) -> list[str]:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(part[1:-1])
    return out


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, list):
        rest = [k for k in kind if k != "null"]
        return {**schema, "type": rest[0] if len(rest) == 1 else rest}
    if "anyOf" in schema:
        rest = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(rest) == 1:
            return dict(rest[0])
    return schema


def render_docs_page(doc: dict[str, Any]) -> str:
    """A self-contained HTML page listing every operation of ``doc``; every value escaped."""
    esc = html.escape
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{esc(doc['info']['title'])}</title>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
        "padding:0 1rem;color:#1d2330}code,pre{font:13px ui-monospace,monospace}"
        "pre{background:#f4f5f7;padding:.6rem;overflow:auto;border-radius:4px}"
        "details{border:1px solid #dde1e7;border-radius:4px;margin:.4rem 0;padding:.3rem .6rem}"
        "summary{cursor:pointer}.m{display:inline-block;width:4.5rem;font-weight:600}"
        "</style></head><body>",
        f"<h1>{esc(doc['info']['title'])} <small>v{esc(doc['info']['version'])}</small></h1>",
        f"<p>{esc(doc['info']['description'])}</p>",
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>",
    ]
    schemas = doc["components"]["schemas"]
    for tag in sorted(by_tag):
        parts.append(f"<h2>{esc(tag)}</h2>")
        for method, path, op in sorted(by_tag[tag], key=lambda t: (t[1], t[0])):
            parts.append(
                f"<details id='{esc(op['operationId'])}'><summary><span class=m>{esc(method)}"
                f"</span><code>{esc(path)}</code> — {esc(op['summary'])}</summary>"
            )
            if not op.get("security"):
                parts.append("<p><em>Public: no authentication.</em></p>")
            for param in op.get("parameters", []):
                parts.append(
                    f"<div>{esc(param['in'])} <code>{esc(param['name'])}</code>"
                    f"{' (required)' if param.get('required') else ''}: "
                    f"<code>{esc(json.dumps(param['schema']))}</code></div>"
                )
            body = op.get("requestBody")
            if body:
                ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                parts.append(f"<p>Body <code>{esc(ref)}</code></p>")
                parts.append(f"<pre>{esc(json.dumps(schemas[ref], indent=2))}</pre>")
            for status, answer in op["responses"].items():
                content = answer.get("content", {})
                kinds = ", ".join(content)
                ref = ""
                schema = content.get("application/json", {}).get("schema", {})
                if "$ref" in schema:
                    ref = schema["$ref"].rsplit("/", 1)[1]
                what = f" — {esc(ref)}" if ref else (f" ({esc(kinds)})" if kinds else "")
                parts.append(
                    f"<div><code>{esc(status)}</code> {esc(answer['description'])}{what}</div>"
                )
            parts.append("</details>")
    parts.append("<h2>Schemas</h2>")
    for name in sorted(schemas):
        parts.append(
            f"<details id='schema-{esc(name)}'><summary><code>{esc(name)}</code></summary>"
            f"<pre>{esc(json.dumps(schemas[name], indent=2))}</pre></details>"
        )
    parts.append("</body></html>")
    return "".join(parts)
