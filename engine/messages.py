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

This module is the face of the protocol: the classes live by family in ``engine.commands``,
``engine.replies`` (results and pushes), ``engine.summaries`` (the views both share) and
``engine.limits`` (sizes and validators); import them from here or from ``engine``.
"""

from __future__ import annotations

from engine.commands import (
    AGENT_COMMANDS,
    VISITOR_COMMANDS,
    Accept,
    AddNote,
    Close,
    Command,
    EndChat,
    GetHistory,
    GetRoutingLog,
    Invite,
    Join,
    Leave,
    LeaveOfflineMessage,
    ListMyChats,
    ListQueue,
    ListVisitors,
    Rate,
    ReportPageView,
    SendMessage,
    SetStatus,
    SetTyping,
    StartChat,
    Tag,
    Transfer,
    Unwatch,
    UpdateProfile,
    Watch,
    Whisper,
)
from engine.limits import (
    is_email,
)
from engine.replies import (
    AgentReconnecting,
    AgentStatusPush,
    AgentWelcome,
    Availability,
    ChatAssigned,
    ChatList,
    ChatUnassigned,
    ConversationResult,
    ConversationUpdate,
    ErrorResult,
    EventPush,
    GreetingPush,
    History,
    MessageAck,
    Ok,
    Push,
    QueueList,
    QueuePosition,
    QueueUpdate,
    Result,
    ResyncRequired,
    RoutingLog,
    SessionClosed,
    TypingPush,
    ViewingPush,
    VisitorList,
    VisitorUpdate,
    VisitorWelcome,
    Watching,
)
from engine.summaries import (
    AgentStatus,
    AgentSummary,
    ConversationSummary,
    EventView,
    PageViewInfo,
    QueueEntry,
    RoutingDecisionView,
    SettableStatus,
    VisitorChange,
    VisitorGreeting,
    VisitorSummary,
)

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
    "GreetingPush",
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
    "VisitorGreeting",
    "VisitorList",
    "VisitorSummary",
    "VisitorUpdate",
    "VisitorWelcome",
    "Watch",
    "Watching",
    "Whisper",
    "is_email",
]

COMMAND_TYPES: tuple[type, ...] = Command.__args__
RESULT_TYPES: tuple[type, ...] = Result.__args__
PUSH_TYPES: tuple[type, ...] = Push.__args__
