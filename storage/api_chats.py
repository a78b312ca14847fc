"""Conversations in storage: visitors and their pages, conversations and their events (the
group-committed appends, history, search), routing decisions, bans, the audit log and files.

Part of the ``Storage`` protocol (``storage.api``), which both backends implement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from storage.api_records import (
    AppendRequest,
    AppendResult,
    Attachment,
    AuthorType,
    Ban,
    BanKind,
    Conversation,
    ConversationFilter,
    Event,
    Lease,
    NewRoutingDecision,
    Page,
    PageView,
    RoutingDecision,
    SearchHit,
    Visitor,
)


class StorageChats(Protocol):
    """Visitors, conversations and events, routing decisions, bans, audit, attachments."""

    # visitors
    async def create_visitor(
        self,
        workspace_id: str,
        *,
        token_hash: str | None,
        external_id: str | None = None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> Visitor: ...
    async def get_visitor(self, workspace_id: str, visitor_id: str) -> Visitor | None: ...
    async def find_visitor_by_token_hash(
        self, workspace_id: str, token_hash: str
    ) -> Visitor | None: ...
    async def find_visitor_by_external_id(
        self, workspace_id: str, external_id: str
    ) -> Visitor | None: ...
    async def update_visitor(
        self, workspace_id: str, visitor_id: str, **changes: Any
    ) -> Visitor: ...
    async def add_page_view(self, workspace_id: str, view: PageView) -> None: ...
    async def list_page_views(
        self, workspace_id: str, visitor_id: str, limit: int = 50
    ) -> list[PageView]: ...  # newest first
    # trigger firings (per-visitor rate limits that survive a restart; storage/_triggers.py)
    async def record_trigger_firing(
        self, workspace_id: str, visitor_id: str, trigger_id: str, at: float
    ) -> None: ...
    async def visitor_trigger_firings(
        self, workspace_id: str, visitor_id: str
    ) -> dict[str, float]: ...
    async def recent_trigger_firings(
        self, workspace_id: str, since: float
    ) -> dict[tuple[str, str], float]: ...

    # conversations and events
    async def create_conversation(
        self,
        workspace_id: str,
        *,
        visitor_id: str,
        group_id: str | None = None,
        origin_key: str | None = None,
    ) -> Conversation:
        """A new queued conversation. With ``origin_key``, the conversation already opened
        with that key in the workspace is returned instead, if there is one (retries)."""
        ...

    async def find_conversation_by_origin(
        self, workspace_id: str, origin_key: str
    ) -> Conversation | None: ...
    async def get_conversation(
        self, workspace_id: str, conversation_id: str
    ) -> Conversation | None: ...
    async def list_conversations(
        self,
        workspace_id: str,
        filters: ConversationFilter,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page: ...
    async def list_open_conversations(self, workspace_id: str) -> list[Conversation]: ...
    async def list_visitor_conversations(
        self, workspace_id: str, visitor_id: str
    ) -> list[Conversation]: ...
    async def append(self, request: AppendRequest) -> AppendResult:
        """Durably append one event (group commit: many callers share one transaction).

        Returns only after the commit; the sequence number is assigned in that commit; a
        ``client_msg_id`` seen before returns the original event with ``duplicate=True``.
        Raises ``CommitFailed`` (nothing stored) or ``NotFound`` (conversation not in workspace).
        """
        ...

    async def append_many(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Append several events in one commit, in order (an actor's batch)."""
        ...

    # -- cluster leases (storage/_leases.py): owner of a conversation or router, fenced appends

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        """Take ``name`` with a new epoch if free, expired or already ``holder``'s; else None."""
        ...

    async def renew_leases(self, holder: str, ttl_s: float) -> list[Lease]:
        """Extend every lease ``holder`` still has; a missing one was taken over."""
        ...

    async def release_lease(self, lease: Lease) -> bool:
        """Expire ``lease`` now if still at its epoch (planned hand-over)."""
        ...

    async def lease(self, name: str) -> Lease | None:
        """The live lease on ``name``, None when free or expired."""
        ...

    async def leases(self) -> list[Lease]:
        """Every live lease."""
        ...

    async def lease_counts(self, prefix: str) -> dict[str, int]:
        """Live leases whose name starts with ``prefix``, counted per holder."""
        ...

    async def history(
        self,
        workspace_id: str,
        conversation_id: str,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 50,
        include_agents_only: bool = True,
    ) -> list[Event]:
        """Events in ascending seq; ``after_seq`` for resume, ``before_seq`` for scrollback."""
        ...

    async def search(
        self, workspace_id: str, query: str, *, limit: int = 20
    ) -> list[SearchHit]: ...

    # routing decisions, bans, audit
    async def record_routing_decision(
        self,
        workspace_id: str,
        *,
        conversation_id: str,
        agent_id: str | None,
        reason: str,
        details: Mapping[str, Any] | None = None,
    ) -> None: ...
    async def record_routing_decisions(self, decisions: Sequence[NewRoutingDecision]) -> int:
        """Record many decisions (any workspaces) in one write transaction; a decision whose
        conversation no longer exists is skipped. Returns how many were written."""
        ...

    async def list_routing_decisions(
        self, workspace_id: str, *, conversation_id: str | None = None, limit: int = 100
    ) -> list[RoutingDecision]: ...
    async def add_ban(
        self,
        workspace_id: str,
        *,
        kind: BanKind,
        value: str,
        reason: str | None = None,
        expires_at: float | None = None,
    ) -> Ban: ...
    async def list_bans(self, workspace_id: str) -> list[Ban]: ...
    async def remove_ban(self, workspace_id: str, ban_id: str) -> None: ...
    async def is_banned(
        self, workspace_id: str, *, visitor_id: str | None, ip: str | None
    ) -> bool: ...
    async def audit(
        self,
        workspace_id: str | None,
        *,
        actor: str,
        action: str,
        target: str | None = None,
        details: Mapping[str, Any] | None = None,
        ip: str | None = None,
    ) -> None: ...
    async def list_audit(
        self, workspace_id: str | None, *, limit: int = 100, cursor: str | None = None
    ) -> Page: ...

    # files (attachments): metadata here, bytes in the blob store
    async def add_attachment(
        self, attachment: Attachment, data: bytes, *, max_storage_bytes: int | None
    ) -> Attachment:
        """Store the bytes, then the row; ``QuotaExceeded`` when the workspace is full."""
        ...

    async def get_attachment(self, workspace_id: str, attachment_id: str) -> Attachment | None: ...
    async def read_attachment(self, attachment: Attachment) -> bytes | None: ...
    async def bind_attachments(
        self,
        workspace_id: str,
        attachment_ids: Sequence[str],
        *,
        conversation_id: str,
        visitor_id: str,
        uploader_type: AuthorType,
        uploader_id: str,
    ) -> list[Attachment]:
        """Attach uploads to a message of ``conversation_id``; only the uploader's own, not
        yet in another conversation. Returns those bound, in the order asked (a retry of the
        same message binds them again)."""
        ...

    async def attachment_usage(self, workspace_id: str) -> int: ...  # bytes stored
    async def purge_unsent_attachments(self, *, older_than_s: float) -> int: ...
