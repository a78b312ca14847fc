"""Properties of the pure conversation core over random command sequences (hypothesis).

The rules (``engine.conversation_rules.decide``) run against a model of storage that numbers
events as the real one does (``last_seq + 1`` per conversation inside the commit, a repeated
``client_msg_id`` answered with the original event and its patch not applied again). Commands
come in random batches, decided in order against the tentative state as the actor does. After
every batch: the sequence is gapless and the actor's row is storage's row; agents-only events
never reach a visitor; a chat has at most one assignee and the invariants hold; every state
change is an edge of the transition table, and no rule ever plans one outside it.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.api import AgentPrincipal, Principal, VisitorPrincipal, start_chat_origin
from engine.conversation_rules import (
    Decision,
    Facts,
    MissingFact,
    RouterAssign,
    RouterClose,
    RouterRequeue,
    decide,
    settle_waiting,
)
from engine.conversation_state import (
    TRANSITIONS,
    ChatState,
    apply,
    apply_patch,
    check_transition,
    violations,
)
from engine.conversation_views import view
from engine.errors import DomainError, IllegalTransition, NotFound
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
from engine.visibility import for_visitor_event
from storage.api import (
    AppendRequest,
    AuthorType,
    CloseReason,
    Conversation,
    ConversationPatch,
    ConversationState,
    Event,
    EventKind,
    Role,
    Visibility,
)

WS, CID, VID = "w1", "c1", "v1"
NAMES = {"ann": "Ann", "bob": "Bob", "sue": "Sue"}  # "ghost" is nobody
GROUPS: dict[str, str | None] = {"sales": "Sales", "gone": None}
START_ID = "start-1"

VISITOR = VisitorPrincipal(workspace_id=WS, visitor_id=VID)
STRANGER = VisitorPrincipal(workspace_id=WS, visitor_id="v2")
AGENTS = {
    "ann": AgentPrincipal(workspace_id=WS, agent_id="ann", role=Role.AGENT, display_name="Ann"),
    "bob": AgentPrincipal(workspace_id=WS, agent_id="bob", role=Role.AGENT, display_name="Bob"),
    "sue": AgentPrincipal(
        workspace_id=WS, agent_id="sue", role=Role.SUPERVISOR, display_name="Sue"
    ),
}
OUTSIDER = AgentPrincipal(workspace_id="w2", agent_id="ann", role=Role.OWNER, display_name="Ann")
AGENTS_ONLY = {EventKind.NOTE, EventKind.WHISPER, EventKind.RATING, EventKind.TAGGED}

# Mostly fresh ids, some retries (a repeated id), and the id of the start that opened the chat.
msg_ids = st.one_of(st.integers(1, 60).map("m{}".format), st.just(START_ID))
agent_ids = st.sampled_from(["ann", "bob", "sue", "ghost"])
agents = st.sampled_from(sorted(AGENTS))
tags = st.lists(st.sampled_from(["vip", "bug", "billing"]), max_size=2).map(tuple)


def _visitor_commands(*, offline: bool) -> st.SearchStrategy[tuple[Principal, Any]]:
    who = st.sampled_from([VISITOR, VISITOR, VISITOR, STRANGER])
    message = st.builds(
        SendMessage, conversation_id=st.just(CID), client_msg_id=msg_ids, text=st.just("hi")
    )
    cmd = st.one_of(
        message,
        message,
        message,
        st.builds(Rate, conversation_id=st.just(CID), rating=st.integers(1, 5)),
        st.builds(EndChat, conversation_id=st.just(CID)),
        st.just(Accept(conversation_id=CID)),  # forbidden to visitors
    )
    if offline:
        cmd = st.one_of(
            cmd,
            st.builds(
                LeaveOfflineMessage,
                client_msg_id=msg_ids,
                text=st.just("call me"),
                email=st.just("v@example.com"),
            ),
        )
    return st.tuples(who, cmd)


def _agent_commands() -> st.SearchStrategy[tuple[Principal, Any]]:
    who = st.one_of(agents.map(AGENTS.__getitem__), st.just(OUTSIDER))
    cid = st.just(CID)
    message = st.builds(
        SendMessage, conversation_id=cid, client_msg_id=msg_ids, text=st.just("hello")
    )
    cmd = st.one_of(
        message,
        message,
        st.builds(Accept, conversation_id=cid),
        st.builds(StartChat, visitor_id=st.just(VID), client_msg_id=msg_ids, text=st.just("hey")),
        st.builds(AddNote, conversation_id=cid, client_msg_id=msg_ids, text=st.just("note")),
        st.builds(Whisper, conversation_id=cid, client_msg_id=msg_ids, text=st.just("psst")),
        st.builds(Accept, conversation_id=cid),
        st.builds(Transfer, conversation_id=cid, to_agent_id=agent_ids),
        st.builds(Transfer, conversation_id=cid, to_group_id=st.sampled_from(sorted(GROUPS))),
        st.builds(Invite, conversation_id=cid, agent_id=agent_ids),
        st.builds(Join, conversation_id=cid, silent=st.booleans()),
        st.builds(Leave, conversation_id=cid),
        st.builds(Close, conversation_id=cid, tags=tags),
        st.builds(Tag, conversation_id=cid, add=tags, remove=tags),
    )
    return st.tuples(who, cmd)


def _router_commands() -> st.SearchStrategy[tuple[Principal | None, Any]]:
    reasons = st.sampled_from(["least_busy", "sticky", "manual_pick"])
    cmd = st.one_of(
        st.builds(RouterAssign, agent_id=agent_ids, reason=reasons),
        st.builds(RouterAssign, agent_id=agent_ids, reason=reasons),
        st.builds(RouterRequeue, agent_id=agent_ids, reason=st.just("no_response")),
        st.just(RouterClose(reason=CloseReason.MISSED)),
    )
    return st.tuples(st.none(), cmd)


commands = st.one_of(
    _visitor_commands(offline=False),
    _visitor_commands(offline=True),  # an offline message is rare: it ends the chat for good
    _agent_commands(),
    _agent_commands(),
    _router_commands(),
)
batches = st.lists(st.lists(commands, min_size=1, max_size=4), min_size=1, max_size=12)


@attrs.define
class Model:
    """Storage as the rules rely on it, and the actor's view of the chat."""

    row: Conversation
    state: ChatState
    events: list[Event] = attrs.field(factory=list)
    by_msg_id: dict[str, Event] = attrs.field(factory=dict)
    clock: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1_000))

    def commit(self, requests: list[AppendRequest], now: float) -> list[tuple[Event, bool]]:
        results = []
        for req in requests:
            original = self.by_msg_id.get(req.client_msg_id or "")
            if original is not None:
                results.append((original, True))
                continue
            before = self.row.state
            row = apply_patch(self.row, req.patch, now)
            assert row.state in TRANSITIONS[before], f"{before} -> {row.state} by {req.kind}"
            event = Event(
                workspace_id=req.workspace_id,
                conversation_id=req.conversation_id,
                seq=len(self.events) + 1,
                kind=req.kind,
                visibility=req.visibility,
                author_type=req.author_type,
                author_id=req.author_id,
                body=req.body,
                data=req.data,
                client_msg_id=req.client_msg_id,
                created_at=now,
            )
            self.row = attrs.evolve(row, last_seq=event.seq, last_activity_at=now)
            self.events.append(event)
            if req.client_msg_id:
                self.by_msg_id[req.client_msg_id] = event
            results.append((event, False))
        return results


