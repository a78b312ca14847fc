"""Several nodes, one installation: each workspace is owned by one node at a time, and a socket
on any node reaches it through the bus (``web/bus.py``).

Ownership: the lease ``workspace:<id>`` in PostgreSQL (``web/ownership.py``,
``storage._leases``). A workspace nobody holds is placed by load (``web/placement.py``): the
node its client reached asks the live node owning fewest workspaces to take it (the bus op
``take``), or takes it itself; an owner hands back a workspace its engine has held nothing for
during ``cluster.idle_release_s``. Each node renews every lease it has (its membership lease
``node:<id>`` too) every ``ttl/3`` in one statement, and fences every conversation append with
the lease's epoch (``Ownership.fence``, given to the engine): once another node took the lease
over, a paused former owner's commit is refused. A lease it finds lost (not renewed) ends the
sockets of that workspace, which reconnect and reach the new owner.

The owner runs everything of its workspaces in its own engine, unchanged: routers,
conversations, visitors, agents, presence. A socket on another node is a *proxy*:
``ClusterGateway.connect/request/disconnect`` (the three calls the WebSocket layer makes)
forward to the owner over the bus (``connect``, ``request``, ``disconnect``, each under the
caller's deadline); the owner registers a real ``Connection`` for it in its engine and pumps
that connection's outbox back over the bus, each push numbered. Pub/sub is at-most-once: a
proxy that sees a number skipped, or whose owner no longer listens, ends its socket (1013), and
the client resumes by sequence from storage through the owner, so nothing is silently missing.
Sockets of workspaces this node owns are served locally, exactly as with one process.

A push that could not be published (Redis down) ends the hosted connection at once: a request
on it then hears ``unavailable`` (no acknowledgement can overtake the lost push), and the
socket's node is told to end the socket as soon as the bus carries messages again.

The HTTP API's chat commands (``request_as``), the widget's "online" (``agents_available``)
and workspace changes (``workspace_changed``) are forwarded to the owner the same way. The
gateway runs as the supervision tree's ``cluster`` child (``ClusterService``). On SIGTERM
(``going_away``, from ``web.server.drain``) the owner puts ``GOING_AWAY`` after the last push of
every socket it serves for other nodes: those sockets close with 1001, as its own do, and
their clients reconnect at once; new sockets are refused (``shutting_down``) until the node
releases its leases, once its engine drained and before its bus stops, and the next node takes
them over.

Broadcasts (``k: ev``: credential and access changes, ``web/access.py``) go to ``on_event``;
requests about a node's own sockets (``live_visitors``, ``web/live_visitors.py``) to ``ops``.

Not yet: placement weighs the number of workspaces, not their traffic, and a workspace in use
never moves to a node that joined (only new or handed-back ones go there).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from engine import (
    AgentPrincipal,
    ChatEngine,
    Connection,
    ConnectionMeta,
    DomainError,
    EngineError,
    Principal,
    TreeNode,
    VisitorPrincipal,
    error_result,
    structure_command,
    structure_push,
    structure_result,
    unstructure,
    unstructure_command,
)
from storage import Role, Storage, StorageError, Visitor
from web.bus import Bus, BusError, Message, NodeUnreachable, RemoteError
from web.ownership import Ownership
from web.placement import IdleRelease, Placement
from web.settings import Settings, generate_node_id
from web.sockets import GOING_AWAY, GoingAway
from web.ws_pump import forwarded_push, push_data

log = logging.getLogger("livechat.cluster")

LIVENESS_INTERVAL_S = 1.0  # how often nodes holding proxies check their peers still listen
END_RETRY_DELAY_S = 1.0  # after a push could not be sent: tell the socket's node to end it
END_RETRY_WINDOW_S = 60.0  # ... trying this long (a node gone longer ended its sockets itself)


@attrs.define(eq=False)
class _Hosted:
    """On the owner: the engine connection of a socket on another node, and its pump."""

    node: str
    conn: Connection
    outbox: trio.MemorySendChannel[Any]  # ``conn.outbox``, which ``GOING_AWAY`` goes in too
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    lost: bool = False  # a push could not be published: served no more


@attrs.define(eq=False)
class _Proxy:
    """On the socket's node: its connection as the WebSocket layer sees it, and the owner."""

    owner: str
    conn: Connection
    outbox: trio.MemorySendChannel[Any]  # ``conn.outbox``, which ``GOING_AWAY`` goes in too
    received: int = 0  # pushes received so far: the next must be number received + 1


