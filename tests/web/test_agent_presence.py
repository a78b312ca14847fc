"""Agent status over the real server: per-role login status, away, and the visitor told when
the agent's connection drops and comes back."""

from __future__ import annotations

from pathlib import Path

from tests.web.client import Http, open_peer, visitor
from tests.web.server import TestServer, run_test_server
from tests.web.test_ws_chat import agent_peer_login, start_agent


async def _auth_status(srv: TestServer, username: str, password: str) -> str:
    http = Http(srv.base_url)
    assert (await http.login(username, password)).status == 200
    async with open_peer(srv.agent_ws_url, cookie=http.cookie) as peer:
        auth = await peer.request("auth", token=None)
        return str(auth["result"]["welcome"]["agent"]["status"])


async def test_an_owner_logs_in_not_accepting_and_an_agent_accepting(srv: TestServer) -> None:
    owner, agent = srv.acme.owner, srv.acme.agents[0]
    assert await _auth_status(srv, owner.username, owner.password) == "not_accepting"
    assert await _auth_status(srv, agent.username, agent.password) == "accepting"


async def test_an_agent_can_be_away_and_everyone_sees_it(srv: TestServer) -> None:
    http = await agent_peer_login(srv, Http(srv.base_url), 0)
    other = await agent_peer_login(srv, Http(srv.base_url), 1)
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as ann,
        open_peer(srv.agent_ws_url, cookie=other.cookie) as bob,
    ):
        await start_agent(ann)
        await bob.request("auth", token=None)
        ok = await ann.request("set_status", status="away")
        assert ok["result"]["type"] == "ok"
        pushed = await bob.push("agent_status", timeout=20)
        while pushed["agent"]["status"] != "away":
            pushed = await bob.push("agent_status", timeout=20)
        assert pushed["agent"]["agent_id"] == srv.acme.agents[0].id
        bad = await ann.request("set_status", status="offline")
        assert (bad["type"], bad["code"], bad["field"]) == ("error", "invalid_field", "status")


async def test_the_visitor_sees_the_agent_reconnecting_then_back(tmp_path: Path) -> None:
    async with run_test_server(tmp_path, agent_reconnect_grace_s=120.0) as srv:
        http = await agent_peer_login(srv, Http(srv.base_url), 0)
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis:
            async with open_peer(srv.agent_ws_url, cookie=http.cookie) as agent:
                await start_agent(agent)
                await visitor(srv, vis)
                sent = await vis.request("send_message", client_msg_id="v-1", text="hello")
                conv_id = sent["result"]["conversation_id"]
                await agent.push("chat_assigned")
            # The agent's only socket closed: the visitor is told, the chat stays the agent's.
            told = await vis.push("agent_reconnecting", timeout=20)
            assert told["conversation_id"] == conv_id
            assert told["reconnecting"] is True and told["grace_s"] == 120.0
            assert told["agent_name"] == "Alice"
            async with open_peer(srv.agent_ws_url, cookie=http.cookie) as again:
                await again.request("auth", token=None)
                back = await vis.push("agent_reconnecting", timeout=20, reconnecting=False)
                assert back["conversation_id"] == conv_id
            assert srv.services is not None
            conv = await srv.services.storage.get_conversation(srv.acme.id, conv_id)
            assert conv is not None and conv.assignee_id == srv.acme.agents[0].id
