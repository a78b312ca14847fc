from __future__ import annotations

from engine.messages import MessageAck, SendMessage
from tests.engine.conftest import World, settle


async def test_visitor_message_reaches_assigned_agent(world: World) -> None:
    ann = await world.agent("ann")
    a = await world.connect(ann)
    v = await world.connect(await world.visitor())
    ack = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hello"))
    assert isinstance(ack, MessageAck) and ack.seq == 1
    await settle()
    pushes = a.drain()
    print(pushes)
    kinds = [e.kind for e in a.events(pushes)]
    assert "assigned" in kinds
