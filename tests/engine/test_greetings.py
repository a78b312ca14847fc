"""Page-view triggers (issue 16): a greeting after time on a page or on the site, shown before
any chat exists; answering it opens a chat whose first event is the greeting, with the firing
noted for agents and shown on the live visitor list; tags and groups for the chat a matching
visitor starts; the per-visitor cooldown holds across an engine restart; a long time condition
fires on time although the visitor's actor was passivated meanwhile; greetings wait for an
available agent (by default) and never show outside business hours. The engine's manual clock
drives every time condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from engine.api import ChatEngine, ConnectionMeta, EngineConfig
from engine.messages import (
    EventPush,
    GreetingPush,
    ListVisitors,
    MessageAck,
    ReportPageView,
    SendMessage,
    VisitorList,
)
from engine.visitor import OpenConversation
from storage import open_storage
from tests.engine.conftest import ManualTime, World

PRICING = {
    "id": "g-pricing",
    "name": "Pricing help",
    "event": "page_view",
    "action": "greeting",
    "text": "Questions about our plans? Ask us here.",
    "url_contains": "/pricing",
    "time_on_page_s": 30,
}
SITE = {
    "id": "g-site",
    "name": "A while on the site",
    "event": "page_view",
    "action": "invitation",
    "text": "Still looking? We are here to help.",
    "sender_name": "Acme Bot",
    "time_on_site_s": 60,
}
ENTERPRISE_TAG = {
    "id": "t-ent",
    "name": "Enterprise lead",
    "event": "page_view",
    "action": "add_tag",
    "tag": "enterprise",
    "url_contains": "/enterprise",
}


def _meta(url: str) -> ConnectionMeta:
    return ConnectionMeta(page_url=url, page_title="Page")


def _greetings(pushes: list[Any]) -> list[GreetingPush]:
    return [p for p in pushes if isinstance(p, GreetingPush)]


async def _events(world: World, cid: str) -> list[Any]:
    return await world.storage.history(world.workspace_id, cid, after_seq=0, limit=200)


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [{"triggers": [PRICING]}])
async def test_a_greeting_after_time_on_the_page_opens_the_chat_the_visitor_answers_with(
    world: World,
) -> None:
    assert world.time is not None
    agent = await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor(), meta=_meta("https://shop.test/pricing"))
    await world.tick()
    world.time.advance(29)
    await world.tick()
    assert _greetings(v.drain()) == []  # 29 s on the page: not yet
    world.time.advance(2)
    await world.tick()
    [greeting] = _greetings(v.drain())
    assert greeting.greeting_id == "g-pricing" and greeting.style == "greeting"
    assert greeting.sender_name == "Acme" and greeting.text == PRICING["text"]
    # No chat exists yet; agents see the greeting on the live visitor list.
    visitor_id = v.conn.principal.visitor_id
    assert await world.storage.list_visitor_conversations(world.workspace_id, visitor_id) == []
    listed = await world.engine.request(agent.conn, ListVisitors(subscribe=False))
    assert isinstance(listed, VisitorList)
    [seen] = listed.visitors
    assert seen.greeting is not None and seen.greeting.trigger_name == "Pricing help"
    assert seen.conversation_id is None
    # Once per page view: more time on the same page shows nothing more.
    world.time.advance(300)
    await world.tick()
    assert _greetings(v.drain()) == []

    ack = await world.engine.request(
        v.conn,
        SendMessage(client_msg_id="m1", text="Which plan has SSO?", greeting_id="g-pricing"),
    )
    assert isinstance(ack, MessageAck)
    events = await _events(world, ack.conversation_id)
    assert [(e.kind, e.author_type, e.visibility) for e in events] == [
        ("message", "system", "all"),
        ("note", "system", "agents"),
        ("message", "visitor", "all"),
    ]
    assert events[0].body == PRICING["text"] and events[0].data["sender_name"] == "Acme"
    assert events[1].body == "Trigger \u201cPricing help\u201d fired: greeting"
    # The visitor's widget gets the greeting as the chat's first message, from "Acme".
    shown = [p.event for p in v.drain() if isinstance(p, EventPush)]
    assert next((e.body, e.author_name) for e in shown if e.kind == "message") == (
        PRICING["text"],
        "Acme",
    )
    assert all(e.kind != "note" for e in shown)


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [{"triggers": [SITE]}])
async def test_time_on_site_adds_up_across_pages_and_no_greeting_once_a_chat_is_open(
    world: World,
) -> None:
    assert world.time is not None
    await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor(), meta=_meta("https://shop.test/a"))
    await world.tick()
    world.time.advance(40)
    await world.engine.request(v.conn, ReportPageView(url="https://shop.test/b"))
    world.time.advance(19)
    await world.tick()
    assert _greetings(v.drain()) == []
    world.time.advance(2)  # 61 s on the site, 21 s on this page
    await world.tick()
    [invitation] = _greetings(v.drain())
    assert (invitation.style, invitation.sender_name) == ("invitation", "Acme Bot")

    other = await world.connect(await world.visitor(), meta=_meta("https://shop.test/a"))
    await world.engine.request(other.conn, SendMessage(client_msg_id="x", text="hello"))
    world.time.advance(120)
    await world.tick()
    assert _greetings(other.drain()) == []  # in a chat: no invitation


@pytest.mark.parametrize("engine_clock", ["manual"])
async def test_a_matching_visitors_chat_starts_tagged_in_the_triggers_group(world: World) -> None:
    sales = await world.storage.create_group(world.workspace_id, name="Sales")
    to_sales = {
        "id": "t-sales",
        "name": "Enterprise to sales",
        "event": "page_view",
        "action": "assign_group",
        "to_group_id": sales.id,
        "url_contains": "/enterprise",
    }
    await world.storage.update_workspace(
        world.workspace_id, settings={"triggers": [ENTERPRISE_TAG, to_sales]}
    )
    await world.engine.workspace_changed(world.workspace_id)
    lead = await world.connect(await world.visitor(), meta=_meta("https://shop.test/enterprise"))
    plain = await world.connect(await world.visitor(), meta=_meta("https://shop.test/blog"))
    lead_ack = await world.engine.request(lead.conn, SendMessage(client_msg_id="l", text="hi"))
    plain_ack = await world.engine.request(plain.conn, SendMessage(client_msg_id="p", text="hi"))
    assert isinstance(lead_ack, MessageAck) and isinstance(plain_ack, MessageAck)
    conv = await world.storage.get_conversation(world.workspace_id, lead_ack.conversation_id)
    assert conv is not None and conv.group_id == sales.id and conv.tags == ("enterprise",)
    events = await _events(world, lead_ack.conversation_id)
    assert [e.kind for e in events] == ["tagged", "note", "note", "message"]  # no transfer
    assert sorted(e.data["trigger"] for e in events if e.kind == "note") == [
        "Enterprise lead",
        "Enterprise to sales",
    ]
    other = await world.storage.get_conversation(world.workspace_id, plain_ack.conversation_id)
    assert other is not None and other.group_id is None and other.tags == ()


async def _greeted_after(
    engine: ChatEngine, ws: str, visitor_id: str, time: ManualTime
) -> list[GreetingPush]:
    """Connect the visitor to ``engine`` on the pricing page, let 31 s pass, return greetings."""
    from engine.messages import Push
    from engine.principals import VisitorPrincipal

    send, inbox = trio.open_memory_channel[Push](100)
    conn = await engine.connect(
        VisitorPrincipal(workspace_id=ws, visitor_id=visitor_id),
        send,
        connection_id=f"v-{id(engine)}",
        meta=_meta("https://shop.test/pricing"),
    )
    key = (ws, visitor_id)
    for advance in (0.0, 31.0):
        time.advance(advance)
        engine._wake_visitors()
        ref = await engine._ctx.visitors.get(key)
        await ref.ask(lambda r: OpenConversation(create=False, reply=r))
    pushes = []
    while True:
        try:
            pushes.append(inbox.receive_nowait())
        except trio.WouldBlock:
            break
    await engine.disconnect(conn)
    return _greetings(pushes)


async def test_the_per_visitor_cooldown_survives_an_engine_restart(tmp_path: Path) -> None:
    anytime = {**PRICING, "only_when_available": False}  # no agent connects in this test
    async with open_storage(f"sqlite:///{tmp_path / 'e.db'}") as storage:
        ws = await storage.create_workspace(name="Acme", settings={"triggers": [anytime]})
        visitor = await storage.create_visitor(ws.id, token_hash=None)
        time = ManualTime()
        for run in range(2):  # the second engine is the server after a restart
            engine = ChatEngine(storage, EngineConfig(tick_interval_s=3600), clock=time)
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)
                greeted = await _greeted_after(engine, ws.id, visitor.id, time)
                assert len(greeted) == (1 if run == 0 else 0), run
                await engine.shutdown(deadline_s=5)
                nursery.cancel_scope.cancel()
        fired = await storage.visitor_trigger_firings(ws.id, visitor.id)
        assert list(fired) == ["g-pricing"]


async def test_a_queued_chat_triggers_cooldown_survives_an_engine_restart(tmp_path: Path) -> None:
    from engine.conversation import Snapshot
    from engine.messages import EndChat, Push
    from engine.principals import VisitorPrincipal
    from engine.routing_messages import GetAgents, Tick

    reply = {"id": "t-q", "name": "Queued", "action": "auto_reply", "text": "Hang on!"}
    async with open_storage(f"sqlite:///{tmp_path / 'e.db'}") as storage:
        ws = await storage.create_workspace(name="Acme", settings={"triggers": [reply]})
        visitor = await storage.create_visitor(ws.id, token_hash=None)
        time = ManualTime()
        for run in range(2):  # the second engine is the server after a restart
            engine = ChatEngine(storage, EngineConfig(tick_interval_s=3600), clock=time)
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)
                send, _inbox = trio.open_memory_channel[Push](100)
                principal = VisitorPrincipal(workspace_id=ws.id, visitor_id=visitor.id)
                conn = await engine.connect(principal, send, connection_id=f"q{run}")
                ack = await engine.request(conn, SendMessage(client_msg_id=f"m{run}", text="hi"))
                assert isinstance(ack, MessageAck)
                router = await engine._router(ws.id)
                for _ in range(3):
                    time.advance(1)
                    await router.tell(Tick())
                    await router.ask(lambda r: GetAgents(reply=r))
                chat = await engine._ctx.conversations.get((ws.id, ack.conversation_id))
                await chat.ask(lambda r: Snapshot(reply=r))  # what the ticks sent it is applied
                history = await storage.history(ws.id, ack.conversation_id, after_seq=0, limit=50)
                replies = [e for e in history if e.author_type == "system" and e.kind == "message"]
                assert len(replies) == (1 if run == 0 else 0), run
                await engine.request(conn, EndChat(conversation_id=ack.conversation_id))
                await engine.shutdown(deadline_s=5)
                nursery.cancel_scope.cancel()


TEN_MINUTES = {**PRICING, "id": "g-long", "name": "Ten minutes on pricing", "time_on_page_s": 600}


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [{"triggers": [TEN_MINUTES]}])
async def test_a_ten_minute_greeting_fires_on_time_after_the_idle_visitors_actor_was_passivated(
    world: World,
) -> None:
    assert world.time is not None
    await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor(), meta=_meta("https://shop.test/pricing"))
    key = (world.workspace_id, v.conn.principal.visitor_id)
    visitors = world.engine._ctx.visitors
    assert visitors is not None
    await world.tick()
    # No activity past the idle timeout: the registry's sweep passivates the visitor's actor.
    world.time.advance(world.engine.config.idle_timeout_s + 1)
    await world.tick()
    visitors.passivate(key)
    await trio.testing.wait_all_tasks_blocked()
    assert key not in visitors.keys()  # noqa: SIM118 (a Registry: its live activations)
    world.time.advance(599 - world.engine.config.idle_timeout_s - 1)  # 599 s on the page
    await world.tick()
    assert _greetings(v.drain()) == []
    assert not visitors.is_active(key)  # nothing woke it early
    world.time.advance(1)  # 600 s
    await world.tick()
    [greeting] = _greetings(v.drain())
    assert greeting.greeting_id == "g-long"
    agent = await world.connect(await world.agent("bob"))
    listed = await world.engine.request(agent.conn, ListVisitors(subscribe=False))
    assert isinstance(listed, VisitorList)
    [seen] = listed.visitors
    assert seen.greeting is not None and seen.greeting.trigger_id == "g-long"
    assert seen.pages_viewed == 1  # the same visit, not a new one


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [{"triggers": [PRICING]}])
async def test_a_greeting_waits_until_an_agent_is_available(world: World) -> None:
    assert world.time is not None
    v = await world.connect(await world.visitor(), meta=_meta("https://shop.test/pricing"))
    await world.tick()
    world.time.advance(31)
    await world.tick()
    world.time.advance(600)
    await world.tick()
    assert _greetings(v.drain()) == []  # nobody could answer it
    await world.connect(await world.agent("ann"))
    await world.tick()  # the router sees the agent; the waiting visitor is due at once
    await world.tick()
    [greeting] = _greetings(v.drain())
    assert greeting.greeting_id == "g-pricing"


CLOSED = {"enabled": True, "time_zone": "UTC", "weekly": []}  # no opening period at all


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize(
    "workspace_settings",
    [{"triggers": [{**PRICING, "only_when_available": False}], "hours": CLOSED}],
)
async def test_no_greeting_outside_business_hours_even_one_that_need_not_wait_for_agents(
    world: World,
) -> None:
    assert world.time is not None
    await world.connect(await world.agent("ann"))
    v = await world.connect(await world.visitor(), meta=_meta("https://shop.test/pricing"))
    await world.tick()
    world.time.advance(31)
    await world.tick()
    assert _greetings(v.drain()) == []  # closed: the widget offers the offline form
    await world.storage.update_workspace(
        world.workspace_id, settings={"triggers": [{**PRICING, "only_when_available": False}]}
    )
    await world.engine.workspace_changed(world.workspace_id)  # now always open
    await world.tick()
    await world.tick()
    [greeting] = _greetings(v.drain())
    assert greeting.greeting_id == "g-pricing"


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize(
    "workspace_settings", [{"triggers": [{**PRICING, "only_when_available": False}]}]
)
async def test_a_greeting_that_need_not_wait_for_agents_fires_with_none_online(
    world: World,
) -> None:
    assert world.time is not None
    v = await world.connect(await world.visitor(), meta=_meta("https://shop.test/pricing"))
    await world.tick()
    world.time.advance(31)
    await world.tick()
    [greeting] = _greetings(v.drain())
    assert greeting.greeting_id == "g-pricing"
