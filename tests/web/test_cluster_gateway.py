"""The gateway between two nodes in one process (two engines on one database, the real Redis
bus): a socket on the node that does not own its workspace is served by the owner, and a push
lost on the bus ends that socket, whose client then resumes by sequence and misses nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio
from coredis.tokens import PureToken

from engine import (
    ChatEngine,
    ConnectionMeta,
    DomainError,
    EngineConfig,
    SendMessage,
    VisitorPrincipal,
)
from engine.messages import EventPush
from storage import open_storage
from tests.redis_server import bus_prefix, redis_url_or_skip
from web.bus import Bus
from web.cluster import ClusterGateway
from web.ownership import Ownership


async def _node(
    nursery: trio.Nursery, storage: Any, name: str, url: str, prefix: str
) -> ClusterGateway:
    ownership = Ownership(storage, name, 30.0)
    engine = ChatEngine(storage, EngineConfig(), fence=ownership.fence)
    await nursery.start(engine.serve)
    gateway = ClusterGateway(engine, ownership, Bus(url, name, prefix=prefix), 64)
    await nursery.start(gateway.serve)
    return gateway


@contextlib.asynccontextmanager
async def _two_nodes(
    tmp_path: Path,
) -> AsyncIterator[tuple[ClusterGateway, ClusterGateway, VisitorPrincipal, trio.Nursery]]:
    """Two nodes on one database and the real Redis; node-a owns the workspace of the
    visitor ``me``."""
    url, prefix = redis_url_or_skip(), bus_prefix()
    database = f"sqlite:///{tmp_path}/cluster.db"
    async with (
        open_storage(database) as storage_a,
        open_storage(database) as storage_b,
        trio.open_nursery() as nursery,
    ):
        workspace = await storage_a.create_workspace(name="w")
        visitor = await storage_a.create_visitor(workspace.id, token_hash="h")
        node_a = await _node(nursery, storage_a, "node-a", url, prefix)
        node_b = await _node(nursery, storage_b, "node-b", url, prefix)
        assert await node_a.ownership.owner_of(workspace.id) == "node-a"
        me = VisitorPrincipal(workspace_id=workspace.id, visitor_id=visitor.id)
        yield node_a, node_b, me, nursery


async def _events_until_end(inbox: trio.MemoryReceiveChannel[Any]) -> list[int]:
    """Sequence numbers of the message events a socket received until its outbox ended."""
    seqs = []
    async for push in inbox:
        if isinstance(push, EventPush) and push.event.kind == "message":
            seqs.append(push.event.seq)
    return seqs


async def test_a_push_lost_on_the_bus_ends_the_proxied_socket_and_the_resume_misses_nothing(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with _two_nodes(tmp_path) as (node_a, node_b, me, nursery):
            send, inbox = trio.open_memory_channel[Any](64)
            conn = await node_b.connect(me, send, connection_id="s1", meta=ConnectionMeta())
            acks = []
            for n in range(3):
                ack = await node_b.request(conn, SendMessage(client_msg_id=f"m{n}", text=f"{n}"))
                acks.append(ack)
            conversation_id = acks[0].conversation_id
            seen: list[int] = []
            while len(seen) < 3:  # the owner's pushes, through the bus, in order
                push = await inbox.receive()
                if isinstance(push, EventPush) and push.event.kind == "message":
                    seen.append(push.event.seq)
            assert seen == [a.seq for a in acks]

            # A push is lost on the bus (at-most-once): the next one arrives with a number
            # further on. The socket's node must not carry on as if nothing happened.
            # The message sent meanwhile is stored, but its result must not reach the client
            # (it would carry a seq past the lost push): the request hears "unavailable".
            await node_a.bus.send("node-b", {"k": "push", "c": "s1", "n": 10**6, "p": {}})
            with pytest.raises(DomainError) as cut:
                await node_b.request(conn, SendMessage(client_msg_id="m3", text="3"))
            assert cut.value.code == "unavailable"
            after_gap = await _events_until_end(inbox)  # the outbox ends: the socket closes
            metrics = node_b.bus.metrics  # /metrics counts the gap and the socket it ended
            assert (metrics.push_gaps, metrics.proxies_ended) == (1, 1)
            assert metrics.received["push"] >= 4  # three events, the one after the gap

            # The client resumes from the last sequence it saw, on the same node.
            send2, inbox2 = trio.open_memory_channel[Any](64)
            again = await node_b.connect(
                me,
                send2,
                connection_id="s2",
                resume={conversation_id: seen[-1]},
                meta=ConnectionMeta(),
            )
            replayed: list[int] = []
            while len(replayed) < 1:
                push = await inbox2.receive()
                if isinstance(push, EventPush) and push.event.kind == "message":
                    replayed.append(push.event.seq)
            assert replayed == [seen[-1] + 1]  # m3, stored, missed by nothing
            assert seen[-1] + 1 not in after_gap
            # The client resends m3 (no result came): the same message, not a second one.
            more = await node_b.request(again, SendMessage(client_msg_id="m3", text="3"))
            assert more.seq == seen[-1] + 1
            await node_b.disconnect(again)
            nursery.cancel_scope.cancel()


async def test_a_node_that_lost_its_bus_subscription_ends_its_proxied_sockets(
    tmp_path: Path,
) -> None:
    """What was published to a node while it was not subscribed is lost, and no later push may
    come to show the gap: once it listens again, its proxied sockets end and resume."""
    with trio.fail_after(30):
        async with _two_nodes(tmp_path) as (_, node_b, me, nursery):
            send, inbox = trio.open_memory_channel[Any](64)
            conn = await node_b.connect(me, send, connection_id="s1", meta=ConnectionMeta())
            sent = await node_b.request(conn, SendMessage(client_msg_id="m0", text="0"))

            url = redis_url_or_skip()
            admin: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
            async with admin:
                listed = await admin.client_list(type_=PureToken.PUBSUB)
                ids = [c["id"] for c in listed if c.get("name") == node_b.bus.client_name]
                assert ids, "node-b's subscription is in CLIENT LIST under its name"
                for client_id in ids:
                    await admin.client_kill(identifier=int(client_id))

            seqs = await _events_until_end(inbox)  # ended once node-b listens again
            assert sent.seq in seqs
            assert node_b.bus.metrics.reconnects == 1
            assert node_b.bus.metrics.proxies_ended == 1
            assert node_b.bus.metrics.subscribed == 1
            nursery.cancel_scope.cancel()
