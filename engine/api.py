"""The engine's facade: what the web layer calls. Connect, request, disconnect, kick.

The web layer decodes a frame with ``engine.codec.structure_command``, calls
``ChatEngine.request(conn, command)`` and encodes the ``Result`` (or the error's
``codec.error_result``); pushes arrive on the outbox it passed to ``connect``. Actions without
a live connection (the HTTP admin API closing, transferring or tagging a chat) use
``ChatEngine.request_as(principal, command)``. After an admin change of a workspace's
settings, agents or groups the web layer calls ``ChatEngine.workspace_changed``.

Authorization lives here: a visitor principal only ever sees its own conversations (a foreign
or guessed id answers ``not_found``, exactly like a missing one, and is checked before any
conversation actor is started for it); an agent only its workspace; roles gate supervisor
commands. Visibility ``agents`` events never reach a visitor's outbox.

Backpressure: fan-out to an outbox is ``send_nowait``; a full outbox (slow consumer) drops the
subscriber and closes its outbox. The web layer then closes the socket ("slow consumer,
resume") and the client reconnects with ``resume={conversation_id: last_seq}``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import attrs
import trio

from engine.errors import (
    ActorStopped,
    Forbidden,
    InvalidMessage,
    InvalidState,
    NotFound,
    Overloaded,
    PersistenceUnavailable,
    RateLimited,
    ShuttingDown,
)
from engine.messages import (
    AGENT_COMMANDS,
    VISITOR_COMMANDS,
    Accept,
    AddNote,
    AgentStatus,
    AgentSummary,
    AgentWelcome,
    ChatList,
    Close,
    Command,
    EndChat,
    GetHistory,
    GetRoutingLog,
    History,
    Invite,
    Join,
    Leave,
    LeaveOfflineMessage,
    ListMyChats,
    ListQueue,
    ListVisitors,
    Ok,
    Push,
    QueueList,
    Rate,
    ReportPageView,
    Result,
    RoutingDecisionView,
    RoutingLog,
    SendMessage,
    SetStatus,
    SetTyping,
    StartChat,
    Tag,
    Transfer,
    Unwatch,
    UpdateProfile,
    VisitorList,
    VisitorWelcome,
    Watch,
    Watching,
    Whisper,
)
from engine.metrics import EngineMetrics
from engine.visibility import for_visitor_result
from storage.api import ConversationState, Role, Storage

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


@attrs.frozen(kw_only=True)
class VisitorPrincipal:
    workspace_id: str
    visitor_id: str


@attrs.frozen(kw_only=True)
class AgentPrincipal:
    workspace_id: str
    agent_id: str
    role: Role
    display_name: str

    @property
    def is_supervisor(self) -> bool:
        return self.role in (Role.SUPERVISOR, Role.ADMIN, Role.OWNER)


Principal = VisitorPrincipal | AgentPrincipal


def start_chat_origin(visitor_id: str, agent_id: str, client_msg_id: str) -> str:
    """The storage ``origin_key`` of an agent's ``start_chat``: a retry finds its chat."""
    return f"start_chat:{visitor_id}:{agent_id}:{client_msg_id}"


def offline_message_origin(visitor_id: str, client_msg_id: str) -> str:
    """The storage ``origin_key`` of a visitor's ``offline_message``."""
    return f"offline_message:{visitor_id}:{client_msg_id}"


@attrs.frozen(kw_only=True)
class ConnectionMeta:
    """What the transport knows of a connection; ``page`` is a visitor's first page view."""

    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    page_title: str | None = None
    page_referrer: str | None = None


