"""The storage interface: records and the one ``Storage`` protocol both backends implement.

The engine and the web layer import only from ``storage`` (this module's names re-exported by
``storage/__init__.py``). Every method that reads or writes tenant data takes the workspace id
first and never returns another workspace's rows: a foreign id behaves exactly like a missing one
(``None`` or ``NotFound``).

Times are UTC Unix seconds (``float``). Ids are opaque strings (random, URL-safe). Free-form
JSON objects (settings, attributes, event data) are ``dict[str, Any]`` of JSON-compatible values.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs


class WorkspaceStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"
    # A program (docs/bots.md): console socket with an API token only, no password, no HTTP
    # API; the router offers it new chats before humans.
    BOT = "bot"


class ConversationState(enum.StrEnum):
    QUEUED = "queued"
    ACTIVE = "active"
    CLOSED = "closed"


class CloseReason(enum.StrEnum):
    RESOLVED = "resolved"
    MISSED = "missed"
    ABANDONED = "abandoned"
    OFFLINE = "offline"  # left as an offline message, no agent was available


class Visibility(enum.StrEnum):
    ALL = "all"  # visitor and agents
    AGENTS = "agents"  # internal notes, whispers, silent supervisor joins


class AuthorType(enum.StrEnum):
    VISITOR = "visitor"
    AGENT = "agent"
    SYSTEM = "system"


class EventKind(enum.StrEnum):
    """Every durable conversation event; each gets the next gapless sequence number."""

    MESSAGE = "message"
    NOTE = "note"  # internal note (visibility agents)
    WHISPER = "whisper"  # supervisor to agent (visibility agents)
    ASSIGNED = "assigned"
    TRANSFERRED = "transferred"
    JOINED = "joined"
    LEFT = "left"
    STATUS = "status"  # state change: queued/active/closed/reopened; data has details
    RATING = "rating"
    TAGGED = "tagged"
    OFFLINE_MESSAGE = "offline_message"


# ---------------------------------------------------------------- records


@attrs.frozen(kw_only=True)
class Workspace:
    id: str
    name: str
    widget_key: str  # public, embedded in the site's script tag
    identity_secret: str  # HMAC key for signed visitor identity; never sent to browsers
    allowed_origins: tuple[str, ...] = ()
    settings: Mapping[str, Any] = attrs.field(factory=dict)  # widget + routing settings
    agent_seats: int = 50
    max_concurrent_chats: int = 1000
    retention_days: int | None = None  # None: keep forever
    status: WorkspaceStatus = WorkspaceStatus.ACTIVE
    terminated_at: float | None = None
    created_at: float = 0.0


@attrs.frozen(kw_only=True)
class Agent:
    id: str
    workspace_id: str
    username: str  # globally unique, case-insensitive (stored lower-case)
    display_name: str
    email: str | None = None
    role: Role = Role.AGENT
    password_hash: str | None = None  # argon2id PHC string, never leaves the server
    enabled: bool = True
    max_chats: int = 5
    group_ids: tuple[str, ...] = ()
    avatar_url: str | None = None
    created_at: float = 0.0
    password_changed_at: float = 0.0


@attrs.frozen(kw_only=True)
class Group:
    id: str
    workspace_id: str
    name: str
    fallback_group_id: str | None = None
    public: bool = False  # a department visitors may choose (pre-chat form)


@attrs.frozen(kw_only=True)
class Visitor:
    id: str
    workspace_id: str
    token_hash: str | None = None  # SHA-256 of the server-minted visitor token
    external_id: str | None = None  # the site's own user id (signed identity)
    name: str | None = None
    email: str | None = None
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    user_agent: str | None = None
    ip: str | None = None
    visits: int = 1
    first_seen_at: float = 0.0
    last_seen_at: float = 0.0


@attrs.frozen(kw_only=True)
class PageView:
    visitor_id: str
    url: str
    title: str | None = None
    referrer: str | None = None
    at: float = 0.0


@attrs.frozen(kw_only=True)
class Conversation:
    id: str
    workspace_id: str
    visitor_id: str
    state: ConversationState = ConversationState.QUEUED
    close_reason: CloseReason | None = None
    group_id: str | None = None
    assignee_id: str | None = None
    previous_assignee_id: str | None = None  # for sticky routing after reopen
    participant_ids: tuple[str, ...] = ()  # agents in the chat, assignee first
    tags: tuple[str, ...] = ()
    rating: int | None = None  # 1..5
    rating_comment: str | None = None
    last_seq: int = 0
    created_at: float = 0.0
    first_response_at: float | None = None
    closed_at: float | None = None
    last_activity_at: float = 0.0
    # The key of the command that opened it (``create_conversation(origin_key=...)``), unique
    # in the workspace: a retried start finds this conversation instead of opening another.
    origin_key: str | None = None


@attrs.frozen(kw_only=True)
class ConversationPatch:
    """Fields to change on a conversation row, applied in the same commit as an event."""

    state: ConversationState | None = None
    close_reason: CloseReason | None = None
    clear_close_reason: bool = False
    group_id: str | None = None
    assignee_id: str | None = None
    clear_assignee: bool = False
    previous_assignee_id: str | None = None
    participant_ids: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    rating: int | None = None
    rating_comment: str | None = None
    first_response_at: float | None = None  # only set if currently NULL
    closed_at: float | None = None
    clear_closed_at: bool = False


@attrs.frozen(kw_only=True)
class Event:
    workspace_id: str
    conversation_id: str
    seq: int
    kind: EventKind
    visibility: Visibility
    author_type: AuthorType
    author_id: str | None
    body: str | None
    data: Mapping[str, Any] = attrs.field(factory=dict)
    client_msg_id: str | None = None
    created_at: float = 0.0


@attrs.frozen(kw_only=True)
class Lease:
    """Ownership of ``name`` (``conversation:<id>``, ``router:<workspace>``) by one node until
    ``expires_at`` (the database's clock); ``epoch`` grows at every acquisition."""

    name: str
    holder: str
    epoch: int
    expires_at: float


@attrs.frozen
class Fence:
    """Carried by an append: commit only while lease ``name`` is still at ``epoch``."""

    name: str
    epoch: int


@attrs.frozen(kw_only=True)
class AppendRequest:
    """One durable event to append. ``seq`` is assigned by storage inside the commit."""

    workspace_id: str
    conversation_id: str
    kind: EventKind
    visibility: Visibility = Visibility.ALL
    author_type: AuthorType
    author_id: str | None = None
    body: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict)
    client_msg_id: str | None = None  # unique per conversation+author; retries are idempotent
    patch: ConversationPatch | None = None
    fence: Fence | None = None  # cluster mode: refused (LeaseLost) once the lease moved on


