"""Webhooks end to end: a real server posts signed deliveries to a real HTTP receiver.

The signature is checked with the verification code printed in docs/webhooks.md (extracted
from the document and executed here), so the documented example is known to work.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from tests.web.client import Http, bearer, open_peer, visitor
from tests.web.receiver import Received, run_receiver
from tests.web.server import TestServer, run_test_server

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
FAST = {
    "webhooks_allow_private_targets": True,
    "webhooks_poll_interval_s": 0.05,
    "webhooks_retry_base_s": 0.2,
    "webhooks_retry_max_s": 0.5,
}
WAIT_S = 15.0

Verify = Callable[..., bool]


def documented_verifier() -> Verify:
    """The ``verify_livechat_signature`` function exactly as docs/webhooks.md prints it."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = next(b for b in blocks if "def verify_livechat_signature" in b)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    verify: Verify = namespace["verify_livechat_signature"]
    return verify


async def subscribe(
    srv: TestServer, url: str, event_types: list[str], *, token: str | None = None, **extra: Any
) -> tuple[Http, dict[str, Any]]:
    http = bearer(srv.base_url, token or srv.acme.owner.token)
    resp = await http.post("/api/v1/webhooks", {"url": url, "event_types": event_types, **extra})
    assert resp.status == 201, resp.body
    return http, resp.json()


async def visitor_says(
    srv: TestServer, text: str, client_msg_id: str = "v-1", *, workspace: Any = None
) -> str:
    ws = workspace or srv.acme
    async with open_peer(srv.visitor_ws_url(ws.widget_key), origin=ws.site_origin) as vis:
        await visitor(srv, vis)
        sent = await vis.request("send_message", client_msg_id=client_msg_id, text=text)
        assert sent["type"] == "result", sent
        return str(sent["result"]["conversation_id"])


async def next_of_type(receiver: Any, event_type: str) -> Received:
    with trio.fail_after(WAIT_S):
        while True:
            got: Received = await receiver.next()
            if got.headers.get("x-livechat-event") == event_type:
                return got


async def collect(receiver: Any, event_types: set[str]) -> dict[str, Received]:
    """The first delivery of each of ``event_types``, whatever their order."""
    found: dict[str, Received] = {}
    with trio.fail_after(WAIT_S):
        while set(found) != event_types:
            got: Received = await receiver.next()
            event_type = got.headers.get("x-livechat-event", "")
            if event_type in event_types:
                found.setdefault(event_type, got)
    return found


