"""The message path checks permission and visibility once (issue 12).

The conversation actor holds the chat's row and decides who may do what (``may_see`` and the
rules in ``decide``); the request layer reads storage only to keep guessed or foreign ids from
starting an actor, and hands that row to the actor it starts. The fan-out filters each event
once for all of a visitor's tabs.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from engine.errors import NotFound
from engine.messages import Accept, EventPush, SendMessage, StartChat
from storage.api import Storage
from tests.engine.conftest import World, wait_until


class CountingStorage:
    """The real storage, with a count of the methods the engine calls on it."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if callable(attr):
            self.calls[name] += 1
        return attr


@contextmanager
def counted(world: World) -> Iterator[CountingStorage]:
    ctx = world.engine._ctx
    spy = CountingStorage(ctx.storage)
    ctx.storage = spy  # type: ignore[assignment]
    try:
        yield spy
    finally:
        ctx.storage = spy._inner


async def _live_chat(world: World) -> tuple[Any, Any, str]:
    agent = await world.connect(await world.agent("ann"))
    visitor = await world.connect(await world.visitor())
    visitor_id = visitor.conn.principal.visitor_id  # type: ignore[union-attr]
    ack = await world.engine.request(
        agent.conn, StartChat(visitor_id=visitor_id, client_msg_id="s", text="Hello")
    )
    return agent, visitor, ack.conversation_id  # type: ignore[attr-defined]


async def _passivate(world: World, cid: str) -> None:
    registry = world.engine._ctx.conversations
    assert registry is not None
    key = (world.workspace_id, cid)
    registry.passivate(key)
    await wait_until(
        lambda: key not in registry.keys(),  # noqa: SIM118 (a Registry)
        what="the chat's actor stopped",
    )


async def test_a_message_in_a_live_chat_reads_nothing_from_storage(world: World) -> None:
    agent, visitor, cid = await _live_chat(world)
    for who, client in (("visitor", visitor), ("agent", agent)):
        for n in range(2):
            with counted(world) as spy:
                await world.engine.request(
                    client.conn,
                    SendMessage(conversation_id=cid, client_msg_id=f"{who}{n}", text="hi"),
                )
            # Authorized by the actor from what it holds: the append is the only call.
            assert dict(spy.calls) == {"append_many": 1}, (who, n)


async def test_a_message_to_a_passivated_chat_reads_its_row_once(world: World) -> None:
    agent, visitor, cid = await _live_chat(world)
    for who, client in (("visitor", visitor), ("agent", agent)):
        await _passivate(world, cid)
        with counted(world) as spy:
            ack = await world.engine.request(
                client.conn, SendMessage(conversation_id=cid, client_msg_id=who, text="back")
            )
        assert ack.conversation_id == cid  # type: ignore[attr-defined]
        # The request's existence check and the actor's start share one read of the row.
        assert spy.calls["get_conversation"] == 1, (who, dict(spy.calls))
    seqs = [e.seq for e in agent.events()]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


async def test_a_foreign_chat_still_answers_not_found_and_starts_no_actor(world: World) -> None:
    _, _, cid = await _live_chat(world)
    await _passivate(world, cid)
    registry = world.engine._ctx.conversations
    assert registry is not None
    mallory = await world.connect(await world.visitor())
    before = registry.count
    for target in (cid, "c_guessed"):
        with pytest.raises(NotFound, match="conversation not found"):
            await world.engine.request(
                mallory.conn, SendMessage(conversation_id=target, client_msg_id="m", text="hi")
            )
        assert registry.count == before


async def test_every_tab_of_the_visitor_gets_one_filtered_event(world: World) -> None:
    ann = await world.agent("ann")
    agent = await world.connect(ann)
    principal = await world.visitor()
    tabs = [await world.connect(principal), await world.connect(principal)]
    ack = await world.engine.request(tabs[0].conn, SendMessage(client_msg_id="q", text="help"))
    cid = ack.conversation_id  # type: ignore[attr-defined]
    for tab in tabs:
        tab.drain()
    await world.engine.request(agent.conn, Accept(conversation_id=cid))

    def assigned(pushes: list[Any]) -> list[EventPush]:
        return [p for p in pushes if isinstance(p, EventPush) and p.event.kind == "assigned"]

    got = [assigned(tab.drain()) for tab in tabs]
    assert [len(g) for g in got] == [1, 1]
    first, second = got[0][0], got[1][0]
    assert "reason" not in first.event.data  # the routing reason is the workspace's
    assert first.event.data["agent_id"] == ann.agent_id
    # Filtered once for both tabs: the same push, encoded once by the web layer.
    assert first is second
