"""Privacy and access over real HTTP and sockets: the data subject's export, export scopes,
limits on exports and searches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from engine.api import AgentPrincipal
from engine.messages import AddNote, Tag, Transfer
from storage import Role
from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import TestServer, run_test_server


def _lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


async def _chat_with_internal_notes(srv: TestServer) -> tuple[str, str]:
    """A visitor's chat with a note, a tag and a transfer "because the customer is rude"."""
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        hello = await visitor(srv, peer)
        sent = await peer.request("send_message", client_msg_id="m1", text="my order?")
        conv_id = sent["result"]["conversation_id"]
    assert srv.services is not None and srv.acme.supervisor is not None
    sup = AgentPrincipal(
        workspace_id=srv.acme.id,
        agent_id=srv.acme.supervisor.id,
        role=Role.SUPERVISOR,
        display_name="Sup",
    )
    engine = srv.services.engine
    await engine.request_as(
        sup, AddNote(conversation_id=conv_id, client_msg_id="n1", text="NOTE: fraud risk")
    )
    await engine.request_as(sup, Tag(conversation_id=conv_id, add=("angry",)))
    await engine.request_as(
        sup,
        Transfer(
            conversation_id=conv_id, to_agent_id=srv.acme.agents[0].id, reason="customer is rude"
        ),
    )
    return hello["visitor_id"], conv_id


async def test_data_subject_export_marks_internal_rows_or_leaves_them_out(
    srv: TestServer,
) -> None:
    visitor_id, _ = await _chat_with_internal_notes(srv)
    owner = bearer(srv.base_url, srv.acme.owner.token)
    marked = await owner.get(f"/api/v1/export?visitor_id={visitor_id}")
    assert marked.status == 200, marked.body
    header, *rows, end = _lines(marked.body)
    assert header["scope"] == "visitor" and header["internal"] == "marked"
    assert all(isinstance(r["internal"], bool) for r in rows)
    events = {r["row"]["kind"]: r for r in rows if r["table"] == "events"}
    assert events["note"]["internal"] is True
    assert events["tagged"]["internal"] is True
    assert events["message"]["internal"] is False
    transferred = events["transferred"]
    assert transferred["internal"] is False
    assert "data.reason" in transferred["internal_fields"]
    assert transferred["row"]["data"]["reason"] == "customer is rude"  # kept, but marked
    conversation = next(r for r in rows if r["table"] == "conversations")
    assert conversation["internal_fields"] == ["tags"]
    assert all(r["internal"] for r in rows if r["table"] == "routing_decisions")
    assert end["counts"]["events"] == len(events)

    excluded = await owner.get(f"/api/v1/export?visitor_id={visitor_id}&internal=exclude")
    assert excluded.status == 200, excluded.body
    text = excluded.body.decode()
    for secret in ("customer is rude", "fraud risk", "angry", '"load"', '"candidates"'):
        assert secret not in text, secret
    header, *rows, end = _lines(excluded.body)
    assert header["internal"] == "excluded"
    kinds = [r["row"]["kind"] for r in rows if r["table"] == "events"]
    assert "note" not in kinds and "tagged" not in kinds and "message" in kinds
    assert not any(r["table"] == "routing_decisions" for r in rows)
    counted: dict[str, int] = {}
    for r in rows:
        counted[r["table"]] = counted.get(r["table"], 0) + 1
    assert end["counts"] == counted
    refused = await owner.get("/api/v1/export?internal=exclude")
    assert (refused.status, refused.error_code) == (400, "invalid_value")


async def test_export_needs_the_admin_or_export_scope(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)

    async def token(*scopes: str) -> Http:
        made = await owner.post("/api/v1/tokens", {"name": "t", "scopes": list(scopes)})
        assert made.status == 201, made.body
        return bearer(srv.base_url, made.json()["token"])

    reader = await token("read")
    assert (await reader.get("/api/v1/agents")).status == 200
    denied = await reader.get("/api/v1/export")
    assert (denied.status, denied.error_code) == (403, "scope_denied")
    assert (await reader.get("/api/v1/export?format=csv")).status == 403
    exporter = await token("export")
    assert (await exporter.get("/api/v1/export")).status == 200
    assert (await exporter.get("/api/v1/agents")).error_code == "scope_denied"


async def test_exports_and_searches_are_rate_limited_per_workspace(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, rate_exports_per_hour=2, rate_searches_per_min=3) as srv:
        acme = bearer(srv.base_url, srv.acme.owner.token)
        globex = bearer(srv.base_url, srv.globex.owner.token)
        assert (await acme.get("/api/v1/export")).status == 200
        assert (await acme.post("/api/v1/backups")).status == 201  # a backup counts too
        limited = await acme.get("/api/v1/export?format=csv")
        assert (limited.status, limited.error_code) == (429, "export_rate_limited")
        assert int(limited.headers["retry-after"]) > 0
        assert (await globex.get("/api/v1/export")).status == 200  # another workspace's quota
        for _ in range(3):
            assert (await acme.get("/api/v1/conversations/search?q=order")).status == 200
        limited = await acme.get("/api/v1/conversations/search?q=order")
        assert (limited.status, limited.error_code) == (429, "search_rate_limited")
        assert int(limited.headers["retry-after"]) > 0
        assert (await globex.get("/api/v1/conversations/search?q=order")).status == 200


