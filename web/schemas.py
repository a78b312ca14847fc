"""Request and response bodies of the HTTP admin API (``/api/v1``), as attrs classes.

One class per body: ``web.wire`` structures requests into them (strict, precise 400s) and
``web.jsonschema`` describes them in ``/openapi.json``. Responses never carry secrets: no
password hashes, no token hashes, no visitor tokens; secrets a client must see once (a generated
password, a new API token) appear only in the response that created them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from storage import (
    Agent,
    ApiToken,
    Role,
    Workspace,
    WorkspaceStatus,
)
from web.wire import items, number, text

NAME = 200
ID = 128
USERNAME_PATTERN = r"[A-Za-z0-9_.@-]{3,64}"

# ---------------------------------------------------------------- shared


@attrs.frozen(kw_only=True)
class ErrorDetail:
    code: str
    message: str
    field: str | None = None


@attrs.frozen(kw_only=True)
class ErrorBody:
    """Every non-2xx answer of /api/v1."""

    error: ErrorDetail


@attrs.frozen(kw_only=True)
class Done:
    """The action was carried out."""

    ok: bool = True


# ---------------------------------------------------------------- agents and workspaces


@attrs.frozen(kw_only=True)
class AgentOut:
    id: str
    workspace_id: str
    username: str
    display_name: str
    email: str | None
    role: Role
    enabled: bool
    max_chats: int
    group_ids: tuple[str, ...]
    avatar_url: str | None
    created_at: float

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        return cls(
            id=agent.id,
            workspace_id=agent.workspace_id,
            username=agent.username,
            display_name=agent.display_name,
            email=agent.email,
            role=agent.role,
            enabled=agent.enabled,
            max_chats=agent.max_chats,
            group_ids=tuple(agent.group_ids),
            avatar_url=agent.avatar_url,
            created_at=agent.created_at,
        )


@attrs.frozen(kw_only=True)
class AgentList:
    agents: tuple[AgentOut, ...]


@attrs.frozen(kw_only=True)
class WorkspaceOut:
    id: str
    name: str
    widget_key: str
    allowed_origins: tuple[str, ...]
    status: WorkspaceStatus
    agent_seats: int
    max_concurrent_chats: int
    retention_days: int | None
    terminated_at: float | None
    created_at: float

    @classmethod
    def of(cls, ws: Workspace) -> WorkspaceOut:
        return cls(
            id=ws.id,
            name=ws.name,
            widget_key=ws.widget_key,
            allowed_origins=tuple(ws.allowed_origins),
            status=ws.status,
            agent_seats=ws.agent_seats,
            max_concurrent_chats=ws.max_concurrent_chats,
            retention_days=ws.retention_days,
            terminated_at=ws.terminated_at,
            created_at=ws.created_at,
        )


@attrs.frozen(kw_only=True)
class WorkspaceList:
    workspaces: tuple[WorkspaceOut, ...]


# ---------------------------------------------------------------- auth


@attrs.frozen(kw_only=True)
class LoginIn:
    username: str = attrs.field(**text(max_len=320, min_len=1))
    password: str = attrs.field(**text(max_len=256, min_len=1))


@attrs.frozen(kw_only=True)
class Me:
    """The caller: its account, its workspace and (cookie sessions) the CSRF token to send."""

    agent: AgentOut
    workspace: WorkspaceOut
    csrf_token: str | None
    auth: Literal["session", "token"]
    server_operator: bool


@attrs.frozen(kw_only=True)
class ChangePasswordIn:
    current_password: str = attrs.field(**text(max_len=256, min_len=1))
    new_password: str = attrs.field(**text(max_len=256, min_len=10))


# ---------------------------------------------------------------- workspace admin


@attrs.frozen(kw_only=True)
class CreateWorkspaceIn:
    name: str = attrs.field(**text(max_len=NAME, min_len=1))
    allowed_origins: tuple[str, ...] = attrs.field(default=(), **items(max_items=50, max_len=300))
    owner_username: str = attrs.field(**text(max_len=64, min_len=3, pattern=USERNAME_PATTERN))
    owner_display_name: str = attrs.field(**text(max_len=NAME, min_len=1))
    owner_email: str | None = attrs.field(default=None, **text(max_len=320))


@attrs.frozen(kw_only=True)
class WorkspaceCreated:
    """The new workspace and its owner; ``owner_password`` is shown only here."""

    workspace: WorkspaceOut
    owner: AgentOut
    owner_password: str


@attrs.frozen(kw_only=True)
class UpdateWorkspaceIn:
    name: str | None = attrs.field(default=None, **text(max_len=NAME, min_len=1))
    retention_days: int | None = attrs.field(default=None, **number(minimum=1, maximum=36500))


@attrs.frozen(kw_only=True)
class WorkspaceLimitsIn:
    """Server operators only: seats and concurrency caps."""

    agent_seats: int | None = attrs.field(default=None, **number(minimum=1, maximum=100_000))
    max_concurrent_chats: int | None = attrs.field(
        default=None, **number(minimum=1, maximum=10_000_000)
    )


@attrs.frozen(kw_only=True)
class TerminateIn:
    grace_days: int = attrs.field(default=30, **number(minimum=0, maximum=365))


# ---------------------------------------------------------------- agents


@attrs.frozen(kw_only=True)
class CreateAgentIn:
    """Create (invite) an agent; without ``password`` one is generated and returned once."""

    username: str = attrs.field(**text(max_len=64, min_len=3, pattern=USERNAME_PATTERN))
    display_name: str = attrs.field(**text(max_len=NAME, min_len=1))
    email: str | None = attrs.field(default=None, **text(max_len=320))
    role: Role = Role.AGENT
    password: str | None = attrs.field(default=None, **text(max_len=256, min_len=10))
    max_chats: int = attrs.field(default=5, **number(minimum=1, maximum=100))
    group_ids: tuple[str, ...] = attrs.field(default=(), **items(max_items=50, max_len=ID))


@attrs.frozen(kw_only=True)
class AgentCreated:
    agent: AgentOut
    password: str | None  # only when generated by the server
    invited: bool = False  # an invitation link was mailed to the agent's email


@attrs.frozen(kw_only=True)
class UpdateAgentIn:
    display_name: str | None = attrs.field(default=None, **text(max_len=NAME, min_len=1))
    email: str | None = attrs.field(default=None, **text(max_len=320))
    role: Role | None = None
    enabled: bool | None = None
    max_chats: int | None = attrs.field(default=None, **number(minimum=1, maximum=100))
    group_ids: tuple[str, ...] | None = attrs.field(default=None, **items(max_items=50, max_len=ID))


@attrs.frozen(kw_only=True)
class PasswordOut:
    """A generated password, shown once."""

    password: str


# ---------------------------------------------------------------- groups, canned, tags


@attrs.frozen(kw_only=True)
class GroupOut:
    id: str
    name: str
    fallback_group_id: str | None
    public: bool = False  # visitors may choose it in the pre-chat form


@attrs.frozen(kw_only=True)
class GroupList:
    groups: tuple[GroupOut, ...]


@attrs.frozen(kw_only=True)
class GroupIn:
    name: str = attrs.field(**text(max_len=NAME, min_len=1))
    fallback_group_id: str | None = attrs.field(default=None, **text(max_len=ID, min_len=1))
    public: bool = False


@attrs.frozen(kw_only=True)
class GroupPatchIn:
    name: str | None = attrs.field(default=None, **text(max_len=NAME, min_len=1))
    fallback_group_id: str | None = attrs.field(default=None, **text(max_len=ID, min_len=1))
    public: bool | None = None


@attrs.frozen(kw_only=True)
class CannedOut:
    id: str
    shortcut: str
    text: str


@attrs.frozen(kw_only=True)
class CannedList:
    canned_responses: tuple[CannedOut, ...]


@attrs.frozen(kw_only=True)
class CannedIn:
    shortcut: str = attrs.field(**text(max_len=64, min_len=1, pattern=r"[A-Za-z0-9_-]+"))
    text: str = attrs.field(**text(max_len=5000, min_len=1))


@attrs.frozen(kw_only=True)
class CannedPatchIn:
    shortcut: str | None = attrs.field(
        default=None, **text(max_len=64, min_len=1, pattern=r"[A-Za-z0-9_-]+")
    )
    text: str | None = attrs.field(default=None, **text(max_len=5000, min_len=1))


@attrs.frozen(kw_only=True)
class TagsOut:
    """The workspace's tag catalogue, offered in the console."""

    tags: tuple[str, ...]


