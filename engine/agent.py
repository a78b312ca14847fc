"""Agents: one actor per logged-in agent, and the router's mirror of it.

`AgentActor` (one per ``(workspace, agent)``, in the ``agent`` registry) owns what is the
agent's own: the status they chose (accepting, away, not accepting), auto-away after
``agent_auto_away_after_s`` without activity, every socket and tab (connection ids), and the
grace period after the last one drops (``disconnect_grace_s``): while it runs, the visitors of
the agent's chats are told the agent is reconnecting (``agent_reconnecting``); when it ends
the agent is offline and the router queues their chats again. It tells the router each change
as one `AgentPresence` (``await tell``: the router never waits on an agent, so no deadlock),
and the router tells it the agent's chats and capacity (`AgentChats`, ``tell_nowait``).

`AgentState` is the router's mirror: one serialized place decides who is free, with the
eligibility rules below. The mirror also remembers the chosen status, so an agent actor that
crashed (or a reconnect much later) starts from it.

Owners and admins start "not accepting" (they administer first), agents and supervisors
"accepting"; either changes it with ``set_status``. An agent actor that is offline (no socket,
grace period over) passivates itself on the next tick.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from engine.actor import Actor, Reply
from engine.errors import PersistenceUnavailable
from engine.messages import AgentReconnecting, AgentStatus, AgentSummary

__all__ = [
    "AgentActive",
    "AgentActor",
    "AgentChats",
    "AgentJoined",
    "AgentLeft",
    "AgentPresence",
    "AgentState",
    "AgentTick",
    "ChooseStatus",
    "GetAgentView",
    "default_status",
]

_NOT_ACCEPTING_AT_LOGIN = frozenset({"owner", "admin"})


def default_status(role: str) -> AgentStatus:
    """The status an agent has before choosing one: owners and admins do not take chats."""
    return AgentStatus.NOT_ACCEPTING if role in _NOT_ACCEPTING_AT_LOGIN else AgentStatus.ACCEPTING


@attrs.define(slots=True, kw_only=True, eq=False)
class AgentState:
    agent_id: str
    display_name: str
    role: str
    max_chats: int
    group_ids: tuple[str, ...]
    chosen: AgentStatus = AgentStatus.ACCEPTING  # what the agent asked for (or auto-away)
    connected: bool = False
    disconnected_at: float | None = None  # start of the grace period
    active: set[str] = attrs.field(factory=set)  # chats assigned to this agent
    pending: set[str] = attrs.field(factory=set)  # proposed, not yet confirmed
    idle_since: float = 0.0  # when the agent last got a chat or became free
    reported: bool = True  # False: a fresh router waits for the agent actor's status

    @property
    def status(self) -> AgentStatus:
        if not self.connected and self.disconnected_at is None:
            return AgentStatus.OFFLINE
        return self.chosen

    @property
    def load(self) -> int:
        return len(self.active) + len(self.pending)

    @property
    def online(self) -> bool:
        """Connected now (not in a grace period) and accepting chats, whatever the load."""
        return self.connected and self.reported and self.chosen == AgentStatus.ACCEPTING

    def can_take(self, group_id: str | None) -> bool:
        """Accepting, connected now (not in a grace period), below the chat limit, in group."""
        return (
            self.connected
            and self.reported
            and self.chosen == AgentStatus.ACCEPTING
            and self.load < self.max_chats
            and (group_id is None or group_id in self.group_ids)
        )

    def summary(self) -> AgentSummary:
        return AgentSummary(
            agent_id=self.agent_id,
            display_name=self.display_name,
            role=self.role,
            status=str(self.status),
            active_chats=len(self.active),
            max_chats=self.max_chats,
            group_ids=self.group_ids,
        )


# --- the agent actor -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AgentPresence:
    """Agent actor → router: the agent's status now (``chosen`` is meaningful while
    ``connected`` or ``reconnecting``; neither means offline: re-route their chats)."""

    agent_id: str
    chosen: AgentStatus
    connected: bool
    reconnecting: bool


@attrs.frozen(kw_only=True, eq=False)
class AgentJoined:
    """A socket of the agent was registered; answered with the agent's status."""

    principal: Any  # engine.api.AgentPrincipal
    connection_id: str
    reply: Reply[AgentStatus]


