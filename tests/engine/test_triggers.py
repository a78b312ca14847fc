"""Triggers for queued chats (issue 16): an auto-reply after a wait, a tag for matching
visitors, a move to another group; each firing is a note agents see; rate-limited per visitor."""

from __future__ import annotations

from typing import Any

import pytest

from engine.messages import EndChat, MessageAck, SendMessage, UpdateProfile
from tests.engine.conftest import World, wait_until
from tests.engine.test_departments_sticky import _no_open_chat

WAIT = {
    "id": "t-wait",
    "name": "Still waiting",
    "action": "auto_reply",
    "text": "Thanks for waiting, we are with you shortly.",
    "queue_wait_s": 30,
}
VIP = {
    "id": "t-vip",
    "name": "VIP",
    "action": "add_tag",
    "tag": "vip",
    "attribute": "plan",
    "attribute_value": "gold",
}


async def _events(world: World, cid: str) -> list[Any]:
    return await world.storage.history(world.workspace_id, cid, after_seq=0, limit=200)


async def _chat(world: World, v: Any, mid: str) -> str:
    ack = await world.engine.request(v.conn, SendMessage(client_msg_id=mid, text="hello?"))
    assert isinstance(ack, MessageAck)
    return ack.conversation_id


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("workspace_settings", [{"triggers": [WAIT, VIP]}])
async def test_an_auto_reply_fires_after_the_wait_once_and_agents_see_the_firing(
    world: World,
) -> None:
    assert world.time is not None
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v, "m1")
    await world.tick()
    world.time.advance(29)
    await world.tick()
    assert not [e for e in await _events(world, cid) if e.author_type == "system"]
    world.time.advance(2)
    await world.tick()

    async def replied() -> bool:
        return any(
            e.kind == "message" and e.author_type == "system" for e in await _events(world, cid)
        )

    await wait_until(replied, what="the auto-reply")
    events = await _events(world, cid)
    reply = next(e for e in events if e.kind == "message" and e.author_type == "system")
    assert reply.body == WAIT["text"] and reply.visibility == "all"
    notes = [e for e in events if e.kind == "note"]
    assert [(n.visibility, n.data["trigger"]) for n in notes] == [("agents", "Still waiting")]
    # The visitor has no plan attribute: no VIP tag. And a trigger fires once per chat.
    world.time.advance(60)
    await world.tick()
    await world.tick()
    events = await _events(world, cid)
    assert len([e for e in events if e.author_type == "system" and e.kind == "message"]) == 1
    assert not [e for e in events if e.kind == "tagged"]
    # The visitor saw the auto-reply in the chat.
    assert any(e.body == WAIT["text"] for e in v.events())
    # Rate limit: the same visitor's next chat within the cooldown gets no second auto-reply.
    await world.engine.request(v.conn, EndChat(conversation_id=cid))
    await _no_open_chat(world, v)
    again = await _chat(world, v, "m2")
    assert again != cid
    await world.tick()
    world.time.advance(31)
    await world.tick()
    await world.tick()
    assert not [e for e in await _events(world, again) if e.author_type == "system"]


@pytest.mark.parametrize("engine_clock", ["manual"])
async def test_a_tag_and_a_group_move_for_matching_visitors(world: World) -> None:
    assert world.time is not None
    sales = await world.storage.create_group(world.workspace_id, name="Sales")
    move = {
        "id": "t-move",
        "name": "Gold to sales",
        "action": "assign_group",
        "to_group_id": sales.id,
        "attribute": "plan",
        "attribute_value": "gold",
    }
    await world.storage.update_workspace(world.workspace_id, settings={"triggers": [VIP, move]})
    await world.engine.workspace_changed(world.workspace_id)
    gold = await world.connect(await world.visitor())
    await world.engine.request(gold.conn, UpdateProfile(attributes={"plan": "gold"}))
    plain = await world.connect(await world.visitor())
    gold_cid = await _chat(world, gold, "g")
    plain_cid = await _chat(world, plain, "p")
    await world.tick()

    async def moved() -> bool:
        conv = await world.storage.get_conversation(world.workspace_id, gold_cid)
        return conv is not None and conv.group_id == sales.id and "vip" in conv.tags

    await wait_until(moved, what="the gold visitor's chat tagged and moved to Sales")
    await world.tick()
    plain_conv = await world.storage.get_conversation(world.workspace_id, plain_cid)
    assert plain_conv is not None and plain_conv.group_id is None and plain_conv.tags == ()
    notes = [e.data["trigger"] for e in await _events(world, gold_cid) if e.kind == "note"]
    assert sorted(notes) == ["Gold to sales", "VIP"]