@attrs.frozen(kw_only=True)
class TagsIn:
    tags: tuple[str, ...] = attrs.field(**items(max_items=200, max_len=64))


# ---------------------------------------------------------------- widget and routing settings


@attrs.frozen(kw_only=True)
class PreChatField:
    name: str = attrs.field(**text(max_len=64, min_len=1, pattern=r"[A-Za-z0-9_]+"))
    label: str = attrs.field(**text(max_len=200, min_len=1))
    kind: Literal["text", "email", "textarea"] = "text"
    required: bool = False


@attrs.frozen(kw_only=True)
class WidgetSettings:
    """What the widget looks like and asks; ``allowed_origins`` may embed it."""

    color: str = attrs.field(default="#2f6fed", **text(max_len=7, pattern=r"#[0-9a-fA-F]{6}"))
    title: str = attrs.field(default="Chat with us", **text(max_len=100, min_len=1))
    greeting: str = attrs.field(default="Hi! How can we help?", **text(max_len=1000))
    position: Literal["right", "left"] = "right"
    pre_chat_enabled: bool = False
    pre_chat_fields: tuple[PreChatField, ...] = ()
    offline_form_enabled: bool = True
    offline_message: str = attrs.field(
        default="We are away. Leave a message and we will email you.", **text(max_len=1000)
    )
    sneak_peek: bool = False
    allowed_origins: tuple[str, ...] = attrs.field(default=(), **items(max_items=50, max_len=300))


