"""Admin API of triggers (issue 16): queued-chat triggers (an auto-reply while queued, a tag,
a move to another group) and page_view triggers before a chat (a greeting, an invitation, and a
tag or group for the chat the visitor then starts). Stored in ``Workspace.settings["triggers"]``
and evaluated by the engine (``engine.triggers``); a change applies at once and is audited. The
schema is in ``web.schemas_triggers``. See docs/admin-api.md.
"""

from __future__ import annotations

import secrets

import attrs
import cattrs

from storage import Role
from web.api_admin import audit, workspace_changed
from web.errors import BadRequest
from web.httpapi import ApiBlueprint, Call
from web.schemas_triggers import EVENT_ACTIONS, EVENT_ONLY, TriggerItem, TriggerList
from web.wire import api_converter

api = ApiBlueprint("api_triggers", "triggers")

_NEEDS = {
    "auto_reply": "text",
    "greeting": "text",
    "invitation": "text",
    "add_tag": "tag",
    "assign_group": "to_group_id",
}


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
        if trigger.action not in EVENT_ACTIONS[trigger.event]:
            raise BadRequest(
                f"a {trigger.event} trigger cannot {trigger.action}",
                code="invalid_value",
                field=f"{where}.action",
            )
        for name, event in EVENT_ONLY.items():
            default = attrs.fields_dict(TriggerItem)[name].default
            if event != trigger.event and getattr(trigger, name) != default:
                raise BadRequest(
                    f"{name}: only for {event} triggers",
                    code="invalid_value",
                    field=f"{where}.{name}",
                )
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
