"""Security: isolation between visitors and workspaces, origins, login throttling, sessions,
CSRF, logout closing sockets, and user text returned as data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from trio_websocket import ConnectionRejected

from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.server import TestServer, run_test_server
from web.ratelimit import LoginThrottle


async def start_conversation(srv: TestServer, widget_key: str, origin: str, text: str) -> str:
    async with open_peer(srv.visitor_ws_url(widget_key), origin=origin) as peer:
        await visitor(srv, peer)
        ack = await peer.request("send_message", client_msg_id="c1", text=text)
        assert ack["type"] == "result", ack
        return str(ack["result"]["conversation_id"])


# ---------------------------------------------------------------- visitors


async def test_a_visitor_token_opens_only_its_own_conversations(srv: TestServer) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    victim_conv = await start_conversation(
        srv, srv.acme.widget_key, srv.acme.site_origin, "my secret"
    )
    async with open_peer(url, origin=srv.acme.site_origin) as attacker:
        await visitor(srv, attacker)
        for conversation_id in (victim_conv, "AAAAAAAAAAAAAAAA", victim_conv[:-1] + "x"):
            attempts: list[tuple[str, dict[str, Any]]] = [
                ("get_history", {"conversation_id": conversation_id}),
                (
                    "send_message",
                    {"conversation_id": conversation_id, "client_msg_id": "x", "text": "hi"},
                ),
                ("rate", {"conversation_id": conversation_id, "rating": 1}),
                ("end_chat", {"conversation_id": conversation_id}),
            ]
            for kind, fields in attempts:
                reply = await attacker.request(kind, **fields)
                assert reply["type"] == "error", (kind, reply)
                assert reply["code"] == "not_found", (kind, reply)
            # Typing is fire-and-forget: the same "ok" for any id (no oracle), never delivered.
            typing = await attacker.request(
                "typing", conversation_id=conversation_id, is_typing=True, draft="peek"
            )
            assert typing["type"] == "result"
        # Nothing of the victim's conversation ever reached the attacker.
        assert "my secret" not in json.dumps(attacker.frames)


async def test_made_up_or_empty_tokens_get_a_fresh_visitor_not_someone_elses(
    srv: TestServer,
) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as first:
        hello = await visitor(srv, first)
    for token in ("", "lcv_made_up", hello["visitor_token"][:-2] + "zz"):
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            other = await visitor(srv, peer, token=token or None)
            assert other["visitor_id"] != hello["visitor_id"]
            assert other["visitor_token"] != token
    # A token from another workspace is unknown here too.
    async with open_peer(
        srv.visitor_ws_url(srv.globex.widget_key), origin=srv.globex.site_origin
    ) as peer:
        other = await visitor(srv, peer, token=hello["visitor_token"])
        assert other["visitor_id"] != hello["visitor_id"]


async def test_resume_cannot_replay_another_visitors_conversation(srv: TestServer) -> None:
    victim_conv = await start_conversation(
        srv, srv.acme.widget_key, srv.acme.site_origin, "private words"
    )
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as attacker:
        await visitor(srv, attacker, resume={victim_conv: 0})
        # A replay would be queued at connect, before the echo of a message sent now: once
        # that echo is here, anything replayed has arrived too (no waiting to see).
        sent = await attacker.request("send_message", client_msg_id="mine", text="my own")
        assert sent["type"] == "result", sent
        await attacker.push("event", id=sent["id"])
        assert "private words" not in json.dumps(attacker.frames)


async def test_signed_identity_must_verify(srv: TestServer) -> None:
    import hashlib
    import hmac

    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as peer:
        bad = await peer.request(
            "hello", identity={"user_id": "42", "signature": "00" * 32}, resume={}
        )
        assert (bad["code"], bad["field"]) == ("invalid_identity", "identity.signature")
        good_sig = hmac.new(srv.acme.identity_secret.encode(), b"42", hashlib.sha256).hexdigest()
        ok = await peer.request("hello", identity={"user_id": "42", "signature": good_sig})
        first_id = ok["result"]["visitor_id"]
    async with open_peer(url, origin=srv.acme.site_origin) as device2:
        again = await device2.request("hello", identity={"user_id": "42", "signature": good_sig})
        assert again["result"]["visitor_id"] == first_id  # history follows the user


# ---------------------------------------------------------------- origins


@pytest.mark.parametrize(
    "origin", ["http://evil.test", "http://site.test.evil.test", "null", "https://site.test"]
)
async def test_visitor_upgrade_from_a_foreign_origin_is_refused(
    srv: TestServer, origin: str
) -> None:
    with pytest.raises(ConnectionRejected) as refused:
        async with open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=origin):
            pass
    assert refused.value.status_code == 403


async def test_another_workspaces_site_cannot_embed_this_widget(srv: TestServer) -> None:
    with pytest.raises(ConnectionRejected) as refused:
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.globex.site_origin
        ):
            pass
    assert refused.value.status_code == 403


async def test_agent_upgrade_from_a_foreign_origin_is_refused(srv: TestServer) -> None:
    http = Http(srv.base_url)
    await http.login(srv.acme.agents[0].username, srv.acme.agents[0].password)
    with pytest.raises(ConnectionRejected) as refused:
        async with open_peer(srv.agent_ws_url, origin="http://evil.test", cookie=http.cookie):
            pass
    assert refused.value.status_code == 403


async def test_unknown_widget_key_is_refused(srv: TestServer) -> None:
    with pytest.raises(ConnectionRejected) as refused:
        async with open_peer(srv.visitor_ws_url("nope"), origin=srv.acme.site_origin):
            pass
    assert refused.value.status_code == 404


# ---------------------------------------------------------------- workspaces


async def test_workspace_a_gets_404_from_every_read_path_of_workspace_b(srv: TestServer) -> None:
    # Workspace B (Globex) has a conversation, a visitor, a group, a canned response, a ban.
    b_conv = await start_conversation(
        srv, srv.globex.widget_key, srv.globex.site_origin, "globex confidential"
    )
    b = bearer(srv.base_url, srv.globex.owner.token)
    b_conv_row = (await b.get(f"/api/v1/conversations/{b_conv}")).json()
    b_visitor = b_conv_row["visitor_id"]
    b_group = (await b.post("/api/v1/groups", {"name": "Sales"})).json()["id"]
    b_canned = (
        await b.post("/api/v1/canned-responses", {"shortcut": "hi", "text": "Hello"})
    ).json()["id"]
    b_ban = (await b.post(f"/api/v1/visitors/{b_visitor}/ban", {})).json()["bans"][0]["id"]
    b_token = (await b.get("/api/v1/tokens")).json()["tokens"][0]["id"]
    b_agent = srv.globex.agents[0].id

    assert srv.acme.supervisor is not None
    for a in (
        bearer(srv.base_url, srv.acme.supervisor.token),
        bearer(srv.base_url, srv.acme.owner.token),
    ):
        not_found = [
            ("GET", f"/api/v1/conversations/{b_conv}"),
            ("GET", f"/api/v1/conversations/{b_conv}/transcript"),
            ("POST", f"/api/v1/conversations/{b_conv}/close"),
            ("POST", f"/api/v1/conversations/{b_conv}/tags"),
            ("POST", f"/api/v1/conversations/{b_conv}/transfer"),
            ("GET", f"/api/v1/visitors/{b_visitor}"),
            ("POST", f"/api/v1/visitors/{b_visitor}/ban"),
            ("DELETE", f"/api/v1/visitors/{b_visitor}"),
            ("GET", f"/api/v1/agents/{b_agent}"),
            ("PATCH", f"/api/v1/agents/{b_agent}"),
            ("POST", f"/api/v1/agents/{b_agent}/reset-password"),
            ("PATCH", f"/api/v1/groups/{b_group}"),
            ("DELETE", f"/api/v1/groups/{b_group}"),
            ("PATCH", f"/api/v1/canned-responses/{b_canned}"),
            ("DELETE", f"/api/v1/canned-responses/{b_canned}"),
            ("DELETE", f"/api/v1/bans/{b_ban}"),
            ("DELETE", f"/api/v1/tokens/{b_token}"),
            ("GET", f"/api/v1/export?visitor_id={b_visitor}"),
        ]
        is_owner = a.bearer == srv.acme.owner.token
        for method, path in not_found:
            body: Any = None
            if method in ("POST", "PATCH"):
                body = {"agent_id": srv.acme.agents[0].id} if path.endswith("transfer") else {}
            resp = await a.request(method, path, body)
            # Exactly what a made-up id gets: no oracle for "exists elsewhere".
            made_up = path
            for real in (b_conv, b_visitor, b_agent, b_group, b_canned, b_ban, b_token):
                made_up = made_up.replace(real, "madeUpId0000000")
            twin = await a.request(method, made_up, body)
            assert (resp.status, resp.error_code) == (twin.status, twin.error_code), path
            if is_owner:
                assert resp.status == 404, (method, path, resp.status, resp.body)
                assert resp.error_code == "not_found"
            else:  # the supervisor: 404, or 403 for an operation its role may not use at all
                assert resp.status in (403, 404), (method, path, resp.status)
        # Lists and searches simply do not contain B's data.
        for path in (
            "/api/v1/conversations",
            f"/api/v1/conversations?visitor_id={b_visitor}",
            "/api/v1/conversations/search?q=confidential",
            "/api/v1/groups",
            "/api/v1/canned-responses",
            "/api/v1/agents",
            "/api/v1/bans",
            f"/api/v1/routing-decisions?conversation_id={b_conv}",
            "/api/v1/audit",
            "/api/v1/export",
            "/api/v1/export?format=csv",
        ):
            resp = await a.get(path)
            assert resp.status in (200, 403), (path, resp.status)
            for secret in (b_conv, b_visitor, b_group, b_canned, "globex confidential", b_agent):
                assert secret.encode() not in resp.body, (path, secret)

    # Over the WebSocket, workspace A's agent cannot watch or read B's conversation either.
    async with open_peer(srv.agent_ws_url) as agent:
        auth = await agent.request("auth", token=srv.acme.agents[0].token)
        assert auth["type"] == "result"
        for kind, fields in (
            ("watch", {"conversation_id": b_conv}),
            ("get_history", {"conversation_id": b_conv}),
            ("accept", {"conversation_id": b_conv}),
            ("join", {"conversation_id": b_conv}),
            ("send_message", {"conversation_id": b_conv, "client_msg_id": "x", "text": "hi"}),
            ("routing_log", {"conversation_id": b_conv}),
            ("start_chat", {"visitor_id": b_visitor, "client_msg_id": "y", "text": "hi"}),
        ):
            reply = await agent.request(kind, **fields)
            assert (reply["type"], reply.get("code")) == ("error", "not_found"), (kind, reply)
        assert "globex confidential" not in json.dumps(agent.frames)


async def test_non_operators_cannot_see_or_manage_other_workspaces(srv: TestServer) -> None:
    globex_owner = bearer(srv.base_url, srv.globex.owner.token)
    listed = (await globex_owner.get("/api/v1/workspaces")).json()["workspaces"]
    assert [w["id"] for w in listed] == [srv.globex.id]
    assert (await globex_owner.get(f"/api/v1/workspaces/{srv.acme.id}")).status == 404
    resp = await globex_owner.post(f"/api/v1/workspaces/{srv.acme.id}/suspend")
    assert resp.status == 403  # operator-only operation: role check before any lookup
    resp = await globex_owner.post(
        "/api/v1/workspaces",
        {"name": "X", "owner_username": "xowner", "owner_display_name": "X"},
    )
    assert resp.status == 403


# ---------------------------------------------------------------- accounts


async def test_login_is_throttled_per_account_with_retry_after(srv: TestServer) -> None:
    # The backoff (1 s after 3 failures) runs on a clock this test controls, so a request that
    # is slow on a loaded CI machine cannot outlive it and turn an expected 429 into a 200.
    assert srv.services is not None
    settings = srv.services.settings
    now = [1000.0]
    srv.services.login_throttle = LoginThrottle(
        free_failures=settings.accounts.login_failures_per_account_backoff_after,
        max_backoff_s=settings.accounts.login_backoff_max_s,
        ip_failures=settings.accounts.login_failures_per_ip_per_15min,
        clock=lambda: now[0],
    )
    http = Http(srv.base_url)
    alice = srv.acme.agents[0]
    for _ in range(3):
        resp = await http.login(alice.username, "wrong password!")
        assert resp.status == 401 and resp.error_code == "bad_credentials"
    throttled = await http.login(alice.username, "wrong password!")
    assert throttled.status == 429
    assert throttled.error_code == "login_throttled"
    retry_after = int(throttled.headers["retry-after"])
    assert retry_after >= 1
    # Even the right password waits out the backoff (no oracle), but nothing is locked for good.
    assert (await http.login(alice.username, alice.password)).status == 429
    now[0] += retry_after - 0.01
    assert (await http.login(alice.username, alice.password)).status == 429
    now[0] += 0.02
    assert (await http.login(alice.username, alice.password)).status == 200
    # Unknown users answer exactly like wrong passwords.
    unknown = await Http(srv.base_url).login("nobody-here", "whatever123")
    assert (unknown.status, unknown.error_code) == (401, "bad_credentials")


async def test_login_is_throttled_per_ip(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, login_failures_per_ip_per_15min=5) as srv:
        http = Http(srv.base_url)
        for i in range(5):
            assert (await http.login(f"user{i}", "wrong password!")).status == 401
        resp = await http.login("someone-else", "wrong password!")
        assert resp.status == 429 and "retry-after" in resp.headers


async def test_failed_and_successful_logins_are_audited(srv: TestServer) -> None:
    http = Http(srv.base_url)
    await http.login("bob", "not his password")
    await http.login("bob", srv.acme.agents[1].password)
    audit = (await bearer(srv.base_url, srv.acme.owner.token).get("/api/v1/audit")).json()
    actions = [e["action"] for e in audit["entries"]]
    assert "login.failed" in actions and "login.success" in actions
    assert "not his password" not in json.dumps(audit)


async def test_login_mints_a_new_session_id_and_kills_a_planted_one(srv: TestServer) -> None:
    alice, bob = srv.acme.agents
    attacker = Http(srv.base_url)
    await attacker.login(bob.username, bob.password)
    planted = attacker.cookie
    victim = Http(srv.base_url)
    victim.cookie = planted  # the attacker fixed the victim's cookie
    resp = await victim.login(alice.username, alice.password)
    assert resp.status == 200
    assert victim.cookie and victim.cookie != planted
    cookie_line = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie_line and "SameSite=Lax" in cookie_line and "Path=/" in cookie_line
    me = (await victim.get("/api/v1/me")).json()
    assert me["agent"]["username"] == "alice"
    # The planted session no longer works at all.
    assert (await attacker.get("/api/v1/me")).status == 401


async def test_cookie_state_changes_need_the_csrf_header(srv: TestServer) -> None:
    http = Http(srv.base_url)
    await http.login(srv.acme.owner.username, srv.acme.owner.password)
    body = {"name": "Support"}
    missing = await http.request("POST", "/api/v1/groups", body, csrf=False)
    assert (missing.status, missing.error_code) == (403, "csrf_failed")
    wrong = await http.request(
        "POST", "/api/v1/groups", body, csrf=False, headers={"X-CSRF-Token": "guess"}
    )
    assert (wrong.status, wrong.error_code) == (403, "csrf_failed")
    ok = await http.request("POST", "/api/v1/groups", body)
    assert ok.status == 201
    # Bearer tokens are not sent by browsers on their own: no CSRF header needed.
    assert (
        await bearer(srv.base_url, srv.acme.owner.token).post("/api/v1/groups", body)
    ).status == 201


async def test_logout_closes_the_sessions_live_sockets(srv: TestServer) -> None:
    http = Http(srv.base_url)
    alice = srv.acme.agents[0]
    await http.login(alice.username, alice.password)
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
        assert (await agent.request("auth", token=None))["type"] == "result"
        assert (await http.post("/api/v1/auth/logout")).status == 200
        assert await agent.closed(timeout=5) == 1008
    assert (await http.get("/api/v1/me")).status == 401


async def test_password_change_closes_the_accounts_other_sockets(srv: TestServer) -> None:
    bob = srv.acme.agents[1]
    laptop, phone = Http(srv.base_url), Http(srv.base_url)
    await laptop.login(bob.username, bob.password)
    await phone.login(bob.username, bob.password)
    async with (
        open_peer(srv.agent_ws_url, cookie=laptop.cookie) as here,
        open_peer(srv.agent_ws_url, cookie=phone.cookie) as there,
    ):
        assert (await here.request("auth", token=None))["type"] == "result"
        assert (await there.request("auth", token=None))["type"] == "result"
        resp = await laptop.post(
            "/api/v1/auth/password",
            {"current_password": bob.password, "new_password": "a brand new passphrase"},
        )
        assert resp.status == 200, resp.body
        assert await there.closed(timeout=5) == 1008
        # This session's socket stays.
        assert (await here.request("list_my_chats"))["type"] == "result"
    assert (await phone.get("/api/v1/me")).status == 401
    assert (await laptop.get("/api/v1/me")).status == 200


async def test_wrong_current_password_does_not_change_it(srv: TestServer) -> None:
    http = Http(srv.base_url)
    bob = srv.acme.agents[1]
    await http.login(bob.username, bob.password)
    resp = await http.post(
        "/api/v1/auth/password",
        {"current_password": "not it at all", "new_password": "another passphrase"},
    )
    assert resp.status == 403
    assert (await Http(srv.base_url).login(bob.username, bob.password)).status == 200


async def test_agents_cannot_use_admin_endpoints(srv: TestServer) -> None:
    alice = bearer(srv.base_url, srv.acme.agents[0].token)
    for method, path, body in (
        ("POST", "/api/v1/agents", {"username": "eve", "display_name": "Eve"}),
        ("GET", "/api/v1/audit", None),
        ("GET", "/api/v1/export", None),
        ("POST", "/api/v1/tokens", {"name": "t"}),
        ("PUT", "/api/v1/settings/widget", {}),
    ):
        resp = await alice.request(method, path, body)
        assert (resp.status, resp.error_code) == (403, "forbidden"), (path, resp.body)


async def test_admins_cannot_promote_anyone_to_owner(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    created = await owner.post(
        "/api/v1/agents", {"username": "ada", "display_name": "Ada", "role": "admin"}
    )
    assert created.status == 201
    ada = Http(srv.base_url)
    await ada.login("ada", created.json()["password"])
    resp = await ada.request("PATCH", f"/api/v1/agents/{srv.acme.agents[0].id}", {"role": "owner"})
    assert resp.status == 403
    audit = (await owner.get("/api/v1/audit")).json()
    assert "agent.created" in [e["action"] for e in audit["entries"]]


async def test_revoked_token_stops_working_and_its_socket_closes(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    created = (await owner.post("/api/v1/tokens", {"name": "ci", "scopes": ["admin"]})).json()
    token = created["token"]
    assert (await bearer(srv.base_url, token).get("/api/v1/me")).status == 200
    async with open_peer(srv.agent_ws_url) as sock:
        assert (await sock.request("auth", token=token))["type"] == "result"
        assert (
            await owner.request("DELETE", f"/api/v1/tokens/{created['info']['id']}")
        ).status == 200
        assert await sock.closed(timeout=5) == 1008
    assert (await bearer(srv.base_url, token).get("/api/v1/me")).status == 401
    audit = (await owner.get("/api/v1/audit")).json()
    actions = [e["action"] for e in audit["entries"]]
    assert "token.created" in actions and "token.revoked" in actions
    assert token not in json.dumps(audit)


async def test_read_scope_tokens_cannot_change_anything(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    token = (await owner.post("/api/v1/tokens", {"name": "ro", "scopes": ["read"]})).json()["token"]
    ro = bearer(srv.base_url, token)
    assert (await ro.get("/api/v1/agents")).status == 200
    resp = await ro.post("/api/v1/groups", {"name": "G"})
    assert (resp.status, resp.error_code) == (403, "scope_denied")


async def test_banning_a_visitor_closes_its_socket_and_refuses_it_later(srv: TestServer) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    sup = bearer(srv.base_url, srv.acme.supervisor.token)  # type: ignore[union-attr]
    async with open_peer(url, origin=srv.acme.site_origin) as peer:
        hello = await visitor(srv, peer)
        resp = await sup.post(f"/api/v1/visitors/{hello['visitor_id']}/ban", {"reason": "spam"})
        assert resp.status == 201
        assert await peer.closed(timeout=5) == 1008
    async with open_peer(url, origin=srv.acme.site_origin) as again:
        await again.send_raw(
            json.dumps({"type": "hello", "id": "1", "token": hello["visitor_token"]})
        )
        assert await again.closed(timeout=5) == 1008
    audit = (await bearer(srv.base_url, srv.acme.owner.token).get("/api/v1/audit")).json()
    assert "visitor.banned" in [e["action"] for e in audit["entries"]]


# ---------------------------------------------------------------- data, not markup


async def test_message_text_and_visitor_names_come_back_as_data(srv: TestServer) -> None:
    markup = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    name = "<b>Mallory</b>&amp;"
    http = Http(srv.base_url)
    await http.login(srv.acme.agents[0].username, srv.acme.agents[0].password)
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await agent.request("auth", token=None)
        await agent.request("set_status", status="accepting")
        await visitor(srv, vis)
        assert (await vis.request("update_profile", name=name))["type"] == "result"
        ack = await vis.request("send_message", client_msg_id="x", text=markup)
        conv = ack["result"]["conversation_id"]
        watching = await agent.request("watch", conversation_id=conv)
        assert watching["result"]["conversation"]["visitor_name"] == name
        history = await agent.request("get_history", conversation_id=conv)
        bodies = [e["body"] for e in history["result"]["events"] if e["kind"] == "message"]
        assert bodies == [markup]  # byte for byte, not escaped, not stripped: it is data
    owner = bearer(srv.base_url, srv.acme.owner.token)
    resp = await owner.get(f"/api/v1/conversations/{conv}/transcript")
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert [e["body"] for e in resp.json()["events"] if e["kind"] == "message"] == [markup]
    profile = (
        await owner.get(
            f"/api/v1/visitors/{ack['result'] and resp.json()['conversation']['visitor_id']}"
        )
    ).json()
    assert profile["visitor"]["name"] == name
    # The docs page is the only server-rendered HTML; it escapes what it shows.
    docs = await owner.get("/api/docs")
    assert b"<script" not in docs.body
    assert "default-src 'none'" in docs.headers["content-security-policy"]


async def test_an_ip_ban_refuses_the_upgrade_in_that_workspace_only(srv: TestServer) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    owner = bearer(srv.base_url, srv.acme.owner.token)
    async with open_peer(url, origin=srv.acme.site_origin) as peer:
        hello = await visitor(srv, peer)
        resp = await owner.post(f"/api/v1/visitors/{hello['visitor_id']}/ban", {"include_ip": True})
        assert [b["kind"] for b in resp.json()["bans"]] == ["visitor", "ip"]
        assert await peer.closed(timeout=5) == 1008
    with pytest.raises(ConnectionRejected) as refused:
        async with open_peer(url, origin=srv.acme.site_origin):
            pass
    assert refused.value.status_code == 403
    # Another workspace is not affected by Acme's bans.
    async with open_peer(
        srv.visitor_ws_url(srv.globex.widget_key), origin=srv.globex.site_origin
    ) as other:
        await visitor(srv, other)
    # Lifting the ban lets the IP back in.
    ip_ban = next(b for b in resp.json()["bans"] if b["kind"] == "ip")
    assert (await owner.request("DELETE", f"/api/v1/bans/{ip_ban['id']}")).status == 200
    async with open_peer(url, origin=srv.acme.site_origin) as back:
        await visitor(srv, back)
