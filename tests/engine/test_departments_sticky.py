"""Departments (public groups a visitor picks for a new chat) and sticky agents for a returning
visitor's new chat (``routing.sticky_new_chats``)."""

from __future__ import annotations

import pytest
import trio

from engine.errors import InvalidMessage
from engine.messages import Close, MessageAck, SendMessage
from tests.engine.conftest import Client, World, wait_until


async def _chat(world: World, visitor: Client, mid: str, group_id: str | None = None) -> str:
    ack = await world.engine.request(
        visitor.conn, SendMessage(client_msg_id=mid, text="hi", group_id=group_id)
    )
    assert isinstance(ack, MessageAck)
    return ack.conversation_id


async def _assignee(world: World, cid: str) -> str | None:
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None
    return conv.assignee_id


async def _no_open_chat(world: World, visitor: Client) -> None:
    """Wait until the visitor's actor has heard that their chat closed."""
    from engine.visitor import OpenConversation

    registry = world.engine._ctx.visitors
    assert registry is not None
    ref = await registry.get((world.workspace_id, visitor.conn.principal.visitor_id))

    async def closed() -> bool:
        with trio.fail_after(10):
            return await ref.ask(lambda r: OpenConversation(create=False, reply=r)) is None

    await wait_until(closed, what="the visitor's chat closed")


async def _returning_visitor_chat(world: World) -> tuple[str, str, str]:
    """Ann took the visitor's first chat (closed) and has another chat; Bob is free. Returns
    (ann id, bob id, the visitor's new chat)."""
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    visitor = await world.connect(await world.visitor())
    first = await _chat(world, visitor, "m1")
    await wait_until(lambda: _is(world, first, ann_p.agent_id), what="first chat to Ann")
    await world.engine.request(ann.conn, Close(conversation_id=first))
    other = await _chat(world, await world.connect(await world.visitor()), "o1")
    await wait_until(lambda: _is(world, other, ann_p.agent_id), what="other chat to Ann")
    bob_p = await world.agent("bob")
    await world.connect(bob_p)
    await _no_open_chat(world, visitor)
    again = await _chat(world, visitor, "m2")
    assert again != first
    return ann_p.agent_id, bob_p.agent_id, again


async def _is(world: World, cid: str, agent_id: str) -> bool:
    return await _assignee(world, cid) == agent_id


@pytest.mark.parametrize("workspace_settings", [{"routing": {"sticky_new_chats": True}}])
async def test_returning_visitors_new_chat_goes_back_to_their_agent(world: World) -> None:
    ann_id, _, again = await _returning_visitor_chat(world)
    await wait_until(lambda: _is(world, again, ann_id), what="the new chat back to Ann")
    events = await world.storage.history(world.workspace_id, again)
    assigned = [e for e in events if e.kind == "assigned"]
    assert assigned[-1].data["reason"] == "returning_visitor"


async def test_without_the_setting_a_returning_visitors_chat_goes_to_the_least_busy(
    world: World,
) -> None:
    _, bob_id, again = await _returning_visitor_chat(world)
    await wait_until(lambda: _is(world, again, bob_id), what="the new chat to free Bob")


async def test_a_visitor_chooses_a_public_department(world: World) -> None:
    sales = await world.storage.create_group(world.workspace_id, name="Sales", public=True)
    await world.connect(await world.agent("ann"))
    bob_p = await world.agent("bob", group_ids=(sales.id,))
    await world.connect(bob_p)
    visitor = await world.connect(await world.visitor())
    cid = await _chat(world, visitor, "m1", group_id=sales.id)
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.group_id == sales.id
    await wait_until(lambda: _is(world, cid, bob_p.agent_id), what="the Sales chat to Bob")


async def test_a_group_that_is_not_public_cannot_be_chosen(world: World) -> None:
    internal = await world.storage.create_group(world.workspace_id, name="Internal")
    visitor = await world.connect(await world.visitor())
    for group_id in (internal.id, "no-such-group"):
        with pytest.raises(InvalidMessage) as refused:
            await _chat(world, visitor, "m1", group_id=group_id)
        assert (refused.value.code, refused.value.field) == ("invalid_field", "group_id")
