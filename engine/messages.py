"""Every message that crosses the engine boundary: commands in, results and pushes out.

Three families, each a tagged union of small immutable structs (``@attrs.frozen(kw_only=True)``)
whose wire ``type`` is the ``TYPE`` class variable (stable snake_case, documented in the
protocol):

- **Commands** (client → engine), given to ``ChatEngine.request``. Visitors and agents share the
  classes whose meaning is the same (``send_message``, ``typing``, ``get_history``); the facade
  checks who may send which (``VISITOR_COMMANDS`` / ``AGENT_COMMANDS``).
- **Results** (engine → the client that asked): exactly one per command, or an engine error
  (``engine.errors``, rendered by the web layer as an ``error`` frame via ``ErrorResult``).
- **Pushes** (engine → client, unsolicited): written to the connection's outbox.

Field validators bound every size a client controls (``MAX_TEXT_CHARS``, ``MAX_ID_CHARS``...);
a violation raises ``InvalidMessage`` with ``code="invalid_field"`` and the field path. Times
are UTC Unix seconds (``float``). Only ``engine.codec`` turns these into dictionaries.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from engine.errors import InvalidMessage

__all__ = [
    "AGENT_COMMANDS",
    "COMMAND_TYPES",
    "PUSH_TYPES",
    "RESULT_TYPES",
    "VISITOR_COMMANDS",
    "Accept",
    "AddNote",
    "AgentReconnecting",
    "AgentStatus",
    "AgentStatusPush",
    "AgentSummary",
    "AgentWelcome",
    "Availability",
    "ChatAssigned",
    "ChatList",
    "ChatUnassigned",
    "Close",
    "Command",
    "ConversationResult",
    "ConversationSummary",
    "ConversationUpdate",
    "EndChat",
    "ErrorResult",
    "EventPush",
    "EventView",
    "GetHistory",
    "GetRoutingLog",
    "History",
    "Invite",
    "Join",
    "Leave",
    "LeaveOfflineMessage",
    "ListMyChats",
    "ListQueue",
    "ListVisitors",
    "MessageAck",
    "Ok",
    "PageViewInfo",
    "Push",
    "QueueEntry",
    "QueueList",
    "QueuePosition",
    "QueueUpdate",
    "Rate",
    "ReportPageView",
    "Result",
    "ResyncRequired",
    "RoutingDecisionView",
    "RoutingLog",
    "SendMessage",
    "SessionClosed",
    "SetStatus",
    "SetTyping",
    "SettableStatus",
    "StartChat",
    "Tag",
    "Transfer",
    "TypingPush",
    "Unwatch",
    "UpdateProfile",
    "ViewingPush",
    "VisitorChange",
    "VisitorList",
    "VisitorSummary",
    "VisitorUpdate",
    "VisitorWelcome",
    "Watch",
    "Watching",
    "Whisper",
    "is_email",
]

MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 10_000
MAX_DRAFT_CHARS = 2_000
MAX_NAME_CHARS = 200
MAX_EMAIL_CHARS = 320
MAX_URL_CHARS = 2_048
MAX_TITLE_CHARS = 512
MAX_TAGS = 20
MAX_TAG_CHARS = 64
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_CHARS = 1_000
MAX_HISTORY_LIMIT = 200
MAX_REASON_CHARS = 500
MAX_ATTACHMENTS = 10


# ---------------------------------------------------------------- validators


def _fail(attribute: attrs.Attribute[Any], reason: str) -> InvalidMessage:
    return InvalidMessage(f"{attribute.name}: {reason}", code="invalid_field", field=attribute.name)


def _text(max_chars: int, *, allow_empty: bool = False) -> Callable[[Any, Any, Any], None]:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise _fail(attribute, "must be a string")
        if len(value) > max_chars:
            raise _fail(attribute, f"longer than {max_chars} characters")
        if not allow_empty and not value.strip():
            raise _fail(attribute, "must not be empty")

    return check


# Deliberately loose (RFC 5322 allows far more): something, "@", a domain with a dot, no spaces.
# Enough to refuse "dana@" or "dana" typed into an email field, never a real address.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def is_email(value: str) -> bool:
    """Whether ``value`` looks like an email address (see ``_EMAIL``)."""
    return _EMAIL.fullmatch(value) is not None


def _email(*, allow_empty: bool) -> Callable[[Any, Any, Any], None]:
    length = _text(MAX_EMAIL_CHARS, allow_empty=allow_empty)

    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        length(inst, attribute, value)
        if isinstance(value, str) and value.strip() and not is_email(value.strip()):
            raise _fail(attribute, "not an email address")

    return check


_id = _text(MAX_ID_CHARS)
_opt_text = _text(MAX_TEXT_CHARS, allow_empty=True)


def _rating(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 5:
        raise _fail(attribute, "must be between 1 and 5")


def _limit(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= MAX_HISTORY_LIMIT:
        raise _fail(attribute, f"must be between 1 and {MAX_HISTORY_LIMIT}")


def _seq(_inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise _fail(attribute, "must be >= 0")


def _tags(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if len(value) > MAX_TAGS:
        raise _fail(attribute, f"more than {MAX_TAGS} tags")
    for tag in value:
        if not tag.strip() or len(tag) > MAX_TAG_CHARS:
            raise InvalidMessage(
                f"tag {tag!r} is empty or longer than {MAX_TAG_CHARS} characters",
                code="invalid_field",
                field=attribute.name,
            )


def _attributes(_inst: object, attribute: attrs.Attribute[Any], value: Mapping[str, Any]) -> None:
    if len(value) > MAX_ATTRIBUTES:
        raise _fail(attribute, f"more than {MAX_ATTRIBUTES} attributes")
    for key, item in value.items():
        if len(key) > MAX_TAG_CHARS or not isinstance(item, str | int | float | bool | None):
            raise InvalidMessage(
                f"attribute {key!r}: keys up to {MAX_TAG_CHARS} characters, scalar values only",
                code="invalid_field",
                field=f"{attribute.name}.{key}",
            )
        if isinstance(item, str) and len(item) > MAX_ATTRIBUTE_CHARS:
            raise InvalidMessage(
                f"attribute {key!r} longer than {MAX_ATTRIBUTE_CHARS} characters",
                code="invalid_field",
                field=f"{attribute.name}.{key}",
            )


def _frozen_tags(value: Any) -> tuple[str, ...]:
    return tuple(value)


def _attachment_ids(_inst: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if len(value) > MAX_ATTACHMENTS:
        raise _fail(attribute, f"more than {MAX_ATTACHMENTS} files")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_ID_CHARS:
            raise _fail(attribute, "each must be a file id")


# ---------------------------------------------------------------- shared enums and views


class AgentStatus(enum.StrEnum):
    ACCEPTING = "accepting"
    AWAY = "away"  # chosen, or set by auto-away after ``agent_auto_away_after_s`` idle
    NOT_ACCEPTING = "not_accepting"
    OFFLINE = "offline"  # never sent by a client: no connection (after the grace period)


class SettableStatus(enum.StrEnum):
    ACCEPTING = "accepting"
    AWAY = "away"
    NOT_ACCEPTING = "not_accepting"


class VisitorChange(enum.StrEnum):
    ARRIVED = "arrived"
    NAVIGATED = "navigated"
    UPDATED = "updated"  # profile or attributes changed
    LEFT = "left"


@attrs.frozen(kw_only=True)
class EventView:
    """A durable conversation event as a client sees it (``event`` push, history)."""

    conversation_id: str
    seq: int
    kind: str  # storage.EventKind value
    visibility: str  # "all" | "agents"
    author_type: str  # "visitor" | "agent" | "system"
    author_id: str | None
    author_name: str | None
    body: str | None
    data: Mapping[str, Any] = attrs.field(factory=dict)
    client_msg_id: str | None = None
    created_at: float = 0.0


@attrs.frozen(kw_only=True)
class ConversationSummary:
    """One row of the console's chat lists; also what a visitor learns of its own chat."""

    conversation_id: str
    visitor_id: str
    visitor_name: str | None
    state: str  # storage.ConversationState value
    close_reason: str | None
    group_id: str | None
    assignee_id: str | None
    assignee_name: str | None
    participant_ids: tuple[str, ...]
    tags: tuple[str, ...]
    last_seq: int
    last_message_preview: str | None
    last_message_author_type: str | None
    awaiting_agent: bool  # unread hint: the last message is the visitor's
    created_at: float
    last_activity_at: float


