"""Agents are actors: status per role at login, away, auto-away, the grace period of a dropped
agent (the visitor is told), then re-routing."""

from __future__ import annotations

import pytest

from engine.agent import AgentTick, GetAgentView
from engine.messages import (
    AgentReconnecting,
    AgentStatusPush,
    AgentWelcome,
    ListQueue,
    MessageAck,
    QueueList,
    SendMessage,
    SetStatus,
    SettableStatus,
)
from storage.api import Role
from tests.engine.conftest import Client, World, wait_until


async def _chat(world: World, visitor: Client, mid: str = "m1") -> str:
    ack = await world.engine.request(visitor.conn, SendMessage(client_msg_id=mid, text="hi"))
    assert isinstance(ack, MessageAck)
    return ack.conversation_id


async def _assigned(world: World, cid: str, agent_id: str | None) -> None:
    async def check() -> bool:
        conv = await world.storage.get_conversation(world.workspace_id, cid)
        return conv is not None and conv.assignee_id == agent_id

    await wait_until(check, what=f"{cid} assigned to {agent_id}")


async def _status(world: World, agent_id: str) -> str:
    agents = world.engine._ctx.agents
    assert agents is not None
    ref = await agents.get((world.workspace_id, agent_id))
    view = await ref.ask(lambda r: GetAgentView(reply=r))
    return str(view.status)


def _welcome_status(client: Client) -> str:
    welcome = client.conn.welcome
    assert isinstance(welcome, AgentWelcome)
    return welcome.agent.status


@pytest.mark.parametrize(
    ("role", "status"),
    [
        (Role.AGENT, "accepting"),
        (Role.SUPERVISOR, "accepting"),
        (Role.ADMIN, "not_accepting"),
        (Role.OWNER, "not_accepting"),
    ],
)
async def test_owners_and_admins_start_not_accepting_agents_start_accepting(
    world: World, role: Role, status: str
) -> None:
    principal = await world.agent("pat", role=role)
    client = await world.connect(principal)
    assert _welcome_status(client) == status
    # Choosing otherwise sticks for the next tab of the same agent.
    other = "accepting" if status == "not_accepting" else "not_accepting"
    await world.engine.request(client.conn, SetStatus(status=SettableStatus(other)))
    second = await world.connect(principal)
    assert _welcome_status(second) == other


async def test_an_owner_gets_no_chat_until_choosing_to_accept(world: World) -> None:
    owner_p = await world.agent("olga", role=Role.OWNER)
    owner = await world.connect(owner_p)
    cid = await _chat(world, await world.connect(await world.visitor()))
    await world.tick()
    queue = await world.engine.request(owner.conn, ListQueue())
    assert isinstance(queue, QueueList)
    assert [e.conversation_id for e in queue.entries] == [cid]
    await world.engine.request(owner.conn, SetStatus(status=SettableStatus.ACCEPTING))
    await _assigned(world, cid, owner_p.agent_id)


async def test_an_away_agent_gets_no_new_chats_and_others_see_the_status(world: World) -> None:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    bob = await world.connect(await world.agent("bob", role=Role.SUPERVISOR))
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.AWAY))
    assert await _status(world, ann_p.agent_id) == "away"

    def ann_away_pushed() -> bool:
        return any(
            isinstance(p, AgentStatusPush)
            and p.agent.agent_id == ann_p.agent_id
            and p.agent.status == "away"
            for p in bob.drain()
        )

    await wait_until(ann_away_pushed, what="bob sees ann away")
    # Bob (a supervisor, accepting) gets the chat; Ann, away, does not.
    cid = await _chat(world, await world.connect(await world.visitor()))
    await _assigned(world, cid, bob.conn.principal.agent_id)  # type: ignore[union-attr]


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"agent_auto_away_after_s": 60.0}])
async def test_an_idle_agent_goes_away_and_is_back_on_the_next_action(world: World) -> None:
    assert world.time is not None
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    world.time.advance(59.9)
    await world.tick()
    assert await _status(world, ann_p.agent_id) == "accepting"
    world.time.advance(0.2)
    await world.tick()
    assert await _status(world, ann_p.agent_id) == "away"
    # Away by idleness: chats go to others (here: stay queued), and any action brings Ann back.
    cid = await _chat(world, await world.connect(await world.visitor()))
    await world.tick()
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.assignee_id is None
    await world.engine.request(ann.conn, ListQueue())
    await _assigned(world, cid, ann_p.agent_id)
    assert await _status(world, ann_p.agent_id) == "accepting"


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"agent_auto_away_after_s": 60.0}])
async def test_an_agent_who_chose_not_accepting_is_not_made_away(world: World) -> None:
    assert world.time is not None
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    world.time.advance(600)
    await world.tick()
    assert await _status(world, ann_p.agent_id) == "not_accepting"


