"""What the engine sends: results (one per command, to the asker) and pushes (unsolicited, to
a connection's outbox). See ``engine.messages`` for the conventions.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from engine.summaries import (
    AgentSummary,
    ConversationSummary,
    EventView,
    QueueEntry,
    RoutingDecisionView,
    VisitorChange,
    VisitorSummary,
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
class GreetingPush:
    """To a visitor without a chat: a page_view trigger's greeting (a message card from
    ``sender_name``) or invitation (the invitation card). Answering it with ``send_message``
    and ``greeting_id`` starts a chat that opens with the greeting."""

    TYPE: ClassVar[str] = "greeting"
    greeting_id: str  # the trigger's id
    style: str  # "greeting" | "invitation"
    sender_name: str
    text: str


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
    | GreetingPush
)
