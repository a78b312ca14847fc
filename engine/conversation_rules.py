"""The conversation's rules: ``decide`` a command against the state, synchronously, no I/O.

``decide(state, command, principal=..., facts=..., now=...)`` returns a ``Decision``: the events
to append (``AppendRequest``, each with the row patch storage applies in the same commit), the
row after them (each event folded in with ``conversation_state.apply``, which enforces the
transition table), what to answer once they are durable, and what the router must hear. A
refused command raises its ``DomainError``. Deciding again against the same inputs gives the
same decision, so the actor may re-decide freely (a group commit that isolates a refused
command does).

What the rules need from outside the conversation (an agent's name, a group, the visitor's
other open chat) comes in ``Facts``. A fact the shell has not looked up yet raises
``MissingFact``: the actor looks it up (an await, off the message path) and decides again.

Commands are the client commands of ``engine.messages`` (with the principal who sent them) and
the router's proposals below (no principal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

import attrs

from engine.conversation_state import ChatState, apply
from engine.errors import (
    AgentAtCapacity,
    AlreadyAssigned,
    AlreadyOpen,
    ConversationClosed,
    Forbidden,
    InvalidState,
    NotFound,
    WorkspaceAtCapacity,
)
from engine.messages import (
    Accept,
    AddNote,
    Close,
    EndChat,
    Invite,
    Join,
    Leave,
    LeaveOfflineMessage,
    Rate,
    SendMessage,
    StartChat,
    Tag,
    Transfer,
    Whisper,
)
from engine.principals import AgentPrincipal, Principal, VisitorPrincipal, start_chat_origin
from storage import (
    AppendRequest,
    AuthorType,
    CloseReason,
    Conversation,
    ConversationPatch,
    ConversationState,
    EventKind,
    Visibility,
)

__all__ = [
    "ACK",
    "AUTO_REASONS",
    "CONVERSATION",
    "Decision",
    "Facts",
    "MissingFact",
    "RouterAssign",
    "RouterClose",
    "RouterExpireInvitation",
    "RouterRequeue",
    "RouterTrigger",
    "decide",
    "may_see",
    "settle_waiting",
]

AUTO_REASONS = frozenset(
    {"least_busy", "sticky", "returning_visitor", "group_fallback", "longest_idle"}
)

# What a command is answered with once its events are durable.
ACK: Final = "ack"  # MessageAck of the command's last event
CONVERSATION: Final = "conversation"  # ConversationResult with the row after the batch

_QUEUED, _ACTIVE, _CLOSED = (
    ConversationState.QUEUED,
    ConversationState.ACTIVE,
    ConversationState.CLOSED,
)


# ---------------------------------------------------------------- the router's proposals


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
class RouterExpireInvitation:
    """A proactive invitation's time is up: close the chat as missed unless the visitor wrote."""


@attrs.frozen(kw_only=True, eq=False)
class RouterTrigger:
    """A trigger (``engine.triggers``) fired for this queued chat: apply its action and record
    the firing as a note for agents; stale unless the chat is still queued. Sent by the router
    (queued-chat triggers) and by the visitor's actor for the chat it just created (page_view
    triggers: the greeting the visitor answered comes first, so it opens the chat)."""

    trigger_id: str
    name: str
    action: str  # "auto_reply" | "add_tag" | "assign_group" | "greeting" | "invitation"
    text: str | None = None
    tag: str | None = None
    to_group_id: str | None = None
    sender_name: str | None = None  # greeting, invitation: the author shown to the visitor


# ---------------------------------------------------------------- inputs and outputs


class MissingFact(Exception):
    """``decide`` needs a fact ``Facts`` does not hold yet; never leaves the actor.

    ``what`` is ``"agent"`` (``key``: agent id), ``"group"`` (group id), ``"open_chat"`` or
    ``"attachments"`` (``key``: the upload ids a message carries, bound by the actor), or
    ``"room"`` (``key``: ``(agent id, adds an active chat)``, asked of the router), or
    ``"visitor_wrote"`` (whether the visitor has sent a message in the chat).
    """

    def __init__(self, what: str, key: Any = "") -> None:
        super().__init__(what, key)
        self.what = what
        self.key = key