@attrs.frozen(kw_only=True)
class WidgetSettingsIn:
    """``PUT /settings/widget``: the WHOLE widget configuration, every field required (a body
    missing a field is refused, never read as "reset it"); ``PATCH`` changes some fields."""

    color: str = attrs.field(**text(max_len=7, pattern=r"#[0-9a-fA-F]{6}"))
    title: str = attrs.field(**text(max_len=100, min_len=1))
    greeting: str = attrs.field(**text(max_len=1000))
    position: Literal["right", "left"]
    pre_chat_enabled: bool
    pre_chat_fields: tuple[PreChatField, ...]
    offline_form_enabled: bool
    offline_message: str = attrs.field(**text(max_len=1000))
    sneak_peek: bool
    allowed_origins: tuple[str, ...] = attrs.field(**items(max_items=50, max_len=300))


@attrs.frozen(kw_only=True)
class WidgetSettingsPatch:
    """``PATCH /settings/widget``: only the fields given change; absent (or null) ones keep
    their current value."""

    color: str | None = attrs.field(default=None, **text(max_len=7, pattern=r"#[0-9a-fA-F]{6}"))
    title: str | None = attrs.field(default=None, **text(max_len=100, min_len=1))
    greeting: str | None = attrs.field(default=None, **text(max_len=1000))
    position: Literal["right", "left"] | None = None
    pre_chat_enabled: bool | None = None
    pre_chat_fields: tuple[PreChatField, ...] | None = None
    offline_form_enabled: bool | None = None
    offline_message: str | None = attrs.field(default=None, **text(max_len=1000))
    sneak_peek: bool | None = None
    allowed_origins: tuple[str, ...] | None = attrs.field(
        default=None, **items(max_items=50, max_len=300)
    )