@attrs.frozen(kw_only=True)
class QueueEntry:
    conversation_id: str
    visitor_id: str
    visitor_name: str | None
    group_id: str | None
    position: int  # 1-based, within the workspace queue
    queued_at: float
    previous_assignee_id: str | None
    first_message_preview: str | None


@attrs.frozen(kw_only=True)
class PageViewInfo:
    url: str
    title: str | None
    referrer: str | None
    at: float


@attrs.frozen(kw_only=True)
class VisitorSummary:
    """What the live visitor list shows of one visitor."""

    visitor_id: str
    name: str | None
    email: str | None
    online: bool
    current_page: PageViewInfo | None
    pages_viewed: int  # this visit
    visits: int  # returning-visit count
    browser: str | None
    browser_version: str | None
    os: str | None
    device: str | None  # "desktop" | "mobile" | "tablet" | "bot"
    ip: str | None
    attributes: Mapping[str, Any]
    conversation_id: str | None  # open conversation, if any
    arrived_at: float


@attrs.frozen(kw_only=True)
class AgentSummary:
    agent_id: str
    display_name: str
    role: str
    status: str  # AgentStatus value
    active_chats: int
    max_chats: int
    group_ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class RoutingDecisionView:
    conversation_id: str
    agent_id: str | None
    reason: str  # stable code: least_busy, sticky, manual_pick, transfer, no_response, ...
    details: Mapping[str, Any]
    at: float