@attrs.frozen(kw_only=True, eq=False)
class AgentLeft:
    connection_id: str


@attrs.frozen(kw_only=True, eq=False)
class ChooseStatus:
    status: AgentStatus
    reply: Reply[AgentStatus]


@attrs.frozen(kw_only=True, eq=False)
class AgentActive:
    """The agent did something (a command on any socket): not idle, back from auto-away."""


@attrs.frozen(kw_only=True, eq=False)
class AgentTick:
    pass


@attrs.frozen(kw_only=True, eq=False)
class AgentChats:
    """Router → agent actor: the agent's current chats and chat limit; ``resync`` (a router
    that just started) asks the actor to report its status again."""

    active: tuple[str, ...]
    max_chats: int
    resync: bool = False


@attrs.frozen(kw_only=True)
class AgentView:
    status: AgentStatus
    auto_away: bool
    connections: int
    reconnecting: bool
    chats: tuple[str, ...]
    max_chats: int


@attrs.frozen(kw_only=True, eq=False)
class GetAgentView:
    reply: Reply[AgentView]


@attrs.frozen(kw_only=True, eq=False)
class GetAgentMirror:
    """From an agent actor starting: the router's copy of its state (None: not an enabled
    agent of the workspace)."""

    agent_id: str
    reply: Reply[AgentState | None]


AgentMsg = (
    AgentJoined | AgentLeft | ChooseStatus | AgentActive | AgentTick | AgentChats | GetAgentView
)