@attrs.frozen(kw_only=True)
class Department:
    """A public group, as the widget offers it."""

    id: str
    name: str


@attrs.frozen(kw_only=True)
class WidgetConfig:
    """Public widget configuration (``/api/v1/widget/config``): no secrets, no agent data."""

    workspace_name: str
    color: str
    title: str
    greeting: str
    position: Literal["right", "left"]
    pre_chat_enabled: bool
    pre_chat_fields: tuple[PreChatField, ...]
    offline_form_enabled: bool
    offline_message: str
    sneak_peek: bool
    online: bool
    # this server sends mail (smtp_url): the offline form may promise an email reply, and the
    # widget offers the transcript by email
    mail_enabled: bool = False
    # groups marked public: the pre-chat form offers them as a department choice
    departments: tuple[Department, ...] = ()
    # within the workspace's business hours (false: the widget offers the offline form)
    open: bool = True


# --- business hours (issue 16; engine/hours.py reads the stored layout) ---

_HHMM = r"([01][0-9]|2[0-3]):[0-5][0-9]|24:00"
_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@attrs.frozen(kw_only=True)
class OpeningPeriod:
    """Open from ``open`` to ``close`` (local time, ``close`` after ``open``; 24:00 = midnight)."""

    day: _Day
    open: str = attrs.field(**text(max_len=5, min_len=5, pattern=_HHMM))
    close: str = attrs.field(**text(max_len=5, min_len=5, pattern=_HHMM))


@attrs.frozen(kw_only=True)
class GroupHours:
    """A group's own schedule: its chats are routed only while both it and the workspace are
    open."""

    group_id: str = attrs.field(**text(max_len=ID, min_len=1))
    time_zone: str = attrs.field(**text(max_len=64, min_len=1))
    weekly: tuple[OpeningPeriod, ...] = attrs.field(
        default=(), validator=attrs.validators.max_len(28)
    )
    holidays: tuple[str, ...] = attrs.field(
        default=(), **items(max_items=100, max_len=10)
    )


@attrs.frozen(kw_only=True)
class BusinessHours:
    """When chats are taken. ``enabled: false``: always open."""

    enabled: bool = False
    time_zone: str = attrs.field(default="UTC", **text(max_len=64, min_len=1))
    weekly: tuple[OpeningPeriod, ...] = attrs.field(
        default=(), validator=attrs.validators.max_len(28)
    )
    holidays: tuple[str, ...] = attrs.field(default=(), **items(max_items=100, max_len=10))
    groups: tuple[GroupHours, ...] = attrs.field(
        default=(), validator=attrs.validators.max_len(100)
    )


@attrs.frozen(kw_only=True)
class BusinessHoursOut:
    """The stored schedule and whether the workspace is open now."""

    hours: BusinessHours
    open_now: bool


@attrs.frozen(kw_only=True)
class RoutingSettings:
    """How chats reach agents; read by the engine from the workspace settings."""

    mode: Literal["auto", "manual"] = "auto"
    agent_response_timeout_s: float = attrs.field(default=60.0, **number(minimum=5, maximum=3600))
    abandon_queued_after_s: float = attrs.field(default=0.0, **number(minimum=0, maximum=86400))
    sticky_agent: bool = True
    default_group_id: str | None = attrs.field(default=None, **text(max_len=ID, min_len=1))
    # issue 16: a returning visitor's new chat goes first to the agent of their last chat
    sticky_new_chats: bool = False
    # issue 16: an unanswered proactive invitation is closed as missed after this (0: never)
    invitation_expires_after_s: float = attrs.field(
        default=600.0, **number(minimum=0, maximum=86400)
    )


@attrs.frozen(kw_only=True)
class IdentitySecret:
    """HMAC-SHA256 key for signed visitor identity; keep it on your server."""

    identity_secret: str


# ---------------------------------------------------------------- conversations and visitors