def _principal_document(principal: Principal) -> Message:
    if isinstance(principal, VisitorPrincipal):
        return {"visitor_id": principal.visitor_id, "workspace_id": principal.workspace_id}
    return {
        "workspace_id": principal.workspace_id,
        "agent_id": principal.agent_id,
        "role": str(principal.role.value),
        "display_name": principal.display_name,
    }


def _principal(document: Message) -> Principal:
    if "visitor_id" in document:
        return VisitorPrincipal(
            workspace_id=str(document["workspace_id"]), visitor_id=str(document["visitor_id"])
        )
    return AgentPrincipal(
        workspace_id=str(document["workspace_id"]),
        agent_id=str(document["agent_id"]),
        role=Role(document["role"]),
        display_name=str(document["display_name"]),
    )


class ClusterGateway:
    """``connect``/``request``/``disconnect`` for the WebSocket layer, on any node; see the
    module docstring."""

    def __init__(
        self,
        engine: ChatEngine,
        ownership: Ownership,
        bus: Bus,
        outbox_size: int,
        *,
        idle_release_s: float = 0.0,
    ):
        self.engine = engine
        self.ownership = ownership
        self.bus = bus
        self.node_id = ownership.node_id
        self.placement = Placement(ownership, bus)
        self.idle_release = IdleRelease(engine, ownership, idle_release_s, self._end_workspace)
        self._outbox_size = outbox_size
        self._hosted: dict[str, _Hosted] = {}  # connection id -> socket elsewhere, served here
        self._proxies: dict[str, _Proxy] = {}  # connection id -> socket here, served elsewhere
        self._nursery: trio.Nursery | None = None
        self.draining = False  # SIGTERM: sockets elsewhere are told to go, none is hosted more
        # set by ``web.access.AccessEvents``: broadcasts, synchronously, in arrival order
        self.on_event: Callable[[Message, trio.Nursery], None] | None = None
        # requests about this node's own state, answered by other modules (op -> handler,
        # under the asker's deadline): ``live_visitors`` (web/live_visitors.py)
        self.ops: dict[str, Callable[[Message], Awaitable[Any]]] = {}

    # -- what the WebSocket layer calls

    async def connect(
        self,
        principal: Principal,
        outbox: trio.MemorySendChannel[Any],
        *,
        connection_id: str,
        resume: dict[str, int] | None = None,
        meta: ConnectionMeta | None = None,
        new_visitor: Visitor | None = None,
    ) -> Connection:
        """``ChatEngine.connect`` on the workspace's owner. ``new_visitor`` (the row just
        created for this connection) only serves this node's engine: the owner elsewhere
        reads it from storage."""
        owner = await self._owner(principal.workspace_id)
        if owner == self.node_id:
            conn = await self.engine.connect(
                principal,
                outbox,
                connection_id=connection_id,
                resume=resume,
                meta=meta,
                new_visitor=new_visitor,
            )
            self._end_if_gone(conn)
            return conn
        meta = meta or ConnectionMeta()
        conn = Connection(id=connection_id, principal=principal, outbox=outbox, meta=meta)
        proxy = self._proxies[connection_id] = _Proxy(owner=owner, conn=conn, outbox=outbox)
        try:
            answer = await self._ask(
                owner,
                "connect",
                {
                    "principal": _principal_document(principal),
                    "connection": connection_id,
                    "resume": dict(resume or {}),
                    "meta": attrs.asdict(meta),
                },
            )
        except BaseException:
            self._proxies.pop(connection_id, None)
            raise
        conn.welcome = structure_push(answer["welcome"]) if answer.get("welcome") else None
        log.debug("socket %s proxied to %s", connection_id, proxy.owner)
        return conn

    async def request(self, conn: Connection, command: Any) -> Any:
        proxy = self._proxies.get(conn.id)
        if proxy is None:
            return await self.engine.request(conn, command)
        try:
            answer = await self._ask(
                proxy.owner,
                "request",
                {"connection": conn.id, "command": unstructure_command(command)},
            )
        except DomainError as err:
            if err.code == "unavailable":  # the owner no longer serves it: reconnect, resume
                self._end_proxy(proxy)
            raise
        if self._proxies.get(conn.id) is not proxy:
            # The socket ended meanwhile (a push lost): its client resumes from its last seq,
            # so this result, which may carry a later one, must not reach it; the client's
            # retry after the resume hears the same result (idempotent).
            raise DomainError("pushes to this socket were lost; reconnect", code="unavailable")
        return structure_result(answer)

    async def disconnect(self, conn: Connection) -> None:
        proxy = self._proxies.pop(conn.id, None)
        if proxy is None:
            await self.engine.disconnect(conn)
            return
        conn.closed = True
        try:
            with trio.move_on_after(2.0):
                await self._ask(proxy.owner, "disconnect", {"connection": conn.id})
        except (BusError, DomainError):
            pass  # the owner's liveness check ends it when it notices the socket's node gone

    async def request_as(self, principal: Principal, command: Any) -> Any:
        """The HTTP API's chat commands, run by the workspace's owner wherever they arrive."""
        owner = await self._owner(principal.workspace_id)
        if owner == self.node_id:
            return await self.engine.request_as(principal, command)
        body = {
            "principal": _principal_document(principal),
            "command": unstructure_command(command),
        }
        return structure_result(await self._ask(owner, "request_as", body))

    async def agents_available(self, workspace_id: str) -> bool:
        """What the owner's router says (the widget's "online")."""
        owner = await self._owner(workspace_id)
        if owner == self.node_id:
            return await self.engine.agents_available(workspace_id)
        return bool(await self._ask(owner, "agents_available", {"workspace": workspace_id}))

    async def workspace_changed(self, workspace_id: str) -> None:
        """Settings, agents or groups changed: this node drops what it cached, and the owner
        applies the change to the workspace's actors (at once, wherever the change came in)."""
        await self.engine.workspace_changed(workspace_id)
        owner = await self._storage(self.ownership.holder(workspace_id))
        if owner is not None and owner != self.node_id:
            await self._ask(owner, "workspace_changed", {"workspace": workspace_id})

    async def _owner(self, workspace_id: str) -> str:
        """The workspace's owner, placed by load when free (web/placement.py)."""
        owner: str = await self._storage(self.placement.owner_of(workspace_id))
        return owner

    def _end_if_gone(self, conn: Connection) -> None:
        """End a socket that reached a workspace this node handed back or lost while it was
        connecting (``_end_workspace`` ran before it was there to be ended): it reconnects."""
        if conn.principal.workspace_id not in self.ownership.owned:
            conn.outbox.close()

    async def _take(self, workspace_id: str) -> Message:
        """Take ``workspace_id`` if it is still free; the owner either way (a draining node
        takes nothing: the asking node then takes it itself)."""
        if self.draining or not self.engine.accepting:
            raise RemoteError("unavailable", "this node is shutting down")
        try:
            owner = await self._storage(self.ownership.owner_of(workspace_id))
        except DomainError as err:
            raise RemoteError(err.code, str(err)) from None
        return {"owner": owner}

    async def _storage(self, call: Awaitable[Any]) -> Any:
        """A lease read or write: the database failing or slow is the engine's
        ``storage_unavailable``, as for a local command."""
        try:
            with trio.fail_after(self.engine.config.storage_timeout_s):
                return await call
        except (StorageError, trio.TooSlowError):
            raise DomainError(
                "storage is unavailable; retry shortly", code="storage_unavailable"
            ) from None

    async def _ask(self, owner: str, op: str, body: Message) -> Any:
        """A request to the owner; its errors become the engine errors a local call raises."""
        try:
            return await self.bus.request(owner, op, body)
        except RemoteError as err:
            raise DomainError(
                str(err),
                code=err.code,
                field=err.extra.get("field"),
                retry_after_s=err.extra.get("retry_after_s"),
            ) from None
        except NodeUnreachable:
            raise DomainError(
                "the server owning this workspace is gone; reconnect", code="unavailable"
            ) from None
        except (BusError, trio.TooSlowError):
            raise DomainError("the cluster bus did not answer in time", code="overloaded") from None

    # -- what the owner does for sockets on other nodes

    async def _on_request(self, message: Message) -> Any:
        op = message.get("op")
        if op == "status":  # livechat cluster status
            return {
                "owned": len(self.ownership.owned),
                "hosted": len(self._hosted),
                "proxies": len(self._proxies),
                "bus_round_trip_s": self.bus.metrics.recent_round_trip_s,
            }
        if op == "connect":
            return await self._host(message)
        if op == "take":  # placement chose this node for a workspace nobody owns
            return await self._take(str(message["workspace"]))
        if op in ("request_as", "agents_available", "workspace_changed"):
            return await self._for_workspace(op, message)
        if op in self.ops:
            return await self.ops[str(op)](message)
        hosted = self._hosted.get(str(message.get("connection")))
        if op == "disconnect":
            if hosted is not None:
                await self._unhost(str(message["connection"]))
            return {}
        if hosted is None:
            raise RemoteError("unavailable", "this connection is not served here; reconnect")
        try:
            result = await self.engine.request(hosted.conn, structure_command(message["command"]))
        except EngineError as err:
            error = error_result(err)
            extra = {"field": error.field, "retry_after_s": error.retry_after_s}
            raise RemoteError(error.code, error.message, extra) from None
        if self._hosted.get(hosted.conn.id) is not hosted:
            # its pushes broke off meanwhile: an acknowledgement now could overtake a lost
            # push; the client resumes and its retry hears the same result (idempotent)
            raise RemoteError("unavailable", "this connection is not served here; reconnect")
        return unstructure(result)

    async def _for_workspace(self, op: str, message: Message) -> Any:
        """The owner's side of ``request_as``, ``agents_available`` and ``workspace_changed``."""
        try:
            if op == "workspace_changed":
                await self.engine.workspace_changed(str(message["workspace"]))
                return {}
            if op == "agents_available":
                return await self.engine.agents_available(str(message["workspace"]))
            principal = _principal(message["principal"])
            result = await self.engine.request_as(principal, structure_command(message["command"]))
        except EngineError as err:
            error = error_result(err)
            extra = {"field": error.field, "retry_after_s": error.retry_after_s}
            raise RemoteError(error.code, error.message, extra) from None
        return unstructure(result)

    def going_away(self) -> None:
        """This node drains (SIGTERM, before its engine stops): every socket served from here
        for another node is told so after the pushes already queued for it, and closes there
        with 1001, as this node's own sockets do; its client reconnects at once and resumes
        with the next owner. A socket whose outbox is full ends as a slow one would (1013)."""
        self.draining = True
        for hosted in list(self._hosted.values()):
            with contextlib.suppress(
                trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
            ):
                hosted.outbox.send_nowait(GOING_AWAY)

    async def _host(self, message: Message) -> Message:
        if self.draining:
            raise RemoteError("shutting_down", "the server owning this workspace is stopping")
        principal = _principal(message["principal"])
        try:
            owner = await self._owner(principal.workspace_id)
        except DomainError as err:
            raise RemoteError(err.code, str(err)) from None
        if owner != self.node_id:
            raise RemoteError("unavailable", "the workspace moved to another node; reconnect")
        node, connection_id = str(message["from"]), str(message["connection"])
        send, receive = trio.open_memory_channel[Any](self._outbox_size)
        try:
            conn = await self.engine.connect(
                principal,
                send,
                connection_id=connection_id,
                resume={str(k): int(v) for k, v in dict(message.get("resume") or {}).items()},
                meta=ConnectionMeta(**dict(message.get("meta") or {})),
            )
        except EngineError as err:
            error = error_result(err)
            raise RemoteError(error.code, error.message) from None
        hosted = self._hosted[connection_id] = _Hosted(node=node, conn=conn, outbox=send)
        assert self._nursery is not None
        self._nursery.start_soon(self._pump, hosted, receive)

        self._end_if_gone(conn)  # its pump then sends the end: the socket reconnects
        welcome = conn.welcome
        return {"welcome": unstructure(welcome) if welcome is not None else None}  # type: ignore[arg-type]

    async def _pump(self, hosted: _Hosted, outbox: trio.MemoryReceiveChannel[Any]) -> None:
        """The hosted connection's pushes to its socket's node, numbered, in order (posted on
        the bus link to that node, which publishes them with whatever else goes there); the
        end of the outbox (the engine dropped a slow subscriber) ends the socket there."""
        number = 0
        connection_id = hosted.conn.id

        def lost(err: BusError) -> None:
            self._push_lost(hosted, err)

        with hosted.scope, outbox:
            try:
                end: Message = {"k": "end", "c": connection_id}
                async for push in outbox:
                    if isinstance(push, GoingAway):  # after every push queued before it
                        end["away"] = True
                        break
                    number += 1
                    # ``push_data``: unstructured once for every connection it goes to
                    body = {"k": "push", "c": connection_id, "n": number, "p": push_data(push)}
                    await self.bus.post(hosted.node, body, lost)
                await self.bus.post(hosted.node, end, lost)
            except BusError as err:
                lost(err)
        if self._hosted.get(connection_id) is hosted:
            await self._unhost(connection_id)

    def _push_lost(self, hosted: _Hosted, err: BusError) -> None:
        """A push to ``hosted`` could not be published: the connection is served no more, at
        once, so no acknowledgement can reach its socket after the lost push (its client
        would resume past it): a request on it now hears "unavailable". The socket's node is
        told to end it too, once its subscription is back (Redis restarted, connection
        dropped), and its client resumes by sequence; a node that is gone hears nothing."""
        if hosted.lost:
            return
        hosted.lost = True
        log.warning("socket %s on %s: %s", hosted.conn.id, hosted.node, err)
        hosted.scope.cancel()
        if self._hosted.get(hosted.conn.id) is hosted:
            del self._hosted[hosted.conn.id]
        if self._nursery is not None:
            self._nursery.start_soon(self._after_lost, hosted)

    async def _after_lost(self, hosted: _Hosted) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            await self.engine.disconnect(hosted.conn)
        await self._send_end(hosted)

    async def _send_end(self, hosted: _Hosted) -> None:
        """Tell the socket's node to end a socket whose pushes could not all be sent, retrying
        while Redis (or that node's subscription) comes back, within ``END_RETRY_WINDOW_S``."""
        with trio.move_on_after(END_RETRY_WINDOW_S):
            while True:
                await trio.sleep(END_RETRY_DELAY_S)
                with contextlib.suppress(BusError):
                    await self.bus.send(hosted.node, {"k": "end", "c": hosted.conn.id})
                    return

    async def _unhost(self, connection_id: str) -> None:
        hosted = self._hosted.pop(connection_id, None)
        if hosted is not None:
            hosted.scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                await self.engine.disconnect(hosted.conn)

    # -- what the socket's node does with the owner's pushes

    def _on_message(self, message: Message) -> None:
        if message.get("k") == "ev":
            if self.on_event is not None and self._nursery is not None:
                self.on_event(message, self._nursery)
            return
        proxy = self._proxies.get(str(message.get("c")))
        if proxy is None:
            return
        if message.get("k") == "push" and message.get("n") == proxy.received + 1:
            proxy.received += 1
            try:
                push = structure_push(message["p"])
            except Exception:  # from another version of the program: a lost push, resume
                log.exception("socket %s: a push that does not parse", proxy.conn.id)
            else:
                forwarded_push(push, message["p"])
                try:
                    proxy.conn.outbox.send_nowait(push)
                    return
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        elif message.get("k") == "push":
            self.bus.metrics.push_gaps += 1
            log.warning("socket %s: push %s lost on the bus, resuming", proxy.conn.id, message["n"])
        elif message.get("k") == "end" and message.get("away"):
            self._end_proxy(proxy, going_away=True)
            return
        self._end_proxy(proxy)

    def _resubscribed(self) -> None:
        """This node listens on the bus again after losing its subscription: pushes to its
        proxied sockets may have been lost meanwhile, and a later one may never come to show
        the gap, so every one of them ends (1013) and its client resumes by sequence."""
        if self._proxies:
            log.warning("bus subscription restored: ending %d proxied sockets", len(self._proxies))
        self.end_proxies()

    def end_proxies(self) -> None:
        """End every socket proxied from here (the gateway stopped: pushes may be lost)."""
        for proxy in list(self._proxies.values()):
            self._end_proxy(proxy)

    def _end_proxy(self, proxy: _Proxy, *, going_away: bool = False) -> None:
        """End the socket: its pump sees the outbox closed (1013, the client resumes), or, when
        the owner is ``going_away``, ``GOING_AWAY`` first (1001, the client reconnects)."""
        if self._proxies.pop(proxy.conn.id, None) is not None:
            self.bus.metrics.proxies_ended += 1
        if going_away:
            with contextlib.suppress(
                trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
            ):
                proxy.outbox.send_nowait(GOING_AWAY)
        proxy.conn.outbox.close()

    async def bus_status(self) -> str:
        """``ok`` when Redis answers and this node is subscribed, else the error's name."""
        try:
            with trio.fail_after(2.0):
                listening = await self.bus.listening([self.node_id])
        except (BusError, trio.TooSlowError) as err:
            return type(err).__name__
        return "ok" if listening else "not_subscribed"

    # -- running

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(
                functools.partial(
                    self.bus.serve,
                    self._on_request,
                    self._on_message,
                    on_resubscribed=self._resubscribed,
                )
            )
            try:
                with trio.fail_after(self.ownership.ttl_s / 3):
                    await self.ownership.join()
            except (StorageError, trio.TooSlowError) as err:  # the renewal joins once it is back
                log.warning("could not take the membership lease: %s", type(err).__name__)
            nursery.start_soon(self._renew_forever)
            nursery.start_soon(self._liveness_forever)
            nursery.start_soon(self.idle_release.serve)
            task_status.started()

    async def _renew_forever(self) -> None:
        ttl_s = self.ownership.ttl_s
        renewed_at = trio.current_time()
        while True:
            await trio.sleep(ttl_s / 3)
            started = trio.current_time()
            try:
                with trio.fail_after(ttl_s / 3):
                    lost = await self.ownership.renew()
                renewed_at = started
            except Exception as err:  # the database down: the leases run out, fencing holds
                log.warning("could not renew leases: %s", type(err).__name__)
                if started - renewed_at < ttl_s:
                    continue
                # Not renewed for a whole lease: another node may take them over now. Stop
                # serving them (fencing already keeps this node from committing), so their
                # clients reconnect to a node that reaches the database and can take them.
                lost = self.ownership.give_up()
            for workspace_id in lost:
                self._end_workspace(workspace_id)

    def _end_workspace(self, workspace_id: str) -> None:
        """A lost workspace: end its sockets here, hosted or local (they reconnect and reach
        the new owner), and passivate its conversations (their state is the past)."""
        hub = self.engine.hub
        for conn in list(hub.workspace_agent_connections(workspace_id)) + list(
            hub.workspace_visitor_connections(workspace_id)
        ):
            conn.outbox.close()
        self.engine.passivate_workspace(workspace_id)

    async def _liveness_forever(self) -> None:
        """Sockets whose owner stopped listening end (they reconnect to the new owner); hosted
        connections of a node that stopped listening are disconnected."""
        while True:
            await trio.sleep(LIVENESS_INTERVAL_S)
            peers = {p.owner for p in self._proxies.values()} | {
                h.node for h in self._hosted.values()
            }
            try:
                alive = await self.bus.listening(sorted(peers))
            except BusError:
                continue
            for proxy in [p for p in self._proxies.values() if p.owner not in alive]:
                self._end_proxy(proxy)
            for connection_id in [c for c, h in self._hosted.items() if h.node not in alive]:
                await self._unhost(connection_id)


