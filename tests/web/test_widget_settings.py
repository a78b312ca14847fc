"""Widget settings over real HTTP: ``PUT`` replaces the whole configuration and refuses a body
that is missing (or missing fields) instead of resetting; ``PATCH`` changes only what it names."""

from __future__ import annotations

from typing import Any

from tests.web.client import bearer, open_peer, visitor
from tests.web.server import TestServer

URL = "/api/v1/settings/widget"


async def test_put_without_a_body_is_refused_and_keeps_every_setting(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    before: dict[str, Any] = (await admin.get(URL)).json()
    before.update(color="#112233", title="Talk to Acme", sneak_peek=True)
    assert (await admin.request("PUT", URL, before)).status == 200
    assert srv.acme.site_origin in before["allowed_origins"]

    for raw in (None, b"{}"):
        resp = await admin.request("PUT", URL, raw=raw)
        assert resp.status == 400, resp.body
        assert (resp.error_code, resp.json()["error"]["field"]) == ("body_required", "$")
    partial = await admin.request("PUT", URL, {"color": "#000000"})
    assert (partial.status, partial.error_code) == (400, "missing_field"), partial.body
    assert partial.json()["error"]["field"].startswith("$.")

    assert (await admin.get(URL)).json() == before
    # The site can still embed the widget: its origin was not reset away.
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        assert (await visitor(srv, peer))["widget"]["title"] == "Talk to Acme"


async def test_patch_changes_only_the_fields_it_names(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    before = (await admin.get(URL)).json()
    patched = await admin.request("PATCH", URL, {"color": "#445566", "greeting": "Hej!"})
    assert patched.status == 200, patched.body
    assert patched.json() == {**before, "color": "#445566", "greeting": "Hej!"}
    assert (await admin.get(URL)).json() == patched.json()

    missing = await admin.request("PATCH", URL, raw=None)
    assert (missing.status, missing.error_code) == (400, "body_required")
    bad = await admin.request("PATCH", URL, {"allowed_origins": ["https://a/b"]})
    assert (bad.status, bad.json()["error"]["field"]) == (400, "$.allowed_origins[0]")
    unknown = await admin.request("PATCH", URL, {"colour": "#445566"})
    assert (unknown.status, unknown.error_code) == (400, "unknown_field")
    assert (await admin.get(URL)).json() == patched.json()
    # Other replace endpoints refuse an empty body the same way.
    routing = await admin.request("PUT", "/api/v1/settings/routing", raw=None)
    assert (routing.status, routing.error_code) == (400, "body_required")


async def test_openapi_documents_put_as_full_and_patch_as_partial(srv: TestServer) -> None:
    doc = (await bearer(srv.base_url, srv.acme.owner.token).get("/openapi.json")).json()
    ops = doc["paths"][URL]
    assert {"get", "put", "patch"} <= set(ops)
    schemas = doc["components"]["schemas"]

    def body_schema(op: dict[str, Any]) -> dict[str, Any]:
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema: dict[str, Any] = schemas[ref.rsplit("/", 1)[1]]
        return schema

    put = body_schema(ops["put"])
    assert set(put["required"]) == set(put["properties"]) >= {"allowed_origins", "color"}
    assert not body_schema(ops["patch"]).get("required")


async def test_the_hello_offers_the_public_groups_as_changed_a_moment_ago(srv: TestServer) -> None:
    # The departments are cached by the engine (no read per hello) until a group changes.
    admin = bearer(srv.base_url, srv.acme.owner.token)
    url = srv.visitor_ws_url(srv.acme.widget_key)

    async def departments() -> list[str]:
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            return sorted(d["name"] for d in (await visitor(srv, peer))["widget"]["departments"])

    before = await departments()
    created = await admin.request("POST", "/api/v1/groups", {"name": "Billing", "public": True})
    assert created.status == 201, created.body
    assert await departments() == sorted([*before, "Billing"])
    group_id = created.json()["id"]
    renamed = await admin.request("PATCH", f"/api/v1/groups/{group_id}", {"name": "Invoices"})
    assert renamed.status == 200, renamed.body
    assert await departments() == sorted([*before, "Invoices"])
    hidden = await admin.request("PATCH", f"/api/v1/groups/{group_id}", {"public": False})
    assert hidden.status == 200, hidden.body
    assert await departments() == before
