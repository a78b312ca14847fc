"""Paging never truncates silently: every listing with more rows than its page says so, and
walking its cursor reaches every row exactly once (HTTP transcript, history over WebSocket,
conversations, search, audit log, routing decisions)."""

from __future__ import annotations

from typing import Any

from storage import (
    AppendRequest,
    AuthorType,
    CloseReason,
    ConversationPatch,
    ConversationState,
    EventKind,
    NewRoutingDecision,
    Storage,
)
from tests.web.client import Http, bearer, open_peer
from tests.web.server import TestServer

EVENTS = 4100


async def _long_conversation(storage: Storage, workspace_id: str, events: int) -> str:
    """A closed conversation of ``events`` messages (closed: no router touches it meanwhile)."""
    closed = ConversationPatch(state=ConversationState.CLOSED, close_reason=CloseReason.RESOLVED)
    visitor = await storage.create_visitor(workspace_id, token_hash=None)
    conv = await storage.create_conversation(workspace_id, visitor_id=visitor.id)
    for start in range(0, events, 500):
        await storage.append_many(
            [
                AppendRequest(
                    workspace_id=workspace_id,
                    conversation_id=conv.id,
                    kind=EventKind.MESSAGE,
                    author_type=AuthorType.VISITOR,
                    author_id=visitor.id,
                    body=f"message {n}",
                    client_msg_id=f"m-{n}",
                    patch=closed if n == events - 1 else None,
                )
                for n in range(start, min(start + 500, events))
            ]
        )
    return conv.id


async def test_transcript_of_4100_events_pages_through_all_of_them(srv: TestServer) -> None:
    assert srv.services is not None
    conv = await _long_conversation(srv.services.storage, srv.acme.id, EVENTS)
    sup = bearer(srv.base_url, srv.acme.owner.token)
    base = f"/api/v1/conversations/{conv}/transcript"

    first = (await sup.get(f"{base}?limit=500")).json()
    assert len(first["events"]) == 500
    assert first["has_more"] is True
    assert [e["seq"] for e in first["events"]] == list(range(1, 501))
    assert first["next_after_seq"] == 500

    seqs: list[int] = []
    page: dict[str, Any] = first
    pages = 1
    seqs += [e["seq"] for e in page["events"]]
    while page["has_more"]:
        page = (await sup.get(f"{base}?limit=500&after_seq={page['next_after_seq']}")).json()
        seqs += [e["seq"] for e in page["events"]]
        pages += 1
        assert pages <= 10
    assert seqs == list(range(1, EVENTS + 1))
    assert page["next_after_seq"] is None

    # Asking for more than the largest page gets the largest page, and says there is more.
    big = (await sup.get(f"{base}?limit=1000")).json()
    assert len(big["events"]) == 500 and big["has_more"] is True


async def test_history_over_websocket_keeps_the_newest_event_and_scrolls_back_to_the_first(
    srv: TestServer,
) -> None:
    assert srv.services is not None
    conv = await _long_conversation(srv.services.storage, srv.acme.id, 450)
    http = Http(srv.base_url)
    account = srv.acme.agents[0]
    assert (await http.login(account.username, account.password)).status == 200
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
        assert (await agent.request("auth", token=None))["type"] == "result"
        latest = (await agent.request("get_history", conversation_id=conv, limit=200))["result"]
        assert latest["has_more"] is True
        assert [e["seq"] for e in latest["events"]] == list(range(251, 451))
        seqs = [e["seq"] for e in latest["events"]]
        page = latest
        while page["has_more"]:
            page = (
                await agent.request(
                    "get_history", conversation_id=conv, before_seq=seqs[0], limit=200
                )
            )["result"]
            seqs = [e["seq"] for e in page["events"]] + seqs
        assert seqs == list(range(1, 451))
        caught_up = (
            await agent.request("get_history", conversation_id=conv, after_seq=250, limit=200)
        )["result"]
        assert [e["seq"] for e in caught_up["events"]] == list(range(251, 451))
        assert caught_up["has_more"] is False


async def test_conversation_list_and_search_page_past_their_limit(srv: TestServer) -> None:
    assert srv.services is not None
    storage = srv.services.storage
    ids = set()
    for n in range(7):
        ids.add(await _long_conversation(storage, srv.acme.id, 1))
        del n
    sup = bearer(srv.base_url, srv.acme.owner.token)
    seen: list[str] = []
    cursor = ""
    while True:
        page = (await sup.get(f"/api/v1/conversations?limit=3{cursor}")).json()
        seen += [c["id"] for c in page["conversations"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted(ids)

    hits = (await sup.get("/api/v1/conversations/search?q=message&limit=5")).json()
    assert len(hits["hits"]) == 5 and hits["has_more"] is True
    everything = (await sup.get("/api/v1/conversations/search?q=message&limit=100")).json()
    assert len(everything["hits"]) == 7 and everything["has_more"] is False


async def test_audit_log_and_routing_decisions_page_past_their_limit(srv: TestServer) -> None:
    assert srv.services is not None
    storage = srv.services.storage
    for n in range(12):
        await storage.audit(srv.acme.id, actor="test", action="test.entry", target=str(n))
    sup = bearer(srv.base_url, srv.acme.owner.token)
    targets: list[str | None] = []
    cursor = ""
    while True:
        page = (await sup.get(f"/api/v1/audit?limit=5{cursor}")).json()
        targets += [e["target"] for e in page["entries"] if e["action"] == "test.entry"]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(targets, key=lambda t: int(t or 0)) == [str(n) for n in range(12)]

    conv = await _long_conversation(storage, srv.acme.id, 1)
    await storage.record_routing_decisions(
        [
            NewRoutingDecision(
                workspace_id=srv.acme.id,
                conversation_id=conv,
                agent_id=None,
                reason="queued",
                details={},
                at=float(n),
            )
            for n in range(600)
        ]
    )
    log = (await sup.get(f"/api/v1/routing-decisions?conversation_id={conv}&limit=1000")).json()
    assert len(log["decisions"]) == 500 and log["has_more"] is True
    few = (await sup.get(f"/api/v1/routing-decisions?conversation_id={conv}&limit=10")).json()
    assert len(few["decisions"]) == 10 and few["has_more"] is True

    # The same log over the agents' WebSocket.
    http = Http(srv.base_url)
    account = srv.acme.agents[0]
    assert (await http.login(account.username, account.password)).status == 200
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
        assert (await agent.request("auth", token=None))["type"] == "result"
        log_ws = (await agent.request("routing_log", conversation_id=conv, limit=200))["result"]
        assert len(log_ws["decisions"]) == 200 and log_ws["has_more"] is True