def _facts(open_chat: str | None) -> Facts:
    return Facts({(WS, a): n for a, n in NAMES.items()}, open_chat=open_chat)


def _decide(model: Model, principal: Principal | None, cmd: Any, facts: Facts, now: float) -> Any:
    """Decide as the actor does: look up what the rules ask for, then decide again."""
    for _ in range(4):
        try:
            return decide(model.state, cmd, principal=principal, facts=facts, now=now)
        except MissingFact as need:
            if need.what == "agent":
                facts.agents[need.key] = NAMES.get(need.key)
            elif need.what == "group":
                facts.groups[need.key] = GROUPS.get(need.key)
            elif need.what == "room":
                facts.rooms[need.key] = None  # capacity: tests/engine/test_capacity.py
            else:
                pytest.fail("open_chat is always known in these tests")
        except IllegalTransition:
            raise  # a rule planned a move outside the table: the property fails
        except DomainError as exc:
            return exc
    pytest.fail("the rules keep asking for facts")


def _check(model: Model) -> None:
    conv = model.state.conv
    # Gapless: storage numbered 1..n, and the actor knows n.
    assert [e.seq for e in model.events] == list(range(1, len(model.events) + 1))
    assert conv.last_seq == model.row.last_seq == len(model.events)
    # The actor's row is storage's row.
    for name in ("state", "assignee_id", "participant_ids", "close_reason", "tags", "group_id"):
        assert getattr(conv, name) == getattr(model.row, name), name
    # One assignee, and the other invariants.
    assert violations(conv) == []
    if conv.state == ConversationState.ACTIVE:
        assert conv.assignee_id is not None and conv.participant_ids.count(conv.assignee_id) == 1
    # Visibility: agents-only events never reach a visitor; messages always do.
    for event in model.events:
        shown = for_visitor_event(view(event, None))
        silent = event.kind == EventKind.JOINED and event.data.get("silent")
        if event.kind in AGENTS_ONLY or silent:
            assert event.visibility == Visibility.AGENTS and shown is None, event
        if event.kind == EventKind.MESSAGE:
            assert event.visibility == Visibility.ALL and shown is not None, event


