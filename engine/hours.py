"""Business hours: when a workspace (or one of its groups) takes chats.

A ``Schedule`` is a time zone, weekly opening periods and holidays (whole local dates, closed).
Outside the workspace's hours the widget offers the offline form and the router assigns
nothing; outside a group's own hours its chats wait in the queue (docs/admin-api.md).

Pure and synchronous: ``is_open(schedule, epoch_s)`` is all the router and the web layer ask.
The layout stored in ``Workspace.settings["hours"]`` is read here and nowhere else:
``{"enabled": bool, "time_zone": "Europe/Paris", "weekly": [{"day": "mon", "open": "09:00",
"close": "17:30"}, ...], "holidays": ["2026-12-25"], "groups": [{"group_id": ..., "time_zone":
..., "weekly": [...], "holidays": [...]}]}``. A period's ``close`` of ``"24:00"`` means the end
of the day; a malformed schedule reads as "no schedule" (always open), never as closed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

__all__ = [
    "DAYS",
    "Hours",
    "Schedule",
    "is_open",
    "minutes_of_day",
    "read_hours",
    "valid_time_zone",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def minutes_of_day(hhmm: str) -> int | None:
    """``"09:30"`` → 570; ``"24:00"`` → 1440; anything else → None."""
    match = _HHMM.match(hhmm)
    if match is None:
        return None
    if hhmm == "24:00":
        return 1440
    return int(match[1]) * 60 + int(match[2])


def valid_time_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@attrs.frozen(kw_only=True)
class Schedule:
    time_zone: str
    # per weekday (Monday first): (start, end) minutes of the local day, end exclusive
    weekly: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[str]  # ISO local dates, closed all day


@attrs.frozen(kw_only=True)
class Hours:
    """The workspace's schedule (None: always open) and its groups' own schedules."""

    workspace: Schedule | None = None
    groups: Mapping[str, Schedule] = attrs.field(factory=dict)

    def open_for(self, group_id: str | None, epoch_s: float) -> bool:
        """Open for a chat of ``group_id``: the workspace is open and so is the group (a group
        without its own schedule follows the workspace's)."""
        if not is_open(self.workspace, epoch_s):
            return False
        own = self.groups.get(group_id or "")
        return own is None or is_open(own, epoch_s)


def is_open(schedule: Schedule | None, epoch_s: float) -> bool:
    if schedule is None:
        return True
    local = dt.datetime.fromtimestamp(epoch_s, ZoneInfo(schedule.time_zone))
    if local.date().isoformat() in schedule.holidays:
        return False
    minute = local.hour * 60 + local.minute
    return any(start <= minute < end for start, end in schedule.weekly[local.weekday()])


def _schedule(raw: Any) -> Schedule | None:
    if not isinstance(raw, Mapping):
        return None
    tz = raw.get("time_zone")
    if not isinstance(tz, str) or not valid_time_zone(tz):
        return None
    days: list[list[tuple[int, int]]] = [[] for _ in DAYS]
    for period in raw.get("weekly") or ():
        if not isinstance(period, Mapping) or period.get("day") not in DAYS:
            return None
        start = minutes_of_day(str(period.get("open", "")))
        end = minutes_of_day(str(period.get("close", "")))
        if start is None or end is None or start >= end:
            return None
        days[DAYS.index(period["day"])].append((start, end))
    holidays = raw.get("holidays") or ()
    return Schedule(
        time_zone=tz,
        weekly=tuple(tuple(sorted(d)) for d in days),
        holidays=frozenset(str(h) for h in holidays if isinstance(h, str)),
    )


def read_hours(settings: Mapping[str, Any]) -> Hours:
    """The workspace's business hours from its settings (``settings["hours"]``)."""
    raw = settings.get("hours")
    if not isinstance(raw, Mapping) or raw.get("enabled") is not True:
        return Hours()
    groups: dict[str, Schedule] = {}
    for entry in raw.get("groups") or ():
        if isinstance(entry, Mapping) and isinstance(entry.get("group_id"), str):
            schedule = _schedule(entry)
            if schedule is not None:
                groups[entry["group_id"]] = schedule
    return Hours(workspace=_schedule(raw), groups=groups)
