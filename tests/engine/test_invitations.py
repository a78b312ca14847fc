"""Proactive invitations (issue 16): the visitor sees who invites them, an unanswered invitation
expires, and a chat whose inviting agent leaves is re-routed like any other."""

from __future__ import annotations

import pytest

from engine.messages import Leave, MessageAck, SendMessage, StartChat
from tests.engine.conftest import World, wait_until


async def _assignee(world: World, cid: str) -> str | None:
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None
    return conv.assignee_id


@pytest.mark.parametrize("replied", [True, False])
async def test_a_chat_whose_inviting_agent_leaves_is_rerouted(world: World, replied: bool) -> None:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    visitor_p = await world.visitor()
    v = await world.connect(visitor_p)
    ack = await world.engine.request(
        ann.conn, StartChat(visitor_id=visitor_p.visitor_id, client_msg_id="s", text="Need help?")
    )
    assert isinstance(ack, MessageAck)
    cid = ack.conversation_id
    if replied:
        await world.engine.request(
            v.conn, SendMessage(conversation_id=cid, client_msg_id="v", text="yes")
        )
    bob_p = await world.agent("bob")
    await world.connect(bob_p)
    await world.engine.request(ann.conn, Leave(conversation_id=cid))

    async def with_bob() -> bool:
        return await _assignee(world, cid) == bob_p.agent_id

    await wait_until(with_bob, what="the chat re-routed to Bob")


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"disconnect_grace_s": 50.0}])
async def test_an_invitation_whose_agent_goes_offline_is_rerouted(world: World) -> None:
    assert world.time is not None
    cid, ann, _ = await _invite(world)
    bob_p = await world.agent("bob")
    await world.connect(bob_p)
    await world.engine.disconnect(ann.conn)
    await world.tick()  # the grace period starts once the router has seen the disconnect
    world.time.advance(51)
    await world.tick()

    async def with_bob() -> bool:
        return await _assignee(world, cid) == bob_p.agent_id

    await wait_until(with_bob, what="the invitation re-routed to Bob")


async def _invite(world: World) -> tuple[str, object, object]:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    visitor_p = await world.visitor()
    v = await world.connect(visitor_p)
    ack = await world.engine.request(
        ann.conn, StartChat(visitor_id=visitor_p.visitor_id, client_msg_id="s", text="Need help?")
    )

    async def router_knows() -> bool:  # the invitation's clock starts when the router hears
        from engine.routing_messages import GetAgents

        router = await world.engine._router(world.workspace_id)
        view = await router.ask(lambda r: GetAgents(reply=r))
        return any(a.agent_id == ann_p.agent_id and a.active_chats == 1 for a in view.agents)

    await wait_until(router_knows, what="the router saw the invitation")
    return ack.conversation_id, ann, v


async def _state(world: World, cid: str) -> str:
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None
    return str(conv.state)


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [{"routing": {"invitation_expires_after_s": 60}}])
async def test_an_unanswered_invitation_expires_and_the_visitor_sees_who_invited(
    world: World,
) -> None:
    assert world.time is not None
    cid, _, v = await _invite(world)
    pushes = v.drain()
    assigned = [e for e in v.events(pushes) if e.kind == "assigned"]
    assert assigned and assigned[0].data == {
        "agent_id": assigned[0].data["agent_id"],
        "agent_name": "Ann",
        "invitation": True,
    }
    messages = [e for e in v.events(pushes) if e.kind == "message"]
    assert [(m.author_name, m.body) for m in messages] == [("Ann", "Need help?")]
    world.time.advance(59)
    await world.tick()
    assert await _state(world, cid) == "active"
    world.time.advance(2)
    await world.tick()

    async def closed() -> bool:
        return await _state(world, cid) == "closed"

    await wait_until(closed, what="the invitation closed as missed")
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.close_reason == "missed"


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [{"routing": {"invitation_expires_after_s": 60}}])
async def test_an_answered_invitation_does_not_expire(world: World) -> None:
    assert world.time is not None
    cid, _, v = await _invite(world)
    await world.engine.request(
        v.conn, SendMessage(conversation_id=cid, client_msg_id="v", text="yes")
    )
    world.time.advance(61)
    await world.tick()
    await world.tick()
    assert await _state(world, cid) == "active"
