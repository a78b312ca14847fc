"""A workspace's settings: the widget (and its allowed origins), routing, the identity secret
and the tag catalogue. Each change is audited and told to the engine.
"""

from __future__ import annotations

from typing import Any

import cattrs

from storage import Role
from web.api_admin import audit, workspace_changed
from web.errors import BadRequest
from web.httpapi import ApiBlueprint, Call
from web.schemas_admin import (
    TagsIn,
    TagsOut,
)
from web.schemas_settings import (
    IdentitySecret,
    RoutingSettings,
    WidgetSettings,
    WidgetSettingsIn,
    WidgetSettingsPatch,
)
from web.wire import api_converter

api = ApiBlueprint("api_settings", "admin")


# ---------------------------------------------------------------- settings


def _settings(call: Call) -> dict[str, Any]:
    return dict(call.caller.workspace.settings)


def read_widget_settings(ws: Any) -> WidgetSettings:
    raw = dict(ws.settings.get("widget") or {})
    raw["allowed_origins"] = list(ws.allowed_origins)
    try:
        return api_converter.structure(raw, WidgetSettings)
    except (cattrs.BaseValidationError, ValueError, TypeError):
        return WidgetSettings(allowed_origins=tuple(ws.allowed_origins))


def read_routing_settings(ws: Any) -> RoutingSettings:
    try:
        return api_converter.structure(dict(ws.settings.get("routing") or {}), RoutingSettings)
    except (cattrs.BaseValidationError, ValueError, TypeError):
        return RoutingSettings()


@api.op(
    "GET", "/settings/widget", summary="Widget appearance and behaviour", response=WidgetSettings
)
async def get_widget_settings(call: Call) -> WidgetSettings:
    return read_widget_settings(call.caller.workspace)


@api.op(
    "PUT",
    "/settings/widget",
    summary="Replace the widget settings (and allowed origins): every field required",
    body=WidgetSettingsIn,
    response=WidgetSettings,
    role=Role.ADMIN,
)
async def put_widget_settings(call: Call, body: WidgetSettingsIn) -> WidgetSettings:
    """A body without a field is refused (``missing_field``), and no body or ``{}`` is
    ``body_required``: a replace never resets settings the client did not send."""
    return await _store_widget_settings(call, api_converter.unstructure(body))


@api.op(
    "PATCH",
    "/settings/widget",
    summary="Change some widget settings; the others keep their values",
    body=WidgetSettingsPatch,
    response=WidgetSettings,
    role=Role.ADMIN,
)
async def patch_widget_settings(call: Call, body: WidgetSettingsPatch) -> WidgetSettings:
    current = api_converter.unstructure(read_widget_settings(call.caller.workspace))
    changes = {k: v for k, v in api_converter.unstructure(body).items() if v is not None}
    return await _store_widget_settings(call, {**current, **changes})


async def _store_widget_settings(call: Call, data: dict[str, Any]) -> WidgetSettings:
    body = api_converter.structure(data, WidgetSettings)
    for i, origin in enumerate(body.allowed_origins):
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise BadRequest(
                "an origin is scheme://host[:port] without a path",
                code="invalid_value",
                field=f"$.allowed_origins[{i}]",
            )
    data = api_converter.unstructure(body)
    origins = tuple(data.pop("allowed_origins"))
    settings = _settings(call)
    settings["widget"] = data
    ws = await call.services.storage.update_workspace(
        call.workspace_id, settings=settings, allowed_origins=origins
    )
    await workspace_changed(call)
    await audit(call, "settings.widget_changed", f"workspace:{ws.id}")
    return read_widget_settings(ws)


@api.op("GET", "/settings/routing", summary="Routing mode and timeouts", response=RoutingSettings)
async def get_routing_settings(call: Call) -> RoutingSettings:
    return read_routing_settings(call.caller.workspace)


@api.op(
    "PUT",
    "/settings/routing",
    summary="Replace the routing settings",
    body=RoutingSettings,
    response=RoutingSettings,
    role=Role.ADMIN,
)
async def put_routing_settings(call: Call, body: RoutingSettings) -> RoutingSettings:
    if body.default_group_id is not None and (
        await call.services.storage.get_group(call.workspace_id, body.default_group_id) is None
    ):
        raise BadRequest("no such group", code="invalid_value", field="$.default_group_id")
    settings = _settings(call)
    settings["routing"] = api_converter.unstructure(body)
    ws = await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await workspace_changed(call)
    await audit(call, "settings.routing_changed", f"workspace:{ws.id}")
    return read_routing_settings(ws)


@api.op(
    "GET",
    "/settings/identity-secret",
    summary="The HMAC key your site signs visitor identities with",
    response=IdentitySecret,
    role=Role.ADMIN,
    scope="admin",  # a credential: a read-only token must not be able to forge identities
)
async def get_identity_secret(call: Call) -> IdentitySecret:
    await audit(call, "settings.identity_secret_read", f"workspace:{call.workspace_id}")
    return IdentitySecret(identity_secret=call.caller.workspace.identity_secret)


@api.op("GET", "/tags", summary="The tag catalogue", response=TagsOut)
async def get_tags(call: Call) -> TagsOut:
    tags = call.caller.workspace.settings.get("tags") or []
    return TagsOut(tags=tuple(str(t) for t in tags))


@api.op(
    "PUT",
    "/tags",
    summary="Replace the tag catalogue",
    body=TagsIn,
    response=TagsOut,
    role=Role.SUPERVISOR,
)
async def put_tags(call: Call, body: TagsIn) -> TagsOut:
    settings = _settings(call)
    before = set(settings.get("tags") or [])
    settings["tags"] = sorted(set(body.tags))
    await call.services.storage.update_workspace(call.workspace_id, settings=settings)
    await call.services.access.workspace_updated(call.workspace_id)
    await audit(
        call,
        "settings.tags_changed",
        f"workspace:{call.workspace_id}",
        added=sorted(set(settings["tags"]) - before),
        removed=sorted(before - set(settings["tags"])),
    )
    return TagsOut(tags=tuple(settings["tags"]))
