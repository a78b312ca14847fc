"""A workspace's data as a whole: reports, export and import, retention and erasure, audit chain
checks and encryption at rest (``storage.crypto``, ``docs/security.md``).

Part of the ``Storage`` protocol (``storage.api``), which both backends implement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from storage.api_records import AuditChainReport, Report


class StorageData(Protocol):
    """Reports, export/import, retention, erasure, encryption at rest."""

    # reports, export, retention
    async def report(self, workspace_id: str, *, since: float, until: float) -> Report: ...
    def export_jsonl(
        self, workspace_id: str, *, visitor_id: str | None = None, sealed: bool = False
    ) -> AsyncIterator[str]:
        """One JSON object per line (``{"table": ..., "row": {...}}``), workspace or visitor;
        decrypted, or with ``sealed`` as stored (with the wrapped data key: a backup)."""
        ...

    def export_csv(self, workspace_id: str) -> AsyncIterator[str]:
        """One row per conversation, cells starting with = + - @ TAB CR escaped with a quote."""
        ...

    async def import_jsonl(self, lines: AsyncIterator[str]) -> int: ...  # rows restored
    async def purge_conversations_older_than(self, workspace_id: str, *, days: int) -> int: ...
    async def erase_visitor(
        self, workspace_id: str, visitor_id: str, *, actor: str = ..., ip: str | None = None
    ) -> None: ...
    async def purge_workspace(self, workspace_id: str, *, actor: str = ...) -> None: ...
    async def verify_audit(self, workspace_id: str | None) -> AuditChainReport: ...
    # encryption at rest (storage.crypto; docs/security.md)
    async def seal(self, workspace_id: str, value: str, *, purpose: str) -> str: ...
    async def unseal(self, workspace_id: str, value: str, *, purpose: str) -> str: ...
    async def seal_plaintext(self) -> int: ...
    async def check_data_keys(self) -> int: ...
    async def audit_chains(self) -> list[str | None]: ...
