"""What an agent sees of visitors, and a visitor of agents, when their sockets are on different
nodes (issue 13): the live visitor list over HTTP on either node, the widget's "online" and
its ``availability`` pushes, a queued visitor's ``queue_position``, and the visitor's typing
with its sneak peek. Two real node processes on one PostgreSQL and one Redis."""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import pytest
import trio

from tests.engine.conftest import wait_until
from tests.web.client import Http, Peer, open_peer
from tests.web.test_cluster import SITE, Node, _credentials, cluster

HELLO = {"token": None, "identity": None, "resume": {}, "page": None}


def _owner_password(banner: str) -> str:
    found = re.search(r"owner: username 'owner' password '([^']+)'", banner)
    assert found, banner
    return found[1]


async def _live(http: Http) -> dict[str, Any]:
    resp = await http.get("/api/v1/visitors/live")
    assert resp.status == 200, resp.body
    return dict(resp.json())


async def _online(node: Node, widget_key: str) -> bool:
    """The widget's "online" as its configuration on ``node`` says (public, no session)."""
    resp = await Http(node.base).get(f"/api/v1/widget/config?key={widget_key}")
    assert resp.status == 200, resp.body
    return bool(resp.json()["online"])


async def _typing(agent: Peer, conversation_id: str, draft: str) -> dict[str, Any]:
    """The visitor's next typing push to ``agent`` carrying ``draft``."""
    while True:
        pushed = await agent.push("typing", conversation_id=conversation_id)
        if pushed.get("draft") == draft:
            return pushed


@pytest.mark.parametrize("layout", ["visitor_on_b_agent_owner_a", "agent_on_b_visitor_owner_a"])
async def test_an_agent_sees_a_visitor_on_the_other_node_and_the_visitor_sees_the_agent(
    layout: str,
) -> None:
    """Node A owns the workspace (its client came first); the other side is on node B, served
    through the bus: the visitor when ``visitor_on_b``, else the agent."""
    visitor_on_b = layout.startswith("visitor_on_b")
    with trio.fail_after(120):
        async with cluster(("node-a", "node-b")) as (node_a, node_b):
            password, widget_key = _credentials(node_a.banner)
            agent_node, visitor_node = (node_a, node_b) if visitor_on_b else (node_b, node_a)
            agent_http = Http(agent_node.base)
            assert (await agent_http.login("agent", password)).status == 200
            visitor_url = f"ws://127.0.0.1:{visitor_node.port}/ws/v1/visitor?key={widget_key}"
            agent_url = f"ws://127.0.0.1:{agent_node.port}/ws/v1/agent"
            # The owner account turns sneak peek on through node B, which owns nothing: the
            # owner (node A, once a client came) must apply it.
            admin = Http(node_b.base)
            assert (await admin.login("owner", _owner_password(node_a.banner))).status == 200

            async with open_peer(agent_url, cookie=agent_http.cookie) as agent:
                async with open_peer(visitor_url, origin=SITE) as vis:
                    # Whoever is on node A connects first: node A takes the workspace.
                    first, second = (agent, vis) if visitor_on_b else (vis, agent)
                    for peer in (first, second):
                        if peer is agent:
                            auth = await agent.request("auth", token=None)
                            assert auth["type"] == "result", auth
                        else:
                            hello = await vis.request("hello", **HELLO)
                            assert hello["type"] == "result", hello
                    visitor_id = hello["result"]["visitor_id"]
                    changed = await admin.request(
                        "PATCH", "/api/v1/settings/widget", {"sneak_peek": True}
                    )
                    assert changed.status == 200, changed.body

                    # Presence: the agent's only socket is on the other node from the
                    # visitor's, and the visitor sees them online.
                    if visitor_on_b:  # the agent came first: the welcome says so
                        assert hello["result"]["welcome"]["agents_available"] is True
                        assert hello["result"]["widget"]["online"] is True
                    else:  # the visitor came first: told when the agent came
                        await vis.push("availability", agents_available=True)
                    assert await _online(node_a, widget_key) is True
                    assert await _online(node_b, widget_key) is True

                    # The live visitor list, asked on either node, has the visitor once.
                    for node in (node_a, node_b):
                        http = Http(node.base)
                        http.cookie = agent_http.cookie
                        live = await _live(http)
                        assert live["partial"] is False and live["nodes_missing"] == []
                        assert [v["visitor_id"] for v in live["visitors"]] == [visitor_id]
                        assert live["visitors"][0]["connections"] == 1

                    # Its profile says online, on the node without its socket too.
                    for node in (node_a, node_b):
                        http = Http(node.base)
                        http.cookie = agent_http.cookie
                        profile = await http.get(f"/api/v1/visitors/{visitor_id}")
                        assert profile.json()["visitor"]["online"] is True, node.node_id

                    # The console's list (the owner's engine) has them online as well.
                    listed = await agent.request("list_visitors", subscribe=False)
                    assert [
                        (v["visitor_id"], v["online"]) for v in listed["result"]["visitors"]
                    ] == [(visitor_id, True)]

                    # A second tab of the visitor, on the other node: one visitor, two
                    # connections, wherever the list is asked.
                    other = node_a if visitor_node is node_b else node_b
                    token = hello["result"]["visitor_token"]
                    tab_url = f"ws://127.0.0.1:{other.port}/ws/v1/visitor?key={widget_key}"
                    async with open_peer(tab_url, origin=SITE) as tab:
                        again = await tab.request("hello", **{**HELLO, "token": token})
                        assert again["result"]["visitor_id"] == visitor_id
                        assert again["result"]["widget"]["online"] is True
                        for node in (node_a, node_b):
                            http = Http(node.base)
                            http.cookie = agent_http.cookie
                            live = await _live(http)
                            assert live["visitors"] == [
                                {
                                    "visitor_id": visitor_id,
                                    "connections": 2,
                                    "connected_at": live["visitors"][0]["connected_at"],
                                }
                            ]

                    # The agent stops accepting: the visitor hears it (availability), and the
                    # widget's configuration on either node says offline.
                    status = await agent.request("set_status", status="not_accepting")
                    assert status["type"] == "result", status
                    await vis.push("availability", agents_available=False)
                    # (the one that said "available" when the agent came, if it came second)
                    vis.pushes = [p for p in vis.pushes if p.get("type") != "availability"]
                    assert await _online(node_a, widget_key) is False
                    assert await _online(node_b, widget_key) is False

                    # Nobody accepts: the visitor's chat queues and the visitor is told its
                    # place, pushed by the owner.
                    sent = await vis.request("send_message", client_msg_id="v-1", text="Hi?")
                    assert sent["type"] == "result", sent
                    conv_id = sent["result"]["conversation_id"]
                    place = await vis.push("queue_position", conversation_id=conv_id)
                    assert place["position"] == 1, place
                    while True:  # the agents hear of the queue too
                        queued = await agent.push("queue_update")
                        if [e["conversation_id"] for e in queued["entries"]] == [conv_id]:
                            break

                    # The agent opens the queued chat: the visitor's typing reaches them, with
                    # the draft (sneak peek, turned on through node B).
                    watching = await agent.request("watch", conversation_id=conv_id, after_seq=0)
                    assert watching["type"] == "result", watching
                    typed = await vis.request(
                        "typing", conversation_id=conv_id, is_typing=True, draft="Where is my"
                    )
                    assert typed["type"] == "result", typed
                    peek = await _typing(agent, conv_id, "Where is my")
                    assert peek["author_type"] == "visitor" and peek["is_typing"] is True
                    assert peek["author_id"] == visitor_id

                    # Accepting again: the visitor hears the agent is back, and the queued
                    # chat goes to them.
                    status = await agent.request("set_status", status="accepting")
                    assert status["type"] == "result", status
                    await vis.push("availability", agents_available=True)
                    assigned = await agent.push("chat_assigned")
                    assert assigned["conversation"]["conversation_id"] == conv_id

                # The visitor left: no longer listed, on either node.
                for node in (node_a, node_b):
                    http = Http(node.base)
                    http.cookie = agent_http.cookie

                    async def gone(http: Http = http) -> bool:
                        return not (await _live(http))["visitors"]

                    await wait_until(gone, timeout=10, interval=0.1, what="the visitor gone")


