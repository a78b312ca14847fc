"""A storage outage while a workspace's router starts: the router waits for storage instead of
crashing (its restart intensity is for bugs), answers ``storage_unavailable`` meanwhile, and
once storage answers it routes new chats and offers the ones queued before."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio

from engine.agent import AgentPresence
from engine.backoff import Backoff
from engine.errors import PersistenceUnavailable
from engine.messages import (
    AgentStatus,
    ChatAssigned,
    MessageAck,
    SendMessage,
    SetStatus,
    SettableStatus,
)
from engine.routing_messages import AgentsView, GetAgents
from storage import StorageUnavailable
from storage.api import ConversationState
from tests.engine.conftest import World, wait_until

# What a router reads when it starts (settings, agents, groups, open chats).
ROUTER_READS = ("get_workspace", "list_agents", "list_groups", "list_open_conversations")


class Outage:
    """The router's reads of the real storage fail while ``down``, as during a database
    outage; everything else reaches the database."""

    def __init__(
        self, world: World, monkeypatch: pytest.MonkeyPatch, reads: tuple[str, ...] = ROUTER_READS
    ) -> None:
        self.down = False
        self.failed = 0
        for name in reads:
            monkeypatch.setattr(world.storage, name, self._guard(getattr(world.storage, name)))

    def _guard(self, read: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failed += 1
                raise StorageUnavailable("connection refused")
            return await read(*args, **kwargs)

        return guarded


async def _assigned(world: World, cid: str, agent_id: str) -> None:
    async def reached() -> bool:
        conv = await world.storage.get_conversation(world.workspace_id, cid)
        return (
            conv is not None
            and conv.state == ConversationState.ACTIVE
            and conv.assignee_id == agent_id
        )

    await wait_until(reached, what=f"{cid} assigned to {agent_id}")


async def test_a_router_started_during_an_outage_waits_for_storage_then_routes(
    world: World,
    fast_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    ctx = world.engine._ctx
    routers = ctx.routers
    ws = world.workspace_id
    outage = Outage(world, monkeypatch)
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.AWAY))
    early = await world.connect(await world.visitor())
    ack = await world.engine.request(early.conn, SendMessage(client_msg_id="m1", text="hello"))
    assert isinstance(ack, MessageAck)
    waiting = ack.conversation_id  # queued: nobody accepts chats

    # The database goes away; the router is started afresh meanwhile (as after a passivation,
    # a crash or a node taking the workspace over).
    outage.down = True
    routers.passivate(ws)
    await wait_until(lambda: not routers.is_active(ws), what="the router passivated")
    ctx.forget_workspace(ws)
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.ACCEPTING))
    with pytest.raises(PersistenceUnavailable):
        await world.engine.agents_available(ws)
    failed = outage.failed
    await wait_until(lambda: outage.failed >= failed + 3, what="the router retried its load")
    with pytest.raises(PersistenceUnavailable):
        await world.engine.agents_available(ws)
    assert routers.is_active(ws)
    assert (routers.restarts, routers.failures) == (0, 0)

    outage.down = False
    await _assigned(world, waiting, ann_p.agent_id)  # queued before: offered once it loads
    late = await world.connect(await world.visitor())
    ack = await world.engine.request(late.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(ack, MessageAck)
    await _assigned(world, ack.conversation_id, ann_p.agent_id)
    assigned = [p.conversation.conversation_id for p in ann.drain() if isinstance(p, ChatAssigned)]
    assert assigned == [waiting, ack.conversation_id]
    assert await world.engine.agents_available(ws)
    assert (routers.restarts, routers.failures) == (0, 0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    said = [r.getMessage() for r in caplog.records if r.name == "engine.routing"]
    assert said[0] == "router load failed: StorageUnavailable: connection refused"
    assert len(said) <= 3  # a line per 5 s at most, however often it retried


async def _view(world: World) -> AgentsView:
    router = await world.engine._ctx.routers.get(world.workspace_id)
    with trio.fail_after(30):
        view: AgentsView = await router.ask(lambda r: GetAgents(reply=r))
    return view


async def test_a_reload_during_an_outage_keeps_routing_and_applies_once_storage_answers(
    world: World, fast_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    routers = world.engine._ctx.routers
    # The agents cannot be read (the settings can: other actors' outages are not this test's).
    outage = Outage(world, monkeypatch, ("list_agents",))
    ann_p = await world.agent("ann", max_chats=5)
    ann = await world.connect(ann_p)
    assert [a.max_chats for a in (await _view(world)).agents] == [5]

    outage.down = True
    await world.storage.update_agent(world.workspace_id, ann_p.agent_id, max_chats=2)
    await world.engine.workspace_changed(world.workspace_id)  # answered: retried later
    assert [a.max_chats for a in (await _view(world)).agents] == [5]  # as it was
    visitor = await world.connect(await world.visitor())
    ack = await world.engine.request(visitor.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(ack, MessageAck)
    await _assigned(world, ack.conversation_id, ann_p.agent_id)  # routing goes on

    outage.down = False

    async def reloaded() -> bool:
        return [a.max_chats for a in (await _view(world)).agents] == [2]

    await wait_until(reloaded, what="the reload retried once storage answered")
    assert any(isinstance(p, ChatAssigned) for p in ann.drain())
    assert (routers.restarts, routers.failures) == (0, 0)


async def test_a_storage_failure_in_the_middle_of_a_change_reloads_the_router(
    world: World, fast_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    routers = world.engine._ctx.routers
    outage = Outage(world, monkeypatch, (*ROUTER_READS, "get_agent"))
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    assert (await _view(world)).available
    newcomer = await world.agent("bob")  # not known to the router yet: it reads the row

    outage.down = True
    router = await routers.get(world.workspace_id)
    await router.tell(
        AgentPresence(
            agent_id=newcomer.agent_id,
            chosen=AgentStatus.ACCEPTING,
            connected=True,
            reconnecting=False,
        )
    )
    with pytest.raises(PersistenceUnavailable):  # it dropped its state: nothing half applied
        await _view(world)

    outage.down = False

    async def loaded() -> bool:
        try:
            return (await _view(world)).available  # ann reported again
        except PersistenceUnavailable:
            return False

    await wait_until(loaded, what="the router loaded again at its next try")
    visitor = await world.connect(await world.visitor())
    ack = await world.engine.request(visitor.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(ack, MessageAck)
    await _assigned(world, ack.conversation_id, ann_p.agent_id)
    assert any(isinstance(p, ChatAssigned) for p in ann.drain())
    assert (routers.restarts, routers.failures) == (0, 0)


async def test_a_bug_while_the_router_starts_still_crashes_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    routers = world.engine._ctx.routers
    ws = world.workspace_id
    real = world.storage.list_groups
    bugs = [RuntimeError("a bug, not an outage")]

    async def list_groups(workspace_id: str) -> Any:
        if bugs:
            raise bugs.pop()
        return await real(workspace_id)

    monkeypatch.setattr(world.storage, "list_groups", list_groups)
    world.engine._ctx.forget_workspace(ws)
    assert not (await _view(world)).available  # answered by the restarted router
    assert (routers.restarts, routers.failures) == (1, 0)


def test_retries_wait_longer_each_time_up_to_five_seconds() -> None:
    now = [0.0]
    retry = Backoff(lambda: now[0])
    waits = []
    for _ in range(6):
        retry.failed()
        waits.append(retry.due_at - now[0])
        assert not retry.due()
        now[0] = retry.due_at
        assert retry.due()
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    retry.succeeded()
    retry.failed()
    assert retry.due_at - now[0] == 0.5