@attrs.frozen(kw_only=True)
class AppendResult:
    event: Event
    duplicate: bool  # True: client_msg_id seen before; event is the ORIGINAL one


@attrs.frozen(kw_only=True)
class ConversationFilter:
    state: ConversationState | None = None
    assignee_id: str | None = None
    group_id: str | None = None
    tag: str | None = None
    visitor_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None


# Search snippets mark each match between these two private-use characters (never brackets,
# which a message may contain); the web layer turns them into ``snippet_parts``.
SNIPPET_MATCH_START = "\ue000"
SNIPPET_MATCH_END = "\ue001"

# The largest page any listing returns. Reads that return a plain list (``history``,
# ``search``, ``list_routing_decisions``) give at most ``MAX_PAGE + 1`` rows, so a caller that
# asks for one row more than its page can tell whether more exist (never a silent cut).
MAX_PAGE = 500


@attrs.frozen(kw_only=True)
class Page:
    """A page of results; pass ``next_cursor`` back to get the next one (None: no more)."""

    items: tuple[Any, ...]
    next_cursor: str | None


@attrs.frozen(kw_only=True)
class SearchHit:
    conversation_id: str
    seq: int
    body: str
    snippet: str
    created_at: float


@attrs.frozen(kw_only=True)
class CannedResponse:
    id: str
    workspace_id: str
    shortcut: str  # e.g. "hello", used as "/hello" in the console
    text: str


