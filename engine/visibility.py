"""What a visitor may see: the one rule for every visitor-facing path, default deny.

Agents see every event with all its ``data``; a visitor sees only what the tables below allow.
The rules live here once and every path to a visitor goes through them: the live fan-out (the
conversation actor filters each event once for all the visitor's tabs, then
``Hub.deliver_visible``), resume replay and every other push (``Hub.deliver`` filters each push
for a visitor connection), ``get_history``,
command results and the welcome (``for_visitor_result``). A new ``EventKind`` or push type
without a rule here is hidden from visitors (and a test parametrised over every member fails
until it gets one).

Why these rules: routing details (``reason``, agent load, candidate counts), transfer reasons
typed by agents ("customer is rude"), who invited whom, tags, ratings and internal notes are
the workspace's business; the widget needs only who joined or left, the chat's state, and the
messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import attrs

from engine.messages import (
    AgentReconnecting,
    AgentStatusPush,
    AgentWelcome,
    Availability,
    ChatAssigned,
    ChatUnassigned,
    ConversationResult,
    ConversationSummary,
    ConversationUpdate,
    EventPush,
    EventView,
    GreetingPush,
    History,
    QueuePosition,
    QueueUpdate,
    ResyncRequired,
    SessionClosed,
    TypingPush,
    ViewingPush,
    VisitorUpdate,
    VisitorWelcome,
)
from storage import EventKind, Visibility

__all__ = [
    "VISITOR_EVENT_DATA",
    "VISITOR_HIDDEN_SUMMARY_FIELDS",
    "VISITOR_PUSHES",
    "for_visitor_event",
    "for_visitor_push",
    "for_visitor_result",
    "for_visitor_summary",
    "visitor_data_keys",
]

# Per event kind: the keys of ``data`` a visitor may see, or None when the visitor never sees
# events of that kind. An event stored with ``visibility=agents`` (a silent supervisor's join)
# is hidden whatever its kind.
VISITOR_EVENT_DATA: Mapping[EventKind, frozenset[str] | None] = {
    # Files sent with the message: id, name, type and size (the bytes need the sender's or
    # an agent's credential, see web/files.py).
    # A trigger's greeting that opened the chat: ``greeting`` (true) and its ``sender_name``.
    EventKind.MESSAGE: frozenset({"attachments", "greeting", "sender_name"}),
    EventKind.NOTE: None,  # internal note
    EventKind.WHISPER: None,  # supervisor to agent
    # Not the routing reason, load or candidate counts the router adds to ``data``.
    EventKind.ASSIGNED: frozenset({"agent_id", "agent_name", "invitation"}),
    # Not the agent's reason, who did it, or from whom.
    EventKind.TRANSFERRED: frozenset({"to_agent_id", "agent_name", "to_group_id", "group_name"}),
    EventKind.JOINED: frozenset({"agent_name"}),  # not who invited whom
    EventKind.LEFT: frozenset({"agent_name"}),
    # Not why a chat went back to the queue (``no_response``) nor from which agent.
    EventKind.STATUS: frozenset({"state", "reopened"}),
    EventKind.RATING: None,  # the visitor's own rating and comment are for the workspace
    EventKind.TAGGED: None,
    EventKind.OFFLINE_MESSAGE: frozenset({"name", "email"}),  # what the visitor typed
}

# Fields of a conversation (summary or row) that are the workspace's, not the visitor's.
VISITOR_HIDDEN_SUMMARY_FIELDS: frozenset[str] = frozenset({"tags", "group_id"})

_KINDS: Mapping[str, EventKind] = {str(k): k for k in EventKind}


def visitor_data_keys(kind: str, visibility: str) -> frozenset[str] | None:
    """The ``data`` keys a visitor sees of an event; None: the visitor never sees the event."""
    known = _KINDS.get(kind)
    if known is None or visibility != Visibility.ALL:
        return None
    return VISITOR_EVENT_DATA.get(known)


def for_visitor_event(event: EventView) -> EventView | None:
    """The visitor's view of ``event``, or None when the visitor may not see it at all."""
    allowed = visitor_data_keys(event.kind, event.visibility)
    if allowed is None:
        return None
    data = {k: v for k, v in event.data.items() if k in allowed}
    if len(data) == len(event.data):
        return event
    return attrs.evolve(event, data=data)


def for_visitor_summary(summary: ConversationSummary) -> ConversationSummary:
    """A visitor's own chat, without the workspace's tags and group."""
    if not summary.tags and summary.group_id is None:
        return summary
    cleared: dict[str, Any] = {"tags": (), "group_id": None}
    assert cleared.keys() == VISITOR_HIDDEN_SUMMARY_FIELDS
    return attrs.evolve(summary, **cleared)


def _event_push(push: Any) -> Any:
    event = for_visitor_event(push.event)
    if event is None:
        return None
    return push if event is push.event else EventPush(event=event)


def _same(push: Any) -> Any:
    return push


def _never(push: Any) -> Any:
    return None


def _with_summary(push: Any) -> Any:
    summary = push.conversation
    if summary is None:
        return push
    safe = for_visitor_summary(summary)
    return push if safe is summary else attrs.evolve(push, conversation=safe)


# Per push type: how it reaches a visitor connection (unchanged, filtered, or never).
VISITOR_PUSHES: Mapping[type, Callable[[Any], Any]] = {
    EventPush: _event_push,
    VisitorWelcome: _with_summary,
    TypingPush: _same,  # an agent typing; agents' drafts are never sent (draft=None)
    ViewingPush: _same,
    QueuePosition: _same,
    Availability: _same,
    # The visitor's own chat: its agent dropped (or is back); the agent's display name only,
    # which the visitor already saw when the agent joined.
    AgentReconnecting: _same,
    ResyncRequired: _same,
    SessionClosed: _same,
    GreetingPush: _same,  # a trigger's greeting to this visitor (engine.greetings)
    AgentWelcome: _never,
    ConversationUpdate: _never,
    ChatAssigned: _never,
    ChatUnassigned: _never,
    QueueUpdate: _never,
    VisitorUpdate: _never,
    AgentStatusPush: _never,
}


def for_visitor_push(push: Any) -> Any:
    """What of ``push`` a visitor connection receives; None: nothing (default for new types)."""
    rule = VISITOR_PUSHES.get(type(push), _never)
    return rule(push)


R = TypeVar("R")


def for_visitor_result(result: R) -> R:
    """A command result (or welcome) about to be answered to a visitor, filtered."""
    if isinstance(result, History):
        events = tuple(v for v in (for_visitor_event(e) for e in result.events) if v is not None)
        return cast(R, attrs.evolve(result, events=events))
    if isinstance(result, ConversationResult | VisitorWelcome):
        return cast(R, _with_summary(result))
    return result