# ---------------------------------------------------------------- commands (client -> engine)


@attrs.frozen(kw_only=True)
class SendMessage:
    """A chat message. Visitors may omit ``conversation_id`` (current or new conversation)."""

    TYPE: ClassVar[str] = "send_message"
    conversation_id: str | None = attrs.field(default=None, validator=_id)
    client_msg_id: str = attrs.field(validator=_id)
    text: str = attrs.field(validator=_text(MAX_TEXT_CHARS, allow_empty=True))  # "" with files
    # Ids of files uploaded over HTTP by the same sender (``POST .../files``).
    attachments: tuple[str, ...] = attrs.field(
        default=(), converter=_frozen_tags, validator=_attachment_ids
    )
    # A visitor's department (a public group) for the new chat this message starts; ignored
    # when the message goes to a chat that is open already.
    group_id: str | None = attrs.field(default=None, validator=_id)

    def __attrs_post_init__(self) -> None:
        if not self.text.strip() and not self.attachments:
            raise InvalidMessage(
                "text: must not be empty (or send attachments)", code="invalid_field", field="text"
            )


@attrs.frozen(kw_only=True)
class SetTyping:
    """Typing indicator; a visitor's ``draft`` is the sneak peek (used only if enabled)."""

    TYPE: ClassVar[str] = "typing"
    conversation_id: str = attrs.field(validator=_id)
    is_typing: bool
    draft: str | None = attrs.field(
        default=None, validator=_text(MAX_DRAFT_CHARS, allow_empty=True)
    )


@attrs.frozen(kw_only=True)
class ReportPageView:
    TYPE: ClassVar[str] = "page_view"
    url: str = attrs.field(validator=_text(MAX_URL_CHARS))
    title: str | None = attrs.field(
        default=None, validator=_text(MAX_TITLE_CHARS, allow_empty=True)
    )
    referrer: str | None = attrs.field(
        default=None, validator=_text(MAX_URL_CHARS, allow_empty=True)
    )


