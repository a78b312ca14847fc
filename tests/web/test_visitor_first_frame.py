"""What a visitor's connection writes before its first frame: only the new visitor's row.

A returning visitor (each page of a visit opens a new connection) needs no write at all before
the hello answer, and the page view is recorded after it, so the answer does not wait on the
database's write lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from storage import PageView
from tests.web.client import open_peer, visitor
from tests.web.server import TestServer, run_test_server


async def _lock(path: str) -> sqlite3.Connection:
    """Another connection (as another process would) takes the write lock and keeps it."""

    def take() -> sqlite3.Connection:
        other = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")
        return other

    return await trio.to_thread.run_sync(take)


async def test_a_returning_visitor_is_answered_while_the_database_is_write_locked(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with open_peer(url, origin=srv.acme.site_origin) as first:
            hello = await visitor(srv, first)
        token = hello["visitor_token"]
        # The first connection's page view is stored after its answer: let that write finish
        # first, or the returning visitor's arrival would queue behind it on the locked file.
        views = await _page_views(srv, hello["visitor_id"])
        other = await _lock(srv.database_url.removeprefix("sqlite:///"))
        try:
            async with open_peer(url, origin=srv.acme.site_origin) as again:
                with trio.fail_after(2):  # well under storage_timeout_s (4 s)
                    back = await visitor(srv, again, token=token)
                assert back["visitor_id"] == hello["visitor_id"]
                assert back["visitor_token"] == token
        finally:
            await trio.to_thread.run_sync(other.close)
        # The page view was recorded once: the returning visitor's hello repeats the page.
        assert [v.url for v in views] == ["http://site.test/pricing"]
        again_views = await srv.services.storage.list_page_views(srv.acme.id, hello["visitor_id"])
        assert [v.url for v in again_views] == ["http://site.test/pricing"]


async def _page_views(srv: TestServer, visitor_id: str) -> list[PageView]:
    """The visitor's page views once there is one (stored by the actor after the answer)."""
    with trio.fail_after(5):
        while not (views := await srv.services.storage.list_page_views(srv.acme.id, visitor_id)):
            await trio.sleep(0.01)
    return views
