"""Abuse and overload: caps, rate limits that end a persistent offender, slow and silent peers,
login floods, and hostile frames, all over real sockets."""

from __future__ import annotations

import contextlib
import itertools
import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.web.client import Http, open_peer, visitor
from tests.web.server import TestServer, run_test_server


async def test_an_account_gets_at_most_the_configured_number_of_console_sockets(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path, ws_max_sockets_per_agent=3) as srv:
        alice, bob = srv.acme.agents
        async with AsyncExitStack() as stack:
            live = []
            for _ in range(3):
                peer = await stack.enter_async_context(open_peer(srv.agent_ws_url))
                assert (await peer.request("auth", token=alice.token))["type"] == "result"
                live.append(peer)
            async with open_peer(srv.agent_ws_url) as extra:
                refused = await extra.request("auth", token=alice.token)
                assert refused["type"] == "error" and refused["code"] == "too_many_sockets"
                assert await extra.closed() == 4002
            # Another account is not affected, and the three keep working.
            async with open_peer(srv.agent_ws_url) as other:
                assert (await other.request("auth", token=bob.token))["type"] == "result"
            for peer in live:
                await peer.send_raw('{"type": "ping", "id": 1}')
                assert await peer.push("pong", id=1)
            # Closing one frees its slot.
            await live[0].ws.aclose()
            with trio.fail_after(10):
                while len(srv.services.sockets.of_agent(srv.acme.id, alice.id)) > 2:
                    await trio.sleep(0.01)
            async with open_peer(srv.agent_ws_url) as again:
                assert (await again.request("auth", token=alice.token))["type"] == "result"


async def test_profile_updates_are_limited_per_visitor_across_connections(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, rate_profile_updates_per_min=3) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with (
            open_peer(url, origin=srv.acme.site_origin) as a,
            open_peer(url, origin=srv.acme.site_origin) as b,
        ):
            token = (await visitor(srv, a))["visitor_token"]
            await visitor(srv, b, token=token)  # the same visitor on a second tab
            replies = [
                await peer.request("update_profile", name=f"Name {i}", attributes={"plan": i})
                for i, peer in enumerate([a, b, a, b])
            ]
            assert [r["type"] for r in replies] == ["result", "result", "result", "error"]
            assert replies[3]["code"] == "rate_limited"
            assert 0 < replies[3]["retry_after_s"] <= 60
            # Chatting is not affected.
            ack = await b.request("send_message", client_msg_id="m1", text="hi")
            assert ack["type"] == "result"
        # Another visitor has its own allowance.
        async with open_peer(url, origin=srv.acme.site_origin) as c:
            await visitor(srv, c)
            assert (await c.request("update_profile", name="C"))["type"] == "result"


