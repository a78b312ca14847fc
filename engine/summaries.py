"""What the engine shows of chats, visitors and agents: shared enums and read-only views.

Parts of results and pushes (``engine.replies``) and of some commands; see ``engine.messages``
for the conventions every message follows.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs


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
class VisitorGreeting:
    """A page_view trigger's greeting or invitation shown to a visitor who has no chat yet."""

    trigger_id: str
    trigger_name: str
    action: str  # "greeting" | "invitation"
    text: str
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
    greeting: VisitorGreeting | None = None  # the last greeting a trigger showed this visit


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
