"""What operators run (``SqlStorage`` mixin): master key rotation, server-wide secrets and
backups, the audit log and its chains, reports, export and import, retention and erasure."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from storage import _export as export
from storage import api
from storage._audit import (
    append_audit_program,
    chains_program,
    verify_chain_program,
)
from storage._driver import SqlDriver, require_row
from storage._keys import rewrap_program, seal_plaintext_program
from storage._purge import (
    erase_visitor_program,
    purge_conversations_program,
    purge_workspace_program,
)
from storage._records import (
    columns,
    decode_cursor,
    encode_cursor,
)
from storage._report import compute_report, fallback_groups
from storage._sql import Program, Q
from storage.crypto import (
    EncryptionError,
    MasterKeyRing,
)

_MAX_PAGE = api.MAX_PAGE

BACKUP_ACTION = "backup.completed"  # server-wide audit action of a finished backup


class OperationsStore(SqlDriver):
    """Storage methods of ``storage.api.Storage`` for operators and compliance."""

    if TYPE_CHECKING:  # from sibling mixins of SqlStorage: ``storage._attachments``, ``_vault``

        async def seal_plaintext_files(self) -> int: ...

        async def _check_vault(self) -> None: ...

        async def _destroy_visitor_key(self, workspace_id: str, visitor_id: str) -> None: ...

        async def _destroy_workspace_keys(self, workspace_id: str) -> None: ...

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

    # ------------------------------------------------------------ server-wide

    async def get_or_create_secret(self, name: str) -> str:
        def program() -> Program[str]:
            yield Q(
                "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                (name, secrets.token_urlsafe(32)),
            )
            result = yield Q("SELECT value FROM secrets WHERE name=?", (name,))
            return str(require_row(result.one(), "secret", name)["value"])

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
