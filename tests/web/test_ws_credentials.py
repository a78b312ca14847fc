"""Credentials reach live sockets by push, not by heartbeat: a change made through the server
closes the sockets concerned at once; one shared pass catches changes made elsewhere; and a
heartbeat reads nothing from the database."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.pg import OutageProxy, pg_schema_url
from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import run_test_server

NO_HEARTBEAT_S = 600.0  # pings (and the shared re-check) far beyond the test's waits


async def test_an_admin_password_reset_closes_the_accounts_sockets_at_once(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path, ws_ping_interval_s=NO_HEARTBEAT_S) as srv:
        alice = srv.acme.agents[0]
        http = Http(srv.base_url)
        await http.login(alice.username, alice.password)
        async with (
            open_peer(srv.agent_ws_url, cookie=http.cookie) as console,
            open_peer(srv.agent_ws_url) as bot_like,
        ):
            assert (await console.request("auth", token=None))["type"] == "result"
            assert (await bot_like.request("auth", token=alice.token))["type"] == "result"
            owner = bearer(srv.base_url, srv.acme.owner.token)
            assert (await owner.post(f"/api/v1/agents/{alice.id}/reset-password")).status == 200
            assert await console.closed(timeout=5) == 1008
            assert await bot_like.closed(timeout=5) == 1008  # every socket of the account


async def test_a_session_ended_outside_this_server_closes_its_socket_at_the_next_pass(
    tmp_path: Path,
) -> None:
    # ``livechat admin reset-password`` runs in another process: it can only end the sessions
    # in the database. The shared re-check pass (once per ping interval) finds that.
    async with run_test_server(tmp_path, ws_ping_interval_s=1.0) as srv:
        alice = srv.acme.agents[0]
        http = Http(srv.base_url)
        await http.login(alice.username, alice.password)
        async with open_peer(srv.agent_ws_url, cookie=http.cookie) as console:
            assert (await console.request("auth", token=None))["type"] == "result"
            await srv.services.storage.delete_agent_sessions(alice.id)
            assert await console.closed(timeout=5) == 1008


async def test_idle_visitors_keep_their_sockets_through_a_database_outage(
    tmp_path: Path,
) -> None:
    # A heartbeat is a frame only: with the database unreachable, idle visitors keep answering
    # pings and stay connected (each heartbeat used to look up bans, and fail).
    with pg_schema_url() as direct_url:
        proxy = OutageProxy(direct_url)
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            # 1 s pings: the dead-peer margin (2.5 s of silence) stays well above the
            # scheduling hiccups of a busy machine, where server, proxy and client share a thread.
            async with run_test_server(
                tmp_path, database_url=proxy.url, ws_ping_interval_s=1.0
            ) as srv:
                url = srv.visitor_ws_url(srv.acme.widget_key)
                async with open_peer(url, origin=srv.acme.site_origin) as peer:
                    await visitor(srv, peer)
                    proxy.cut()
                    pings = 0
                    with trio.fail_after(20):
                        while pings < 4:  # four seconds of heartbeats, answered
                            frame = await peer.ws.get_message()
                            if '"ping"' in frame:
                                pings += 1
                                await peer.send_raw('{"type": "pong"}')
                    await peer.send_raw('{"type": "ping", "id": "still"}')
                    assert await peer.push("pong", id="still")
                    proxy.restore()
            nursery.cancel_scope.cancel()