def _reconnecting(visitor: Client, seen: list[object]) -> list[AgentReconnecting]:
    seen.extend(visitor.drain())
    return [p for p in seen if isinstance(p, AgentReconnecting)]


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"disconnect_grace_s": 50.0}])
async def test_the_visitor_sees_the_agent_reconnecting_and_back_within_the_grace(
    world: World,
) -> None:
    assert world.time is not None
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    seen: list[object] = []
    await world.engine.disconnect(ann.conn)
    await wait_until(lambda: bool(_reconnecting(v, seen)), what="the visitor is told")
    told = _reconnecting(v, seen)[0]
    assert (told.conversation_id, told.agent_name, told.reconnecting) == (cid, "Ann", True)
    assert told.grace_s == 50.0
    assert await _status(world, ann_p.agent_id) == "accepting"  # still, during the grace
    world.time.advance(49.0)
    await world.tick()
    await world.connect(ann_p)  # back (a new tab) before the grace ends
    await wait_until(lambda: len(_reconnecting(v, seen)) == 2, what="the visitor is told back")
    assert _reconnecting(v, seen)[1].reconnecting is False
    world.time.advance(10.0)
    await world.tick()
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.assignee_id == ann_p.agent_id


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"disconnect_grace_s": 20.0}])
async def test_past_the_grace_the_agent_is_offline_and_the_chat_goes_to_another(
    world: World,
) -> None:
    assert world.time is not None
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    bob_p = await world.agent("bob")
    await world.connect(bob_p)
    seen: list[object] = []
    await world.engine.disconnect(ann.conn)
    await wait_until(lambda: bool(_reconnecting(v, seen)), what="the visitor is told")
    world.time.advance(19.9)
    await world.tick()
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.assignee_id == ann_p.agent_id
    world.time.advance(0.2)
    await world.tick()
    assert await _status(world, ann_p.agent_id) == "offline"
    await _assigned(world, cid, bob_p.agent_id)


async def test_a_crashed_agent_actor_restarts_with_its_status_and_sockets(world: World) -> None:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    await world.connect(ann_p)  # a second tab
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.AWAY))
    assert world.engine.inject_fault("agent", world.workspace_id, ann_p.agent_id)
    agents = world.engine._ctx.agents
    assert agents is not None
    ref = await agents.get((world.workspace_id, ann_p.agent_id))
    view = await ref.ask(lambda r: GetAgentView(reply=r))
    assert (str(view.status), view.connections) == ("away", 2)
    assert world.engine.metrics.restarts("agent") == 1


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"disconnect_grace_s": 5.0}])
async def test_an_offline_agent_actor_goes_away_and_comes_back_with_the_chosen_status(
    world: World,
) -> None:
    assert world.time is not None
    agents = world.engine._ctx.agents
    assert agents is not None
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    await world.engine.disconnect(ann.conn)
    key = (world.workspace_id, ann_p.agent_id)
    ref = await agents.get(key)
    view = await ref.ask(lambda r: GetAgentView(reply=r))  # queued behind the disconnect
    assert view.reconnecting
    world.time.advance(5.1)
    await world.tick()  # the grace ends: offline
    assert await _status(world, ann_p.agent_id) == "offline"
    await ref.tell(AgentTick())  # nothing left to time: it passivates itself
    await wait_until(lambda: not agents.is_active(key), what="the agent actor passivated")
    again = await world.connect(ann_p)
    assert _welcome_status(again) == "not_accepting"


async def test_a_crashed_router_learns_the_agents_status_again_and_routes_by_it(
    world: World,
) -> None:
    from engine.routing_messages import GetAgents

    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.AWAY))
    assert world.engine.inject_fault("router", world.workspace_id, world.workspace_id)
    router = await world.engine._router(world.workspace_id)

    async def ann_away_again() -> bool:
        view = await router.ask(lambda r: GetAgents(reply=r))
        return any(a.agent_id == ann_p.agent_id and a.status == "away" for a in view.agents)

    await wait_until(ann_away_again, what="the restarted router knows ann is away")
    cid = await _chat(world, await world.connect(await world.visitor()))
    await world.tick()
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.assignee_id is None
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.ACCEPTING))
    await _assigned(world, cid, ann_p.agent_id)
    assert world.engine.metrics.restarts("router") == 1
