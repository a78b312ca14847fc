"""The pre-chat form is enforced by the server, not only by the widget: required fields and
email syntax, with ``invalid_field`` naming the field (over real sockets)."""

from __future__ import annotations

from typing import Any

from tests.web.client import Http, Peer, bearer, open_peer, visitor
from tests.web.server import TestServer

FIELDS = [
    {"name": "email", "label": "Email", "kind": "email", "required": True},
    {"name": "company", "label": "Company", "kind": "text", "required": True},
    {"name": "work_email", "label": "Work email", "kind": "email", "required": False},
]


async def _enable_pre_chat(srv: TestServer) -> None:
    admin = bearer(srv.base_url, srv.acme.owner.token)
    widget = (await admin.get("/api/v1/settings/widget")).json()
    widget.update(pre_chat_enabled=True, pre_chat_fields=FIELDS)
    put = await admin.request("PUT", "/api/v1/settings/widget", widget)
    assert put.status == 200, put.body


def _refused(reply: dict[str, Any], field: str) -> None:
    assert reply["type"] == "error", reply
    assert (reply["code"], reply["field"]) == ("invalid_field", field), reply


async def test_chat_needs_the_required_pre_chat_fields_and_valid_emails(
    srv: TestServer,
) -> None:
    await _enable_pre_chat(srv)
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as vis:
        await visitor(srv, vis)
        # A script skipping the widget's form cannot start a chat.
        _refused(await vis.request("send_message", client_msg_id="m-1", text="hi"), "email")
        _refused(await vis.request("update_profile", email="dana@"), "email")
        _refused(await vis.request("update_profile", email="dana"), "email")
        assert (await vis.request("update_profile", email="dana@example.com"))["type"] == "result"
        _refused(await vis.request("send_message", client_msg_id="m-1", text="hi"), "company")
        _refused(
            await vis.request("update_profile", attributes={"work_email": "dana@work"}),
            "work_email",
        )
        ok = await vis.request("update_profile", attributes={"company": "Acme"})
        assert ok["type"] == "result", ok
        sent = await vis.request("send_message", client_msg_id="m-1", text="hi")
        assert sent["type"] == "result" and sent["result"]["type"] == "message_ack", sent


async def test_offline_message_refuses_an_address_without_a_domain(srv: TestServer) -> None:
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as vis:
        await visitor(srv, vis)
        _refused(
            await vis.request(
                "offline_message", email="dana@", text="Call me", client_msg_id="off-1"
            ),
            "email",
        )
        ok = await vis.request(
            "offline_message", email="dana@example.com", text="Call me", client_msg_id="off-1"
        )
        assert ok["type"] == "result", ok


async def test_agent_may_start_a_chat_with_a_visitor_who_skipped_the_form(
    srv: TestServer,
) -> None:
    await _enable_pre_chat(srv)
    http = Http(srv.base_url)
    account = srv.acme.agents[0]
    assert (await http.login(account.username, account.password)).status == 200
    async with (
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
    ):
        visitor_id = (await visitor(srv, vis))["visitor_id"]
        peer: Peer = agent
        assert (await peer.request("auth", token=None))["type"] == "result"
        started = await peer.request(
            "start_chat", visitor_id=visitor_id, client_msg_id="a-1", text="Need help?"
        )
        assert started["type"] == "result", started
        # ...and the visitor answers in that chat without filling the form.
        sent = await vis.request("send_message", client_msg_id="v-1", text="Yes")
        assert sent["result"]["conversation_id"] == started["result"]["conversation_id"]
