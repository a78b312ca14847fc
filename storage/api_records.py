"""The records of the storage interface: what ``Storage`` methods take and return.

Frozen attrs classes and string enums, with no behaviour of their own; ``storage.api`` re-exports
them beside the protocol, and other packages import them from ``storage``. Times are UTC Unix
seconds (``float``). Ids are opaque strings (random, URL-safe). Free-form JSON objects
(settings, attributes, event data) are ``dict[str, Any]`` of JSON-compatible values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

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
    conversation_id: str | None = None  # the chat it is about: erased with its visitor
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
