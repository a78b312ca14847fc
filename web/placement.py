"""Which node a workspace goes to when nobody owns it, and when its owner hands it back.

Placement (``Placement.owner_of``): the node that learns of an unowned workspace (a client of
it connected there) counts the live nodes' workspace leases and asks the one holding fewest to
take it (the bus op ``take``, ``web/cluster.py``); among nodes holding equally few it keeps the
workspace itself when it is one of them (its client is here: no hop through the bus), else the
tie goes to the highest rendezvous hash of workspace and node, so every node breaks it alike.
A chosen node that does not answer within ``PLACE_TIMEOUT_S`` (paused, overloaded, draining)
is passed over: this node takes the workspace itself. The choice only routes the attempt;
exactly one owner is the lease's doing (``acquire_lease`` is atomic in the database), so two
nodes placing one workspace at once, on stale counts, still end with one owner that both
then forward to.

The live nodes: those holding their membership lease ``node:<id>`` (taken at start, renewed
with the workspace leases, released first on drain) and listening on the bus now. A node
that joins holds no workspace, so new workspaces go to it until it carries its share;
placements this node has asked for and not heard back about count as leases already.

Idle release (``IdleRelease``): an owner hands a workspace back (``release_lease``, fenced by
its epoch) once its engine has held nothing for it for ``cluster.idle_release_s``: no socket
(local or served for another node), no live conversation, visitor or agent actor, no router
timer (``ChatEngine.workspaces_at_rest``). Its next activation then lands by load, so work
spreads back over the nodes as they come and go. A workspace with a chat queued, offered or in
a grace period is never handed back while that lasts.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping

import trio

from engine import ChatEngine
from storage import StorageError
from web.bus import Bus, BusError
from web.ownership import NODE_LEASE_PREFIX, WORKSPACE_LEASE_PREFIX, Ownership

log = logging.getLogger("livechat.cluster")

SWEEPS_PER_IDLE_RELEASE = 4  # a workspace is handed back within 1.25 idle periods of resting
PLACE_TIMEOUT_S = 1.0  # how long the chosen node has to take a workspace before this one does


def rendezvous(workspace_id: str, node_id: str) -> int:
    """The weight of ``node_id`` for ``workspace_id`` (highest random weight hashing): the
    same on every node and every run, independent of the other nodes."""
    digest = hashlib.sha256(f"{workspace_id}\x00{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def choose(workspace_id: str, loads: Mapping[str, int], here: str) -> str:
    """The node that should own ``workspace_id``: fewest workspaces in ``loads`` (live node ->
    workspace leases); ties go to ``here`` if it is one of them, else to the highest
    rendezvous weight. ``here`` when ``loads`` is empty."""
    if not loads:
        return here
    fewest = min(loads.values())
    tied = [node for node, load in loads.items() if load == fewest]
    if here in tied:
        return here
    return max(tied, key=lambda node: (rendezvous(workspace_id, node), node))


class Placement:
    """``owner_of`` for the gateway: the workspace's owner, placed by load when it has none."""

    def __init__(self, ownership: Ownership, bus: Bus) -> None:
        self.ownership = ownership
        self.bus = bus
        self.node_id = ownership.node_id
        self._asking: Counter[str] = Counter()  # node -> placements asked, not answered yet

    async def owner_of(self, workspace_id: str) -> str:
        """The node owning ``workspace_id``; when nobody does, the node chosen by load takes
        it (this one when the chosen node does not answer in time). ``StorageError`` as the
        lease calls raise it."""
        holder = await self.ownership.holder(workspace_id)
        if holder is not None and holder != self.node_id:
            return holder
        if holder is None:
            target = choose(workspace_id, await self.loads(), self.node_id)
            if target != self.node_id:
                taken = await self._ask_to_take(target, workspace_id)
                if taken is not None:
                    return taken
        # ours (a lease this node holds but forgot, after a failed release), chosen, or the
        # chosen node did not take it: take it here (or learn who was quicker)
        return await self.ownership.owner_of(workspace_id)

    async def loads(self) -> dict[str, int]:
        """Live node -> workspace leases it holds (plus placements asked of it and pending);
        this node is always live. Without the bus, only this node is known to be."""
        members = await self.members()
        try:
            live = await self.bus.listening(sorted(members)) if members else set()
        except BusError:
            live = set()
        counts = await self.ownership.storage.lease_counts(WORKSPACE_LEASE_PREFIX)
        return {node: counts.get(node, 0) + self._asking[node] for node in live | {self.node_id}}

    async def members(self) -> set[str]:
        """The other nodes holding their membership lease: live ones, and any that stopped
        without releasing it (killed) until it expires. ``StorageError`` as the read raises."""
        members = set(await self.ownership.storage.lease_counts(NODE_LEASE_PREFIX))
        members.discard(self.node_id)
        return members

    async def _ask_to_take(self, node: str, workspace_id: str) -> str | None:
        """The owner ``node`` reports after taking ``workspace_id`` (itself, or whoever was
        quicker); None when it did not answer within ``PLACE_TIMEOUT_S`` or refused."""
        self._asking[node] += 1
        try:
            with trio.move_on_after(PLACE_TIMEOUT_S):
                answer = await self.bus.request(node, "take", {"workspace": workspace_id})
                log.info("placed workspace %s on %s", workspace_id, answer["owner"])
                return str(answer["owner"])
            log.warning("placing workspace %s: %s did not answer in time", workspace_id, node)
        except BusError as err:
            log.warning("placing workspace %s: %s: %s", workspace_id, node, err)
        finally:
            self._asking[node] -= 1
            if self._asking[node] <= 0:
                del self._asking[node]
        return None


class IdleRelease:
    """The owner's sweep that hands back workspaces at rest for ``idle_release_s`` (0: never);
    ``on_released`` ends whatever reached a released workspace meanwhile (web/cluster.py)."""

    def __init__(
        self,
        engine: ChatEngine,
        ownership: Ownership,
        idle_release_s: float,
        on_released: Callable[[str], None],
    ) -> None:
        self.engine = engine
        self.ownership = ownership
        self.idle_release_s = idle_release_s
        self._on_released = on_released
        self._resting_since: dict[str, float] = {}  # workspace -> first sweep that found it so

    async def serve(self) -> None:
        if self.idle_release_s <= 0:
            return
        while True:
            await trio.sleep(self.idle_release_s / SWEEPS_PER_IDLE_RELEASE)
            try:
                with trio.fail_after(self.ownership.ttl_s):
                    await self.sweep()
            except (StorageError, trio.TooSlowError) as err:  # the next sweep tries again
                log.warning("could not hand idle workspaces back: %s", type(err).__name__)

    async def sweep(self) -> list[str]:
        """Hand back what has rested long enough; returns the workspaces released."""
        now = trio.current_time()
        resting = set(await self.engine.workspaces_at_rest(list(self.ownership.owned)))
        for workspace_id in [ws for ws in self._resting_since if ws not in resting]:
            del self._resting_since[workspace_id]
        released = []
        for workspace_id in sorted(resting):
            since = self._resting_since.setdefault(workspace_id, now)
            if now - since < self.idle_release_s:
                continue
            del self._resting_since[workspace_id]
            if await self.ownership.release(workspace_id):
                log.info("handed idle workspace %s back", workspace_id)
                released.append(workspace_id)
            self._on_released(workspace_id)
        return released
