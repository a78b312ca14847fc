"""Two real node processes on one PostgreSQL and one Redis (issue 13): a visitor on one node
and an agent on the other chat both ways; the workspace is owned by exactly one node, and the
socket on the other node is served through the bus."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed

from storage.crypto import new_master_key_text
from tests.pg import OutageProxy, pg_schema_url, psql
from tests.redis_server import bus_prefix, redis_url_or_skip
from tests.web.client import Http, Peer, open_peer
from tests.web.server import free_port

SITE = "http://site.test"


class Output:
    """A server's stdout and stderr, read while waiting for a line, then drained until it
    exits (an outage makes a node log a lot: a full pipe would block it)."""

    def __init__(self, proc: trio.Process) -> None:
        assert proc.stdout is not None
        self._stream = proc.stdout
        self.text = ""

    async def wait_for(self, pattern: str) -> str:
        while not re.search(pattern, self.text):
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise AssertionError(f"the server exited: {self.text}")
            self.text += chunk.decode(errors="replace")
        return self.text

    async def drain(self) -> None:
        """Keep reading until the server closes its end (it exited)."""
        while chunk := await self._stream.receive_some(65536):
            self.text += chunk.decode(errors="replace")


@attrs.frozen
class Node:
    node_id: str
    port: int
    banner: str
    database_url: str
    pid: int
    env: dict[str, str]
    output: Output = attrs.field(eq=False, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def cluster(
    names: tuple[str, ...],
    *,
    lease_ttl_s: float = 3.0,
    redis_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    database_via: dict[str, OutageProxy] | None = None,
) -> AsyncIterator[list[Node]]:
    """Start the nodes one after the other (the first seeds the demo workspace); stop them
    with SIGTERM (killed if they do not exit) and drop the schema afterwards. The nodes named
    in ``database_via`` reach PostgreSQL through their proxy (``Node.database_url`` stays the
    direct one, for the test's own queries)."""
    redis_url = redis_url or redis_url_or_skip()
    with pg_schema_url() as url:
        env = {
            **os.environ,
            "LIVECHAT_MASTER_KEY": new_master_key_text(),
            "LIVECHAT_BUS_PREFIX": bus_prefix(),
            "LIVECHAT_CLUSTER_LEASE_TTL_S": str(lease_ttl_s),
            **(extra_env or {}),
        }
        processes: list[trio.Process] = []
        outputs: list[Output] = []
        nodes: list[Node] = []
        async with trio.open_nursery() as readers:
            try:
                for name in names:
                    port = free_port()
                    cmd = [sys.executable, "-m", "web.cli", "serve", "--port", str(port)]
                    proxy = (database_via or {}).get(name)
                    node_url = proxy.route(url) if proxy is not None else url
                    cmd += ["--database-url", node_url, "--bus-url", redis_url, "--node-id", name]
                    cmd += ["--allowed-origins", SITE]
                    proc = await trio.lowlevel.open_process(
                        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
                    )
                    processes.append(proc)
                    output = Output(proc)
                    outputs.append(output)
                    banner = await output.wait_for(r"Running on")  # then the next one starts
                    readers.start_soon(output.drain)
                    nodes.append(Node(name, port, banner, url, proc.pid, env, output))
                yield nodes
            finally:
                for proc in processes:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGCONT)  # a test may have paused it
                        proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(30):
                    for proc in processes:
                        await proc.wait()
                for proc in processes:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()


def _credentials(banner: str) -> tuple[str, str]:
    password = re.search(r"agent: username 'agent' password '([^']+)'", banner)
    key = re.search(r"widget key ([^)]+)\)", banner)
    assert password and key, banner
    return password[1], key[1]


async def _message(peer: Peer, conversation_id: str, body: str) -> dict[str, object]:
    """The pushed event of the message ``body`` (the sender's own echo included)."""
    while True:
        pushed = await peer.push("event")
        event = pushed["event"]
        if event["conversation_id"] == conversation_id and event.get("body") == body:
            return dict(event)


