"""A visitor's connect checks its widget key and bans in memory, and no change hides behind it.

Before the cache (issue 12), every visitor upgrade read the workspace by its widget key and the
IP's bans from storage, and a returning visitor's hello read its bans again: a new visitor's
connect made 3 storage calls before its page view (key, bans, the new row), a returning one's
4 (key, bans twice, the row by token). Now 1 and 1: the visitor's own row. Bans made, lifted
or expired, and workspace changes (settings, suspension, a new key) apply to the next connect.
"""

from __future__ import annotations

import ast
import collections
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected

from storage import BanKind, StorageHandle
from tests.web.client import bearer, open_peer, visitor
from tests.web.server import TestServer
from web.workspace_cache import WorkspaceCache

# Calls that are not the connect's own: the page view is written after the hello's answer, and
# the webhook service polls on its own.
NOT_THE_CONNECT = {"add_page_view", "feed_webhooks", "due_webhook_deliveries"}
WEB = Path(__file__).resolve().parents[2] / "web"


class CountingStorage:
    """The real storage, counting the calls made through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def connect_calls(self) -> dict[str, int]:
        return {k: n for k, n in self.calls.items() if k not in NOT_THE_CONNECT}


@contextmanager
def counted(srv: TestServer) -> Iterator[CountingStorage]:
    assert srv.services is not None
    handle = srv.services.storage
    assert isinstance(handle, StorageHandle)
    backend = handle._backend
    spy = CountingStorage(backend)
    handle.attach(spy)  # type: ignore[arg-type]
    try:
        yield spy
    finally:
        handle.attach(backend)  # type: ignore[arg-type]


def cache(srv: TestServer) -> WorkspaceCache:
    assert srv.services is not None
    return srv.services.workspaces


async def refused(srv: TestServer, url: str, origin: str) -> int:
    """The HTTP status an upgrade to ``url`` is refused with (fails if it is accepted)."""
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_peer(url, origin=origin):
            pass
    return int(rejected.value.status_code)


async def test_a_visitor_connect_reads_only_its_own_row(srv: TestServer) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as peer:
        token = (await visitor(srv, peer))["visitor_token"]
    with counted(srv) as spy:
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer)
        assert spy.connect_calls() == {"create_visitor": 1}
    with counted(srv) as spy:
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer, token=token)
        assert spy.connect_calls() == {"find_visitor_by_token_hash": 1}


async def test_a_ban_refuses_the_next_connect_and_lifting_it_lets_the_visitor_back(
    srv: TestServer,
) -> None:
    url, origin = srv.visitor_ws_url(srv.acme.widget_key), srv.acme.site_origin
    sup = bearer(srv.base_url, srv.acme.supervisor.token)  # type: ignore[union-attr]
    async with open_peer(url, origin=origin) as peer:
        hello = await visitor(srv, peer)  # the workspace and its (no) bans are now cached
        resp = await sup.post(f"/api/v1/visitors/{hello['visitor_id']}/ban", {"include_ip": True})
        assert resp.status == 201
    bans = {b["kind"]: b["id"] for b in resp.json()["bans"]}
    assert await refused(srv, url, origin) == 403
    assert (await sup.request("DELETE", f"/api/v1/bans/{bans['ip']}")).status == 200
    async with open_peer(url, origin=origin) as peer:  # the IP is let in, the visitor is not
        await peer.send_raw(
            json.dumps({"type": "hello", "id": "1", "token": hello["visitor_token"]})
        )
        assert await peer.closed(timeout=5) == 1008
    assert (await sup.request("DELETE", f"/api/v1/bans/{bans['visitor']}")).status == 200
    async with open_peer(url, origin=origin) as peer:
        again = await visitor(srv, peer, token=hello["visitor_token"])
    assert again["visitor_id"] == hello["visitor_id"]


async def test_an_expired_ban_stops_applying_without_any_event(srv: TestServer) -> None:
    url, origin = srv.visitor_ws_url(srv.acme.widget_key), srv.acme.site_origin
    sup = bearer(srv.base_url, srv.acme.supervisor.token)  # type: ignore[union-attr]
    async with open_peer(url, origin=origin) as peer:
        hello = await visitor(srv, peer)
        body = {"include_ip": True, "expires_in_s": 60}
        assert (await sup.post(f"/api/v1/visitors/{hello['visitor_id']}/ban", body)).status == 201
    assert await refused(srv, url, origin) == 403  # read again after the ban, and cached
    cache(srv).clock = lambda: time.time() + 61  # a minute later, with nothing said
    async with open_peer(url, origin=origin) as peer:
        again = await visitor(srv, peer, token=hello["visitor_token"])
    assert again["visitor_id"] == hello["visitor_id"]


async def test_suspending_a_workspace_refuses_its_widget_at_once_and_resuming_restores_it(
    srv: TestServer,
) -> None:
    url, origin = srv.visitor_ws_url(srv.globex.widget_key), srv.globex.site_origin
    operator = bearer(srv.base_url, srv.acme.owner.token)
    async with open_peer(url, origin=origin) as peer:
        await visitor(srv, peer)
    assert (await operator.post(f"/api/v1/workspaces/{srv.globex.id}/suspend", {})).status == 200
    assert await refused(srv, url, origin) == 404
    assert (await operator.post(f"/api/v1/workspaces/{srv.globex.id}/resume", {})).status == 200
    async with open_peer(url, origin=origin) as peer:
        await visitor(srv, peer)


async def test_a_new_widget_key_refuses_the_old_one_at_once(srv: TestServer) -> None:
    """No endpoint rotates the key yet: a rotation writes the row and says so, as every
    workspace change does (``AccessEvents.workspace_updated``)."""
    assert srv.services is not None
    origin = srv.acme.site_origin
    async with open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=origin) as peer:
        await visitor(srv, peer)
    await srv.services.storage.update_workspace(srv.acme.id, widget_key="rotated-key")
    await srv.services.access.workspace_updated(srv.acme.id)
    assert await refused(srv, srv.visitor_ws_url(srv.acme.widget_key), origin) == 404
    async with open_peer(srv.visitor_ws_url("rotated-key"), origin=origin) as peer:
        await visitor(srv, peer)


async def test_a_widget_settings_change_shows_in_the_next_hello(srv: TestServer) -> None:
    url, origin = srv.visitor_ws_url(srv.acme.widget_key), srv.acme.site_origin
    owner = bearer(srv.base_url, srv.acme.owner.token)
    async with open_peer(url, origin=origin) as peer:
        before = (await visitor(srv, peer))["widget"]
    resp = await owner.request("PATCH", "/api/v1/settings/widget", {"title": "Ask us"})
    assert resp.status == 200
    async with open_peer(url, origin=origin) as peer:
        after = (await visitor(srv, peer))["widget"]
    assert (before["title"], after["title"]) == ("Chat with us", "Ask us")


async def test_a_workspace_dropped_for_the_bound_is_asked_about_in_storage(
    srv: TestServer,
) -> None:
    assert srv.services is not None
    storage = srv.services.storage
    small = WorkspaceCache(storage, max_workspaces=2)
    assert await small.by_widget_key(srv.acme.widget_key) is not None
    for n in range(2):
        assert await small.by_widget_key((await storage.create_workspace(name=f"W{n}")).widget_key)
    assert len(small) == 2
    # Acme, the least recently used, was dropped: a ban made behind the cache's back is seen.
    await storage.add_ban(srv.acme.id, kind=BanKind.IP, value="192.0.2.1")
    assert await small.is_banned(srv.acme.id, visitor_id=None, ip="192.0.2.1")


class GatedBans:
    """The real storage, whose ``list_bans`` waits at a gate before answering: a read that
    is still in flight when a ban is made."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.reading = trio.Event()
        self.gate = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def list_bans(self, workspace_id: str) -> Any:
        bans = await self._inner.list_bans(workspace_id)
        self.reading.set()
        await self.gate.wait()
        return bans


