"""The live visitor list gathered from every node's socket registry (web/live_visitors.py):
two gateways in one process on one database and the real Redis bus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from engine import ChatEngine, EngineConfig
from storage import open_storage
from tests.redis_server import bus_prefix, redis_url_or_skip
from web.bus import Bus
from web.cluster import ClusterGateway
from web.live_visitors import VisitorRollCall
from web.ownership import Ownership, node_lease_name
from web.schemas_chats import LiveVisitor
from web.sockets import LiveSocket, SocketRegistry


async def _node(
    nursery: trio.Nursery, storage: Any, name: str, url: str, prefix: str
) -> tuple[VisitorRollCall, SocketRegistry]:
    ownership = Ownership(storage, name, 30.0)
    engine = ChatEngine(storage, EngineConfig(), fence=ownership.fence)
    await nursery.start(engine.serve)
    gateway = ClusterGateway(engine, ownership, Bus(url, name, prefix=prefix), 64)
    await nursery.start(gateway.serve)  # takes its membership lease
    sockets = SocketRegistry()
    return VisitorRollCall(sockets, gateway), sockets


def _visitor(sockets: SocketRegistry, workspace_id: str, visitor_id: str, at: float) -> None:
    """A visitor's socket past ``hello``, as the WebSocket layer registers it."""
    sock = LiveSocket(id=f"{visitor_id}@{at}", kind="visitor", workspace_id="", ip="10.0.0.1")
    sockets.add(sock)
    sockets.bind(sock, workspace_id=workspace_id, visitor_id=visitor_id)
    sock.connected_at = at


async def test_visitors_on_both_nodes_are_merged_and_a_silent_member_is_named(
    tmp_path: Path,
) -> None:
    url, prefix = redis_url_or_skip(), bus_prefix()
    database = f"sqlite:///{tmp_path}/cluster.db"
    with trio.fail_after(30):
        async with (
            open_storage(database) as storage_a,
            open_storage(database) as storage_b,
            trio.open_nursery() as nursery,
        ):
            roll_a, sockets_a = await _node(nursery, storage_a, "node-a", url, prefix)
            roll_b, sockets_b = await _node(nursery, storage_b, "node-b", url, prefix)
            _visitor(sockets_a, "w1", "v-both", 200.0)
            _visitor(sockets_b, "w1", "v-both", 100.0)  # its older tab is on node-b
            _visitor(sockets_b, "w1", "v-b", 300.0)
            _visitor(sockets_b, "w2", "v-other-workspace", 50.0)
            pending = LiveSocket(id="p", kind="visitor", workspace_id="w1", ip="10.0.0.2")
            sockets_a.add(pending)  # connected, no hello yet: not a visitor to list

            expected = (
                LiveVisitor(visitor_id="v-both", connections=2, connected_at=100.0),
                LiveVisitor(visitor_id="v-b", connections=1, connected_at=300.0),
            )
            for roll in (roll_a, roll_b):  # the same list, asked on either node
                live = await roll.gather("w1", timeout_s=5.0)
                assert live.visitors == expected
                assert (live.partial, live.nodes_missing) == (False, ())

            # One visitor alone (a profile's "online"), whichever node its tabs are on.
            one = await roll_a.gather("w1", timeout_s=5.0, visitor_id="v-b")
            assert one.visitors == expected[1:]
            assert (await roll_b.gather("w1", timeout_s=5.0, visitor_id="v-nobody")).visitors == ()

            # A member that does not listen (killed: its lease not yet expired) is named,
            # and the others' visitors are listed all the same.
            assert await storage_a.acquire_lease(node_lease_name("node-c"), "node-c", 30.0)
            live = await roll_a.gather("w1", timeout_s=5.0)
            assert live.visitors == expected
            assert (live.partial, live.nodes_missing) == (True, ("node-c",))
            nursery.cancel_scope.cancel()


async def test_one_process_lists_its_own_sockets_and_is_never_partial() -> None:
    sockets = SocketRegistry()
    _visitor(sockets, "w1", "v1", 10.0)
    _visitor(sockets, "w1", "v1", 5.0)
    live = await VisitorRollCall(sockets).gather("w1", timeout_s=1.0)
    assert live.visitors == (LiveVisitor(visitor_id="v1", connections=2, connected_at=5.0),)
    assert (live.partial, live.nodes_missing) == (False, ())
