"""Placement by load and idle release (web/placement.py): nodes in one process, each its own
engine and storage handle on one database, on the real Redis bus. Workspaces activated
through one node spread over the live nodes, a node that joins takes new ones, a chosen node
that does not answer is passed over, and a workspace its owner held nothing for is handed back
and placed again by load; one that has a chat waiting is not."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from engine import (
    AgentPrincipal,
    ChatEngine,
    ConnectionMeta,
    EngineConfig,
    SendMessage,
    VisitorPrincipal,
)
from engine.commands import Close
from storage import Fence, LeaseLost, Role, open_storage
from tests.engine.conftest import wait_until
from tests.redis_server import bus_prefix, redis_url_or_skip
from tests.storage.helpers import message
from tests.web.client import open_peer
from tests.web.server import free_port
from tests.web.test_cluster import (
    SITE,
    Node,
    Output,
    _credentials,
    _lease_holders,
    cluster,
)
from web.bus import Bus, Message
from web.cluster import ClusterGateway
from web.ownership import Ownership, lease_name, node_lease_name
from web.placement import choose

# actors of a visitor who left passivate at once, routers look at their grace periods often
QUICK = EngineConfig(idle_timeout_s=0.2, visitor_leave_grace_s=0.2, tick_interval_s=0.1)


class Nodes:
    """Nodes on one SQLite database and one Redis bus prefix, started on demand."""

    def __init__(self, database: str, nursery: trio.Nursery) -> None:
        self.database = database
        self.nursery = nursery
        self.url, self.prefix = redis_url_or_skip(), bus_prefix()

    async def start(
        self, name: str, *, idle_release_s: float = 0.0, config: EngineConfig = QUICK
    ) -> ClusterGateway:
        return await self.nursery.start(self._serve, name, idle_release_s, config)  # type: ignore[no-any-return]

    async def _serve(
        self,
        name: str,
        idle_release_s: float,
        config: EngineConfig,
        *,
        task_status: trio.TaskStatus[ClusterGateway],
    ) -> None:
        async with open_storage(self.database) as storage, trio.open_nursery() as nursery:
            ownership = Ownership(storage, name, 30.0)
            engine = ChatEngine(storage, config, fence=ownership.fence)
            await nursery.start(engine.serve)
            bus = Bus(self.url, name, prefix=self.prefix)
            gateway = ClusterGateway(engine, ownership, bus, 64, idle_release_s=idle_release_s)
            await nursery.start(gateway.serve)
            task_status.started(gateway)


@asynccontextmanager
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Nodes, Any]]:
    database = f"sqlite:///{tmp_path}/cluster.db"
    async with open_storage(database) as storage, trio.open_nursery() as nursery:
        yield Nodes(database, nursery), storage
        nursery.cancel_scope.cancel()


def test_the_fewest_loaded_node_is_chosen_ties_stay_here_else_go_by_rendezvous() -> None:
    assert choose("w", {"a": 2, "b": 0, "c": 1}, "a") == "b"
    assert choose("w", {"a": 1, "b": 1}, "a") == "a"  # a tie: the client is here, no hop
    assert choose("w", {}, "a") == "a"
    # a tie among the others: every node breaks it alike, whatever order it lists them in
    picks = {choose(f"w{n}", {"a": 1, "b": 0, "c": 0}, "a") for n in range(40)}
    assert picks == {"b", "c"}
    for n in range(40):
        assert choose(f"w{n}", {"a": 1, "b": 0, "c": 0}, "a") == choose(
            f"w{n}", {"c": 0, "b": 0, "a": 1}, "a"
        )


async def test_workspaces_activated_through_one_node_spread_and_a_joining_node_takes_new_ones(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with nodes(tmp_path) as (started, storage):
            node_a = await started.start("node-a")
            node_b = await started.start("node-b")
            spaces = [(await storage.create_workspace(name=f"w{n}")).id for n in range(6)]
            owners = [await node_a.placement.owner_of(ws) for ws in spaces]
            assert Counter(owners) == {"node-a": 3, "node-b": 3}
            assert await storage.lease_counts("workspace:") == {"node-a": 3, "node-b": 3}
            # each node knows what it owns, and nothing is owned twice
            assert set(node_a.ownership.owned) | set(node_b.ownership.owned) == set(spaces)
            assert not set(node_a.ownership.owned) & set(node_b.ownership.owned)
            assert [await node_b.placement.owner_of(ws) for ws in spaces] == owners

            # A socket through node-a of a workspace placed on node-b is served by node-b.
            on_b = next(ws for ws, owner in zip(spaces, owners, strict=True) if owner == "node-b")
            visitor = await storage.create_visitor(on_b, token_hash="h")
            me = VisitorPrincipal(workspace_id=on_b, visitor_id=visitor.id)
            send, _inbox = trio.open_memory_channel[Any](64)
            conn = await node_a.connect(me, send, connection_id="s1", meta=ConnectionMeta())
            ack = await node_a.request(conn, SendMessage(client_msg_id="m1", text="hi"))
            assert ack.seq == 1 and len(node_b.engine.hub.workspace_visitor_connections(on_b)) == 1
            await node_a.disconnect(conn)

            # A third node joins: it owns nothing, so the new workspaces go to it first.
            node_c = await started.start("node-c")
            fresh = [(await storage.create_workspace(name=f"x{n}")).id for n in range(6)]
            placed = [await node_a.placement.owner_of(ws) for ws in fresh]
            assert placed[:3] == ["node-c"] * 3
            assert Counter(placed[3:]) == {"node-a": 1, "node-b": 1, "node-c": 1}
            assert await storage.lease_counts("workspace:") == {
                "node-a": 4,
                "node-b": 4,
                "node-c": 4,
            }
            assert set(node_c.ownership.owned) == {
                ws for ws, owner in zip(fresh, placed, strict=True) if owner == "node-c"
            }


async def test_a_chosen_node_that_does_not_answer_is_passed_over_and_a_silent_one_never_chosen(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with nodes(tmp_path) as (started, storage):
            node_a = await started.start("node-a")
            # A member that listens on the bus but never answers (a stuck node), and one that
            # holds its membership lease but no longer listens (killed, lease not yet expired).
            stuck = Bus(started.url, "node-stuck", prefix=started.prefix)

            asked: list[tuple[str, str]] = []

            async def never_answer(message: Message) -> None:
                asked.append((message["op"], message["workspace"]))
                await trio.sleep_forever()

            await started.nursery.start(stuck.serve, never_answer, lambda message: None)
            for name in ("node-stuck", "node-gone"):
                assert await storage.acquire_lease(node_lease_name(name), name, 30.0)
            assert await node_a.placement.loads() == {"node-a": 0, "node-stuck": 0}

            first, second = [(await storage.create_workspace(name=f"w{n}")).id for n in range(2)]
            assert await node_a.placement.owner_of(first) == "node-a"  # a tie: stays here
            assert await node_a.placement.owner_of(second) == "node-a"  # stuck: passed over
            assert asked == [("take", second)]  # it was chosen and asked first
            assert await storage.lease_counts("workspace:") == {"node-a": 2}


async def test_a_draining_node_takes_nothing_and_a_node_that_left_is_never_chosen(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with nodes(tmp_path) as (started, storage):
            node_a = await started.start("node-a")
            node_b = await started.start("node-b")
            first, second, third = [
                (await storage.create_workspace(name=f"w{n}")).id for n in range(3)
            ]
            assert await node_a.placement.owner_of(first) == "node-a"
            # node-b, the least loaded, drains (SIGTERM): asked, it refuses; node-a takes it.
            await node_b.engine.drain()
            assert await node_a.placement.owner_of(second) == "node-a"
            assert not node_b.ownership.owned
            # Then it hands its leases back, its membership first: no longer a candidate.
            await node_b.ownership.release_all()
            assert await node_a.placement.loads() == {"node-a": 2}
            assert await node_a.placement.owner_of(third) == "node-a"
            assert await storage.lease_counts("node:") == {"node-a": 1}


async def test_an_idle_workspace_is_handed_back_and_placed_again_one_with_a_chat_waiting_is_not(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with nodes(tmp_path) as (started, storage):
            node_a = await started.start("node-a", idle_release_s=0.3)
            node_b = await started.start("node-b", idle_release_s=0.3)
            idle = (await storage.create_workspace(name="idle")).id
            busy = (await storage.create_workspace(name="busy")).id
            owner = await storage.create_agent(
                busy, username="owner", display_name="O", password_hash=None, role=Role.OWNER
            )

            async def visit(node: ClusterGateway, ws: str, text: str | None) -> str | None:
                visitor = await storage.create_visitor(ws, token_hash=None)
                me = VisitorPrincipal(workspace_id=ws, visitor_id=visitor.id)
                send, _inbox = trio.open_memory_channel[Any](64)
                conn = await node.connect(
                    me, send, connection_id=f"{ws}-{visitor.id}", meta=ConnectionMeta()
                )
                ack = None
                if text is not None:
                    ack = await node.request(conn, SendMessage(client_msg_id="m", text=text))
                await node.disconnect(conn)
                return ack.conversation_id if ack is not None else None

            await visit(node_a, idle, None)  # node-a takes it (a tie)
            conversation_id = await visit(node_b, busy, "anyone?")  # node-b: fewest
            assert conversation_id is not None
            old = node_a.ownership.owned[idle]
            assert (await storage.lease(lease_name(busy))).holder == "node-b"

            # The visitor left and nothing is pending: node-a hands the workspace back.
            async def released(ws: str) -> bool:
                return await storage.lease(lease_name(ws)) is None

            await wait_until(lambda: released(idle), what="the idle workspace handed back")
            assert idle not in node_a.ownership.owned
            routers = node_a.engine._ctx.routers
            assert routers is not None and not routers.is_active(idle)  # its router stopped

            # The chat waiting in node-b's queue holds the other: its actors have passivated,
            # the visitor's leave grace ran out, and still the router has work.
            conversations, visitors = node_b.engine._ctx.conversations, node_b.engine._ctx.visitors
            assert conversations is not None and visitors is not None

            def actors_gone() -> bool:
                live = conversations.keys() + visitors.keys()
                return not [key for key in live if key[0] == busy]

            await wait_until(actors_gone, what="the busy workspace's actors passivated")
            assert await node_b.engine.workspaces_at_rest([busy]) == []
            assert busy in node_b.ownership.owned

            # The idle one's next activation, through node-b, lands by load: on node-a.
            assert await node_b.placement.owner_of(idle) == "node-a"
            again = node_a.ownership.owned[idle]
            assert again.epoch > old.epoch
            # fencing holds across the hand-over: the former epoch commits nothing
            visitor = await storage.create_visitor(idle, token_hash=None)
            conversation = await storage.create_conversation(idle, visitor_id=visitor.id)
            stale = attrs.evolve(message(conversation, "late"), fence=Fence(old.name, old.epoch))
            with pytest.raises(LeaseLost):
                await storage.append(stale)

            # Once the chat is closed, nothing holds the busy workspace either.
            principal = AgentPrincipal(
                workspace_id=busy, agent_id=owner.id, role=Role.OWNER, display_name="O"
            )
            await node_b.request_as(principal, Close(conversation_id=conversation_id))
            await wait_until(lambda: released(busy), what="the busy workspace handed back")
            assert busy not in node_b.ownership.owned


# -- real node processes on PostgreSQL and Redis

QUICK_NODES = {
    "LIVECHAT_CLUSTER__IDLE_RELEASE_S": "1.0",
    "LIVECHAT_ENGINE__IDLE_TIMEOUT_S": "0.5",
    "LIVECHAT_ENGINE__VISITOR_LEAVE_GRACE_S": "0.5",
}
HELLO: dict[str, Any] = {"token": None, "identity": None, "resume": {}, "page": None}


async def _create_workspace(node: Node, name: str) -> str:
    """A workspace created with ``livechat admin`` (as an operator would); its widget key."""
    cmd = [sys.executable, "-m", "web.cli", "admin", "create-workspace", "--name", name]
    cmd += ["--owner-username", f"owner-{name}", "--allowed-origin", SITE]
    cmd += ["--database-url", node.database_url]
    done = await trio.run_process(cmd, capture_stdout=True, env=node.env)
    found = re.search(r"widget key (\S+)", done.stdout.decode())
    assert found, done.stdout
    return found[1]


async def _status(node: Node) -> list[tuple[str, int]]:
    """``livechat cluster status --json``: (node, workspace leases) of every live node."""
    cmd = [sys.executable, "-m", "web.cli", "cluster", "status", "--json"]
    cmd += ["--database-url", node.database_url, "--bus-url", redis_url_or_skip()]
    done = await trio.run_process(cmd, capture_stdout=True, env=node.env)
    return [(n["node"], n["leases"]) for n in json.loads(done.stdout)["nodes"]]


@asynccontextmanager
async def _joined(first: Node, name: str, readers: trio.Nursery) -> AsyncIterator[Node]:
    """One more node joining the running cluster of ``first``; stopped with SIGTERM. Its
    output is read in ``readers`` (a node whose output is not read blocks on it)."""
    port = free_port()
    cmd = [sys.executable, "-m", "web.cli", "serve", "--port", str(port), "--node-id", name]
    cmd += ["--database-url", first.database_url, "--bus-url", redis_url_or_skip()]
    cmd += ["--allowed-origins", SITE]
    proc = await trio.lowlevel.open_process(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=first.env
    )
    try:
        output = Output(proc)
        banner = await output.wait_for(r"Running on")
        readers.start_soon(output.drain)
        yield Node(name, port, banner, first.database_url, proc.pid, first.env, output)
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()


async def test_node_processes_spread_workspaces_a_joining_one_takes_new_ones_idle_ones_move() -> (
    None
):
    with trio.fail_after(150):
        async with cluster(("node-a", "node-b"), extra_env=QUICK_NODES) as (node_a, _node_b):
            url = node_a.database_url
            _, demo_key = _credentials(node_a.banner)
            keys = [demo_key] + [await _create_workspace(node_a, f"w{n}") for n in range(3)]

            async def visit(stack: AsyncExitStack, key: str) -> None:
                """A visitor of the workspace of ``key``, through node-a, until ``stack`` ends."""
                socket = f"ws://127.0.0.1:{node_a.port}/ws/v1/visitor?key={key}"
                peer = await stack.enter_async_context(open_peer(socket, origin=SITE))
                assert (await peer.request("hello", **HELLO))["type"] == "result"

            async with (
                trio.open_nursery() as readers,
                AsyncExitStack() as staying,
                AsyncExitStack() as leaving,
            ):
                await visit(staying, keys[0])
                for key in keys[1:]:
                    await visit(leaving, key)
                # Every client came in through node-a: the workspaces spread all the same.
                assert sorted(_lease_holders(url)) == ["node-a", "node-a", "node-b", "node-b"]
                assert await _status(node_a) == [("node-a", 2), ("node-b", 2)]

                async with _joined(node_a, "node-c", readers):
                    # The new node owns nothing: the next new workspace goes to it.
                    assert await _status(node_a) == [("node-a", 2), ("node-b", 2), ("node-c", 0)]
                    await visit(leaving, await _create_workspace(node_a, "late"))
                    assert await _status(node_a) == [("node-a", 2), ("node-b", 2), ("node-c", 1)]

                    # All but the first client leave: their workspaces, idle, are handed back.
                    await leaving.aclose()
                    await wait_until(
                        lambda: _lease_holders(url) == ["node-a"], what="idle workspaces back"
                    )
                    # and placed again by load: not on node-a, which still owns one
                    await visit(leaving, keys[1])
                    holders = sorted(_lease_holders(url))
                    assert len(holders) == 2 and holders[0] == "node-a", holders
                    assert holders[1] in ("node-b", "node-c"), holders