async def test_a_read_that_overlaps_a_ban_is_not_kept(srv: TestServer) -> None:
    assert srv.services is not None
    storage = GatedBans(srv.services.storage)
    cache = WorkspaceCache(storage)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.by_widget_key, srv.acme.widget_key)
        await storage.reading.wait()  # it has read the bans, not yet answered
        await storage.add_ban(srv.acme.id, kind=BanKind.IP, value="192.0.2.7")
        cache.forget(srv.acme.id)  # as the ban's access event does
        storage.gate.set()
    assert len(cache) == 0  # what it read predates the ban: not kept
    assert await cache.is_banned(srv.acme.id, visitor_id=None, ip="192.0.2.7")
    assert await cache.by_widget_key(srv.acme.widget_key) is not None
    assert len(cache) == 1
    assert await cache.is_banned(srv.acme.id, visitor_id=None, ip="192.0.2.7")


def test_every_workspace_or_ban_write_in_web_tells_the_caches() -> None:
    """A handler that writes a workspace row or a ban also publishes an access event, which
    drops the connect caches of every node (web/access.py)."""
    writes = {"update_workspace", "add_ban", "remove_ban"}
    events = {"workspace_changed", "workspace_updated", "close_workspace", "close_visitor"}
    silent = []
    for path in sorted(WEB.glob("*.py")):
        if path.name == "bootstrap.py":  # the first start, before the server serves anyone
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.AsyncFunctionDef):
                continue
            called = {
                node.func.attr
                for node in ast.walk(fn)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            } | {
                node.func.id
                for node in ast.walk(fn)
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            }
            if called & writes and not called & events:
                silent.append(f"{path.name}:{fn.name}")
    assert silent == []