_UNKNOWN: Final = "\x00unknown"  # not a conversation id (ids are printable)


class Facts:
    """What the rules may read from outside the conversation, filled in by the actor.

    ``agent_names`` is the engine's cache (read only here); an agent missing from it and from
    ``agents`` (looked up for this batch) is asked for with ``MissingFact``. ``open_chat`` is
    the visitor's open chat (``None``: none) once looked up. A fact is looked up at most once
    per batch, so deciding again always makes progress. (A plain class: one is built per
    batch.)
    """

    __slots__ = (
        "agent_names",
        "agents",
        "files",
        "groups",
        "open_chat",
        "rooms",
        "visitor_wrote",
    )

    def __init__(
        self, agent_names: Mapping[tuple[str, str], str], *, open_chat: str | None = _UNKNOWN
    ) -> None:
        self.agent_names = agent_names
        self.agents: dict[str, str | None] = {}  # looked up; None: no such agent
        self.groups: dict[str, str | None] = {}  # id -> name; None: no such group
        # upload ids of a message -> the files' metadata, once the actor bound them to the chat
        self.files: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self.open_chat = open_chat
        # (agent id, adds an active chat) -> None: room; "agent" / "workspace": which is full
        self.rooms: dict[tuple[str, bool], str | None] = {}
        self.visitor_wrote: bool | None = None  # None: not looked up yet

    def agent_name(self, workspace_id: str, agent_id: str) -> str:
        name = self.agent_names.get((workspace_id, agent_id))
        if name is not None:
            return name
        if agent_id not in self.agents:
            raise MissingFact("agent", agent_id)
        name = self.agents[agent_id]
        if name is None:
            raise NotFound("no such agent")
        return name

    def group_name(self, group_id: str) -> str:
        if group_id not in self.groups:
            raise MissingFact("group", group_id)
        name = self.groups[group_id]
        if name is None:
            raise NotFound("no such group")
        return name

    def message_data(self, cmd: Any) -> dict[str, Any]:
        """``data`` of a message event: the attached files' metadata (binding them is the
        actor's side effect, asked for with ``MissingFact``)."""
        ids: tuple[str, ...] = getattr(cmd, "attachments", ())
        if not ids:
            return {}
        if ids not in self.files:
            raise MissingFact("attachments", ids)
        return {"attachments": self.files[ids]}

    def need_room(self, agent_id: str, *, adds_active: bool) -> None:
        """Refuse a pick or transfer past the agent's ``max_chats`` or, when the chat becomes
        active, the workspace's ``max_concurrent_chats`` (the router counts the loads)."""
        key = (agent_id, adds_active)
        if key not in self.rooms:
            raise MissingFact("room", key)
        full = self.rooms[key]
        if full == "workspace":
            raise WorkspaceAtCapacity("the workspace has its maximum of active chats")
        if full is not None:
            raise AgentAtCapacity("the agent has their maximum of chats")

    def visitor_has_written(self) -> bool:
        if self.visitor_wrote is None:
            raise MissingFact("visitor_wrote")
        return self.visitor_wrote

    def visitor_open_chat(self) -> str | None:
        if self.open_chat == _UNKNOWN:
            raise MissingFact("open_chat")
        return self.open_chat


class Decision(NamedTuple):
    """A decided command: its events (empty: nothing to store), the row after them, the answer
    (``ACK``, ``CONVERSATION`` or ``None``), and for the router what changed hands.

    ``kind`` names what happened (an assignment reason, ``"closed"``, ``"stale"``, ...);
    ``assigned``/``unassigned`` are the agents who got or lost the chat, ``responded`` the
    waited-for agent who answered. A ``NamedTuple``: immutable, and built once per command on
    the message path, where a frozen attrs class costs twice as much.
    """

    events: tuple[AppendRequest, ...]
    conv: Conversation
    reply: str | None = None
    kind: str = ""
    assigned: str | None = None
    unassigned: str | None = None
    responded: str | None = None


