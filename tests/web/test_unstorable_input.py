"""Text and numbers the databases cannot store are refused at the edge with a precise error.

A lone UTF-16 surrogate is valid JSON (``"\\ud800"``) but not UTF-8; PostgreSQL refuses NUL in
text; ``NaN`` is not JSON and ``1e400`` parses to infinity. None of them may reach a group
commit, where they would fail other senders' messages.
"""

from __future__ import annotations

import pytest

from tests.web.client import bearer, open_peer, visitor
from tests.web.server import TestServer

# Raw frames: the escapes are JSON's, so the server decodes the offending characters itself.
SEND = '{"type": "send_message", "id": "r1", "client_msg_id": "c1", '


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (SEND + '"text": "hi \\ud800 there"}', "invalid_field", "text"),
        (SEND + '"text": "lone low \\udc00"}', "invalid_field", "text"),
        (SEND + '"text": "nul \\u0000 inside"}', "invalid_field", "text"),
        (SEND + '"text": "ok", "extra": {"k": ["\\u0000"]}}', "invalid_field", "extra.k.0"),
        (SEND + '"text": "ok", "extra": {"bad\\ud800key": 1}}', "invalid_field", "extra"),
        (SEND + '"text": "ok", "extra": 1e400}', "invalid_json", None),
        (SEND + '"text": "ok", "extra": 99999999999999999999999}', "invalid_json", None),
        (SEND + '"text": "ok", "extra": NaN}', "invalid_json", None),
        (SEND + '"text": "ok", "extra": -Infinity}', "invalid_json", None),
        (SEND + '"text": "ok", "extra": ' + "[" * 40 + "]" * 40 + "}", "invalid_json", None),
        (SEND + '"text": "ok", "extra": ' + "[" * 5000 + "]" * 5000 + "}", "invalid_json", None),
    ],
)
async def test_unstorable_text_gets_invalid_field_and_the_socket_stays_usable(
    srv: TestServer, raw: str, code: str, field: str | None
) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        await peer.send_raw(raw)
        frame = await peer.recv()
        assert frame["type"] == "error", frame
        assert frame["code"] == code, frame
        if field is not None:
            assert frame["field"] == field
        if code == "invalid_field":
            assert frame["id"] == "r1"  # the request it answers is named
        ok = await peer.request("send_message", client_msg_id="after", text="still here")
        assert ok["type"] == "result", ok


async def test_an_unstorable_hello_is_refused_and_a_clean_hello_then_works(
    srv: TestServer,
) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await peer.send_raw(
            '{"type": "hello", "id": 1, "resume": {}, '
            '"page": {"url": "http://site.test/\\ud83d", "title": "t", "referrer": null}}'
        )
        frame = await peer.recv()
        assert (frame["type"], frame["code"], frame["field"]) == (
            "error",
            "invalid_field",
            "page.url",
        )
        await visitor(srv, peer)
        ok = await peer.request("send_message", client_msg_id="c", text="a real \U0001f600")
        assert ok["type"] == "result", ok


async def test_a_bad_request_id_is_not_echoed(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        await peer.send_raw('{"type": "ping_me", "id": "\\udfff"}')
        frame = await peer.recv()
        assert (frame["code"], frame["field"], frame["id"]) == ("invalid_field", "id", None)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"name": "Billing \\u0000"}', "$.name"),
        (b'{"name": "Billing \\ud800"}', "$.name"),
        (b'{"name": "ok", "x": [1, {"y": "\\u0000"}]}', "$.x[1].y"),
    ],
)
async def test_http_bodies_with_unstorable_values_get_invalid_value(
    srv: TestServer, raw: bytes, field: str
) -> None:
    owner = bearer(srv.base_url, srv.acme.owner.token)
    resp = await owner.request("POST", "/api/v1/groups", raw=raw)
    assert resp.status == 400, resp.body
    error = resp.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_value", field)
    for not_json in (b'{"name": NaN}', b'{"name": "ok", "x": [1, {"y": 1e999}]}'):
        refused = await owner.request("POST", "/api/v1/groups", raw=not_json)
        assert (refused.status, refused.error_code) == (400, "invalid_json")
    fine = await owner.post("/api/v1/groups", {"name": "Billing"})
    assert fine.status == 201, fine.body