@attrs.frozen(kw_only=True)
class RoutingDecision:
    id: str
    workspace_id: str
    conversation_id: str
    agent_id: str | None  # None: queued / no agent
    reason: str  # stable code, e.g. "least_busy", "sticky", "transfer", "manual_pick"
    details: Mapping[str, Any] = attrs.field(factory=dict)
    at: float = 0.0


@attrs.frozen(kw_only=True)
class NewRoutingDecision:
    """A decision to record with ``record_routing_decisions``; storage assigns the id."""

    workspace_id: str
    conversation_id: str
    agent_id: str | None
    reason: str
    at: float  # when it was decided (wall clock), so a later write keeps the order
    details: Mapping[str, Any] = attrs.field(factory=dict)


class BanKind(enum.StrEnum):
    VISITOR = "visitor"
    IP = "ip"


@attrs.frozen(kw_only=True)
class Ban:
    id: str
    workspace_id: str
    kind: BanKind
    value: str
    reason: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None


@attrs.frozen(kw_only=True)
class AuditEntry:
    id: str
    workspace_id: str | None  # None: server-wide (e.g. purge of a workspace)
    actor: str  # "agent:<id>", "token:<id>", "system", "cli"
    action: str  # e.g. "login.success", "agent.role_changed", "export.workspace"
    target: str | None = None
    details: Mapping[str, Any] = attrs.field(factory=dict)  # never secrets or message bodies
    ip: str | None = None
    at: float = 0.0
    # Hash chain per workspace (storage._audit): position, previous entry's hash, own hash.
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


@attrs.frozen(kw_only=True)
class AuditChainReport:
    """What verifying one audit hash chain found (``Storage.verify_audit``)."""

    workspace_id: str | None
    entries: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None  # seq of the first entry whose link fails; None: intact
    broken_id: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@attrs.frozen(kw_only=True)
class BackupRecord:
    """The last good ``livechat backup``: what an operator alerts on when backups stop."""

    path: str
    size_bytes: int
    finished_at: float  # Unix time the file was complete and renamed into place


@attrs.frozen(kw_only=True)
class ApiToken:
    id: str
    workspace_id: str
    agent_id: str  # acts with this agent's role
    name: str
    token_hash: str  # SHA-256 hex of the secret; the secret is shown once at creation
    scopes: tuple[str, ...] = ("admin",)
    created_at: float = 0.0
    revoked_at: float | None = None
    last_used_at: float | None = None


@attrs.frozen(kw_only=True)
class Session:
    id_hash: str  # SHA-256 hex of the cookie value
    agent_id: str
    workspace_id: str
    csrf_token: str
    created_at: float
    last_seen_at: float


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # gave up: retry window over, or the subscription was disabled


@attrs.frozen(kw_only=True)
class WebhookSubscription:
    """An HTTPS endpoint subscribed to event types of one workspace (docs/webhooks.md)."""

    id: str
    workspace_id: str
    url: str
    event_types: tuple[str, ...] = ()
    description: str | None = None
    secret: str  # HMAC-SHA256 signing key; shown to admins, never logged
    previous_secret: str | None = None  # still signed with until ``previous_secret_expires_at``
    previous_secret_expires_at: float | None = None
    enabled: bool = True
    disabled_reason: str | None = None
    consecutive_failures: int = 0
    from_pos: int = 0  # events at or before this global position are not delivered
    created_at: float = 0.0


