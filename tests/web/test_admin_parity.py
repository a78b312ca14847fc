"""Admin limits enforced over HTTP and WebSocket, and the report's CSV download."""

from __future__ import annotations

import csv
import io
import time

import pytest

from storage import AppendRequest, AuthorType, ConversationPatch, EventKind
from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import TestServer
from tests.web.test_ws_chat import agent_peer_login, start_agent


@pytest.mark.parametrize("value", [0, -1])
async def test_zero_or_negative_chat_limit_is_refused_naming_the_field(
    srv: TestServer, value: int
) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    created = await owner.post(
        "/api/v1/agents", {"username": "zed", "display_name": "Zed", "max_chats": value}
    )
    assert created.status == 400 and created.error_code == "invalid_value"
    assert created.json()["error"]["field"] == "$.max_chats"
    agent_id = srv.acme.agents[0].id
    patched = await owner.request("PATCH", f"/api/v1/agents/{agent_id}", {"max_chats": value})
    assert patched.status == 400 and patched.json()["error"]["field"] == "$.max_chats"
    agent = (await owner.get(f"/api/v1/agents/{agent_id}")).json()
    assert agent["max_chats"] >= 1


async def test_duplicate_canned_shortcut_is_refused_ignoring_case(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    first = await owner.post("/api/v1/canned-responses", {"shortcut": "refund", "text": "A"})
    assert first.status == 201, first.body
    again = await owner.post("/api/v1/canned-responses", {"shortcut": "Refund", "text": "B"})
    assert again.status == 409 and again.json()["error"]["field"] == "$.shortcut"
    other = await owner.post("/api/v1/canned-responses", {"shortcut": "hours", "text": "C"})
    renamed = await owner.request(
        "PATCH", f"/api/v1/canned-responses/{other.json()['id']}", {"shortcut": "REFUND"}
    )
    assert renamed.status == 409
    listed = (await owner.get("/api/v1/canned-responses")).json()["canned_responses"]
    assert sorted(c["shortcut"] for c in listed) == ["hours", "refund"]


async def test_tags_outside_the_catalogue_are_refused_over_http_and_websocket(
    srv: TestServer,
) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    http = await agent_peer_login(srv, Http(srv.base_url))
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await start_agent(agent)
        await visitor(srv, vis)
        sent = await vis.request("send_message", client_msg_id="m1", text="hi")
        conv = sent["result"]["conversation_id"]
        await agent.push("chat_assigned")
        # No catalogue yet: any tag goes.
        ok = await owner.post(f"/api/v1/conversations/{conv}/tags", {"add": ["anything"]})
        assert ok.status == 200, ok.body
        put = await owner.request("PUT", "/api/v1/tags", {"tags": ["billing", "vip"]})
        assert put.status == 200
        refused = await owner.post(f"/api/v1/conversations/{conv}/tags", {"add": ["vipp"]})
        assert refused.status == 400 and refused.error_code == "unknown_tag"
        assert refused.json()["error"]["field"] == "$.add"
        by_ws = await agent.request("tag", conversation_id=conv, add=["billing", "oops"])
        assert by_ws["type"] == "error" and by_ws["code"] == "unknown_tag"
        assert by_ws["field"] == "add"
        closing = await agent.request("close", conversation_id=conv, tags=["nope"])
        assert closing["type"] == "error" and closing["code"] == "unknown_tag"
        fine = await agent.request("tag", conversation_id=conv, add=["vip"], remove=["anything"])
        assert fine["type"] == "result", fine
        conv_out = (await owner.get(f"/api/v1/conversations/{conv}")).json()
        assert conv_out["tags"] == ["vip"]


async def test_report_csv_matches_the_json_report(srv: TestServer) -> None:
    assert srv.services is not None
    store = srv.services.storage
    ws_id = srv.acme.id
    agent_id = srv.acme.agents[0].id
    vis = await store.create_visitor(ws_id, token_hash="report-visitor")
    for answered in (True, False):
        conv = await store.create_conversation(ws_id, visitor_id=vis.id)
        if answered:
            await store.append(
                AppendRequest(
                    workspace_id=ws_id,
                    conversation_id=conv.id,
                    kind=EventKind.MESSAGE,
                    author_type=AuthorType.AGENT,
                    author_id=agent_id,
                    body="hello",
                    patch=ConversationPatch(
                        assignee_id=agent_id, first_response_at=conv.created_at + 12, rating=5
                    ),
                )
            )
    sup = bearer(srv.base_url, srv.acme.owner.token)
    since, until = time.time() - 3600, time.time() + 60
    report = (await sup.get(f"/api/v1/reports?since={since}&until={until}")).json()
    assert report["total_chats"] == 2 and report["missed_chats"] == 1
    assert report["csat_pct"] == 100.0 and report["first_response_p50_s"] == 12.0
    got = await sup.get(f"/api/v1/reports/csv?since={since}&until={until}")
    assert got.status == 200
    assert got.headers["content-type"].startswith("text/csv")
    assert "attachment" in got.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(got.body.decode())))
    assert rows[1][:5] == ["total", "", "", "2", "1"] and rows[1][5] == "12"
    agent_row = next(r for r in rows if r[0] == "agent")
    assert agent_row[1] == agent_id and agent_row[3] == "1"
    plain = bearer(srv.base_url, srv.acme.agents[0].token)
    assert (await plain.get("/api/v1/reports/csv")).status == 403


async def test_search_snippet_marks_matches_in_parts_not_brackets(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        await peer.request("send_message", client_msg_id="b1", text="my [order] parcel is late")
    sup = bearer(srv.base_url, srv.acme.owner.token)
    hits = (await sup.get("/api/v1/conversations/search?q=parcel")).json()["hits"]
    assert hits[0]["snippet"] == "my [order] parcel is late"
    assert hits[0]["snippet_parts"] == [
        {"text": "my [order] ", "match": False},
        {"text": "parcel", "match": True},
        {"text": " is late", "match": False},
    ]


async def test_reload_and_reconnect_do_not_duplicate_the_page_view(srv: TestServer) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as peer:
        hello = await visitor(srv, peer)
    token, visitor_id = hello["visitor_token"], hello["visitor_id"]
    for _reload in range(2):  # the same page loaded again: a new socket, the same hello page
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer, token=token)
    async with open_peer(url, origin=srv.acme.site_origin) as peer:
        await visitor(srv, peer, token=token)
        page = {"url": "http://site.test/docs", "title": "Docs", "referrer": None}
        assert (await peer.request("page_view", **page))["type"] == "result"
        assert (await peer.request("page_view", **page))["type"] == "result"
    sup = bearer(srv.base_url, srv.acme.owner.token)
    views = (await sup.get(f"/api/v1/visitors/{visitor_id}")).json()["page_views"]
    assert sorted(v["url"] for v in views) == ["http://site.test/docs", "http://site.test/pricing"]