def may_see(principal: Principal, conv: Conversation) -> bool:
    """A principal sees a chat of its workspace; a visitor only their own."""
    if principal.workspace_id != conv.workspace_id:
        return False
    if isinstance(principal, VisitorPrincipal):
        return principal.visitor_id == conv.visitor_id
    return True


def settle_waiting(waiting_for: str | None, decisions: Iterable[Decision]) -> str | None:
    """The waited-for agent after ``decisions`` were committed, in order: an automatic
    assignment starts the wait; the agent's answer or losing the chat ends it."""
    for d in decisions:
        if d.kind in AUTO_REASONS and d.assigned is not None:
            waiting_for = d.assigned
        if d.responded is not None and waiting_for == d.responded:
            waiting_for = None
        if d.unassigned is not None and waiting_for == d.unassigned:
            waiting_for = None
    return waiting_for


# ---------------------------------------------------------------- decide


def decide(
    state: ChatState, command: Any, *, principal: Principal | None, facts: Facts, now: float
) -> Decision:
    """Decide ``command`` (from ``principal``; ``None`` for the router's proposals) against
    ``state``; raises the ``DomainError`` that refuses it, or ``MissingFact``."""
    conv = state.conv
    if isinstance(command, RouterAssign):
        if conv.state != _QUEUED or conv.assignee_id is not None:
            return Decision(events=(), conv=conv, kind="stale")
        return _assign(conv, facts, command.agent_id, command.reason, command.details, now)
    if isinstance(command, RouterRequeue):
        if conv.assignee_id != command.agent_id or conv.state != _ACTIVE:
            return Decision(events=(), conv=conv, kind="stale")
        return _requeue(conv, command.agent_id, command.reason, now, reply=None)
    if isinstance(command, RouterClose):
        if conv.state != _QUEUED:
            return Decision(events=(), conv=conv, kind="stale")
        return _close(conv, command.reason, None, AuthorType.SYSTEM, None, now)
    if isinstance(command, RouterTrigger):
        if conv.state != _QUEUED:
            return Decision(events=(), conv=conv, kind="stale")
        return _trigger(conv, command, facts, now)
    if isinstance(command, RouterExpireInvitation):
        if conv.state == _CLOSED or facts.visitor_has_written():
            return Decision(events=(), conv=conv, kind="stale")
        return _close(conv, CloseReason.MISSED, None, AuthorType.SYSTEM, None, now)
    assert principal is not None, "client commands come with their principal"
    if not may_see(principal, conv):
        raise NotFound("conversation not found")
    if isinstance(principal, VisitorPrincipal):
        return _decide_visitor(conv, principal, command, facts, now)
    return _decide_agent(state, principal, command, facts, now)