@attrs.frozen(kw_only=True)
class WebhookDelivery:
    """One event for one subscription: the outbox row, retried until delivered or given up."""

    id: str
    workspace_id: str
    subscription_id: str
    event_id: str  # stable id of the webhook event, the receiver's idempotency key
    event_type: str
    payload: str  # the exact JSON body that is signed and sent
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_attempt_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    created_at: float = 0.0
    delivered_at: float | None = None


@attrs.frozen(kw_only=True)
class WebhookAttempt:
    id: str
    workspace_id: str
    delivery_id: str
    attempt: int  # 1 for the first try
    status_code: int | None  # None: no HTTP answer (refused, timeout, TLS...)
    error: str | None  # a fixed short reason, never the receiver's body
    latency_ms: float
    at: float


@attrs.frozen(kw_only=True)
class PositionedEvent:
    """An event with its global position (the webhook dispatcher's cursor)."""

    pos: int
    event: Event


@attrs.frozen(kw_only=True)
class Attachment:
    """A file sent in a chat; its bytes are in the blob store under ``id`` (unguessable)."""

    id: str
    workspace_id: str
    uploader_type: AuthorType  # visitor | agent
    uploader_id: str
    visitor_id: str  # whose chat: the uploader, or the visitor of the agent's chat
    conversation_id: str | None  # None: a visitor's upload not sent yet
    name: str  # the sender's file name, for display and download only
    content_type: str  # sniffed from the bytes, never the sender's claim
    size: int
    created_at: float
    sent_at: float | None = None  # when it was attached to a message


@attrs.frozen(kw_only=True)
class TwoFactor:
    """An agent's TOTP enrollment (two-factor login); unconfirmed until the first good code."""

    agent_id: str
    workspace_id: str
    totp_secret: str  # base32; the only place it lives (the column to encrypt at rest)
    confirmed_at: float | None = None
    recovery_hashes: tuple[str, ...] = ()  # SHA-256 hex of each unused recovery code
    last_step: int = 0  # newest accepted TOTP time step: no code is accepted twice
    created_at: float = 0.0


@attrs.frozen(kw_only=True)
class SsoConfig:
    """A workspace's OpenID Connect provider and how its users become agents."""

    workspace_id: str
    slug: str  # what users type on the login page (unique across the server)
    issuer: str
    client_id: str
    client_secret: str  # the column to encrypt at rest
    role_claim: str = "roles"  # id_token claim (string or list of strings) read for the role
    role_map: Mapping[str, str] = attrs.field(factory=dict)  # claim value -> role
    default_role: Role | None = Role.AGENT  # no mapped value: this role, or None to refuse
    sso_only: bool = False  # password logins refused (owners excepted)
    enabled: bool = True
    updated_at: float = 0.0


@attrs.frozen(kw_only=True)
class SsoIdentity:
    id: str
    workspace_id: str
    issuer: str
    subject: str  # the provider's ``sub``: stable, unlike names and e-mail addresses
    agent_id: str
    created_at: float = 0.0


@attrs.frozen(kw_only=True)
class Report:
    chats_per_day: tuple[tuple[str, int], ...]  # ("2026-11-26", 12)
    total_chats: int
    missed_chats: int
    first_response_p50_s: float | None
    first_response_p90_s: float | None
    average_rating: float | None
    # per agent: {"agent_id", "chats", "missed", "frt_p50_s", "duration_p50_s", "avg_rating",
    # "csat_pct", "rated"}; definitions in docs/reports.md
    per_agent: tuple[Mapping[str, Any], ...]
    per_group: tuple[Mapping[str, Any], ...]  # {"group_id", same figures as per_agent}
    agent_started_chats: int = 0  # opened by an agent: never missed, not in first response
    duration_p50_s: float | None = None  # created to closed, closed chats only
    csat_pct: float | None = None  # share of rated chats rated 4 or 5, in percent
    rated_chats: int = 0


# ---------------------------------------------------------------- mail, agent links, inbox


class MailStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for its next attempt (next_attempt_at)
    SENT = "sent"  # the SMTP server accepted it
    FAILED = "failed"  # gave up after the last attempt, or refused for good (5xx)


@attrs.frozen(kw_only=True)
class MailItem:
    """One outgoing mail in the durable outbox; the rows are also the delivery log."""

    id: str
    workspace_id: str | None
    conversation_id: str | None  # the chat it is about (erased with it)
    kind: str  # offline_message, missed_chat, transcript, password_reset, invitation, reply
    dedupe_key: str | None  # a second enqueue with the same key is a no-op
    recipient: str
    subject: str
    text_body: str
    html_body: str
    status: MailStatus = MailStatus.QUEUED
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None  # an error class and SMTP code, never credentials
    created_at: float = 0.0
    sent_at: float | None = None


@attrs.frozen(kw_only=True)
class AgentToken:
    """A single-use link mailed to an agent (password reset, invitation); hashed at rest."""

    token_hash: str
    workspace_id: str
    agent_id: str
    purpose: str  # "password_reset" or "invitation"
    created_at: float
    expires_at: float
    used_at: float | None = None


class InboxStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


@attrs.frozen(kw_only=True)
class InboxItem:
    """An offline message or an unanswered chat waiting for someone to follow up."""

    conversation_id: str
    workspace_id: str
    kind: str  # "offline" or "missed" (the conversation's close reason)
    status: InboxStatus = InboxStatus.OPEN
    assignee_id: str | None = None
    replies: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


# ---------------------------------------------------------------- the interface


