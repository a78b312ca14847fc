"""The database cannot commit: senders hear ``storage_unavailable`` within 5 s, ``/readyz``
answers 503, nothing is acknowledged, and a retry with the same ``client_msg_id`` commits once
the database is back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from tests.pg import OutageProxy, pg_schema_url
from tests.web.client import Http, open_peer, visitor
from tests.web.server import run_test_server

ANSWER_WITHIN_S = 5.0  # the promise to senders (storage_timeout_s is 4 s by default)


async def _lock(path: str) -> sqlite3.Connection:
    """Another connection (as another process would) takes the write lock and keeps it."""

    def take() -> sqlite3.Connection:
        other = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")
        return other

    return await trio.to_thread.run_sync(take)


async def _unlock(other: sqlite3.Connection) -> None:
    def release() -> None:
        other.execute("ROLLBACK")
        other.close()

    await trio.to_thread.run_sync(release)


async def test_locked_sqlite_answers_storage_unavailable_fast_and_readyz_503(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path) as srv:
        anon = Http(srv.base_url)
        assert (await anon.get("/readyz")).status == 200
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as peer:
            await visitor(srv, peer)
            first = await peer.request("send_message", client_msg_id="m1", text="before")
            assert first["type"] == "result", first

            other = await _lock(srv.database_url.removeprefix("sqlite:///"))
            try:
                for cmid in ("m2", "m3"):  # the first waits for the lock, the next is refused
                    started = trio.current_time()
                    answer = await peer.request(
                        "send_message", client_msg_id=cmid, text=f"during {cmid}", timeout=8
                    )
                    elapsed = trio.current_time() - started
                    assert answer["type"] == "error", answer
                    assert answer["code"] == "storage_unavailable", answer
                    assert "SQLite" not in answer["message"] and "locked" not in answer["message"]
                    assert elapsed < ANSWER_WITHIN_S, elapsed
                ready = await anon.get("/readyz")
                assert ready.status == 503, ready.body
                assert ready.json()["checks"]["database"] != "ok"
            finally:
                await _unlock(other)

            with trio.fail_after(10):  # bounded: the refusal window and the probe are short
                while (await anon.get("/readyz")).status != 200:
                    await trio.sleep(0.1)
            retried = await peer.request("send_message", client_msg_id="m2", text="during m2")
            assert retried["type"] == "result", retried
            assert retried["result"]["duplicate"] is False  # the error was not followed by a
            # late commit of m2 (its attempt left it out once its sender had given up)
            history = await peer.request(
                "get_history", conversation_id=first["result"]["conversation_id"]
            )
            texts = [e["body"] for e in history["result"]["events"] if e["kind"] == "message"]
            assert texts == ["before", "during m2"], history


@pytest.mark.postgres
async def test_unreachable_postgres_answers_storage_unavailable_fast_and_readyz_503(
    tmp_path: Path,
) -> None:
    with pg_schema_url() as direct_url:
        proxy = OutageProxy(direct_url)
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            async with run_test_server(tmp_path, database_url=proxy.url) as srv:
                anon = Http(srv.base_url)
                assert (await anon.get("/readyz")).status == 200
                async with open_peer(
                    srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
                ) as peer:
                    await visitor(srv, peer)
                    first = await peer.request("send_message", client_msg_id="m1", text="before")
                    assert first["type"] == "result", first

                    proxy.cut()
                    for cmid in ("m2", "m3"):
                        started = trio.current_time()
                        answer = await peer.request(
                            "send_message", client_msg_id=cmid, text=f"during {cmid}", timeout=8
                        )
                        elapsed = trio.current_time() - started
                        assert answer["type"] == "error", answer
                        assert answer["code"] == "storage_unavailable", answer
                        assert "PostgreSQL" not in answer["message"]
                        assert elapsed < ANSWER_WITHIN_S, elapsed
                    ready = await anon.get("/readyz")
                    assert ready.status == 503, ready.body

                    proxy.restore()
                    with trio.fail_after(15):
                        while (await anon.get("/readyz")).status != 200:
                            await trio.sleep(0.1)
                    with trio.fail_after(15):
                        while True:
                            retried = await peer.request(
                                "send_message", client_msg_id="m2", text="during m2"
                            )
                            if retried["type"] == "result":
                                break
                            assert retried["code"] == "storage_unavailable", retried
                            await trio.sleep(0.1)
                    history = await peer.request(
                        "get_history", conversation_id=first["result"]["conversation_id"]
                    )
                    texts = [
                        e["body"] for e in history["result"]["events"] if e["kind"] == "message"
                    ]
                    assert texts == ["before", "during m2"], history
            nursery.cancel_scope.cancel()


def test_storage_timeout_must_be_positive() -> None:
    from web.errors import ConfigError
    from web.settings import load_settings

    with pytest.raises(ConfigError, match="storage_timeout_s"):
        load_settings({"storage_timeout_s": 0}, environ={})
    assert load_settings({"storage_timeout_s": "2.5"}, environ={}).engine.storage_timeout_s == 2.5