def _decide_visitor(
    conv: Conversation, who: VisitorPrincipal, cmd: Any, facts: Facts, now: float
) -> Decision:
    ws, cid, me = conv.workspace_id, conv.id, who.visitor_id
    if isinstance(cmd, SendMessage):
        message = AppendRequest(
            workspace_id=ws,
            conversation_id=cid,
            author_type=AuthorType.VISITOR,
            author_id=me,
            kind=EventKind.MESSAGE,
            body=cmd.text,
            data=facts.message_data(cmd),
            client_msg_id=cmd.client_msg_id,
        )
        if conv.state != _CLOSED:  # the message path: no patch, no copy of the row
            return Decision(events=(message,), conv=conv, reply=ACK)
        # A visitor's message reopens a closed chat, unless it was an offline message or the
        # visitor has another open chat (one open chat per visitor).
        if conv.close_reason == CloseReason.OFFLINE:
            raise ConversationClosed("an offline message cannot be continued")
        open_id = facts.visitor_open_chat()
        if open_id is not None and open_id != cid:
            raise AlreadyOpen("the visitor has another open chat", field="conversation_id")
        reopen = AppendRequest(
            workspace_id=ws,
            conversation_id=cid,
            kind=EventKind.STATUS,
            author_type=AuthorType.SYSTEM,
            data={"state": "queued", "reopened": True},
            patch=ConversationPatch(
                state=_QUEUED,
                clear_close_reason=True,
                clear_closed_at=True,
                clear_assignee=True,
                participant_ids=(),
                previous_assignee_id=conv.assignee_id,
            ),
        )
        return Decision(
            events=(reopen, message), conv=apply(conv, reopen, now), reply=ACK, kind="reopened"
        )
    if isinstance(cmd, LeaveOfflineMessage):
        event = AppendRequest(
            workspace_id=ws,
            conversation_id=cid,
            author_type=AuthorType.VISITOR,
            author_id=me,
            kind=EventKind.OFFLINE_MESSAGE,
            body=cmd.text,
            data={"name": cmd.name, "email": cmd.email},
            client_msg_id=cmd.client_msg_id,
            patch=ConversationPatch(state=_CLOSED, close_reason=CloseReason.OFFLINE, closed_at=now),
        )
        return Decision(events=(event,), conv=apply(conv, event, now), reply=ACK, kind="closed")
    if isinstance(cmd, Rate):
        event = AppendRequest(
            workspace_id=ws,
            conversation_id=cid,
            author_type=AuthorType.VISITOR,
            author_id=me,
            kind=EventKind.RATING,
            data={"rating": cmd.rating, "comment": cmd.comment},
            visibility=Visibility.AGENTS,
            patch=ConversationPatch(rating=cmd.rating, rating_comment=cmd.comment),
        )
        return Decision(events=(event,), conv=apply(conv, event, now), reply=CONVERSATION)
    if isinstance(cmd, EndChat):
        if conv.state == _CLOSED:
            return Decision(events=(), conv=conv, reply=CONVERSATION)
        reason = CloseReason.ABANDONED if conv.state == _QUEUED else CloseReason.RESOLVED
        return _close(conv, reason, None, AuthorType.VISITOR, me, now)
    raise Forbidden(f"visitors may not {getattr(cmd, 'TYPE', '?')}")