@attrs.frozen(kw_only=True)
class EngineConfig:
    """Every engine knob, read once at start-up; units in the names."""

    mailbox_size: int = 1024  # per actor; ``tell`` waits when full
    outbox_size: int = 256  # per connection, created by the web layer with this size
    idle_timeout_s: float = 300.0  # passivate a virtual actor after this long without messages
    ask_timeout_s: float = 10.0  # deadline for one command crossing into an actor
    # deadline for one storage call made by an actor (below ask_timeout_s, so a sender hears
    # storage_unavailable rather than overloaded when the database is stuck)
    storage_timeout_s: float = 4.0
    agent_response_timeout_s: float = 60.0  # re-route a chat the assignee has not answered
    disconnect_grace_s: float = 30.0  # an agent with no connection is offline after this
    agent_auto_away_after_s: float = 0.0  # 0: never; else an accepting agent idle this long is away
    visitor_leave_grace_s: float = 15.0  # a visitor with no tab open "left" after this
    typing_ttl_s: float = 6.0  # a typing/viewing signal expires unless refreshed
    typing_min_interval_s: float = 0.3  # rate limit for ephemeral signals per sender
    message_rate_per_s: float = 5.0  # token bucket per visitor for durable sends
    message_burst: int = 20
    max_resume_gap: int = 500  # more missed events than this: resync_required
    recent_events: int = 200  # events a conversation keeps in memory for fast replay
    restart_max: int = 5  # restart intensity of a conversation/visitor/agent/router actor
    restart_period_s: float = 10.0
    # restart intensity of the engine supervisor (a crashed registry or task); kept low
    # because nested intensities multiply
    engine_restart_max: int = 3
    engine_restart_period_s: float = 60.0
    shutdown_deadline_s: float = 5.0  # drain() stops the engine within this
    default_routing_mode: str = "auto"  # "auto" | "manual"; workspace settings override
    default_max_chats: int = 5  # when an agent record has none
    avg_handle_time_s: float = 300.0  # seed for the estimated wait before data exists
    abandon_queued_after_s: float = 0.0  # 0: never; else close a queued chat as missed
    tick_interval_s: float = 1.0  # routers check response timeouts and grace periods this often
    router_idle_timeout_s: float = 3600.0


@attrs.define(eq=False)
class Connection:
    """A live client connection: the handle ``request`` and ``disconnect`` take.

    ``welcome`` is the initial state (``VisitorWelcome`` / ``AgentWelcome``), set by ``connect``
    and sent by the web layer inside its hello/auth result. It is not pushed into the outbox:
    the outbox carries only what follows it (replayed events for ``resume``, then live pushes),
    so the web layer must send the welcome before it starts forwarding the outbox.
    """

    id: str
    principal: Principal
    outbox: trio.MemorySendChannel[Push]
    meta: ConnectionMeta
    welcome: object = None
    watching: set[str] = attrs.field(factory=set)  # conversations this connection follows
    visitor_list: bool = False  # agent subscribed to visitor_update
    resuming: set[str] = attrs.field(factory=set)  # live events held back until replayed
    closed: bool = False

    @property
    def workspace_id(self) -> str:
        return self.principal.workspace_id

    @property
    def for_visitor(self) -> bool:
        """A visitor's connection: what it receives goes through ``engine.visibility``."""
        return isinstance(self.principal, VisitorPrincipal)


ResumePoints = Mapping[str, int]

# A supervisor reading a live chat they are not in is audited at most this often per chat.
SUPERVISION_AUDIT_EVERY_S = 300.0


# Commands bound to a live connection (subscriptions, presence, per-connection rate limits):
# ``request_as`` refuses them.
_CONNECTION_COMMANDS = (Watch, Unwatch, ListVisitors, SetTyping, SetStatus, ReportPageView)

_CONVERSATION_COMMANDS = (
    SendMessage,
    AddNote,
    Whisper,
    Accept,
    Transfer,
    Invite,
    Join,
    Leave,
    Close,
    Tag,
    Rate,
    EndChat,
)


