"""The public widget configuration: what the widget needs before it opens its socket."""

from __future__ import annotations

import time
from collections.abc import Iterable

from quart import Response, request

from engine import EngineError, read_hours
from storage import Group, WorkspaceStatus
from web.api_settings import read_widget_settings
from web.errors import NotFound
from web.httpapi import ApiBlueprint, PublicCall, json_response
from web.mail import offline_text
from web.origins import normalize_origin, origin_allowed
from web.schemas_settings import Department, WidgetConfig, WidgetKeyQuery

api = ApiBlueprint("api_public", "widget")


def public_departments(groups: Iterable[Group]) -> tuple[Department, ...]:
    """The groups marked public: the departments the pre-chat form offers (issue 16)."""
    return tuple(Department(id=g.id, name=g.name) for g in groups if g.public)


@api.op(
    "GET",
    "/widget/config",
    summary="Public widget configuration for a widget key (CORS for allowed origins)",
    query=WidgetKeyQuery,
    response=WidgetConfig,
    auth=False,
)
async def widget_config(call: PublicCall, query: WidgetKeyQuery) -> Response:
    services = call.services
    ws = await services.storage.get_workspace_by_widget_key(query.key)
    if ws is None or ws.status is not WorkspaceStatus.ACTIVE:
        raise NotFound("unknown widget key")
    widget = read_widget_settings(ws)
    try:  # an agent accepting chats with room for one more, as the router sees it
        online = await services.gateway.agents_available(ws.id)
    except EngineError:  # starting, stopping or overloaded: offer the offline form
        online = False
    config = WidgetConfig(
        workspace_name=ws.name,
        color=widget.color,
        title=widget.title,
        greeting=widget.greeting,
        position=widget.position,
        pre_chat_enabled=widget.pre_chat_enabled,
        pre_chat_fields=widget.pre_chat_fields,
        offline_form_enabled=widget.offline_form_enabled,
        offline_message=offline_text(widget.offline_message, mail_enabled=services.mailer.enabled),
        sneak_peek=widget.sneak_peek,
        online=online,
        mail_enabled=services.mailer.enabled,
        departments=public_departments(await services.storage.list_groups(ws.id)),
        open=read_hours(ws.settings).open_for(None, time.time()),
    )
    response = json_response(config)
    origin = request.headers.get("Origin")
    if origin and origin_allowed(origin, ws, services.settings):
        response.headers["Access-Control-Allow-Origin"] = normalize_origin(origin) or origin
    response.headers["Vary"] = "Origin"
    return response
