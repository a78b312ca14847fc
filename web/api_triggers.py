"""Admin API of triggers (issue 16): conditions on a queued chat's visitor and wait, and an
action (an auto-reply while queued, a tag, a move to another group). Stored in
``Workspace.settings["triggers"]`` and evaluated by the router (``engine.triggers``); a change
applies at once and is audited. See docs/admin-api.md.
"""

from __future__ import annotations

import secrets
from typing import Literal

import attrs
import cattrs

from storage import Role
from web.api_admin import audit, workspace_changed
from web.errors import BadRequest
from web.httpapi import ApiBlueprint, Call
from web.schemas import ID
from web.wire import api_converter, number
from web.wire import text as bounded

api = ApiBlueprint("api_triggers", "triggers")

MAX_TRIGGERS = 50
_NEEDS = {"auto_reply": "text", "add_tag": "tag", "assign_group": "to_group_id"}


@attrs.frozen(kw_only=True)
class TriggerItem:
    """One trigger; ``id`` is given by the server when left out."""

    id: str | None = attrs.field(default=None, **bounded(max_len=ID, min_len=1))
    name: str = attrs.field(**bounded(max_len=100, min_len=1))
    enabled: bool = True
    action: Literal["auto_reply", "add_tag", "assign_group"]
    queue_wait_s: float = attrs.field(default=0.0, **number(minimum=0, maximum=86400))
    url_contains: str | None = attrs.field(default=None, **bounded(max_len=300, min_len=1))
    returning_visitor: bool | None = None
    attribute: str | None = attrs.field(default=None, **bounded(max_len=64, min_len=1))
    attribute_value: str | None = attrs.field(default=None, **bounded(max_len=300))
    group_id: str | None = attrs.field(default=None, **bounded(max_len=ID, min_len=1))
    text: str | None = attrs.field(default=None, **bounded(max_len=2000, min_len=1))
    tag: str | None = attrs.field(default=None, **bounded(max_len=64, min_len=1))
    to_group_id: str | None = attrs.field(default=None, **bounded(max_len=ID, min_len=1))
    cooldown_s: float = attrs.field(default=3600.0, **number(minimum=0, maximum=604800))


@attrs.frozen(kw_only=True)
class TriggerList:
    triggers: tuple[TriggerItem, ...] = attrs.field(
        validator=attrs.validators.max_len(MAX_TRIGGERS)
    )


def _read(settings: object) -> TriggerList:
    raw = settings.get("triggers") if isinstance(settings, dict) else None
    try:
        return api_converter.structure({"triggers": list(raw or [])}, TriggerList)
    except (cattrs.BaseValidationError, ValueError, TypeError):  # an older layout: none
        return TriggerList(triggers=())


@api.op("GET", "/triggers", summary="Triggers and auto-replies", response=TriggerList)
async def get_triggers(call: Call) -> TriggerList:
    return _read(dict(call.caller.workspace.settings))


@api.op(
    "PUT",
    "/triggers",
    summary="Replace the triggers",
    body=TriggerList,
    response=TriggerList,
    role=Role.ADMIN,
)
async def put_triggers(call: Call, body: TriggerList) -> TriggerList:
    groups = {g.id for g in await call.services.storage.list_groups(call.workspace_id)}
    seen: set[str] = set()
    out = []
    for i, trigger in enumerate(body.triggers):
        where = f"$.triggers[{i}]"
        needed = _NEEDS[trigger.action]
        if getattr(trigger, needed) is None:
            raise BadRequest(
                f"{trigger.action} needs {needed}", code="missing_field", field=f"{where}.{needed}"
            )
        for name in ("group_id", "to_group_id"):
            value = getattr(trigger, name)
            if value is not None and value not in groups:
                raise BadRequest("no such group", code="invalid_value", field=f"{where}.{name}")
        if (trigger.attribute is None) != (trigger.attribute_value is None):
            raise BadRequest(
                "attribute and attribute_value go together",
                code="invalid_value",
                field=f"{where}.attribute",
            )
        trigger_id = trigger.id or "t" + secrets.token_hex(6)
        if trigger_id in seen:
            raise BadRequest("duplicate trigger id", code="invalid_value", field=f"{where}.id")
        seen.add(trigger_id)
        out.append(attrs.evolve(trigger, id=trigger_id))
    stored = TriggerList(triggers=tuple(out))
    settings = dict(call.caller.workspace.settings)
    settings["triggers"] = api_converter.unstructure(stored)["triggers"]
    await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await workspace_changed(call)
    await audit(call, "settings.triggers_changed", f"workspace:{call.workspace_id}")
    return stored
