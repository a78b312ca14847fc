"""The leases this node holds (``storage._leases``): its membership lease ``node:<id>``, which
tells the other nodes' placement it is live, and one ``workspace:<id>`` lease per workspace it
owns, whose epoch fences every append of that workspace (``Ownership.fence``)."""

from __future__ import annotations

import logging

import trio

from storage import Fence, Lease, Storage

log = logging.getLogger("livechat.cluster")

NODE_LEASE_PREFIX = "node:"
WORKSPACE_LEASE_PREFIX = "workspace:"


def node_lease_name(node_id: str) -> str:
    return f"{NODE_LEASE_PREFIX}{node_id}"


def lease_name(workspace_id: str) -> str:
    return f"{WORKSPACE_LEASE_PREFIX}{workspace_id}"


class Ownership:
    """The workspace leases this node holds; ``fence`` is what the engine's appends carry.
    Its membership lease (``node:<id>``) tells the other nodes' placement it is live."""

    def __init__(self, storage: Storage, node_id: str, ttl_s: float) -> None:
        self.storage = storage
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.owned: dict[str, Lease] = {}  # workspace id -> lease
        self.membership: Lease | None = None
        self._leaving = False
        self._lock = trio.Lock()

    def fence(self, workspace_id: str) -> Fence:
        """The fence of ``workspace_id``'s appends: its lease at this node's epoch, or epoch 0
        (which no lease ever has) when this node does not own it, so nothing commits."""
        lease = self.owned.get(workspace_id)
        return Fence(lease_name(workspace_id), lease.epoch if lease is not None else 0)

    async def owner_of(self, workspace_id: str) -> str:
        """The node owning ``workspace_id``; takes it for this node when nobody does."""
        if workspace_id in self.owned:
            return self.node_id
        async with self._lock:
            if workspace_id in self.owned:
                return self.node_id
            name = lease_name(workspace_id)
            current = await self.storage.lease(name)
            if current is not None and current.holder != self.node_id:
                return current.holder
            taken = await self.storage.acquire_lease(name, self.node_id, self.ttl_s)
            if taken is None:  # another node was quicker
                current = await self.storage.lease(name)
                return current.holder if current is not None else self.node_id
            log.info("took workspace %s (epoch %d)", workspace_id, taken.epoch)
            self.owned[workspace_id] = taken
            return self.node_id

    async def holder(self, workspace_id: str) -> str | None:
        """The node owning ``workspace_id`` now, without taking it; None when nobody does."""
        if workspace_id in self.owned:
            return self.node_id
        lease = await self.storage.lease(lease_name(workspace_id))
        return lease.holder if lease is not None else None

    async def join(self) -> None:
        """Take this node's membership lease: from now on placement may choose this node."""
        name = node_lease_name(self.node_id)
        self.membership = await self.storage.acquire_lease(name, self.node_id, self.ttl_s)
        if self.membership is None:
            log.error("lease %s is held by another process: is --node-id unique?", name)

    async def renew(self) -> list[str]:
        """Renew every lease of this node; returns the workspaces lost since the last time.
        A membership lease found gone (expired through a long database outage) is taken
        again."""
        kept = {lease.name for lease in await self.storage.renew_leases(self.node_id, self.ttl_s)}
        lost = [ws for ws in self.owned if lease_name(ws) not in kept]
        for workspace_id in lost:
            log.error("lost workspace %s: another node took its lease over", workspace_id)
            del self.owned[workspace_id]
        if node_lease_name(self.node_id) not in kept and not self._leaving:
            await self.join()
        return lost

    async def release(self, workspace_id: str) -> bool:
        """Hand ``workspace_id`` back (idle): it is no longer this node's to commit for at
        once; True when its lease was released at this node's epoch. A release that fails
        keeps the lease, as it may not have happened (the next renewal tells)."""
        async with self._lock:
            lease = self.owned.pop(workspace_id, None)
            if lease is None:
                return False
            try:
                return await self.storage.release_lease(lease)
            except BaseException:
                self.owned[workspace_id] = lease
                raise

    async def release_all(self) -> None:
        """Hand every lease back (after the engine drained), membership first so nobody
        places a workspace here any more: other nodes may take them at once; bounded and
        shielded, a lease not released expires after its TTL anyway."""
        self._leaving = True
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            try:
                if self.membership is not None:
                    await self.storage.release_lease(self.membership)
                for lease in list(self.owned.values()):
                    await self.storage.release_lease(lease)
            except Exception as err:  # the database down: the leases expire by themselves
                log.warning("could not release leases: %s", type(err).__name__)
        self.membership = None
        self.owned.clear()

    def give_up(self) -> list[str]:
        """Forget every lease without the database (it cannot be reached to renew them);
        returns the workspaces given up. A lease not taken over meanwhile is renewed again by
        ``renew`` once the database is back, and taken back (new epoch) on first use."""
        given_up = list(self.owned)
        if given_up:
            log.error(
                "gave up %d workspaces: leases not renewed for %.1f s", len(given_up), self.ttl_s
            )
        self.owned.clear()
        return given_up