@pytest.mark.parametrize("first", ["visitor", "agent"])
async def test_visitor_on_one_node_and_agent_on_another_chat_both_ways(first: str) -> None:
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b")) as (node_a, node_b):
            password, widget_key = _credentials(node_a.banner)
            http = Http(node_b.base)
            assert (await http.login("agent", password)).status == 200
            visitor_url = f"ws://127.0.0.1:{node_a.port}/ws/v1/visitor?key={widget_key}"
            agent_url = f"ws://127.0.0.1:{node_b.port}/ws/v1/agent"
            async with (
                open_peer(visitor_url, origin=SITE) as vis,
                open_peer(agent_url, cookie=http.cookie) as agent,
            ):
                # Whoever comes first makes its node the workspace's owner; the other socket
                # is served by the owner through the bus.
                hello = {"token": None, "identity": None, "resume": {}, "page": None}
                if first == "visitor":
                    assert (await vis.request("hello", **hello))["type"] == "result"
                auth = await agent.request("auth", token=None)
                assert auth["type"] == "result", auth
                assert (await agent.request("set_status", status="accepting"))["type"] == "result"
                if first == "agent":
                    assert (await vis.request("hello", **hello))["type"] == "result"
                assert _lease_holders(node_a.database_url) == [
                    "node-a" if first == "visitor" else "node-b"
                ]

                sent = await vis.request("send_message", client_msg_id="v-1", text="Hello there")
                assert sent["result"]["type"] == "message_ack", sent
                conv_id = sent["result"]["conversation_id"]
                assigned = await agent.push("chat_assigned")
                assert assigned["conversation"]["conversation_id"] == conv_id
                watching = await agent.request("watch", conversation_id=conv_id, after_seq=0)
                assert watching["result"]["type"] == "watching"
                seen = await _message(agent, conv_id, "Hello there")
                assert seen["author_type"] == "visitor" and seen["seq"] == sent["result"]["seq"]

                reply = await agent.request(
                    "send_message", conversation_id=conv_id, client_msg_id="a-1", text="Hi!"
                )
                assert reply["result"]["type"] == "message_ack", reply
                got = await _message(vis, conv_id, "Hi!")
                assert got["author_type"] == "agent" and got["seq"] == reply["result"]["seq"]

                again = await vis.request("send_message", client_msg_id="v-2", text="Thanks")
                thanks = await _message(agent, conv_id, "Thanks")
                assert thanks["seq"] == again["result"]["seq"]
                # one gapless sequence, whichever node the command came in on
                assert [seen["seq"], got["seq"], thanks["seq"]] == sorted(
                    {seen["seq"], got["seq"], thanks["seq"]}  # type: ignore[type-var]
                )


def _schema(url: str) -> str:
    found = re.search(r"search_path=(\w+)", url)
    assert found
    return found[1]


def _lease_holders(url: str) -> list[str]:
    """Who holds workspace leases now (one owner per workspace, whatever the nodes)."""
    rows = psql(
        url,
        f"SELECT holder || ':' || epoch FROM {_schema(url)}.cluster_leases"
        " WHERE name LIKE 'workspace:%' AND expires_at > extract(epoch from clock_timestamp())",
    )
    return [row.split(":")[0] for row in rows.split()]


