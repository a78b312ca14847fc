"""Where the bytes of chat files live: a directory on local disk (the default) or an
S3-compatible bucket (``S3BlobStore``, through boto3, an optional dependency).

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
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, TypeVar

import trio

from storage._files import create_private_file, private_dir
from storage.errors import StorageUnavailable

T = TypeVar("T")

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
    """SQLite: beside the database (``<db>.files``); PostgreSQL: ``data/files``."""
    if backend == "sqlite":
        return f"{target}.files"
    return "data/files"


class S3BlobStore:
    """Bytes in an S3-compatible bucket (AWS S3, MinIO, Ceph, ...), one object per file.

    boto3 is synchronous: every call runs in a worker thread bounded by a ``CapacityLimiter``,
    and botocore's own connect/read timeouts bound each call, so a thread is never abandoned
    on cancel (it finishes within those timeouts). Errors of the store become
    ``StorageUnavailable`` here, once, without the service's text.
    """

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self._limiter = trio.CapacityLimiter(BLOB_THREADS)
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                connect_timeout=timeout_s,
                read_timeout=timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    def _key(self, blob_id: str) -> str:
        return self.prefix + _check(blob_id)

    async def _call(self, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        except (BotoCoreError, ClientError) as err:
            raise StorageUnavailable("the file store is unavailable; retry later") from err

    async def put(self, blob_id: str, data: bytes) -> None:
        key = self._key(blob_id)
        await self._call(
            lambda: self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/octet-stream"
            )
        )

    async def get(self, blob_id: str) -> bytes | None:
        key = self._key(blob_id)

        def read() -> bytes | None:
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except self._client.exceptions.NoSuchKey:
                return None
            body: bytes = response["Body"].read()
            return body

        return await self._call(read)

    async def delete(self, blob_ids: list[str]) -> int:
        keys = [self._key(b) for b in blob_ids]
        removed = 0
        for start in range(0, len(keys), 1000):  # the API's limit per request
            chunk = [{"Key": k} for k in keys[start : start + 1000]]
            response = await self._call(
                lambda chunk=chunk: self._client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": False}
                )
            )
            removed += len(response.get("Deleted", []))
        return removed

    async def exists(self, blob_id: str) -> bool:
        return await self.get(blob_id) is not None
