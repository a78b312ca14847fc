"""Commands from clients: who may send what, and which actor runs it.

``Requests`` is the half of ``ChatEngine`` that takes a decoded command (``request`` from a live
connection, ``request_as`` from the HTTP API), authorizes it and asks the actor that owns it.

Authorization lives here: a visitor principal only ever sees its own conversations (a foreign
or guessed id answers ``not_found``, exactly like a missing one, and is checked before any
conversation actor is started for it); an agent only its workspace; roles gate supervisor
commands. Visibility ``agents`` events never reach a visitor's result (``engine.visibility``).
Each request is bounded by ``config.ask_timeout_s`` (``overloaded`` when exceeded).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import trio

from engine.agent import AgentActive, ChooseStatus
from engine.config import EngineConfig
from engine.context import EngineContext
from engine.conversation import (
    Apply,
    Crash,
    Signal,
    Snapshot,
    Subscribe,
    summarize,
    view,
)
from engine.conversation_rules import may_see
from engine.errors import (
    ActorStopped,
    Forbidden,
    InvalidMessage,
    InvalidState,
    NotFound,
    Overloaded,
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
    Watch,
    Watching,
    Whisper,
)
from engine.presence import RateLimiter
from engine.principals import (
    AgentPrincipal,
    Connection,
    Principal,
    VisitorPrincipal,
    offline_message_origin,
    start_chat_origin,
)
from engine.routing_messages import GetQueue, GetVisitors
from engine.visibility import for_visitor_result
from engine.visitor import (
    OpenConversation,
    VisitorNavigated,
    VisitorProfile,
)
from storage import ConversationState

__all__ = ["SUPERVISION_AUDIT_EVERY_S", "Requests"]

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


class Requests:
    """Command handling of ``ChatEngine`` (a base class: it uses the engine's context, rate
    limiters and intake state, which ``ChatEngine.__init__`` sets)."""

    config: EngineConfig
    _ctx: EngineContext
    _accepting: bool
    _messages: RateLimiter
    _signals: RateLimiter
    _supervision_audited: dict[tuple[str, str, str], float]

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
        # A bare cancel scope, not ``trio.fail_after`` (which wraps one in a generator context
        # manager): this runs once per routed message.
        with trio.CancelScope(deadline=trio.current_time() + self.config.ask_timeout_s):
            if isinstance(p, VisitorPrincipal):
                return for_visitor_result(await self._visitor_request(conn, p, command))
            return await self._agent_request(conn, p, command)
        # Only the deadline ends the block without a value or an exception.
        raise Overloaded("the engine did not answer in time")

    async def _visitor_request(
        self, conn: Connection | None, p: VisitorPrincipal, cmd: Command
    ) -> Result:
        ws = p.workspace_id
        if isinstance(cmd, SetTyping):
            assert conn is not None  # request_as refuses it
            await self._signal(conn, p, cmd)
            return Ok()
        if isinstance(cmd, ReportPageView):
            await (await self._visitor(p)).ask(lambda r: VisitorNavigated(page=cmd, reply=r))
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
            greeting_id = cmd.greeting_id if isinstance(cmd, SendMessage) else None
            conversation_id = await visitor.ask(
                lambda r: OpenConversation(
                    create=create, group_id=group_id, greeting_id=greeting_id, reply=r
                )
            )
            if conversation_id is None:
                raise InvalidState("no open conversation")
            return await self._apply(p, await self._conversation(ws, conversation_id), cmd)
        return await self._apply(p, await self._existing_conversation(p, conversation_id), cmd)

    async def _agent_request(
        self, conn: Connection | None, p: AgentPrincipal, cmd: Command
    ) -> Result:
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
        sent_at = self._ctx.clock()
        result: Result = await ref.ask(
            lambda r: Apply(principal=p, command=cmd, reply=r, sent_at_s=sent_at)
        )
        return result

    async def _signal(self, conn: Connection, p: Principal, cmd: SetTyping) -> None:
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
                max_chats=r.max_chats,  # exactly: routing honours 0 as no chats
                group_ids=tuple(r.group_ids),
            )
            for r in records
            if r.enabled
        )

    async def _my_chats(self, p: AgentPrincipal) -> tuple[Any, ...]:
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

        A running actor is used as is: it holds the row and checks the principal itself (the
        one check, ``conversation_rules.may_see`` in ``decide``), with no storage read.
        Otherwise one storage read checks that the id exists in the workspace and, for a
        visitor, is theirs, so guessed or foreign ids cannot make the registry spawn actors;
        the actor then starts from that row instead of reading it again.
        """
        registry = self._ctx.conversations
        assert registry is not None
        ws = p.workspace_id
        key = (ws, conversation_id)
        if registry.is_active(key):  # the message path: no await before the ask
            return registry.get_nowait(key)
        generation = registry.generation
        ctx = self._ctx
        conv = await ctx.call(ctx.storage.get_conversation(ws, conversation_id))
        if conv is None or not may_see(p, conv):
            raise NotFound("conversation not found")
        seeded = registry.activate_seeded(key, conv, generation=generation)
        return seeded or await self._conversation(ws, conversation_id)

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
        ref = await self._conversation(workspace_id, conversation_id)
        await ref.tell(Crash())
