"""A storage failure reaches the sender as ``storage_unavailable`` with a fixed sentence: the
database's own text (which may quote other senders' messages) goes to the log only."""

from __future__ import annotations

import pytest

from engine.codec import error_result
from engine.errors import STORAGE_FAILED_MESSAGE, PersistenceUnavailable
from engine.messages import MessageAck, SendMessage
from tests.engine.conftest import World


async def test_a_refused_append_answers_a_fixed_message_and_the_chat_goes_on(
    world: World,
) -> None:
    v = await world.connect(await world.visitor())
    first = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hello"))
    assert isinstance(first, MessageAck)
    # The engine alone does not run the edge check (web does): storage refuses the surrogate.
    with pytest.raises(PersistenceUnavailable) as caught:
        await world.engine.request(v.conn, SendMessage(client_msg_id="m2", text="x \ud800 y"))
    frame = error_result(caught.value)
    assert (frame.code, frame.message) == ("storage_unavailable", STORAGE_FAILED_MESSAGE)
    again = await world.engine.request(v.conn, SendMessage(client_msg_id="m3", text="still here"))
    assert isinstance(again, MessageAck) and again.seq == first.seq + 1
