from __future__ import annotations

from engine.messages import MessageAck, SendMessage
from tests.engine.conftest import World, wait_until


async def test_visitor_message_reaches_assigned_agent(world: World) -> None:
    ann = await world.agent("ann")
    a = await world.connect(ann)
    v = await world.connect(await world.visitor())
    ack = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hello"))
    assert isinstance(ack, MessageAck) and ack.seq == 1
    kinds: list[str] = []

    def assigned() -> bool:
        kinds.extend(e.kind for e in a.events())
        return "assigned" in kinds

    await wait_until(assigned, what="the agent gets the assignment")
