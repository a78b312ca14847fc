"""Protocol versions (docs/protocol.md, "Versions"): a client asks for one in hello/auth and
gets the newest both speak; in 2 the result of one's own message carries its event, so the
sender gets one frame per message, while the sender's other tabs still get the event."""

from __future__ import annotations

from typing import Any

from tests.web.client import Http, Peer, open_peer
from tests.web.server import TestServer
from tests.web.test_ws_chat import agent_peer_login, start_agent


async def _hello(peer: Peer, **fields: Any) -> dict[str, Any]:
    reply = await peer.request("hello", page={"url": "http://site.test/"}, **fields)
    assert reply["type"] == "result", reply
    return dict(reply["result"])


async def _frames_until_pong(peer: Peer, tag: str) -> list[dict[str, Any]]:
    """Every frame the server sent before it answered our ping ``tag`` (in order)."""
    await peer.send_raw(f'{{"type": "ping", "id": "{tag}"}}')
    seen = []
    while (frame := await peer.recv()) != {"type": "pong", "id": tag}:
        seen.append(frame)
    return seen


async def test_in_protocol_2_the_sender_gets_one_frame_and_its_other_tabs_the_event(
    srv: TestServer,
) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    http = await agent_peer_login(srv, Http(srv.base_url))
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(url, origin=srv.acme.site_origin) as tab,
        open_peer(url, origin=srv.acme.site_origin) as other_tab,
    ):
        await start_agent(agent)
        first = await _hello(tab, protocol=2)
        assert first["protocol"] == 2
        second = await _hello(other_tab, token=first["visitor_token"])  # an old client
        assert second["protocol"] == 1

        await tab.send_raw(
            '{"type": "send_message", "id": "s1", "client_msg_id": "m1", "text": "Hi there"}'
        )
        frames = await _frames_until_pong(tab, "after-send")
        mine = [f for f in frames if f.get("id") == "s1" or f.get("type") == "event"]
        assert len(mine) == 1, frames  # the result, and no echo
        result = mine[0]["result"]
        assert result["type"] == "message_ack" and result["duplicate"] is False
        event = result["event"]
        assert (event["conversation_id"], event["seq"]) == (
            result["conversation_id"],
            result["seq"],
        )
        assert (event["body"], event["client_msg_id"], event["author_type"]) == (
            "Hi there",
            "m1",
            "visitor",
        )
        # The other tab (protocol 1) gets the same event as a push, without the request id.
        pushed = await other_tab.push("event")
        assert pushed["event"] == event and "id" not in pushed
        # The agent gets it too.
        await agent.push("chat_assigned")
        watched = await agent.request(
            "watch", conversation_id=result["conversation_id"], after_seq=0
        )
        assert watched["type"] == "result"
        delivered = await agent.push("event", timeout=5)
        while delivered["event"]["kind"] != "message":
            delivered = await agent.push("event", timeout=5)
        assert delivered["event"]["body"] == "Hi there"

        # A retry of the same client_msg_id is a duplicate: its result has no event to carry.
        retry = await tab.request("send_message", client_msg_id="m1", text="Hi there")
        assert retry["result"]["duplicate"] is True and "event" not in retry["result"]


async def test_protocol_1_clients_keep_the_echo_and_a_version_below_1_is_refused(
    srv: TestServer,
) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as old:
        refused = await old.request("hello", protocol=0)
        assert (refused["type"], refused["code"], refused["field"]) == (
            "error",
            "invalid_field",
            "protocol",
        )
        hello = await _hello(old)
        assert hello["protocol"] == 1
        sent = await old.request("send_message", client_msg_id="m1", text="Hello")
        assert "event" not in sent["result"]
        echo = await old.push("event", id=sent["id"])
        assert echo["event"]["seq"] == sent["result"]["seq"]
    async with open_peer(url, origin=srv.acme.site_origin) as future:
        assert (await _hello(future, protocol=9))["protocol"] == 3  # the newest both speak


async def test_in_protocol_3_a_burst_of_pushes_comes_as_one_array_in_order(
    srv: TestServer,
) -> None:
    """The replay of a resume is queued before the socket's pump starts: one burst. In 3 it is
    one message (an array of the same frames); in 2, one message per frame."""
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as first:
        hello = await _hello(first, protocol=3)
        seqs = []
        for n in range(4):
            sent = await first.request("send_message", client_msg_id=f"m{n}", text=f"{n}")
            seqs.append(sent["result"]["seq"])
        conv_id = sent["result"]["conversation_id"]
    replayed: dict[int, list[dict[str, Any]]] = {}  # the events, up to the last message
    batches: dict[int, list[int]] = {}
    for version in (2, 3):
        async with open_peer(url, origin=srv.acme.site_origin) as again:
            await _hello(again, protocol=version, token=hello["visitor_token"], resume={conv_id: 0})
            events = replayed[version] = []
            while not events or events[-1]["event"]["seq"] != seqs[-1]:
                frame = await again.recv()
                if frame.get("type") == "event":
                    events.append(frame)
            batches[version] = again.batches
    assert replayed[3] == replayed[2]  # the same frames, in the same order
    bodies = [f["event"]["body"] for f in replayed[3] if f["event"]["kind"] == "message"]
    assert bodies == ["0", "1", "2", "3"]
    assert [f["event"]["seq"] for f in replayed[3]][-4:] == seqs
    assert batches[2] == []  # never an array below 3
    assert sum(batches[3]) >= len(replayed[3]) and len(batches[3]) == 1, batches
