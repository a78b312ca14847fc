"""A Redis outage under a two-node cluster (a private redis-server, killed and started again):
``/readyz`` reports the bus, nothing is acknowledged without a commit, and the cluster recovers
by itself; the client's retry stores its message exactly once."""

from __future__ import annotations

from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.redis_server import PrivateRedis
from tests.web.client import Http, open_peer
from tests.web.server import free_port
from tests.web.test_cluster import SITE, _credentials, cluster


async def _ready(base: str) -> dict[str, object]:
    response = await Http(base).get("/readyz")
    body: dict[str, object] = response.json()
    body["http_status"] = response.status
    return body


async def _send_until_stored(url: str, token: str, conv_id: str, seq: int) -> dict[str, Any]:
    """Reconnect (resuming) and send ``m1`` until acknowledged, as the widget retries; returns
    the conversation's history then."""
    hello = {"identity": None, "page": None}
    while True:
        try:
            async with open_peer(url, origin=SITE) as vis:
                await vis.request("hello", token=token, resume={conv_id: seq}, **hello)
                sent = await vis.request("send_message", client_msg_id="m1", text="during")
                if sent["type"] == "result":
                    history = await vis.request("get_history", conversation_id=conv_id)
                    return dict(history["result"])
        except ConnectionClosed:
            pass
        await trio.sleep(0.2)  # as the widget backs off before retrying


async def test_a_redis_outage_acknowledges_nothing_and_the_cluster_recovers() -> None:
    redis = PrivateRedis(free_port())
    await redis.start()
    try:
        with trio.fail_after(100):
            async with cluster(("node-a", "node-b"), redis_url=redis.url) as (node_a, node_b):
                password, widget_key = _credentials(node_a.banner)
                http = Http(node_a.base)
                assert (await http.login("agent", password)).status == 200
                agent_url = f"ws://127.0.0.1:{node_a.port}/ws/v1/agent"
                on_b = f"ws://127.0.0.1:{node_b.port}/ws/v1/visitor?key={widget_key}"
                async with open_peer(agent_url, cookie=http.cookie) as agent:
                    assert (await agent.request("auth", token=None))["type"] == "result"
                    async with open_peer(on_b, origin=SITE) as vis:  # served by node-a
                        hello = {"identity": None, "page": None, "resume": {}}
                        token = (await vis.request("hello", token=None, **hello))["result"][
                            "visitor_token"
                        ]
                        sent = await vis.request("send_message", client_msg_id="m0", text="before")
                        conv_id, seq = sent["result"]["conversation_id"], sent["result"]["seq"]
                        for node in (node_a, node_b):
                            ready = await _ready(node.base)
                            assert ready["http_status"] == 200, ready
                            assert ready["checks"]["bus"] == "ok"  # type: ignore[index]

                        await redis.kill()
                        down = await _ready(node_b.base)
                        assert down["http_status"] == 503
                        assert down["checks"]["bus"] != "ok"  # type: ignore[index]
                        try:
                            during = await vis.request(
                                "send_message", client_msg_id="m1", text="during"
                            )
                            assert during["type"] == "error", during  # never acknowledged
                        except ConnectionClosed:
                            pass  # or its socket ended: the client resumes, nothing acked

                        await redis.start()  # same port: the nodes subscribe again by themselves
                        for node in (node_a, node_b):
                            while (await _ready(node.base))["http_status"] != 200:
                                await trio.sleep(0.2)
                    history = await _send_until_stored(on_b, token, conv_id, seq)
                    bodies = [e["body"] for e in history["events"] if e["kind"] == "message"]
                    assert bodies == ["before", "during"]  # stored once, after the outage
                    seqs = [e["seq"] for e in history["events"]]
                    assert seqs == list(range(1, len(seqs) + 1))
    finally:
        await redis.kill()