async def test_a_paused_owner_never_commits_after_its_lease_was_taken_over() -> None:
    """SIGSTOP of the owner past its lease, another node takes over and commits, SIGCONT:
    the former owner's commit is refused (fencing), the sequence stays gapless."""
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b")) as (node_a, node_b):
            _, widget_key = _credentials(node_a.banner)
            hello = {"identity": None, "resume": {}, "page": None}
            on_a = f"ws://127.0.0.1:{node_a.port}/ws/v1/visitor?key={widget_key}"
            on_b = f"ws://127.0.0.1:{node_b.port}/ws/v1/visitor?key={widget_key}"
            async with open_peer(on_a, origin=SITE) as paused:
                welcome = await paused.request("hello", token=None, **hello)
                token = welcome["result"]["visitor_token"]
                before = await paused.request("send_message", client_msg_id="m1", text="before")
                conv_id = before["result"]["conversation_id"]
                assert _lease_holders(node_a.database_url) == ["node-a"]

                os.kill(node_a.pid, signal.SIGSTOP)
                # Its lease runs out while it is stopped (expiring it stands for the time).
                psql(
                    node_a.database_url,
                    f"UPDATE {_schema(node_a.database_url)}.cluster_leases SET expires_at = 0",
                )
                async with open_peer(on_b, origin=SITE) as moved:
                    assert (await moved.request("hello", token=token, **hello))["type"] == "result"
                    assert _lease_holders(node_b.database_url) == ["node-b"]
                    after = await moved.request("send_message", client_msg_id="m2", text="after")
                    assert after["result"]["seq"] == before["result"]["seq"] + 1

                    os.kill(node_a.pid, signal.SIGCONT)
                    try:
                        late = await paused.request("send_message", client_msg_id="m3", text="late")
                    except ConnectionClosed:
                        late = {"type": "closed"}  # it noticed the loss first: sockets ended
                    assert late["type"] in ("error", "closed"), late
                    if late["type"] == "error":
                        assert late["code"] == "storage_unavailable"

                    history = await moved.request("get_history", conversation_id=conv_id)
                    messages = [
                        (e["seq"], e["body"])
                        for e in history["result"]["events"]
                        if e["kind"] == "message"
                    ]
                    seqs = [e["seq"] for e in history["result"]["events"]]
                    assert seqs == list(range(1, len(seqs) + 1))  # gapless
                    assert [body for _, body in messages] == ["before", "after"]


async def test_a_killed_owner_is_taken_over_and_no_acknowledged_message_is_lost() -> None:
    """SIGKILL of the owner: the socket served through it ends, the client reconnects to the
    surviving node, which takes the workspace over once the lease expired; the client resumes
    by sequence and finds every acknowledged message, without duplicates."""
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b"), lease_ttl_s=2.0) as (node_a, node_b):
            password, widget_key = _credentials(node_a.banner)
            http = Http(node_a.base)
            assert (await http.login("agent", password)).status == 200
            agent_url = f"ws://127.0.0.1:{node_a.port}/ws/v1/agent"
            on_b = f"ws://127.0.0.1:{node_b.port}/ws/v1/visitor?key={widget_key}"
            hello = {"identity": None, "page": None}
            async with open_peer(agent_url, cookie=http.cookie) as agent:
                assert (await agent.request("auth", token=None))["type"] == "result"
                assert _lease_holders(node_a.database_url) == ["node-a"]
                async with open_peer(on_b, origin=SITE) as vis:  # served by node-a
                    welcome = await vis.request("hello", token=None, resume={}, **hello)
                    token = welcome["result"]["visitor_token"]
                    acked = []
                    for n in range(5):
                        sent = await vis.request("send_message", client_msg_id=f"m{n}", text=f"{n}")
                        assert sent["type"] == "result", sent
                        acked.append(sent["result"]["seq"])
                    conv_id = sent["result"]["conversation_id"]
                    os.kill(node_a.pid, signal.SIGKILL)
                    killed_at = trio.current_time()
                    assert await vis.closed(timeout=10) == 1013  # its owner stopped listening
            # The client reconnects as the widget does, with its last sequence number, until
            # the surviving node has taken the workspace over (the lease expired).
            while True:
                try:
                    async with open_peer(on_b, origin=SITE) as vis:
                        resumed = await vis.request(
                            "hello", token=token, resume={conv_id: acked[1]}, **hello
                        )
                        after = await vis.request("send_message", client_msg_id="m5", text="5")
                        assert resumed["type"] == "result" and after["type"] == "result", after
                        takeover_s = trio.current_time() - killed_at
                        replayed = [
                            f["event"]["seq"]
                            for f in vis.pushes + vis.frames
                            if f.get("type") == "event" and f["event"]["kind"] == "message"
                        ]
                        history = await vis.request("get_history", conversation_id=conv_id)
                        break
                except ConnectionClosed as closed:  # 1013 "unavailable": not taken over yet
                    assert closed.reason.code == 1013, closed
                await trio.sleep(0.2)  # as the widget backs off before reconnecting
            print(f"takeover_s={takeover_s:.2f}")
            assert takeover_s <= 5.0
            assert _lease_holders(node_b.database_url) == ["node-b"]
            bodies = [e["body"] for e in history["result"]["events"] if e["kind"] == "message"]
            assert bodies == ["0", "1", "2", "3", "4", "5"]  # nothing acknowledged was lost
            seqs = [e["seq"] for e in history["result"]["events"]]
            assert seqs == list(range(1, len(seqs) + 1))
            assert after["result"]["seq"] == acked[-1] + 1
            assert set(acked[2:]) <= set(replayed)  # the resume replayed what followed seq 2


