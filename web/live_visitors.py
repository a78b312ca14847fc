"""The visitors connected to a workspace now, on every node of a cluster (``GET /visitors/live``).

Each node knows only the sockets it terminates (its ``SocketRegistry``). With one process that
is all of them. In a cluster a visitor's sockets may be on any node, whichever owns the
workspace, so the node asked reads its own registry and asks every other member node (those
holding their membership lease, ``Placement.members``) for theirs over the bus, all at once,
under the caller's deadline: the request op ``live_visitors``, which each node answers from its
own registry alone (no storage, no engine, so an owner's load does not slow it). The answers are
merged per visitor: connections summed, the earliest ``connected_at``. A visitor's profile
(``GET /visitors/{id}``, ``online``) asks the same, for that visitor alone, when none of its
sockets is on this node.

A node that does not answer in time (paused, overloaded, not listening on the bus, Redis down)
is left out and named in ``nodes_missing``: a partial list says so, never silently. A node
killed without releasing its membership lease is named there until that lease expires
(``cluster.lease_ttl_s``); a node that drained released it first and is not asked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio

from web.bus import BusError, Message
from web.schemas_chats import LiveVisitor, LiveVisitors
from web.sockets import SocketRegistry

if TYPE_CHECKING:
    from web.cluster import ClusterGateway

log = logging.getLogger("livechat.cluster")

OP = "live_visitors"


def local_visitors(
    sockets: SocketRegistry, workspace_id: str, visitor_id: str | None = None
) -> list[LiveVisitor]:
    """This node's visitor sockets of ``workspace_id`` (those past ``hello``), per visitor;
    only ``visitor_id``'s when given."""
    merged: dict[str, LiveVisitor] = {}
    if visitor_id is None:
        socks = sockets.of_workspace(workspace_id)
    else:
        socks = sockets.of_visitor(workspace_id, visitor_id)
    for sock in socks:
        if sock.visitor_id is not None:
            entry = LiveVisitor(
                visitor_id=sock.visitor_id, connections=1, connected_at=sock.connected_at
            )
            _add(merged, entry)
    return list(merged.values())


def _add(merged: dict[str, LiveVisitor], entry: LiveVisitor) -> None:
    seen = merged.get(entry.visitor_id)
    if seen is not None:
        entry = LiveVisitor(
            visitor_id=entry.visitor_id,
            connections=seen.connections + entry.connections,
            connected_at=min(seen.connected_at, entry.connected_at),
        )
    merged[entry.visitor_id] = entry


def _parse(answer: Any) -> list[LiveVisitor]:
    """Another node's answer; ``ValueError`` when it is not one (another program version)."""
    try:
        return [
            LiveVisitor(
                visitor_id=str(item["visitor_id"]),
                connections=int(item["connections"]),
                connected_at=float(item["connected_at"]),
            )
            for item in answer["visitors"]
        ]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a {OP} answer: {err!r}") from err


class VisitorRollCall:
    """``gather`` for the HTTP API; in a cluster, this node's answers to the others too."""

    def __init__(self, sockets: SocketRegistry, gateway: ClusterGateway | None = None) -> None:
        self.sockets = sockets
        self.gateway = gateway
        if gateway is not None:
            gateway.ops[OP] = self._answer

    async def gather(
        self, workspace_id: str, *, timeout_s: float, visitor_id: str | None = None
    ) -> LiveVisitors:
        """The workspace's visitors (only ``visitor_id``, when given) connected to any node;
        the other nodes have ``timeout_s`` (from now) to answer, and those that did not are in
        ``nodes_missing``. Reading the membership leases past it raises ``trio.TooSlowError``;
        ``StorageError`` as it raises."""
        merged: dict[str, LiveVisitor] = {}
        for entry in local_visitors(self.sockets, workspace_id, visitor_id):
            _add(merged, entry)
        missing: list[str] = []
        if self.gateway is not None:
            deadline = trio.current_time() + timeout_s
            with trio.fail_after(timeout_s):
                members = await self.gateway.placement.members()
            answers: dict[str, list[LiveVisitor]] = {}
            async with trio.open_nursery() as nursery:
                for node in sorted(members):
                    body = {"workspace": workspace_id, "visitor": visitor_id}
                    nursery.start_soon(self._ask, node, body, deadline, answers)
            for node in sorted(members):
                if node not in answers:
                    missing.append(node)
                    continue
                for entry in answers[node]:
                    _add(merged, entry)
        visitors = sorted(merged.values(), key=lambda v: (v.connected_at, v.visitor_id))
        return LiveVisitors(
            visitors=tuple(visitors), partial=bool(missing), nodes_missing=tuple(missing)
        )

    async def _ask(
        self,
        node: str,
        body: Message,
        deadline: float,
        answers: dict[str, list[LiveVisitor]],
    ) -> None:
        """``node``'s visitor sockets into ``answers``; nothing when it did not answer by
        ``deadline`` (or answered with an error, or with something that does not parse)."""
        assert self.gateway is not None
        with trio.move_on_at(deadline):
            try:
                answer = await self.gateway.bus.request(node, OP, body)
                answers[node] = _parse(answer)
            except (BusError, trio.TooSlowError) as err:
                log.info("live visitors: node %s did not answer: %r", node, err)
            except ValueError as err:
                log.warning("live visitors: node %s: %s", node, err)

    async def _answer(self, message: Message) -> Message:
        """Another node asks for this node's visitor sockets of a workspace (or a visitor)."""
        visitor_id = message.get("visitor")
        visitors = local_visitors(
            self.sockets,
            str(message["workspace"]),
            str(visitor_id) if visitor_id is not None else None,
        )
        return {"visitors": [attrs.asdict(v) for v in visitors]}
