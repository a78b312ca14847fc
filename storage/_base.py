"""``SqlStorage``: the whole ``Storage`` interface written once, over an abstract SQL driver.

A backend (``storage.sqlite``, ``storage.postgres``) supplies three things: ``_write`` and
``_read`` drive a transaction program (``storage._sql``) on the single writer or on a reader,
and ``transaction`` opens one transaction that several awaits share (streaming export, bulk import).
Everything else (tenancy checks, records, cursors, reports, retention) lives here, so the two
backends cannot drift apart.

Tenancy: every statement on a tenant table has ``workspace_id = ?`` in its WHERE clause (or checks
the parent row's workspace first), so a foreign id behaves exactly like a missing one.
"""

from __future__ import annotations

import abc
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, NoReturn, Protocol, TypeVar

import trio

from storage import _export as export
from storage import api
from storage._appends import Admit, GroupCommitConfig, GroupCommitter, append_batch_program
from storage._attachments import AttachmentStore
from storage._audit import (
    append_audit_program,
    chains_program,
    verify_chain_program,
)
from storage._auth import AuthStore
from storage._keys import data_key_program, rewrap_program, seal_plaintext_program
from storage._mail import MailStorage
from storage._purge import (
    erase_visitor_program,
    purge_conversations_program,
    purge_workspace_program,
)
from storage._records import (
    codec,
    columns,
    decode,
    decode_cursor,
    encode_cursor,
    new_id,
)
from storage._report import compute_report, fallback_groups
from storage._sql import Dialect, Program, Q, Result, Row
from storage._triggers import TriggerStore
from storage._vault import VaultStore
from storage._webhooks import WebhookStore
from storage.blobs import BlobStore
from storage.crypto import (
    MAX_QUERY_WORDS,
    DataKey,
    EncryptionError,
    MasterKeyRing,
    make_snippet,
    search_words,
)
from storage.errors import NotFound, StorageError, StorageUnavailable

T = TypeVar("T")
R = TypeVar("R")

Clock = Callable[[], float]
log = logging.getLogger("livechat.storage")

# Fields an update_* call may not change: identity and tenancy are fixed at creation.
_FIXED_FIELDS = frozenset({"id", "workspace_id", "created_at"})
_OPEN_STATES = (api.ConversationState.QUEUED.value, api.ConversationState.ACTIVE.value)
_MAX_PAGE = api.MAX_PAGE
_MAX_FETCH = api.MAX_PAGE + 1  # plain-list reads: one extra row tells the caller "more"
BACKUP_ACTION = "backup.completed"  # server-wide audit action of a finished backup


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


def _require(row: Row | None, what: str, key: str) -> Row:
    if row is None:
        raise NotFound(f"{what} {key!r} not found")
    return row


def _check_changes(cls: type[Any], changes: Mapping[str, Any]) -> None:
    allowed = set(codec(cls).columns) - _FIXED_FIELDS
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise TypeError(f"cannot change {cls.__name__} field(s): {', '.join(unknown)}")


