"""The agents' live visitor list over real sockets: every connected visitor is listed online,
whether it has one tab or several, and closing one of several tabs keeps it online."""

from __future__ import annotations

from typing import Any

import trio

from tests.web.client import Http, open_peer, visitor
from tests.web.server import TestServer

VISITORS = 12


async def _wait_until_connections(srv: TestServer, visitor_id: str, count: int) -> None:
    assert srv.services is not None
    hub = srv.services.engine.hub
    with trio.fail_after(10):
        while len(hub.visitor_connections(srv.acme.id, visitor_id)) != count:
            await trio.sleep(0.01)


async def _tab(
    srv: TestServer,
    token: str | None,
    hellos: trio.MemorySendChannel[dict[str, Any]],
    close: trio.Event,
) -> None:
    """One browser tab: connected until ``close`` is set (each in its own task, so tabs close
    in any order)."""
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as tab:
        await hellos.send(await visitor(srv, tab, token=token))
        await close.wait()


async def test_twelve_connected_visitors_are_all_listed_online(srv: TestServer) -> None:
    http = Http(srv.base_url)
    account = srv.acme.agents[0]
    assert (await http.login(account.username, account.password)).status == 200
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        trio.open_nursery() as nursery,
    ):
        assert (await agent.request("auth", token=None))["type"] == "result"
        listed = await agent.request("list_visitors", subscribe=True)
        assert listed["result"]["visitors"] == []

        send, receive = trio.open_memory_channel[dict[str, Any]](VISITORS * 2)
        close_all, close_second = trio.Event(), trio.Event()
        ids: list[str] = []
        two_tabs: list[str] = []
        with trio.fail_after(20):
            for n in range(VISITORS):
                nursery.start_soon(_tab, srv, None, send, close_all)
                hello = await receive.receive()
                ids.append(hello["visitor_id"])
                if n % 2 == 0:  # half of them have the site open in a second tab
                    nursery.start_soon(_tab, srv, hello["visitor_token"], send, close_second)
                    await receive.receive()
                    two_tabs.append(hello["visitor_id"])
        for visitor_id in ids:
            await _wait_until_connections(srv, visitor_id, 2 if visitor_id in two_tabs else 1)

        async def online_in_list() -> dict[str, bool]:
            reply = await agent.request("list_visitors", subscribe=True)
            visitors: list[dict[str, Any]] = reply["result"]["visitors"]
            return {v["visitor_id"]: v["online"] for v in visitors}

        assert await online_in_list() == dict.fromkeys(ids, True)
        # What the console shows live comes from the pushes: the latest for each is online.
        latest: dict[str, bool] = {}
        for frame in agent.pushes:
            if frame.get("type") == "visitor_update":
                latest[frame["visitor"]["visitor_id"]] = frame["visitor"]["online"]
        assert latest == dict.fromkeys(ids, True)

        # Closing one of two tabs leaves the visitor online.
        close_second.set()
        for visitor_id in two_tabs:
            await _wait_until_connections(srv, visitor_id, 1)
        assert await online_in_list() == dict.fromkeys(ids, True)
        left = [
            f
            for f in agent.pushes
            if f.get("type") == "visitor_update" and f.get("change") == "left"
        ]
        assert left == []
        close_all.set()