@attrs.frozen(kw_only=True)
class UpdateProfile:
    """Visitor name/email and custom attributes set by the site (merged; ``None`` deletes)."""

    TYPE: ClassVar[str] = "update_profile"
    name: str | None = attrs.field(default=None, validator=_text(MAX_NAME_CHARS, allow_empty=True))
    email: str | None = attrs.field(default=None, validator=_email(allow_empty=True))
    attributes: Mapping[str, Any] = attrs.field(factory=dict, validator=_attributes)


@attrs.frozen(kw_only=True)
class Rate:
    TYPE: ClassVar[str] = "rate"
    conversation_id: str = attrs.field(validator=_id)
    rating: int = attrs.field(validator=_rating)
    comment: str | None = attrs.field(default=None, validator=_text(2_000, allow_empty=True))


@attrs.frozen(kw_only=True)
class EndChat:
    """The visitor ends its chat (``None``: the open one); closes it as resolved."""

    TYPE: ClassVar[str] = "end_chat"
    conversation_id: str | None = attrs.field(default=None, validator=_id)


@attrs.frozen(kw_only=True)
class LeaveOfflineMessage:
    """Left when no agent is available; stored as a closed conversation (reason ``offline``)."""

    TYPE: ClassVar[str] = "offline_message"
    name: str | None = attrs.field(default=None, validator=_text(MAX_NAME_CHARS, allow_empty=True))
    email: str = attrs.field(validator=_email(allow_empty=False))
    text: str = attrs.field(validator=_text(MAX_TEXT_CHARS))
    client_msg_id: str = attrs.field(validator=_id)


@attrs.frozen(kw_only=True)
class GetHistory:
    """Scroll back (``before_seq``) or catch up (``after_seq``); at most one of the two."""

    TYPE: ClassVar[str] = "get_history"
    conversation_id: str = attrs.field(validator=_id)
    before_seq: int | None = attrs.field(default=None, validator=_seq)
    after_seq: int | None = attrs.field(default=None, validator=_seq)
    limit: int = attrs.field(default=50, validator=_limit)

    def __attrs_post_init__(self) -> None:
        if self.before_seq is not None and self.after_seq is not None:
            raise InvalidMessage(
                "give before_seq or after_seq, not both", code="invalid_field", field="after_seq"
            )


@attrs.frozen(kw_only=True)
class SetStatus:
    TYPE: ClassVar[str] = "set_status"
    status: SettableStatus


@attrs.frozen(kw_only=True)
class Accept:
    """Take a chat: the offered one, or pick one from the queue (manual mode)."""

    TYPE: ClassVar[str] = "accept"
    conversation_id: str = attrs.field(validator=_id)


@attrs.frozen(kw_only=True)
class AddNote:
    """Internal note, visible to agents only."""

    TYPE: ClassVar[str] = "add_note"
    conversation_id: str = attrs.field(validator=_id)
    client_msg_id: str = attrs.field(validator=_id)
    text: str = attrs.field(validator=_text(MAX_TEXT_CHARS))


@attrs.frozen(kw_only=True)
class Whisper:
    """Supervisor to the chat's agents only."""

    TYPE: ClassVar[str] = "whisper"
    conversation_id: str = attrs.field(validator=_id)
    client_msg_id: str = attrs.field(validator=_id)
    text: str = attrs.field(validator=_text(MAX_TEXT_CHARS))


@attrs.frozen(kw_only=True)
class Transfer:
    """Hand the chat to an agent or a group (exactly one); history stays with the chat."""

    TYPE: ClassVar[str] = "transfer"
    conversation_id: str = attrs.field(validator=_id)
    to_agent_id: str | None = attrs.field(default=None, validator=_id)
    to_group_id: str | None = attrs.field(default=None, validator=_id)
    reason: str | None = attrs.field(
        default=None, validator=_text(MAX_REASON_CHARS, allow_empty=True)
    )

    def __attrs_post_init__(self) -> None:
        if (self.to_agent_id is None) == (self.to_group_id is None):
            raise InvalidMessage(
                "give exactly one of to_agent_id and to_group_id",
                code="invalid_field",
                field="to_agent_id",
            )


