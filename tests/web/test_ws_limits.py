"""Rate limits per connection and per IP, with explicit errors, and the socket cap per IP."""

from __future__ import annotations

from pathlib import Path

import pytest
from trio_websocket import ConnectionRejected

from tests.web.client import open_peer, visitor
from tests.web.server import run_test_server


async def test_agent_messages_per_connection_are_limited_with_retry_after(
    tmp_path: Path,
) -> None:
    async with (
        run_test_server(tmp_path, rate_messages_per_10s=3) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
        open_peer(srv.agent_ws_url) as agent,
    ):
        hello = await visitor(srv, peer)
        # A visitor's messages are limited per visitor and per IP only (one window per key).
        replies = [
            await peer.request("send_message", client_msg_id=f"m{i}", text="hi") for i in range(4)
        ]
        assert [r["type"] for r in replies] == ["result"] * 4
        conv = replies[0]["result"]["conversation_id"]
        owner = srv.acme.owner
        assert (await agent.request("auth", token=owner.token))["type"] == "result"
        joined = await agent.request("accept", conversation_id=conv)
        assert joined["type"] == "result", joined
        notes = [
            await agent.request("add_note", conversation_id=conv, client_msg_id=f"n{i}", text="x")
            for i in range(4)
        ]
        assert [r["type"] for r in notes] == ["result", "result", "result", "error"]
        assert notes[3]["code"] == "rate_limited"
        assert 0 < notes[3]["retry_after_s"] <= 10
        # Other requests still work.
        assert (await agent.request("get_history", conversation_id=conv))["type"] == "result"
        assert hello["visitor_id"]


async def test_frames_per_connection_follow_the_setting(tmp_path: Path) -> None:
    async with (
        run_test_server(tmp_path, rate_frames_per_10s=4) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)  # frame 1
        for i in range(4):
            await peer.send_raw(f'{{"type": "ping", "id": {i}}}')
        replies = [await peer.recv() for _ in range(4)]
        assert [r["type"] for r in replies] == ["pong", "pong", "pong", "error"]
        assert replies[3]["code"] == "rate_limited"


async def test_the_engine_message_rate_per_visitor_follows_the_settings(tmp_path: Path) -> None:
    async with (
        run_test_server(
            tmp_path, rate_visitor_messages_per_s=0.01, rate_visitor_message_burst=2
        ) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        replies = [
            await peer.request("send_message", client_msg_id=f"m{i}", text="hi") for i in range(3)
        ]
        assert [r["type"] for r in replies] == ["result", "result", "error"]
        assert replies[2]["code"] == "rate_limited" and replies[2]["retry_after_s"] > 10


async def test_typing_signals_are_limited(tmp_path: Path) -> None:
    async with (
        run_test_server(tmp_path, rate_typing_per_10s=2) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        ack = await peer.request("send_message", client_msg_id="m", text="hi")
        conv = ack["result"]["conversation_id"]
        codes = [
            (await peer.request("typing", conversation_id=conv, is_typing=True)).get("code")
            for _ in range(3)
        ]
        assert codes == [None, None, "rate_limited"]


async def test_new_conversations_per_ip_are_limited(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, rate_new_conversations_per_hour=2) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        outcomes = []
        for i in range(3):
            async with open_peer(url, origin=srv.acme.site_origin) as peer:
                await visitor(srv, peer)
                reply = await peer.request("send_message", client_msg_id=f"m{i}", text="new")
                outcomes.append(reply.get("code"))
                if reply["type"] == "result":
                    # Follow-ups in the open conversation are not new conversations.
                    more = await peer.request("send_message", client_msg_id="x", text="more")
                    assert more["type"] == "result"
        assert outcomes == [None, None, "rate_limited"]


async def test_messages_per_ip_are_limited_across_connections(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, rate_ip_messages_per_10s=3) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with (
            open_peer(url, origin=srv.acme.site_origin) as a,
            open_peer(url, origin=srv.acme.site_origin) as b,
        ):
            await visitor(srv, a)
            await visitor(srv, b)
            codes = []
            for i, peer in enumerate([a, b, a, b]):
                reply = await peer.request("send_message", client_msg_id=f"m{i}", text="hi")
                codes.append(reply.get("code"))
            assert codes == [None, None, None, "rate_limited"]


async def test_sockets_per_ip_are_capped_at_the_upgrade(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, ws_max_connections_per_ip=2) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with (
            open_peer(url, origin=srv.acme.site_origin),
            open_peer(srv.agent_ws_url),
        ):
            with pytest.raises(ConnectionRejected) as refused:
                async with open_peer(url, origin=srv.acme.site_origin):
                    pass
            assert refused.value.status_code == 429
        # Closed sockets free their slots.
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer)
