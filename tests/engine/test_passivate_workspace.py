"""``ChatEngine.passivate_workspace``: a cluster node that lost a workspace to another node
drops that workspace's conversation actors, even in the middle of a batch (their state is the
past); the next use reads storage afresh."""

from __future__ import annotations

from typing import Any

from engine.messages import EventPush, MessageAck, SendMessage
from storage import AppendRequest, AuthorType, EventKind
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
