"""The pump's hand-over of one's own message event to its result (protocol 2) inside a
protocol 3 burst: only this connection's own event is held for the result; another author's
event that happens to reuse the same ``client_msg_id`` is an ordinary push and stays in the
burst's array."""

from __future__ import annotations

import json
from typing import Any

import trio

from engine.replies import EventPush
from engine.summaries import EventView
from web.protocol import CloseCode
from web.sockets import CloseSocket
from web.ws_pump import Pump


def _event(seq: int, author_type: str, author_id: str, client_msg_id: str) -> EventPush:
    return EventPush(
        event=EventView(
            conversation_id="c_1",
            seq=seq,
            kind="message",
            visibility="all",
            author_type=author_type,
            author_id=author_id,
            author_name=None,
            body=f"body {seq}",
            client_msg_id=client_msg_id,
        )
    )


async def test_a_burst_holds_only_the_agents_own_event_for_its_result() -> None:
    send, outbox = trio.open_memory_channel[Any](10)
    sent: list[Any] = []

    async def write(text: str) -> None:
        sent.append(json.loads(text))

    pump = Pump(
        outbox,
        send=write,
        is_me=lambda author_type, author_id: (author_type, author_id) == ("agent", "a_1"),
        on_update=lambda update: None,
        on_wake=lambda: None,
        batch=True,
    )
    pump.remember("m-1", "s1")
    held = pump.hold("m-1")  # the agent's send_message "s1" is in flight
    # Queued before the pump runs: one burst. The visitor's client also chose "m-1".
    send.send_nowait(_event(1, "visitor", "v_1", "m-0"))
    send.send_nowait(_event(2, "visitor", "v_1", "m-1"))
    send.send_nowait(_event(3, "agent", "a_1", "m-1"))
    ended: list[int] = []

    async def run() -> None:
        try:
            await pump.run()
        except CloseSocket as exc:
            ended.append(exc.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        carried = await pump.take(held)  # the result of "s1" carries the agent's event
        assert carried is not None and carried["seq"] == 3
        # What came before it went out first, as one array; the visitor's "m-1" is no echo.
        assert len(sent) == 1 and [f["event"]["seq"] for f in sent[0]] == [1, 2], sent
        assert all("id" not in frame for frame in sent[0])
        pump.release(held)
        send.close()
    assert ended == [CloseCode.TRY_AGAIN_LATER]
    assert len(sent) == 1  # the agent's event was not pushed as well
