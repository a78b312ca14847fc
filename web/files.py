"""Files in chats over HTTP: upload with the sender's credential, download by participants only.

Flow: the sender uploads the bytes (``POST``, raw body, the file name in ``?name=``) and gets an
id; it then sends ``send_message`` with ``attachments: [id]`` on its socket, and the message
event carries each file's id, name, type and size. Visitors authenticate with their visitor
token (``Authorization: Bearer lcv_…`` and the widget key), agents with their session or API
token.

Rules: the size limit is enforced while the body streams in (``file_too_large`` at the first
byte over it); the type is sniffed from the bytes (``web.sniff``), never taken from the name or
the header, and must be in the workspace's allow-list (``file_type_refused``); the workspace's
files must fit its quota (``quota_exceeded``). Ids are 192 random bits. A file is served to the
workspace's agents and to the visitor whose chat it belongs to (their own uploads, and what an
agent sent them); anyone else gets 404, as for a file that does not exist. Every file is served
with ``Content-Disposition: attachment``, ``X-Content-Type-Options: nosniff`` and a sandboxing
CSP, as its sniffed type (never HTML or SVG: the sniffer does not produce them).
"""

from __future__ import annotations

import re
import secrets
import time
import urllib.parse
from typing import Any

from quart import Response, request

from storage import (
    Attachment,
    AuthorType,
    QuotaExceeded,
    Role,
    Visitor,
    Workspace,
    WorkspaceStatus,
)
from web.api_admin import audit
from web.auth import hash_secret
from web.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)
from web.httpapi import ApiBlueprint, Call, PublicCall, json_response
from web.schemas_files import (
    FileOut,
    FileSettings,
    FileUploadQuery,
    FileUsage,
    WidgetFileQuery,
    WidgetFileUploadQuery,
)
from web.services import Services
from web.settings import Settings
from web.sniff import KNOWN_TYPES, sniff

api = ApiBlueprint("files", "files")

UPLOAD_PATHS = re.compile(r"^/api/v1/(conversations/[^/]+/files|widget/files)$")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")
FILE_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"


class UnsupportedType(ApiError):
    status = 415
    default_code = "file_type_refused"


def new_file_id() -> str:
    """192 random bits: a file id cannot be guessed or enumerated."""
    return secrets.token_urlsafe(24)


def file_limits(settings: Settings, ws: Workspace) -> FileSettings:
    """The workspace's limits (``settings.files``), capped by the server's."""
    raw: dict[str, Any] = dict(ws.settings.get("files") or {})
    max_file = settings.files.max_bytes
    max_storage = settings.files.max_storage_bytes
    types = tuple(settings.files.allowed_types)
    if isinstance(raw.get("max_file_bytes"), int):
        max_file = min(max_file, int(raw["max_file_bytes"]))
    if isinstance(raw.get("max_storage_bytes"), int):
        max_storage = min(max_storage, int(raw["max_storage_bytes"]))
    if isinstance(raw.get("allowed_types"), list):
        types = tuple(t for t in raw["allowed_types"] if t in types)
    return FileSettings(max_file_bytes=max_file, max_storage_bytes=max_storage, allowed_types=types)


def clean_name(name: str) -> str:
    """A display name: no path, no control characters, at most 200 characters."""
    cleaned = _UNSAFE_NAME.sub("_", name).strip().strip(".") or "file"
    return cleaned[-200:]


def file_out(a: Attachment) -> FileOut:
    return FileOut(
        id=a.id, name=a.name, type=a.content_type, size=a.size, conversation_id=a.conversation_id
    )


async def _read_upload(limit: int) -> bytes:
    """The request body, refused at the first byte over ``limit`` (not after buffering it)."""
    too_large = PayloadTooLarge(f"the file is larger than {limit} bytes", code="file_too_large")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.body:
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _store_upload(
    services: Services,
    ws: Workspace,
    *,
    uploader_type: AuthorType,
    uploader_id: str,
    visitor_id: str,
    conversation_id: str | None,
    name: str,
) -> FileOut:
    wait_s = services.uploads.hit(f"{ws.id}:{uploader_type}:{uploader_id}")
    if wait_s:
        raise TooManyRequests("too many uploads; retry later", retry_after_s=wait_s)
    limits = file_limits(services.settings, ws)
    data = await _read_upload(limits.max_file_bytes)
    if not data:
        raise BadRequest("the file is empty", code="empty_file")
    content_type = sniff(data)
    if content_type not in limits.allowed_types:
        allowed = ", ".join(limits.allowed_types) or "none"
        raise UnsupportedType(f"files of this kind are not accepted here (allowed: {allowed})")
    attachment = Attachment(
        id=new_file_id(),
        workspace_id=ws.id,
        uploader_type=uploader_type,
        uploader_id=uploader_id,
        visitor_id=visitor_id,
        conversation_id=conversation_id,
        name=clean_name(name),
        content_type=content_type,
        size=len(data),
        created_at=time.time(),
    )
    try:
        await services.storage.add_attachment(
            attachment, data, max_storage_bytes=limits.max_storage_bytes
        )
    except QuotaExceeded:
        raise PayloadTooLarge(
            "the workspace's file storage is full", code="quota_exceeded"
        ) from None
    return file_out(attachment)


def file_response(attachment: Attachment, data: bytes) -> Response:
    response = Response(data, status=200, content_type=attachment.content_type)
    ascii_name = attachment.name.encode("ascii", "replace").decode().replace('"', "_")
    quoted = urllib.parse.quote(attachment.name, safe="")
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = FILE_CSP
    response.headers["Cache-Control"] = "private, no-store"
    return response


