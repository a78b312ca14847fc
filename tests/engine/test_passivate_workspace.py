"""``ChatEngine.passivate_workspace``: a cluster node that lost a workspace to another node
drops that workspace's conversation actors, even in the middle of a batch (their state is the
past); the next use reads storage afresh. ``ChatEngine.workspaces_at_rest``: what a node checks
before handing a workspace back."""

from __future__ import annotations

from typing import Any

import pytest

from engine.commands import Close
from engine.messages import EventPush, MessageAck, SendMessage
from storage import AppendRequest, AuthorType, EventKind, Role
from tests.engine.conftest import World, wait_until


async def test_a_lost_workspace_drops_its_chats_and_a_resume_sees_what_others_wrote(
    world: World,
) -> None:
    me = await world.visitor()
    client = await world.connect(me)
    first = await world.engine.request(client.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(first, MessageAck)
    # At once, while the chat actor may still be fanning out its first commit.
    assert world.engine.passivate_workspace(world.workspace_id) == 1

    # Meanwhile another node, the owner then, appended to the chat.
    await world.storage.append_many(
        [
            AppendRequest(
                workspace_id=world.workspace_id,
                conversation_id=first.conversation_id,
                kind=EventKind.MESSAGE,
                author_type=AuthorType.VISITOR,
                author_id=me.visitor_id,
                body="written elsewhere",
                client_msg_id="elsewhere",
            )
        ]
    )
    # The workspace is back: a client resuming from what it saw gets what was written
    # elsewhere (an actor kept from before would replay from its memory, which lacks it).
    resumed = await world.connect(me, resume={first.conversation_id: first.seq})
    bodies: list[Any] = []

    def replayed() -> bool:
        bodies.extend(p.event.body for p in resumed.drain() if isinstance(p, EventPush))
        return "written elsewhere" in bodies

    await wait_until(replayed, what="the replay of the event written elsewhere")


async def _passivated(world: World, *registries: Any) -> None:
    """Passivate the workspace's actors in ``registries`` (standing for their idle timeout)
    until none is left: one may be started again by what is still on its way to it (a
    visitor's departure, handled after the disconnect returned)."""

    def stopped() -> bool:
        live = [(r, k) for r in registries for k in r.keys() if k[0] == world.workspace_id]  # noqa: SIM118
        for registry, key in live:
            registry.passivate(key)
        return not live

    await wait_until(stopped, what="the workspace's actors stopped")


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize(
    "engine_config", [{"disconnect_grace_s": 5.0, "visitor_leave_grace_s": 5.0}]
)
async def test_a_workspace_is_at_rest_only_once_nothing_is_live_or_pending(world: World) -> None:
    """What a cluster node checks before handing a workspace back (web/placement.py)."""
    assert world.time is not None
    engine, ws, ctx = world.engine, world.workspace_id, world.engine._ctx
    assert await engine.workspaces_at_rest([ws]) == [ws]  # never used: nothing runs

    admin = await world.agent("ada", role=Role.ADMIN)
    ada = await world.connect(admin)
    assert await engine.workspaces_at_rest([ws]) == []  # a socket
    await world.engine.disconnect(ada.conn)
    assert await engine.workspaces_at_rest([ws]) == []  # the agent's grace period
    world.time.advance(6.0)
    await world.tick()  # the grace ends; the offline agent's actor stops on the next tick
    await world.tick()
    await wait_until(lambda: not ctx.agents.keys(), what="the agent actor stopped")
    assert await engine.workspaces_at_rest([ws]) == [ws]

    visitor = await world.connect(await world.visitor())
    ack = await engine.request(visitor.conn, SendMessage(client_msg_id="m1", text="anyone?"))
    assert isinstance(ack, MessageAck)
    await engine.disconnect(visitor.conn)
    await _passivated(world, ctx.conversations, ctx.visitors)
    world.time.advance(6.0)
    await world.tick()  # the visitor's leave grace is over
    assert await engine.workspaces_at_rest([ws]) == []  # the chat still waits in the queue

    await engine.request_as(admin, Close(conversation_id=ack.conversation_id))
    await _passivated(world, ctx.conversations, ctx.visitors)
    assert await engine.workspaces_at_rest([ws]) == [ws]
    assert ctx.routers.is_active(ws)
    engine.passivate_workspace(ws)  # handed back: the router stops too
    await wait_until(lambda: not ctx.routers.keys(), what="the router stopped")
