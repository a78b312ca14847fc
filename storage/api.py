"""The storage interface: the one ``Storage`` protocol both backends implement, and its records.

The engine and the web layer import only from ``storage`` (this module's names re-exported by
``storage/__init__.py``); the backends' modules use ``storage.api`` for the records too. Every
method that reads or writes tenant data takes the workspace id first and never returns another
workspace's rows: a foreign id behaves exactly like a missing one (``None`` or ``NotFound``).

The records live in ``storage.api_records``, the protocol's parts per concern in ``storage.api_*``;
this module composes them.
"""

from __future__ import annotations

from typing import Protocol

from storage.api_accounts import StorageAccounts
from storage.api_chats import StorageChats
from storage.api_data import StorageData
from storage.api_delivery import StorageDelivery
from storage.api_records import (
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
    TwoFactor,
    Visibility,
    Visitor,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
    Workspace,
    WorkspaceStatus,
)

__all__ = [
    "MAX_PAGE",
    "SNIPPET_MATCH_END",
    "SNIPPET_MATCH_START",
    "Agent",
    "AgentToken",
    "ApiToken",
    "AppendRequest",
    "AppendResult",
    "Attachment",
    "AuditChainReport",
    "AuditEntry",
    "AuthorType",
    "BackupRecord",
    "Ban",
    "BanKind",
    "CannedResponse",
    "CloseReason",
    "Conversation",
    "ConversationFilter",
    "ConversationPatch",
    "ConversationState",
    "DeliveryState",
    "Event",
    "EventKind",
    "Fence",
    "Group",
    "InboxItem",
    "InboxStatus",
    "Lease",
    "MailItem",
    "MailStatus",
    "NewRoutingDecision",
    "Page",
    "PageView",
    "PositionedEvent",
    "Report",
    "Role",
    "RoutingDecision",
    "SearchHit",
    "Session",
    "SsoConfig",
    "SsoIdentity",
    "Storage",
    "StorageAccounts",
    "StorageChats",
    "StorageData",
    "StorageDelivery",
    "TwoFactor",
    "Visibility",
    "Visitor",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookSubscription",
    "Workspace",
    "WorkspaceStatus",
]


class Storage(StorageAccounts, StorageChats, StorageDelivery, StorageData, Protocol):
    """Implemented by ``SQLiteStorage`` and ``PostgresStorage``; opened by ``open_storage(url)``.

    Deadlines belong to the caller (``trio.fail_after``); backends also bound each statement
    (``busy_timeout`` / ``statement_timeout``) so a cancelled caller never leaves a thread stuck.
    Errors: ``storage.errors`` (``StorageError`` root; ``NotFound``, ``Conflict``,
    ``StorageUnavailable``, ``CommitFailed``...).

    Composed of one protocol per concern, each in its own module: ``StorageAccounts``
    (``storage.api_accounts``), ``StorageChats`` (``storage.api_chats``), ``StorageDelivery``
    (``storage.api_delivery``) and ``StorageData`` (``storage.api_data``).
    """