@attrs.frozen(kw_only=True)
class Invite:
    """Bring another agent into the chat (several agents in one chat)."""

    TYPE: ClassVar[str] = "invite"
    conversation_id: str = attrs.field(validator=_id)
    agent_id: str = attrs.field(validator=_id)


@attrs.frozen(kw_only=True)
class Join:
    """Join a chat; ``silent`` (supervisors only): the visitor is not told."""

    TYPE: ClassVar[str] = "join"
    conversation_id: str = attrs.field(validator=_id)
    silent: bool = False


@attrs.frozen(kw_only=True)
class Leave:
    TYPE: ClassVar[str] = "leave"
    conversation_id: str = attrs.field(validator=_id)


@attrs.frozen(kw_only=True)
class Close:
    TYPE: ClassVar[str] = "close"
    conversation_id: str = attrs.field(validator=_id)
    tags: tuple[str, ...] = attrs.field(default=(), converter=_frozen_tags, validator=_tags)


@attrs.frozen(kw_only=True)
class Tag:
    """Add and remove tags on a chat."""

    TYPE: ClassVar[str] = "tag"
    conversation_id: str = attrs.field(validator=_id)
    add: tuple[str, ...] = attrs.field(default=(), converter=_frozen_tags, validator=_tags)
    remove: tuple[str, ...] = attrs.field(default=(), converter=_frozen_tags, validator=_tags)


@attrs.frozen(kw_only=True)
class StartChat:
    """Proactive chat: an agent opens a conversation with a visitor on the site."""

    TYPE: ClassVar[str] = "start_chat"
    visitor_id: str = attrs.field(validator=_id)
    client_msg_id: str = attrs.field(validator=_id)
    text: str = attrs.field(validator=_text(MAX_TEXT_CHARS))


@attrs.frozen(kw_only=True)
class Watch:
    """Open a chat: missed events after ``after_seq`` are pushed, then live ones."""

    TYPE: ClassVar[str] = "watch"
    conversation_id: str = attrs.field(validator=_id)
    after_seq: int = attrs.field(default=0, validator=_seq)


@attrs.frozen(kw_only=True)
class Unwatch:
    TYPE: ClassVar[str] = "unwatch"
    conversation_id: str = attrs.field(validator=_id)


@attrs.frozen(kw_only=True)
class ListQueue:
    TYPE: ClassVar[str] = "list_queue"


@attrs.frozen(kw_only=True)
class ListMyChats:
    TYPE: ClassVar[str] = "list_my_chats"


@attrs.frozen(kw_only=True)
class ListVisitors:
    """Snapshot of the live visitor list; ``subscribe`` keeps ``visitor_update`` pushes coming."""

    TYPE: ClassVar[str] = "list_visitors"
    subscribe: bool = True


@attrs.frozen(kw_only=True)
class GetRoutingLog:
    """Why did this chat go to Ann: the routing decisions recorded for a conversation."""

    TYPE: ClassVar[str] = "routing_log"
    conversation_id: str = attrs.field(validator=_id)
    limit: int = attrs.field(default=100, validator=_limit)


Command = (
    SendMessage
    | SetTyping
    | ReportPageView
    | UpdateProfile
    | Rate
    | EndChat
    | LeaveOfflineMessage
    | GetHistory
    | SetStatus
    | Accept
    | AddNote
    | Whisper
    | Transfer
    | Invite
    | Join
    | Leave
    | Close
    | Tag
    | StartChat
    | Watch
    | Unwatch
    | ListQueue
    | ListMyChats
    | ListVisitors
    | GetRoutingLog
)

