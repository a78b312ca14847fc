"""Each node's bus metrics on ``/metrics``, on two real node processes (issue 13): requests
forwarded to the owner by op and outcome with their round trips, pushes sent and received,
rate-limit syncs, proxied sockets ended when the owner dies; and ``livechat cluster status``
shows a node's own bus round trip."""

from __future__ import annotations

import json
import os
import signal
import sys

import trio

from tests.redis_server import redis_url_or_skip
from tests.web.client import Http, open_peer
from tests.web.test_cluster import SITE, _credentials, _message, cluster
from tests.web.test_cluster_access import _synced, metric

HELLO = {"token": None, "identity": None, "resume": {}, "page": None}


async def test_bus_metrics_count_forwarded_requests_pushes_syncs_and_ended_proxies() -> None:
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b")) as (node_a, node_b):
            password, widget_key = _credentials(node_a.banner)
            on_a = f"ws://127.0.0.1:{node_a.port}/ws/v1/visitor?key={widget_key}"
            http = Http(node_b.base)
            assert (await http.login("agent", password)).status == 200
            for node in (node_a, node_b):  # listed before anything happened
                assert await metric(node, "livechat_bus_subscribed") == 1
                assert await metric(node, "livechat_bus_push_gaps_total") == 0
                assert await metric(node, "livechat_bus_requests_total") == 0
            async with open_peer(on_a, origin=SITE) as vis:  # node-a takes the workspace
                assert (await vis.request("hello", **HELLO))["type"] == "result"
                agent_url = f"ws://127.0.0.1:{node_b.port}/ws/v1/agent"
                async with open_peer(agent_url, cookie=http.cookie) as agent:  # via node-a
                    assert (await agent.request("auth", token=None))["type"] == "result"
                    status = await agent.request("set_status", status="accepting")
                    assert status["type"] == "result"
                    sent = await vis.request("send_message", client_msg_id="v-1", text="Hi")
                    conv_id = sent["result"]["conversation_id"]
                    await agent.push("chat_assigned")
                    await agent.request("watch", conversation_id=conv_id, after_seq=0)
                    await _message(agent, conv_id, "Hi")
                    await _synced(node_a)  # the visitor's message counted in Redis

                    connects = 'livechat_bus_requests_total{op="connect",outcome="ok"}'
                    requests = 'livechat_bus_requests_total{op="request",outcome="ok"}'
                    assert await metric(node_b, connects) == 1
                    assert await metric(node_b, requests) >= 2  # set_status, watch
                    round_trips = await metric(node_b, "livechat_bus_request_seconds_count")
                    assert round_trips >= 3
                    assert (
                        await metric(node_b, 'livechat_bus_request_seconds_bucket{le="+Inf"}')
                        == round_trips
                    )
                    pushed = await metric(node_a, 'livechat_bus_messages_sent_total{kind="push"}')
                    received = 'livechat_bus_messages_received_total{kind="push"}'
                    assert pushed >= 2  # chat_assigned, the message
                    assert await metric(node_b, received) == pushed
                    # pushes and answers to node-b share PUBLISHes: never more than messages
                    text = (await Http(node_a.base).get("/metrics")).body.decode()
                    messages = sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines()
                        if line.startswith("livechat_bus_messages_sent_total{")
                    )
                    publishes = await metric(node_a, "livechat_bus_publishes_total")
                    assert 0 < publishes <= messages
                    syncs = 'livechat_rate_limit_syncs_total{outcome="ok"}'
                    assert await metric(node_a, syncs) >= 1

                    cmd = [sys.executable, "-m", "web.cli", "cluster", "status", "--json"]
                    cmd += ["--database-url", node_a.database_url]
                    cmd += ["--bus-url", redis_url_or_skip()]
                    done = await trio.run_process(cmd, capture_stdout=True, env=node_a.env)
                    listed = {n["node"]: n for n in json.loads(done.stdout)["nodes"]}["node-a"]
                    assert 0 < listed["own_round_trip_ms"] < 2000  # its syncs and answers

                    os.kill(node_a.pid, signal.SIGKILL)  # the owner dies: b ends its proxy
                    assert await agent.closed(timeout=10) == 1013
            assert await metric(node_b, "livechat_bus_proxied_sockets_ended_total") == 1
            assert await metric(node_b, "livechat_bus_push_gaps_total") == 0
            assert await metric(node_b, 'livechat_ws_closes_total{code="1013"}') == 1