def _decide_agent(
    state: ChatState, who: AgentPrincipal, cmd: Any, facts: Facts, now: float
) -> Decision:
    if isinstance(cmd, SendMessage | StartChat):  # the message path first
        return _agent_message(state, who, cmd, facts, now)
    conv = state.conv
    me = who.agent_id
    ws, cid = conv.workspace_id, conv.id
    participant = me in conv.participant_ids

    def by_me(kind: EventKind, **fields: Any) -> AppendRequest:
        return AppendRequest(
            workspace_id=ws,
            conversation_id=cid,
            kind=kind,
            author_type=AuthorType.AGENT,
            author_id=me,
            **fields,
        )

    def need_participant() -> None:
        if not (participant or who.is_supervisor):
            raise Forbidden("you are not in this chat")

    if isinstance(cmd, AddNote | Whisper):
        if isinstance(cmd, Whisper) and not who.is_supervisor:
            raise Forbidden("only supervisors whisper")
        need_participant()
        kind = EventKind.NOTE if isinstance(cmd, AddNote) else EventKind.WHISPER
        event = by_me(
            kind, visibility=Visibility.AGENTS, body=cmd.text, client_msg_id=cmd.client_msg_id
        )
        return Decision(events=(event,), conv=conv, reply=ACK)
    if conv.state == _CLOSED and not isinstance(cmd, Tag):
        raise ConversationClosed("the chat is closed")
    if isinstance(cmd, Accept):
        if conv.assignee_id == me:
            responded = me if state.waiting_for == me else None
            return Decision(events=(), conv=conv, reply=CONVERSATION, responded=responded)
        if conv.assignee_id is not None:
            raise AlreadyAssigned("another agent has this chat")
        facts.need_room(me, adds_active=True)
        return _assign(conv, facts, me, "manual_pick", {}, now)._replace(reply=CONVERSATION)
    if isinstance(cmd, Transfer):
        need_participant()
        return _transfer(conv, who, cmd, facts, now)
    if isinstance(cmd, Invite):
        need_participant()
        name = facts.agent_name(ws, cmd.agent_id)
        if cmd.agent_id in conv.participant_ids:
            return Decision(events=(), conv=conv, reply=CONVERSATION)
        event = AppendRequest(
            workspace_id=ws,
            conversation_id=cid,
            kind=EventKind.JOINED,
            author_type=AuthorType.AGENT,
            author_id=cmd.agent_id,
            data={"invited_by": me, "agent_name": name},
            patch=ConversationPatch(participant_ids=(*conv.participant_ids, cmd.agent_id)),
        )
        return Decision(
            events=(event,),
            conv=apply(conv, event, now),
            reply=CONVERSATION,
            kind="invited",
            assigned=cmd.agent_id,
        )
    if isinstance(cmd, Join):
        if cmd.silent:
            if not who.is_supervisor:
                raise Forbidden("only supervisors join silently")
            event = by_me(
                EventKind.JOINED,
                visibility=Visibility.AGENTS,
                data={"silent": True, "agent_name": who.display_name},
            )
            return Decision(events=(event,), conv=conv, reply=CONVERSATION, kind="silent_join")
        if participant:
            return Decision(events=(), conv=conv, reply=CONVERSATION)
        if conv.state == _QUEUED:
            raise InvalidState("take a queued chat with accept")
        event = by_me(
            EventKind.JOINED,
            data={"agent_name": who.display_name},
            patch=ConversationPatch(participant_ids=(*conv.participant_ids, me)),
        )
        return Decision(events=(event,), conv=apply(conv, event, now), reply=CONVERSATION)
    if isinstance(cmd, Leave):
        if not participant:
            raise InvalidState("you are not in this chat")
        rest = tuple(a for a in conv.participant_ids if a != me)
        if conv.assignee_id == me and not rest:
            return _requeue(conv, me, "assignee_left", now, reply=CONVERSATION)
        assigned: str | None = None
        unassigned: str | None = None
        if conv.assignee_id == me:
            patch = ConversationPatch(
                assignee_id=rest[0], participant_ids=rest, previous_assignee_id=me
            )
            assigned, unassigned = rest[0], me
        else:
            patch = ConversationPatch(participant_ids=rest)
        event = by_me(
            EventKind.LEFT,
            data={"agent_name": who.display_name, "assignee_id": patch.assignee_id},
            patch=patch,
        )
        return Decision(
            events=(event,),
            conv=apply(conv, event, now),
            reply=CONVERSATION,
            kind="left",
            assigned=assigned,
            unassigned=unassigned,
        )
    if isinstance(cmd, Close):
        need_participant()
        tags = tuple(dict.fromkeys((*conv.tags, *cmd.tags)))
        return _close(conv, CloseReason.RESOLVED, tags, AuthorType.AGENT, me, now)
    if isinstance(cmd, Tag):
        need_participant()
        tags = tuple(t for t in dict.fromkeys((*conv.tags, *cmd.add)) if t not in cmd.remove)
        event = by_me(
            EventKind.TAGGED,
            visibility=Visibility.AGENTS,
            data={"add": list(cmd.add), "remove": list(cmd.remove), "tags": list(tags)},
            patch=ConversationPatch(tags=tags),
        )
        return Decision(events=(event,), conv=apply(conv, event, now), reply=CONVERSATION)
    raise Forbidden(f"not a conversation command: {getattr(cmd, 'TYPE', '?')}")


