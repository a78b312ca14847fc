"""The conversation actor: one per conversation, the only writer of its events.

A virtual actor (registry key ``(workspace_id, conversation_id)``): spawned on the first
message, passivated when idle, rebuilt from storage in ``on_start`` (the row and the recent
events), so a crash or passivation loses nothing durable and the next seq follows the last one.

The actor is a thin shell around the pure rules (``engine.conversation_rules``, over the state
and transition table of ``engine.conversation_state``): take a batch of queued commands,
``decide`` each in order against the tentative state, append every decided event with ONE
``storage.append_many`` (one commit assigns the gapless seqs), acknowledge only after it
returns, then fan out (``engine.conversation_views`` and ``Hub.deliver``, never blocking). A
failed commit acknowledges nothing: every ask of the batch gets ``storage_unavailable`` and the
state is rolled back; retries are idempotent by ``client_msg_id``. When storage refuses the data
of one command, each command of the batch is decided again and committed alone, so only the
refused one fails.

Routing (who gets the chat) is decided by the workspace router; this actor applies its
proposals if they still hold, which is what makes "two agents accept at once: one wins" true:
assignments are serialized here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from engine.actor import Actor, Reply
from engine.context import EngineContext
from engine.conversation_rules import (
    ACK,
    AUTO_REASONS,
    Decision,
    Facts,
    MissingFact,
    RouterAssign,
    RouterClose,
    RouterExpireInvitation,
    RouterRequeue,
    RouterTrigger,
    decide,
    may_see,
    settle_waiting,
)
from engine.conversation_state import ChatState, evolved
from engine.conversation_views import author_name, replay, summarize, typing, view, viewing
from engine.errors import (
    DomainError,
    Forbidden,
    InvalidMessage,
    NotFound,
    Overloaded,
    PersistenceRefused,
    PersistenceUnavailable,
)
from engine.messages import (
    ConversationResult,
    ConversationSummary,
    ConversationUpdate,
    EventPush,
    MessageAck,
    SetTyping,
)
from engine.principals import AgentPrincipal, Connection, Principal, VisitorPrincipal
from engine.visibility import for_visitor_push
from engine.visitor import ConversationStateChanged, OpenConversation
from storage import (
    AppendResult,
    AuthorType,
    CloseReason,
    Conversation,
    ConversationState,
    Event,
    EventKind,
)

__all__ = [
    "Apply",
    "ConversationActor",
    "Crash",
    "RouterAssign",
    "RouterClose",
    "RouterExpireInvitation",
    "RouterRequeue",
    "RouterTrigger",
    "Signal",
    "Snapshot",
    "Subscribe",
    "summarize",
    "view",
]


# ---------------------------------------------------------------- messages to the actor


@attrs.frozen(kw_only=True, eq=False)
class GetRoom:
    """From a conversation deciding a pick or transfer: is there room for one more chat?

    Answered ``None`` (room), ``"agent"`` (the agent has ``max_chats``) or ``"workspace"``
    (``adds_active`` and the workspace has ``max_concurrent_chats`` active or offered chats).
    The asking chat itself is not counted.
    """

    agent_id: str
    conversation_id: str
    adds_active: bool
    reply: Reply[str | None]


@attrs.frozen(kw_only=True, eq=False)
class ConversationChanged:
    conversation: Conversation
    ref: Any
    summary: ConversationSummary
    assigned: list[tuple[str, str]]
    unassigned: list[tuple[str, str]]
    responded: list[str]
    stale: list[str]
    first_message: str | None


@attrs.frozen(kw_only=True, eq=False)
class Apply:
    """A client command for this conversation, from the facade (an ask)."""

    principal: Principal
    command: Any
    reply: Reply[Any]
    sent_at_s: float = 0.0


@attrs.frozen(kw_only=True, eq=False)
class Subscribe:
    """Replay events after ``after_seq`` to ``conn`` (``None``: none), then deliver live ones;
    ``watch`` adds ``conn`` to the watchers (agents opening the chat)."""

    conn: Connection
    after_seq: int | None
    watch: bool
    reply: Reply[ConversationSummary]


@attrs.frozen(kw_only=True, eq=False)
class Signal:
    """An ephemeral typing signal (a tell: no seq, nothing stored)."""

    principal: Principal
    command: SetTyping


@attrs.frozen(kw_only=True, eq=False)
class Snapshot:
    reply: Reply[ConversationSummary]


@attrs.frozen(kw_only=True, eq=False)
class Crash:
    """Test hook: make this actor crash (supervision tests)."""


# What the rules decide: a client command, or one of the router's proposals.
Proposal = (
    Apply | RouterAssign | RouterRequeue | RouterClose | RouterExpireInvitation | RouterTrigger
)

ConversationMsg = (
    Apply
    | Subscribe
    | Signal
    | Snapshot
    | RouterAssign
    | RouterRequeue
    | RouterClose
    | RouterExpireInvitation
    | RouterTrigger
    | Crash
)

# A fact lookup per command at most (an agent, a group or the visitor's open chat); more means
# the rules keep asking for what they were given, a bug that must not loop.
_MAX_LOOKUPS = 4


class ConversationActor(Actor[ConversationMsg]):
    """Owns one conversation: decides, persists, sequences and fans out its events."""

    __slots__ = (
        "conv",
        "ctx",
        "key",
        "last_message",
        "recent",
        "waiting_for",
    )

    def __init__(self, ctx: EngineContext, key: tuple[str, str]) -> None:
        self.ctx = ctx
        self.key = key
        self.conv: Conversation | None = None
        self.recent: deque[Event] = deque(maxlen=ctx.config.recent_events)
        self.last_message: Event | None = None
        self.waiting_for: str | None = None  # auto-assigned agent who has not answered yet

    # -- lifecycle

    async def on_start(self) -> None:
        workspace_id, conversation_id = self.key
        ctx = self.ctx
        # The row read by the request that activated this chat, if it was (one read, not two).
        seed = ctx.conversations.take_seed(self.key) if ctx.conversations is not None else None
        if isinstance(seed, Conversation):
            conv: Conversation | None = seed
        else:
            conv = await ctx.call(ctx.storage.get_conversation(workspace_id, conversation_id))
        self.conv = conv
        if conv is None or conv.last_seq == 0:
            return
        events: list[Event] = await ctx.call(
            ctx.storage.history(
                workspace_id,
                conversation_id,
                before_seq=conv.last_seq + 1,
                limit=ctx.config.recent_events,
            )
        )
        self.recent.extend(events)
        for event in reversed(events):
            if event.kind == EventKind.MESSAGE:
                self.last_message = event
                break
        last_assignment = next((e for e in reversed(events) if e.kind == EventKind.ASSIGNED), None)
        if (
            last_assignment is not None
            and conv.state == ConversationState.ACTIVE
            and last_assignment.data.get("reason") in AUTO_REASONS
            and not any(
                e.kind == EventKind.MESSAGE
                and e.author_id == conv.assignee_id
                and e.seq > last_assignment.seq
                for e in events
            )
        ):
            self.waiting_for = conv.assignee_id

    # -- the loop: take a batch, decide, commit, apply, fan out

    async def handle_batch(self, msgs: Sequence[ConversationMsg]) -> None:
        pending: list[Proposal] = []
        for msg in msgs:
            if isinstance(
                msg,
                Apply
                | RouterAssign
                | RouterRequeue
                | RouterClose
                | RouterExpireInvitation
                | RouterTrigger,
            ):
                pending.append(msg)
                continue
            if pending:  # keep order: commit what came before this message first
                await self._commit(pending)
                pending = []
            await self._handle_other(msg)
        if pending:
            await self._commit(pending)

    async def _handle_other(self, msg: ConversationMsg) -> None:
        if isinstance(msg, Crash):
            raise RuntimeError(f"conversation {self.key[1]} crashed on request")
        conv = self.conv
        ctx = self.ctx
        if isinstance(msg, Subscribe):
            if conv is None or not may_see(msg.conn.principal, conv):
                msg.reply.fail(NotFound("conversation not found"))
                return
            try:
                await replay(ctx, conv, self.recent, msg.conn, msg.after_seq)
            finally:
                msg.conn.resuming.discard(conv.id)
            if msg.watch:
                ctx.hub.watch(msg.conn, conv.id)
                viewing(ctx, conv, msg.conn, True)
            msg.reply.send(await self._summary())
        elif isinstance(msg, Snapshot):
            if conv is None:
                msg.reply.fail(NotFound("conversation not found"))
            else:
                msg.reply.send(await self._summary())
        elif isinstance(msg, Signal) and conv is not None and may_see(msg.principal, conv):
            await typing(ctx, conv, msg.principal, msg.command)

    async def _commit(self, batch: list[Proposal]) -> None:
        ctx = self.ctx
        before = self.conv
        if before is None:
            for msg in batch:
                _fail(msg, NotFound("conversation not found"))
            return
        now = _wall(ctx)
        facts = Facts(ctx.agent_names)
        if ctx.visitors is None:  # no visitor actors: no other open chat to ask about
            facts.open_chat = None
        state = ChatState(before, self.waiting_for)
        accepted: list[tuple[Proposal, Decision]] = []
        for msg in batch:
            if isinstance(msg, Apply):
                principal, command = msg.principal, msg.command
            else:
                principal, command = None, msg
            try:
                try:  # the message path decides without an await
                    decision = decide(state, command, principal=principal, facts=facts, now=now)
                except MissingFact as need:
                    decision = await self._decide_after_lookups(
                        state, command, principal, facts, now, need
                    )
            except DomainError as exc:
                _fail(msg, exc)
                continue
            if decision.conv is not state.conv:
                state = ChatState(decision.conv, self.waiting_for)
            if decision.events:
                accepted.append((msg, decision))
            else:
                self._answer(msg, decision, [], state.conv)
        if not accepted:
            self.conv = state.conv
            return
        requests = [r for _, d in accepted for r in d.events]
        if ctx.fence is not None:  # cluster: commit only while this node owns the workspace
            fence = ctx.fence(before.workspace_id)
            requests = [attrs.evolve(r, fence=fence) for r in requests]
        try:
            results: list[AppendResult] = await ctx.call(ctx.storage.append_many(requests))
        except PersistenceRefused as exc:
            self.conv = before
            if len(accepted) == 1:
                _fail(accepted[0][0], exc)
                return
            # One command's data was refused (not an outage): the others must not fail with it.
            # Each is decided again and committed alone, in order; only the refused one fails.
            for msg, _ in accepted:
                await self._commit([msg])
            return
        except PersistenceUnavailable as exc:
            self.conv = before
            for msg, _ in accepted:
                _fail(msg, exc)
            return
        ctx.metrics.commit_batch_size.observe(len(requests))
        fresh: list[Event] = []
        duplicate_with_patch = False
        for req, res in zip(requests, results, strict=True):
            if not res.duplicate:
                fresh.append(res.event)
            elif req.patch is not None:
                duplicate_with_patch = True
        if fresh:
            # One commit numbers this chat's events in request order: the last is the highest.
            last_seq = max(fresh[-1].seq, before.last_seq)
            self.conv = evolved(state.conv, last_seq=last_seq, last_activity_at=now)
        else:
            self.conv = state.conv
        if duplicate_with_patch:  # a retried command: storage kept the original effect
            reloaded = await ctx.call(ctx.storage.get_conversation(*self.key))
            if reloaded is not None:
                self.conv = reloaded
        self.recent.extend(fresh)
        for event in fresh:
            if event.kind == EventKind.MESSAGE:
                self.last_message = event
        offset = 0
        answered_at = ctx.clock()
        latency = ctx.metrics.routing_latency
        for msg, decision in accepted:
            count = len(decision.events)
            self._answer(msg, decision, results[offset : offset + count], self.conv)
            offset += count
            if isinstance(msg, Apply) and msg.sent_at_s:
                latency.observe(max(0.0, answered_at - msg.sent_at_s))
        await self._after_commit(before, accepted, fresh)

    async def _decide_after_lookups(
        self,
        state: ChatState,
        command: Any,
        principal: Principal | None,
        facts: Facts,
        now: float,
        need: MissingFact,
    ) -> Decision:
        """Look up what the rules asked for, then decide again (off the message path)."""
        for _ in range(_MAX_LOOKUPS):
            await self._look_up(state.conv, principal, facts, need)
            try:
                return decide(state, command, principal=principal, facts=facts, now=now)
            except MissingFact as again:
                need = again
        raise RuntimeError(f"the rules keep asking for {need.what} {need.key!r}")

    async def _look_up(
        self, conv: Conversation, principal: Principal | None, facts: Facts, need: MissingFact
    ) -> None:
        ctx = self.ctx
        ws = conv.workspace_id
        if need.what == "attachments":
            assert principal is not None, "only a client's message carries attachments"
            facts.files[need.key] = await self._bind_files(conv, principal, need.key)
        elif need.what == "agent":
            facts.agents[need.key] = await ctx.agent_name(ws, need.key)
        elif need.what == "group":
            group = await ctx.call(ctx.storage.get_group(ws, need.key))
            facts.groups[need.key] = None if group is None else group.name
        elif need.what == "visitor_wrote":
            facts.visitor_wrote = await self._visitor_wrote(conv)
        elif need.what == "room":
            # The router never waits on a conversation, so asking it cannot deadlock.
            agent_id, adds_active = need.key
            try:
                with trio.fail_after(ctx.config.ask_timeout_s):
                    router = await _router(ctx, ws)
                    facts.rooms[need.key] = await router.ask(
                        lambda r: GetRoom(
                            agent_id=agent_id,
                            conversation_id=conv.id,
                            adds_active=adds_active,
                            reply=r,
                        )
                    )
            except trio.TooSlowError as exc:
                raise Overloaded("the engine did not answer in time") from exc
        else:
            facts.open_chat = await self._visitor_open_chat(conv)

    async def _bind_files(
        self, conv: Conversation, who: Principal, ids: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Attach the sender's uploads to this chat; the message carries their metadata.

        Only the sender's own uploads, for this chat's visitor and not yet in another chat,
        are taken; any other id (a stranger's, another workspace's, made up) is refused as a
        whole with ``invalid_field`` on ``attachments``, naming nothing about the others.
        """
        if isinstance(who, AgentPrincipal):
            if not (who.agent_id in conv.participant_ids or who.is_supervisor):
                raise Forbidden("you are not in this chat")
            uploader_type, uploader_id = AuthorType.AGENT, who.agent_id
        else:
            assert isinstance(who, VisitorPrincipal)
            uploader_type, uploader_id = AuthorType.VISITOR, who.visitor_id
        bound = await self.ctx.call(
            self.ctx.storage.bind_attachments(
                conv.workspace_id,
                ids,
                conversation_id=conv.id,
                visitor_id=conv.visitor_id,
                uploader_type=uploader_type,
                uploader_id=uploader_id,
            )
        )
        if len(bound) != len(set(ids)):
            raise InvalidMessage(
                "attachments: unknown file id (upload it first, as the sender)",
                code="invalid_field",
                field="attachments",
            )
        return [
            {"id": a.id, "name": a.name, "type": a.content_type, "size": a.size} for a in bound
        ]

    async def _visitor_wrote(self, conv: Conversation) -> bool:
        """Whether the visitor has written in the chat (its first events: an invitation that
        expires is a short chat)."""
        ctx = self.ctx
        events = await ctx.call(
            ctx.storage.history(conv.workspace_id, conv.id, after_seq=0, limit=200)
        )
        return any(
            e.kind == EventKind.MESSAGE and e.author_type == AuthorType.VISITOR for e in events
        )

    async def _visitor_open_chat(self, conv: Conversation) -> str | None:
        """The visitor's open chat, asked of the visitor actor when a visitor's message would
        reopen a closed chat (one open chat per visitor); the visitor actor never asks a
        conversation, so this cannot deadlock."""
        visitors = self.ctx.visitors
        if visitors is None or conv.close_reason == CloseReason.OFFLINE:
            return None
        try:
            with trio.fail_after(self.ctx.config.ask_timeout_s):
                visitor = await visitors.get((conv.workspace_id, conv.visitor_id))
                open_id: str | None = await visitor.ask(
                    lambda r: OpenConversation(create=False, reply=r)
                )
        except trio.TooSlowError as exc:
            raise Overloaded("the engine did not answer in time") from exc
        return open_id

    def _answer(
        self,
        msg: Proposal,
        decision: Decision,
        results: Sequence[AppendResult],
        conv: Conversation,
    ) -> None:
        if not isinstance(msg, Apply):
            return
        if decision.reply == ACK:
            # The message event is the last of the decision (a reopen status may come first).
            res = results[-1]
            msg.reply.send(
                MessageAck(
                    conversation_id=conv.id,
                    seq=res.event.seq,
                    created_at=res.event.created_at,
                    duplicate=res.duplicate,
                )
            )
            return
        ctx = self.ctx
        summary = summarize(
            conv,
            visitor_name=ctx.visitor_names.get((conv.workspace_id, conv.visitor_id)),
            assignee_name=ctx.agent_names.get((conv.workspace_id, conv.assignee_id or "")),
            last_message=self.last_message,
        )
        msg.reply.send(
            ConversationResult(conversation=summary, seq=results[-1].event.seq if results else None)
        )

    # -- after the commit: fan-out, router, routing log

    async def _after_commit(
        self, before: Conversation, items: list[tuple[Proposal, Decision]], fresh: list[Event]
    ) -> None:
        ctx = self.ctx
        conv = self.conv
        assert conv is not None
        hub = ctx.hub
        ws = conv.workspace_id
        agent_ids: Sequence[str] = conv.participant_ids
        if before.participant_ids != agent_ids:
            agent_ids = list({*before.participant_ids, *agent_ids})
        agent_conns: dict[str, Connection] = {}
        for agent_id in agent_ids:
            for c in hub.agent_connections(ws, agent_id):
                agent_conns[c.id] = c
        for c in hub.watchers(conv.id):
            if isinstance(c.principal, AgentPrincipal):
                agent_conns[c.id] = c
        # Delivering may drop a slow connection from the hub's sets: iterate over copies.
        agents = list(agent_conns.values())
        visitors = list(hub.visitor_connections(ws, conv.visitor_id))
        for event in fresh:
            push = EventPush(event=view(event, await author_name(ctx, event)))
            for c in agents:
                if conv.id not in c.resuming:
                    hub.deliver(c, push)
            if not visitors:
                continue
            # The one visibility check of this event, for all the visitor's tabs.
            seen = for_visitor_push(push)
            if seen is not None:
                for c in visitors:
                    if conv.id not in c.resuming:
                        hub.deliver_visible(c, seen)
        changed = (
            (before.last_seq == 0 and bool(fresh))  # a new chat: the router queues it
            or before.state != conv.state
            or before.assignee_id != conv.assignee_id
            or before.participant_ids != conv.participant_ids
            or before.group_id != conv.group_id
        )
        summary = None
        if fresh:
            summary = await self._summary()
            update = ConversationUpdate(conversation=summary)
            if changed:  # supervisors follow every chat's state; agents only their own
                for c in list(hub.workspace_agent_connections(ws)):
                    if c.id not in agent_conns and getattr(c.principal, "is_supervisor", False):
                        agent_conns[c.id] = c
            for c in list(agent_conns.values()):
                hub.deliver(c, update)
        decisions = [d for _, d in items]
        self.waiting_for = settle_waiting(self.waiting_for, decisions)
        if not (changed or any(d.responded or d.kind == "stale" for d in decisions)):
            return
        router = await _router(ctx, ws)
        ref = await _self_ref(ctx, self.key)
        for msg, d in items:
            if d.assigned is not None and d.kind not in ("invited",):
                self._record(d.assigned, d.kind, msg)
        await router.tell(
            ConversationChanged(
                conversation=conv,
                ref=ref,
                summary=summary or await self._summary(),
                assigned=[(d.assigned, d.kind) for d in decisions if d.assigned is not None],
                unassigned=[(d.unassigned, d.kind) for d in decisions if d.unassigned is not None],
                responded=[d.responded for d in decisions if d.responded is not None],
                stale=[
                    msg.agent_id
                    for msg, d in items
                    if d.kind == "stale" and isinstance(msg, RouterAssign)
                ],
                first_message=next((e.body for e in fresh if e.kind == EventKind.MESSAGE), None),
            )
        )
        if before.state != conv.state and ctx.visitors is not None:
            visitor = await ctx.visitors.get((ws, conv.visitor_id))
            await visitor.tell(ConversationStateChanged(conversation_id=conv.id, state=conv.state))

    def _record(self, agent_id: str, reason: str, msg: Proposal) -> None:
        conv = self.conv
        assert conv is not None
        details: dict[str, Any] = {}
        if isinstance(msg, RouterAssign):
            details = dict(msg.details)
        elif isinstance(msg, Apply):
            details = {"by": getattr(msg.principal, "agent_id", None)}
        # Stored in batches by the DecisionLog: the assignment's fan-out does not wait for it.
        self.ctx.decisions.record(
            conv.workspace_id,
            conversation_id=conv.id,
            agent_id=agent_id,
            reason=reason,
            details=details,
        )

    async def _summary(self) -> ConversationSummary:
        conv = self.conv
        assert conv is not None
        ws = conv.workspace_id
        assignee_name = (
            await self.ctx.agent_name(ws, conv.assignee_id) if conv.assignee_id else None
        )
        return summarize(
            conv,
            visitor_name=self.ctx.visitor_names.get((ws, conv.visitor_id)),
            assignee_name=assignee_name,
            last_message=self.last_message,
        )


# ---------------------------------------------------------------- helpers


def _fail(msg: Proposal, exc: DomainError) -> None:
    if isinstance(msg, Apply):
        msg.reply.fail(exc)


def _wall(ctx: EngineContext) -> float:
    return time.time()


async def _router(ctx: EngineContext, workspace_id: str) -> Any:
    assert ctx.routers is not None
    return await ctx.routers.get(workspace_id)


async def _self_ref(ctx: EngineContext, key: tuple[str, str]) -> Any:
    assert ctx.conversations is not None
    return await ctx.conversations.get(key)