async def test_a_client_that_keeps_ignoring_its_rate_limit_is_closed_with_1008(
    tmp_path: Path,
) -> None:
    async with (
        run_test_server(tmp_path, rate_frames_per_10s=3, ws_rate_limited_close_after_s=1.0) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        started = trio.current_time()
        codes = []
        with trio.fail_after(15):
            try:
                for i in itertools.count():
                    await peer.send_raw(f'{{"type": "ping", "id": {i}}}')
                    codes.append((await peer.recv()).get("code"))
            except ConnectionClosed as closed:
                assert closed.reason.code == 1008
                assert closed.reason.reason == "rate limits ignored"
        assert trio.current_time() - started >= 1.0
        assert codes[:2] == [None, None] and set(codes[2:]) == {"rate_limited"}


async def test_a_client_that_waits_as_told_is_not_closed_however_often_it_is_limited(
    tmp_path: Path,
) -> None:
    # The engine's per-visitor bucket: 1 message, refilled every 0.1 s; the per-connection
    # window is out of the way. The client always sends once more at once, and after each
    # rate_limited waits retry_after_s (client behaviour, not a wait for the server).
    async with (
        run_test_server(
            tmp_path,
            rate_visitor_messages_per_s=10.0,
            rate_visitor_message_burst=1,
            rate_messages_per_10s=10_000,
            rate_ip_messages_per_10s=10_000,
            ws_rate_limited_close_after_s=0.5,
        ) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        limited = 0
        started = trio.current_time()
        with trio.fail_after(20):
            for i in itertools.count():
                if trio.current_time() - started > 1.5 and limited >= 3:
                    break
                reply = await peer.request("send_message", client_msg_id=f"m{i}", text="hi")
                if reply["type"] == "error":
                    assert reply["code"] == "rate_limited"
                    limited += 1
                    await trio.sleep(reply["retry_after_s"])
        await peer.send_raw('{"type": "ping", "id": "still"}')
        assert await peer.push("pong", id="still")


async def test_a_peer_that_misses_two_pings_is_closed_with_4001_by_default(tmp_path: Path) -> None:
    # Default dead-peer timeout: 2 x ws_ping_interval_s plus a slack of half an interval.
    async with (
        run_test_server(tmp_path, ws_ping_interval_s=1.0) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        started = trio.current_time()
        pings = 0
        with trio.fail_after(6):  # 2.5 s plus the once-a-second deadline check, generously
            try:
                while True:  # read, never answer
                    if json.loads(await peer.ws.get_message())["type"] == "ping":
                        pings += 1
            except ConnectionClosed as closed:
                assert closed.reason.code == 4001
        assert pings >= 2
        assert trio.current_time() - started >= 2.0


async def _closed_by_server(stream: trio.SocketStream) -> None:
    """Read (and ignore any answer) until the server closes the connection."""
    try:
        while await stream.receive_some(4096):
            pass
    except trio.BrokenResourceError:
        pass


async def test_connections_that_never_finish_their_headers_are_closed(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, http_header_timeout_s=1.0) as srv:
        port = int(srv.base_url.rsplit(":", 1)[1])
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(30)]
        for stream in streams:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line
        dripping = await trio.open_tcp_stream("127.0.0.1", port)
        async with trio.open_nursery() as nursery:

            async def drip() -> None:
                # A byte now and then does not keep a connection open either.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await dripping.send_all(b"GET /healthz HTTP/1.1\r\n")
                    for _ in range(100):
                        await trio.sleep(0.2)
                        await dripping.send_all(b"X")

            nursery.start_soon(drip)
            with trio.fail_after(5):  # 1 s, plus scheduling on a busy machine
                for stream in [*streams, dripping]:
                    await _closed_by_server(stream)
            nursery.cancel_scope.cancel()
        for stream in [*streams, dripping]:
            await stream.aclose()
        # Complete requests are served as before.
        assert (await Http(srv.base_url).get("/healthz")).status == 200


async def test_the_header_timeout_does_not_cut_an_idle_websocket(tmp_path: Path) -> None:
    async with (
        run_test_server(tmp_path, http_header_timeout_s=0.5, ws_ping_interval_s=1.0) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        # Two server pings, answered, span well over the header timeout; a close fails the test.
        for _ in range(2):
            with trio.fail_after(5):
                frame = json.loads(await peer.ws.get_message())
            assert frame["type"] == "ping"
            await peer.send_raw('{"type": "pong"}')
        await peer.send_raw('{"type": "ping", "id": 1}')
        assert await peer.push("pong", id=1)


async def test_a_login_flood_is_shed_with_503_and_retry_after_while_health_stays_up(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path, password_hash_threads=1, password_hash_queue=2) as srv:
        alice = srv.acme.agents[0]
        done: list[tuple[int, str | None, str | None]] = []
        flood_over = trio.Event()

        async def login() -> None:
            resp = await Http(srv.base_url).login(alice.username, alice.password)
            done.append((resp.status, resp.error_code, resp.headers.get("retry-after")))

        async def health_during_flood() -> None:
            while not flood_over.is_set():
                assert (await Http(srv.base_url).get("/healthz")).status == 200
                health_checks.append(len(done))

        health_checks: list[int] = []
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(health_during_flood)
                async with trio.open_nursery() as flood:
                    for _ in range(24):
                        flood.start_soon(login)
                flood_over.set()
        statuses = [status for status, _, _ in done]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses
        for status, code, retry_after in done:
            if status == 503:
                assert code == "overloaded" and retry_after is not None and int(retry_after) >= 1
        # Refusals do not wait for the hashing backlog: some come back before the last success.
        last_ok = max(i for i, (status, _, _) in enumerate(done) if status == 200)
        assert any(status == 503 for status, _, _ in done[:last_ok])
        # /healthz was answered while logins were still in flight.
        assert any(n < len(done) for n in health_checks)


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (FIN set, masked), built by hand so it can break the rules."""
    mask = b"\x37\xfa\x21\x3d"
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    else:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_a_text_frame_with_invalid_utf8_is_closed_with_1007(tmp_path: Path) -> None:
    async with (
        run_test_server(tmp_path) as srv,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as peer,
    ):
        await visitor(srv, peer)
        # trio-websocket only sends valid text; write the frame on its TCP stream directly.
        await peer.ws._stream.send_all(_masked_frame(0x1, b'{"type": "ping", "x": "\xff\xfe"}'))
        assert await peer.closed() == 1007  # a close frame, not a dropped connection (1006)


DEEP = 10_000


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ("[" * DEEP + "]" * DEEP, "invalid_json", None),
        ('{"a":' * DEEP + "1" + "}" * DEEP, "invalid_json", None),
        (
            '{"type": "update_profile", "id": "1", "attributes": {"x": '
            + "[" * 40
            + "]" * 40
            + "}}",
            "invalid_json",
            None,
        ),
        ('{"type": "send_message", "type": "ping", "id": "1"}', "invalid_json", "type"),
        ('{"type": "ping", "id": NaN}', "invalid_json", None),
        (
            '{"type": "update_profile", "id": "1", "attributes": {"x": Infinity}}',
            "invalid_json",
            None,
        ),
        (
            '{"type": "update_profile", "id": "1", "attributes": {"x": -1e400}}',
            "invalid_json",
            None,
        ),
        (
            '{"type": "update_profile", "id": "1", "attributes": {"x": 123456789012345678901}}',
            "invalid_json",
            None,
        ),
        ('{"type": "ping", "id": 1' + "0" * 5000 + "}", "invalid_json", None),
        ("1e400", "invalid_json", None),
        ('{"type": "ping", "id": "\\ud800"}', "invalid_field", "id"),
        (
            '{"type": "update_profile", "id": "1", "attributes": {"\\udfff": "x"}}',
            "invalid_field",
            "attributes",
        ),
        ('{"type": "update_profile", "id": "1", "name": "a\\u0000b"}', "invalid_field", "name"),
        ('{"type": ["send_message"], "id": "1"}', "unknown_type", "type"),
        (
            '{"type": "get_history", "id": "1", "conversation_id": "c", "limit": 1e10}',
            "invalid_field",
            "limit",
        ),
        ("[]", "not_an_object", None),
        ("null", "not_an_object", None),
    ],
)
async def test_hostile_json_gets_its_documented_error_and_the_socket_stays_open(
    srv: TestServer, raw: str, code: str, field: str | None
) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        await peer.send_raw(raw)
        frame = await peer.recv()
        assert (frame["type"], frame["code"], frame.get("field")) == ("error", code, field)
        ok = await peer.request("send_message", client_msg_id="after", text="still here")
        assert ok["type"] == "result"
        # The escaped pair of a real character is fine.
        ok = await peer.request("update_profile", name="\U0001f600 \\ud800 as text")
        assert ok["type"] == "result"


async def test_hostile_json_in_an_http_body_is_a_400(srv: TestServer) -> None:
    http = Http(srv.base_url)
    for raw, code in [
        ("[" * DEEP + "]" * DEEP, "invalid_json"),
        ('{"username": "a", "username": "b", "password": "x"}', "invalid_json"),
        ('{"username": NaN, "password": "x"}', "invalid_json"),
        ('{"username": "a\\u0000", "password": "x"}', "invalid_value"),
    ]:
        resp = await http.request("POST", "/api/v1/auth/login", raw=raw.encode())
        assert (resp.status, resp.error_code) == (400, code), resp.body[:200]
