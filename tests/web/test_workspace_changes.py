"""Admin changes over HTTP take effect in the running engine, and what the widget and the
console are told about agents matches what the router sees."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.web.client import Http, Peer, bearer, open_peer, visitor
from tests.web.server import TestServer, run_test_server


async def _login(srv: TestServer, index: int) -> Http:
    http = Http(srv.base_url)
    account = srv.acme.agents[index]
    assert (await http.login(account.username, account.password)).status == 200
    return http


async def _auth(peer: Peer) -> dict[str, Any]:
    auth = await peer.request("auth", token=None)
    assert auth["type"] == "result", auth
    return dict(auth["result"])


async def _routing_reasons(admin: Http, conversation_id: str) -> list[str]:
    """The chat's routing decisions, once the router has made one (bounded wait)."""
    with trio.fail_after(10):
        while True:
            resp = await admin.get(f"/api/v1/routing-decisions?conversation_id={conversation_id}")
            assert resp.status == 200, resp.body
            if reasons := [d["reason"] for d in resp.json()["decisions"]]:
                return reasons
            await trio.sleep(0.05)  # polls the condition; the bound is fail_after's


async def test_routing_mode_put_over_http_applies_to_the_next_chat(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    http = await _login(srv, 0)
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as alice:
        await _auth(alice)
        put = await admin.request("PUT", "/api/v1/settings/routing", {"mode": "manual"})
        assert put.status == 200, put.body
        async with open_peer(url, origin=srv.acme.site_origin) as vis:
            hello = await visitor(srv, vis)
            assert hello["welcome"]["routing_mode"] == "manual"
            sent = await vis.request("send_message", client_msg_id="m1", text="hello?")
            cid = sent["result"]["conversation_id"]
            # The router looked at the chat and left it queued: no chat_assigned will come.
            assert await _routing_reasons(admin, cid) == ["manual_mode"]
            put = await admin.request("PUT", "/api/v1/settings/routing", {"mode": "auto"})
            assert put.status == 200, put.body
            assigned = await alice.push("chat_assigned", timeout=5)
            assert assigned["reason"] == "least_busy"


async def test_agent_created_over_http_is_in_the_next_agent_welcome(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    http = await _login(srv, 0)
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as alice:
        await _auth(alice)  # the workspace's router is running from here on
        made = await admin.post("/api/v1/agents", {"username": "carol", "display_name": "Carol"})
        assert made.status == 201, made.body
        carol_id = made.json()["agent"]["id"]
        http_bob = await _login(srv, 1)
        async with open_peer(srv.agent_ws_url, cookie=http_bob.cookie) as bob:
            agents = {a["agent_id"]: a for a in (await _auth(bob))["welcome"]["agents"]}
        assert agents[carol_id]["status"] == "offline"
        assert agents[srv.acme.agents[0].id]["status"] == "accepting"
        assert {srv.acme.owner.id, srv.acme.agents[1].id} <= set(agents)

        off = await admin.request("PATCH", f"/api/v1/agents/{carol_id}", {"enabled": False})
        assert off.status == 200, off.body
        async with open_peer(srv.agent_ws_url, cookie=http_bob.cookie) as bob:
            agents = {a["agent_id"]: a for a in (await _auth(bob))["welcome"]["agents"]}
        assert carol_id not in agents


async def test_widget_config_online_needs_a_connected_accepting_agent(srv: TestServer) -> None:
    anon = Http(srv.base_url)
    path = f"/api/v1/widget/config?key={srv.acme.widget_key}"
    http = await _login(srv, 0)
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as alice:
        await _auth(alice)
        assert (await anon.get(path)).json()["online"] is True
        ok = await alice.request("set_status", status="not_accepting")
        assert ok["type"] == "result", ok
        # Connected but not taking chats: the widget offers the offline form.
        assert (await anon.get(path)).json()["online"] is False
        await alice.request("set_status", status="accepting")
        assert (await anon.get(path)).json()["online"] is True


@pytest.mark.parametrize("second", ["good_identity", "anonymous"])
async def test_a_refused_identity_may_say_hello_again_within_the_deadline(
    srv: TestServer, second: str
) -> None:
    url = srv.visitor_ws_url(srv.acme.widget_key)
    async with open_peer(url, origin=srv.acme.site_origin) as vis:
        bad = await vis.request(
            "hello", identity={"user_id": "customer-7", "signature": "00" * 32}, resume={}
        )
        assert bad["type"] == "error" and bad["code"] == "invalid_identity", bad
        assert bad["field"] == "identity.signature"
        # No session yet: anything but hello is refused, and the socket stays open.
        refused = await vis.request("send_message", client_msg_id="m", text="hi")
        assert refused["code"] == "hello_required", refused
        identity = None
        if second == "good_identity":
            signature = hmac.new(
                srv.acme.identity_secret.encode(), b"customer-7", hashlib.sha256
            ).hexdigest()
            identity = {"user_id": "customer-7", "signature": signature}
        again = await vis.request("hello", identity=identity, resume={})
        assert again["type"] == "result", again
        sent = await vis.request("send_message", client_msg_id="m", text="hi")
        assert sent["result"]["type"] == "message_ack", sent


async def test_a_refused_identity_without_a_new_hello_is_closed_at_the_deadline(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path, ws_auth_timeout_s=1.0) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with open_peer(url, origin=srv.acme.site_origin) as vis:
            bad = await vis.request(
                "hello", identity={"user_id": "x", "signature": "bad"}, resume={}
            )
            assert bad["code"] == "invalid_identity"
            assert await vis.closed(timeout=5) == 4000