VISITOR_COMMANDS: frozenset[type] = frozenset(
    {
        SendMessage,
        SetTyping,
        ReportPageView,
        UpdateProfile,
        Rate,
        EndChat,
        LeaveOfflineMessage,
        GetHistory,
    }
)
AGENT_COMMANDS: frozenset[type] = frozenset(
    {
        SendMessage,
        SetTyping,
        GetHistory,
        SetStatus,
        Accept,
        AddNote,
        Whisper,
        Transfer,
        Invite,
        Join,
        Leave,
        Close,
        Tag,
        StartChat,
        Watch,
        Unwatch,
        ListQueue,
        ListMyChats,
        ListVisitors,
        GetRoutingLog,
    }
)


# ---------------------------------------------------------------- results (engine -> asker)


@attrs.frozen(kw_only=True)
class Ok:
    """Result of a command with nothing to report (typing, page_view, set_status...)."""

    TYPE: ClassVar[str] = "ok"


@attrs.frozen(kw_only=True)
class MessageAck:
    """The event is durable: send_message, add_note, whisper, start_chat, offline_message."""

    TYPE: ClassVar[str] = "message_ack"
    conversation_id: str
    seq: int
    created_at: float
    duplicate: bool  # a retry: this is the original acknowledgement


@attrs.frozen(kw_only=True)
class ConversationResult:
    """After a lifecycle command (accept, transfer, invite, join, leave, close, tag, rate, end)."""

    TYPE: ClassVar[str] = "conversation"
    conversation: ConversationSummary
    seq: int | None  # the durable event the command produced; None if it changed nothing


@attrs.frozen(kw_only=True)
class History:
    TYPE: ClassVar[str] = "history"
    conversation_id: str
    events: tuple[EventView, ...]
    has_more: bool


@attrs.frozen(kw_only=True)
class Watching:
    """Missed events up to ``last_seq`` have been pushed; live ones follow."""

    TYPE: ClassVar[str] = "watching"
    conversation: ConversationSummary


@attrs.frozen(kw_only=True)
class QueueList:
    TYPE: ClassVar[str] = "queue"
    entries: tuple[QueueEntry, ...]


@attrs.frozen(kw_only=True)
class ChatList:
    TYPE: ClassVar[str] = "chats"
    conversations: tuple[ConversationSummary, ...]


@attrs.frozen(kw_only=True)
class VisitorList:
    TYPE: ClassVar[str] = "visitors"
    visitors: tuple[VisitorSummary, ...]


@attrs.frozen(kw_only=True)
class RoutingLog:
    """Newest first, at most ``limit``; ``has_more``: older decisions exist."""

    TYPE: ClassVar[str] = "routing_log"
    conversation_id: str
    decisions: tuple[RoutingDecisionView, ...]
    has_more: bool = False


