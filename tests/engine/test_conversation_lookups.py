"""Commands whose rules need facts from outside the chat (a group, an agent): the actor looks
them up and decides again; an unknown one is refused and nothing is stored."""

from __future__ import annotations

import pytest

from engine.errors import NotFound
from engine.messages import Accept, ConversationResult, Invite, MessageAck, SendMessage, Transfer
from tests.engine.conftest import World


async def _accepted_chat(world: World) -> tuple[str, object, object]:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    ack = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(ack, MessageAck)
    taken = await world.engine.request(ann.conn, Accept(conversation_id=ack.conversation_id))
    assert isinstance(taken, ConversationResult)
    assert taken.conversation.assignee_id == ann_p.agent_id
    return ack.conversation_id, ann, v


@pytest.mark.parametrize("workspace_settings", [{"routing": {"mode": "manual"}}])
async def test_transfer_to_a_group_queues_the_chat_there_and_an_unknown_group_is_not_found(
    world: World,
) -> None:
    cid, ann, _ = await _accepted_chat(world)
    before = await world.storage.get_conversation(world.workspace_id, cid)
    assert before is not None
    with pytest.raises(NotFound, match="no such group"):
        await world.engine.request(ann.conn, Transfer(conversation_id=cid, to_group_id="nope"))
    unchanged = await world.storage.get_conversation(world.workspace_id, cid)
    assert unchanged is not None and unchanged.last_seq == before.last_seq

    group = await world.storage.create_group(world.workspace_id, name="Billing")
    moved = await world.engine.request(
        ann.conn, Transfer(conversation_id=cid, to_group_id=group.id, reason="invoice")
    )
    assert isinstance(moved, ConversationResult)
    summary = moved.conversation
    assert (summary.state, summary.group_id, summary.assignee_id) == ("queued", group.id, None)
    stored = await world.storage.get_conversation(world.workspace_id, cid)
    assert stored is not None and stored.last_seq == before.last_seq + 1
    history = await world.storage.history(world.workspace_id, cid, after_seq=before.last_seq)
    assert [(e.kind, e.data.get("group_name")) for e in history] == [("transferred", "Billing")]


@pytest.mark.parametrize("workspace_settings", [{"routing": {"mode": "manual"}}])
async def test_inviting_an_unknown_agent_is_not_found_and_a_known_one_joins(world: World) -> None:
    cid, ann, _ = await _accepted_chat(world)
    with pytest.raises(NotFound, match="no such agent"):
        await world.engine.request(ann.conn, Invite(conversation_id=cid, agent_id="ghost"))
    bob = await world.agent("bob")
    joined = await world.engine.request(
        ann.conn, Invite(conversation_id=cid, agent_id=bob.agent_id)
    )
    assert isinstance(joined, ConversationResult)
    assert joined.conversation.participant_ids[1:] == (bob.agent_id,)
