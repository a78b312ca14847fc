"""Silent supervision is a permission (the supervisor role) and audited."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import Forbidden
from engine.messages import (
    Close,
    GetHistory,
    History,
    Join,
    MessageAck,
    SendMessage,
    Watch,
    Watching,
)
from storage.api import Role
from tests.engine.conftest import World, wait_until


async def _supervised(world: World) -> list[Any]:
    page = await world.storage.list_audit(world.workspace_id, limit=100)
    return [e for e in page.items if e.action == "conversation.supervised"]


async def _live_chat(world: World) -> tuple[str, Any]:
    ann_p = await world.agent("ann")
    await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    ack = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(ack, MessageAck)
    cid = ack.conversation_id

    async def assigned() -> bool:
        conv = await world.storage.get_conversation(world.workspace_id, cid)
        return conv is not None and conv.assignee_id == ann_p.agent_id

    await wait_until(assigned, what="assigned to ann")
    return cid, ann_p


async def test_an_agent_cannot_silently_read_a_live_chat_of_another_agent(world: World) -> None:
    cid, ann_p = await _live_chat(world)
    bob = await world.connect(await world.agent("bob"))
    for cmd in (
        Watch(conversation_id=cid, after_seq=0),
        GetHistory(conversation_id=cid),
    ):
        with pytest.raises(Forbidden):
            await world.engine.request(bob.conn, cmd)
    assert not bob.events(), "bob received the chat's events"
    # Ann, in the chat, reads it as ever and is not audited.
    ann = await world.connect(ann_p)
    assert isinstance(
        await world.engine.request(ann.conn, GetHistory(conversation_id=cid)), History
    )
    assert await _supervised(world) == []
    # A closed chat is the workspace's history: every agent may read it.
    await world.engine.request(ann.conn, Close(conversation_id=cid))
    assert isinstance(
        await world.engine.request(bob.conn, GetHistory(conversation_id=cid)), History
    )


async def test_a_supervisor_reading_or_joining_silently_is_audited(world: World) -> None:
    cid, _ = await _live_chat(world)
    sup_p = await world.agent("sue", role=Role.SUPERVISOR)
    sup = await world.connect(sup_p)
    assert isinstance(
        await world.engine.request(sup.conn, Watch(conversation_id=cid, after_seq=0)), Watching
    )
    assert isinstance(
        await world.engine.request(sup.conn, GetHistory(conversation_id=cid)), History
    )
    entries = await _supervised(world)
    # Opening a chat reads it twice (watch, history): one entry.
    assert [(e.actor, e.target, e.details["how"]) for e in entries] == [
        (f"agent:{sup_p.agent_id}", f"conversation:{cid}", "watch")
    ]
    await world.engine.request(sup.conn, Join(conversation_id=cid, silent=True))
    entries = await _supervised(world)
    assert sorted(e.details["how"] for e in entries) == ["silent_join", "watch"]
