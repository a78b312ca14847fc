"""Leases with a fencing epoch (storage/_leases.py), two storage handles standing for two nodes
on one database: a former owner whose lease was taken over can never commit, and the sequence
stays gapless. Run on both backends (SQLite has the same table and the same append program)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import outcome
import pytest
import trio

from storage import AppendRequest, Fence, Lease, LeaseLost
from storage._base import SqlStorage
from tests.storage.conftest import Opener
from tests.storage.helpers import message, new_conversation


class OtherNode:
    """A second node's storage handle, opened and used in a task of its own: the PostgreSQL
    backend's trio-asyncio loop belongs to the task context that opened it, so two handles
    cannot be driven from one task."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Any](0)

    async def serve(self, opener: Opener, *, task_status: trio.TaskStatus[None]) -> None:
        async with opener() as store, self._receive:
            task_status.started()
            async for call, reply in self._receive:
                await reply.send(await outcome.acapture(call, store))

    async def run(self, call: Callable[[SqlStorage], Awaitable[Any]]) -> Any:
        reply_send, reply_receive = trio.open_memory_channel[outcome.Outcome[Any]](1)
        await self._send.send((call, reply_send))
        return (await reply_receive.receive()).unwrap()

    def close(self) -> None:
        self._send.close()


@asynccontextmanager
async def other_node(opener: Opener) -> AsyncIterator[OtherNode]:
    node = OtherNode()
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve, opener)
        try:
            yield node
        finally:
            node.close()


def fenced(request: AppendRequest, lease: Lease) -> AppendRequest:
    return attrs.evolve(request, fence=Fence(lease.name, lease.epoch))


async def test_a_paused_owner_is_refused_after_a_takeover_and_the_sequence_stays_gapless(
    storage: SqlStorage, open_store: Opener
) -> None:
    _, conv = await new_conversation(storage)
    name = f"conversation:{conv.id}"
    async with other_node(open_store) as node_b:  # its own connections to the same database
        lease_a = await storage.acquire_lease(name, "node-a", 30.0)
        assert lease_a is not None and lease_a.epoch == 1
        assert await node_b.run(lambda s: s.acquire_lease(name, "node-b", 30.0)) is None
        assert await node_b.run(lambda s: s.lease(name)) == lease_a
        first = await storage.append_many([fenced(message(conv, "from A"), lease_a)])
        assert first[0].event.seq == 1

        # A "pauses": it stops renewing and its lease runs out (expiring it now stands for
        # the time passing), so B takes over with the next epoch and commits.
        assert [lease.name for lease in await storage.renew_leases("node-a", 0.0)] == [name]
        lease_b = await node_b.run(lambda s: s.acquire_lease(name, "node-b", 30.0))
        assert lease_b is not None and lease_b.epoch == lease_a.epoch + 1
        fresh = fenced(message(conv, "from B"), lease_b)
        second = await node_b.run(lambda s: s.append_many([fresh]))
        assert second[0].event.seq == 2

        # A wakes up and commits as if nothing happened: refused whole, nothing stored.
        with pytest.raises(LeaseLost, match="another node owns it"):
            await storage.append_many(
                [fenced(message(conv, "late 1"), lease_a), fenced(message(conv, "late 2"), lease_a)]
            )
        assert await storage.renew_leases("node-a", 30.0) == []  # A learns it lost the lease
        history = await node_b.run(lambda s: s.history(conv.workspace_id, conv.id))
        assert [(e.seq, e.body) for e in history] == [(1, "from A"), (2, "from B")]

        # B keeps committing at seq 3: the refusal left no hole and no lock behind.
        again = fenced(message(conv, "again B"), lease_b)
        third = await node_b.run(lambda s: s.append_many([again]))
        assert third[0].event.seq == 3


async def test_a_stale_submission_fails_alone_its_batch_mates_commit(storage: SqlStorage) -> None:
    _, lost_conv = await new_conversation(storage, "lost")
    _, kept_conv = await new_conversation(storage, "kept")
    lost = await storage.acquire_lease(f"conversation:{lost_conv.id}", "node-a", 0.0)
    kept = await storage.acquire_lease(f"conversation:{kept_conv.id}", "node-a", 30.0)
    assert lost is not None and kept is not None
    taken = await storage.acquire_lease(f"conversation:{lost_conv.id}", "node-b", 30.0)
    assert taken is not None and taken.epoch == 2
    outcomes: dict[str, object] = {}

    async def submit(key: str, request: AppendRequest) -> None:
        try:
            outcomes[key] = (await storage.append_many([request]))[0].event.seq
        except LeaseLost as err:
            outcomes[key] = err

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:  # queued together: one group commit
            nursery.start_soon(submit, "lost", fenced(message(lost_conv, "stale"), lost))
            nursery.start_soon(submit, "kept", fenced(message(kept_conv, "fresh"), kept))
    assert isinstance(outcomes["lost"], LeaseLost)
    assert outcomes["kept"] == 1
    assert await storage.history(lost_conv.workspace_id, lost_conv.id) == []


async def test_acquire_renew_release_keep_epochs_growing(storage: SqlStorage) -> None:
    name = "router:w1"
    first = await storage.acquire_lease(name, "node-a", 30.0)
    assert first is not None and first.epoch == 1
    again = await storage.acquire_lease(name, "node-a", 30.0)  # a restarted node-a: new epoch
    assert again is not None and again.epoch == 2
    assert not await storage.release_lease(first)  # an old epoch cannot release the new one
    assert await storage.release_lease(again)
    assert await storage.lease(name) is None
    assert await storage.renew_leases("node-a", 30.0) == []  # released leases are not renewed
    taken = await storage.acquire_lease(name, "node-b", 30.0)  # free at once after release
    assert taken is not None and taken.epoch == 3 and taken.holder == "node-b"
    assert [lease.name for lease in await storage.leases()] == [name]


async def test_lease_counts_count_live_leases_of_a_prefix_per_holder(storage: SqlStorage) -> None:
    for name, holder in [
        ("workspace:w1", "node-a"),
        ("workspace:w2", "node-a"),
        ("workspace:w3", "node-b"),
        ("workspace_w4", "node-c"),  # not the prefix ("_" is no wildcard here)
        ("node:node-a", "node-a"),
        ("node:node-c", "node-c"),
    ]:
        assert await storage.acquire_lease(name, holder, 30.0) is not None
    released = await storage.acquire_lease("workspace:w5", "node-c", 30.0)
    assert released is not None and await storage.release_lease(released)
    assert await storage.lease_counts("workspace:") == {"node-a": 2, "node-b": 1}
    assert await storage.lease_counts("node:") == {"node-a": 1, "node-c": 1}
    assert await storage.lease_counts("router:") == {}
