"""The conversation actor: one per conversation, the only writer of its events.

A virtual actor (registry key ``(workspace_id, conversation_id)``): spawned on the first
message, passivated when idle, rebuilt from storage in ``on_start`` (the row and the recent
events), so a crash or passivation loses nothing durable and the next seq follows the last one.

Each batch of queued messages is validated in order against a tentative state, appended with ONE
``storage.append_many`` (one commit assigns the gapless seqs), acknowledged only after it
returns, then fanned out. A failed commit acknowledges nothing: every ask of the batch gets
``storage_unavailable`` and the state is rolled back; retries are idempotent by
``client_msg_id``.

Fan-out (``Hub.deliver``, never blocking): the visitor's connections get ``all`` events only;
participants' and watchers' connections get everything. Routing (who gets the chat) is decided
by the workspace router; this actor applies its proposals if they still hold, which is what
makes "two agents accept at once: one wins" true: assignments are serialized here.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from engine.actor import Actor, Reply
from engine.api import (
    AgentPrincipal,
    Connection,
    Principal,
    VisitorPrincipal,
    start_chat_origin,
)
from engine.context import EngineContext
from engine.errors import (
    AlreadyAssigned,
    AlreadyOpen,
    ConversationClosed,
    DomainError,
    Forbidden,
    InvalidMessage,
    InvalidState,
    NotFound,
    Overloaded,
    PersistenceRefused,
    PersistenceUnavailable,
)
from engine.messages import (
    Accept,
    AddNote,
    Close,
    ConversationResult,
    ConversationSummary,
    ConversationUpdate,
    EndChat,
    EventPush,
    EventView,
    Invite,
    Join,
    Leave,
    LeaveOfflineMessage,
    MessageAck,
    Rate,
    ResyncRequired,
    SendMessage,
    SetTyping,
    StartChat,
    Tag,
    Transfer,
    TypingPush,
    ViewingPush,
    Whisper,
)
from engine.presence import Hub
from storage.api import (
    AppendRequest,
    AppendResult,
    AuthorType,
    CloseReason,
    Conversation,
    ConversationPatch,
    ConversationState,
    Event,
    EventKind,
    Visibility,
)

__all__ = [
    "Apply",
    "ConversationActor",
    "Crash",
    "RouterAssign",
    "RouterClose",
    "RouterRequeue",
    "Signal",
    "Snapshot",
    "Subscribe",
    "summarize",
    "view",
]

AUTO_REASONS = frozenset({"least_busy", "sticky", "group_fallback", "longest_idle"})


# ---------------------------------------------------------------- messages to the actor


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
class RouterAssign:
    """The router proposes ``agent_id``; applied only if the chat is still queued."""

    agent_id: str
    reason: str
    details: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, eq=False)
class RouterRequeue:
    """Take the chat from ``agent_id`` (no response, went offline) and queue it again."""

    agent_id: str
    reason: str


@attrs.frozen(kw_only=True, eq=False)
class RouterClose:
    """Close a chat nobody took (``missed``)."""

    reason: CloseReason


@attrs.frozen(kw_only=True, eq=False)
class Crash:
    """Test hook: make this actor crash (supervision tests)."""


ConversationMsg = (
    Apply | Subscribe | Signal | Snapshot | RouterAssign | RouterRequeue | RouterClose | Crash
)


# ---------------------------------------------------------------- views


def view(event: Event, author_name: str | None) -> EventView:
    return EventView(
        conversation_id=event.conversation_id,
        seq=event.seq,
        kind=str(event.kind),
        visibility=str(event.visibility),
        author_type=str(event.author_type),
        author_id=event.author_id,
        author_name=author_name,
        body=event.body,
        data=dict(event.data),
        client_msg_id=event.client_msg_id,
        created_at=event.created_at,
    )


def summarize(
    conv: Conversation,
    *,
    visitor_name: str | None = None,
    assignee_name: str | None = None,
    last_message: Event | None = None,
) -> ConversationSummary:
    return ConversationSummary(
        conversation_id=conv.id,
        visitor_id=conv.visitor_id,
        visitor_name=visitor_name,
        state=str(conv.state),
        close_reason=None if conv.close_reason is None else str(conv.close_reason),
        group_id=conv.group_id,
        assignee_id=conv.assignee_id,
        assignee_name=assignee_name,
        participant_ids=tuple(conv.participant_ids),
        tags=tuple(conv.tags),
        last_seq=conv.last_seq,
        last_message_preview=None if last_message is None else (last_message.body or "")[:140],
        last_message_author_type=None if last_message is None else str(last_message.author_type),
        awaiting_agent=last_message is not None and last_message.author_type == AuthorType.VISITOR,
        created_at=conv.created_at,
        last_activity_at=conv.last_activity_at,
    )


def apply_patch(conv: Conversation, patch: ConversationPatch | None, now: float) -> Conversation:
    """The row after ``patch``, as storage will write it (tentative state for validation).

    Without a patch the row is returned as is (no copy on the message path): the commit sets
    ``last_activity_at`` and ``last_seq`` in one step.
    """
    if patch is None:
        return conv
    changes: dict[str, Any] = {"last_activity_at": now}
    for name in ("state", "close_reason", "group_id", "assignee_id", "previous_assignee_id"):
        value = getattr(patch, name)
        if value is not None:
            changes[name] = value
    for name in ("participant_ids", "tags", "rating", "rating_comment", "closed_at"):
        value = getattr(patch, name)
        if value is not None:
            changes[name] = value
    if patch.first_response_at is not None and conv.first_response_at is None:
        changes["first_response_at"] = patch.first_response_at
    if patch.clear_close_reason:
        changes["close_reason"] = None
    if patch.clear_assignee:
        changes["assignee_id"] = None
    if patch.clear_closed_at:
        changes["closed_at"] = None
    return attrs.evolve(conv, **changes)


def _files_data(item: _Pending) -> dict[str, Any]:
    return {"attachments": item.files} if item.files else {}


@attrs.define(slots=True, eq=False)
class _Pending:
    """One message of a batch on its way to storage."""

    msg: Apply | RouterAssign | RouterRequeue | RouterClose
    requests: list[AppendRequest]
    result: Any = None  # what to answer once durable (a function of the AppendResults)
    kind: str = ""
    assigned: str | None = None  # agent that got the chat by this message
    unassigned: str | None = None
    responded: str | None = None  # agent whose first answer this is
    files: list[dict[str, Any]] = attrs.Factory(list)  # attachments of a send_message


class ConversationActor(Actor[ConversationMsg]):
    """Owns one conversation: validates, persists, sequences and fans out its events."""

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

    # -- the loop

    async def handle_batch(self, msgs: Sequence[ConversationMsg]) -> None:
        pending: list[_Pending] = []
        for msg in msgs:
            if isinstance(msg, Apply | RouterAssign | RouterRequeue | RouterClose):
                pending.append(_Pending(msg=msg, requests=[]))
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
        if isinstance(msg, Subscribe):
            if conv is None or not _may_see(msg.conn.principal, conv):
                msg.reply.fail(NotFound("conversation not found"))
                return
            try:
                await self._replay(msg.conn, msg.after_seq)
            finally:
                msg.conn.resuming.discard(conv.id)
            if msg.watch:
                self.ctx.hub.watch(msg.conn, conv.id)
                self._viewing(msg.conn, True)
            msg.reply.send(await self._summary())
        elif isinstance(msg, Snapshot):
            if conv is None:
                msg.reply.fail(NotFound("conversation not found"))
            else:
                msg.reply.send(await self._summary())
        elif isinstance(msg, Signal) and conv is not None and _may_see(msg.principal, conv):
            await self._typing(msg.principal, msg.command)

    # -- validation: one message -> append requests (tentative state)

    async def _commit(self, batch: list[_Pending]) -> None:
        ctx = self.ctx
        before = self.conv
        if before is None:
            for item in batch:
                _fail(item.msg, NotFound("conversation not found"))
            return
        tentative = before
        accepted: list[_Pending] = []
        now = _wall(ctx)
        for item in batch:
            try:
                tentative = await self._plan(item, tentative, now)
            except DomainError as exc:
                _fail(item.msg, exc)
                continue
            if item.requests:
                accepted.append(item)
            else:
                _answer(item, [], tentative, self)
        if not accepted:
            self.conv = tentative
            return
        requests = [r for item in accepted for r in item.requests]
        try:
            results: list[AppendResult] = await ctx.call(ctx.storage.append_many(requests))
        except PersistenceRefused as exc:
            self.conv = before
            if len(accepted) == 1:
                _fail(accepted[0].msg, exc)
                return
            # One command's data was refused (not an outage): the others must not fail with it.
            # Each is planned again and committed alone, in order; only the refused one fails.
            for item in accepted:
                await self._commit([_Pending(msg=item.msg, requests=[])])
            return
        except PersistenceUnavailable as exc:
            self.conv = before
            for item in accepted:
                _fail(item.msg, exc)
            return
        ctx.metrics.commit_batch_size.observe(len(requests))
        duplicate_with_patch = any(
            res.duplicate and req.patch is not None
            for req, res in zip(requests, results, strict=True)
        )
        fresh = [res.event for res in results if not res.duplicate]
        last_seq = max((e.seq for e in fresh), default=before.last_seq)
        if fresh:
            self.conv = attrs.evolve(
                tentative, last_seq=max(last_seq, before.last_seq), last_activity_at=now
            )
        else:
            self.conv = tentative
        if duplicate_with_patch:  # a retried command: storage kept the original effect
            reloaded = await ctx.call(ctx.storage.get_conversation(*self.key))
            if reloaded is not None:
                self.conv = reloaded
        self.recent.extend(fresh)
        for event in fresh:
            if event.kind == EventKind.MESSAGE:
                self.last_message = event
        offset = 0
        for item in accepted:
            count = len(item.requests)
            _answer(item, results[offset : offset + count], self.conv, self)
            offset += count
            msg = item.msg
            if isinstance(msg, Apply) and msg.sent_at_s:
                ctx.metrics.routing_latency.observe(max(0.0, ctx.clock() - msg.sent_at_s))
        await self._after_commit(before, accepted, fresh)

    async def _plan(self, item: _Pending, conv: Conversation, now: float) -> Conversation:
        """Validate ``item`` against ``conv``; fill its requests; return the tentative row."""
        msg = item.msg
        ws = conv.workspace_id
        base: dict[str, Any] = {"workspace_id": ws, "conversation_id": conv.id}
        if isinstance(msg, RouterAssign):
            if conv.state != ConversationState.QUEUED or conv.assignee_id is not None:
                item.kind = "stale"
                return conv
            return await self._assign(item, conv, msg.agent_id, msg.reason, msg.details, now)
        if isinstance(msg, RouterRequeue):
            if conv.assignee_id != msg.agent_id or conv.state != ConversationState.ACTIVE:
                item.kind = "stale"
                return conv
            return self._requeue(item, conv, msg.agent_id, msg.reason, now)
        if isinstance(msg, RouterClose):
            if conv.state != ConversationState.QUEUED:
                item.kind = "stale"
                return conv
            return self._close(item, conv, msg.reason, None, AuthorType.SYSTEM, None, now)
        principal, cmd = msg.principal, msg.command
        if not _may_see(principal, conv):
            raise NotFound("conversation not found")
        if isinstance(cmd, SendMessage) and cmd.attachments:
            item.files = await self._bind_files(conv, principal, cmd.attachments)
        if isinstance(principal, VisitorPrincipal):
            if isinstance(cmd, SendMessage) and conv.state == ConversationState.CLOSED:
                await self._check_may_reopen(conv)
            return self._plan_visitor(item, conv, principal, cmd, base, now)
        return await self._plan_agent(item, conv, principal, cmd, base, now)

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

    async def _check_may_reopen(self, conv: Conversation) -> None:
        """A visitor's message reopens a closed chat, unless the visitor has another open chat
        (one open chat per visitor): then ``AlreadyOpen``. Asked only on reopen, off the hot
        path; the visitor actor never asks a conversation, so this cannot deadlock."""
        from engine.visitor import OpenConversation

        visitors = self.ctx.visitors
        if visitors is None or conv.close_reason == CloseReason.OFFLINE:
            return
        try:
            with trio.fail_after(self.ctx.config.ask_timeout_s):
                visitor = await visitors.get((conv.workspace_id, conv.visitor_id))
                open_id: str | None = await visitor.ask(
                    lambda r: OpenConversation(create=False, reply=r)
                )
        except trio.TooSlowError as exc:
            raise Overloaded("the engine did not answer in time") from exc
        if open_id is not None and open_id != conv.id:
            raise AlreadyOpen("the visitor has another open chat", field="conversation_id")

    def _plan_visitor(
        self,
        item: _Pending,
        conv: Conversation,
        who: VisitorPrincipal,
        cmd: Any,
        base: dict[str, Any],
        now: float,
    ) -> Conversation:
        author: dict[str, Any] = {
            **base,
            "author_type": AuthorType.VISITOR,
            "author_id": who.visitor_id,
        }
        if isinstance(cmd, SendMessage):
            patch = None
            if conv.state == ConversationState.CLOSED:  # reopen on a new visitor message
                if conv.close_reason == CloseReason.OFFLINE:
                    raise ConversationClosed("an offline message cannot be continued")
                reopen = ConversationPatch(
                    state=ConversationState.QUEUED,
                    clear_close_reason=True,
                    clear_closed_at=True,
                    clear_assignee=True,
                    participant_ids=(),
                    previous_assignee_id=conv.assignee_id,
                )
                item.requests.append(
                    AppendRequest(
                        **base,
                        kind=EventKind.STATUS,
                        author_type=AuthorType.SYSTEM,
                        data={"state": "queued", "reopened": True},
                        patch=reopen,
                    )
                )
                conv = apply_patch(conv, reopen, now)
                item.kind = "reopened"
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=EventKind.MESSAGE,
                    body=cmd.text,
                    data=_files_data(item),
                    client_msg_id=cmd.client_msg_id,
                    patch=patch,
                )
            )
            item.result = "ack"
            return apply_patch(conv, None, now)
        if isinstance(cmd, LeaveOfflineMessage):
            patch = ConversationPatch(
                state=ConversationState.CLOSED, close_reason=CloseReason.OFFLINE, closed_at=now
            )
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=EventKind.OFFLINE_MESSAGE,
                    body=cmd.text,
                    data={"name": cmd.name, "email": cmd.email},
                    client_msg_id=cmd.client_msg_id,
                    patch=patch,
                )
            )
            item.result = "ack"
            item.kind = "closed"
            return apply_patch(conv, patch, now)
        if isinstance(cmd, Rate):
            patch = ConversationPatch(rating=cmd.rating, rating_comment=cmd.comment)
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=EventKind.RATING,
                    data={"rating": cmd.rating, "comment": cmd.comment},
                    visibility=Visibility.AGENTS,
                    patch=patch,
                )
            )
            item.result = "conversation"
            return apply_patch(conv, patch, now)
        if isinstance(cmd, EndChat):
            if conv.state == ConversationState.CLOSED:
                item.result = "conversation"
                return conv
            reason = (
                CloseReason.ABANDONED
                if conv.state == ConversationState.QUEUED
                else CloseReason.RESOLVED
            )
            return self._close(item, conv, reason, None, AuthorType.VISITOR, who.visitor_id, now)
        raise Forbidden(f"visitors may not {getattr(cmd, 'TYPE', '?')}")

    async def _plan_agent(
        self,
        item: _Pending,
        conv: Conversation,
        who: AgentPrincipal,
        cmd: Any,
        base: dict[str, Any],
        now: float,
    ) -> Conversation:
        me = who.agent_id
        participant = me in conv.participant_ids
        author: dict[str, Any] = {**base, "author_type": AuthorType.AGENT, "author_id": me}
        closed = conv.state == ConversationState.CLOSED

        def need_participant() -> None:
            if not (participant or who.is_supervisor):
                raise Forbidden("you are not in this chat")

        if isinstance(cmd, SendMessage | StartChat):
            if isinstance(cmd, StartChat):
                if conv.state != ConversationState.QUEUED or conv.last_seq or conv.assignee_id:
                    if conv.origin_key != start_chat_origin(conv.visitor_id, me, cmd.client_msg_id):
                        raise InvalidState("the chat has already started")
                    # A retry of the start that opened this chat: storage answers the original
                    # message (a duplicate), whatever happened to the chat since.
                    item.requests.append(
                        AppendRequest(
                            **author,
                            kind=EventKind.MESSAGE,
                            body=cmd.text,
                            client_msg_id=cmd.client_msg_id,
                        )
                    )
                    item.result = "ack"
                    return conv
                conv = await self._assign(item, conv, me, "proactive", {}, now)
                participant = True
            need_participant()
            if closed:
                raise ConversationClosed("the chat is closed")
            first = conv.first_response_at is None and participant
            patch = ConversationPatch(first_response_at=now) if first else None
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=EventKind.MESSAGE,
                    body=cmd.text,
                    data=_files_data(item),
                    client_msg_id=cmd.client_msg_id,
                    patch=patch,
                )
            )
            if self.waiting_for == me:
                item.responded = me
            item.result = "ack"
            return apply_patch(conv, patch, now)
        if isinstance(cmd, AddNote | Whisper):
            if isinstance(cmd, Whisper) and not who.is_supervisor:
                raise Forbidden("only supervisors whisper")
            need_participant()
            kind = EventKind.NOTE if isinstance(cmd, AddNote) else EventKind.WHISPER
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=kind,
                    visibility=Visibility.AGENTS,
                    body=cmd.text,
                    client_msg_id=cmd.client_msg_id,
                )
            )
            item.result = "ack"
            return apply_patch(conv, None, now)
        if closed and not isinstance(cmd, Tag):
            raise ConversationClosed("the chat is closed")
        if isinstance(cmd, Accept):
            if conv.assignee_id == me:
                if self.waiting_for == me:
                    item.responded = me
                item.result = "conversation"
                return conv
            if conv.assignee_id is not None:
                raise AlreadyAssigned("another agent has this chat")
            item.result = "conversation"
            return await self._assign(item, conv, me, "manual_pick", {}, now)
        if isinstance(cmd, Transfer):
            need_participant()
            return await self._transfer(item, conv, who, cmd, now)
        if isinstance(cmd, Invite):
            need_participant()
            name = await self.ctx.agent_name(conv.workspace_id, cmd.agent_id)
            if name is None:
                raise NotFound("no such agent")
            item.result = "conversation"
            if cmd.agent_id in conv.participant_ids:
                return conv
            patch = ConversationPatch(participant_ids=(*conv.participant_ids, cmd.agent_id))
            item.requests.append(
                AppendRequest(
                    **base,
                    kind=EventKind.JOINED,
                    author_type=AuthorType.AGENT,
                    author_id=cmd.agent_id,
                    data={"invited_by": me, "agent_name": name},
                    patch=patch,
                )
            )
            item.assigned = cmd.agent_id
            item.kind = "invited"
            return apply_patch(conv, patch, now)
        if isinstance(cmd, Join):
            item.result = "conversation"
            if cmd.silent:
                if not who.is_supervisor:
                    raise Forbidden("only supervisors join silently")
                item.requests.append(
                    AppendRequest(
                        **author,
                        kind=EventKind.JOINED,
                        visibility=Visibility.AGENTS,
                        data={"silent": True, "agent_name": who.display_name},
                    )
                )
                item.kind = "silent_join"
                return apply_patch(conv, None, now)
            if participant:
                return conv
            if conv.state == ConversationState.QUEUED:
                raise InvalidState("take a queued chat with accept")
            patch = ConversationPatch(participant_ids=(*conv.participant_ids, me))
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=EventKind.JOINED,
                    data={"agent_name": who.display_name},
                    patch=patch,
                )
            )
            return apply_patch(conv, patch, now)
        if isinstance(cmd, Leave):
            if not participant:
                raise InvalidState("you are not in this chat")
            item.result = "conversation"
            rest = tuple(a for a in conv.participant_ids if a != me)
            if conv.assignee_id == me and not rest:
                return self._requeue(item, conv, me, "assignee_left", now)
            if conv.assignee_id == me:
                patch = ConversationPatch(
                    assignee_id=rest[0], participant_ids=rest, previous_assignee_id=me
                )
                item.assigned = rest[0]
                item.unassigned = me
            else:
                patch = ConversationPatch(participant_ids=rest)
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=EventKind.LEFT,
                    data={"agent_name": who.display_name, "assignee_id": patch.assignee_id},
                    patch=patch,
                )
            )
            item.kind = "left"
            return apply_patch(conv, patch, now)
        if isinstance(cmd, Close):
            need_participant()
            tags = tuple(dict.fromkeys((*conv.tags, *cmd.tags)))
            return self._close(item, conv, CloseReason.RESOLVED, tags, AuthorType.AGENT, me, now)
        if isinstance(cmd, Tag):
            need_participant()
            tags = tuple(t for t in dict.fromkeys((*conv.tags, *cmd.add)) if t not in cmd.remove)
            patch = ConversationPatch(tags=tags)
            item.requests.append(
                AppendRequest(
                    **author,
                    kind=EventKind.TAGGED,
                    visibility=Visibility.AGENTS,
                    data={"add": list(cmd.add), "remove": list(cmd.remove), "tags": list(tags)},
                    patch=patch,
                )
            )
            item.result = "conversation"
            return apply_patch(conv, patch, now)
        raise Forbidden(f"not a conversation command: {getattr(cmd, 'TYPE', '?')}")

    # -- the rules that several commands share

    async def _assign(
        self,
        item: _Pending,
        conv: Conversation,
        agent_id: str,
        reason: str,
        details: dict[str, Any],
        now: float,
    ) -> Conversation:
        name = await self.ctx.agent_name(conv.workspace_id, agent_id)
        if name is None:
            raise NotFound("no such agent")
        others = tuple(a for a in conv.participant_ids if a != agent_id)
        patch = ConversationPatch(
            state=ConversationState.ACTIVE,
            assignee_id=agent_id,
            participant_ids=(agent_id, *others),
        )
        item.requests.append(
            AppendRequest(
                workspace_id=conv.workspace_id,
                conversation_id=conv.id,
                kind=EventKind.ASSIGNED,
                author_type=AuthorType.SYSTEM,
                author_id=agent_id,
                data={"agent_id": agent_id, "agent_name": name, "reason": reason, **details},
                patch=patch,
            )
        )
        item.assigned = agent_id
        item.kind = reason
        return apply_patch(conv, patch, now)

    def _requeue(
        self, item: _Pending, conv: Conversation, agent_id: str, reason: str, now: float
    ) -> Conversation:
        rest = tuple(a for a in conv.participant_ids if a != agent_id)
        patch = ConversationPatch(
            state=ConversationState.QUEUED,
            clear_assignee=True,
            participant_ids=rest,
            previous_assignee_id=agent_id,
        )
        item.requests.append(
            AppendRequest(
                workspace_id=conv.workspace_id,
                conversation_id=conv.id,
                kind=EventKind.STATUS,
                author_type=AuthorType.SYSTEM,
                data={"state": "queued", "reason": reason, "from_agent_id": agent_id},
                patch=patch,
            )
        )
        item.unassigned = agent_id
        item.kind = reason
        item.result = item.result or "conversation"
        return apply_patch(conv, patch, now)

    def _close(
        self,
        item: _Pending,
        conv: Conversation,
        reason: CloseReason,
        tags: tuple[str, ...] | None,
        author_type: AuthorType,
        author_id: str | None,
        now: float,
    ) -> Conversation:
        patch = ConversationPatch(
            state=ConversationState.CLOSED, close_reason=reason, closed_at=now, tags=tags
        )
        item.requests.append(
            AppendRequest(
                workspace_id=conv.workspace_id,
                conversation_id=conv.id,
                kind=EventKind.STATUS,
                author_type=author_type,
                author_id=author_id,
                data={"state": "closed", "reason": str(reason)},
                patch=patch,
            )
        )
        item.kind = "closed"
        item.unassigned = conv.assignee_id
        item.result = "conversation"
        return apply_patch(conv, patch, now)

    async def _transfer(
        self, item: _Pending, conv: Conversation, who: AgentPrincipal, cmd: Transfer, now: float
    ) -> Conversation:
        ctx = self.ctx
        me = who.agent_id
        item.result = "conversation"
        data: dict[str, Any] = {"from_agent_id": conv.assignee_id, "by": me, "reason": cmd.reason}
        if cmd.to_agent_id is not None:
            name = await ctx.agent_name(conv.workspace_id, cmd.to_agent_id)
            if name is None:
                raise NotFound("no such agent")
            rest = tuple(
                a for a in conv.participant_ids if a not in (cmd.to_agent_id, conv.assignee_id)
            )
            patch = ConversationPatch(
                state=ConversationState.ACTIVE,
                assignee_id=cmd.to_agent_id,
                participant_ids=(cmd.to_agent_id, *rest),
                previous_assignee_id=conv.assignee_id,
            )
            data.update(to_agent_id=cmd.to_agent_id, agent_name=name)
            item.assigned = cmd.to_agent_id
        else:
            assert cmd.to_group_id is not None
            group = await ctx.call(ctx.storage.get_group(conv.workspace_id, cmd.to_group_id))
            if group is None:
                raise NotFound("no such group")
            patch = ConversationPatch(
                state=ConversationState.QUEUED,
                clear_assignee=True,
                participant_ids=(),
                group_id=cmd.to_group_id,
                previous_assignee_id=conv.assignee_id,
            )
            data.update(to_group_id=cmd.to_group_id, group_name=group.name)
        item.unassigned = conv.assignee_id
        item.requests.append(
            AppendRequest(
                workspace_id=conv.workspace_id,
                conversation_id=conv.id,
                kind=EventKind.TRANSFERRED,
                author_type=AuthorType.AGENT,
                author_id=me,
                data=data,
                patch=patch,
            )
        )
        item.kind = "transfer"
        return apply_patch(conv, patch, now)

    # -- after the commit: fan-out, router, routing log

    async def _after_commit(
        self, before: Conversation, items: list[_Pending], fresh: list[Event]
    ) -> None:
        ctx = self.ctx
        conv = self.conv
        assert conv is not None
        hub = ctx.hub
        ws = conv.workspace_id
        agent_ids = set(before.participant_ids) | set(conv.participant_ids)
        agent_conns: dict[str, Connection] = {}
        for agent_id in agent_ids:
            for c in hub.agent_connections(ws, agent_id):
                agent_conns[c.id] = c
        for c in hub.watchers(conv.id):
            if isinstance(c.principal, AgentPrincipal):
                agent_conns[c.id] = c
        visitor_conns = hub.visitor_connections(ws, conv.visitor_id)
        for event in fresh:
            push = EventPush(event=view(event, await self._author_name(event)))
            for c in list(agent_conns.values()):
                if conv.id not in c.resuming:
                    hub.deliver(c, push)
            if event.visibility == Visibility.ALL:
                for c in list(visitor_conns):
                    if conv.id not in c.resuming:
                        hub.deliver(c, push)
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
        for item in items:
            if item.kind in AUTO_REASONS and item.assigned is not None:
                self.waiting_for = item.assigned
            if item.responded is not None and self.waiting_for == item.responded:
                self.waiting_for = None
            if item.unassigned is not None and self.waiting_for == item.unassigned:
                self.waiting_for = None
        if not (changed or any(i.responded or i.kind == "stale" for i in items)):
            return
        from engine.routing import ConversationChanged

        router = await _router(ctx, ws)
        ref = await _self_ref(ctx, self.key)
        for item in items:
            if item.assigned is not None and item.kind not in ("invited",):
                self._record(item.assigned, item.kind, item)
        await router.tell(
            ConversationChanged(
                conversation=conv,
                ref=ref,
                summary=summary or await self._summary(),
                assigned=[(i.assigned, i.kind) for i in items if i.assigned is not None],
                unassigned=[(i.unassigned, i.kind) for i in items if i.unassigned is not None],
                responded=[i.responded for i in items if i.responded is not None],
                stale=[
                    i.msg.agent_id
                    for i in items
                    if i.kind == "stale" and isinstance(i.msg, RouterAssign)
                ],
                first_message=next((e.body for e in fresh if e.kind == EventKind.MESSAGE), None),
            )
        )
        if before.state != conv.state and ctx.visitors is not None:
            from engine.visitor import ConversationStateChanged

            visitor = await ctx.visitors.get((ws, conv.visitor_id))
            await visitor.tell(ConversationStateChanged(conversation_id=conv.id, state=conv.state))

    def _record(self, agent_id: str, reason: str, item: _Pending) -> None:
        conv = self.conv
        assert conv is not None
        details: dict[str, Any] = {}
        if isinstance(item.msg, RouterAssign):
            details = dict(item.msg.details)
        elif isinstance(item.msg, Apply):
            details = {"by": getattr(item.msg.principal, "agent_id", None)}
        # Stored in batches by the DecisionLog: the assignment's fan-out does not wait for it.
        self.ctx.decisions.record(
            conv.workspace_id,
            conversation_id=conv.id,
            agent_id=agent_id,
            reason=reason,
            details=details,
        )

    async def _author_name(self, event: Event) -> str | None:
        ws = event.workspace_id
        if event.author_type == AuthorType.AGENT and event.author_id:
            return await self.ctx.agent_name(ws, event.author_id)
        if event.author_type == AuthorType.VISITOR and event.author_id:
            return self.ctx.visitor_names.get((ws, event.author_id))
        return None

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

    # -- replay and ephemeral signals

    async def _replay(self, conn: Connection, after_seq: int | None) -> None:
        conv = self.conv
        assert conv is not None
        if after_seq is None or after_seq >= conv.last_seq:
            return
        hub = self.ctx.hub
        for_visitor = isinstance(conn.principal, VisitorPrincipal)
        stats = conn.outbox.statistics()
        room = int(stats.max_buffer_size - stats.current_buffer_used) - 1
        gap = conv.last_seq - after_seq
        if gap > min(self.ctx.config.max_resume_gap, room):
            hub.deliver(
                conn,
                ResyncRequired(conversation_id=conv.id, from_seq=after_seq, last_seq=conv.last_seq),
            )
            return
        if self.recent and self.recent[0].seq <= after_seq + 1:
            events = [e for e in self.recent if e.seq > after_seq]
        else:
            events = await self.ctx.call(
                self.ctx.storage.history(
                    conv.workspace_id,
                    conv.id,
                    after_seq=after_seq,
                    limit=gap,
                    include_agents_only=not for_visitor,
                )
            )
        for event in events:
            if for_visitor and event.visibility != Visibility.ALL:
                continue
            hub.deliver(conn, EventPush(event=view(event, await self._author_name(event))))

    async def _typing(self, who: Principal, cmd: SetTyping) -> None:
        conv = self.conv
        assert conv is not None
        hub = self.ctx.hub
        ttl = self.ctx.config.typing_ttl_s
        ws = conv.workspace_id
        if isinstance(who, VisitorPrincipal):
            # Read per signal (a dict lookup): a settings change applies without a restart.
            settings = await self.ctx.workspace_settings(ws)
            draft = cmd.draft if settings.sneak_peek_enabled and cmd.is_typing else None
            push = TypingPush(
                conversation_id=conv.id,
                author_type="visitor",
                author_id=who.visitor_id,
                author_name=self.ctx.visitor_names.get((ws, who.visitor_id)),
                is_typing=cmd.is_typing,
                draft=draft,
                expires_in_s=ttl,
            )
            seen: set[str] = set()
            for agent_id in conv.participant_ids:
                for c in list(hub.agent_connections(ws, agent_id)):
                    seen.add(c.id)
                    hub.deliver(c, push)
            for c in list(hub.watchers(conv.id)):
                if c.id not in seen:
                    hub.deliver(c, push)
            return
        if who.agent_id not in conv.participant_ids:
            return  # silent supervisors and onlookers never show as typing
        push = TypingPush(
            conversation_id=conv.id,
            author_type="agent",
            author_id=who.agent_id,
            author_name=who.display_name,
            is_typing=cmd.is_typing,
            draft=None,
            expires_in_s=ttl,
        )
        hub.deliver_all(hub.visitor_connections(ws, conv.visitor_id), push)
        for agent_id in conv.participant_ids:
            if agent_id != who.agent_id:
                hub.deliver_all(hub.agent_connections(ws, agent_id), push)

    def _viewing(self, conn: Connection, viewing: bool) -> None:
        conv = self.conv
        who = conn.principal
        if conv is None or not isinstance(who, AgentPrincipal):
            return
        if who.agent_id not in conv.participant_ids:
            return  # a supervisor looking on stays invisible
        hub = self.ctx.hub
        hub.deliver_all(
            hub.visitor_connections(conv.workspace_id, conv.visitor_id),
            ViewingPush(
                conversation_id=conv.id,
                agent_id=who.agent_id,
                agent_name=who.display_name,
                viewing=viewing,
                expires_in_s=self.ctx.config.typing_ttl_s,
            ),
        )


# ---------------------------------------------------------------- helpers


def _may_see(principal: Principal, conv: Conversation) -> bool:
    if principal.workspace_id != conv.workspace_id:
        return False
    if isinstance(principal, VisitorPrincipal):
        return principal.visitor_id == conv.visitor_id
    return True


def _fail(msg: Apply | RouterAssign | RouterRequeue | RouterClose, exc: DomainError) -> None:
    if isinstance(msg, Apply):
        msg.reply.fail(exc)


def _answer(
    item: _Pending, results: Sequence[AppendResult], conv: Conversation, actor: ConversationActor
) -> None:
    msg = item.msg
    if not isinstance(msg, Apply):
        return
    if item.result == "ack":
        # The message event is the last request of the item (a reopen status may come first).
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
    summary = summarize(
        conv,
        visitor_name=actor.ctx.visitor_names.get((conv.workspace_id, conv.visitor_id)),
        assignee_name=actor.ctx.agent_names.get((conv.workspace_id, conv.assignee_id or "")),
        last_message=actor.last_message,
    )
    msg.reply.send(
        ConversationResult(conversation=summary, seq=results[-1].event.seq if results else None)
    )


def _wall(ctx: EngineContext) -> float:
    return time.time()


async def _router(ctx: EngineContext, workspace_id: str) -> Any:
    assert ctx.routers is not None
    return await ctx.routers.get(workspace_id)


async def _self_ref(ctx: EngineContext, key: tuple[str, str]) -> Any:
    assert ctx.conversations is not None
    return await ctx.conversations.get(key)


def deliver_summary(hub: Hub, conns: Sequence[Connection], summary: ConversationSummary) -> None:
    hub.deliver_all(conns, ConversationUpdate(conversation=summary))


_ = trio  # trio is used for typing of Reply and by callers
