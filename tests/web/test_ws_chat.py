"""End-to-end chats over real sockets: the protocol as docs/protocol.md describes it."""

from __future__ import annotations

from typing import Any

import trio

from tests.web.client import Http, Peer, open_peer, visitor
from tests.web.server import TestServer


async def agent_peer_login(srv: TestServer, http: Http, index: int = 0) -> Http:
    account = srv.acme.agents[index]
    resp = await http.login(account.username, account.password)
    assert resp.status == 200, resp.body
    return http


async def start_agent(peer: Peer) -> dict[str, Any]:
    auth = await peer.request("auth", token=None)
    assert auth["type"] == "result", auth
    assert auth["result"]["type"] == "auth"
    ok = await peer.request("set_status", status="accepting")
    assert ok["result"]["type"] == "ok"
    return dict(auth["result"])


def events_of(frames: list[dict[str, Any]], conversation_id: str) -> list[dict[str, Any]]:
    return [
        f["event"]
        for f in frames
        if f.get("type") == "event" and f["event"]["conversation_id"] == conversation_id
    ]


async def test_visitor_chats_with_agent_and_both_see_every_message(srv: TestServer) -> None:
    http = await agent_peer_login(srv, Http(srv.base_url))
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await start_agent(agent)
        hello = await visitor(srv, vis)
        assert hello["visitor_token"].startswith("lcv_")
        assert hello["welcome"]["type"] == "welcome_visitor"
        assert hello["widget"]["online"] is True

        sent = await vis.request("send_message", client_msg_id="v-1", text="Where is my order?")
        assert sent["type"] == "result" and sent["result"]["type"] == "message_ack"
        conv_id = sent["result"]["conversation_id"]
        # The push of my own message echoes my request id.
        mine = await vis.push("event", id=sent["id"])
        assert mine["event"]["body"] == "Where is my order?"

        assigned = await agent.push("chat_assigned")
        assert assigned["conversation"]["conversation_id"] == conv_id
        watching = await agent.request("watch", conversation_id=conv_id, after_seq=0)
        assert watching["result"]["type"] == "watching"
        seen = [e["body"] for e in events_of(agent.pushes, conv_id) if e["kind"] == "message"]
        while "Where is my order?" not in seen:
            pushed = await agent.push("event")
            seen.append(pushed["event"]["body"])

        reply = await agent.request(
            "send_message", conversation_id=conv_id, client_msg_id="a-1", text="On its way!"
        )
        assert reply["result"]["type"] == "message_ack"
        while True:
            pushed = await vis.push("event")
            if pushed["event"]["kind"] == "message":
                break
        assert pushed["event"]["body"] == "On its way!"
        assert pushed["event"]["author_type"] == "agent"
        assert pushed["event"]["seq"] == reply["result"]["seq"]


async def test_reconnect_with_resume_loses_and_duplicates_nothing(srv: TestServer) -> None:
    http = await agent_peer_login(srv, Http(srv.base_url))
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
        await start_agent(agent)
        async with open_peer(url, origin=srv.acme.site_origin) as vis:
            hello = await visitor(srv, vis)
            token = hello["visitor_token"]
            first = await vis.request("send_message", client_msg_id="v-1", text="one")
            conv_id = first["result"]["conversation_id"]
            await agent.push("chat_assigned")
            # Read the visitor's stream up to its own message: that is its last seen seq.
            seen_seqs = [e["seq"] for e in events_of(vis.pushes, conv_id)]
            while first["result"]["seq"] not in seen_seqs:
                seen_seqs.append((await vis.push("event"))["event"]["seq"])
            last_seen = max(seen_seqs)
        # The visitor is gone; the agent keeps writing.
        sent_while_away = []
        for i in range(5):
            ack = await agent.request(
                "send_message", conversation_id=conv_id, client_msg_id=f"a-{i}", text=f"away {i}"
            )
            sent_while_away.append(ack["result"]["seq"])
        async with open_peer(url, origin=srv.acme.site_origin) as vis2:
            hello2 = await visitor(srv, vis2, token=token, resume={conv_id: last_seen})
            assert hello2["visitor_id"] == hello["visitor_id"]
            replayed: list[int] = [e["seq"] for e in events_of(vis2.pushes, conv_id)]
            # Wait (generously bounded) until everything sent while away was replayed; what
            # follows checks nothing was duplicated or arrives extra after the replay.
            with trio.fail_after(30):
                while not set(sent_while_away) <= set(replayed):
                    replayed.append((await vis2.push("event", timeout=30))["event"]["seq"])
            # Exactly the events after last_seen, in order, no duplicates, no gaps.
            assert replayed == sorted(set(replayed))
            assert replayed[0] == last_seen + 1
            assert set(sent_while_away) <= set(replayed)
            # Live messages follow the replay.
            live = await agent.request(
                "send_message", conversation_id=conv_id, client_msg_id="a-live", text="live"
            )
            nxt = await vis2.push("event")
            while nxt["event"]["seq"] < live["result"]["seq"]:
                assert nxt["event"]["seq"] not in replayed
                nxt = await vis2.push("event")
            assert nxt["event"]["seq"] == live["result"]["seq"]


async def test_retried_send_returns_the_original_ack_and_stores_once(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as vis:
        await visitor(srv, vis)
        first = await vis.request("send_message", client_msg_id="same", text="hello")
        again = await vis.request("send_message", client_msg_id="same", text="hello")
        assert first["result"]["duplicate"] is False
        assert again["result"]["duplicate"] is True
        assert again["result"]["seq"] == first["result"]["seq"]
        conv_id = first["result"]["conversation_id"]
        history = await vis.request("get_history", conversation_id=conv_id, limit=50)
        bodies = [e["body"] for e in history["result"]["events"] if e["kind"] == "message"]
        assert bodies == ["hello"]


async def test_a_retry_after_reconnecting_is_idempotent_too(srv: TestServer) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as vis:
        hello = await visitor(srv, vis)
        first = await vis.request("send_message", client_msg_id="m-1", text="hi")
    async with open_peer(url, origin=srv.acme.site_origin) as vis2:
        await visitor(srv, vis2, token=hello["visitor_token"])
        again = await vis2.request(
            "send_message",
            conversation_id=first["result"]["conversation_id"],
            client_msg_id="m-1",
            text="hi",
        )
        assert again["result"]["duplicate"] is True
        assert again["result"]["seq"] == first["result"]["seq"]
