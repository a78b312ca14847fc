"""Chat files: the ``attachments`` rows (insert under the workspace quota, bind to a message,
sweep uploads never sent) and their bytes in the blob store (``storage.blobs``).

With encryption at rest, a file's name is sealed in its row and its bytes are sealed before they
reach the blob store (local disk or S3), with the workspace's data key; both are opened when the
file is served. The size and type in the row are the plaintext's, checked before sealing.
Files stored before encryption (bytes without ``BLOB_PREFIX``) are served as they are, and
``seal_plaintext_files`` (``livechat keys migrate``, every start) seals them: bytes first, then
the name, so a sealed name always means sealed bytes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import trio

from storage import api
from storage._records import codec, columns, decode
from storage._sql import Dialect, Program, Q
from storage.blobs import BlobStore
from storage.crypto import DataKey, ErasedFile, is_sealed, is_sealed_blob
from storage.errors import NotFound, QuotaExceeded

T = TypeVar("T")

_COLUMNS = columns(api.Attachment)
_CODEC = codec(api.Attachment)
_TABLE = "attachments"
MIGRATE_BATCH = 100  # files sealed per transaction by ``seal_plaintext_files``
# Sealing or opening costs about 1.3 ms per MiB: larger files are done in a worker thread (trio's
# default limiter bounds them) so that a 10 MiB upload or download does not stall the loop.
CRYPT_IN_THREAD_BYTES = 64 * 1024


async def _crypt(fn: Callable[[bytes, str], bytes], data: bytes, file_id: str) -> bytes:
    if len(data) < CRYPT_IN_THREAD_BYTES:
        return fn(data, file_id)
    return await trio.to_thread.run_sync(fn, data, file_id)


async def open_file_bytes(key: DataKey, data: bytes, file_id: str) -> bytes:
    """A stored file's bytes as uploaded (plaintext from before encryption as it is)."""
    return await _crypt(key.open_bytes, data, file_id)


def add_attachment_program(
    attachment: api.Attachment, *, max_storage_bytes: int | None, key: DataKey | None = None
) -> Program[api.Attachment]:
    """Insert the row (its name sealed with ``key``) unless the workspace's files would exceed
    ``max_storage_bytes``."""
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
    args = _CODEC.to_args(attachment)
    if key is not None:
        args = list(key.seal_row(_TABLE, dict(zip(_CODEC.columns, args, strict=True))).values())
    yield Q(_CODEC.insert_sql(), args)
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
    key: DataKey | None = None,
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
    by_id = {row["id"]: _decode(row, key) for row in result.rows}
    return [by_id[i] for i in ids if i in by_id]


def unsent_attachments_program(cutoff: float) -> Program[list[str]]:
    """Delete rows of uploads never attached to a message since ``cutoff``; their ids."""
    result = yield Q("SELECT id FROM attachments WHERE sent_at IS NULL AND created_at<?", (cutoff,))
    ids = [str(row["id"]) for row in result.rows]
    if ids:
        yield Q("DELETE FROM attachments WHERE sent_at IS NULL AND created_at<?", (cutoff,))
    return ids


def _decode(row: Mapping[str, Any], key: DataKey | None) -> api.Attachment:
    return decode(api.Attachment, key.open_row(_TABLE, row) if key is not None else row)


def _fetch(q: Q) -> Program[list[dict[str, Any]]]:
    result = yield q
    return result.rows