@attrs.frozen(kw_only=True)
class ConversationOut:
    id: str
    visitor_id: str
    state: str
    close_reason: str | None
    group_id: str | None
    assignee_id: str | None
    participant_ids: tuple[str, ...]
    tags: tuple[str, ...]
    rating: int | None
    rating_comment: str | None
    last_seq: int
    created_at: float
    first_response_at: float | None
    closed_at: float | None
    last_activity_at: float


@attrs.frozen(kw_only=True)
class ConversationPage:
    conversations: tuple[ConversationOut, ...]
    next_cursor: str | None


@attrs.frozen(kw_only=True)
class EventOut:
    seq: int
    kind: str
    visibility: str
    author_type: str
    author_id: str | None
    body: str | None
    data: Mapping[str, Any]
    client_msg_id: str | None
    created_at: float


@attrs.frozen(kw_only=True)
class Transcript:
    """Events oldest first from ``after_seq``, at most 500 a page whatever ``limit`` asks;
    ``has_more``: pass ``next_after_seq`` as ``after_seq`` for the next page."""

    conversation: ConversationOut
    events: tuple[EventOut, ...]
    has_more: bool
    next_after_seq: int | None


@attrs.frozen(kw_only=True)
class SnippetPart:
    text: str
    match: bool


@attrs.frozen(kw_only=True)
class SearchHitOut:
    """``snippet``: the text around the matches, plain; ``snippet_parts``: the same text in
    pieces, ``match`` true for the words that matched (render them highlighted)."""

    conversation_id: str
    seq: int
    snippet: str
    created_at: float
    snippet_parts: tuple[SnippetPart, ...] = ()


@attrs.frozen(kw_only=True)
class SearchResults:
    """The ``limit`` newest hits; ``has_more``: more hits exist (narrow the query)."""

    hits: tuple[SearchHitOut, ...]
    has_more: bool


@attrs.frozen(kw_only=True)
class CloseIn:
    tags: tuple[str, ...] = attrs.field(default=(), **items(max_items=20, max_len=64))


@attrs.frozen(kw_only=True)
class TransferIn:
    """Exactly one of ``agent_id`` and ``group_id``."""

    agent_id: str | None = attrs.field(default=None, **text(max_len=ID, min_len=1))
    group_id: str | None = attrs.field(default=None, **text(max_len=ID, min_len=1))
    reason: str | None = attrs.field(default=None, **text(max_len=500))


@attrs.frozen(kw_only=True)
class TagIn:
    add: tuple[str, ...] = attrs.field(default=(), **items(max_items=20, max_len=64))
    remove: tuple[str, ...] = attrs.field(default=(), **items(max_items=20, max_len=64))


@attrs.frozen(kw_only=True)
class VisitorOut:
    id: str
    external_id: str | None
    name: str | None
    email: str | None
    attributes: Mapping[str, Any]
    user_agent: str | None
    ip: str | None
    visits: int
    first_seen_at: float
    last_seen_at: float
    online: bool


@attrs.frozen(kw_only=True)
class PageViewOut:
    url: str
    title: str | None
    referrer: str | None
    at: float


@attrs.frozen(kw_only=True)
class VisitorProfile:
    visitor: VisitorOut
    page_views: tuple[PageViewOut, ...]
    conversations: tuple[ConversationOut, ...]


@attrs.frozen(kw_only=True)
class LiveVisitor:
    visitor_id: str
    connections: int
    connected_at: float


@attrs.frozen(kw_only=True)
class LiveVisitors:
    visitors: tuple[LiveVisitor, ...]


@attrs.frozen(kw_only=True)
class BanIn:
    """Ban the visitor (and, with ``include_ip``, its last IP); closes its open sockets."""

    reason: str | None = attrs.field(default=None, **text(max_len=500))
    include_ip: bool = False
    expires_in_s: float | None = attrs.field(default=None, **number(minimum=60, maximum=3.2e7))


@attrs.frozen(kw_only=True)
class BanOut:
    id: str
    kind: str
    value: str
    reason: str | None
    created_at: float
    expires_at: float | None


