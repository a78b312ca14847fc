"""Bodies of conversations, transcripts, search, visitors, bans and reports
(``web.api_chats``). Responses never carry visitor tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from web.schemas import ID
from web.wire import items, number, text

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
    """One visitor's open sockets (tabs), on every node: how many, and when the oldest
    connected (Unix seconds)."""

    visitor_id: str
    connections: int
    connected_at: float


@attrs.frozen(kw_only=True)
class LiveVisitors:
    """The visitors connected now, oldest first. In a cluster, ``partial`` is true when some
    node did not answer in time; ``nodes_missing`` names them (their visitors are not listed)."""

    visitors: tuple[LiveVisitor, ...]
    partial: bool = False
    nodes_missing: tuple[str, ...] = ()


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


# ---------------------------------------------------------------- reports and routing decisions


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
class ExportQuery:
    format: Literal["jsonl", "csv"] = "jsonl"
    visitor_id: str | None = None
    # With ``visitor_id`` (a data subject's export): "mark" keeps the workspace's internal rows
    # and fields and marks them; "exclude" leaves out everything the visitor never saw.
    internal: Literal["mark", "exclude"] = "mark"
