"""The engine's facade: what the web layer calls. Connect, request, disconnect, kick.

The web layer decodes a frame with ``engine.codec.structure_command``, calls
``ChatEngine.request(conn, command)`` and encodes the ``Result`` (or the error's
``codec.error_result``); pushes arrive on the outbox it passed to ``connect``. Actions without
a live connection (the HTTP admin API closing, transferring or tagging a chat) use
``ChatEngine.request_as(principal, command)``. After an admin change of a workspace's
settings, agents or groups the web layer calls ``ChatEngine.workspace_changed``.

Authorization and command dispatch live in ``engine.requests`` (``ChatEngine``'s base class
``Requests``); this module holds the engine's lifecycle, its supervision tree and connections.

Backpressure: fan-out to an outbox is ``send_nowait``; a full outbox (slow consumer) drops the
subscriber and closes its outbox. The web layer then closes the socket ("slow consumer,
resume") and the client reconnects with ``resume={conversation_id: last_seq}``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

import attrs
import trio

from engine.agent import AgentActor, AgentJoined, AgentLeft, AgentTick
from engine.config import EngineConfig
from engine.context import EngineContext
from engine.conversation import (
    ConversationActor,
    Snapshot,
    Subscribe,
)
from engine.decisions import DecisionLog
from engine.errors import (
    ActorStopped,
    InvalidMessage,
    NotFound,
    Overloaded,
    PersistenceUnavailable,
    ShuttingDown,
)
from engine.identity import IdentifiedVisitor, VisitorIdentity, identify_visitor
from engine.messages import (
    AgentSummary,
    AgentWelcome,
    Push,
    VisitorWelcome,
)
from engine.metrics import EngineMetrics
from engine.presence import Hub, RateLimiter
from engine.principals import (
    AgentPrincipal,
    Connection,
    ConnectionMeta,
    Principal,
    ResumePoints,
    VisitorPrincipal,
    offline_message_origin,
    start_chat_origin,
)
from engine.registry import Registry
from engine.requests import Requests
from engine.routing import RouterActor
from engine.routing_messages import GetAgents, GetAtRest, GetQueue, Tick, WorkspaceChanged
from engine.supervisor import RestartStrategy, RestartType, ServiceSpec, Supervisor, TaskService
from engine.visibility import for_visitor_result
from engine.visitor import (
    VisitorActor,
    VisitorArrived,
    VisitorLeft,
    VisitorTick,
)
from storage import ConversationState, Fence, Group, Storage, Visitor, Workspace

log = logging.getLogger(__name__)

__all__ = [
    "AgentPrincipal",
    "ChatEngine",
    "Connection",
    "ConnectionMeta",
    "EngineConfig",
    "Principal",
    "VisitorPrincipal",
    "offline_message_origin",
    "start_chat_origin",
]


class ChatEngine(Requests):
    """The engine: owns the actor tree; every client interaction goes through it.

    Lifecycle: ``await nursery.start(engine.serve)`` (returns once ready to accept);
    ``await engine.shutdown(deadline_s=...)`` stops intake, drains the conversation actors
    (every accepted message is committed), then visitors, then routers (reverse start order),
    and cancels what is left at the deadline. Cancelling ``serve`` stops everything at once.

    Deadlines: each ``request`` is bounded by ``config.ask_timeout_s`` (``overloaded`` when
    exceeded; the command may still complete, and a retry with the same ``client_msg_id`` is
    idempotent).
    """

    def __init__(
        self,
        storage: Storage,
        config: EngineConfig,
        *,
        metrics: EngineMetrics | None = None,
        clock: Callable[[], float] = trio.current_time,
        fence: Callable[[str], Fence] | None = None,
    ) -> None:
        self.config = config
        self._ctx = EngineContext(
            fence=fence,
            storage=storage,
            config=config,
            hub=Hub(),
            metrics=metrics or EngineMetrics(),
            clock=clock,
            decisions=DecisionLog(storage, timeout_s=config.storage_timeout_s),
        )
        self._ctx.hub.on_drop = self._on_drop
        self._messages = RateLimiter(
            rate_per_s=config.message_rate_per_s, burst=config.message_burst, clock=clock
        )
        self._signals = RateLimiter(
            rate_per_s=1.0 / max(config.typing_min_interval_s, 1e-6), burst=3, clock=clock
        )
        # (workspace, agent, conversation) -> when its silent reading was last audited.
        self._supervision_audited: dict[tuple[str, str, str], float] = {}
        self._accepting = False
        self._stopped = trio.Event()
        self._drops_send, self._drops_recv = trio.open_memory_channel[Connection](math.inf)
        self._registries: list[Any] = []
        self._supervisor: Any = None

    @property
    def metrics(self) -> EngineMetrics:
        return self._ctx.metrics

    @property
    def accepting(self) -> bool:
        """Serving and taking work: False while starting, restarting after a crash, draining."""
        return self._accepting

    @property
    def hub(self) -> Any:
        """The connection directory (read-only use: counts for the admin API and tests)."""
        return self._ctx.hub

    # -- lifecycle

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine's supervisor until ``shutdown`` (a normal return) or a crash past its
        restart intensity (``RestartIntensityExceeded``, for the parent supervisor).

        Children, started in this order and stopped in reverse: ``decisions`` (the routing
        decision writer), the registries ``routers``, ``agents``, ``visitors`` and
        ``conversations`` (virtual actors, each key one_for_one), ``hub`` (the bookkeeping of
        dropped connections) and ``ticker`` (time for routers and agents). Strategy
        one_for_one: a crashed registry or task restarts alone, its actors rebuilt from
        storage on their next use.
        """
        sup = self._build_supervisor()
        try:
            await sup.serve(task_status=cast(Any, _Started(self, task_status)))
        finally:
            self._accepting = False  # a crash too: refused until a restart has started

    def _build_supervisor(self) -> Any:
        if self._supervisor is not None:
            return self._supervisor
        ctx, cfg = self._ctx, self.config
        common: dict[str, Any] = {
            "mailbox_size": cfg.mailbox_size,
            "max_restarts": cfg.restart_max,
            "period_s": cfg.restart_period_s,
            "metrics": ctx.metrics,
        }
        ctx.routers = Registry(
            "router",
            lambda ws: RouterActor(ctx, ws),
            idle_timeout_s=cfg.router_idle_timeout_s,
            **common,
        )
        ctx.agents = Registry(
            "agent",
            lambda key: AgentActor(ctx, key),
            idle_timeout_s=cfg.router_idle_timeout_s,
            **{**common, "mailbox_size": min(cfg.mailbox_size, 64)},
        )
        ctx.visitors = Registry(
            "visitor",
            lambda key: VisitorActor(ctx, key),
            idle_timeout_s=cfg.idle_timeout_s,
            **{**common, "mailbox_size": min(cfg.mailbox_size, 16)},
        )
        ctx.conversations = Registry(
            "conversation",
            lambda key: ConversationActor(ctx, key),
            idle_timeout_s=cfg.idle_timeout_s,
            **common,
        )
        self._registries = [ctx.routers, ctx.agents, ctx.visitors, ctx.conversations]
        permanent = RestartType.PERMANENT
        self._supervisor = Supervisor(
            RestartStrategy.ONE_FOR_ONE,
            cfg.engine_restart_max,
            cfg.engine_restart_period_s,
            name="engine",
            metrics=ctx.metrics,
            children=[
                ServiceSpec("decisions", _DecisionService(ctx.decisions), permanent),
                ServiceSpec("routers", ctx.routers, permanent),
                ServiceSpec("agents", ctx.agents, permanent),
                ServiceSpec("visitors", ctx.visitors, permanent),
                ServiceSpec("conversations", ctx.conversations, permanent),
                ServiceSpec("hub", TaskService("hub", self._drops_forever), permanent),
                ServiceSpec("ticker", TaskService("ticker", self._tick_forever), permanent),
            ],
        )
        return self._supervisor

    def snapshot(self, restart: str | None = None) -> Any:
        """The engine's live supervision tree (``engine.supervisor.TreeNode``)."""
        node = self._build_supervisor().snapshot(restart)
        return attrs.evolve(node, state=node.state if self._accepting else "draining")

    def inject_fault(self, kind: str, workspace_id: str, key: str) -> bool:
        """Crash the running actor of ``kind`` ("conversation", "visitor", "agent", "router")
        for ``key`` (its id; for a router the workspace id) as a bug would; its registry
        restarts it from storage. False if no such actor runs now. For the operators' fault
        injection (``debug_fault_injection``), to prove the restarts in production-like runs.
        """
        ctx = self._ctx
        registries: dict[str, Any] = {
            "conversation": ctx.conversations,
            "visitor": ctx.visitors,
            "agent": ctx.agents,
            "router": ctx.routers,
        }
        registry = registries.get(kind)
        if registry is None:
            raise InvalidMessage(f"kind: unknown actor kind {kind!r}", code="invalid_field")
        target: Any = workspace_id if kind == "router" else (workspace_id, key)
        return bool(registry.inject_fault(target))

    async def drain(self) -> None:
        """`shutdown` within ``config.shutdown_deadline_s``: what a parent supervisor calls."""
        await self.shutdown(deadline_s=self.config.shutdown_deadline_s)

    async def shutdown(self, *, deadline_s: float) -> None:
        """Stop intake (``shutting_down``), then stop the children in reverse start order: the
        ticker, conversations (every accepted message is committed), visitors, agents, routers;
        whatever is still running at the deadline is cancelled. Then store the routing
        decisions still queued (bounded by ``storage_timeout_s``)."""
        self._accepting = False
        sup = self._supervisor
        if sup is not None:
            await sup.shutdown(deadline_s)
        try:
            await self._ctx.decisions.flush()
        except PersistenceUnavailable as exc:
            log.error("%d routing decisions not stored: %s", self._ctx.decisions.pending, exc)
        self._stopped.set()

    async def flush_routing_decisions(self) -> None:
        """Store the routing decisions made so far (they are written in batches); call before
        reading the log to see them. ``PersistenceUnavailable`` if storage fails."""
        await self._ctx.decisions.flush()

    async def _tick_forever(self) -> None:
        routers, agents = self._ctx.routers, self._ctx.agents
        assert routers is not None and agents is not None
        while True:
            await trio.sleep(self.config.tick_interval_s)
            for ws in routers.keys():  # noqa: SIM118 (a Registry, not a dict)
                with contextlib.suppress(trio.WouldBlock, ShuttingDown):
                    routers.get_nowait(ws).tell_nowait(Tick())
            for key in agents.keys():  # noqa: SIM118
                with contextlib.suppress(trio.WouldBlock, ShuttingDown):
                    agents.get_nowait(key).tell_nowait(AgentTick())
            self._wake_visitors()

    def _wake_visitors(self) -> None:
        """Send ``VisitorTick`` to each visitor actor whose alarm is due (a page_view
        trigger's time condition, engine.greetings), re-activating a passivated one while the
        visitor is connected (it takes back its kept ``Visit``); a full mailbox or an actor
        still passivating is retried next tick; a gone visitor's alarm is dropped."""
        ctx = self._ctx
        visitors, alarms = ctx.visitors, ctx.visitor_alarms
        if not alarms or visitors is None:
            return
        now = ctx.clock()
        for key, due in list(alarms.items()):
            if due > now:
                continue
            if not visitors.is_active(key) and not ctx.hub.visitor_online(*key):
                del alarms[key]
                ctx.kept_visits.pop(key, None)
                continue
            with contextlib.suppress(trio.WouldBlock, ShuttingDown):
                visitors.get_nowait(key).tell_nowait(VisitorTick())
                alarms.pop(key, None)

    async def _drops_forever(self) -> None:
        async for conn in self._drops_recv:
            with contextlib.suppress(ShuttingDown, Overloaded, ActorStopped):
                await self._after_leave(conn)

    def _on_drop(self, conn: Connection) -> None:
        self._drops_send.send_nowait(conn)

    # -- connections

    async def identify_visitor(
        self,
        workspace: Workspace,
        *,
        token: str | None,
        identity: VisitorIdentity | None,
        user_agent: str | None = None,
        ip: str | None = None,
    ) -> IdentifiedVisitor:
        """The visitor a first frame names (its device token, a signed identity), created if
        new; see ``engine.identity``. ``InvalidIdentity`` if the signature does not verify."""
        found = await identify_visitor(
            self._ctx.storage,
            workspace,
            token=token,
            identity=identity,
            user_agent=user_agent,
            ip=ip,
        )
        return found

    async def connect(
        self,
        principal: Principal,
        outbox: trio.MemorySendChannel[Push],
        *,
        connection_id: str,
        resume: ResumePoints | None = None,
        meta: ConnectionMeta | None = None,
        new_visitor: Visitor | None = None,
    ) -> Connection:
        """Register a subscriber and return its handle with ``welcome`` (send it first).

        Events after each ``resume`` seq (visible to the principal) are pushed before live
        ones; a gap larger than ``max_resume_gap`` (or the outbox's room) gets
        ``resync_required`` instead. Unknown or foreign conversation ids are ignored.
        ``new_visitor``: the visitor's row, created by ``identify_visitor`` for this very
        connection (so it has no conversation yet): its actor starts from it, reading nothing.
        """
        self._check_accepting()
        ctx = self._ctx
        resume = dict(resume or {})
        conn = Connection(
            id=connection_id, principal=principal, outbox=outbox, meta=meta or ConnectionMeta()
        )
        conn.resuming = set(resume)
        ws = principal.workspace_id
        with trio.fail_after(self.config.ask_timeout_s):
            router = await self._router(ws)
            if isinstance(principal, VisitorPrincipal):
                visitor = await self._arriving_visitor(principal, new_visitor)
                open_id = await visitor.ask(lambda r: VisitorArrived(meta=conn.meta, reply=r))
                ctx.hub.add(conn)
                view = await router.ask(lambda r: GetAgents(reply=r))
                summary = position = None
                if open_id is not None:
                    conv = await self._conversation(ws, open_id)
                    summary = await conv.ask(lambda r: Snapshot(reply=r))
                    if summary.state == ConversationState.QUEUED:
                        queue = await router.ask(lambda r: GetQueue(reply=r))
                        position = next(
                            (e.position for e in queue if e.conversation_id == open_id), None
                        )
                settings = await ctx.workspace_settings(ws)
                conn.welcome = for_visitor_result(
                    VisitorWelcome(
                        visitor_id=principal.visitor_id,
                        conversation=summary,
                        agents_available=view.available,
                        sneak_peek_enabled=settings.sneak_peek_enabled,
                        routing_mode=view.routing_mode,
                        queue_position=position,
                    )
                )
            else:
                ctx.agent_names[(ws, principal.agent_id)] = principal.display_name
                ctx.hub.add(conn)
                agent = await self._agent(ws, principal.agent_id)
                status = await agent.ask(
                    lambda r: AgentJoined(principal=principal, connection_id=conn.id, reply=r)
                )
                view = await router.ask(lambda r: GetAgents(reply=r))
                queue = await router.ask(lambda r: GetQueue(reply=r))
                agents = await self._all_agents(ws, view.agents)
                me = next((a for a in agents if a.agent_id == principal.agent_id), None)
                if me is None:
                    me = AgentSummary(
                        agent_id=principal.agent_id,
                        display_name=principal.display_name,
                        role=str(principal.role),
                        status=str(status),
                        active_chats=0,
                        max_chats=0,
                        group_ids=(),
                    )
                conn.welcome = AgentWelcome(
                    agent=me,
                    routing_mode=view.routing_mode,
                    queue=queue,
                    chats=await self._my_chats(principal),
                    agents=agents,
                )
            for conversation_id, after_seq in resume.items():
                try:
                    ref = await self._existing_conversation(principal, conversation_id)
                    await ref.ask(
                        lambda r, cid=conversation_id, seq=after_seq: Subscribe(
                            conn=conn,
                            after_seq=seq,
                            watch=isinstance(principal, AgentPrincipal),
                            reply=r,
                        )
                    )
                except NotFound:
                    pass
                finally:
                    conn.resuming.discard(conversation_id)
        return conn

    async def _arriving_visitor(self, p: VisitorPrincipal, created: Visitor | None) -> Any:
        """The visitor's actor; one ``created`` just now (by ``identify_visitor``, for this
        connection) starts from that row instead of reading it back."""
        ctx = self._ctx
        key = (p.workspace_id, p.visitor_id)
        registry = ctx.visitors
        assert registry is not None
        if created is not None and created.id == p.visitor_id:
            seeded = registry.activate_seeded(key, created, generation=registry.generation)
            if seeded is not None:
                return seeded
        return await self._visitor(p)

    async def disconnect(self, conn: Connection) -> None:
        """Unregister; an agent without a connection is "reconnecting" for
        ``disconnect_grace_s`` (their visitors are told), then offline (their chats are
        re-routed); a visitor leaves the live list after a grace period."""
        if conn.closed:
            return
        conn.closed = True
        if self._ctx.hub.remove(conn):
            with contextlib.suppress(ShuttingDown, Overloaded, ActorStopped):
                await self._after_leave(conn)

    async def _after_leave(self, conn: Connection) -> None:
        p = conn.principal
        with trio.move_on_after(self.config.ask_timeout_s):
            if isinstance(p, AgentPrincipal):
                agent = await self._agent(p.workspace_id, p.agent_id)
                await agent.tell(AgentLeft(connection_id=conn.id))
            else:
                visitor = await self._visitor(p)
                await visitor.tell(VisitorLeft())

    async def kick(
        self,
        *,
        workspace_id: str,
        agent_id: str | None = None,
        visitor_id: str | None = None,
        reason: str,
    ) -> None:
        """Logout/ban: push ``session_closed`` to matching connections, then drop them."""
        hub = self._ctx.hub
        conns: set[Connection] = set()
        if agent_id is not None:
            conns |= hub.agent_connections(workspace_id, agent_id)
        if visitor_id is not None:
            conns |= hub.visitor_connections(workspace_id, visitor_id)
        for conn in list(conns):
            hub.drop(conn, reason=reason)
        await trio.lowlevel.checkpoint()

    # -- workspaces

    async def workspace_changed(self, workspace_id: str) -> None:
        """The workspace's settings, agents or groups changed in storage: apply them now.

        Drops the cached settings (conversations and new connections read them afresh) and has
        the workspace's router reload settings, agents (added, disabled, chat limits, groups,
        roles, names) and groups, keeping live state; a disabled agent's chats are queued
        again. Returns once the router has applied the change, or after ``ask_timeout_s``
        (the reload is then still queued), or once storage failed the reload (the router
        retries it with backoff, engine/routing.py). A workspace without a running router has
        nothing to refresh: its router loads everything when it starts.
        """
        self._ctx.forget_workspace(workspace_id)
        routers = self._ctx.routers
        if routers is None or not self._accepting or not routers.is_active(workspace_id):
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(self.config.ask_timeout_s), contextlib.suppress(ShuttingDown):
            router = await routers.get(workspace_id)
            await router.ask(lambda r: WorkspaceChanged(reply=r))

    def passivate_workspace(self, workspace_id: str) -> int:
        """Passivate the workspace's conversation actors and its router now (each handles
        what is queued and stops); returns how many conversations. For a cluster node that
        lost the workspace to another node, or handed it back: their state is the past (the
        other node appends meanwhile), their commits are refused by the fence, and the next
        use starts fresh actors that read storage."""
        self._ctx.forget_workspace(workspace_id)
        if self._ctx.routers is not None:
            self._ctx.routers.passivate(workspace_id)
        registry = self._ctx.conversations
        if registry is None:
            return 0
        live = registry.keys()  # a copy: passivating changes the registry
        stale = [key for key in live if key[0] == workspace_id]
        for key in stale:
            registry.passivate(key)
        return len(stale)

    async def workspaces_at_rest(self, workspace_ids: Iterable[str]) -> list[str]:
        """Those of ``workspace_ids`` for which the engine holds nothing storage would not give
        back: no socket, no live conversation, visitor or agent actor, no visitor alarm or
        kept visit, and a router (if one runs) with no timer pending (``GetAtRest``). A
        cluster node hands such a workspace back (web/placement.py); a router that does not
        answer within ``ask_timeout_s`` counts as busy."""
        ctx = self._ctx
        if not self._accepting or ctx.routers is None:
            await trio.lowlevel.checkpoint()
            return []
        busy = {ws for ws, _ in ctx.visitor_alarms} | {ws for ws, _ in ctx.kept_visits}
        for registry in (ctx.conversations, ctx.visitors, ctx.agents):
            if registry is not None:
                busy.update(ws for ws, _ in registry.keys())  # noqa: SIM118 (a Registry)
        hub, routers = ctx.hub, ctx.routers
        rest = []
        for ws in workspace_ids:
            if (
                ws in busy
                or hub.workspace_agent_connections(ws)
                or hub.workspace_visitor_connections(ws)
            ):
                continue
            if routers.is_active(ws):
                try:
                    with trio.fail_after(self.config.ask_timeout_s):
                        router = await routers.get(ws)
                        if not await router.ask(lambda r: GetAtRest(reply=r)):
                            continue
                except (trio.TooSlowError, ShuttingDown, ActorStopped):
                    continue
            rest.append(ws)
        await trio.lowlevel.checkpoint()
        return rest

    async def public_groups(self, workspace_id: str) -> tuple[Group, ...]:
        """The workspace's public groups, the departments a visitor may choose: cached until
        `workspace_changed` (which every group change calls), so a hello reads no storage for
        them. ``PersistenceUnavailable`` when they cannot be read."""
        return await self._ctx.public_groups(workspace_id)

    async def agents_available(self, workspace_id: str) -> bool:
        """Whether an agent of the workspace is connected and accepting chats, as the router
        sees it (what ``welcome_visitor.agents_available`` says). Agents at their chat limit
        count: a new chat then queues with its position instead of becoming offline."""
        self._check_accepting()
        try:
            with trio.fail_after(self.config.ask_timeout_s):
                router = await self._router(workspace_id)
                view = await router.ask(lambda r: GetAgents(reply=r))
        except trio.TooSlowError as exc:
            raise Overloaded("the engine did not answer in time") from exc
        return bool(view.available)

    # -- commands


class _Started:
    """Passes the supervisor's ``started`` on as the engine's, opening intake first."""

    def __init__(self, engine: ChatEngine, status: trio.TaskStatus[None]) -> None:
        self._engine = engine
        self._status = status

    def started(self, value: object = None) -> None:
        self._engine._accepting = True
        self._status.started()


class _DecisionService:
    """The routing decision writer as a supervised service: drained by a final flush."""

    def __init__(self, decisions: Any) -> None:
        self._decisions = decisions
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._done.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._done = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                await self._decisions.serve(task_status=task_status)
        finally:
            self._scope = None
            self._done.set()

    async def drain(self) -> None:
        with contextlib.suppress(PersistenceUnavailable):
            await self._decisions.flush()
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()