@attrs.frozen(kw_only=True)
class BanList:
    bans: tuple[BanOut, ...]


# ---------------------------------------------------------------- reports, logs, tokens


@attrs.frozen(kw_only=True)
class DayCount:
    day: str  # YYYY-MM-DD (UTC)
    chats: int


@attrs.frozen(kw_only=True)
class ReportOut:
    since: float
    until: float
    chats_per_day: tuple[DayCount, ...]
    total_chats: int
    missed_chats: int
    first_response_p50_s: float | None
    first_response_p90_s: float | None
    average_rating: float | None
    per_agent: tuple[Mapping[str, Any], ...]
    per_group: tuple[Mapping[str, Any], ...]
    agent_started_chats: int = 0
    duration_p50_s: float | None = None
    csat_pct: float | None = None
    rated_chats: int = 0


@attrs.frozen(kw_only=True)
class RoutingDecisionOut:
    id: str
    conversation_id: str
    agent_id: str | None
    reason: str
    details: Mapping[str, Any]
    at: float


@attrs.frozen(kw_only=True)
class RoutingDecisionList:
    """Newest first, at most 500 whatever ``limit`` asks; ``has_more``: older ones exist."""

    decisions: tuple[RoutingDecisionOut, ...]
    has_more: bool


@attrs.frozen(kw_only=True)
class AuditOut:
    id: str
    actor: str
    action: str
    target: str | None
    details: Mapping[str, Any]
    ip: str | None
    at: float
    seq: int | None = None  # position in the workspace's hash chain (``livechat audit verify``)


@attrs.frozen(kw_only=True)
class AuditPage:
    entries: tuple[AuditOut, ...]
    next_cursor: str | None


TokenScope = Literal["admin", "read", "agent", "export"]


@attrs.frozen(kw_only=True)
class TokenOut:
    id: str
    agent_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    revoked_at: float | None
    last_used_at: float | None

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            agent_id=token.agent_id,
            name=token.name,
            scopes=tuple(token.scopes),
            created_at=token.created_at,
            revoked_at=token.revoked_at,
            last_used_at=token.last_used_at,
        )


@attrs.frozen(kw_only=True)
class TokenList:
    tokens: tuple[TokenOut, ...]


@attrs.frozen(kw_only=True)
class CreateTokenIn:
    """``admin``: the admin API as your role allows; ``read``: GET only, but not exports;
    ``export``: ``GET /export`` only; ``agent``: console WebSocket only. The token acts as you
    (or as ``agent_id``, admins only)."""

    name: str = attrs.field(**text(max_len=NAME, min_len=1))
    scopes: tuple[TokenScope, ...] = ("admin",)
    agent_id: str | None = attrs.field(default=None, **text(max_len=ID, min_len=1))


@attrs.frozen(kw_only=True)
class TokenCreated:
    """``token`` is the secret: shown only here, stored only as a hash."""

    token: str
    info: TokenOut


@attrs.frozen(kw_only=True)
class BackupOut:
    path: str
    rows: int


@attrs.frozen(kw_only=True)
class LastBackupOut:
    """The newest ``livechat backup`` that finished (None: never). ``age_s`` is what to alert on."""

    path: str | None = None
    size_bytes: int | None = None
    finished_at: float | None = None
    age_s: float | None = None


# ---------------------------------------------------------------- query strings


@attrs.frozen(kw_only=True)
class ConversationQuery:
    state: Literal["queued", "active", "closed"] | None = None
    assignee_id: str | None = None
    group_id: str | None = None
    tag: str | None = None
    visitor_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    cursor: str | None = None
    limit: int = attrs.field(default=50, **number(minimum=1, maximum=200))


@attrs.frozen(kw_only=True)
class SearchQuery:
    q: str = attrs.field(**text(max_len=200, min_len=1))
    limit: int = attrs.field(default=20, **number(minimum=1, maximum=100))


@attrs.frozen(kw_only=True)
class TranscriptQuery:
    after_seq: int | None = attrs.field(default=None, **number(minimum=0, maximum=2**53))
    limit: int = attrs.field(default=200, **number(minimum=1, maximum=1000))