class AgentActor(Actor[AgentMsg]):
    """One logged-in agent: chosen status, sockets, grace period, auto-away, chats.

    Rebuilt on every start: sockets from the hub, chosen status, chats and capacity from the
    router's mirror (which the actor keeps up to date), so a crash loses nothing the agent
    chose. Time comes from `AgentTick` (the engine's ticker), never from timers in here.
    """

    def __init__(self, ctx: Any, key: tuple[str, str]) -> None:
        self.ctx = ctx
        self.ws, self.agent_id = key
        self.display_name = ""
        self.known = False  # an enabled agent of the workspace (the router's mirror has it)
        self.chosen = AgentStatus.ACCEPTING
        self.auto_away = False
        self.connections: set[str] = set()
        self.reconnecting_since: float | None = None
        self.last_active = ctx.clock()
        self.chats: tuple[str, ...] = ()
        self.max_chats = 0
        self.reported: AgentPresence | None = None

    async def on_start(self) -> None:
        ctx = self.ctx
        self.connections = {c.id for c in ctx.hub.agent_connections(self.ws, self.agent_id)}
        with trio.fail_after(ctx.config.ask_timeout_s):
            router = await ctx.routers.get(self.ws)
            mirror = await router.ask(lambda r: GetAgentMirror(agent_id=self.agent_id, reply=r))
        if mirror is None:
            return
        self.known = True
        self.display_name = mirror.display_name
        self.chosen = mirror.chosen
        self.chats = tuple(sorted(mirror.active))
        self.max_chats = mirror.max_chats
        if not self.connections and mirror.disconnected_at is not None:
            self.reconnecting_since = mirror.disconnected_at
        self.reported = AgentPresence(
            agent_id=self.agent_id,
            chosen=mirror.chosen,
            connected=mirror.connected,
            reconnecting=mirror.disconnected_at is not None,
        )
        await self._report()  # the mirror may predate sockets that came or went meanwhile

    @property
    def status(self) -> AgentStatus:
        if not self.known or (not self.connections and self.reconnecting_since is None):
            return AgentStatus.OFFLINE
        return self.chosen

    async def handle(self, msg: AgentMsg) -> None:
        now = self.ctx.clock()
        if isinstance(msg, AgentJoined):
            if not self.known:  # enabled since this actor started: ask the router again
                await self.on_start()
            self.display_name = msg.principal.display_name or self.display_name
            self.connections.add(msg.connection_id)
            self.last_active = now
            self._back_from_auto_away()
            if self.reconnecting_since is not None:
                self.reconnecting_since = None
                await self._tell_visitors(reconnecting=False)
            await self._report()
            msg.reply.send(self.status)
        elif isinstance(msg, AgentLeft):
            self.connections.discard(msg.connection_id)
            if not self.connections and self.reconnecting_since is None and self.known:
                self.reconnecting_since = now
                await self._tell_visitors(reconnecting=True)
                await self._report()
        elif isinstance(msg, ChooseStatus):
            self.chosen = msg.status
            self.auto_away = False
            self.last_active = now
            await self._report()
            msg.reply.send(self.status)
        elif isinstance(msg, AgentActive):
            self.last_active = now
            if self._back_from_auto_away():
                await self._report()
        elif isinstance(msg, AgentTick):
            await self._tick(now)
        elif isinstance(msg, AgentChats):
            self.chats = msg.active
            self.max_chats = msg.max_chats
            if msg.resync:
                self.reported = None
                await self._report()
        elif isinstance(msg, GetAgentView):
            msg.reply.send(
                AgentView(
                    status=self.status,
                    auto_away=self.auto_away,
                    connections=len(self.connections),
                    reconnecting=self.reconnecting_since is not None,
                    chats=self.chats,
                    max_chats=self.max_chats,
                )
            )

    async def _tick(self, now: float) -> None:
        cfg = self.ctx.config
        if not self.connections and self.reconnecting_since is None:
            # Offline: nothing to time. Passivate (what is queued is still handled; the next
            # login starts a fresh actor from the router's mirror) so ticks stop coming.
            self.ctx.agents.passivate((self.ws, self.agent_id))
            return
        since = self.reconnecting_since
        if since is not None and not self.connections:
            if now - since >= cfg.disconnect_grace_s:
                self.reconnecting_since = None  # offline: the router queues the chats again
                await self._report()
            return
        idle_s = cfg.agent_auto_away_after_s
        if (
            idle_s > 0
            and self.connections
            and self.chosen == AgentStatus.ACCEPTING
            and now - self.last_active >= idle_s
        ):
            self.chosen = AgentStatus.AWAY
            self.auto_away = True
            await self._report()

    def _back_from_auto_away(self) -> bool:
        if not self.auto_away:
            return False
        self.auto_away = False
        self.chosen = AgentStatus.ACCEPTING
        return True

    async def _report(self) -> None:
        """Tell the router the agent's status if it changed (waits while its mailbox is full,
        under the ask deadline: the router never waits on an agent)."""
        if not self.known:
            return
        presence = AgentPresence(
            agent_id=self.agent_id,
            chosen=self.chosen,
            connected=bool(self.connections),
            reconnecting=self.reconnecting_since is not None,
        )
        if presence == self.reported:
            return
        ctx = self.ctx
        with trio.fail_after(ctx.config.ask_timeout_s):
            router = await ctx.routers.get(self.ws)
            await router.tell(presence)
        self.reported = presence

    async def _tell_visitors(self, *, reconnecting: bool) -> None:
        """Push ``agent_reconnecting`` to the visitor of each of the agent's chats (looked up
        in storage: rare, and a chat whose row cannot be read now is skipped)."""
        ctx = self.ctx
        hub = ctx.hub
        for conversation_id in self.chats:
            try:
                conv = await ctx.call(ctx.storage.get_conversation(self.ws, conversation_id))
            except PersistenceUnavailable:
                continue
            if conv is None or conv.state != "active" or self.agent_id not in conv.participant_ids:
                continue  # closed or moved on since the router last told us
            push = AgentReconnecting(
                conversation_id=conversation_id,
                agent_name=self.display_name,
                reconnecting=reconnecting,
                grace_s=ctx.config.disconnect_grace_s,
            )
            hub.deliver_all(list(hub.visitor_connections(self.ws, conv.visitor_id)), push)
