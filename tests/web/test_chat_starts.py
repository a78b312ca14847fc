"""Starting a chat over real sockets: retried starts are idempotent (a new socket, a restarted
server), and one visitor has at most one open chat, however many agents try at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.web.client import Http, Peer, open_peer, visitor
from tests.web.server import TestServer, run_test_server


async def _agent(srv: TestServer, index: int) -> Http:
    http = Http(srv.base_url)
    account = srv.acme.agents[index]
    assert (await http.login(account.username, account.password)).status == 200
    return http


async def _auth(peer: Peer) -> None:
    auth = await peer.request("auth", token=None)
    assert auth["type"] == "result", auth


async def _conversations_of(srv: TestServer, visitor_id: str) -> list[Any]:
    assert srv.services is not None
    return await srv.services.storage.list_visitor_conversations(srv.acme.id, visitor_id)


async def test_retried_offline_message_keeps_one_conversation_across_reconnect_and_restart(
    tmp_path: Path,
) -> None:
    offline = {"email": "dana@example.com", "text": "Call me back", "client_msg_id": "off-1"}
    async with run_test_server(tmp_path) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            hello = await visitor(srv, peer)
            first = await peer.request("offline_message", **offline)
        assert first["type"] == "result", first
        ack = first["result"]
        assert ack["duplicate"] is False
        token, visitor_id = hello["visitor_token"], hello["visitor_id"]
        # The ack was lost with the socket: the widget sends again on a new one.
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer, token=token)
            again = (await peer.request("offline_message", **offline))["result"]
        assert again["conversation_id"] == ack["conversation_id"]
        assert (again["seq"], again["duplicate"]) == (ack["seq"], True)
        assert len(await _conversations_of(srv, visitor_id)) == 1
        seeded = (srv.acme, srv.globex)

    async with run_test_server(tmp_path, seeded=seeded) as srv:
        url = srv.visitor_ws_url(srv.acme.widget_key)
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer, token=token)
            after_restart = (await peer.request("offline_message", **offline))["result"]
        assert after_restart["conversation_id"] == ack["conversation_id"]
        assert after_restart["duplicate"] is True
        convs = await _conversations_of(srv, visitor_id)
        assert [c.id for c in convs] == [ack["conversation_id"]]
        # A different client id is a different message: a second offline conversation.
        async with open_peer(url, origin=srv.acme.site_origin) as peer:
            await visitor(srv, peer, token=token)
            other = await peer.request("offline_message", **{**offline, "client_msg_id": "off-2"})
        assert other["result"]["conversation_id"] != ack["conversation_id"]


async def test_retried_start_chat_returns_the_same_chat_even_after_it_closed(
    srv: TestServer,
) -> None:
    http = await _agent(srv, 0)
    start: dict[str, Any] = {"client_msg_id": "hello-1", "text": "Can I help you?"}
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as vis:
        visitor_id = (await visitor(srv, vis))["visitor_id"]
        start["visitor_id"] = visitor_id
        async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
            await _auth(agent)
            first = await agent.request("start_chat", **start)
        assert first["type"] == "result", first
        ack = first["result"]
        async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
            await _auth(agent)
            again = await agent.request("start_chat", **start)
            assert again["type"] == "result", again
            assert again["result"]["conversation_id"] == ack["conversation_id"]
            assert (again["result"]["seq"], again["result"]["duplicate"]) == (ack["seq"], True)
            closed = await agent.request("close", conversation_id=ack["conversation_id"])
            assert closed["type"] == "result", closed
            late = await agent.request("start_chat", **start)
            assert late["type"] == "result", late
            assert late["result"]["conversation_id"] == ack["conversation_id"]
        assert len(await _conversations_of(srv, visitor_id)) == 1


async def test_two_agents_starting_a_chat_with_one_visitor_at_once_open_one_chat(
    srv: TestServer,
) -> None:
    https = [await _agent(srv, 0), await _agent(srv, 1)]
    async with open_peer(
        srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
    ) as vis:
        visitor_id = (await visitor(srv, vis))["visitor_id"]
        async with (
            open_peer(srv.agent_ws_url, cookie=https[0].cookie) as alice,
            open_peer(srv.agent_ws_url, cookie=https[1].cookie) as bob,
        ):
            await _auth(alice)
            await _auth(bob)
            replies: dict[str, dict[str, Any]] = {}

            async def start(name: str, peer: Peer) -> None:
                replies[name] = await peer.request(
                    "start_chat", visitor_id=visitor_id, client_msg_id=f"{name}-1", text="Hi!"
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(start, "alice", alice)
                nursery.start_soon(start, "bob", bob)
            kinds = sorted(r["type"] for r in replies.values())
            assert kinds == ["error", "result"], replies
            error = next(r for r in replies.values() if r["type"] == "error")
            assert (error["code"], error["field"]) == ("already_open", "visitor_id")
            opened = next(r for r in replies.values() if r["type"] == "result")["result"]

            # The visitor, writing now, is in that same chat.
            sent = await vis.request("send_message", client_msg_id="v-1", text="Yes please")
            assert sent["result"]["conversation_id"] == opened["conversation_id"]
            # A later proactive start is refused as well while the chat is open.
            late = await bob.request(
                "start_chat", visitor_id=visitor_id, client_msg_id="bob-2", text="Hello?"
            )
            assert late["type"] == "error" and late["code"] == "already_open"
        convs = await _conversations_of(srv, visitor_id)
        assert [c.id for c in convs] == [opened["conversation_id"]]


async def test_agent_cannot_open_a_second_chat_with_a_visitor_who_is_already_chatting(
    srv: TestServer,
) -> None:
    http = await _agent(srv, 0)
    async with (
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
    ):
        visitor_id = (await visitor(srv, vis))["visitor_id"]
        sent = await vis.request("send_message", client_msg_id="v-1", text="Anyone there?")
        own = sent["result"]["conversation_id"]
        await _auth(agent)
        refused = await agent.request(
            "start_chat", visitor_id=visitor_id, client_msg_id="a-1", text="Hi!"
        )
        assert refused["type"] == "error" and refused["code"] == "already_open", refused
        assert [c.id for c in await _conversations_of(srv, visitor_id)] == [own]


async def test_message_to_a_closed_chat_does_not_reopen_it_while_another_is_open(
    srv: TestServer,
) -> None:
    http = await _agent(srv, 0)
    async with (
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
    ):
        visitor_id = (await visitor(srv, vis))["visitor_id"]
        await _auth(agent)
        first = await vis.request("send_message", client_msg_id="v-1", text="First question")
        old = first["result"]["conversation_id"]
        closed = await agent.request("close", conversation_id=old)
        assert closed["type"] == "result", closed
        started = await agent.request(
            "start_chat", visitor_id=visitor_id, client_msg_id="a-1", text="Anything else?"
        )
        assert started["type"] == "result", started
        new = started["result"]["conversation_id"]

        refused = await vis.request(
            "send_message", conversation_id=old, client_msg_id="v-2", text="About the first"
        )
        assert refused["type"] == "error", refused
        assert (refused["code"], refused["field"]) == ("already_open", "conversation_id")
        sent = await vis.request("send_message", client_msg_id="v-3", text="Yes, one more")
        assert sent["result"]["conversation_id"] == new
    states = {c.id: c.state.value for c in await _conversations_of(srv, visitor_id)}
    assert states == {old: "closed", new: "active"}