@attrs.frozen(kw_only=True)
class ReportQuery:
    since: float | None = attrs.field(default=None, **number(minimum=0, maximum=1e11))
    until: float | None = attrs.field(default=None, **number(minimum=0, maximum=1e11))


@attrs.frozen(kw_only=True)
class RoutingQuery:
    conversation_id: str | None = None
    limit: int = attrs.field(default=100, **number(minimum=1, maximum=1000))


@attrs.frozen(kw_only=True)
class PageQuery:
    cursor: str | None = None
    limit: int = attrs.field(default=100, **number(minimum=1, maximum=500))


@attrs.frozen(kw_only=True)
class ExportQuery:
    format: Literal["jsonl", "csv"] = "jsonl"
    visitor_id: str | None = None
    # With ``visitor_id`` (a data subject's export): "mark" keeps the workspace's internal rows
    # and fields and marks them; "exclude" leaves out everything the visitor never saw.
    internal: Literal["mark", "exclude"] = "mark"


@attrs.frozen(kw_only=True)
class WidgetKeyQuery:
    key: str = attrs.field(**text(max_len=200, min_len=1))


# ---------------------------------------------------------------- files in chats


@attrs.frozen(kw_only=True)
class FileSettings:
    """A workspace's limits for files in chats; the server's own limits cap them."""

    max_file_bytes: int = attrs.field(**number(minimum=1, maximum=2**40))
    max_storage_bytes: int = attrs.field(**number(minimum=0, maximum=2**50))
    allowed_types: tuple[str, ...] = attrs.field(**items(max_items=20, max_len=100))


@attrs.frozen(kw_only=True)
class FileUsage:
    """How much of the workspace's file quota its files take."""

    used_bytes: int
    max_storage_bytes: int


@attrs.frozen(kw_only=True)
class FileOut:
    """An uploaded file: send its ``id`` in ``send_message.attachments``."""

    id: str
    name: str
    type: str  # sniffed from the bytes
    size: int
    conversation_id: str | None


@attrs.frozen(kw_only=True)
class FileUploadQuery:
    name: str = attrs.field(**text(max_len=200, min_len=1))


@attrs.frozen(kw_only=True)
class WidgetFileUploadQuery:
    key: str = attrs.field(**text(max_len=200, min_len=1))
    name: str = attrs.field(**text(max_len=200, min_len=1))


@attrs.frozen(kw_only=True)
class WidgetFileQuery:
    key: str = attrs.field(**text(max_len=200, min_len=1))
# ---------------------------------------------------------------- supervision (operators)

ActorKind = Literal["conversation", "visitor", "agent", "router"]


@attrs.frozen(kw_only=True)
class SupervisionNode:
    """One node of the live supervision tree, listed depth-first (a parent before its
    children); ``path`` names it from the root, e.g. ``livechat/engine/conversation``."""

    path: str
    name: str
    depth: int
    kind: Literal["supervisor", "registry", "service", "actor"]
    state: str
    strategy: str | None
    restart: str | None
    max_restarts: int | None
    period_s: float | None
    restarted: int
    restarts: int
    failures: int
    live: int | None
    mailbox_depth: int | None
    mailbox_depth_max: int | None


@attrs.frozen(kw_only=True)
class SupervisionTree:
    nodes: tuple[SupervisionNode, ...]


@attrs.frozen(kw_only=True)
class FaultIn:
    """Crash one running actor: a conversation, visitor or agent by its id (in ``workspace_id``,
    default yours), or a workspace's router (``id`` is then the workspace id, or omitted)."""

    kind: ActorKind
    id: str | None = attrs.field(default=None, **text(max_len=128))
    workspace_id: str | None = attrs.field(default=None, **text(max_len=128))


@attrs.frozen(kw_only=True)
class FaultOut:
    crashed: bool
    kind: str
    workspace_id: str
    id: str