async def until(check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """Poll an HTTP-visible condition (the delivery log is written after the answer)."""
    with trio.fail_after(timeout_s):
        while True:
            value = await check()
            if value:
                return value
            await trio.sleep(0.05)


async def test_signed_webhook_reaches_an_http_receiver_and_verifies(tmp_path: Path) -> None:
    verify = documented_verifier()
    async with run_receiver() as receiver, run_test_server(tmp_path, **FAST) as srv:
        http, created = await subscribe(
            srv, receiver.url, ["chat.started", "message.created"], description="CRM"
        )
        secret = created["secret"]
        assert secret.startswith("whsec_")
        assert created["webhook"]["secret_hint"] == secret[-4:]
        conv_id = await visitor_says(srv, "Where is my order?")

        # Both come from the same event and are posted concurrently: in either order.
        got_by_type = await collect(receiver, {"chat.started", "message.created"})
        started, message = got_by_type["chat.started"], got_by_type["message.created"]
        for got in (started, message):
            assert got.method == "POST" and got.path == "/hook"
            assert got.headers["content-type"] == "application/json"
            header = got.headers["x-livechat-signature"]
            assert verify([secret], header, got.body)
            # A tampered body, another secret, or a replay minutes later are all refused.
            assert not verify([secret], header, got.body + b" ")
            assert not verify(["whsec_other"], header, got.body)
            assert not verify([secret], header, got.body, now=time.time() + 600)
        payload = json.loads(message.body)
        assert payload["type"] == "message.created"
        assert payload["id"] == message.headers["x-livechat-event-id"]
        assert payload["workspace_id"] == srv.acme.id
        assert payload["data"]["conversation_id"] == conv_id
        assert payload["data"]["body"] == "Where is my order?"
        assert payload["data"]["author_type"] == "visitor"

        # The delivery log shows the successful attempt with its status and latency.
        hook_id = created["webhook"]["id"]

        async def delivered() -> Any:
            resp = await http.get(f"/api/v1/webhooks/{hook_id}/deliveries")
            found = [
                d
                for d in resp.json()["deliveries"]
                if d["id"] == message.headers["x-livechat-delivery"]
            ]
            return found and found[0]["state"] == "delivered" and found[0]

        delivery = await until(delivered)
        assert delivery["attempts"] == 1 and delivery["last_status"] == 200
        detail = await http.get(f"/api/v1/webhooks/{hook_id}/deliveries/{delivery['id']}")
        assert detail.status == 200
        body = detail.json()
        assert body["payload"].encode() == message.body
        assert [(a["attempt"], a["status_code"]) for a in body["attempts_log"]] == [(1, 200)]
        assert body["attempts_log"][0]["latency_ms"] >= 0

        # Manual redelivery sends the same event again, with the same id, signed afresh.
        again = await http.post(f"/api/v1/webhooks/{hook_id}/deliveries/{delivery['id']}/redeliver")
        assert again.status == 200, again.body
        resent = await next_of_type(receiver, "message.created")
        assert resent.headers["x-livechat-event-id"] == message.headers["x-livechat-event-id"]
        assert resent.body == message.body
        assert verify([secret], resent.headers["x-livechat-signature"], resent.body)


async def test_failed_delivery_is_retried_and_succeeds_after_a_server_restart(
    tmp_path: Path,
) -> None:
    verify = documented_verifier()
    async with run_receiver(status=500) as receiver:
        async with run_test_server(tmp_path, **FAST) as srv:
            seeded = (srv.acme, srv.globex)
            http, created = await subscribe(srv, receiver.url, ["message.created"])
            secret, hook_id = created["secret"], created["webhook"]["id"]
            await visitor_says(srv, "Anyone there?")
            first = await next_of_type(receiver, "message.created")
            retried = await next_of_type(receiver, "message.created")  # backoff, still 500
            assert retried.headers["x-livechat-event-id"] == first.headers["x-livechat-event-id"]

        # Our server is down; the receiver recovers; our server comes back on the same database.
        receiver.status = 200
        async with run_test_server(tmp_path, seeded=seeded, **FAST) as srv:
            http = bearer(srv.base_url, srv.acme.owner.token)
            got = await next_of_type(receiver, "message.created")
            assert got.headers["x-livechat-event-id"] == first.headers["x-livechat-event-id"]
            assert got.headers["x-livechat-delivery"] == first.headers["x-livechat-delivery"]
            assert verify([secret], got.headers["x-livechat-signature"], got.body)
            assert json.loads(got.body)["data"]["body"] == "Anyone there?"
            delivery_id = got.headers["x-livechat-delivery"]

            async def delivered() -> Any:
                resp = await http.get(f"/api/v1/webhooks/{hook_id}/deliveries/{delivery_id}")
                body = resp.json()
                return body["delivery"]["state"] == "delivered" and body

            detail = await until(delivered)
            log = [(a["status_code"], a["error"]) for a in detail["attempts_log"]]
            assert log[0] == (500, "http_500") and log[1] == (500, "http_500")
            assert log[-1] == (200, None)
            assert [a["attempt"] for a in detail["attempts_log"]] == list(range(1, len(log) + 1))


async def test_loopback_and_plain_http_targets_are_refused_without_the_setting(
    tmp_path: Path,
) -> None:
    async with run_test_server(tmp_path) as srv:
        http = bearer(srv.base_url, srv.acme.owner.token)
        for url in (
            "http://127.0.0.1:9/hook",  # plain http
            "https://127.0.0.1/hook",  # loopback
            "https://localhost/hook",  # resolves to loopback
            "https://10.0.0.5/hook",  # private
            "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
            "https://[::1]/hook",
            "https://user:pw@example.com/hook",
            "ftp://example.com/hook",
        ):
            resp = await http.post(
                "/api/v1/webhooks", {"url": url, "event_types": ["message.created"]}
            )
            assert resp.status == 400, (url, resp.body)
            assert resp.error_code == "webhook_target_refused", (url, resp.body)
        listed = await http.get("/api/v1/webhooks")
        assert listed.json()["webhooks"] == []
        empty = await http.post("/api/v1/webhooks", {"url": "https://x.test", "event_types": []})
        assert empty.status == 400
        unknown = await http.post(
            "/api/v1/webhooks", {"url": "https://x.test", "event_types": ["nope"]}
        )
        assert unknown.status == 400


async def test_rotation_signs_with_both_secrets_and_a_failing_target_gets_disabled(
    tmp_path: Path,
) -> None:
    verify = documented_verifier()
    async with (
        run_receiver() as receiver,
        run_test_server(tmp_path, webhooks_disable_after_failures=2, **FAST) as srv,
    ):
        http, created = await subscribe(srv, receiver.url, ["message.created"])
        old, hook_id = created["secret"], created["webhook"]["id"]
        rotated = await http.post(f"/api/v1/webhooks/{hook_id}/rotate-secret")
        assert rotated.status == 200, rotated.body
        new = rotated.json()["secret"]
        assert new != old and rotated.json()["webhook"]["rotating"] is True
        await visitor_says(srv, "Rotate me")
        got = await next_of_type(receiver, "message.created")
        header = got.headers["x-livechat-signature"]
        assert header.count("v1=") == 2
        assert verify([old], header, got.body) and verify([new], header, got.body)

        # Another workspace cannot see or touch it.
        other = bearer(srv.base_url, srv.globex.owner.token)
        assert (await other.get(f"/api/v1/webhooks/{hook_id}")).status == 404

        # The receiver breaks: after 2 failed attempts in a row the subscription is disabled,
        # the owner finds it in the audit log, and nothing more is sent.
        receiver.status = 503
        await visitor_says(srv, "Still there?", client_msg_id="v-2")

        async def disabled() -> Any:
            resp = await http.get(f"/api/v1/webhooks/{hook_id}")
            return not resp.json()["enabled"] and resp.json()

        sub = await until(disabled)
        assert sub["disabled_reason"] == "2 failed attempts in a row"
        audit = await http.get("/api/v1/audit")
        actions = [e["action"] for e in audit.json()["entries"]]
        assert "webhook.disabled" in actions
        metrics = (await Http(srv.base_url).get("/metrics")).body.decode()
        assert "livechat_webhook_subscriptions_disabled_total 1" in metrics
        assert 'livechat_webhook_attempts_total{outcome="retry"} 2' in metrics

        # Re-enabled with a working receiver, the pending delivery goes out.
        receiver.status = 200
        enabled = await http.request("PATCH", f"/api/v1/webhooks/{hook_id}", {"enabled": True})
        assert enabled.status == 200 and enabled.json()["consecutive_failures"] == 0
        with trio.fail_after(WAIT_S):
            while True:
                got = await next_of_type(receiver, "message.created")
                if json.loads(got.body)["data"]["body"] == "Still there?" and got.status == 200:
                    break
        deleted = await http.request("DELETE", f"/api/v1/webhooks/{hook_id}")
        assert deleted.status == 200
        assert (await http.get(f"/api/v1/webhooks/{hook_id}")).status == 404


async def test_visitor_identified_and_agent_status_are_delivered(tmp_path: Path) -> None:
    verify = documented_verifier()
    async with run_receiver() as receiver, run_test_server(tmp_path, **FAST) as srv:
        _, created = await subscribe(srv, receiver.url, ["visitor.identified", "agent.status"])
        secret = created["secret"]
        user_id = "crm-user-42"
        signature = hmac.new(
            srv.acme.identity_secret.encode(), user_id.encode(), hashlib.sha256
        ).hexdigest()
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis:
            hello = await vis.request(
                "hello",
                token=None,
                identity={"user_id": user_id, "signature": signature},
                resume={},
                page={"url": "http://site.test/", "title": "Home", "referrer": None},
            )
            assert hello["type"] == "result", hello
        got = await next_of_type(receiver, "visitor.identified")
        assert verify([secret], got.headers["x-livechat-signature"], got.body)
        data = json.loads(got.body)["data"]
        assert data["external_id"] == user_id and data["first_time"] is True
        assert data["visitor_id"] == hello["result"]["visitor_id"]

        http = Http(srv.base_url)
        alice = srv.acme.agents[0]
        assert (await http.login(alice.username, alice.password)).status == 200
        async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
            assert (await agent.request("auth", token=None))["type"] == "result"
            ok = await agent.request("set_status", status="not_accepting")
            assert ok["type"] == "result", ok
        got = await next_of_type(receiver, "agent.status")
        assert verify([secret], got.headers["x-livechat-signature"], got.body)
        data = json.loads(got.body)["data"]
        assert data == {"agent_id": alice.id, "display_name": "Alice", "status": "not_accepting"}


async def test_a_hanging_receiver_does_not_delay_another_workspaces_deliveries(
    tmp_path: Path,
) -> None:
    async with (
        run_receiver() as slow,
        run_receiver() as fast,
        run_test_server(
            tmp_path, webhooks_timeout_s=60.0, webhooks_max_concurrent=4, **FAST
        ) as srv,
    ):
        slow.hold = True  # Acme's receiver takes every request and never answers
        await subscribe(srv, slow.url, ["message.created"])
        await subscribe(srv, fast.url, ["message.created"], token=srv.globex.owner.token)
        for n in range(3):
            await visitor_says(srv, f"acme {n}", client_msg_id=f"a-{n}")
        await slow.next()
        await slow.next()  # two attempts hang (the per-subscription limit); the third waits
        await visitor_says(srv, "globex 1", workspace=srv.globex)
        got = await next_of_type(fast, "message.created")  # well before the 60 s timeout
        assert json.loads(got.body)["data"]["body"] == "globex 1"
        assert len(slow.log) == 2
        slow.release.set()