async def test_sigterm_on_the_owner_hands_its_workspace_over_at_once() -> None:
    """A node drained with SIGTERM releases its leases after its engine committed what it
    accepted: the client served through it reconnects to the other node, which takes the
    workspace over without waiting for the lease to expire."""
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b"), lease_ttl_s=30.0) as (node_a, node_b):
            password, widget_key = _credentials(node_a.banner)
            http = Http(node_a.base)
            assert (await http.login("agent", password)).status == 200
            agent_url = f"ws://127.0.0.1:{node_a.port}/ws/v1/agent"
            on_b = f"ws://127.0.0.1:{node_b.port}/ws/v1/visitor?key={widget_key}"
            hello = {"identity": None, "page": None}
            async with open_peer(agent_url, cookie=http.cookie) as agent:
                assert (await agent.request("auth", token=None))["type"] == "result"
                async with open_peer(on_b, origin=SITE) as vis:  # served by node-a
                    welcome = await vis.request("hello", token=None, resume={}, **hello)
                    token = welcome["result"]["visitor_token"]
                    sent = await vis.request("send_message", client_msg_id="m0", text="0")
                    conv_id, seq = sent["result"]["conversation_id"], sent["result"]["seq"]
                    os.kill(node_a.pid, signal.SIGTERM)
                    stopped_at = trio.current_time()
                    assert await agent.closed(timeout=20) == 1001  # its own sockets: 1001
                    # and those other nodes serve through it: going away, not a gap
                    assert await vis.closed(timeout=20) == 1001
            while True:
                try:
                    async with open_peer(on_b, origin=SITE) as vis:
                        await vis.request("hello", token=token, resume={conv_id: seq}, **hello)
                        after = await vis.request("send_message", client_msg_id="m1", text="1")
                        assert after["type"] == "result", after
                        history = await vis.request("get_history", conversation_id=conv_id)
                        break
                except ConnectionClosed as closed:  # 1013 "unavailable": not handed over yet
                    assert closed.reason.code == 1013, closed
                await trio.sleep(0.2)  # as the widget backs off before reconnecting
            handover_s = trio.current_time() - stopped_at
            print(f"handover_s={handover_s:.2f}")
            assert handover_s < 10.0  # far below the 30 s lease: it was released, not expired
            assert _lease_holders(node_b.database_url) == ["node-b"]
            events = history["result"]["events"]
            assert [e["body"] for e in events if e["kind"] == "message"] == ["0", "1"]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_cluster_status_lists_each_node_its_leases_and_its_bus_round_trip() -> None:
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b")) as (node_a, node_b):
            _, widget_key = _credentials(node_a.banner)
            on_b = f"ws://127.0.0.1:{node_b.port}/ws/v1/visitor?key={widget_key}"
            async with open_peer(on_b, origin=SITE) as vis:  # node-b takes the workspace
                hello = {"token": None, "identity": None, "resume": {}, "page": None}
                assert (await vis.request("hello", **hello))["type"] == "result"
                cmd = [sys.executable, "-m", "web.cli", "cluster", "status", "--json"]
                cmd += ["--database-url", node_a.database_url, "--bus-url", redis_url_or_skip()]
                done = await trio.run_process(cmd, capture_stdout=True, env=node_a.env)
            nodes = json.loads(done.stdout)["nodes"]
            # every live node, the one owning nothing yet too (placement's candidates)
            assert [(n["node"], n["leases"], n["listening"]) for n in nodes] == [
                ("node-a", 0, True),
                ("node-b", 1, True),
            ]
            assert [n["owned"] for n in nodes] == [0, 1] and nodes[1]["round_trip_ms"] < 2000
            assert "own_round_trip_ms" in nodes[1]  # None until it waited for the bus once