class AttachmentStore(abc.ABC):
    """The files part of ``SqlStorage`` (mixed in; see the module docstring)."""

    _clock: Any

    @property
    @abc.abstractmethod
    def dialect(self) -> Dialect: ...

    @property
    @abc.abstractmethod
    def blobs(self) -> BlobStore: ...

    @abc.abstractmethod
    async def _write(self, program: Program[T]) -> T: ...

    @abc.abstractmethod
    async def _read(self, program: Program[T]) -> T: ...

    @abc.abstractmethod
    async def data_key(self, workspace_id: str) -> DataKey | None: ...

    @abc.abstractmethod
    async def _drop_blobs(self, blob_ids: list[str]) -> None: ...

    # storage._vault: a file is about its visitor, sealed with their key
    @abc.abstractmethod
    async def _visitor_sealer(self, workspace_id: str, visitor_id: str) -> DataKey | None: ...

    @abc.abstractmethod
    async def _key_with_visitors(
        self, workspace_id: str, visitor_ids: Sequence[str]
    ) -> DataKey | None: ...

    async def add_attachment(
        self, attachment: api.Attachment, data: bytes, *, max_storage_bytes: int | None
    ) -> api.Attachment:
        """Bytes first (sealed), then the row (quota checked in its transaction); bytes
        removed if the row is refused, so a refused upload leaves nothing behind."""
        blobs = self.blobs
        key = await self._visitor_sealer(attachment.workspace_id, attachment.visitor_id)
        stored = data if key is None else await _crypt(key.seal_bytes, data, attachment.id)
        await blobs.put(attachment.id, stored)
        try:
            return await self._write(
                add_attachment_program(attachment, max_storage_bytes=max_storage_bytes, key=key)
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await blobs.delete([attachment.id])
            raise

    async def get_attachment(self, workspace_id: str, attachment_id: str) -> api.Attachment | None:
        sql = f"SELECT {_COLUMNS} FROM attachments WHERE workspace_id=? AND id=?"
        rows = await self._read(_fetch(Q(sql, (workspace_id, attachment_id))))
        if not rows:
            return None
        key = await self._key_with_visitors(workspace_id, [str(rows[0]["visitor_id"])])
        return _decode(rows[0], key)

    async def read_attachment(self, attachment: api.Attachment) -> bytes | None:
        """The file's bytes as uploaded (opened when sealed); None when they are gone (or
        their visitor's key is: erased)."""
        data = await self.blobs.get(attachment.id)
        if data is None:
            return None
        key = await self._key_with_visitors(attachment.workspace_id, [attachment.visitor_id])
        if key is None:
            return data
        try:
            return await _crypt(key.open_bytes, data, attachment.id)
        except ErasedFile:
            return None

    async def bind_attachments(
        self,
        workspace_id: str,
        attachment_ids: Sequence[str],
        *,
        conversation_id: str,
        visitor_id: str,
        uploader_type: api.AuthorType,
        uploader_id: str,
    ) -> list[api.Attachment]:
        key = await self._key_with_visitors(workspace_id, [visitor_id]) if attachment_ids else None
        return await self._write(
            bind_attachments_program(
                self.dialect,
                workspace_id,
                attachment_ids,
                conversation_id=conversation_id,
                visitor_id=visitor_id,
                uploader_type=uploader_type,
                uploader_id=uploader_id,
                now=self._clock(),
                key=key,
            )
        )

    async def attachment_usage(self, workspace_id: str) -> int:
        sql = "SELECT COALESCE(SUM(size), 0) AS n FROM attachments WHERE workspace_id=?"
        rows = await self._read(_fetch(Q(sql, (workspace_id,))))
        return int(rows[0]["n"]) if rows else 0

    async def purge_unsent_attachments(self, *, older_than_s: float) -> int:
        """Delete uploads never attached to a message within ``older_than_s``."""
        files = await self._write(unsent_attachments_program(self._clock() - older_than_s))
        await self._drop_blobs(files)
        return len(files)

    async def seal_plaintext_files(self) -> int:
        """Seal files stored before encryption (name still plaintext): the bytes are read,
        sealed and written back under the same id (an atomic replace: a reader meanwhile gets
        the old or the new bytes, and both open), then the name is sealed by a compare-and-set
        on the old name. Returns how many files were sealed."""
        total = 0
        while True:
            rows = await self._read(
                _fetch(
                    Q(
                        "SELECT id, workspace_id, name FROM attachments"
                        " WHERE name NOT LIKE 'lc1:%' AND name NOT LIKE 'lc2:%'"
                        " ORDER BY id LIMIT ?",
                        (MIGRATE_BATCH,),
                    )
                )
            )
            done = 0
            for row in rows:
                key = await self.data_key(str(row["workspace_id"]))
                if key is None:
                    return total
                file_id = str(row["id"])
                data = await self.blobs.get(file_id)
                if data is not None and not is_sealed_blob(data):
                    await self.blobs.put(file_id, await _crypt(key.seal_bytes, data, file_id))
                name = str(row["name"])
                if not is_sealed(name):
                    updated = await self._write(
                        _fetch(
                            Q(
                                "UPDATE attachments SET name=? WHERE id=? AND name=? RETURNING id",
                                (key.seal(name, f"{_TABLE}.name"), file_id, name),
                            )
                        )
                    )
                    done += len(updated)
            total += done
            if len(rows) < MIGRATE_BATCH or not done:
                return total
