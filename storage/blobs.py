"""Where the bytes of chat files live: a directory on local disk (the default).

The database holds each file's metadata (``attachments`` table); the blob store holds its bytes
under the same unguessable id. Bytes are written before their row is committed and deleted
after their row is gone, so a crash leaves at worst an orphan file on disk, never a row whose
bytes are missing. Disk I/O runs in worker threads bounded by a ``CapacityLimiter``.

Files are created ``0600`` in a ``0700`` directory, written to a temporary name and renamed, so
a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final, Protocol

import trio

from storage._files import create_private_file, private_dir

BLOB_THREADS: Final = 4
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class BlobStore(Protocol):
    """Bytes by id. Ids are ours (``new_id``), never a client's file name."""

    async def put(self, blob_id: str, data: bytes) -> None: ...
    async def get(self, blob_id: str) -> bytes | None: ...
    async def delete(self, blob_ids: list[str]) -> int: ...
    async def exists(self, blob_id: str) -> bool: ...


def _check(blob_id: str) -> str:
    if not _SAFE_ID.match(blob_id):
        raise ValueError(f"not a blob id: {blob_id!r}")
    return blob_id


class LocalBlobStore:
    """One file per blob in ``directory`` (created 0700 on first use)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._limiter = trio.CapacityLimiter(BLOB_THREADS)
        self._ready = False

    def _path(self, blob_id: str) -> Path:
        return self.directory / _check(blob_id)

    def _ensure_dir(self) -> None:
        if not self._ready:
            private_dir(self.directory, tighten=True)
            self._ready = True

    def _put(self, blob_id: str, data: bytes) -> None:
        self._ensure_dir()
        final = self._path(blob_id)
        partial = final.with_name(final.name + ".partial")
        fd = create_private_file(partial)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, final)

    def _get(self, blob_id: str) -> bytes | None:
        try:
            return self._path(blob_id).read_bytes()
        except FileNotFoundError:
            return None

    def _delete(self, blob_ids: list[str]) -> int:
        removed = 0
        for blob_id in blob_ids:
            try:
                self._path(blob_id).unlink()
                removed += 1
            except FileNotFoundError:
                continue
        return removed

    async def put(self, blob_id: str, data: bytes) -> None:
        await trio.to_thread.run_sync(self._put, blob_id, data, limiter=self._limiter)

    async def get(self, blob_id: str) -> bytes | None:
        return await trio.to_thread.run_sync(self._get, blob_id, limiter=self._limiter)

    async def delete(self, blob_ids: list[str]) -> int:
        if not blob_ids:
            return 0
        return await trio.to_thread.run_sync(self._delete, list(blob_ids), limiter=self._limiter)

    async def exists(self, blob_id: str) -> bool:
        path = self._path(blob_id)
        return await trio.to_thread.run_sync(path.exists, limiter=self._limiter)


def default_files_dir(backend: str, target: str) -> str:
    """SQLite: beside the database (``<db>.files``); PostgreSQL: ``./livechat-files``."""
    if backend == "sqlite":
        return f"{target}.files"
    return "livechat-files"