async def _bytes(services: Services, attachment: Attachment) -> bytes:
    data = await services.storage.read_attachment(attachment)
    if data is None:  # row without bytes (disk lost): as good as gone
        raise NotFound("file not found")
    return data


# ---------------------------------------------------------------- agents


@api.op(
    "POST",
    "/conversations/{conversation_id}/files",
    summary="Upload a file to send in this chat (raw body; the type is sniffed from the bytes)",
    query=FileUploadQuery,
    response=FileOut,
    status=201,
    scope="agent",
)
async def upload_agent_file(call: Call, conversation_id: str, query: FileUploadQuery) -> Response:
    """Then send ``send_message`` with ``attachments: [id]`` on the agent socket."""
    services = call.services
    conv = await services.storage.get_conversation(call.workspace_id, conversation_id)
    if conv is None:
        raise NotFound("conversation not found")
    out = await _store_upload(
        services,
        call.caller.workspace,
        uploader_type=AuthorType.AGENT,
        uploader_id=call.caller.agent.id,
        visitor_id=conv.visitor_id,
        conversation_id=conv.id,
        name=query.name,
    )
    return json_response(out, 201)


@api.op(
    "GET",
    "/files/{file_id}",
    summary="Download a file sent in one of the workspace's chats",
    stream=("application/octet-stream",),
)
async def download_agent_file(call: Call, file_id: str) -> Response:
    attachment = await call.services.storage.get_attachment(call.workspace_id, file_id)
    if attachment is None:
        raise NotFound("file not found")
    return file_response(attachment, await _bytes(call.services, attachment))


@api.op("GET", "/settings/files", summary="Limits for files in chats", response=FileSettings)
async def get_file_settings(call: Call) -> FileSettings:
    return file_limits(call.services.settings, call.caller.workspace)


@api.op(
    "GET",
    "/settings/files/usage",
    summary="Bytes the workspace's files take, against its quota",
    response=FileUsage,
)
async def get_file_usage(call: Call) -> FileUsage:
    used = await call.services.storage.attachment_usage(call.workspace_id)
    limits = file_limits(call.services.settings, call.caller.workspace)
    return FileUsage(used_bytes=used, max_storage_bytes=limits.max_storage_bytes)


@api.op(
    "PUT",
    "/settings/files",
    summary="Set the workspace's limits for files (capped by the server's)",
    body=FileSettings,
    response=FileSettings,
    role=Role.ADMIN,
)
async def put_file_settings(call: Call, body: FileSettings) -> FileSettings:
    for i, kind in enumerate(body.allowed_types):
        if kind not in KNOWN_TYPES:
            raise BadRequest(
                f"unknown file type {kind!r} (known: {', '.join(KNOWN_TYPES)})",
                code="invalid_value",
                field=f"$.allowed_types[{i}]",
            )
    settings = dict(call.caller.workspace.settings)
    settings["files"] = {
        "max_file_bytes": body.max_file_bytes,
        "max_storage_bytes": body.max_storage_bytes,
        "allowed_types": list(body.allowed_types),
    }
    ws = await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await call.services.access.workspace_updated(ws.id)
    await audit(call, "settings.files_changed", f"workspace:{ws.id}")
    return file_limits(call.services.settings, ws)


# ---------------------------------------------------------------- visitors (the widget)


async def _visitor(services: Services, key: str) -> tuple[Workspace, Visitor | None]:
    ws = await services.storage.get_workspace_by_widget_key(key)
    if ws is None or ws.status is not WorkspaceStatus.ACTIVE:
        raise NotFound("unknown widget key", code="unknown_widget_key")
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
    if not token:
        return ws, None
    return ws, await services.storage.find_visitor_by_token_hash(ws.id, hash_secret(token))


@api.op(
    "POST",
    "/widget/files",
    summary="A visitor uploads a file (visitor token as bearer; raw body)",
    query=WidgetFileUploadQuery,
    response=FileOut,
    status=201,
    auth=False,
)
async def upload_visitor_file(call: PublicCall, query: WidgetFileUploadQuery) -> Response:
    """Then send ``send_message`` with ``attachments: [id]`` on the visitor socket."""
    services = call.services
    ws, visitor = await _visitor(services, query.key)
    if visitor is None:
        raise Unauthorized("send the visitor token from hello as a bearer token")
    if await services.storage.is_banned(ws.id, visitor_id=visitor.id, ip=call.ip):
        raise Forbidden("banned", code="banned")
    out = await _store_upload(
        services,
        ws,
        uploader_type=AuthorType.VISITOR,
        uploader_id=visitor.id,
        visitor_id=visitor.id,
        conversation_id=None,
        name=query.name,
    )
    return json_response(out, 201)


@api.op(
    "GET",
    "/widget/files/{file_id}",
    summary="A visitor downloads a file of their own chat (visitor token as bearer)",
    query=WidgetFileQuery,
    stream=("application/octet-stream",),
    auth=False,
)
async def download_visitor_file(call: PublicCall, file_id: str, query: WidgetFileQuery) -> Response:
    services = call.services
    ws, visitor = await _visitor(services, query.key)
    attachment = await services.storage.get_attachment(ws.id, file_id)
    if visitor is None or attachment is None or not _visitor_may_read(visitor, attachment):
        raise NotFound("file not found")
    return file_response(attachment, await _bytes(services, attachment))


def _visitor_may_read(visitor: Visitor, attachment: Attachment) -> bool:
    """Their own uploads, and files sent in their chats (not an agent's upload not yet sent)."""
    if attachment.uploader_type is AuthorType.VISITOR:
        return attachment.uploader_id == visitor.id
    return attachment.visitor_id == visitor.id and attachment.sent_at is not None