def cluster_ownership(settings: Settings, storage: Storage) -> Ownership | None:
    """This node's workspace leases when a bus is set (a cluster), else None."""
    cluster = settings.cluster
    if cluster.bus_url is None:
        return None
    return Ownership(storage, cluster.node_id or generate_node_id(), cluster.lease_ttl_s)


def cluster_gateway(engine: ChatEngine, ownership: Ownership, settings: Settings) -> ClusterGateway:
    """This node's gateway and bus (nothing connects before ``ClusterService.serve``)."""
    cluster = settings.cluster
    assert cluster.bus_url is not None
    bus = Bus(cluster.bus_url, ownership.node_id, prefix=cluster.bus_prefix)
    return ClusterGateway(
        engine,
        ownership,
        bus,
        settings.websocket.outbox_max_size,
        idle_release_s=cluster.idle_release_s,
    )


class ClusterService:
    """The root supervisor's ``cluster`` child (web/supervision.py): the gateway's bus, lease
    renewal and liveness checks. It comes after storage and before the engine, so on shutdown
    it drains after the engine: the leases are released once the engine committed what it
    accepted, while storage is still open, and only then does the bus stop, so clients served
    through this node reach the next owner at once. A crash restarts it (and, rest_for_one,
    the engine after it); the sockets proxied from here end, since pushes may have been lost."""

    def __init__(self, gateway: ClusterGateway) -> None:
        self.gateway = gateway
        self.status = "stopped"
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._done.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._done = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.gateway.serve)
                    self.status = "serving"
                    task_status.started()
        finally:
            self._scope = None
            self.status = "stopped"
            self.gateway.end_proxies()
            self._done.set()

    async def drain(self) -> None:
        """Hand the leases back (the engine has drained), then stop the bus."""
        await self.gateway.ownership.release_all()
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()

    def snapshot(self, restart: str | None = None) -> TreeNode:
        return TreeNode(name="cluster", kind="service", restart=restart, state=self.status)
