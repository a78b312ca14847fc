"""Schemas of the triggers admin API (``web.api_triggers``; docs/admin-api.md).

A trigger has an ``event``: ``queued`` (a queued chat's wait and visitor) or ``page_view`` (a
visitor browsing, before any chat). Which actions each allows is ``EVENT_ACTIONS``; the fields
that belong to one event only are ``EVENT_ONLY`` (the API refuses them on the other).
"""

from __future__ import annotations

from typing import Literal

import attrs

from web.schemas import ID
from web.wire import number
from web.wire import text as bounded

__all__ = ["EVENT_ACTIONS", "EVENT_ONLY", "MAX_TRIGGERS", "TriggerItem", "TriggerList"]

MAX_TRIGGERS = 50
EVENT_ACTIONS = {
    "queued": ("auto_reply", "add_tag", "assign_group"),
    "page_view": ("greeting", "invitation", "add_tag", "assign_group"),
}
EVENT_ONLY = {
    "queue_wait_s": "queued",
    "group_id": "queued",
    "time_on_page_s": "page_view",
    "time_on_site_s": "page_view",
    "sender_name": "page_view",
    "only_when_available": "page_view",
}


@attrs.frozen(kw_only=True)
class TriggerItem:
    """One trigger; ``id`` is given by the server when left out."""

    id: str | None = attrs.field(default=None, **bounded(max_len=ID, min_len=1))
    name: str = attrs.field(**bounded(max_len=100, min_len=1))
    enabled: bool = True
    # "queued": for a queued chat; "page_view": while the visitor browses, before a chat
    event: Literal["queued", "page_view"] = "queued"
    action: Literal["auto_reply", "add_tag", "assign_group", "greeting", "invitation"]
    queue_wait_s: float = attrs.field(default=0.0, **number(minimum=0, maximum=86400))
    time_on_page_s: float = attrs.field(default=0.0, **number(minimum=0, maximum=86400))
    time_on_site_s: float = attrs.field(default=0.0, **number(minimum=0, maximum=86400))
    url_contains: str | None = attrs.field(default=None, **bounded(max_len=300, min_len=1))
    returning_visitor: bool | None = None
    attribute: str | None = attrs.field(default=None, **bounded(max_len=64, min_len=1))
    attribute_value: str | None = attrs.field(default=None, **bounded(max_len=300))
    group_id: str | None = attrs.field(default=None, **bounded(max_len=ID, min_len=1))
    text: str | None = attrs.field(default=None, **bounded(max_len=2000, min_len=1))
    sender_name: str | None = attrs.field(default=None, **bounded(max_len=100, min_len=1))
    tag: str | None = attrs.field(default=None, **bounded(max_len=64, min_len=1))
    to_group_id: str | None = attrs.field(default=None, **bounded(max_len=ID, min_len=1))
    cooldown_s: float = attrs.field(default=3600.0, **number(minimum=0, maximum=604800))
    # page_view greeting/invitation: only while an agent accepts chats (false: also when none
    # does, beside the widget's offline form); never outside business hours either way
    only_when_available: bool = True


@attrs.frozen(kw_only=True)
class TriggerList:
    triggers: tuple[TriggerItem, ...] = attrs.field(
        validator=attrs.validators.max_len(MAX_TRIGGERS)
    )