class ChatEngine:
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
    ) -> None:
        from engine.context import EngineContext
        from engine.decisions import DecisionLog
        from engine.presence import Hub, RateLimiter

        self.config = config
        self._ctx = EngineContext(
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
        from engine.agent import AgentActor
        from engine.conversation import ConversationActor
        from engine.registry import Registry
        from engine.routing import RouterActor
        from engine.supervisor import (
            RestartStrategy,
            RestartType,
            ServiceSpec,
            Supervisor,
            TaskService,
        )
        from engine.visitor import VisitorActor

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
        from engine.agent import AgentTick
        from engine.routing import Tick

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

    async def _drops_forever(self) -> None:
        async for conn in self._drops_recv:
            with contextlib.suppress(ShuttingDown, Overloaded, ActorStopped):
                await self._after_leave(conn)

    def _on_drop(self, conn: Connection) -> None:
        self._drops_send.send_nowait(conn)

    # -- connections

    async def connect(
        self,
        principal: Principal,
        outbox: trio.MemorySendChannel[Push],
        *,
        connection_id: str,
        resume: ResumePoints | None = None,
        meta: ConnectionMeta | None = None,
    ) -> Connection:
        """Register a subscriber and return its handle with ``welcome`` (send it first).

        Events after each ``resume`` seq (visible to the principal) are pushed before live
        ones; a gap larger than ``max_resume_gap`` (or the outbox's room) gets
        ``resync_required`` instead. Unknown or foreign conversation ids are ignored.
        """
        from engine.agent import AgentJoined
        from engine.conversation import Snapshot, Subscribe
        from engine.routing import GetAgents, GetQueue
        from engine.visitor import VisitorArrived

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
                visitor = await self._visitor(principal)
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
        from engine.agent import AgentLeft
        from engine.visitor import VisitorLeft

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
        (the reload is then still queued). A workspace without a running router has nothing
        to refresh: its router loads everything when it starts.
        """
        from engine.routing import WorkspaceChanged

        self._ctx.forget_workspace(workspace_id)
        routers = self._ctx.routers
        if routers is None or not self._accepting or not routers.is_active(workspace_id):
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(self.config.ask_timeout_s), contextlib.suppress(ShuttingDown):
            router = await routers.get(workspace_id)
            await router.ask(lambda r: WorkspaceChanged(reply=r))

    async def agents_available(self, workspace_id: str) -> bool:
        """Whether an agent of the workspace is connected and accepting chats, as the router
        sees it (what ``welcome_visitor.agents_available`` says). Agents at their chat limit
        count: a new chat then queues with its position instead of becoming offline."""
        from engine.routing import GetAgents

        self._check_accepting()
        try:
            with trio.fail_after(self.config.ask_timeout_s):
                router = await self._router(workspace_id)
                view = await router.ask(lambda r: GetAgents(reply=r))
        except trio.TooSlowError as exc:
            raise Overloaded("the engine did not answer in time") from exc
        return bool(view.available)

    # -- commands

    async def request(self, conn: Connection, command: Command) -> Result:
        """Run one command for ``conn``; raises a ``DomainError`` with a stable ``code``."""
        return await self._request(conn.principal, conn, command)

    async def request_as(self, principal: Principal, command: Command) -> Result:
        """Run one command for ``principal`` without a connection (e.g. from the HTTP API).

        Same rules, results and errors as ``request``, and the chat's live participants are
        told as usual; the caller is not registered anywhere, so it neither shows as online
        nor receives routed chats or pushes. Commands that only make sense on a live
        connection (``watch``, ``unwatch``, ``list_visitors``, ``typing``, ``set_status``,
        ``page_view``) raise ``Forbidden``; a silent ``join`` is applied without watching.
        """
        if isinstance(command, _CONNECTION_COMMANDS):
            raise Forbidden(f"{type(command).__name__} needs a live connection")
        return await self._request(principal, None, command)

    async def _request(self, p: Principal, conn: Connection | None, command: Command) -> Result:
        self._check_accepting()
        allowed = VISITOR_COMMANDS if isinstance(p, VisitorPrincipal) else AGENT_COMMANDS
        if type(command) not in allowed:
            raise Forbidden(f"{type(command).__name__} is not allowed here")
        try:
            with trio.fail_after(self.config.ask_timeout_s):
                if isinstance(p, VisitorPrincipal):
                    return for_visitor_result(await self._visitor_request(conn, p, command))
                return await self._agent_request(conn, p, command)
        except trio.TooSlowError as exc:
            raise Overloaded("the engine did not answer in time") from exc

    async def _visitor_request(
        self, conn: Connection | None, p: VisitorPrincipal, cmd: Command
    ) -> Result:
        from engine.visitor import OpenConversation, VisitorNavigated, VisitorProfile

        ws = p.workspace_id
        if isinstance(cmd, SetTyping):
            assert conn is not None  # request_as refuses it
            await self._signal(conn, p, cmd)
            return Ok()
        if isinstance(cmd, ReportPageView):
            await (await self._visitor(p)).tell(VisitorNavigated(page=cmd))
            return Ok()
        if isinstance(cmd, UpdateProfile):
            await (await self._visitor(p)).ask(lambda r: VisitorProfile(update=cmd, reply=r))
            return Ok()
        if isinstance(cmd, GetHistory):
            return await self._history(p, cmd)
        if isinstance(cmd, SendMessage | LeaveOfflineMessage):
            wait_s = self._messages.check(("msg", ws, p.visitor_id))
            if wait_s > 0:
                # Rounded up: a wait under a millisecond must not read as "retry now" (0.0).
                raise RateLimited("too many messages", retry_after_s=math.ceil(wait_s * 1e3) / 1e3)
        if isinstance(cmd, LeaveOfflineMessage):
            # Keyed by the client id: a retry (new socket, restarted server) gets the same
            # conversation, and the message's client_msg_id makes the append a duplicate.
            origin = offline_message_origin(p.visitor_id, cmd.client_msg_id)
            conv = await self._new_conversation(ws, p.visitor_id, origin_key=origin)
            await (await self._visitor(p)).ask(
                lambda r: VisitorProfile(
                    update=UpdateProfile(name=cmd.name, email=cmd.email), reply=r
                )
            )
            return await self._apply(p, await self._conversation(ws, conv.id), cmd)
        conversation_id = getattr(cmd, "conversation_id", None)
        if conversation_id is None:
            create = isinstance(cmd, SendMessage)
            visitor = await self._visitor(p)
            group_id = cmd.group_id if isinstance(cmd, SendMessage) else None
            conversation_id = await visitor.ask(
                lambda r: OpenConversation(create=create, group_id=group_id, reply=r)
            )
            if conversation_id is None:
                raise InvalidState("no open conversation")
            return await self._apply(p, await self._conversation(ws, conversation_id), cmd)
        return await self._apply(p, await self._existing_conversation(p, conversation_id), cmd)

    async def _agent_request(
        self, conn: Connection | None, p: AgentPrincipal, cmd: Command
    ) -> Result:
        from engine.agent import AgentActive, ChooseStatus
        from engine.conversation import Snapshot, Subscribe
        from engine.routing import GetQueue, GetVisitors

        ctx = self._ctx
        ws = p.workspace_id
        if conn is not None and not isinstance(cmd, SetStatus):
            # Activity for auto-away; dropped when the agent's mailbox is full (it is busy).
            assert ctx.agents is not None
            with contextlib.suppress(trio.WouldBlock, ShuttingDown, ActorStopped):
                ctx.agents.get_nowait((ws, p.agent_id)).tell_nowait(AgentActive())
        if isinstance(cmd, SendMessage) and cmd.conversation_id is None:
            raise InvalidMessage(
                "conversation_id: required", code="missing_field", field="conversation_id"
            )
        if isinstance(cmd, _CONVERSATION_COMMANDS):
            conversation_id = getattr(cmd, "conversation_id")  # noqa: B009
            ref = await self._existing_conversation(p, conversation_id)
            result = await self._apply(p, ref, cmd)
            if isinstance(cmd, Join) and cmd.silent:
                await self._audit_supervision(p, conn, conversation_id, "silent_join")
                if conn is not None:
                    ctx.hub.watch(conn, conversation_id)
            return result
        if isinstance(cmd, SetTyping):
            assert conn is not None  # request_as refuses it
            await self._signal(conn, p, cmd)
            return Ok()
        if isinstance(cmd, SetStatus):
            agent = await self._agent(ws, p.agent_id)
            status = AgentStatus(str(cmd.status))
            await agent.ask(lambda r: ChooseStatus(status=status, reply=r))
            return Ok()
        if isinstance(cmd, StartChat):
            from engine.visitor import OpenConversation

            if await ctx.call(ctx.storage.get_visitor(ws, cmd.visitor_id)) is None:
                raise NotFound("no such visitor")  # checked before an actor starts for it
            # The visitor actor serializes starts: one open chat per visitor (AlreadyOpen for
            # a second agent), and a retry with the same client id gets the same chat.
            visitor = await self._visitor(
                VisitorPrincipal(workspace_id=ws, visitor_id=cmd.visitor_id)
            )
            origin = start_chat_origin(cmd.visitor_id, p.agent_id, cmd.client_msg_id)
            conversation_id = await visitor.ask(
                lambda r: OpenConversation(create=True, origin_key=origin, reply=r)
            )
            if conversation_id is None:
                raise NotFound("no such visitor")
            return await self._apply(p, await self._conversation(ws, conversation_id), cmd)
        if isinstance(cmd, Watch):
            assert conn is not None  # request_as refuses it
            ref = await self._existing_conversation(p, cmd.conversation_id)
            summary = await ref.ask(lambda r: Snapshot(reply=r))
            await self._may_read(p, conn, summary.state, summary.participant_ids, "watch", cmd)
            conn.resuming.add(cmd.conversation_id)
            try:
                summary = await ref.ask(
                    lambda r: Subscribe(conn=conn, after_seq=cmd.after_seq, watch=True, reply=r)
                )
            finally:
                conn.resuming.discard(cmd.conversation_id)
            return Watching(conversation=summary)
        if isinstance(cmd, Unwatch):
            assert conn is not None  # request_as refuses it
            ctx.hub.unwatch(conn, cmd.conversation_id)
            return Ok()
        if isinstance(cmd, ListQueue):
            router = await self._router(ws)
            return QueueList(entries=await router.ask(lambda r: GetQueue(reply=r)))
        if isinstance(cmd, ListMyChats):
            return ChatList(conversations=await self._my_chats(p))
        if isinstance(cmd, ListVisitors):
            assert conn is not None  # request_as refuses it
            conn.visitor_list = cmd.subscribe
            router = await self._router(ws)
            return VisitorList(visitors=await router.ask(lambda r: GetVisitors(reply=r)))
        if isinstance(cmd, GetHistory):
            return await self._history(p, cmd, conn)
        if isinstance(cmd, GetRoutingLog):
            if await ctx.call(ctx.storage.get_conversation(ws, cmd.conversation_id)) is None:
                raise NotFound("conversation not found")
            await ctx.decisions.flush()
            decisions = await ctx.call(
                ctx.storage.list_routing_decisions(
                    ws, conversation_id=cmd.conversation_id, limit=cmd.limit + 1
                )
            )
            has_more = len(decisions) > cmd.limit
            decisions = decisions[: cmd.limit]
            return RoutingLog(
                conversation_id=cmd.conversation_id,
                has_more=has_more,
                decisions=tuple(
                    RoutingDecisionView(
                        conversation_id=d.conversation_id,
                        agent_id=d.agent_id,
                        reason=d.reason,
                        details=dict(d.details),
                        at=d.at,
                    )
                    for d in decisions
                ),
            )
        raise Forbidden(f"{type(cmd).__name__} is not allowed here")

    async def _apply(self, p: Principal, ref: Any, cmd: Any) -> Result:
        from engine.conversation import Apply

        sent_at = self._ctx.clock()
        result: Result = await ref.ask(
            lambda r: Apply(principal=p, command=cmd, reply=r, sent_at_s=sent_at)
        )
        return result

    async def _signal(self, conn: Connection, p: Principal, cmd: SetTyping) -> None:
        from engine.conversation import Signal

        if self._signals.check(("typing", conn.id)) > 0:
            return  # ephemeral: dropping an over-eager typing signal loses nothing
        try:
            ref = await self._existing_conversation(p, cmd.conversation_id)
        except NotFound:
            return  # typing is fire-and-forget: a wrong id answers ok and reaches nobody
        # A busy conversation drops ephemeral signals first.
        with contextlib.suppress(trio.WouldBlock):
            ref.tell_nowait(Signal(principal=p, command=cmd))

    async def _may_read(
        self,
        p: AgentPrincipal,
        conn: Connection | None,
        state: str,
        participant_ids: Sequence[str],
        how: str,
        cmd: Any,
    ) -> None:
        """Reading a live chat one is not in is silent supervision: supervisors (and higher)
        only, and audited. Queued chats (anyone may take them) and closed ones (the history)
        stay open to every agent of the workspace."""
        if state != ConversationState.ACTIVE or p.agent_id in participant_ids:
            return
        if not p.is_supervisor:
            raise Forbidden("only supervisors may read a live chat they are not in")
        await self._audit_supervision(p, conn, cmd.conversation_id, how)

    async def _audit_supervision(
        self, p: AgentPrincipal, conn: Connection | None, conversation_id: str, how: str
    ) -> None:
        """One audit entry per silent join, and per supervisor and chat every
        ``SUPERVISION_AUDIT_EVERY_S`` for reads (opening a chat reads it twice: watch, history).
        """
        ctx = self._ctx
        now = ctx.clock()
        key = (p.workspace_id, p.agent_id, conversation_id)
        if how != "silent_join":
            last = self._supervision_audited.get(key)
            if last is not None and now - last < SUPERVISION_AUDIT_EVERY_S:
                return
        if len(self._supervision_audited) > 10_000:
            cutoff = now - SUPERVISION_AUDIT_EVERY_S
            for old in [k for k, at in self._supervision_audited.items() if at < cutoff]:
                del self._supervision_audited[old]
        await ctx.call(
            ctx.storage.audit(
                p.workspace_id,
                actor=f"agent:{p.agent_id}",
                action="conversation.supervised",
                target=f"conversation:{conversation_id}",
                details={"how": how},
                ip=None if conn is None else conn.meta.ip,
            )
        )
        self._supervision_audited[key] = now

    async def _history(
        self, p: Principal, cmd: GetHistory, conn: Connection | None = None
    ) -> History:
        from engine.conversation import view

        ctx = self._ctx
        ws = p.workspace_id
        conv = await ctx.call(ctx.storage.get_conversation(ws, cmd.conversation_id))
        if conv is None or (isinstance(p, VisitorPrincipal) and conv.visitor_id != p.visitor_id):
            raise NotFound("conversation not found")
        if isinstance(p, AgentPrincipal):
            await self._may_read(p, conn, conv.state, conv.participant_ids, "history", cmd)
        events = await ctx.call(
            ctx.storage.history(
                ws,
                cmd.conversation_id,
                after_seq=cmd.after_seq,
                before_seq=cmd.before_seq,
                limit=cmd.limit + 1,
                include_agents_only=isinstance(p, AgentPrincipal),
            )
        )
        more = len(events) > cmd.limit
        # Without ``after_seq`` storage gives the newest events (scrollback): the extra one is
        # the oldest, so drop that one, never the newest.
        events = events[1:] if more and cmd.after_seq is None else events[: cmd.limit]
        views = []
        for event in events:
            name = (
                await ctx.agent_name(ws, event.author_id)
                if event.author_type == "agent" and event.author_id
                else ctx.visitor_names.get((ws, event.author_id or ""))
            )
            views.append(view(event, name))
        return History(conversation_id=cmd.conversation_id, events=tuple(views), has_more=more)

    async def _all_agents(
        self, ws: str, live: tuple[AgentSummary, ...]
    ) -> tuple[AgentSummary, ...]:
        """Every enabled agent of the workspace (storage is the list), with the router's live
        status and load; one the router has not loaded yet is offline with no chats."""
        ctx = self._ctx
        known = {a.agent_id: a for a in live}
        records = await ctx.call(ctx.storage.list_agents(ws))
        return tuple(
            known.get(r.id)
            or AgentSummary(
                agent_id=r.id,
                display_name=r.display_name,
                role=str(r.role),
                status=str(AgentStatus.OFFLINE),
                active_chats=0,
                max_chats=r.max_chats,
                group_ids=tuple(r.group_ids),
            )
            for r in records
            if r.enabled
        )

    async def _my_chats(self, p: AgentPrincipal) -> tuple[Any, ...]:
        from engine.conversation import summarize

        ctx = self._ctx
        ws = p.workspace_id
        convs = await ctx.call(ctx.storage.list_open_conversations(ws))
        return tuple(
            summarize(
                c,
                visitor_name=ctx.visitor_names.get((ws, c.visitor_id)),
                assignee_name=ctx.agent_names.get((ws, c.assignee_id or "")),
            )
            for c in convs
            if p.agent_id in c.participant_ids
        )

    # -- refs

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise ShuttingDown("the engine is not accepting work")

    async def _new_conversation(self, ws: str, visitor_id: str, *, origin_key: str) -> Any:
        ctx = self._ctx
        settings = await ctx.workspace_settings(ws)
        return await ctx.call(
            ctx.storage.create_conversation(
                ws, visitor_id=visitor_id, group_id=settings.default_group_id, origin_key=origin_key
            )
        )

    async def _existing_conversation(self, p: Principal, conversation_id: str) -> Any:
        """The ref of a conversation ``p`` may address; ``NotFound`` before any actor starts.

        A running actor is used as is (it checks the principal itself, for free); otherwise
        one storage read checks that the id exists in the workspace and, for a visitor, is
        theirs, so guessed or foreign ids cannot make the registry spawn actors.
        """
        registry = self._ctx.conversations
        assert registry is not None
        ws = p.workspace_id
        if not registry.is_active((ws, conversation_id)):
            ctx = self._ctx
            conv = await ctx.call(ctx.storage.get_conversation(ws, conversation_id))
            if conv is None or (
                isinstance(p, VisitorPrincipal) and conv.visitor_id != p.visitor_id
            ):
                raise NotFound("conversation not found")
        return await self._conversation(ws, conversation_id)

    async def _conversation(self, ws: str, conversation_id: str) -> Any:
        registry = self._ctx.conversations
        assert registry is not None
        try:  # hot path: the ask that follows is the checkpoint
            return registry.get_nowait((ws, conversation_id))
        except trio.WouldBlock:
            return await registry.get((ws, conversation_id))

    async def _visitor(self, p: VisitorPrincipal) -> Any:
        assert self._ctx.visitors is not None
        return await self._ctx.visitors.get((p.workspace_id, p.visitor_id))

    async def _agent(self, ws: str, agent_id: str) -> Any:
        assert self._ctx.agents is not None
        return await self._ctx.agents.get((ws, agent_id))

    async def _router(self, ws: str) -> Any:
        assert self._ctx.routers is not None
        return await self._ctx.routers.get(ws)

    async def crash_conversation_for_test(self, workspace_id: str, conversation_id: str) -> None:
        """Test hook: crash one conversation actor (its registry restarts it)."""
        from engine.conversation import Crash

        ref = await self._conversation(workspace_id, conversation_id)
        await ref.tell(Crash())


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
