"""Admin API of business hours (issue 16): the workspace's and its groups' weekly schedules,
time zones and holidays, stored in ``Workspace.settings["hours"]`` (read by ``engine.hours``).

Outside the workspace's hours the widget offers the offline form and the router assigns
nothing; outside a group's own hours its chats wait in the queue. A change applies at once
(``ChatEngine.workspace_changed``) and is audited.
"""

from __future__ import annotations

import datetime as dt
import time

import cattrs

from engine import minutes_of_day, read_hours, valid_time_zone
from storage import Role
from web.api_admin import audit, workspace_changed
from web.errors import BadRequest
from web.httpapi import ApiBlueprint, Call
from web.schemas_settings import BusinessHours, BusinessHoursOut, OpeningPeriod
from web.wire import api_converter

api = ApiBlueprint("api_hours", "hours")


def read_business_hours(settings: object) -> BusinessHours:
    raw = settings.get("hours") if isinstance(settings, dict) else None
    try:
        return api_converter.structure(dict(raw or {}), BusinessHours)
    except (cattrs.BaseValidationError, ValueError, TypeError):
        return BusinessHours()


def _out(settings: dict[str, object]) -> BusinessHoursOut:
    return BusinessHoursOut(
        hours=read_business_hours(settings),
        open_now=read_hours(settings).open_for(None, time.time()),
    )


def _check_schedule(
    where: str, time_zone: str, weekly: tuple[OpeningPeriod, ...], holidays: tuple[str, ...]
) -> None:
    if not valid_time_zone(time_zone):
        raise BadRequest(
            "not an IANA time zone (e.g. Europe/Paris)",
            code="invalid_value",
            field=f"{where}.time_zone",
        )
    for i, period in enumerate(weekly):
        start, end = minutes_of_day(period.open), minutes_of_day(period.close)
        if start is None or end is None or start >= end:
            raise BadRequest(
                "close must be after open (24:00 for midnight)",
                code="invalid_value",
                field=f"{where}.weekly[{i}]",
            )
    for i, day in enumerate(holidays):
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            raise BadRequest(
                "a holiday is a date YYYY-MM-DD",
                code="invalid_value",
                field=f"{where}.holidays[{i}]",
            ) from None


@api.op("GET", "/settings/hours", summary="Business hours", response=BusinessHoursOut)
async def get_hours(call: Call) -> BusinessHoursOut:
    return _out(dict(call.caller.workspace.settings))


@api.op(
    "PUT",
    "/settings/hours",
    summary="Replace the business hours (workspace and groups)",
    body=BusinessHours,
    response=BusinessHoursOut,
    role=Role.ADMIN,
)
async def put_hours(call: Call, body: BusinessHours) -> BusinessHoursOut:
    _check_schedule("$", body.time_zone, body.weekly, body.holidays)
    storage = call.services.storage
    known = {g.id for g in await storage.list_groups(call.workspace_id)}
    for i, group in enumerate(body.groups):
        where = f"$.groups[{i}]"
        if group.group_id not in known:
            raise BadRequest("no such group", code="invalid_value", field=f"{where}.group_id")
        _check_schedule(where, group.time_zone, group.weekly, group.holidays)
    settings = dict(call.caller.workspace.settings)
    settings["hours"] = api_converter.unstructure(body)
    ws = await storage.update_workspace(call.workspace_id, settings=settings)
    await workspace_changed(call)
    await audit(call, "settings.hours_changed", f"workspace:{ws.id}")
    return _out(dict(ws.settings))