async def test_the_live_visitor_list_names_a_node_that_does_not_answer() -> None:
    """A node paused (SIGSTOP) still listens on the bus but answers nothing: the list asked on
    the other node comes within its deadline, without that node's visitors, and says so."""
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b"), lease_ttl_s=30.0) as (node_a, node_b):
            password, widget_key = _credentials(node_a.banner)
            http = Http(node_a.base)
            assert (await http.login("agent", password)).status == 200
            on_a = f"ws://127.0.0.1:{node_a.port}/ws/v1/visitor?key={widget_key}"
            on_b = f"ws://127.0.0.1:{node_b.port}/ws/v1/visitor?key={widget_key}"
            async with open_peer(on_a, origin=SITE) as here, open_peer(on_b, origin=SITE) as there:
                mine = (await here.request("hello", **HELLO))["result"]["visitor_id"]
                theirs = (await there.request("hello", **HELLO))["result"]["visitor_id"]
                live = await _live(http)
                assert {v["visitor_id"] for v in live["visitors"]} == {mine, theirs}
                os.kill(node_b.pid, signal.SIGSTOP)
                try:
                    live = await _live(http)
                finally:
                    os.kill(node_b.pid, signal.SIGCONT)
                assert live["partial"] is True and live["nodes_missing"] == ["node-b"]
                assert [v["visitor_id"] for v in live["visitors"]] == [mine]
                # once it answers again, the list is whole
                whole = await _live(http)
                assert whole["partial"] is False
                assert {v["visitor_id"] for v in whole["visitors"]} == {mine, theirs}
