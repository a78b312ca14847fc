"""Triggers for queued chats (issue 16): conditions on the visitor and the wait, and an action.

A trigger fires for a queued chat once the chat has waited ``queue_wait_s`` and the visitor
matches its conditions (page URL contains, returning visitor, an attribute's value, group).
Its action: an ``auto_reply`` (a message to the visitor while they wait), ``add_tag`` or
``assign_group`` (the chat moves to another group's queue). Each firing is also recorded as a
note for agents. A trigger fires at most once per chat, and at most once per visitor per
``cooldown_s`` (the per-visitor rate limit; kept by the router, in memory).

Pure: ``read_triggers`` reads ``Workspace.settings["triggers"]`` (the layout the admin API
stores, docs/admin-api.md) and ``matches`` is all the router asks. A malformed entry is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from engine.messages import VisitorSummary

__all__ = ["ACTIONS", "Trigger", "matches", "read_triggers"]

ACTIONS = ("auto_reply", "add_tag", "assign_group")


@attrs.frozen(kw_only=True)
class Trigger:
    id: str
    name: str
    action: str  # one of ACTIONS
    queue_wait_s: float = 0.0
    url_contains: str | None = None
    returning_visitor: bool | None = None  # True: only returning; False: only first visits
    attribute: str | None = None  # with attribute_value: the visitor attribute must equal it
    attribute_value: str | None = None
    group_id: str | None = None  # only chats of this group
    text: str | None = None  # auto_reply
    tag: str | None = None  # add_tag
    to_group_id: str | None = None  # assign_group
    cooldown_s: float = 3600.0


def matches(
    trigger: Trigger, visitor: VisitorSummary | None, group_id: str | None, waited_s: float
) -> bool:
    if waited_s < trigger.queue_wait_s:
        return False
    if trigger.group_id is not None and trigger.group_id != group_id:
        return False
    needs_visitor = (
        trigger.url_contains is not None
        or trigger.returning_visitor is not None
        or trigger.attribute is not None
    )
    if not needs_visitor:
        return True
    if visitor is None:
        return False
    if trigger.url_contains is not None:
        page = visitor.current_page
        if page is None or trigger.url_contains not in page.url:
            return False
    if trigger.returning_visitor is not None and (visitor.visits > 1) != trigger.returning_visitor:
        return False
    if trigger.attribute is not None:
        value = visitor.attributes.get(trigger.attribute)
        if value is None or str(value) != (trigger.attribute_value or ""):
            return False
    return True


def _trigger(raw: Any) -> Trigger | None:
    if not isinstance(raw, Mapping) or raw.get("enabled") is False:
        return None
    action = raw.get("action")
    if action not in ACTIONS or not isinstance(raw.get("id"), str):
        return None
    fields = {f.name for f in attrs.fields(Trigger)}
    values = {k: v for k, v in raw.items() if k in fields and v is not None}
    try:
        trigger = Trigger(**values)
    except TypeError:
        return None
    needed = {
        "auto_reply": trigger.text,
        "add_tag": trigger.tag,
        "assign_group": trigger.to_group_id,
    }
    return trigger if needed[action] else None


def read_triggers(settings: Mapping[str, Any]) -> tuple[Trigger, ...]:
    raw = settings.get("triggers")
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(t for t in (_trigger(r) for r in raw) if t is not None)