async def test_the_http_api_acts_on_a_chat_through_any_node() -> None:
    """An agent's HTTP call on the node that does not own the workspace is run by the owner:
    the chat closes and the visitor on the owner hears it."""
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b")) as (node_a, node_b):
            _, widget_key = _credentials(node_a.banner)
            on_a = f"ws://127.0.0.1:{node_a.port}/ws/v1/visitor?key={widget_key}"
            async with open_peer(on_a, origin=SITE) as vis:  # node-a takes the workspace
                hello = {"token": None, "identity": None, "resume": {}, "page": None}
                assert (await vis.request("hello", **hello))["type"] == "result"
                sent = await vis.request("send_message", client_msg_id="m0", text="Hello")
                conv_id = sent["result"]["conversation_id"]
                http = Http(node_b.base)  # the owner account: a supervisor may close any chat
                owner = re.search(r"owner: username 'owner' password '([^']+)'", node_a.banner)
                assert owner is not None
                assert (await http.login("owner", owner[1])).status == 200
                closed = await http.post(f"/api/v1/conversations/{conv_id}/close", {"tags": []})
                assert closed.status == 200, closed.body
                assert closed.json()["state"] == "closed"
                while True:  # the close reaches the visitor's socket on the owner
                    event = (await vis.push("event"))["event"]
                    if event["conversation_id"] == conv_id and event["kind"] == "status":
                        assert event["data"]["state"] == "closed", event
                        break
            assert _lease_holders(node_a.database_url) == ["node-a"]


async def test_three_nodes_agent_and_visitor_both_served_through_the_owner() -> None:
    """The owner is a third node: both sockets are proxied, chat still goes both ways."""
    with trio.fail_after(100):
        async with cluster(("node-a", "node-b", "node-c")) as (node_a, node_b, node_c):
            password, widget_key = _credentials(node_a.banner)
            hello = {"token": None, "identity": None, "resume": {}, "page": None}
            on_a = f"ws://127.0.0.1:{node_a.port}/ws/v1/visitor?key={widget_key}"
            async with open_peer(on_a, origin=SITE) as first:  # node-a takes the workspace
                assert (await first.request("hello", **hello))["type"] == "result"
            http = Http(node_b.base)
            assert (await http.login("agent", password)).status == 200
            agent_url = f"ws://127.0.0.1:{node_b.port}/ws/v1/agent"
            on_c = f"ws://127.0.0.1:{node_c.port}/ws/v1/visitor?key={widget_key}"
            async with (
                open_peer(agent_url, cookie=http.cookie) as agent,
                open_peer(on_c, origin=SITE) as vis,
            ):
                assert (await agent.request("auth", token=None))["type"] == "result"
                assert (await agent.request("set_status", status="accepting"))["type"] == "result"
                assert (await vis.request("hello", **hello))["type"] == "result"
                sent = await vis.request("send_message", client_msg_id="v-1", text="From C")
                conv_id = sent["result"]["conversation_id"]
                assigned = await agent.push("chat_assigned")
                assert assigned["conversation"]["conversation_id"] == conv_id
                await agent.request("watch", conversation_id=conv_id, after_seq=0)
                assert (await _message(agent, conv_id, "From C"))["seq"] == sent["result"]["seq"]
                reply = await agent.request(
                    "send_message", conversation_id=conv_id, client_msg_id="a-1", text="From B"
                )
                assert (await _message(vis, conv_id, "From B"))["seq"] == reply["result"]["seq"]
            assert _lease_holders(node_a.database_url) == ["node-a"]