@attrs.frozen(kw_only=True)
class ErrorResult:
    """A command failed: ``code`` is a stable string (``EngineError.code``)."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    field: str | None = None
    retry_after_s: float | None = None


Result = (
    Ok
    | MessageAck
    | ConversationResult
    | History
    | Watching
    | QueueList
    | ChatList
    | VisitorList
    | RoutingLog
    | ErrorResult
)


# ---------------------------------------------------------------- pushes (engine -> client)


@attrs.frozen(kw_only=True)
class VisitorWelcome:
    """Initial state of a visitor connection (in the hello result): who it is, what the widget
    needs."""

    TYPE: ClassVar[str] = "welcome_visitor"
    visitor_id: str
    conversation: ConversationSummary | None  # the open conversation, if any
    agents_available: bool  # False: show the offline-message form
    sneak_peek_enabled: bool
    routing_mode: str
    queue_position: int | None


@attrs.frozen(kw_only=True)
class AgentWelcome:
    """Initial state of an agent connection (in the auth result): own status, the queue, own
    chats, and every enabled agent of the workspace with their live status."""

    TYPE: ClassVar[str] = "welcome_agent"
    agent: AgentSummary
    routing_mode: str
    queue: tuple[QueueEntry, ...]
    chats: tuple[ConversationSummary, ...]
    agents: tuple[AgentSummary, ...]


@attrs.frozen(kw_only=True)
class EventPush:
    TYPE: ClassVar[str] = "event"
    event: EventView


@attrs.frozen(kw_only=True)
class TypingPush:
    """Ephemeral: no seq; hide after ``expires_in_s`` unless refreshed."""

    TYPE: ClassVar[str] = "typing"
    conversation_id: str
    author_type: str
    author_id: str
    author_name: str | None
    is_typing: bool
    draft: str | None  # sneak peek; only to agents, only if enabled
    expires_in_s: float


@attrs.frozen(kw_only=True)
class ViewingPush:
    """Ephemeral: an agent has the chat open (to the visitor: "agent is viewing")."""

    TYPE: ClassVar[str] = "viewing"
    conversation_id: str
    agent_id: str
    agent_name: str | None
    viewing: bool
    expires_in_s: float


@attrs.frozen(kw_only=True)
class QueuePosition:
    TYPE: ClassVar[str] = "queue_position"
    conversation_id: str
    position: int  # 1-based
    estimated_wait_s: float | None


@attrs.frozen(kw_only=True)
class ConversationUpdate:
    TYPE: ClassVar[str] = "conversation_update"
    conversation: ConversationSummary


@attrs.frozen(kw_only=True)
class ChatAssigned:
    """To an agent: this chat is now yours (auto routing, transfer, invite)."""

    TYPE: ClassVar[str] = "chat_assigned"
    conversation: ConversationSummary
    reason: str  # routing reason code
    respond_within_s: float | None  # re-routed if the agent does not answer in time


@attrs.frozen(kw_only=True)
class ChatUnassigned:
    """To an agent: this chat left you (re-routed, transferred away, closed by someone else)."""

    TYPE: ClassVar[str] = "chat_unassigned"
    conversation_id: str
    reason: str


@attrs.frozen(kw_only=True)
class QueueUpdate:
    """To agents (manual mode and supervisors): the queue changed."""

    TYPE: ClassVar[str] = "queue_update"
    entries: tuple[QueueEntry, ...]


@attrs.frozen(kw_only=True)
class VisitorUpdate:
    TYPE: ClassVar[str] = "visitor_update"
    change: VisitorChange
    visitor: VisitorSummary


@attrs.frozen(kw_only=True)
class AgentStatusPush:
    TYPE: ClassVar[str] = "agent_status"
    agent: AgentSummary


@attrs.frozen(kw_only=True)
class AgentReconnecting:
    """To the visitor of a chat: its agent's connection dropped (``reconnecting`` true; the
    chat goes back to the queue after ``grace_s`` unless they return) or is back (false)."""

    TYPE: ClassVar[str] = "agent_reconnecting"
    conversation_id: str
    agent_name: str
    reconnecting: bool
    grace_s: float


@attrs.frozen(kw_only=True)
class Availability:
    """To visitors: whether any agent can take a chat right now."""

    TYPE: ClassVar[str] = "availability"
    agents_available: bool


@attrs.frozen(kw_only=True)
class ResyncRequired:
    """The gap since ``from_seq`` is too large to replay: fetch history, then watch again."""

    TYPE: ClassVar[str] = "resync_required"
    conversation_id: str
    from_seq: int
    last_seq: int


@attrs.frozen(kw_only=True)
class SessionClosed:
    """The engine dropped this connection (logout, ban, kick); the web layer closes it."""

    TYPE: ClassVar[str] = "session_closed"
    reason: str


Push = (
    VisitorWelcome
    | AgentWelcome
    | EventPush
    | TypingPush
    | ViewingPush
    | QueuePosition
    | ConversationUpdate
    | ChatAssigned
    | ChatUnassigned
    | QueueUpdate
    | VisitorUpdate
    | AgentStatusPush
    | AgentReconnecting
    | Availability
    | ResyncRequired
    | SessionClosed
)

COMMAND_TYPES: tuple[type, ...] = Command.__args__
RESULT_TYPES: tuple[type, ...] = Result.__args__
PUSH_TYPES: tuple[type, ...] = Push.__args__
