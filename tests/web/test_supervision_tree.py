"""One supervision tree runs the server: crash actors through the real server (the operators'
fault injection) and watch them restart from storage while their clients carry on."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.web.client import Http, Peer, bearer, open_peer, visitor
from tests.web.server import TestServer, run_test_server
from tests.web.test_ws_chat import agent_peer_login, start_agent

FAULTS = "/api/v1/ops/faults"
TREE = "/api/v1/ops/supervision"


def _metric(text: str, name: str, kind: str) -> int:
    match = re.search(rf'^{name}{{kind="{kind}"}} (\d+)$', text, re.MULTILINE)
    return int(match.group(1)) if match else 0


async def _metrics(srv: TestServer) -> str:
    resp = await Http(srv.base_url).get("/metrics")
    assert resp.status == 200
    return resp.body.decode()


async def _node(srv: TestServer, path: str) -> dict[str, Any]:
    resp = await bearer(srv.base_url, srv.acme.owner.token).get(TREE)
    assert resp.status == 200, resp.body
    nodes = {n["path"]: n for n in resp.json()["nodes"]}
    return dict(nodes[path])


async def _crash(srv: TestServer, kind: str, id: str | None = None) -> None:
    body: dict[str, Any] = {"kind": kind}
    if id is not None:
        body["id"] = id
    resp = await bearer(srv.base_url, srv.acme.owner.token).post(FAULTS, body)
    assert resp.status == 200, resp.body
    assert resp.json()["crashed"] is True


async def _until(predicate: Any, what: str) -> None:
    with trio.fail_after(20):
        while not await predicate():
            await trio.sleep(0.05)


@asynccontextmanager
async def _chat(srv: TestServer, index: int = 0) -> AsyncIterator[tuple[Peer, Peer, str]]:
    """An agent and a visitor in one chat: (agent, visitor, conversation id)."""
    http = await agent_peer_login(srv, Http(srv.base_url), index)
    async with (
        open_peer(srv.agent_ws_url, cookie=http.cookie) as agent,
        open_peer(srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin) as vis,
    ):
        await start_agent(agent)
        await visitor(srv, vis)
        sent = await vis.request("send_message", client_msg_id="v-0", text="hello")
        conv_id = sent["result"]["conversation_id"]
        await agent.push("chat_assigned")
        await agent.request("watch", conversation_id=conv_id, after_seq=0)
        yield agent, vis, conv_id


async def _both_carry_on(agent: Peer, vis: Peer, conv_id: str, tag: str) -> None:
    sent = await vis.request("send_message", client_msg_id=f"v-{tag}", text=f"visitor {tag}")
    assert sent["result"]["type"] == "message_ack", sent
    got = await agent.push("event", timeout=20)
    while got["event"].get("body") != f"visitor {tag}":
        got = await agent.push("event", timeout=20)
    reply = await agent.request(
        "send_message", conversation_id=conv_id, client_msg_id=f"a-{tag}", text=f"agent {tag}"
    )
    assert reply["result"]["type"] == "message_ack", reply
    got = await vis.push("event", timeout=20)
    while got["event"].get("body") != f"agent {tag}":
        got = await vis.push("event", timeout=20)


async def test_the_tree_is_shown_to_the_server_operator_only(srv: TestServer) -> None:
    resp = await bearer(srv.base_url, srv.acme.owner.token).get(TREE)
    assert resp.status == 200, resp.body
    nodes = resp.json()["nodes"]
    paths = [n["path"] for n in nodes]
    assert paths[:3] == ["livechat", "livechat/storage", "livechat/engine"]
    for child in ("routers", "agents", "visitors", "conversations", "hub", "ticker"):
        assert f"livechat/engine/{child}" in paths
    assert "livechat/housekeeping" in paths
    root = nodes[0]
    assert (root["kind"], root["strategy"], root["state"]) == (
        "supervisor",
        "rest_for_one",
        "running",
    )
    conversations = next(n for n in nodes if n["path"] == "livechat/engine/conversations")
    assert conversations["kind"] == "registry" and conversations["max_restarts"] == 5
    for token in (srv.globex.owner.token, srv.acme.agents[0].token):
        other = await bearer(srv.base_url, token).get(TREE)
        assert other.status == 403


async def test_fault_injection_is_refused_unless_the_operator_turned_it_on(
    srv: TestServer,
) -> None:
    resp = await bearer(srv.base_url, srv.acme.owner.token).post(FAULTS, {"kind": "router"})
    assert resp.status == 403
    assert resp.error_code == "fault_injection_disabled"


async def test_a_crashed_conversation_restarts_from_storage_and_both_clients_carry_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.registry")
    async with (
        run_test_server(tmp_path, debug_fault_injection=True) as srv,
        _chat(srv) as (agent, vis, conv_id),
    ):
        await _crash(srv, "conversation", conv_id)
        await _both_carry_on(agent, vis, conv_id, "after-crash")
        assert _metric(await _metrics(srv), "livechat_actor_restarts_total", "conversation") == 1
        assert (await _node(srv, "livechat/engine/conversations"))["restarts"] == 1
        # Nothing else was disturbed.
        for other in ("routers", "visitors", "agents"):
            assert (await _node(srv, f"livechat/engine/{other}"))["restarts"] == 0
        assert (await _node(srv, "livechat/engine"))["restarts"] == 0
    restarts = [r.getMessage() for r in caplog.records if "restarted" in r.getMessage()]
    name = f"conversation/('{srv.acme.id}', '{conv_id}')"
    assert restarts == [f"actor {name} restarted (1 of at most 5 restarts in 10s)"]


async def test_a_crashed_router_and_visitor_restart_and_routing_goes_on(tmp_path: Path) -> None:
    async with (
        run_test_server(tmp_path, debug_fault_injection=True) as srv,
        _chat(srv) as (agent, vis, conv_id),
    ):
        await _crash(srv, "router")
        await _crash(srv, "visitor", (await _visitor_id(srv, conv_id)))
        await _both_carry_on(agent, vis, conv_id, "after-crash")
        # A new visitor's chat is still routed to the (accepting) agent.
        async with open_peer(
            srv.visitor_ws_url(srv.acme.widget_key), origin=srv.acme.site_origin
        ) as vis2:
            await visitor(srv, vis2)
            sent = await vis2.request("send_message", client_msg_id="v2", text="me too")
            conv2 = sent["result"]["conversation_id"]
            assigned = await agent.push("chat_assigned", timeout=20)
            while assigned["conversation"]["conversation_id"] != conv2:
                assigned = await agent.push("chat_assigned", timeout=20)
        text = await _metrics(srv)
        assert _metric(text, "livechat_actor_restarts_total", "router") == 1
        assert _metric(text, "livechat_actor_restarts_total", "visitor") == 1


async def _visitor_id(srv: TestServer, conv_id: str) -> str:
    assert srv.services is not None
    conv = await srv.services.storage.get_conversation(srv.acme.id, conv_id)
    assert conv is not None
    return conv.visitor_id


async def test_a_conversation_crashing_past_its_intensity_is_stopped_alone(
    tmp_path: Path,
) -> None:
    async with (
        run_test_server(
            tmp_path, debug_fault_injection=True, actor_max_restarts=1, actor_period_s=600
        ) as srv,
        _chat(srv, 0) as (agent, vis, conv_id),
        _chat(srv, 1) as (agent2, vis2, other_id),
    ):
        await _crash(srv, "conversation", conv_id)  # restarted (1 of 1)
        await _crash(srv, "conversation", conv_id)  # past the intensity: stopped

        async def given_up() -> bool:
            return (await _node(srv, "livechat/engine/conversations"))["failures"] == 1

        await _until(given_up, "the registry gives up on the key")
        text = await _metrics(srv)
        assert _metric(text, "livechat_actor_failures_total", "conversation") == 1
        # The other chat never noticed; the engine, its registries and the root were not restarted.
        await _both_carry_on(agent2, vis2, other_id, "other")
        assert (await _node(srv, "livechat/engine"))["restarts"] == 0
        assert (await _node(srv, "livechat"))["restarts"] == 0
        # The stopped chat starts afresh from storage on its next use: its clients carry on.
        await _both_carry_on(agent, vis, conv_id, "fresh")