def _agent_message(
    state: ChatState, who: AgentPrincipal, cmd: SendMessage | StartChat, facts: Facts, now: float
) -> Decision:
    """An agent's message; a ``StartChat`` first assigns the chat to its sender (proactive)."""
    conv = state.conv
    me = who.agent_id
    message = AppendRequest(
        workspace_id=conv.workspace_id,
        conversation_id=conv.id,
        kind=EventKind.MESSAGE,
        author_type=AuthorType.AGENT,
        author_id=me,
        body=cmd.text,
        data=facts.message_data(cmd),
        client_msg_id=cmd.client_msg_id,
    )
    start: Decision | None = None
    if isinstance(cmd, StartChat):
        if conv.state != _QUEUED or conv.last_seq or conv.assignee_id:
            if conv.origin_key != start_chat_origin(conv.visitor_id, me, cmd.client_msg_id):
                raise InvalidState("the chat has already started")
            # A retry of the start that opened this chat: storage answers the original
            # message (a duplicate), whatever happened to the chat since.
            return Decision(events=(message,), conv=conv, reply=ACK)
        # ``invitation``: the visitor's widget shows the agent's name and message as one.
        start = _assign(conv, facts, me, "proactive", {"invitation": True}, now)
        conv = start.conv
    elif not (me in conv.participant_ids or who.is_supervisor):
        raise Forbidden("you are not in this chat")
    if conv.state == _CLOSED:
        raise ConversationClosed("the chat is closed")
    if conv.first_response_at is None and me in conv.participant_ids:
        message = attrs.evolve(message, patch=ConversationPatch(first_response_at=now))
        conv = apply(conv, message, now)
    responded = me if state.waiting_for == me else None
    if start is None:
        return Decision(events=(message,), conv=conv, reply=ACK, responded=responded)
    return start._replace(
        events=(*start.events, message), conv=conv, reply=ACK, responded=responded
    )


# ---------------------------------------------------------------- rules several commands share


def _assign(
    conv: Conversation,
    facts: Facts,
    agent_id: str,
    reason: str,
    details: Mapping[str, Any],
    now: float,
) -> Decision:
    name = facts.agent_name(conv.workspace_id, agent_id)
    others = tuple(a for a in conv.participant_ids if a != agent_id)
    event = AppendRequest(
        workspace_id=conv.workspace_id,
        conversation_id=conv.id,
        kind=EventKind.ASSIGNED,
        author_type=AuthorType.SYSTEM,
        author_id=agent_id,
        data={"agent_id": agent_id, "agent_name": name, "reason": reason, **details},
        patch=ConversationPatch(
            state=_ACTIVE, assignee_id=agent_id, participant_ids=(agent_id, *others)
        ),
    )
    return Decision(events=(event,), conv=apply(conv, event, now), kind=reason, assigned=agent_id)


def _requeue(
    conv: Conversation, agent_id: str, reason: str, now: float, *, reply: str | None
) -> Decision:
    event = AppendRequest(
        workspace_id=conv.workspace_id,
        conversation_id=conv.id,
        kind=EventKind.STATUS,
        author_type=AuthorType.SYSTEM,
        data={"state": "queued", "reason": reason, "from_agent_id": agent_id},
        patch=ConversationPatch(
            state=_QUEUED,
            clear_assignee=True,
            participant_ids=tuple(a for a in conv.participant_ids if a != agent_id),
            previous_assignee_id=agent_id,
        ),
    )
    return Decision(
        events=(event,),
        conv=apply(conv, event, now),
        reply=reply,
        kind=reason,
        unassigned=agent_id,
    )


def _close(
    conv: Conversation,
    reason: CloseReason,
    tags: tuple[str, ...] | None,
    author_type: AuthorType,
    author_id: str | None,
    now: float,
) -> Decision:
    event = AppendRequest(
        workspace_id=conv.workspace_id,
        conversation_id=conv.id,
        kind=EventKind.STATUS,
        author_type=author_type,
        author_id=author_id,
        data={"state": "closed", "reason": str(reason)},
        patch=ConversationPatch(state=_CLOSED, close_reason=reason, closed_at=now, tags=tags),
    )
    return Decision(
        events=(event,),
        conv=apply(conv, event, now),
        reply=CONVERSATION,
        kind="closed",
        unassigned=conv.assignee_id,
    )


