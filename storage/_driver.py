"""The ground every part of ``SqlStorage`` stands on: the driver a backend supplies, the
record helpers over it, the file store and the workspaces' data keys.

A backend (``storage.sqlite``, ``storage.postgres``) supplies three things: ``_write`` and
``_read`` drive a transaction program (``storage._sql``) on the single writer or on a reader,
and ``transaction`` opens one transaction that several awaits share (streaming export, bulk
import). The parts of the interface (``_directory``, ``_visitors``, ``_conversations``,
``_operations``) are mixins of ``SqlDriver``, put together in ``storage._base.SqlStorage``;
``_vault`` is one too, first in that order: it extends the data keys here with visitor keys.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import trio

from storage._keys import data_key_program
from storage._records import (
    codec,
    columns,
    decode,
)
from storage._sql import Dialect, Program, Q, Result, Row
from storage.blobs import BlobStore
from storage.crypto import (
    DataKey,
    EncryptionError,
    MasterKeyRing,
)
from storage.errors import NotFound, StorageError, StorageUnavailable

T = TypeVar("T")
R = TypeVar("R")

Clock = Callable[[], float]
log = logging.getLogger("livechat.storage")

# Fields an update_* call may not change: identity and tenancy are fixed at creation.
_FIXED_FIELDS = frozenset({"id", "workspace_id", "created_at"})


class TxSession(Protocol):
    """One open transaction that several awaits share."""

    async def run(self, q: Q) -> Result: ...


def fetch(q: Q) -> Program[list[Row]]:
    """A program of a single statement returning its rows."""
    result = yield q
    return result.rows


def execute(q: Q) -> Program[int]:
    """A program of a single statement returning its affected row count."""
    result = yield q
    return result.rowcount


def require_row(row: Row | None, what: str, key: str) -> Row:
    if row is None:
        raise NotFound(f"{what} {key!r} not found")
    return row


def _check_changes(cls: type[Any], changes: Mapping[str, Any]) -> None:
    allowed = set(codec(cls).columns) - _FIXED_FIELDS
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise TypeError(f"cannot change {cls.__name__} field(s): {', '.join(unknown)}")


class SqlDriver(abc.ABC):
    """The driver (abstract), record helpers, file store and data keys; see the module docstring."""

    backend_name: str

    def __init__(self, dialect: Dialect, *, clock: Clock) -> None:
        self._dialect = dialect
        self._clock = clock
        # Encryption at rest (storage.crypto): None stores plaintext (tests, benches); the
        # server always sets a ring (``use_keys``).
        self._keyring: MasterKeyRing | None = None
        self._data_keys: dict[str, DataKey] = {}
        self._blobs: BlobStore | None = None

    def use_blobs(self, blobs: BlobStore) -> None:
        """Where file bytes go (set by ``open_storage`` from ``files_dir``)."""
        self._blobs = blobs

    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:
            raise StorageUnavailable("no file store is configured")
        return self._blobs

    async def _drop_blobs(self, blob_ids: list[str]) -> None:
        """Delete bytes whose rows are committed gone; shielded: rows without bytes are fine,
        bytes without rows are an orphan the next sweep cannot find, so finish the job."""
        if blob_ids and self._blobs is not None:
            with trio.CancelScope(shield=True):
                await self._blobs.delete(blob_ids)

    # ------------------------------------------------------------ driver (backend-specific)

    @abc.abstractmethod
    async def _write(self, program: Program[T]) -> T:
        """Run a program in one write transaction on the writer; commit, or roll back on error."""

    async def _write_appends(self, program: Program[T]) -> T:
        """``_write`` for the group committer's transactions (one at a time, from its task);
        a backend may run them on a connection of their own (PostgreSQL)."""
        return await self._write(program)

    @abc.abstractmethod
    async def _read(self, program: Program[T]) -> T:
        """Run a program in one read-only transaction (a consistent snapshot)."""

    @abc.abstractmethod
    def transaction(self, *, write: bool) -> AbstractAsyncContextManager[TxSession]:
        """One transaction across awaits; committed on clean exit, rolled back on error."""

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def ping(self) -> None: ...

    @abc.abstractmethod
    async def _probe_write(self) -> None:
        """Raise ``StorageUnavailable`` unless a write transaction could start now (bounded)."""

    async def _scrub_after_erasure(self) -> None:
        """The erasure is committed; a scrub that fails (timeout on a huge index) is logged,
        not raised: the caller's erasure succeeded, and the next erasure scrubs again."""
        try:
            await self._scrub()
        except StorageError as err:
            log.warning("erasure committed, but scrubbing the database failed: %s", err)

    async def _scrub(self) -> None:
        """After an erasure, make the deleted bytes unrecoverable where the backend can (SQLite:
        see its override). PostgreSQL: nothing here; docs/security.md says what VACUUM does."""
        return None

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._read(fetch(Q(sql, args)))

    async def _fetch_one(self, cls: type[R], sql: str, *args: Any) -> R | None:
        rows = await self._read(fetch(Q(sql, args)))
        return decode(cls, rows[0]) if rows else None

    async def _fetch_all(self, cls: type[R], sql: str, *args: Any) -> list[R]:
        return [decode(cls, row) for row in await self._read(fetch(Q(sql, args)))]

    async def _insert(
        self,
        record: R,
        *,
        parent: tuple[str, str, str] | None = None,
        key: DataKey | None = None,
    ) -> R:
        """Insert a record; ``parent`` (table, id, workspace_id) must exist in that workspace.
        With ``key``, the table's sealed columns are encrypted."""
        record_codec = codec(type(record))
        args = record_codec.to_args(record)
        if key is not None:
            plain = dict(zip(record_codec.columns, args, strict=True))
            args = list(key.seal_row(record_codec.table, plain).values())

        def program() -> Program[R]:
            if parent is not None:
                table, parent_id, workspace_id = parent
                found = yield Q(
                    f"SELECT 1 AS ok FROM {table} WHERE id=? AND "
                    + ("id=?" if table == "workspaces" else "workspace_id=?"),
                    (parent_id, workspace_id),
                )
                require_row(found.one(), table.rstrip("s"), parent_id)
            yield Q(record_codec.insert_sql(), args)
            return record

        return await self._write(program())

    async def _update(
        self,
        cls: type[R],
        where: str,
        where_args: Sequence[Any],
        changes: Mapping[str, Any],
        *,
        key: DataKey | None = None,
        table: str = "",
    ) -> R:
        _check_changes(cls, changes)
        record_codec = codec(cls)
        sets = ",".join(f"{name}=?" for name in changes)
        encoded = {name: record_codec.encode(name, value) for name, value in changes.items()}
        if key is not None:
            encoded = key.seal_row(table, encoded)
        args = list(encoded.values())
        sql = f"UPDATE {record_codec.table} SET {sets or 'id=id'} WHERE {where}"
        rows = await self._write(fetch(Q(f"{sql} RETURNING {columns(cls)}", [*args, *where_args])))
        row = require_row(rows[0] if rows else None, cls.__name__.lower(), str(where_args[-1]))
        if key is not None:
            row = key.open_row(table, row)
        return decode(cls, row)

    # ------------------------------------------------------------ encryption at rest

    async def use_keys(self, ring: MasterKeyRing | None) -> None:
        """Seal sensitive columns with data keys wrapped by ``ring`` from now on.

        Without a ring, a database that already has data keys is refused (``EncryptionError``):
        its sealed values could not be read, and new plaintext would mix with them.
        """
        if ring is None:
            rows = await self._fetch("SELECT 1 AS found FROM data_keys LIMIT 1")
            if rows:
                raise EncryptionError(
                    "this database holds encrypted data: give its master key (setting"
                    " master_key / LIVECHAT_MASTER_KEY / master_key_file)"
                )
        self._keyring = ring
        self._data_keys.clear()

    @property
    def keyring(self) -> MasterKeyRing | None:
        return self._keyring

    async def data_key(self, workspace_id: str) -> DataKey | None:
        """The workspace's data key (created on first use; cached); None without a ring."""
        ring = self._keyring
        if ring is None:
            return None
        key = self._data_keys.get(workspace_id)
        if key is None:
            key = await self._read(data_key_program(ring, workspace_id, create=False))
            if key is None:
                key = await self._write(data_key_program(ring, workspace_id, create=True))
            assert key is not None
            self._data_keys[workspace_id] = key
        return key

    async def seal(self, workspace_id: str, value: str, *, purpose: str) -> str:
        """Encrypt a secret for storage in this workspace (IdP client secrets, TOTP seeds).

        ``purpose`` (e.g. ``"idp.client_secret"``) is bound into the ciphertext: open it with
        the same one. Without a master key ring the value is returned as is. Purging the
        workspace destroys the key, so the value is unrecoverable afterwards, in backups too.
        """
        key = await self.data_key(workspace_id)
        return value if key is None else key.seal(value, purpose)

    async def unseal(self, workspace_id: str, value: str, *, purpose: str) -> str:
        """The plaintext of a value from ``seal`` (plaintext from before encryption as is)."""
        key = await self.data_key(workspace_id)
        return value if key is None else key.open(value, purpose)

    async def _open_row(self, table: str, workspace_id: str, row: Row) -> Row:
        key = await self.data_key(workspace_id)
        return row if key is None else key.open_row(table, row)