async def test_at_most_n_exports_run_at_once(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, export_max_concurrent=1) as srv:
        assert srv.services is not None
        costly = srv.services.costly
        owner = bearer(srv.base_url, srv.acme.owner.token)
        running = costly.start_export(srv.globex.id)  # another workspace's export streaming
        busy = await owner.get("/api/v1/export")
        assert (busy.status, busy.error_code) == (429, "exports_busy")
        assert int(busy.headers["retry-after"]) > 0
        assert (await owner.post("/api/v1/backups")).error_code == "exports_busy"
        costly.finish_export(running)
        done = await owner.get("/api/v1/export")
        assert done.status == 200 and _lines(done.body)[-1]["end"] is True
        assert costly.exports_running == 0  # the streamed export gave its slot back
        assert (await owner.get("/api/v1/export?format=csv")).status == 200
        assert costly.exports_running == 0


async def test_a_demoted_supervisor_socket_is_closed_and_cannot_whisper(srv: TestServer) -> None:
    """The role reaches open sockets at once: the old socket ends with 4003, the new one has
    the new role, so a whisper is refused."""
    sup_account = srv.acme.supervisor
    assert sup_account is not None
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as vis:
        await visitor(srv, vis)
        sent = await vis.request("send_message", client_msg_id="m1", text="hello")
        conv_id = sent["result"]["conversation_id"]
    http = Http(srv.base_url)
    assert (await http.login(sup_account.username, sup_account.password)).status == 200
    owner = bearer(srv.base_url, srv.acme.owner.token)
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as sock:
        assert (await sock.request("auth", token=None))["type"] == "result"
        whisper = await sock.request(
            "whisper", conversation_id=conv_id, client_msg_id="w1", text="psst"
        )
        assert whisper["type"] == "result", whisper  # a supervisor may whisper
        demoted = await owner.request(
            "PATCH", f"/api/v1/agents/{sup_account.id}", {"role": "agent"}
        )
        assert demoted.status == 200, demoted.body
        assert await sock.closed(timeout=10) == 4003
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as sock:
        auth = await sock.request("auth", token=None)
        assert auth["result"]["role"] == "agent"
        refused = await sock.request(
            "whisper", conversation_id=conv_id, client_msg_id="w2", text="psst again"
        )
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused


async def test_reading_a_live_chat_you_are_not_in_needs_the_supervisor_role(
    srv: TestServer,
) -> None:
    alice, bob = srv.acme.agents[0], srv.acme.agents[1]
    sup_account = srv.acme.supervisor
    assert sup_account is not None and srv.services is not None
    http = Http(srv.base_url)
    assert (await http.login(alice.username, alice.password)).status == 200
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await agent.request("auth", token=None)
        await agent.request("set_status", status="accepting")
        await visitor(srv, vis)
        sent = await vis.request("send_message", client_msg_id="m1", text="secret stuff")
        conv_id = sent["result"]["conversation_id"]
        await agent.push("chat_assigned")
        path = f"/api/v1/conversations/{conv_id}/transcript"
        refused = await bearer(srv.base_url, bob.token).get(path)
        assert (refused.status, refused.error_code) == (403, "forbidden")
        assert (await bearer(srv.base_url, alice.token).get(path)).status == 200  # her own
        owner = bearer(srv.base_url, srv.acme.owner.token)
        audit = (await owner.get("/api/v1/audit")).json()["entries"]
        assert not [e for e in audit if e["action"] == "conversation.supervised"]
        read = await bearer(srv.base_url, sup_account.token).get(path)
        assert read.status == 200
        audit = (await owner.get("/api/v1/audit")).json()["entries"]
        supervised = [e for e in audit if e["action"] == "conversation.supervised"]
        assert [(e["target"], e["details"]) for e in supervised] == [
            (f"conversation:{conv_id}", {"how": "transcript"})
        ]
        assert supervised[0]["actor"].startswith("token:")


async def test_session_cookie_has_the_host_prefix_when_served_over_tls(tmp_path: Path) -> None:
    """Behind TLS (an https public URL) the cookie is ``__Host-lc_session``: Secure, Path=/, no
    Domain; the unprefixed name is not accepted then."""
    async with run_test_server(tmp_path, public_url="https://chat.example") as srv:
        assert srv.services is not None
        settings = srv.services.settings
        http = Http(f"http://{settings.server.host}:{settings.server.port}")
        account = srv.acme.agents[0]
        login = await http.login(account.username, account.password)
        assert login.status == 200, login.body
        set_cookie = login.headers["set-cookie"]
        assert set_cookie.startswith("__Host-lc_session="), set_cookie
        attributes = [a.strip().lower() for a in set_cookie.split(";")[1:]]
        assert "secure" in attributes and "path=/" in attributes and "httponly" in attributes
        assert not any(a.startswith("domain") for a in attributes)
        value = set_cookie.split(";", 1)[0].split("=", 1)[1]
        me = await http.get("/api/v1/me", headers={"Cookie": f"__Host-lc_session={value}"})
        assert me.status == 200, me.body
        plain = await http.get("/api/v1/me", headers={"Cookie": f"lc_session={value}"})
        assert (plain.status, plain.error_code) == (401, "unauthenticated")
        ws_url = f"ws://{settings.server.host}:{settings.server.port}/ws/v1/agent"
        async with open_websocket_url(
            ws_url, extra_headers=[(b"Cookie", f"__Host-lc_session={value}".encode())]
        ) as ws:
            await ws.send_message(json.dumps({"type": "auth", "id": "1", "token": None}))
            with trio.fail_after(10):
                reply = json.loads(await ws.get_message())
            assert reply["type"] == "result", reply
        out = await http.post(
            "/api/v1/auth/logout",
            headers={
                "Cookie": f"__Host-lc_session={value}",
                "X-CSRF-Token": login.json()["csrf_token"],
            },
        )
        assert out.status == 200, out.body
        cleared = out.headers["set-cookie"]
        assert cleared.startswith("__Host-lc_session=") and "secure" in cleared.lower()
