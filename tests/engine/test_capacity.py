"""Capacity: routing honours ``max_chats`` exactly and the workspace's ``max_concurrent_chats``;
a pick or transfer past either is refused with its own code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from engine.errors import AgentAtCapacity, WorkspaceAtCapacity
from engine.messages import Accept, GetRoutingLog, MessageAck, SendMessage, Transfer
from tests.engine.conftest import World, wait_until

MANUAL = {"routing": {"mode": "manual"}}


async def _chat(world: World, visitor, mid: str = "m1") -> str:
    ack = await world.engine.request(visitor.conn, SendMessage(client_msg_id=mid, text="hi"))
    assert isinstance(ack, MessageAck)
    return ack.conversation_id


async def _state(world: World, cid: str) -> tuple[str, str | None]:
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None
    return str(conv.state), conv.assignee_id


async def _cap(world: World, cap: int) -> None:
    await world.storage.update_workspace(world.workspace_id, max_concurrent_chats=cap)
    await world.engine.workspace_changed(world.workspace_id)


@pytest.mark.parametrize("workspace_settings", [MANUAL])
async def test_pick_past_max_chats_is_refused_with_agent_at_capacity(world: World) -> None:
    ann = await world.connect(await world.agent("ann", max_chats=1))
    first = await _chat(world, await world.connect(await world.visitor()))
    second = await _chat(world, await world.connect(await world.visitor()))
    await world.engine.request(ann.conn, Accept(conversation_id=first))
    with pytest.raises(AgentAtCapacity) as refused:
        await world.engine.request(ann.conn, Accept(conversation_id=second))
    assert refused.value.code == "agent_at_capacity"
    assert await _state(world, second) == ("queued", None)
    # Accepting a chat one already has is not a second chat.
    await world.engine.request(ann.conn, Accept(conversation_id=first))


@pytest.mark.parametrize("workspace_settings", [MANUAL])
async def test_transfer_to_a_full_agent_is_refused_and_the_chat_stays(world: World) -> None:
    ann_p = await world.agent("ann")
    bob_p = await world.agent("bob", max_chats=1)
    ann = await world.connect(ann_p)
    bob = await world.connect(bob_p)
    mine = await _chat(world, await world.connect(await world.visitor()))
    bobs = await _chat(world, await world.connect(await world.visitor()))
    await world.engine.request(ann.conn, Accept(conversation_id=mine))
    await world.engine.request(bob.conn, Accept(conversation_id=bobs))
    with pytest.raises(AgentAtCapacity) as refused:
        await world.engine.request(
            ann.conn, Transfer(conversation_id=mine, to_agent_id=bob_p.agent_id)
        )
    assert refused.value.code == "agent_at_capacity"
    assert await _state(world, mine) == ("active", ann_p.agent_id)


@pytest.mark.parametrize("engine_clock", ["manual"])
async def test_max_chats_zero_takes_no_chat(world: World) -> None:
    """A stored 0 (older data; the API refuses it now) is 0, not the default of 5."""
    ann_p = await world.agent("ann", max_chats=0)
    ann = await world.connect(ann_p)
    cid = await _chat(world, await world.connect(await world.visitor()))
    await world.tick()
    await world.tick()
    assert await _state(world, cid) == ("queued", None)
    log = await world.engine.request(ann.conn, GetRoutingLog(conversation_id=cid))
    assert [d.reason for d in log.decisions] == ["no_agent_available"]


@pytest.mark.parametrize("engine_clock", ["manual"])
async def test_auto_assign_stops_at_max_concurrent_chats_and_resumes_below(world: World) -> None:
    await _cap(world, 1)
    ann_p = await world.agent("ann")
    bob_p = await world.agent("bob")
    ann = await world.connect(ann_p)
    await world.connect(bob_p)
    first = await _chat(world, await world.connect(await world.visitor()))

    async def assigned(cid: str) -> bool:
        return (await _state(world, cid))[0] == "active"

    await wait_until(lambda: assigned(first), what="the first chat assigned")
    second = await _chat(world, await world.connect(await world.visitor()))
    await world.tick()
    await world.tick()
    assert await _state(world, second) == ("queued", None)
    log = await world.engine.request(ann.conn, GetRoutingLog(conversation_id=second))
    assert "workspace_at_capacity" in [d.reason for d in log.decisions]
    await _cap(world, 2)
    await world.tick()
    await wait_until(lambda: assigned(second), what="the second chat assigned under cap 2")


@pytest.mark.parametrize("workspace_settings", [MANUAL])
async def test_pick_past_max_concurrent_chats_is_refused_with_workspace_at_capacity(
    world: World,
) -> None:
    await _cap(world, 1)
    ann = await world.connect(await world.agent("ann"))
    bob = await world.connect(await world.agent("bob"))
    first = await _chat(world, await world.connect(await world.visitor()))
    second = await _chat(world, await world.connect(await world.visitor()))
    await world.engine.request(ann.conn, Accept(conversation_id=first))
    with pytest.raises(WorkspaceAtCapacity) as refused:
        await world.engine.request(bob.conn, Accept(conversation_id=second))
    assert refused.value.code == "workspace_at_capacity"
    assert await _state(world, second) == ("queued", None)


@pytest.mark.parametrize("engine_clock", ["manual"])
async def test_one_dispatch_of_a_long_queue_offers_no_more_than_the_workspace_cap(
    world: World,
) -> None:
    """Four chats wait with nobody online; two agents with room for all of them arrive: the
    dispatch that follows counts its own offers against ``max_concurrent_chats`` (2)."""
    await _cap(world, 2)
    chats = [await _chat(world, await world.connect(await world.visitor())) for _ in range(4)]
    await world.connect(await world.agent("ann", max_chats=4))
    await world.connect(await world.agent("bob", max_chats=4))
    await world.tick()
    await world.tick()

    async def served() -> int:
        states = [(await _state(world, cid))[0] for cid in chats]
        return sum(state != "queued" for state in states)

    await wait_until(lambda: _at_least(served, 2), what="two chats taken")
    await world.tick()
    await world.tick()
    assert await served() == 2
    waiting = [cid for cid in chats if (await _state(world, cid))[0] == "queued"]
    assert len(waiting) == 2


async def _at_least(count: Callable[[], Awaitable[int]], n: int) -> bool:
    return await count() >= n