@asynccontextmanager
async def serving_committer(storage: SqlStorage) -> AsyncIterator[None]:
    """Run the storage's group committer for the duration of the block.

    On exit the committer stops accepting, commits what is queued, and returns. An error raised
    by the block comes out as itself, not wrapped in an exception group: the committer never
    raises (a failed batch fails its callers instead), so the block's error is the only one.
    """
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(storage.committer.run)
            try:
                yield
            finally:
                storage.committer.close()
    except BaseExceptionGroup as group:
        raise_single(group)


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise a group holding (possibly nested) exactly one exception as that exception.

    Used where the storage's own tasks cannot fail, so a lone error is the caller's own.
    """
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if error is group:
        raise group
    raise error from None


class SqlStorage(
    VaultStore, AuthStore, MailStorage, WebhookStore, TriggerStore, AttachmentStore, abc.ABC
):
    """Implements ``storage.api.Storage``; see the module docstring."""

    backend_name: str

    def __init__(self, dialect: Dialect, *, clock: Clock, group_commit: GroupCommitConfig) -> None:
        self._dialect = dialect
        self._clock = clock
        self._committer = GroupCommitter(self._commit_batch, group_commit)
        # Encryption at rest (storage.crypto): None stores plaintext (tests, benches); the
        # server always sets a ring (``use_keys``).
        self._keyring: MasterKeyRing | None = None
        self._data_keys: dict[str, DataKey] = {}
        self._conversation_sealers: dict[str, DataKey] = {}  # storage._vault
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

    async def check_ready(self) -> None:
        """Raise ``StorageUnavailable`` unless an append could commit now: the committer is
        neither stuck in an attempt nor just failed by an outage, and the backend's write
        probe answers. What ``/readyz`` asks."""
        reason = self._committer.unavailable_reason()
        if reason is not None:
            raise StorageUnavailable(reason)
        await self._probe_write()

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

    @property
    def committer(self) -> GroupCommitter:
        """The group committer; its ``run`` is started by the backend's opener."""
        return self._committer

    async def _commit_batch(
        self, batch: list[Sequence[api.AppendRequest]], admit: Admit
    ) -> list[list[api.AppendResult] | StorageError]:
        # By conversation, sealing with its visitor's key; cached: no database round trip.
        keys = await self._batch_sealers(batch)
        program = append_batch_program(
            batch, now=self._clock(), dialect=self._dialect, admit=admit, data_keys=keys
        )
        return await self._write(program)

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
                _require(found.one(), table.rstrip("s"), parent_id)
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
        row = _require(rows[0] if rows else None, cls.__name__.lower(), str(where_args[-1]))
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
        self._conversation_sealers.clear()
        if ring is not None:
            await self._ensure_vault()

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
            key.vault = self.vault_table()
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

    async def rotate_master_key(self, new: MasterKeyRing, *, actor: str = "cli") -> int:
        """Re-wrap every data key under ``new``'s current master key, in one transaction, and
        use ``new`` from now on; returns how many keys were re-wrapped. ``new`` should keep the
        old master key as an older one until every server has restarted with ``new``."""
        old = self._keyring
        if old is None:
            raise EncryptionError("this storage has no master key to rotate")
        now = self._clock()

        def program() -> Program[int]:
            count = yield from rewrap_program(old, new)
            # Server-wide, in the same transaction: who rotated, to which key, how many.
            yield from append_audit_program(
                self._dialect,
                None,
                actor=actor,
                action="keys.rotated",
                target=f"master_key:{new.current_id}",
                details={"rewrapped": count, "master_keys": list(new.ids)},
                at=now,
            )
            return count

        count = await self._write(program())
        self._keyring = new
        return count

    async def check_data_keys(self, *, vault: bool = True) -> int:
        """Raise ``EncryptionError`` unless every data key opens with this storage's ring
        (a database with data keys and no ring included), and (``vault``) unless the key vault
        is there when the data needs one; returns how many data keys there are."""
        rows = await self._fetch("SELECT workspace_id, wrapped, master_key_id FROM data_keys")
        if rows and self._keyring is None:
            raise EncryptionError(
                "the data is encrypted: give the master key of the server it came from"
                " (master_key_file / --master-key-file, or master_key)"
            )
        for row in rows:
            assert self._keyring is not None
            self._keyring.unwrap(
                str(row["wrapped"]), str(row["master_key_id"]), f"workspace:{row['workspace_id']}"
            )
        if vault:
            await self._check_vault()
        return len(rows)

    async def seal_plaintext(self) -> int:
        """Seal every value still stored in plaintext (``livechat keys migrate``, and at
        server start); returns how many rows were sealed."""
        ring = self._keyring
        if ring is None:
            return 0
        total = 0
        while True:
            sealed = await self._write(seal_plaintext_program(ring))
            total += sealed
            if not sealed:
                break
        total += await self.seal_plaintext_files()
        if total:
            # The replaced plaintext (and its old index entries) must not linger in the files.
            await self._scrub_after_erasure()
        return total

    async def _open_row(self, table: str, workspace_id: str, row: Row) -> Row:
        key = await self._ready_key(workspace_id, [row])
        return row if key is None else key.open_row(table, row)

    # ------------------------------------------------------------ server-wide

    async def get_or_create_secret(self, name: str) -> str:
        def program() -> Program[str]:
            yield Q(
                "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_urlsafe(32)),
            )
            result = yield Q("SELECT value FROM secrets WHERE name=?", (name,))
            return str(_require(result.one(), "secret", name)["value"])

        return await self._write(program())

    async def record_backup(self, record: api.BackupRecord) -> None:
        """Remember a finished backup as a server-wide audit entry (survives restarts, and every
        server sharing the database sees it)."""
        await self.audit(
            None,
            actor="cli",
            action=BACKUP_ACTION,
            target=record.path,
            details={"size_bytes": record.size_bytes, "finished_at": record.finished_at},
        )

    async def last_backup(self) -> api.BackupRecord | None:
        sql = (
            f"SELECT {columns(api.AuditEntry)} FROM audit_log"
            " WHERE workspace_id IS NULL AND action=? ORDER BY at DESC, id DESC LIMIT 1"
        )
        entry = await self._fetch_one(api.AuditEntry, sql, BACKUP_ACTION)
        if entry is None:
            return None
        return api.BackupRecord(
            path=entry.target or "",
            size_bytes=int(entry.details.get("size_bytes", 0)),
            finished_at=float(entry.details.get("finished_at", entry.at)),
        )

    # ------------------------------------------------------------ workspaces

    async def create_workspace(
        self,
        *,
        name: str,
        allowed_origins: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
    ) -> api.Workspace:
        workspace = api.Workspace(
            id=new_id(),
            name=name,
            widget_key=secrets.token_urlsafe(16),
            identity_secret=secrets.token_urlsafe(32),
            allowed_origins=tuple(allowed_origins),
            settings=dict(settings or {}),
            created_at=self._clock(),
        )
        return await self._insert(workspace)

    async def get_workspace(self, workspace_id: str) -> api.Workspace | None:
        sql = f"SELECT {columns(api.Workspace)} FROM workspaces WHERE id=?"
        return await self._fetch_one(api.Workspace, sql, workspace_id)

    async def get_workspace_by_widget_key(self, widget_key: str) -> api.Workspace | None:
        sql = f"SELECT {columns(api.Workspace)} FROM workspaces WHERE widget_key=?"
        return await self._fetch_one(api.Workspace, sql, widget_key)

    async def list_workspaces(self) -> list[api.Workspace]:
        sql = f"SELECT {columns(api.Workspace)} FROM workspaces ORDER BY created_at, id"
        return await self._fetch_all(api.Workspace, sql)

    async def update_workspace(self, workspace_id: str, **changes: Any) -> api.Workspace:
        return await self._update(api.Workspace, "id=?", [workspace_id], changes)

    # ------------------------------------------------------------ agents

    async def create_agent(
        self,
        workspace_id: str,
        *,
        username: str,
        display_name: str,
        password_hash: str | None,
        role: api.Role = api.Role.AGENT,
        email: str | None = None,
        max_chats: int = 5,
        group_ids: Sequence[str] = (),
    ) -> api.Agent:
        now = self._clock()
        agent = api.Agent(
            id=new_id(),
            workspace_id=workspace_id,
            username=username.lower(),
            display_name=display_name,
            email=email,
            role=role,
            password_hash=password_hash,
            max_chats=max_chats,
            group_ids=tuple(group_ids),
            created_at=now,
            password_changed_at=now,
        )
        return await self._insert(agent, parent=("workspaces", workspace_id, workspace_id))

    async def get_agent(self, workspace_id: str, agent_id: str) -> api.Agent | None:
        sql = f"SELECT {columns(api.Agent)} FROM agents WHERE id=? AND workspace_id=?"
        return await self._fetch_one(api.Agent, sql, agent_id, workspace_id)

    async def find_agent_by_username(self, username: str) -> api.Agent | None:
        sql = f"SELECT {columns(api.Agent)} FROM agents WHERE username=?"
        return await self._fetch_one(api.Agent, sql, username.lower())

    async def list_agents(self, workspace_id: str) -> list[api.Agent]:
        sql = f"SELECT {columns(api.Agent)} FROM agents WHERE workspace_id=? ORDER BY username"
        return await self._fetch_all(api.Agent, sql, workspace_id)

    async def update_agent(self, workspace_id: str, agent_id: str, **changes: Any) -> api.Agent:
        """Also lower-cases a new username and stamps ``password_changed_at`` with a new hash."""
        if "username" in changes:
            changes["username"] = str(changes["username"]).lower()
        if "password_hash" in changes:
            changes.setdefault("password_changed_at", self._clock())
        where = "workspace_id=? AND id=?"
        return await self._update(api.Agent, where, [workspace_id, agent_id], changes)

    # ------------------------------------------------------------ groups

    async def create_group(
        self,
        workspace_id: str,
        *,
        name: str,
        fallback_group_id: str | None = None,
        public: bool = False,
    ) -> api.Group:
        group = api.Group(
            id=new_id(),
            workspace_id=workspace_id,
            name=name,
            fallback_group_id=fallback_group_id,
            public=public,
        )
        return await self._insert(group, parent=("workspaces", workspace_id, workspace_id))

    async def get_group(self, workspace_id: str, group_id: str) -> api.Group | None:
        sql = f"SELECT {columns(api.Group)} FROM agent_groups WHERE id=? AND workspace_id=?"
        return await self._fetch_one(api.Group, sql, group_id, workspace_id)

    async def list_groups(self, workspace_id: str) -> list[api.Group]:
        sql = f"SELECT {columns(api.Group)} FROM agent_groups WHERE workspace_id=? ORDER BY name"
        return await self._fetch_all(api.Group, sql, workspace_id)

    async def update_group(self, workspace_id: str, group_id: str, **changes: Any) -> api.Group:
        where = "workspace_id=? AND id=?"
        return await self._update(api.Group, where, [workspace_id, group_id], changes)

    async def delete_group(self, workspace_id: str, group_id: str) -> None:
        """Also drops the group from its agents and from other groups' fallbacks."""
        agent_codec = codec(api.Agent)

        def program() -> Program[None]:
            deleted = yield Q(
                "DELETE FROM agent_groups WHERE workspace_id=? AND id=?", (workspace_id, group_id)
            )
            if deleted.rowcount == 0:
                raise NotFound(f"group {group_id!r} not found")
            yield Q(
                "UPDATE agent_groups SET fallback_group_id=NULL"
                " WHERE workspace_id=? AND fallback_group_id=?",
                (workspace_id, group_id),
            )
            agents = yield Q(
                "SELECT id, group_ids FROM agents WHERE workspace_id=?", (workspace_id,)
            )
            for row in agents.rows:
                group_ids = agent_codec.decoders[agent_codec.columns.index("group_ids")]
                assert group_ids is not None
                current: tuple[str, ...] = group_ids(row["group_ids"])
                if group_id in current:
                    kept = tuple(g for g in current if g != group_id)
                    yield Q(
                        "UPDATE agents SET group_ids=? WHERE workspace_id=? AND id=?",
                        (agent_codec.encode("group_ids", kept), workspace_id, row["id"]),
                    )

        await self._write(program())

    # ------------------------------------------------------------ canned responses

    async def create_canned_response(
        self, workspace_id: str, *, shortcut: str, text: str
    ) -> api.CannedResponse:
        canned = api.CannedResponse(
            id=new_id(), workspace_id=workspace_id, shortcut=shortcut, text=text
        )
        return await self._insert(canned, parent=("workspaces", workspace_id, workspace_id))

    async def list_canned_responses(self, workspace_id: str) -> list[api.CannedResponse]:
        sql = (
            f"SELECT {columns(api.CannedResponse)} FROM canned_responses"
            " WHERE workspace_id=? ORDER BY shortcut, id"
        )
        return await self._fetch_all(api.CannedResponse, sql, workspace_id)

    async def update_canned_response(
        self, workspace_id: str, canned_id: str, **changes: Any
    ) -> api.CannedResponse:
        where = "workspace_id=? AND id=?"
        return await self._update(api.CannedResponse, where, [workspace_id, canned_id], changes)

    async def delete_canned_response(self, workspace_id: str, canned_id: str) -> None:
        sql = "DELETE FROM canned_responses WHERE workspace_id=? AND id=?"
        if await self._write(execute(Q(sql, (workspace_id, canned_id)))) == 0:
            raise NotFound(f"canned response {canned_id!r} not found")

    # ------------------------------------------------------------ visitors

    async def create_visitor(
        self,
        workspace_id: str,
        *,
        token_hash: str | None,
        external_id: str | None = None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> api.Visitor:
        now = self._clock()
        visitor = api.Visitor(
            id=new_id(),
            workspace_id=workspace_id,
            token_hash=token_hash,
            external_id=external_id,
            user_agent=user_agent,
            ip=ip,
            first_seen_at=now,
            last_seen_at=now,
        )
        key = await self._visitor_sealer(workspace_id, visitor.id, new_visitor=True)
        return await self._insert(
            visitor, parent=("workspaces", workspace_id, workspace_id), key=key
        )

    async def _visitor(self, workspace_id: str, sql: str, *args: Any) -> api.Visitor | None:
        rows = await self._read(fetch(Q(sql, args)))
        if not rows:
            return None
        return decode(api.Visitor, await self._open_row("visitors", workspace_id, rows[0]))

    async def get_visitor(self, workspace_id: str, visitor_id: str) -> api.Visitor | None:
        sql = f"SELECT {columns(api.Visitor)} FROM visitors WHERE id=? AND workspace_id=?"
        return await self._visitor(workspace_id, sql, visitor_id, workspace_id)

    async def find_visitor_by_token_hash(
        self, workspace_id: str, token_hash: str
    ) -> api.Visitor | None:
        sql = (
            f"SELECT {columns(api.Visitor)} FROM visitors WHERE workspace_id=? AND token_hash=?"
            " ORDER BY last_seen_at DESC LIMIT 1"
        )
        return await self._visitor(workspace_id, sql, workspace_id, token_hash)

    async def find_visitor_by_external_id(
        self, workspace_id: str, external_id: str
    ) -> api.Visitor | None:
        sql = (
            f"SELECT {columns(api.Visitor)} FROM visitors WHERE workspace_id=? AND external_id=?"
            " ORDER BY last_seen_at DESC LIMIT 1"
        )
        return await self._visitor(workspace_id, sql, workspace_id, external_id)

    async def update_visitor(
        self, workspace_id: str, visitor_id: str, **changes: Any
    ) -> api.Visitor:
        where = "workspace_id=? AND id=?"
        key = await self._visitor_sealer(workspace_id, visitor_id)
        return await self._update(
            api.Visitor, where, [workspace_id, visitor_id], changes, key=key, table="visitors"
        )

    async def add_page_view(self, workspace_id: str, view: api.PageView) -> None:
        def program() -> Program[None]:
            found = yield Q(
                "SELECT 1 AS ok FROM visitors WHERE id=? AND workspace_id=?",
                (view.visitor_id, workspace_id),
            )
            _require(found.one(), "visitor", view.visitor_id)
            yield Q(
                "INSERT INTO page_views (id, workspace_id, visitor_id, url, title, referrer, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    new_id(),
                    workspace_id,
                    view.visitor_id,
                    view.url,
                    view.title,
                    view.referrer,
                    float(view.at or self._clock()),
                ),
            )

        await self._write(program())

    async def list_page_views(
        self, workspace_id: str, visitor_id: str, limit: int = 50
    ) -> list[api.PageView]:
        rows = await self._fetch(
            "SELECT visitor_id, url, title, referrer, at FROM page_views"
            " WHERE workspace_id=? AND visitor_id=? ORDER BY at DESC, id DESC LIMIT ?",
            workspace_id,
            visitor_id,
            min(limit, _MAX_PAGE),
        )
        return [api.PageView(**{**row, "at": float(row["at"])}) for row in rows]

    # ------------------------------------------------------------ conversations

    async def create_conversation(
        self,
        workspace_id: str,
        *,
        visitor_id: str,
        group_id: str | None = None,
        origin_key: str | None = None,
    ) -> api.Conversation:
        """See ``storage.api.Storage.create_conversation``; the unique (workspace_id,
        origin_key) index makes two racing retries end with one conversation."""
        now = self._clock()
        conversation = api.Conversation(
            id=new_id(),
            workspace_id=workspace_id,
            visitor_id=visitor_id,
            group_id=group_id,
            created_at=now,
            last_activity_at=now,
            origin_key=origin_key,
        )
        if origin_key is None:
            return await self._insert(conversation, parent=("visitors", visitor_id, workspace_id))
        record_codec = codec(api.Conversation)
        select = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND origin_key=?"
        )

        def program() -> Program[Row]:
            found = yield Q(
                "SELECT 1 AS ok FROM visitors WHERE id=? AND workspace_id=?",
                (visitor_id, workspace_id),
            )
            _require(found.one(), "visitor", visitor_id)
            yield Q(
                record_codec.insert_sql() + " ON CONFLICT (workspace_id, origin_key) DO NOTHING",
                record_codec.to_args(conversation),
            )
            result = yield Q(select, (workspace_id, origin_key))
            return _require(result.one(), "conversation", origin_key)

        [found] = await self._opened_conversations([await self._write(program())])
        return found

    async def find_conversation_by_origin(
        self, workspace_id: str, origin_key: str
    ) -> api.Conversation | None:
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND origin_key=?"
        )
        found = await self._read_conversations(sql, workspace_id, origin_key)
        return found[0] if found else None

    async def get_conversation(
        self, workspace_id: str, conversation_id: str
    ) -> api.Conversation | None:
        sql = f"SELECT {columns(api.Conversation)} FROM conversations WHERE id=? AND workspace_id=?"
        found = await self._read_conversations(sql, conversation_id, workspace_id)
        return found[0] if found else None

    async def list_conversations(
        self,
        workspace_id: str,
        filters: api.ConversationFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> api.Page:
        """Newest first (created_at desc, id desc); the cursor is the last row's position."""
        where = ["workspace_id=?"]
        args: list[Any] = [workspace_id]
        for column, value in (
            ("state", filters.state),
            ("assignee_id", filters.assignee_id),
            ("group_id", filters.group_id),
            ("visitor_id", filters.visitor_id),
        ):
            if value is not None:
                where.append(f"{column}=?")
                args.append(str(value))
        if filters.tag is not None:
            where.append(self._dialect.tag_filter("tags"))
            args.append(filters.tag)
        if filters.created_after is not None:
            where.append("created_at>=?")
            args.append(float(filters.created_after))
        if filters.created_before is not None:
            where.append("created_at<?")
            args.append(float(filters.created_before))
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            where.append("(created_at<? OR (created_at=? AND id<?))")
            args += [at, at, last_id]
        limit = max(1, min(limit, _MAX_PAGE))
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        items = await self._read_conversations(sql, *args, limit + 1)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1].created_at, items[-1].id)
        return api.Page(items=tuple(items), next_cursor=next_cursor)

    async def list_open_conversations(self, workspace_id: str) -> list[api.Conversation]:
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND state IN (?, ?) ORDER BY created_at, id"
        )
        return await self._read_conversations(sql, workspace_id, *_OPEN_STATES)

    async def list_visitor_conversations(
        self, workspace_id: str, visitor_id: str
    ) -> list[api.Conversation]:
        sql = (
            f"SELECT {columns(api.Conversation)} FROM conversations"
            " WHERE workspace_id=? AND visitor_id=? ORDER BY created_at DESC, id DESC"
        )
        return await self._read_conversations(sql, workspace_id, visitor_id)

    async def append(self, request: api.AppendRequest) -> api.AppendResult:
        """See ``storage.api.Storage.append``; queued to the group committer."""
        (result,) = await self._committer.submit([request])
        return result

    async def append_many(self, requests: Sequence[api.AppendRequest]) -> list[api.AppendResult]:
        """All in one commit, in order; if one conversation is missing, none is appended."""
        return await self._committer.submit(list(requests))

    async def history(
        self,
        workspace_id: str,
        conversation_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        include_agents_only: bool = True,
    ) -> list[api.Event]:
        """Ascending seq. Neither bound given: the latest ``limit`` events."""
        where = ["conversation_id=?", "workspace_id=?"]
        args: list[Any] = [conversation_id, workspace_id]
        if after_seq is not None:
            where.append("seq>?")
            args.append(after_seq)
        if before_seq is not None:
            where.append("seq<?")
            args.append(before_seq)
        if not include_agents_only:
            where.append("visibility=?")
            args.append(api.Visibility.ALL.value)
        newest_first = after_seq is None
        sql = (
            f"SELECT {columns(api.Event)} FROM events WHERE {' AND '.join(where)}"
            f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        )
        rows = await self._read(fetch(Q(sql, [*args, max(1, min(limit, _MAX_FETCH))])))
        key = await self._ready_key(workspace_id, rows)
        if key is not None:
            rows = [key.open_row("events", row) for row in rows]
        events = [decode(api.Event, row) for row in rows]
        if newest_first:
            events.reverse()
        return events

    async def search(
        self, workspace_id: str, query: str, *, limit: int = 20
    ) -> list[api.SearchHit]:
        """Messages, offline messages and notes holding every word of ``query``, newest first.

        Whole words only: each word becomes its keyed token (the blind index, see
        ``storage.crypto``) and the backend's full-text index finds the events holding every
        token. The hits are decrypted here, and the snippet is made from the plaintext.
        """
        words = list(dict.fromkeys(search_words(query)))[:MAX_QUERY_WORDS]
        if not words:
            return []
        key = await self.data_key(workspace_id)
        tokens = [key.token(w) for w in words] if key is not None else words
        text = self._dialect.search_query(tokens)
        if text is None:
            return []
        rows = await self._read(
            fetch(self._dialect.search(workspace_id, text, max(1, min(limit, _MAX_FETCH))))
        )
        if key is not None:
            await self._load_visitor_keys(key, rows)
        hits = []
        for row in rows:
            body = str(row["body"])
            if key is not None:
                body = key.open(body, "events.body")
            hits.append(
                api.SearchHit(
                    conversation_id=row["conversation_id"],
                    seq=int(row["seq"]),
                    body=body,
                    snippet=make_snippet(body, set(words)),
                    created_at=float(row["created_at"]),
                )
            )
        return hits

    # ------------------------------------------------------------ routing, bans, audit

    async def record_routing_decision(
        self,
        workspace_id: str,
        *,
        conversation_id: str,
        agent_id: str | None,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        decision = api.RoutingDecision(
            id=new_id(),
            workspace_id=workspace_id,
            conversation_id=conversation_id,
            agent_id=agent_id,
            reason=reason,
            details=dict(details or {}),
            at=self._clock(),
        )
        await self._insert(decision, parent=("conversations", conversation_id, workspace_id))

    async def record_routing_decisions(self, decisions: Sequence[api.NewRoutingDecision]) -> int:
        if not decisions:
            return 0
        records = [
            api.RoutingDecision(
                id=new_id(),
                workspace_id=d.workspace_id,
                conversation_id=d.conversation_id,
                agent_id=d.agent_id,
                reason=d.reason,
                details=dict(d.details),
                at=d.at,
            )
            for d in decisions
        ]
        record_codec = codec(api.RoutingDecision)
        wanted = sorted({r.conversation_id for r in records})

        def program() -> Program[int]:
            found: set[tuple[str, str]] = set()
            for start in range(0, len(wanted), 500):  # well below any bound-parameter limit
                chunk = wanted[start : start + 500]
                rows = yield Q(
                    "SELECT id, workspace_id FROM conversations WHERE id IN ("
                    + ",".join("?" * len(chunk))
                    + ")",
                    tuple(chunk),
                )
                found.update((row["id"], row["workspace_id"]) for row in rows.rows)
            kept = [r for r in records if (r.conversation_id, r.workspace_id) in found]
            if kept:
                yield Q(record_codec.insert_sql(), many=[record_codec.to_args(r) for r in kept])
            return len(kept)

        return await self._write(program())

    async def list_routing_decisions(
        self, workspace_id: str, *, conversation_id: str | None = None, limit: int = 100
    ) -> list[api.RoutingDecision]:
        """Newest first."""
        where, args = "workspace_id=?", [workspace_id]
        if conversation_id is not None:
            where += " AND conversation_id=?"
            args.append(conversation_id)
        sql = (
            f"SELECT {columns(api.RoutingDecision)} FROM routing_decisions WHERE {where}"
            " ORDER BY at DESC, id DESC LIMIT ?"
        )
        return await self._fetch_all(
            api.RoutingDecision, sql, *args, max(1, min(limit, _MAX_FETCH))
        )

    async def add_ban(
        self,
        workspace_id: str,
        *,
        kind: api.BanKind,
        value: str,
        reason: str | None = None,
        expires_at: float | None = None,
    ) -> api.Ban:
        ban = api.Ban(
            id=new_id(),
            workspace_id=workspace_id,
            kind=kind,
            value=value,
            reason=reason,
            created_at=self._clock(),
            expires_at=expires_at,
        )
        return await self._insert(ban, parent=("workspaces", workspace_id, workspace_id))

    async def list_bans(self, workspace_id: str) -> list[api.Ban]:
        sql = f"SELECT {columns(api.Ban)} FROM bans WHERE workspace_id=? ORDER BY created_at, id"
        return await self._fetch_all(api.Ban, sql, workspace_id)

    async def remove_ban(self, workspace_id: str, ban_id: str) -> None:
        sql = "DELETE FROM bans WHERE workspace_id=? AND id=?"
        if await self._write(execute(Q(sql, (workspace_id, ban_id)))) == 0:
            raise NotFound(f"ban {ban_id!r} not found")

    async def is_banned(self, workspace_id: str, *, visitor_id: str | None, ip: str | None) -> bool:
        """True when an unexpired ban matches the visitor id or the IP address."""
        matches, args = [], [workspace_id, self._clock()]
        for kind, value in ((api.BanKind.VISITOR, visitor_id), (api.BanKind.IP, ip)):
            if value is not None:
                matches.append("(kind=? AND value=?)")
                args += [kind.value, value]
        if not matches:
            return False
        rows = await self._fetch(
            "SELECT 1 AS banned FROM bans WHERE workspace_id=?"
            f" AND (expires_at IS NULL OR expires_at>?) AND ({' OR '.join(matches)}) LIMIT 1",
            *args,
        )
        return bool(rows)

    async def audit(
        self,
        workspace_id: str | None,
        *,
        actor: str,
        action: str,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
        ip: str | None = None,
    ) -> None:
        program = append_audit_program(
            self._dialect,
            workspace_id,
            actor=actor,
            action=action,
            target=target,
            details=details,
            ip=ip,
            at=self._clock(),
        )
        await self._write(program)

    async def list_audit(
        self, workspace_id: str | None, *, limit: int = 100, cursor: str | None = None
    ) -> api.Page:
        """Newest first, keyset-paginated like ``list_conversations``; None: the server-wide
        entries (workspace purges, backups)."""
        if workspace_id is None:
            where, args = "workspace_id IS NULL", list[Any]()
        else:
            where, args = "workspace_id=?", list[Any]([workspace_id])
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            where += " AND (at<? OR (at=? AND id<?))"
            args += [at, at, last_id]
        limit = max(1, min(limit, _MAX_PAGE))
        sql = (
            f"SELECT {columns(api.AuditEntry)} FROM audit_log WHERE {where}"
            " ORDER BY at DESC, id DESC LIMIT ?"
        )
        items = await self._fetch_all(api.AuditEntry, sql, *args, limit + 1)
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1].at, items[-1].id)
        return api.Page(items=tuple(items), next_cursor=next_cursor)

    # ------------------------------------------------------------ API tokens and sessions

    async def create_api_token(
        self, workspace_id: str, *, agent_id: str, name: str, token_hash: str, scopes: Sequence[str]
    ) -> api.ApiToken:
        token = api.ApiToken(
            id=new_id(),
            workspace_id=workspace_id,
            agent_id=agent_id,
            name=name,
            token_hash=token_hash,
            scopes=tuple(scopes),
            created_at=self._clock(),
        )
        return await self._insert(token, parent=("agents", agent_id, workspace_id))

    async def find_api_token(self, token_hash: str) -> api.ApiToken | None:
        """Revoked tokens are returned too: the caller checks ``revoked_at``."""
        sql = f"SELECT {columns(api.ApiToken)} FROM api_tokens WHERE token_hash=?"
        return await self._fetch_one(api.ApiToken, sql, token_hash)

    async def list_api_tokens(self, workspace_id: str) -> list[api.ApiToken]:
        sql = (
            f"SELECT {columns(api.ApiToken)} FROM api_tokens WHERE workspace_id=?"
            " ORDER BY created_at, id"
        )
        return await self._fetch_all(api.ApiToken, sql, workspace_id)

    async def revoke_api_token(self, workspace_id: str, token_id: str) -> None:
        sql = (
            "UPDATE api_tokens SET revoked_at=COALESCE(revoked_at, ?) WHERE workspace_id=? AND id=?"
        )
        if await self._write(execute(Q(sql, (self._clock(), workspace_id, token_id)))) == 0:
            raise NotFound(f"API token {token_id!r} not found")

    async def create_session(self, session: api.Session) -> None:
        await self._insert(session)

    async def get_session(self, id_hash: str) -> api.Session | None:
        sql = f"SELECT {columns(api.Session)} FROM sessions WHERE id_hash=?"
        return await self._fetch_one(api.Session, sql, id_hash)

    async def touch_session(self, id_hash: str, at: float) -> None:
        sql = "UPDATE sessions SET last_seen_at=? WHERE id_hash=?"
        await self._write(execute(Q(sql, (float(at), id_hash))))

    async def delete_session(self, id_hash: str) -> None:
        await self._write(execute(Q("DELETE FROM sessions WHERE id_hash=?", (id_hash,))))

    async def delete_agent_sessions(
        self, agent_id: str, *, except_id_hash: str | None = None
    ) -> None:
        sql, args = "DELETE FROM sessions WHERE agent_id=?", [agent_id]
        if except_id_hash is not None:
            sql += " AND id_hash<>?"
            args.append(except_id_hash)
        await self._write(execute(Q(sql, args)))

    # ------------------------------------------------------------ reports

    async def report(self, workspace_id: str, *, since: float, until: float) -> api.Report:
        """Aggregates over conversations created in [since, until), days in UTC."""
        rows = await self._fetch(
            "SELECT id, created_at, first_response_at, closed_at, close_reason, rating,"
            " assignee_id, group_id, origin_key"
            " FROM conversations WHERE workspace_id=? AND created_at>=? AND created_at<?",
            workspace_id,
            float(since),
            float(until),
        )
        decisions = await self._fetch(
            "SELECT d.conversation_id, d.details FROM routing_decisions d"
            " JOIN conversations c ON c.id=d.conversation_id AND c.workspace_id=d.workspace_id"
            " WHERE d.workspace_id=? AND d.reason='group_fallback'"
            " AND c.created_at>=? AND c.created_at<? ORDER BY d.at, d.id",
            workspace_id,
            float(since),
            float(until),
        )
        return compute_report(rows, fallback_groups(decisions))

    # ------------------------------------------------------------ export, import, retention

    async def export_jsonl(
        self, workspace_id: str, *, visitor_id: str | None = None, sealed: bool = False
    ) -> AsyncIterator[str]:
        """Decrypted with the workspace's data key: the customer's copy of their data. With
        ``sealed`` (a workspace backup kept on the server): values as stored, plus the
        workspace's wrapped data key; restoring it needs the master key."""
        key = None if sealed else await self.data_key(workspace_id)
        lines = export.export_jsonl(
            self, workspace_id, visitor_id=visitor_id, key=key, sealed=sealed
        )
        async for line in lines:
            yield line

    def export_database_jsonl(self) -> AsyncIterator[str]:
        """Every workspace and the server-wide rows (secrets, server audit): a full backup."""
        return export.export_jsonl(self, None, visitor_id=None)

    async def export_csv(self, workspace_id: str) -> AsyncIterator[str]:
        key = await self.data_key(workspace_id)
        async for line in export.export_csv(self, workspace_id, key=key):
            yield line

    async def import_jsonl(self, lines: AsyncIterator[str]) -> int:
        return await export.import_jsonl(self, lines)

    async def purge_conversations_older_than(
        self, workspace_id: str, *, days: int, actor: str = "system"
    ) -> int:
        """Delete conversations whose last activity is older than ``days``; audited."""
        now = self._clock()
        program = purge_conversations_program(
            self._dialect,
            workspace_id,
            cutoff=now - days * 86400.0,
            days=days,
            now=now,
            actor=actor,
        )
        deleted, files = await self._write(program)
        await self._drop_blobs(files)
        return deleted

    async def erase_visitor(
        self, workspace_id: str, visitor_id: str, *, actor: str = "system", ip: str | None = None
    ) -> None:
        """Delete the visitor and everything about them (data-subject erasure); audited once,
        in the same transaction (``visitor.erased``); their files' bytes after the commit."""
        # The key first, in its own commit: every copy of their data, backups included,
        # is unreadable from here on (docs/security.md); again after: no orphan key.
        await self._destroy_visitor_key(workspace_id, visitor_id)
        program = erase_visitor_program(
            self._dialect, workspace_id, visitor_id, now=self._clock(), actor=actor, ip=ip
        )
        files = await self._write(program)
        await self._destroy_visitor_key(workspace_id, visitor_id)
        await self._drop_blobs(files)
        await self._scrub_after_erasure()

    async def purge_workspace(self, workspace_id: str, *, actor: str = "system") -> None:
        """Delete every row of the workspace; audited server-wide (the workspace is gone)."""
        await self._destroy_workspace_keys(workspace_id)  # its visitor keys (the vault)
        program = purge_workspace_program(
            self._dialect, workspace_id, now=self._clock(), actor=actor
        )
        files = await self._write(program)
        self._data_keys.pop(workspace_id, None)  # the key is destroyed: forget it here too
        await self._drop_blobs(files)
        await self._scrub_after_erasure()

    # ------------------------------------------------------------ audit chain

    async def verify_audit(self, workspace_id: str | None) -> api.AuditChainReport:
        """Walk one audit chain (None: the server-wide one) and report its first broken link."""
        return await self._read(verify_chain_program(workspace_id))

    async def audit_chains(self) -> list[str | None]:
        """Every audit chain: workspace ids, None for the server-wide entries."""
        return await self._read(chains_program())
