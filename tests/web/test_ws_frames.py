"""Every malformed-frame class gets its documented error and the connection stays usable;
deadlines and size limits close with their documented codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.web.client import Peer, open_peer, visitor
from tests.web.server import TestServer, run_test_server


async def error_for(peer: Peer, raw: str | bytes) -> dict[str, object]:
    await peer.send_raw(raw)
    frame = await peer.recv()
    assert frame["type"] == "error", frame
    return frame


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ("{not json", "invalid_json", None),
        (b"\x00\x01binary", "binary_frame", None),
        (b"\xff\xfe not utf-8", "binary_frame", None),
        ("[1, 2, 3]", "not_an_object", None),
        ('"hello"', "not_an_object", None),
        ('{"type": "send_message", "client_msg_id": "x", "text": "hi"}', "missing_field", "id"),
        ('{"type": "send_message", "id": true, "text": "hi"}', "invalid_field", "id"),
        ('{"type": "send_message", "id": {"a": 1}}', "invalid_field", "id"),
        ('{"type": "teleport", "id": "1"}', "unknown_type", "type"),
        ('{"id": "1"}', "unknown_type", "type"),
        (
            '{"type": "send_message", "id": "1", "text": "no client_msg_id"}',
            "missing_field",
            "client_msg_id",
        ),
        (
            '{"type": "send_message", "id": "1", "client_msg_id": 5, "text": "x"}',
            "invalid_field",
            "client_msg_id",
        ),
        (
            '{"type": "send_message", "id": "1", "client_msg_id": "c", "text": ["x"]}',
            "invalid_field",
            "text",
        ),
        (
            '{"type": "rate", "id": "1", "conversation_id": "c", "rating": 9}',
            "invalid_field",
            "rating",
        ),
        ('{"type": "accept", "id": "1", "conversation_id": "c"}', "forbidden", "type"),
        ('{"type": "hello", "id": "1"}', "already_authenticated", None),
    ],
)
async def test_malformed_frame_gets_its_error_and_the_socket_stays_open(
    srv: TestServer, raw: str | bytes, code: str, field: str | None
) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        frame = await error_for(peer, raw)
        assert frame["code"] == code
        if field is not None:
            assert frame["field"] == field
        # Still usable: a valid request works after the bad one.
        ok = await peer.request("send_message", client_msg_id="after", text="still here")
        assert ok["type"] == "result"


async def test_oversized_frame_gets_frame_too_large_and_stays_open(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        big = json.dumps(
            {"type": "send_message", "id": "1", "client_msg_id": "c", "text": "x" * 70_000}
        )
        frame = await error_for(peer, big)
        assert frame["code"] == "frame_too_large"
        ok = await peer.request("send_message", client_msg_id="after", text="small")
        assert ok["type"] == "result"


async def test_frame_above_the_hard_limit_closes_with_1009(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        await peer.send_raw("x" * (1024 * 1024 + 10))
        assert await peer.closed() == 1009


async def test_request_before_hello_is_refused_until_hello(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        early = await peer.request("send_message", client_msg_id="c", text="hi")
        assert early["code"] == "hello_required"
        bad_hello = await peer.request("hello", resume={"c": "seven"})
        assert bad_hello["code"] == "invalid_field"
        bad_hello = await peer.request("hello", token=5)
        assert (bad_hello["code"], bad_hello["field"]) == ("invalid_field", "token")
        await visitor(srv, peer)


async def test_pings_are_answered_with_pongs_echoing_the_id(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await peer.send_raw(json.dumps({"type": "ping", "id": "p1"}))
        assert await peer.recv() == {"type": "pong", "id": "p1"}


async def test_a_heartbeating_socket_outlives_the_http_read_timeout(tmp_path: Path) -> None:
    # Hypercorn's read_timeout (1 s here) also applies to WebSocket reads; it must not drop
    # (1006) a socket whose client answers the server's pings less often than that.
    async with (
        run_test_server(
            tmp_path, read_timeout_s=1.0, ws_ping_interval_s=2.0, ws_dead_peer_timeout_s=5.0
        ) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        # Answer pings until two came and well over the read timeout passed (bounded
        # generously); a drop meanwhile raises ConnectionClosed and fails the test.
        pings = 0
        connected_at = trio.current_time()
        with trio.fail_after(30):
            while pings < 2 or trio.current_time() - connected_at < 4.5:
                frame = json.loads(await peer.ws.get_message())
                if frame["type"] == "ping":
                    pings += 1
                    await peer.send_raw('{"type": "pong"}')
        await peer.send_raw('{"type": "ping", "id": 1}')
        assert await peer.recv() == {"type": "pong", "id": 1}


async def test_no_hello_within_the_deadline_closes_with_4000(tmp_path: Path) -> None:
    async with (
        run_test_server(tmp_path, ws_auth_timeout_s=1.0) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        assert await peer.closed(timeout=5) == 4000


async def test_server_pings_and_a_silent_peer_is_closed_with_4001(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, ws_ping_interval_s=1.0, ws_dead_peer_timeout_s=3.0) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with open_peer(url, origin=srv.acme.site_origin) as live:
            await visitor(srv, live)
            # A client that answers pings stays connected past the timeout: wait (generously
            # bounded) for at least 3 pings *and* for more than the 3 s dead-peer timeout to
            # pass; a close meanwhile raises ConnectionClosed and fails the test.
            pings = 0
            connected_at = trio.current_time()
            with trio.fail_after(30):
                while pings < 3 or trio.current_time() - connected_at < 4.0:
                    frame = json.loads(await live.ws.get_message())
                    if frame["type"] == "ping":
                        pings += 1
                        await live.send_raw('{"type": "pong"}')
            assert pings >= 3
            await live.send_raw('{"type": "ping", "id": 7}')
            assert await live.recv() == {"type": "pong", "id": 7}
            async with open_peer(url, origin=srv.acme.site_origin) as silent:
                await visitor(srv, silent)
                # ...one that never answers is closed with 4001 (generously bounded wait).
                code = None
                with trio.fail_after(30):
                    try:
                        while True:
                            frame = json.loads(await silent.ws.get_message())
                            assert frame["type"] in (
                                "ping",
                                "event",
                                "conversation_update",
                                "availability",
                            )
                    except ConnectionClosed as closed:
                        code = closed.reason.code if closed.reason is not None else None
                assert code == 4001


async def test_a_client_that_pings_hears_pongs_and_no_server_ping_until_it_stops(
    tmp_path: Path,
) -> None:
    # The server pings after an interval with nothing written: its pongs to the client's own
    # pings are heartbeat enough (and the client's pings keep it from being a dead peer).
    async with (
        run_test_server(tmp_path, ws_ping_interval_s=2.0, ws_dead_peer_timeout_s=10.0) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        kinds: list[str] = []
        sent = 0
        with trio.fail_after(30):
            started = trio.current_time()
            while trio.current_time() - started < 5.0:  # two and a half intervals
                sent += 1
                await peer.send_raw(json.dumps({"type": "ping", "id": sent}))
                with trio.move_on_after(0.3):  # the client's pace: a ping every 0.3 s or so
                    while True:
                        kinds.append(json.loads(await peer.ws.get_message())["type"])
            assert "ping" not in kinds
            assert kinds.count("pong") >= sent - 1
            # Silent now: a server ping comes once nothing was written for an interval.
            while (frame := json.loads(await peer.ws.get_message()))["type"] == "pong":
                pass
            assert frame["type"] == "ping"
