"""Triggers over real HTTP and a real socket: the admin API validates and stores them, and a
visitor waiting in the queue gets the auto-reply (the engine's router fires it)."""

from __future__ import annotations

import trio

from tests.web.client import bearer, open_peer, visitor
from tests.web.server import TestServer

URL = "/api/v1/triggers"


async def test_triggers_are_validated_and_stored_with_ids(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    assert (await admin.get(URL)).json() == {"triggers": []}
    missing = await admin.request(
        "PUT", URL, {"triggers": [{"name": "Wait", "action": "auto_reply"}]}
    )
    assert (missing.status, missing.error_code) == (400, "missing_field")
    assert missing.json()["error"]["field"] == "$.triggers[0].text"
    bad_group = await admin.request(
        "PUT", URL, {"triggers": [{"name": "M", "action": "assign_group", "to_group_id": "x"}]}
    )
    assert (bad_group.status, bad_group.json()["error"]["field"]) == (
        400,
        "$.triggers[0].to_group_id",
    )
    ok = await admin.request(
        "PUT",
        URL,
        {"triggers": [{"name": "Wait", "action": "auto_reply", "text": "Hang on!"}]},
    )
    assert ok.status == 200, ok.body
    stored = (await admin.get(URL)).json()["triggers"]
    assert [(t["name"], t["text"], t["queue_wait_s"]) for t in stored] == [
        ("Wait", "Hang on!", 0.0)
    ]
    assert stored[0]["id"]


async def test_a_queued_visitor_gets_the_auto_reply_over_the_socket(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    put = await admin.request(
        "PUT",
        URL,
        {"triggers": [{"name": "Queued", "action": "auto_reply", "text": "We see you!"}]},
    )
    assert put.status == 200, put.body
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)
        sent = await peer.request("send_message", client_msg_id="q1", text="anyone?")
        assert sent["type"] == "result", sent
        with trio.fail_after(20):
            while True:
                push = await peer.push("event")
                event = push["event"]
                if event["kind"] == "message" and event["author_type"] == "system":
                    break
        assert event["body"] == "We see you!"


async def test_a_page_view_greeting_reaches_the_widget_and_answering_it_opens_the_chat(
    srv: TestServer,
) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    wrong_action = await admin.request(
        "PUT",
        URL,
        {"triggers": [{"name": "G", "event": "page_view", "action": "auto_reply", "text": "x"}]},
    )
    assert (wrong_action.status, wrong_action.json()["error"]["field"]) == (
        400,
        "$.triggers[0].action",
    )
    wrong_field = await admin.request(
        "PUT",
        URL,
        {"triggers": [{"name": "W", "action": "auto_reply", "text": "x", "time_on_page_s": 5}]},
    )
    assert (wrong_field.status, wrong_field.json()["error"]["field"]) == (
        400,
        "$.triggers[0].time_on_page_s",
    )
    queued_only_when = await admin.request(
        "PUT",
        URL,
        {
            "triggers": [
                {"name": "Q", "action": "auto_reply", "text": "x", "only_when_available": False}
            ]
        },
    )
    assert queued_only_when.json()["error"]["field"] == "$.triggers[0].only_when_available"
    greeting = {
        "name": "Pricing",
        "event": "page_view",
        "action": "greeting",
        "text": "Questions about pricing?",
        "url_contains": "/pricing",
        "only_when_available": False,  # no agent connects in this test
    }
    put = await admin.request("PUT", URL, {"triggers": [greeting]})
    assert put.status == 200, put.body
    trigger_id = put.json()["triggers"][0]["id"]
    assert put.json()["triggers"][0]["only_when_available"] is False
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as peer:
        await visitor(srv, peer)  # on http://site.test/pricing
        shown = await peer.push("greeting", timeout=20)
        assert (shown["greeting_id"], shown["style"], shown["text"]) == (
            trigger_id,
            "greeting",
            "Questions about pricing?",
        )
        assert shown["sender_name"] == "Acme"
        sent = await peer.request(
            "send_message", client_msg_id="a1", text="Yes, a question", greeting_id=trigger_id
        )
        assert sent["type"] == "result", sent
        first = await peer.push("event")
        assert first["event"]["seq"] == 1 and first["event"]["body"] == "Questions about pricing?"
        assert first["event"]["data"] == {"greeting": True, "sender_name": "Acme"}
        assert first["event"]["author_name"] == "Acme"