def _trigger(conv: Conversation, cmd: RouterTrigger, facts: Facts, now: float) -> Decision:
    """The trigger's action, then a note telling agents which trigger did it."""
    about = {"trigger_id": cmd.trigger_id, "trigger": cmd.name, "action": cmd.action}

    def system(kind: EventKind, **fields: Any) -> AppendRequest:
        return AppendRequest(
            workspace_id=conv.workspace_id,
            conversation_id=conv.id,
            kind=kind,
            author_type=AuthorType.SYSTEM,
            **fields,
        )

    action: AppendRequest | None
    if cmd.action == "auto_reply":
        action = system(EventKind.MESSAGE, body=cmd.text or "", data=dict(about))
    elif cmd.action in ("greeting", "invitation"):
        data = {**about, "greeting": True, "sender_name": cmd.sender_name}
        action = system(EventKind.MESSAGE, body=cmd.text or "", data=data)
    elif cmd.action == "assign_group" and cmd.to_group_id == conv.group_id:
        action = None  # the chat was opened in that group (a page_view trigger): the note only
    elif cmd.action == "add_tag":
        tags = tuple(dict.fromkeys((*conv.tags, cmd.tag or "")))
        action = system(
            EventKind.TAGGED,
            visibility=Visibility.AGENTS,
            data={"add": [cmd.tag], "remove": [], "tags": list(tags), **about},
            patch=ConversationPatch(tags=tags),
        )
    else:
        assert cmd.to_group_id is not None
        group_name = facts.group_name(cmd.to_group_id)
        action = system(
            EventKind.TRANSFERRED,
            data={"to_group_id": cmd.to_group_id, "group_name": group_name, **about},
            patch=ConversationPatch(group_id=cmd.to_group_id),
        )
    note = system(
        EventKind.NOTE,
        visibility=Visibility.AGENTS,
        body=f"Trigger \u201c{cmd.name}\u201d fired: {cmd.action.replace('_', ' ')}",
        data=about,
    )
    if action is None:
        return Decision(events=(note,), conv=apply(conv, note, now), kind="trigger")
    after = apply(conv, action, now)
    return Decision(events=(action, note), conv=after, kind="trigger")


def _transfer(
    conv: Conversation, who: AgentPrincipal, cmd: Transfer, facts: Facts, now: float
) -> Decision:
    me = who.agent_id
    data: dict[str, Any] = {"from_agent_id": conv.assignee_id, "by": me, "reason": cmd.reason}
    assigned = None
    if cmd.to_agent_id is not None:
        name = facts.agent_name(conv.workspace_id, cmd.to_agent_id)
        if cmd.to_agent_id != conv.assignee_id:
            facts.need_room(cmd.to_agent_id, adds_active=conv.state != _ACTIVE)
        rest = tuple(
            a for a in conv.participant_ids if a not in (cmd.to_agent_id, conv.assignee_id)
        )
        patch = ConversationPatch(
            state=_ACTIVE,
            assignee_id=cmd.to_agent_id,
            participant_ids=(cmd.to_agent_id, *rest),
            previous_assignee_id=conv.assignee_id,
        )
        data.update(to_agent_id=cmd.to_agent_id, agent_name=name)
        assigned = cmd.to_agent_id
    else:
        assert cmd.to_group_id is not None
        group_name = facts.group_name(cmd.to_group_id)
        patch = ConversationPatch(
            state=_QUEUED,
            clear_assignee=True,
            participant_ids=(),
            group_id=cmd.to_group_id,
            previous_assignee_id=conv.assignee_id,
        )
        data.update(to_group_id=cmd.to_group_id, group_name=group_name)
    event = AppendRequest(
        workspace_id=conv.workspace_id,
        conversation_id=conv.id,
        kind=EventKind.TRANSFERRED,
        author_type=AuthorType.AGENT,
        author_id=me,
        data=data,
        patch=patch,
    )
    return Decision(
        events=(event,),
        conv=apply(conv, event, now),
        reply=CONVERSATION,
        kind="transfer",
        assigned=assigned,
        unassigned=conv.assignee_id,
    )
