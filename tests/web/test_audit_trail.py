"""Every admin change leaves exactly one audit entry; purges stay readable by an operator."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tests.web.client import Http, bearer
from tests.web.server import TestServer
from tests.web.test_security import start_conversation
from web.housekeeping import housekeeping_pass


async def _actions(client: Http, path: str = "/api/v1/audit") -> list[dict[str, Any]]:
    resp = await client.get(path + "?limit=200")
    assert resp.status == 200, resp.body
    entries: list[dict[str, Any]] = resp.json()["entries"]
    return entries


async def test_canned_responses_and_tags_are_audited_once_each(srv: TestServer) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    canned = await owner.post("/api/v1/canned-responses", {"shortcut": "hi", "text": "Hi!"})
    assert canned.status == 201
    canned_id = canned.json()["id"]
    patched = await owner.request(
        "PATCH", f"/api/v1/canned-responses/{canned_id}", {"text": "Hello!"}
    )
    assert patched.status == 200
    assert (await owner.request("DELETE", f"/api/v1/canned-responses/{canned_id}")).status == 200
    assert (await owner.request("PUT", "/api/v1/tags", {"tags": ["vip", "billing"]})).status == 200
    assert (await owner.request("PUT", "/api/v1/tags", {"tags": ["vip"]})).status == 200

    entries = await _actions(owner)
    counts = Counter(e["action"] for e in entries)
    assert counts["canned.created"] == counts["canned.updated"] == counts["canned.deleted"] == 1
    assert counts["settings.tags_changed"] == 2
    tags = [e for e in entries if e["action"] == "settings.tags_changed"]
    assert tags[0]["details"] == {"added": [], "removed": ["billing"]}  # newest first
    assert tags[1]["details"] == {"added": ["billing", "vip"], "removed": []}
    updated = next(e for e in entries if e["action"] == "canned.updated")
    assert updated["target"] == f"canned:{canned_id}" and updated["details"] == {"fields": ["text"]}
    assert "Hello!" not in str(entries)  # never the text itself
    token = _token_id(entries)
    assert all(e["actor"] == f"token:{token}" for e in entries if "canned" in e["action"])


def _token_id(entries: list[dict[str, Any]]) -> str:
    actor = next(e["actor"] for e in entries if e["action"] == "canned.created")
    assert actor.startswith("token:")
    return str(actor.removeprefix("token:"))


async def test_erasing_a_visitor_is_audited_once_with_who_did_it(srv: TestServer) -> None:
    conv = await start_conversation(srv, srv.acme.widget_key, srv.acme.site_origin, "erase me")
    owner = bearer(srv.base_url, srv.acme.owner.token)
    visitor_id = (await owner.get(f"/api/v1/conversations/{conv}")).json()["visitor_id"]
    assert (await owner.request("DELETE", f"/api/v1/visitors/{visitor_id}")).status == 200
    erased = [e for e in await _actions(owner) if e["action"] == "visitor.erased"]
    assert len(erased) == 1
    assert erased[0]["target"] == f"visitor:{visitor_id}"
    assert erased[0]["actor"].startswith("token:") and erased[0]["ip"] == "127.0.0.1"
    details = erased[0]["details"]
    assert details == {
        "conversations": 1,
        "events": details["events"],
        "files": 0,
        "webhook_deliveries": 0,
        "mail": 0,
    }


async def test_a_purged_workspace_leaves_one_server_entry_an_operator_can_read(
    srv: TestServer,
) -> None:
    assert srv.services is not None
    operator = bearer(srv.base_url, srv.acme.owner.token)
    globex = bearer(srv.base_url, srv.globex.owner.token)
    # Only server operators read the server-wide log.
    assert (await globex.get("/api/v1/audit/server")).status == 403
    alice = bearer(srv.base_url, srv.acme.agents[0].token)
    assert (await alice.get("/api/v1/audit/server")).status == 403

    resp = await operator.post(f"/api/v1/workspaces/{srv.globex.id}/terminate", {"grace_days": 1})
    assert resp.status == 200
    later = time.time() + 2 * 86400
    assert (await housekeeping_pass(srv.services.storage, now=later))["purged_workspaces"] == 1

    purged = [
        e
        for e in await _actions(operator, "/api/v1/audit/server")
        if e["action"] == "workspace.purged"
    ]
    assert len(purged) == 1
    assert purged[0]["target"] == f"workspace:{srv.globex.id}"
    assert purged[0]["actor"] == "system"
    assert purged[0]["details"]["agents"] == 2 and purged[0]["seq"] >= 1
    report = await srv.services.storage.verify_audit(None)
    assert report.ok, report
