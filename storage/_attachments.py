"""Programs for the ``attachments`` table: insert under the workspace quota, bind to a message,
sweep uploads never sent. The bytes are the blob store's business (``storage.blobs``)."""

from __future__ import annotations

from collections.abc import Sequence

from storage import api
from storage._records import codec, columns, decode
from storage._sql import Dialect, Program, Q
from storage.errors import NotFound, QuotaExceeded

_COLUMNS = columns(api.Attachment)


def add_attachment_program(
    attachment: api.Attachment, *, max_storage_bytes: int | None
) -> Program[api.Attachment]:
    """Insert the row unless the workspace's files would exceed ``max_storage_bytes``."""
    ws = attachment.workspace_id
    found = yield Q("SELECT 1 AS ok FROM workspaces WHERE id=?", (ws,))
    if found.one() is None:
        raise NotFound(f"workspace {ws!r} not found")
    if max_storage_bytes is not None:
        used = yield Q(
            "SELECT COALESCE(SUM(size), 0) AS n FROM attachments WHERE workspace_id=?", (ws,)
        )
        row = used.one()
        total = int(row["n"]) if row else 0
        if total + attachment.size > max_storage_bytes:
            raise QuotaExceeded(
                f"the workspace's file storage is full ({total} of {max_storage_bytes} bytes)"
            )
    record_codec = codec(api.Attachment)
    yield Q(record_codec.insert_sql(), record_codec.to_args(attachment))
    return attachment


def bind_attachments_program(
    dialect: Dialect,
    workspace_id: str,
    attachment_ids: Sequence[str],
    *,
    conversation_id: str,
    visitor_id: str,
    uploader_type: api.AuthorType,
    uploader_id: str,
    now: float,
) -> Program[list[api.Attachment]]:
    ids = list(dict.fromkeys(attachment_ids))
    if not ids:
        return []
    in_sql, in_args = dialect.in_list("id", ids)
    where = (
        f"workspace_id=? AND {in_sql} AND uploader_type=? AND uploader_id=? AND visitor_id=?"
        " AND (conversation_id IS NULL OR conversation_id=?)"
    )
    args = [workspace_id, *in_args, str(uploader_type), uploader_id, visitor_id, conversation_id]
    yield Q(
        f"UPDATE attachments SET conversation_id=?, sent_at=COALESCE(sent_at, ?) WHERE {where}",
        [conversation_id, now, *args],
    )
    result = yield Q(f"SELECT {_COLUMNS} FROM attachments WHERE {where}", args)
    by_id = {row["id"]: decode(api.Attachment, row) for row in result.rows}
    return [by_id[i] for i in ids if i in by_id]


def unsent_attachments_program(cutoff: float) -> Program[list[str]]:
    """Delete rows of uploads never attached to a message since ``cutoff``; their ids."""
    result = yield Q("SELECT id FROM attachments WHERE sent_at IS NULL AND created_at<?", (cutoff,))
    ids = [str(row["id"]) for row in result.rows]
    if ids:
        yield Q("DELETE FROM attachments WHERE sent_at IS NULL AND created_at<?", (cutoff,))
    return ids
