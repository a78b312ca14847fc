"""What a visitor's connection writes before its first frame: only the new visitor's row.

A returning visitor (each page of a visit opens a new connection) needs no write at all before
the hello answer, and the page view is recorded after it, so the answer does not wait on the
database's write lock."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from tests.web.client import open_peer, visitor
from tests.web.server import run_test_server


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
        other = await _lock(srv.database_url.removeprefix("sqlite:///"))
        try:
            async with open_peer(url, origin=srv.acme.site_origin) as again:
                with trio.fail_after(2):  # well under storage_timeout_s (4 s)
                    back = await visitor(srv, again, token=token)
                assert back["visitor_id"] == hello["visitor_id"]
                assert back["visitor_token"] == token
        finally:
            await trio.to_thread.run_sync(other.close)
        # The first connection's page view was recorded (after its answer), once.
        with trio.fail_after(5):
            while not (
                views := await srv.services.storage.list_page_views(
                    srv.acme.id, hello["visitor_id"]
                )
            ):
                await trio.sleep(0.01)
        assert [v.url for v in views] == ["http://site.test/pricing"]
