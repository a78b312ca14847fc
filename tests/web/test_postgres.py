"""The web layer on PostgreSQL: a chat end to end and workspace isolation, same as on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pg import pg_schema_url
from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import run_test_server

pytestmark = pytest.mark.postgres


async def test_chat_and_isolation_on_postgres(tmp_path: Path) -> None:
    with pg_schema_url() as url:
        async with run_test_server(tmp_path, database_url=url) as srv:
            http = Http(srv.base_url)
            alice = srv.acme.agents[0]
            assert (await http.login(alice.username, alice.password)).status == 200
            async with (
                open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
                open_peer(
                    srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
                ) as vis,
            ):
                await agent.request("auth", token=None)
                await agent.request("set_status", status="accepting")
                await visitor(srv, vis)
                ack = await vis.request("send_message", client_msg_id="m1", text="hello pg")
                conv = ack["result"]["conversation_id"]
                assigned = await agent.push("chat_assigned")
                assert assigned["conversation"]["conversation_id"] == conv
                again = await vis.request("send_message", client_msg_id="m1", text="hello pg")
                assert again["result"]["duplicate"] is True
            other = bearer(srv.base_url, srv.globex.owner.token)
            assert (await other.get(f"/api/v1/conversations/{conv}")).status == 404
            hits = (await other.get("/api/v1/conversations/search?q=hello")).json()["hits"]
            assert hits == []
            mine = bearer(srv.base_url, srv.acme.owner.token)
            transcript = (await mine.get(f"/api/v1/conversations/{conv}/transcript")).json()
            assert [e["body"] for e in transcript["events"] if e["kind"] == "message"] == [
                "hello pg"
            ]
