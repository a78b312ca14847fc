"""Triggers (issue 16): conditions on the visitor, their visit or their wait, and an action.

Two kinds, by ``event``:

- ``"queued"`` (the default): for a queued chat, once it has waited ``queue_wait_s`` and its
  visitor matches. Actions: ``auto_reply`` (a message to the visitor while they wait),
  ``add_tag``, ``assign_group`` (the chat moves to another group's queue). Fired by the router,
  at most once per chat.
- ``"page_view"``: before a chat exists, while the visitor browses: conditions on the page URL,
  time on the page (``time_on_page_s``), time on the site this visit (``time_on_site_s``),
  returning visitor and attributes. Actions: ``greeting`` (a message card in the widget from
  ``sender_name``, the workspace's name by default; answering it starts a chat that opens with
  the greeting) and ``invitation`` (the same, shown as the widget's invitation card), fired by
  the visitor's actor; ``add_tag`` and ``assign_group`` apply to the chat the visitor starts if
  the visitor matches at that moment.

A greeting or invitation fires only within the workspace's business hours and, unless its
``only_when_available`` is false, while an agent accepts chats: otherwise the visitor would be
invited into a chat the widget then offers only as an offline message. One whose conditions
hold meanwhile waits and fires when that changes (engine.greetings).

Every firing is recorded for agents (a note in the chat naming the trigger; a pre-chat greeting
also on the live visitor list), and a trigger fires at most once per visitor per ``cooldown_s``
(the per-visitor rate limit, stored: ``storage.record_trigger_firing``).

Pure: ``read_triggers`` reads ``Workspace.settings["triggers"]`` (the layout the admin API
stores, docs/admin-api.md); ``matches``, ``visit_matches`` and ``visit_due_in`` are all the
actors ask. A malformed entry is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from engine.messages import VisitorSummary

__all__ = [
    "ACTIONS",
    "EVENTS",
    "GREETING_ACTIONS",
    "VISIT_ACTIONS",
    "Trigger",
    "matches",
    "read_triggers",
    "visit_due_in",
    "visit_matches",
]

ACTIONS = ("auto_reply", "add_tag", "assign_group")  # of queued-chat triggers
GREETING_ACTIONS = ("greeting", "invitation")  # shown before a chat exists
VISIT_ACTIONS = (*GREETING_ACTIONS, "add_tag", "assign_group")  # of page_view triggers
EVENTS = ("queued", "page_view")


@attrs.frozen(kw_only=True)
class Trigger:
    id: str
    name: str
    action: str  # one of ACTIONS (event "queued") or VISIT_ACTIONS (event "page_view")
    event: str = "queued"  # one of EVENTS
    queue_wait_s: float = 0.0
    time_on_page_s: float = 0.0  # page_view: on the current page at least this long
    time_on_site_s: float = 0.0  # page_view: on the site (this visit) at least this long
    url_contains: str | None = None
    returning_visitor: bool | None = None  # True: only returning; False: only first visits
    attribute: str | None = None  # with attribute_value: the visitor attribute must equal it
    attribute_value: str | None = None
    group_id: str | None = None  # only chats of this group (queued)
    text: str | None = None  # auto_reply, greeting, invitation
    sender_name: str | None = None  # greeting, invitation: shown as the author (else workspace)
    tag: str | None = None  # add_tag
    to_group_id: str | None = None  # assign_group
    cooldown_s: float = 3600.0
    # greeting, invitation: only while an agent accepts chats (false: also when none does, e.g.
    # "leave us a message" beside the widget's offline form); never outside business hours
    only_when_available: bool = True


def _visitor_matches(trigger: Trigger, visitor: VisitorSummary | None) -> bool:
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


def matches(
    trigger: Trigger, visitor: VisitorSummary | None, group_id: str | None, waited_s: float
) -> bool:
    """A queued-chat trigger for a chat of ``group_id`` that has waited ``waited_s``."""
    if waited_s < trigger.queue_wait_s:
        return False
    if trigger.group_id is not None and trigger.group_id != group_id:
        return False
    return _visitor_matches(trigger, visitor)


def visit_due_in(trigger: Trigger, on_page_s: float, on_site_s: float) -> float:
    """Seconds until the trigger's time conditions hold (0: they hold now)."""
    return max(0.0, trigger.time_on_page_s - on_page_s, trigger.time_on_site_s - on_site_s)


def visit_matches(
    trigger: Trigger, visitor: VisitorSummary, on_page_s: float, on_site_s: float
) -> bool:
    """A page_view trigger for a browsing visitor: their page, visit and time conditions."""
    return visit_due_in(trigger, on_page_s, on_site_s) == 0.0 and _visitor_matches(
        trigger, visitor
    )


_NEEDED = {
    "auto_reply": "text",
    "greeting": "text",
    "invitation": "text",
    "add_tag": "tag",
    "assign_group": "to_group_id",
}


def _trigger(raw: Any) -> Trigger | None:
    if not isinstance(raw, Mapping) or raw.get("enabled") is False:
        return None
    event = raw.get("event") or "queued"
    allowed = ACTIONS if event == "queued" else VISIT_ACTIONS if event == "page_view" else ()
    action = raw.get("action")
    if action not in allowed or not isinstance(raw.get("id"), str):
        return None
    fields = {f.name for f in attrs.fields(Trigger)}
    values = {k: v for k, v in raw.items() if k in fields and v is not None}
    try:
        trigger = Trigger(**values)
    except TypeError:
        return None
    return trigger if getattr(trigger, _NEEDED[trigger.action]) else None


def read_triggers(settings: Mapping[str, Any]) -> tuple[Trigger, ...]:
    raw = settings.get("triggers")
    if not isinstance(raw, list | tuple):
        return ()
    return tuple(t for t in (_trigger(r) for r in raw) if t is not None)
