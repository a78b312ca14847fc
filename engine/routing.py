"""The workspace router: one actor per workspace that decides who gets which chat.

It keeps the queue (oldest first), each agent's status and load, and the live visitor list. It
learns every change of a conversation from that conversation's actor (``ConversationChanged``),
and proposes assignments back with ``tell_nowait`` (the router never waits on a conversation,
so the two can never deadlock; a full mailbox is retried on the next tick). The conversation
actor applies a proposal only if the chat is still queued: the router's view may lag, the
conversation's state never does.

Rules (auto mode): who gets a chat is ``engine.routing_queue.choose_agent``; the oldest
queued chat goes first whenever capacity frees (agents' ``max_chats``, exactly, and the
workspace's ``max_concurrent_chats``). Manual mode: no proposals; agents pick from the queue
with ``accept``. A chat whose auto-assigned agent does not answer within the response
timeout, or whose agent stays disconnected past the grace period, is queued again without that
agent; a chat queued longer than ``abandon_queued_after_s`` (when > 0) is closed as missed.
Every decision is recorded with its reason in the ``DecisionLog`` (stored in batches, off this
actor's loop).

The workspace's settings, agents and groups are loaded on start and again on
``WorkspaceChanged`` (sent by ``ChatEngine.workspace_changed`` after an admin change), keeping
the live state (connections, chosen status, load) of agents that are still enabled.

A storage outage is an expected event, not a bug: it never crashes the router (its restart
intensity is kept for bugs). A start whose reads fail leaves the router running but not
loaded: it tries again on its next message once its ``Backoff`` is due (ticks every
``tick_interval_s``, waits doubling from 0.5 s to 5 s), and meanwhile answers asks with
``storage_unavailable``, keeps the live visitor list and drops the other tells (the load reads
the chats back; agent actors are told to report their status again). A failed reload on
``WorkspaceChanged`` keeps the loaded state and is retried the same way; a storage failure in
the middle of a conversation or agent change drops the state and loads it again, as a restart
would. Failures are logged rate-limited (``ctx.router_load_failures``).

Time is driven by ``Tick`` messages from the engine (``tick_interval_s``), never by timers
inside the actor.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from typing import Any

import attrs
import trio

from engine.actor import Actor
from engine.agent import AgentChats, AgentPresence, AgentState, GetAgentMirror, default_status
from engine.backoff import Backoff
from engine.context import EngineContext, WorkspaceSettings
from engine.conversation import (
    ConversationChanged,
    GetRoom,
    RouterAssign,
    RouterClose,
    RouterExpireInvitation,
    RouterRequeue,
    RouterTrigger,
)
from engine.errors import (
    STORAGE_FAILED_MESSAGE,
    ActorStopped,
    PersistenceUnavailable,
    ShuttingDown,
)
from engine.firings import recent_firings, record_firing
from engine.messages import (
    AgentStatus,
    AgentStatusPush,
    Availability,
    ChatAssigned,
    ChatUnassigned,
    QueueUpdate,
    VisitorChange,
    VisitorSummary,
    VisitorUpdate,
)
from engine.routing_messages import (
    AgentsView,
    GetAgents,
    GetAtRest,
    GetQueue,
    GetVisitors,
    Tick,
    WorkspaceChanged,
)
from engine.routing_queue import BOT_ROLE, Queued, choose_agent, push_positions, queue_entries
from engine.triggers import matches
from engine.visitor import VisitorGone, VisitorSeen
from storage import CloseReason, Conversation, ConversationState

__all__ = [
    "ConversationChanged",
    "GetAgentMirror",
    "GetRoom",
    "RouterActor",
    "VisitorGone",
    "VisitorSeen",
]

AUTO_REASONS = frozenset({"least_busy", "sticky", "returning_visitor", "group_fallback"})
EXCLUDING_REASONS = frozenset({"no_response", "agent_offline", "transfer", "assignee_left"})


# Asks a router that has not loaded its workspace answers with ``storage_unavailable``.
LOADED_ASKS = (GetAgentMirror, GetQueue, GetRoom, GetAgents)
# Messages it handles all the same: the live visitor list is not read from storage.
UNLOADED_OK = (VisitorSeen, VisitorGone, GetVisitors, GetAtRest)

RouterMsg = (
    ConversationChanged
    | AgentPresence
    | GetAgentMirror
    | GetQueue
    | GetRoom
    | GetAgents
    | GetAtRest
    | VisitorSeen
    | VisitorGone
    | GetVisitors
    | Tick
    | WorkspaceChanged
)


class RouterActor(Actor[RouterMsg]):
    """Routing state of one workspace; rebuilt from storage and the hub on every start."""

    def __init__(self, ctx: EngineContext, workspace_id: str) -> None:
        self.ctx = ctx
        self.ws = workspace_id
        self.agents: dict[str, AgentState] = {}
        self.fallback: dict[str, str | None] = {}
        self.queue: list[Queued] = []  # sorted by queued_at
        self.by_id: dict[str, Queued] = {}
        self.offers: dict[str, tuple[str, float]] = {}  # conversation -> (agent, deadline)
        self.invites: dict[str, float] = {}  # proactive chat -> when its invitation expires
        self.trigger_fired: dict[tuple[str, str], float] = {}  # (visitor, trigger) -> when
        self.visitors: dict[str, VisitorSummary] = {}
        self.gone: dict[str, float] = {}  # visitor -> offline since
        self.settings: WorkspaceSettings | None = None
        self.avg_wait_s = ctx.config.avg_handle_time_s
        self.queue_dirty = False
        self.announced_available = False  # what connected visitors were last told
        self.loaded = False  # the workspace's settings, agents and open chats are read
        self.reload_due = False  # a reload on WorkspaceChanged failed: retried when due
        self.retry = Backoff(ctx.clock)

    # -- lifecycle

    async def on_start(self) -> None:
        await self._load()

    async def _load(self) -> None:
        """Read the workspace from storage and route what is queued; a storage failure leaves
        the router unloaded, to try again when ``retry`` is due."""
        try:
            await self._read_state()
        except PersistenceUnavailable as exc:
            self._unload(exc)
            return
        self.loaded = True
        self.retry.succeeded()
        self.ctx.router_load_failures.succeeded()
        self.announced_available = self._available()
        await self._dispatch()

    def _unload(self, exc: PersistenceUnavailable) -> None:
        """Forget everything storage gives back (a half-read start, a half-applied change);
        the live visitor list stays."""
        self.loaded = self.reload_due = False
        self.settings = None
        self.agents, self.fallback, self.trigger_fired = {}, {}, {}
        self.queue, self.by_id = [], {}
        self.offers, self.invites = {}, {}
        self.retry.failed()
        self.ctx.router_load_failures.failed(_cause(exc))

    async def _read_state(self) -> None:
        ctx, ws = self.ctx, self.ws
        storage = ctx.storage
        now = ctx.clock()
        await self._load_workspace()
        self.trigger_fired = await recent_firings(ctx, ws)  # cooldowns survive a restart
        for conv in await ctx.call(storage.list_open_conversations(ws)):
            if conv.state == ConversationState.QUEUED and conv.last_seq > 0:
                self._enqueue(conv, now).returning_to = await self._returning_to(conv)
            elif conv.state == ConversationState.ACTIVE and conv.assignee_id in self.agents:
                self.agents[conv.assignee_id].active.add(conv.id)
        agents = ctx.agents
        for agent in self.agents.values():
            if agents is not None and agents.is_active((ws, agent.agent_id)):
                # An agent actor runs (it may have outlived a crashed router): it reports its
                # status next; until then route nothing to that agent (they may be away).
                agent.reported = False
                self._sync_agent(agent, resync=True)

    async def _load_workspace(self) -> list[AgentState]:
        """(Re)load settings, enabled agents and groups; returns the agents no longer enabled.

        An agent already known keeps its live state and gets its new name, role, chat limit
        and groups; a new one starts with its connection state from the hub.
        """
        ctx, ws = self.ctx, self.ws
        settings = await ctx.workspace_settings(ws)
        records = [a for a in await ctx.call(ctx.storage.list_agents(ws)) if a.enabled]
        groups = await ctx.call(ctx.storage.list_groups(ws))
        # Nothing changes before every read has succeeded: a failed reload leaves it as it was.
        self.settings = settings
        now = ctx.clock()
        enabled = {a.id for a in records}
        removed = [a for agent_id, a in self.agents.items() if agent_id not in enabled]
        for gone in removed:
            del self.agents[gone.agent_id]
        for record in records:
            ctx.agent_names[(ws, record.id)] = record.display_name
            max_chats = record.max_chats  # exactly: 0 takes no chats
            agent = self.agents.get(record.id)
            if agent is None:
                self.agents[record.id] = AgentState(
                    agent_id=record.id,
                    display_name=record.display_name,
                    role=str(record.role),
                    max_chats=max_chats,
                    group_ids=tuple(record.group_ids),
                    chosen=default_status(str(record.role)),
                    connected=ctx.hub.agent_online(ws, record.id),
                    idle_since=now,
                )
                continue
            agent.display_name = record.display_name
            agent.role = str(record.role)
            agent.max_chats = max_chats
            agent.group_ids = tuple(record.group_ids)
        self.fallback = {g.id: g.fallback_group_id for g in groups}
        return removed

    async def _workspace_changed(self) -> None:
        mode = self.settings.routing_mode if self.settings is not None else None
        before = {a.agent_id: a.summary() for a in self.agents.values()}
        removed = await self._load_workspace()
        assert self.settings is not None
        for agent in removed:  # disabled or deleted: their chats go back to the queue
            agent.connected = False
            agent.disconnected_at = None
            self._status_changed(agent)
            for conversation_id in list(agent.active):
                await self._requeue(conversation_id, agent.agent_id, "agent_offline")
        for item in self.queue:
            if self.settings.routing_mode != mode:
                item.logged = False  # log the reason under the new mode
            if item.proposed_to is not None and item.proposed_to not in self.agents:
                item.proposed_to = None
        for agent in self.agents.values():
            if before.get(agent.agent_id) != agent.summary():
                self._status_changed(agent)
        await self._dispatch()

    def _available(self) -> bool:
        """Within the workspace's business hours, an agent is connected and accepting. Agents
        at their chat limit still count: the visitor's chat queues (with position and wait)
        rather than becoming an offline message. Published for page_view greetings too."""
        assert self.settings is not None
        open_now = self.settings.hours.open_for(None, time.time())
        available = open_now and any(a.online for a in self.agents.values())
        self.ctx.set_availability(self.ws, open_now=open_now, available=available)
        return available

    def _at_rest(self) -> bool:
        """No chat queued or offered, no invitation, no visitor in its leave grace, no agent
        connected or in a grace period: every timer of ``_tick`` is idle, and what is left
        (settings, agents, assignments of open chats) is what ``on_start`` reads back. Offline
        visitors still listed are not live (the caller checks nobody is connected). An
        agent's chosen status is the one thing not stored: a fresh router starts it at the
        role's default, as after a restart."""
        return not (
            self.queue
            or self.offers
            or self.invites
            or self.gone
            or any(
                a.connected or a.pending or a.disconnected_at is not None
                for a in self.agents.values()
            )
        )

    # -- the loop

    async def handle(self, msg: RouterMsg) -> None:
        if not self.loaded:
            if self.retry.due() or isinstance(msg, WorkspaceChanged):
                await self._load()
            if not self.loaded or isinstance(msg, WorkspaceChanged):  # the load read it
                self._while_unloaded(msg)
                if not isinstance(msg, UNLOADED_OK):
                    return
        try:
            await self._handle(msg)
        except PersistenceUnavailable as exc:
            if isinstance(msg, LOADED_ASKS):
                raise  # to the asker; nothing was changed
            self._unload(exc)  # the change may be half applied: read it all again
        finally:
            self._announce_availability()

    def _while_unloaded(self, msg: RouterMsg) -> None:
        """Storage did not answer the load (yet): asks that need it hear
        ``storage_unavailable``; a workspace change is answered (the load will read it); other
        tells are dropped (the load reads the chats, and has agent actors report again)."""
        if isinstance(msg, LOADED_ASKS):
            msg.reply.fail(PersistenceUnavailable(STORAGE_FAILED_MESSAGE))
        elif isinstance(msg, WorkspaceChanged):
            msg.reply.send(None)

    async def _reload(self) -> None:
        """``WorkspaceChanged``, or its retry: on a storage failure the loaded state stays as
        it was and the reload is due again after the backoff."""
        try:
            await self._workspace_changed()
        except PersistenceUnavailable as exc:
            self.reload_due = True
            self.retry.failed()
            self.ctx.router_load_failures.failed(_cause(exc))
            return
        if self.reload_due:
            self.reload_due = False
            self.retry.succeeded()
            self.ctx.router_load_failures.succeeded()

    async def _handle(self, msg: RouterMsg) -> None:
        if isinstance(msg, ConversationChanged):
            await self._changed(msg)
        elif isinstance(msg, AgentPresence):
            await self._presence(msg)
        elif isinstance(msg, GetAgentMirror):
            agent = await self._agent(msg.agent_id)
            msg.reply.send(
                None
                if agent is None
                else attrs.evolve(agent, active=set(agent.active), pending=set(agent.pending))
            )
        elif isinstance(msg, GetQueue):
            msg.reply.send(queue_entries(self.queue, self.ctx.visitor_names, self.ws))
        elif isinstance(msg, GetRoom):
            msg.reply.send(await self._room(msg))
        elif isinstance(msg, GetAgents):
            assert self.settings is not None
            msg.reply.send(
                AgentsView(
                    agents=tuple(a.summary() for a in self.agents.values()),
                    available=self._available(),
                    routing_mode=self.settings.routing_mode,
                )
            )
        elif isinstance(msg, VisitorSeen):
            self.visitors[msg.visitor.visitor_id] = msg.visitor
            self.gone.pop(msg.visitor.visitor_id, None)
            self._visitor_update(msg.change, msg.visitor)
        elif isinstance(msg, VisitorGone):
            if msg.visitor_id in self.visitors:
                self.gone[msg.visitor_id] = self.ctx.clock()
        elif isinstance(msg, GetVisitors):
            # Presence from the hub, now: a summary's flag is as old as its last change.
            hub = self.ctx.hub
            msg.reply.send(
                tuple(
                    v
                    if v.online == (on := hub.visitor_online(self.ws, v.visitor_id))
                    else attrs.evolve(v, online=on)
                    for v in self.visitors.values()
                )
            )
        elif isinstance(msg, GetAtRest):
            msg.reply.send(self._at_rest())
        elif isinstance(msg, Tick):
            if self.reload_due and self.retry.due():
                await self._reload()
            await self._tick()
        elif isinstance(msg, WorkspaceChanged):
            try:
                await self._reload()
            finally:
                msg.reply.send(None)

    async def _room(self, msg: GetRoom) -> str | None:
        cid = msg.conversation_id
        agent = await self._agent(msg.agent_id)
        if agent is not None and len((agent.active | agent.pending) - {cid}) >= agent.max_chats:
            return "agent"
        if msg.adds_active and not self._workspace_has_room(cid):
            return "workspace"
        return None

    def _workspace_has_room(self, but: str = "") -> bool:
        """Fewer than ``max_concurrent_chats`` chats active or offered (0: no cap)."""
        room = self._workspace_room(but)
        return room is None or room > 0

    def _workspace_room(self, but: str = "") -> int | None:
        """How many more chats may be active or offered (``max_concurrent_chats`` less those
        that are, ``but`` left out); None when there is no cap. O(chats): ``_dispatch``
        reads it once and counts its own offers down, not once per queued chat."""
        assert self.settings is not None
        cap = self.settings.max_concurrent_chats
        if cap <= 0:
            return None
        busy = {c for a in self.agents.values() for c in (*a.active, *a.pending)}
        busy.discard(but)
        return cap - len(busy)

    async def _presence(self, msg: AgentPresence) -> None:
        """The agent actor's word on the agent's status: mirror it; offline (no socket and
        the grace period over) queues the agent's chats again."""
        agent = await self._agent(msg.agent_id)
        if agent is None:
            return
        now = self.ctx.clock()
        before = agent.summary()
        agent.reported = True
        agent.chosen = msg.chosen
        agent.connected = msg.connected
        if msg.reconnecting:
            if agent.disconnected_at is None:
                agent.disconnected_at = now
        else:
            agent.disconnected_at = None
        if msg.chosen == AgentStatus.ACCEPTING:
            agent.idle_since = min(agent.idle_since, now)
        if not msg.connected and not msg.reconnecting:
            for conversation_id in list(agent.active):
                await self._requeue(conversation_id, agent.agent_id, "agent_offline")
        if agent.summary() != before:
            self._status_changed(agent)
        await self._dispatch()

    # -- conversation changes

    async def _changed(self, msg: ConversationChanged) -> None:
        conv = msg.conversation
        now = self.ctx.clock()
        hub = self.ctx.hub
        for agent_id in msg.stale:
            if agent_id in self.agents:
                self.agents[agent_id].pending.discard(conv.id)
            item = self.by_id.get(conv.id)
            if item is not None and item.proposed_to == agent_id:
                item.proposed_to = None
        for agent_id in msg.responded:
            offer = self.offers.get(conv.id)
            if offer is not None and offer[0] == agent_id:
                del self.offers[conv.id]
        for agent in self.agents.values():
            if conv.state != ConversationState.QUEUED or agent.agent_id == conv.assignee_id:
                agent.pending.discard(conv.id)
            keep = conv.state == ConversationState.ACTIVE and agent.agent_id == conv.assignee_id
            if not keep and conv.id in agent.active:
                agent.active.discard(conv.id)
                agent.idle_since = now
        if conv.state == ConversationState.ACTIVE and conv.assignee_id is not None:
            assignee = await self._agent(conv.assignee_id)
            if assignee is not None:
                assignee.active.add(conv.id)
        queue_changed = False
        if conv.state == ConversationState.QUEUED:
            item = self.by_id.get(conv.id)
            if item is None:
                item = self._enqueue(conv, now)
                item.preview = msg.first_message
                item.returning_to = await self._returning_to(conv)
                queue_changed = True
            else:
                item.group_id = conv.group_id
                item.previous_assignee_id = conv.previous_assignee_id
            for agent_id, reason in msg.unassigned:
                if reason in EXCLUDING_REASONS:
                    item.excluded.add(agent_id)
        elif conv.id in self.by_id:
            item = self.by_id.pop(conv.id)
            self.queue.remove(item)
            queue_changed = True
            if conv.state == ConversationState.ACTIVE:
                waited = max(0.0, now - item.queued_at)
                self.avg_wait_s = 0.8 * self.avg_wait_s + 0.2 * waited
        if conv.state != ConversationState.ACTIVE:
            self.offers.pop(conv.id, None)
            self.invites.pop(conv.id, None)
        assert self.settings is not None
        timeout = self.settings.agent_response_timeout_s
        expire_s = self.settings.invitation_expires_after_s
        for agent_id, reason in msg.assigned:
            if reason == "proactive" and expire_s > 0:
                self.invites[conv.id] = now + expire_s
            if reason in AUTO_REASONS and conv.assignee_id == agent_id:
                self.offers[conv.id] = (agent_id, now + timeout)
            if conv.state == ConversationState.ACTIVE and agent_id in conv.participant_ids:
                hub.deliver_all(
                    hub.agent_connections(self.ws, agent_id),
                    ChatAssigned(
                        conversation=msg.summary,
                        reason=reason,
                        respond_within_s=timeout if reason in AUTO_REASONS else None,
                    ),
                )
        for agent_id, reason in msg.unassigned:
            if agent_id not in conv.participant_ids:
                hub.deliver_all(
                    hub.agent_connections(self.ws, agent_id),
                    ChatUnassigned(conversation_id=conv.id, reason=reason),
                )
        for agent_id in {a for a, _ in msg.assigned} | {a for a, _ in msg.unassigned}:
            if agent_id in self.agents:
                self._status_changed(self.agents[agent_id])
        await self._dispatch(queue_changed=queue_changed)

    async def _returning_to(self, conv: Conversation) -> str | None:
        """The human agent of the visitor's last earlier chat, for a new chat of a returning
        visitor when the workspace prefers it (``sticky_new_chats``); one storage read."""
        assert self.settings is not None
        if not self.settings.sticky_new_chats or conv.previous_assignee_id is not None:
            return None
        try:
            earlier: list[Conversation] = await self.ctx.call(
                self.ctx.storage.list_visitor_conversations(self.ws, conv.visitor_id)
            )
        except PersistenceUnavailable:
            return None  # a preference, not a rule: the chat is routed without it
        for other in earlier:  # newest first
            agent_id = other.assignee_id or other.previous_assignee_id
            if other.id == conv.id or agent_id is None:
                continue
            agent = self.agents.get(agent_id)
            if agent is not None and agent.role != BOT_ROLE:
                return agent_id
        return None

    def _enqueue(self, conv: Conversation, now: float) -> Queued:
        item = Queued(
            conversation_id=conv.id,
            visitor_id=conv.visitor_id,
            group_id=conv.group_id,
            queued_at=now,
            previous_assignee_id=conv.previous_assignee_id,
        )
        keys = [q.sort_key() for q in self.queue]
        self.queue.insert(bisect.bisect(keys, item.sort_key()), item)
        self.by_id[conv.id] = item
        return item

    # -- deciding

    async def _dispatch(self, *, queue_changed: bool = False) -> None:
        assert self.settings is not None
        free = any(
            a.connected and a.chosen == AgentStatus.ACCEPTING and a.load < a.max_chats
            for a in self.agents.values()
        )
        if self.settings.routing_mode == "auto" and free:
            wall = time.time()
            room = self._workspace_room()
            for item in list(self.queue):
                if item.proposed_to is not None:
                    continue
                if not self.settings.hours.open_for(item.group_id, wall):
                    if not item.logged:  # waits for the opening (checked every tick)
                        item.logged = True
                        self._log(item.conversation_id, None, "outside_hours", {})
                    continue
                if room is not None and room <= 0:
                    if not item.logged:
                        item.logged = True
                        self._log(item.conversation_id, None, "workspace_at_capacity", {})
                    continue
                agent, reason, details = choose_agent(
                    item,
                    self.agents,
                    self.fallback,
                    sticky_agent=self.settings.sticky_agent,
                    sticky_new_chats=self.settings.sticky_new_chats,
                )
                if agent is None:
                    if not item.logged:
                        item.logged = True
                        self._log(item.conversation_id, None, "no_agent_available", {})
                    continue
                if await self._propose(item, agent, reason, details):
                    queue_changed = True
                if room is not None and item.proposed_to is not None:
                    room -= 1  # offered now: it counts against the cap
        else:
            for item in self.queue:
                if not item.logged:
                    item.logged = True
                    reason = "manual_mode" if self.settings.routing_mode == "manual" else ""
                    self._log(item.conversation_id, None, reason or "no_agent_available", {})
        # Positions and the queue list are pushed coalesced, once per tick: a moving queue
        # of Q chats would otherwise cost O(Q) pushes per assignment. A new chat learns its
        # position at once.
        if queue_changed:
            self.queue_dirty = True
        for item in self.queue:
            if item.position_sent == 0:
                self.queue_dirty = True
                break

    async def _propose(
        self, item: Queued, agent: AgentState, reason: str, details: dict[str, Any]
    ) -> bool:
        assert self.ctx.conversations is not None
        ref = await self.ctx.conversations.get((self.ws, item.conversation_id))
        try:
            ref.tell_nowait(RouterAssign(agent_id=agent.agent_id, reason=reason, details=details))
        except trio.WouldBlock:
            return False  # retried on the next tick
        item.proposed_to = agent.agent_id
        agent.pending.add(item.conversation_id)
        agent.idle_since = self.ctx.clock()
        return False

    def _log(
        self, conversation_id: str, agent_id: str | None, reason: str, details: dict[str, Any]
    ) -> None:
        self.ctx.decisions.record(
            self.ws,
            conversation_id=conversation_id,
            agent_id=agent_id,
            reason=reason,
            details=details,
        )

    # -- time

    async def _tick(self) -> None:
        ctx = self.ctx
        now = ctx.clock()
        for conversation_id, (agent_id, deadline) in list(self.offers.items()):
            if now >= deadline:
                del self.offers[conversation_id]
                await self._requeue(conversation_id, agent_id, "no_response")
        for conversation_id, expires in list(self.invites.items()):
            if now >= expires:
                assert ctx.conversations is not None
                ref = await ctx.conversations.get((self.ws, conversation_id))
                with contextlib.suppress(trio.WouldBlock):  # else retried on the next tick
                    ref.tell_nowait(RouterExpireInvitation())
                    del self.invites[conversation_id]
        for visitor_id, since in list(self.gone.items()):
            if now - since >= ctx.config.visitor_leave_grace_s:
                del self.gone[visitor_id]
                if not ctx.hub.visitor_online(self.ws, visitor_id):
                    summary = self.visitors.pop(visitor_id, None)
                    if summary is not None:
                        left = attrs.evolve(summary, online=False)
                        self._visitor_update(VisitorChange.LEFT, left)
        assert self.settings is not None
        abandon_s = self.settings.abandon_queued_after_s
        if abandon_s > 0:
            for item in list(self.queue):
                if not item.abandoning and now - item.queued_at >= abandon_s:
                    assert ctx.conversations is not None
                    ref = await ctx.conversations.get((self.ws, item.conversation_id))
                    with contextlib.suppress(trio.WouldBlock):  # else retried on the next tick
                        ref.tell_nowait(RouterClose(reason=CloseReason.MISSED))
                        item.abandoning = True
                        self._log(
                            item.conversation_id, None, "abandoned", {"queued_for_s": abandon_s}
                        )
        await self._fire_triggers(now)
        if self.queue_dirty:
            self.queue_dirty = False
            push_positions(self.ctx.hub, self.ws, self.queue, self.avg_wait_s)
            entries = queue_entries(self.queue, self.ctx.visitor_names, self.ws)
            self.ctx.hub.broadcast_agents(self.ws, QueueUpdate(entries=entries))
        for item in self.queue:  # proposals lost to a crash or a full mailbox
            if item.proposed_to is not None and item.proposed_to not in self.agents:
                item.proposed_to = None
        await self._dispatch()

    async def _fire_triggers(self, now: float) -> None:
        """Fire the workspace's triggers for queued chats (once per chat; per visitor at most
        once per trigger's ``cooldown_s``); a full mailbox retries on the next tick."""
        assert self.settings is not None and self.ctx.conversations is not None
        triggers = self.settings.triggers
        if not triggers:
            return
        for item in list(self.queue):
            if item.abandoning:
                continue
            visitor = self.visitors.get(item.visitor_id)
            for trigger in triggers:
                key = (item.visitor_id, trigger.id)
                last = self.trigger_fired.get(key)
                if (
                    trigger.id in item.fired
                    or (last is not None and now - last < trigger.cooldown_s)
                    or not matches(trigger, visitor, item.group_id, now - item.queued_at)
                ):
                    continue
                ref = await self.ctx.conversations.get((self.ws, item.conversation_id))
                try:
                    ref.tell_nowait(
                        RouterTrigger(
                            trigger_id=trigger.id,
                            name=trigger.name,
                            action=trigger.action,
                            text=trigger.text,
                            tag=trigger.tag,
                            to_group_id=trigger.to_group_id,
                        )
                    )
                except trio.WouldBlock:
                    return
                item.fired.add(trigger.id)
                self.trigger_fired[key] = now
                await record_firing(self.ctx, self.ws, item.visitor_id, trigger.id)
        if len(self.trigger_fired) > 10_000:  # forget firings older than any cooldown
            horizon = max(t.cooldown_s for t in triggers)
            self.trigger_fired = {
                k: at for k, at in self.trigger_fired.items() if now - at < horizon
            }

    async def _requeue(self, conversation_id: str, agent_id: str, reason: str) -> None:
        assert self.ctx.conversations is not None
        self._log(conversation_id, None, reason, {"from_agent_id": agent_id})
        ref = await self.ctx.conversations.get((self.ws, conversation_id))
        try:
            ref.tell_nowait(RouterRequeue(agent_id=agent_id, reason=reason))
        except trio.WouldBlock:
            self.offers[conversation_id] = (agent_id, self.ctx.clock())  # retry next tick

    # -- pushes

    def position(self, conversation_id: str) -> tuple[int, float] | None:
        item = self.by_id.get(conversation_id)
        if item is None:
            return None
        pos = self.queue.index(item) + 1
        return pos, round(pos * self.avg_wait_s, 1)

    def _announce_availability(self) -> None:
        """Push ``availability`` to every connected visitor when ``_available()`` flipped (an
        agent connected, disconnected, changed status or was disabled), so an open widget
        switches between the composer and the offline form without reconnecting."""
        if not self.loaded:
            return  # availability stays as last published until the router has loaded
        available = self._available()
        if available != self.announced_available:
            self.announced_available = available
            self.ctx.hub.broadcast_visitors(self.ws, Availability(agents_available=available))

    def _status_changed(self, agent: AgentState) -> None:
        self.ctx.hub.broadcast_agents(self.ws, AgentStatusPush(agent=agent.summary()))
        self._sync_agent(agent)

    def _sync_agent(self, agent: AgentState, *, resync: bool = False) -> None:
        """Tell the agent's actor (if it runs) its chats and capacity; never waits (a full
        mailbox: the next change tells it again)."""
        agents = self.ctx.agents
        key = (self.ws, agent.agent_id)
        if agents is None or not agents.is_active(key):
            return
        with contextlib.suppress(trio.WouldBlock, ShuttingDown, ActorStopped):
            agents.get_nowait(key).tell_nowait(
                AgentChats(
                    active=tuple(sorted(agent.active)), max_chats=agent.max_chats, resync=resync
                )
            )

    def _visitor_update(self, change: VisitorChange, visitor: VisitorSummary) -> None:
        hub = self.ctx.hub
        push = VisitorUpdate(change=change, visitor=visitor)
        for conn in list(hub.workspace_agent_connections(self.ws)):
            if conn.visitor_list:
                hub.deliver(conn, push)

    async def _agent(self, agent_id: str) -> AgentState | None:
        agent = self.agents.get(agent_id)
        if agent is None:
            record = await self.ctx.call(self.ctx.storage.get_agent(self.ws, agent_id))
            if record is None or not record.enabled:
                return None
            agent = self.agents[agent_id] = AgentState(
                agent_id=record.id,
                display_name=record.display_name,
                role=str(record.role),
                max_chats=record.max_chats,
                group_ids=tuple(record.group_ids),
                chosen=default_status(str(record.role)),
                connected=self.ctx.hub.agent_online(self.ws, agent_id),
                idle_since=self.ctx.clock(),
            )
        return agent


def _cause(exc: PersistenceUnavailable) -> BaseException:
    """The storage's own error, for the log (the client's sentence names no detail)."""
    return exc.__cause__ or exc
