"""The admin API over real HTTP: bodies validated into precise 400s, resources round-trip,
conversations read and acted on, export and backup, the public widget configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import TestServer


@pytest.mark.parametrize(
    ("raw", "status", "code", "field"),
    [
        (b"{nope", 400, "invalid_json", "$"),
        (b"[1]", 400, "wrong_type", "$"),
        (b'{"display_name": "X"}', 400, "missing_field", "$.username"),
        (
            b'{"username": "xavier", "display_name": "X", "max_chats": "5"}',
            400,
            "wrong_type",
            "$.max_chats",
        ),
        (
            b'{"username": "xavier", "display_name": "X", "max_chats": 500}',
            400,
            "invalid_value",
            "$.max_chats",
        ),
        (
            b'{"username": "xavier", "display_name": "X", "role": "boss"}',
            400,
            "invalid_value",
            "$.role",
        ),
        (b'{"username": "x y", "display_name": "X"}', 400, "invalid_value", "$.username"),
        (
            b'{"username": "xavier", "display_name": "X", "colour": 1}',
            400,
            "unknown_field",
            "$.colour",
        ),
        (
            b'{"username": "xavier", "display_name": "X", "group_ids": ["nope"]}',
            400,
            "invalid_value",
            "$.group_ids[0]",
        ),
        (
            b'{"username": "xavier", "display_name": "X", "group_ids": [7]}',
            400,
            "wrong_type",
            "$.group_ids[0]",
        ),
    ],
)
async def test_invalid_bodies_get_a_code_and_the_field(
    srv: TestServer, raw: bytes, status: int, code: str, field: str
) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    resp = await owner.request("POST", "/api/v1/agents", raw=raw)
    assert resp.status == status, resp.body
    error = resp.json()["error"]
    assert (error["code"], error.get("field")) == (code, field)


async def test_agent_lifecycle_create_login_role_disable_reset(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    group = (await owner.post("/api/v1/groups", {"name": "Billing"})).json()
    created = await owner.post(
        "/api/v1/agents",
        {"username": "Carol", "display_name": "Carol", "group_ids": [group["id"]]},
    )
    assert created.status == 201
    body = created.json()
    assert body["agent"]["username"] == "carol" and body["agent"]["group_ids"] == [group["id"]]
    assert "password_hash" not in json.dumps(body)
    carol = Http(srv.base_url)
    assert (await carol.login("carol", body["password"])).status == 200
    agent_id = body["agent"]["id"]
    taken = await owner.post("/api/v1/agents", {"username": "carol", "display_name": "C2"})
    assert (taken.status, taken.error_code) == (409, "username_taken")

    promoted = await owner.request("PATCH", f"/api/v1/agents/{agent_id}", {"role": "supervisor"})
    assert promoted.json()["role"] == "supervisor"
    async with open_peer(srv.agent_ws_url, cookie=carol.cookie) as sock:
        assert (await sock.request("auth", token=None))["type"] == "result"
        disabled = await owner.request("PATCH", f"/api/v1/agents/{agent_id}", {"enabled": False})
        assert disabled.json()["enabled"] is False
        assert await sock.closed(timeout=5) == 1008
    assert (await Http(srv.base_url).login("carol", body["password"])).status == 401
    await owner.request("PATCH", f"/api/v1/agents/{agent_id}", {"enabled": True})
    reset = await owner.post(f"/api/v1/agents/{agent_id}/reset-password")
    new_password = reset.json()["password"]
    assert (await Http(srv.base_url).login("carol", new_password)).status == 200
    actions = [e["action"] for e in (await owner.get("/api/v1/audit")).json()["entries"]]
    for expected in (
        "agent.created",
        "agent.role_changed",
        "agent.disabled",
        "agent.password_reset",
    ):
        assert expected in actions


async def test_settings_tags_canned_groups_round_trip(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    widget = (await admin.get("/api/v1/settings/widget")).json()
    widget.update(
        color="#112233",
        greeting="Hello there",
        sneak_peek=True,
        pre_chat_enabled=True,
        pre_chat_fields=[{"name": "email", "label": "Email", "kind": "email", "required": True}],
        allowed_origins=["https://shop.example", srv.acme.site_origin],
    )
    put = await admin.request("PUT", "/api/v1/settings/widget", widget)
    assert put.status == 200, put.body
    assert (await admin.get("/api/v1/settings/widget")).json() == widget
    bad = await admin.request(
        "PUT", "/api/v1/settings/widget", {**widget, "allowed_origins": ["https://a/b"]}
    )
    assert (bad.status, bad.json()["error"]["field"]) == (400, "$.allowed_origins[0]")

    routing = await admin.request("PUT", "/api/v1/settings/routing", {"mode": "manual"})
    assert routing.json()["mode"] == "manual"
    tags = await admin.request("PUT", "/api/v1/tags", {"tags": ["vip", "bug", "vip"]})
    assert tags.json() == {"tags": ["bug", "vip"]}
    canned = await admin.post("/api/v1/canned-responses", {"shortcut": "hi", "text": "Hi!"})
    canned_id = canned.json()["id"]
    edited = await admin.request(
        "PATCH", f"/api/v1/canned-responses/{canned_id}", {"text": "Hello!"}
    )
    assert edited.json()["text"] == "Hello!"
    assert (await admin.request("DELETE", f"/api/v1/canned-responses/{canned_id}")).status == 200
    assert (await admin.get("/api/v1/canned-responses")).json() == {"canned_responses": []}
    secret = (await admin.get("/api/v1/settings/identity-secret")).json()
    assert secret["identity_secret"] == srv.acme.identity_secret


async def test_widget_config_is_public_with_cors_for_allowed_origins_only(
    srv: TestServer,
) -> None:
    anon = Http(srv.base_url)
    path = f"/api/v1/widget/config?key={srv.acme.widget_key}"
    ok = await anon.get(path, headers={"Origin": srv.acme.site_origin})
    assert ok.status == 200
    assert ok.headers["access-control-allow-origin"] == srv.acme.site_origin
    config = ok.json()
    assert config["workspace_name"] == "Acme" and config["online"] is False
    assert "identity_secret" not in json.dumps(config)
    foreign = await anon.get(path, headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in foreign.headers
    assert (await anon.get("/api/v1/widget/config?key=nope")).status == 404
    assert (await anon.get("/api/v1/widget/config")).error_code == "missing_field"


async def test_conversations_list_filter_page_search_transcript_and_act(srv: TestServer) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    conv_ids = []
    for i in range(3):
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer)
            ack = await peer.request("send_message", client_msg_id="m", text=f"parcel {i} lost")
            conv_ids.append(ack["result"]["conversation_id"])
    sup = bearer(srv.base_url, srv.acme.owner.token)
    page1 = (await sup.get("/api/v1/conversations?limit=2")).json()
    assert len(page1["conversations"]) == 2 and page1["next_cursor"]
    page2 = (await sup.get(f"/api/v1/conversations?limit=2&cursor={page1['next_cursor']}")).json()
    seen = [c["id"] for c in page1["conversations"] + page2["conversations"]]
    assert sorted(seen) == sorted(conv_ids)
    queued = (await sup.get("/api/v1/conversations?state=queued")).json()["conversations"]
    assert {c["id"] for c in queued} == set(conv_ids)
    assert (await sup.get("/api/v1/conversations?state=nope")).status == 400
    assert (await sup.get("/api/v1/conversations?cursor=garbage")).error_code == "invalid_value"

    hits = (await sup.get("/api/v1/conversations/search?q=parcel")).json()["hits"]
    assert {h["conversation_id"] for h in hits} == set(conv_ids)
    transcript = (await sup.get(f"/api/v1/conversations/{conv_ids[0]}/transcript")).json()
    assert [e["body"] for e in transcript["events"] if e["kind"] == "message"] == ["parcel 0 lost"]
    tagged = await sup.post(f"/api/v1/conversations/{conv_ids[0]}/tags", {"add": ["vip"]})
    assert tagged.status == 200, tagged.body
    assert tagged.json()["tags"] == ["vip"]
    closed = await sup.post(f"/api/v1/conversations/{conv_ids[0]}/close", {"tags": []})
    assert closed.status == 200, closed.body
    assert closed.json()["state"] == "closed"
    # Acting over HTTP does not make the owner an online agent who could be routed chats.
    assert srv.services is not None
    assert not srv.services.engine.hub.agent_online(srv.acme.id, srv.acme.owner.id)
    again = await sup.post(f"/api/v1/conversations/{conv_ids[0]}/close", {})
    assert again.status in (200, 409)
    profile = await sup.get(f"/api/v1/visitors/{transcript['conversation']['visitor_id']}")
    assert profile.json()["page_views"][0]["url"] == "http://site.test/pricing"
    report = (await sup.get("/api/v1/reports")).json()
    assert report["total_chats"] >= 3
    decisions = await sup.get(f"/api/v1/routing-decisions?conversation_id={conv_ids[0]}")
    assert decisions.status == 200


async def test_live_visitor_list_shows_connected_visitors(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        hello = await visitor(srv, peer)
        live = await bearer(srv.base_url, srv.acme.agents[0].token).get("/api/v1/visitors/live")
        assert hello["visitor_id"] in [v["visitor_id"] for v in live.json()["visitors"]]
        other = bearer(srv.base_url, srv.globex.owner.token)
        empty = {"visitors": [], "partial": False, "nodes_missing": []}  # one process: all
        assert (await other.get("/api/v1/visitors/live")).json() == empty


async def test_export_streams_jsonl_and_csv_and_is_audited(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        await peer.request("send_message", client_msg_id="m", text="=cmd|' /C calc'!A0")
    owner = bearer(srv.base_url, srv.acme.owner.token)
    jsonl = await owner.get("/api/v1/export")
    assert jsonl.status == 200
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in jsonl.headers["content-disposition"]
    rows = [json.loads(line) for line in jsonl.body.decode().splitlines() if line.strip()]
    header, *data, end = rows
    assert header["format"] == "livechat-export" and end["end"] is True
    assert data and all("table" in r for r in data)
    # A download carries no credentials, not even hashed.
    assert not {"sessions", "secrets"} & {r["table"] for r in data}
    for r in data:
        for column in ("password_hash", "token_hash", "identity_secret", "csrf_token"):
            assert r["row"].get(column) is None
    assert srv.acme.identity_secret not in jsonl.body.decode()
    csv = await owner.get("/api/v1/export?format=csv")
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    backup = await owner.post("/api/v1/backups")
    assert backup.status == 201 and backup.json()["rows"] >= len(rows) - 5
    actions = [e["action"] for e in (await owner.get("/api/v1/audit")).json()["entries"]]
    assert actions.count("export.workspace") == 2 and "backup.created" in actions


async def test_operator_creates_suspends_and_resumes_a_workspace(srv: TestServer) -> None:
    operator = bearer(srv.base_url, srv.acme.owner.token)
    created = await operator.post(
        "/api/v1/workspaces",
        {
            "name": "Initech",
            "owner_username": "initech-owner",
            "owner_display_name": "Bill",
            "allowed_origins": ["https://initech.example"],
        },
    )
    assert created.status == 201, created.body
    data = created.json()
    ws_id = data["workspace"]["id"]
    bill = Http(srv.base_url)
    assert (await bill.login("initech-owner", data["owner_password"])).status == 200
    async with open_peer(srv.agent_ws_url, cookie=bill.cookie) as sock:
        assert (await sock.request("auth", token=None))["type"] == "result"
        suspended = await operator.post(f"/api/v1/workspaces/{ws_id}/suspend")
        assert suspended.json()["status"] == "suspended"
        assert await sock.closed(timeout=5) == 1008
    assert (await bill.get("/api/v1/me")).error_code == "workspace_suspended"
    assert (await Http(srv.base_url).login("initech-owner", data["owner_password"])).status == 403
    assert (await operator.post(f"/api/v1/workspaces/{srv.acme.id}/suspend")).status == 409
    resumed = await operator.post(f"/api/v1/workspaces/{ws_id}/resume")
    assert resumed.json()["status"] == "active"
    limits = await operator.request("PUT", f"/api/v1/workspaces/{ws_id}/limits", {"agent_seats": 2})
    assert limits.json()["agent_seats"] == 2
    terminated = await operator.post(f"/api/v1/workspaces/{ws_id}/terminate", {"grace_days": 7})
    assert terminated.json()["status"] == "terminated"
    assert terminated.json()["terminated_at"] is not None


async def test_ops_endpoints_health_ready_metrics_openapi_docs(srv: TestServer) -> None:
    anon = Http(srv.base_url)
    assert (await anon.get("/healthz")).json() == {"status": "ok"}
    ready = (await anon.get("/readyz")).json()
    assert ready["status"] == "ready"
    await anon.get("/api/v1/me")
    metrics = (await anon.get("/metrics")).body.decode()
    assert 'livechat_http_requests_total{method="GET",status="401"}' in metrics
    assert "livechat_routing_latency_seconds_bucket" in metrics
    assert "livechat_ws_connections" in metrics
    doc = (await anon.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert srv.services is not None
    # Every /api/v1 route the app serves is in the document.
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    docs_page = (await anon.get("/api/docs")).body.decode()
    for _method, path in documented:
        assert path in docs_page
    assert len(documented) >= 50
    assert (await anon.get("/api/v1/nope")).error_code == "not_found"


async def test_every_served_api_route_is_documented(srv: TestServer) -> None:
    from web.app import create_app

    assert srv.services is not None
    app = create_app(srv.services.settings, srv.services)
    doc: dict[str, Any] = app.config["LIVECHAT_OPENAPI"]
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.websocket:
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            assert (method, path) in documented, (method, path)


async def test_sessions_expire_when_idle(srv: TestServer) -> None:
    import attrs

    assert srv.services is not None
    http = Http(srv.base_url)
    await http.login("bob", srv.acme.agents[1].password)
    assert (await http.get("/api/v1/me")).status == 200
    # Idle for longer than the timeout without sleeping: the next request comes more than a
    # microsecond after the last one.
    settings = srv.services.settings
    accounts = attrs.evolve(settings.accounts, session_idle_timeout_s=1e-6)
    srv.services.settings = attrs.evolve(settings, accounts=accounts)
    resp = await http.get("/api/v1/me")
    assert (resp.status, resp.error_code) == (401, "session_expired")


async def test_a_keep_alive_connection_survives_404_and_405_with_unread_bodies(
    srv: TestServer,
) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(srv.base_url)

    def run() -> list[int]:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
        statuses = []
        for method, path, body in (
            ("PUT", "/api/v1/auth/login", b'{"username": "x", "password": "y"}'),
            ("GET", "/healthz", None),
            ("POST", "/api/v1/nope", b'{"a": 1}'),
            ("GET", "/healthz", None),
        ):
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        conn.close()
        return statuses

    assert await trio.to_thread.run_sync(run) == [405, 200, 404, 200]