def _run(
    batches: list[list[tuple[Principal | None, Any]]], open_chat: str | None, origin: bool
) -> Model:
    conv = Conversation(
        id=CID,
        workspace_id=WS,
        visitor_id=VID,
        origin_key=start_chat_origin(VID, "ann", START_ID) if origin else None,
    )
    model = Model(row=conv, state=ChatState(conv=conv))
    for batch in batches:
        now = float(next(model.clock))
        facts = _facts(open_chat)
        before = model.state
        accepted: list[Decision] = []
        for principal, cmd in batch:
            tentative = model.state
            outcome = _decide(model, principal, cmd, facts, now)
            if isinstance(outcome, DomainError):
                assert model.state is tentative  # a refused command changes nothing
                if principal in (STRANGER, OUTSIDER):
                    assert isinstance(outcome, NotFound)
                continue
            assert principal not in (STRANGER, OUTSIDER), "another's chat is invisible"
            model.state = ChatState(conv=outcome.conv, waiting_for=before.waiting_for)
            if outcome.events:
                accepted.append(outcome)
        requests = [r for d in accepted for r in d.events]
        results = model.commit(requests, now)
        fresh = [event for event, duplicate in results if not duplicate]
        conv = model.state.conv
        if fresh:
            conv = attrs.evolve(conv, last_seq=max(before.conv.last_seq, fresh[-1].seq))
        if any(
            dup and req.patch is not None for (_, dup), req in zip(results, requests, strict=True)
        ):
            conv = model.row  # the actor reloads the row after a retried command
        model.state = ChatState(conv=conv, waiting_for=settle_waiting(before.waiting_for, accepted))
        _check(model)
    return model


@settings(max_examples=300, deadline=None)
@given(batches=batches, open_chat=st.sampled_from([None, CID, "c-other"]), origin=st.booleans())
def test_random_command_sequences_keep_the_invariants(
    batches: list[list[tuple[Principal | None, Any]]], open_chat: str | None, origin: bool
) -> None:
    _run(batches, open_chat, origin)


@settings(max_examples=100, deadline=None)
@given(batches=batches)
def test_deciding_twice_gives_the_same_decision(
    batches: list[list[tuple[Principal | None, Any]]],
) -> None:
    """``decide`` is pure: the actor may decide a command again (refusal isolation)."""
    model = _run(batches[:-1], None, True)
    for principal, cmd in batches[-1]:
        first = _decide(model, principal, cmd, _facts(None), 5.0)
        second = _decide(model, principal, cmd, _facts(None), 5.0)
        assert type(first) is type(second)
        if isinstance(first, Decision):
            assert first == second


def test_the_transition_table_refuses_every_other_edge() -> None:
    for source in ConversationState:
        for target in ConversationState:
            if target in TRANSITIONS[source]:
                check_transition(source, target)
            else:
                with pytest.raises(IllegalTransition) as info:
                    check_transition(source, target)
                assert info.value.code == "invalid_state"
    assert ConversationState.ACTIVE not in TRANSITIONS[ConversationState.CLOSED]


def test_apply_refuses_an_event_that_would_break_an_invariant() -> None:
    closed = Conversation(
        id=CID,
        workspace_id=WS,
        visitor_id=VID,
        state=ConversationState.CLOSED,
        close_reason=CloseReason.RESOLVED,
        closed_at=1.0,
    )
    base = {"workspace_id": WS, "conversation_id": CID, "author_type": AuthorType.SYSTEM}
    reopen_active = AppendRequest(
        **base,
        kind=EventKind.ASSIGNED,
        patch=ConversationPatch(
            state=ConversationState.ACTIVE, assignee_id="ann", participant_ids=("ann",)
        ),
    )
    with pytest.raises(IllegalTransition):
        apply(closed, reopen_active, 2.0)
    queued = Conversation(id=CID, workspace_id=WS, visitor_id=VID)
    two_assignees = AppendRequest(
        **base,
        kind=EventKind.JOINED,
        patch=ConversationPatch(assignee_id="ann", participant_ids=("bob", "ann")),
    )
    with pytest.raises(IllegalTransition, match="queued chat has an assignee"):
        apply(queued, two_assignees, 2.0)
