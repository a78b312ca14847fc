"""Durable storage behind one interface: SQLite (embedded default) and PostgreSQL.

Open it with ``open_storage(url)``; the backend is chosen by the URL scheme. Other packages
import only from here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from storage._appends import (
    GROUP_COMMIT_MAX_BATCH,
    GROUP_COMMIT_MAX_DELAY_S,
    GroupCommitConfig,
)
from storage._base import Clock, SqlStorage
from storage._files import create_private_file, private_dir
from storage._report import report_csv
from storage.api import (
    MAX_PAGE,
    SNIPPET_MATCH_END,
    SNIPPET_MATCH_START,
    Agent,
    AgentToken,
    ApiToken,
    AppendRequest,
    AppendResult,
    Attachment,
    AuditChainReport,
    AuditEntry,
    AuthorType,
    BackupRecord,
    Ban,
    BanKind,
    CannedResponse,
    CloseReason,
    Conversation,
    ConversationFilter,
    ConversationPatch,
    ConversationState,
    DeliveryState,
    Event,
    EventKind,
    Fence,
    Group,
    InboxItem,
    InboxStatus,
    Lease,
    MailItem,
    MailStatus,
    NewRoutingDecision,
    Page,
    PageView,
    PositionedEvent,
    Report,
    Role,
    RoutingDecision,
    SearchHit,
    Session,
    SsoConfig,
    SsoIdentity,
    Storage,
    TwoFactor,
    Visibility,
    Visitor,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
    Workspace,
    WorkspaceStatus,
)
from storage.blobs import BlobStore, LocalBlobStore, S3BlobStore, default_files_dir
from storage.crypto import (
    EncryptionError,
    MasterKeyRing,
    new_master_key_text,
    resolve_master_keys,
)
from storage.errors import (
    AppendRefused,
    BackupError,
    CommitFailed,
    Conflict,
    InvalidDatabaseURL,
    LeaseLost,
    MigrationError,
    NotABackupError,
    NotFound,
    QuotaExceeded,
    RestoreError,
    StorageError,
    StorageUnavailable,
)
from storage.handle import StorageHandle
from storage.urls import backend_of

__all__ = [
    "GROUP_COMMIT_MAX_BATCH",
    "GROUP_COMMIT_MAX_DELAY_S",
    "MAX_PAGE",
    "SNIPPET_MATCH_END",
    "SNIPPET_MATCH_START",
    "Agent",
    "AgentToken",
    "ApiToken",
    "AppendRefused",
    "AppendRequest",
    "AppendResult",
    "Attachment",
    "AuditChainReport",
    "AuditEntry",
    "AuthorType",
    "BackupError",
    "BackupRecord",
    "Ban",
    "BanKind",
    "BlobStore",
    "CannedResponse",
    "CloseReason",
    "CommitFailed",
    "Conflict",
    "Conversation",
    "ConversationFilter",
    "ConversationPatch",
    "ConversationState",
    "DeliveryState",
    "EncryptionError",
    "Event",
    "EventKind",
    "Fence",
    "Group",
    "GroupCommitConfig",
    "InboxItem",
    "InboxStatus",
    "InvalidDatabaseURL",
    "Lease",
    "LeaseLost",
    "LocalBlobStore",
    "MailItem",
    "MailStatus",
    "MasterKeyRing",
    "MigrationError",
    "NewRoutingDecision",
    "NotABackupError",
    "NotFound",
    "Page",
    "PageView",
    "PositionedEvent",
    "QuotaExceeded",
    "Report",
    "RestoreError",
    "Role",
    "RoutingDecision",
    "S3BlobStore",
    "SearchHit",
    "Session",
    "SsoConfig",
    "SsoIdentity",
    "Storage",
    "StorageError",
    "StorageHandle",
    "StorageUnavailable",
    "TwoFactor",
    "Visibility",
    "Visitor",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSubscription",
    "Workspace",
    "WorkspaceStatus",
    "backend_of",
    "create_private_file",
    "default_files_dir",
    "new_master_key_text",
    "open_backend",
    "open_storage",
    "private_dir",
    "report_csv",
    "resolve_master_keys",
]


@asynccontextmanager
async def open_backend(
    url: str,
    *,
    group_commit: GroupCommitConfig | None = None,
    clock: Clock = time.time,
    keyring: MasterKeyRing | None = None,
    files_dir: str | None = None,
    blobs: BlobStore | None = None,
    **options: Any,
) -> AsyncIterator[SqlStorage]:
    """Like ``open_storage`` but typed as the concrete backend (backup, restore, bench).

    The bytes of chat files go to ``blobs`` if given, else to the directory ``files_dir``
    (default: ``default_files_dir``).
    """
    backend, target = backend_of(url)
    if blobs is None:
        blobs = LocalBlobStore(files_dir or default_files_dir(backend, target))
    if backend == "sqlite":
        from storage.sqlite import open_sqlite

        async with open_sqlite(target, group_commit=group_commit, clock=clock, **options) as s:
            s.use_blobs(blobs)
            await s.use_keys(keyring)
            yield s
    else:
        from storage.postgres import open_postgres

        async with open_postgres(target, group_commit=group_commit, clock=clock, **options) as p:
            p.use_blobs(blobs)
            await p.use_keys(keyring)
            yield p


@asynccontextmanager
async def open_storage(
    url: str,
    *,
    group_commit: GroupCommitConfig | None = None,
    clock: Clock = time.time,
    keyring: MasterKeyRing | None = None,
    files_dir: str | None = None,
    blobs: BlobStore | None = None,
    **options: Any,
) -> AsyncIterator[Storage]:
    """Open the database named by ``url``, applying pending migrations; close on exit.

    ``keyring``: the master keys that wrap the data keys (``storage.crypto``); without it
    values are stored in plaintext, and a database holding data keys is refused.

    The group committer runs in a nursery owned by this context: appends queued when the
    block exits are committed before the connections close. ``options`` go to the backend
    (``readers``, ``busy_timeout_s``, ``statement_timeout_s`` for SQLite; ``pool_size``,
    ``statement_timeout_s``, ``connect_timeout_s``, ``committer_max_idle_s`` for PostgreSQL).
    """
    async with open_backend(
        url,
        group_commit=group_commit,
        clock=clock,
        keyring=keyring,
        files_dir=files_dir,
        blobs=blobs,
        **options,
    ) as storage:
        yield storage
