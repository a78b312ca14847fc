"""Business hours: the schedule itself (time zones, weekly periods, holidays) and the router,
which neither offers chats nor calls agents available outside the hours."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from engine.hours import is_open, read_hours
from engine.messages import GetRoutingLog, MessageAck, SendMessage
from tests.engine.conftest import World, wait_until

PARIS = ZoneInfo("Europe/Paris")
ALL_WEEK = [
    {"day": d, "open": "00:00", "close": "24:00"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]


def _at(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, tzinfo=PARIS).timestamp()


def test_schedule_is_read_in_its_own_time_zone_with_holidays() -> None:
    hours = read_hours(
        {
            "hours": {
                "enabled": True,
                "time_zone": "Europe/Paris",
                "weekly": [
                    {"day": "mon", "open": "09:00", "close": "12:00"},
                    {"day": "mon", "open": "13:00", "close": "17:30"},
                    {"day": "sat", "open": "10:00", "close": "24:00"},
                ],
                "holidays": ["2026-12-28"],
            }
        }
    )
    schedule = hours.workspace
    # 2026-11-30 is a Monday.
    assert not is_open(schedule, _at(2026, 11, 30, 8, 59))
    assert is_open(schedule, _at(2026, 11, 30, 9, 0))
    assert not is_open(schedule, _at(2026, 11, 30, 12, 30))  # lunch
    assert is_open(schedule, _at(2026, 11, 30, 17, 29))
    assert not is_open(schedule, _at(2026, 11, 30, 17, 30))  # close is exclusive
    assert not is_open(schedule, _at(2026, 12, 1, 10, 0))  # Tuesday: no period
    assert is_open(schedule, _at(2026, 12, 5, 23, 59))  # 24:00 is the end of the day
    assert not is_open(schedule, _at(2026, 12, 28, 10, 0))  # a Monday, but a holiday
    # 08:30 UTC on a Monday is 09:30 in Paris (winter): open by the schedule's own clock.
    utc = dt.datetime(2026, 11, 30, 8, 30, tzinfo=dt.UTC).timestamp()
    assert is_open(schedule, utc)


def test_disabled_or_malformed_hours_are_always_open() -> None:
    assert read_hours({}).open_for(None, time.time())
    assert read_hours({"hours": {"enabled": False, "time_zone": "UTC"}}).open_for(None, 0)
    broken = {"hours": {"enabled": True, "time_zone": "Mars/Olympus", "weekly": []}}
    assert read_hours(broken).open_for(None, 0)


def test_a_group_follows_the_workspace_unless_it_has_its_own_hours() -> None:
    hours = read_hours(
        {
            "hours": {
                "enabled": True,
                "time_zone": "UTC",
                "weekly": ALL_WEEK,
                "groups": [{"group_id": "night", "time_zone": "UTC", "weekly": []}],
            }
        }
    )
    now = time.time()
    assert hours.open_for(None, now) and hours.open_for("day", now)
    assert not hours.open_for("night", now)


CLOSED = {"hours": {"enabled": True, "time_zone": "UTC", "weekly": []}}


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [CLOSED])
async def test_outside_hours_nothing_is_assigned_and_visitors_see_no_agent(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor())
    assert v.conn.welcome.agents_available is False  # the widget offers the offline form
    ack = await world.engine.request(v.conn, SendMessage(client_msg_id="m", text="hi"))
    assert isinstance(ack, MessageAck)
    await world.tick()
    await world.tick()
    conv = await world.storage.get_conversation(world.workspace_id, ack.conversation_id)
    assert conv is not None and conv.state == "queued" and conv.assignee_id is None
    log = await world.engine.request(ann.conn, GetRoutingLog(conversation_id=ack.conversation_id))
    assert [d.reason for d in log.decisions] == ["outside_hours"]
    # Opening hours begin (here: the schedule changes): the waiting chat is routed.
    await world.storage.update_workspace(
        world.workspace_id,
        settings={"hours": {"enabled": True, "time_zone": "UTC", "weekly": ALL_WEEK}},
    )
    await world.engine.workspace_changed(world.workspace_id)
    await world.tick()
    assert await world.engine.agents_available(world.workspace_id) is True

    async def assigned() -> bool:
        c = await world.storage.get_conversation(world.workspace_id, ack.conversation_id)
        return c is not None and c.assignee_id == ann.conn.principal.agent_id

    await wait_until(assigned, what="the chat routed once open")


@pytest.mark.parametrize("engine_clock", ["manual"])
async def test_a_closed_groups_chat_waits_while_the_others_are_routed(world: World) -> None:
    night = await world.storage.create_group(world.workspace_id, name="Night", public=True)
    await world.storage.update_workspace(
        world.workspace_id,
        settings={
            "hours": {
                "enabled": True,
                "time_zone": "UTC",
                "weekly": ALL_WEEK,
                "groups": [{"group_id": night.id, "time_zone": "UTC", "weekly": []}],
            }
        },
    )
    await world.engine.workspace_changed(world.workspace_id)
    ann_p = await world.agent("ann", group_ids=(night.id,))
    await world.connect(ann_p)
    waiting = await world.connect(await world.visitor())
    other = await world.connect(await world.visitor())
    closed_ack = await world.engine.request(
        waiting.conn, SendMessage(client_msg_id="a", text="hi", group_id=night.id)
    )
    open_ack = await world.engine.request(other.conn, SendMessage(client_msg_id="b", text="hi"))

    async def assigned(cid: str) -> bool:
        c = await world.storage.get_conversation(world.workspace_id, cid)
        return c is not None and c.assignee_id == ann_p.agent_id

    await wait_until(lambda: assigned(open_ack.conversation_id), what="the open chat routed")
    await world.tick()
    assert not await assigned(closed_ack.conversation_id)