class Storage(Protocol):
    """Implemented by ``SQLiteStorage`` and ``PostgresStorage``; opened by ``open_storage(url)``.

    Deadlines belong to the caller (``trio.fail_after``); backends also bound each statement
    (``busy_timeout`` / ``statement_timeout``) so a cancelled caller never leaves a thread stuck.
    Errors: ``storage.errors`` (``StorageError`` root; ``NotFound``, ``Conflict``,
    ``StorageUnavailable``, ``CommitFailed``...).
    """

    backend_name: str  # "sqlite" or "postgresql"

    # lifecycle
    async def schema_version(self) -> int: ...
    async def ping(self) -> None: ...  # raises StorageUnavailable when unreachable
    # raises StorageUnavailable unless an append could commit now (readiness; cheap, bounded)
    async def check_ready(self) -> None: ...

    # server-wide
    async def get_or_create_secret(self, name: str) -> str: ...
    async def record_backup(self, record: BackupRecord) -> None: ...  # server-wide audit entry
    async def last_backup(self) -> BackupRecord | None: ...  # newest ``record_backup``

    # workspaces
    async def create_workspace(
        self,
        *,
        name: str,
        allowed_origins: Sequence[str] = (),
        settings: Mapping[str, Any] | None = None,
    ) -> Workspace: ...
    async def get_workspace(self, workspace_id: str) -> Workspace | None: ...
    async def get_workspace_by_widget_key(self, widget_key: str) -> Workspace | None: ...
    async def list_workspaces(self) -> list[Workspace]: ...
    async def update_workspace(self, workspace_id: str, **changes: Any) -> Workspace: ...

    # agents
    async def create_agent(
        self,
        workspace_id: str,
        *,
        username: str,
        display_name: str,
        password_hash: str | None,
        role: Role = Role.AGENT,
        email: str | None = None,
        max_chats: int = 5,
        group_ids: Sequence[str] = (),
    ) -> Agent: ...  # Conflict if taken
    async def get_agent(self, workspace_id: str, agent_id: str) -> Agent | None: ...
    async def find_agent_by_username(self, username: str) -> Agent | None: ...  # for login
    async def list_agents(self, workspace_id: str) -> list[Agent]: ...
    async def update_agent(self, workspace_id: str, agent_id: str, **changes: Any) -> Agent: ...

    # groups
    async def create_group(
        self,
        workspace_id: str,
        *,
        name: str,
        fallback_group_id: str | None = None,
        public: bool = False,
    ) -> Group: ...
    async def get_group(self, workspace_id: str, group_id: str) -> Group | None: ...
    async def list_groups(self, workspace_id: str) -> list[Group]: ...
    async def update_group(self, workspace_id: str, group_id: str, **changes: Any) -> Group: ...
    async def delete_group(self, workspace_id: str, group_id: str) -> None: ...

    # canned responses
    async def create_canned_response(
        self, workspace_id: str, *, shortcut: str, text: str
    ) -> CannedResponse: ...
    async def list_canned_responses(self, workspace_id: str) -> list[CannedResponse]: ...
    async def update_canned_response(
        self, workspace_id: str, canned_id: str, **changes: Any
    ) -> CannedResponse: ...
    async def delete_canned_response(self, workspace_id: str, canned_id: str) -> None: ...

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

    # API tokens and sessions
    async def create_api_token(
        self, workspace_id: str, *, agent_id: str, name: str, token_hash: str, scopes: Sequence[str]
    ) -> ApiToken: ...
    async def find_api_token(self, token_hash: str) -> ApiToken | None: ...
    async def list_api_tokens(self, workspace_id: str) -> list[ApiToken]: ...
    async def revoke_api_token(self, workspace_id: str, token_id: str) -> None: ...
    async def create_session(self, session: Session) -> None: ...
    async def get_session(self, id_hash: str) -> Session | None: ...
    async def touch_session(self, id_hash: str, at: float) -> None: ...
    async def delete_session(self, id_hash: str) -> None: ...
    async def delete_agent_sessions(
        self, agent_id: str, *, except_id_hash: str | None = None
    ) -> None: ...

    # two-factor login and single sign-on (storage/_auth.py)
    async def get_two_factor(self, workspace_id: str, agent_id: str) -> TwoFactor | None: ...
    async def list_two_factor(self, workspace_id: str) -> list[TwoFactor]: ...
    async def put_two_factor(self, record: TwoFactor) -> TwoFactor: ...
    async def confirm_two_factor(
        self, workspace_id: str, agent_id: str, *, step: int, recovery_hashes: Sequence[str]
    ) -> TwoFactor: ...
    async def use_totp_step(self, workspace_id: str, agent_id: str, step: int) -> bool: ...
    async def use_recovery_code(self, workspace_id: str, agent_id: str, code_hash: str) -> bool: ...
    async def set_recovery_codes(
        self, workspace_id: str, agent_id: str, recovery_hashes: Sequence[str]
    ) -> None: ...
    async def delete_two_factor(self, workspace_id: str, agent_id: str) -> bool: ...
    async def get_sso_config(self, workspace_id: str) -> SsoConfig | None: ...
    async def find_sso_config(self, slug: str) -> SsoConfig | None: ...
    async def put_sso_config(self, config: SsoConfig) -> SsoConfig: ...
    async def delete_sso_config(self, workspace_id: str) -> None: ...
    async def find_sso_identity(
        self, workspace_id: str, issuer: str, subject: str
    ) -> SsoIdentity | None: ...
    async def create_sso_identity(
        self, workspace_id: str, *, issuer: str, subject: str, agent_id: str
    ) -> SsoIdentity: ...
    # webhooks (storage/_webhooks.py, docs/webhooks.md)
    async def create_webhook(
        self,
        workspace_id: str,
        *,
        url: str,
        event_types: Sequence[str],
        secret: str,
        description: str | None = None,
    ) -> WebhookSubscription: ...
    async def get_webhook(
        self, workspace_id: str, subscription_id: str
    ) -> WebhookSubscription | None: ...
    async def list_webhooks(self, workspace_id: str) -> list[WebhookSubscription]: ...
    async def update_webhook(
        self, workspace_id: str, subscription_id: str, **changes: Any
    ) -> WebhookSubscription: ...
    async def delete_webhook(self, workspace_id: str, subscription_id: str) -> None: ...
    async def feed_webhooks(
        self,
        *,
        limit: int,
        settle_s: float,
        expand: Callable[[PositionedEvent], Sequence[tuple[str, str, str]]],
    ) -> tuple[int, bool]:
        """Committed events after the durable cursor into the outbox (one transaction):
        (deliveries added, whether more events may wait past this batch)."""
        ...

    async def enqueue_webhook_events(self, items: Sequence[tuple[str, str, str, str]]) -> int:
        """Outbox rows for non-conversation events: (workspace, type, event id, payload)."""
        ...

    async def due_webhook_deliveries(
        self, *, now: float, limit: int
    ) -> list[tuple[WebhookDelivery, WebhookSubscription]]: ...
    async def claim_webhook_deliveries(
        self, delivery_ids: Sequence[str], *, now: float, lease_until: float
    ) -> dict[str, int]:
        """Lease due deliveries for an attempt (``next_attempt_at = lease_until``); returns
        the ids taken with their attempts so far."""
        ...

    async def record_webhook_attempt(
        self,
        attempt: WebhookAttempt,
        *,
        state: DeliveryState,
        next_attempt_at: float | None,
        disable_after_failures: int,
    ) -> WebhookSubscription | None: ...
    async def list_webhook_deliveries(
        self, workspace_id: str, subscription_id: str, *, limit: int = 50
    ) -> list[WebhookDelivery]: ...
    async def get_webhook_delivery(
        self, workspace_id: str, delivery_id: str
    ) -> WebhookDelivery | None: ...
    async def list_webhook_attempts(
        self, workspace_id: str, delivery_id: str
    ) -> list[WebhookAttempt]: ...
    async def redeliver_webhook(self, workspace_id: str, delivery_id: str) -> WebhookDelivery: ...

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
    # outgoing mail, agent links, inbox (storage._mail)
    async def enqueue_mail(self, item: MailItem) -> bool: ...  # False: dedupe_key exists
    async def due_mail(self, now: float, *, limit: int = 20) -> list[MailItem]: ...
    async def next_mail_due_at(self) -> float | None: ...
    async def claim_mail(self, item: MailItem, *, lease_until: float) -> bool: ...
    async def mail_sent(self, mail_id: str, *, at: float) -> None: ...
    async def mail_attempt_failed(
        self, mail_id: str, *, error: str, retry_at: float | None
    ) -> None: ...
    async def list_mail(
        self, workspace_id: str, *, status: MailStatus | None = None, limit: int = 100
    ) -> list[MailItem]: ...
    async def prune_mail(self, *, before: float) -> int: ...  # sent/failed rows only
    async def create_agent_token(self, token: AgentToken) -> None: ...
    async def use_agent_token(
        self, token_hash: str, *, purposes: Sequence[str], now: float
    ) -> AgentToken | None: ...
    async def find_agents_by_email(self, email: str) -> list[Agent]: ...
    async def unscanned_inbox_conversations(
        self, *, since: float, limit: int = 100
    ) -> list[Conversation]: ...
    async def add_inbox_item(self, item: InboxItem, *, mail: MailItem | None) -> bool: ...
    async def list_inbox(
        self, workspace_id: str, *, status: InboxStatus | None = None, limit: int = 100
    ) -> list[InboxItem]: ...
    async def count_inbox(self, workspace_id: str, *, status: InboxStatus) -> int: ...
    async def get_inbox_item(self, workspace_id: str, conversation_id: str) -> InboxItem | None: ...
    async def update_inbox_item(
        self,
        workspace_id: str,
        conversation_id: str,
        *,
        now: float,
        changes: dict[str, Any],
        reply: MailItem | None = None,
    ) -> InboxItem | None: ...
