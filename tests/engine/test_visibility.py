"""What a visitor may see: one rule (engine.visibility), every event kind and push type, and the
live, replay and history paths that use it."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from engine.messages import (
    PUSH_TYPES,
    AddNote,
    ConversationResult,
    ConversationSummary,
    EndChat,
    EventPush,
    EventView,
    GetHistory,
    MessageAck,
    SendMessage,
    Tag,
    Transfer,
    Whisper,
)
from engine.visibility import (
    VISITOR_EVENT_DATA,
    VISITOR_PUSHES,
    for_visitor_event,
    for_visitor_push,
    for_visitor_result,
)
from storage.api import EventKind, Role
from tests.engine.conftest import World, wait_until

# Every ``data`` key the engine writes today, per kind, with the ones a visitor must not get.
_AGENT_ONLY: dict[EventKind, set[str]] = {
    EventKind.MESSAGE: set(),
    EventKind.NOTE: set(),
    EventKind.WHISPER: set(),
    EventKind.ASSIGNED: {"reason", "load", "candidates", "group_id", "by"},
    EventKind.TRANSFERRED: {"reason", "by", "from_agent_id"},
    EventKind.JOINED: {"invited_by", "silent"},
    EventKind.LEFT: {"assignee_id"},
    EventKind.STATUS: {"reason", "from_agent_id"},
    EventKind.RATING: set(),
    EventKind.TAGGED: set(),
    EventKind.OFFLINE_MESSAGE: set(),
}
_HIDDEN_KINDS = {EventKind.NOTE, EventKind.WHISPER, EventKind.RATING, EventKind.TAGGED}


def _event(kind: str, data: dict[str, Any], visibility: str = "all") -> EventView:
    return EventView(
        conversation_id="c1",
        seq=1,
        kind=kind,
        visibility=visibility,
        author_type="agent",
        author_id="a1",
        author_name="Ann",
        body="text",
        data=data,
    )


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_kind_has_a_visitor_rule(kind: EventKind) -> None:
    """A new kind must get an explicit rule (and a line in ``_AGENT_ONLY`` here)."""
    assert kind in VISITOR_EVENT_DATA, f"no visitor rule for {kind}"
    assert kind in _AGENT_ONLY, f"say which data of {kind} is agent-only"


@pytest.mark.parametrize("kind", list(EventKind))
def test_visitor_sees_only_allowed_kinds_and_data(kind: EventKind) -> None:
    secret = dict.fromkeys(_AGENT_ONLY[kind], "internal")
    public = dict.fromkeys(VISITOR_EVENT_DATA[kind] or (), "ok")
    seen = for_visitor_event(_event(str(kind), {**secret, **public}))
    if kind in _HIDDEN_KINDS:
        assert seen is None
        return
    assert seen is not None
    assert dict(seen.data) == public
    # Whatever the kind, an event stored for agents only never reaches a visitor.
    assert for_visitor_event(_event(str(kind), public, visibility="agents")) is None


def test_an_unknown_event_kind_is_hidden_from_visitors() -> None:
    assert for_visitor_event(_event("brand_new_kind", {})) is None


@pytest.mark.parametrize("push_type", PUSH_TYPES, ids=lambda t: t.__name__)
def test_every_push_type_has_a_visitor_rule(push_type: type) -> None:
    assert push_type in VISITOR_PUSHES, f"no visitor rule for {push_type.__name__}"


def test_an_unknown_push_type_is_not_sent_to_visitors() -> None:
    @attrs.frozen
    class NewPush:
        secret: str

    assert for_visitor_push(NewPush(secret="x")) is None


def test_visitor_summary_has_no_tags_or_group() -> None:
    summary = ConversationSummary(
        conversation_id="c1",
        visitor_id="v1",
        visitor_name=None,
        state="active",
        close_reason=None,
        group_id="g-vip",
        assignee_id="a1",
        assignee_name="Ann",
        participant_ids=("a1",),
        tags=("angry", "refund"),
        last_seq=3,
        last_message_preview="hi",
        last_message_author_type="visitor",
        awaiting_agent=True,
        created_at=0.0,
        last_activity_at=0.0,
    )
    safe = for_visitor_result(ConversationResult(conversation=summary, seq=3)).conversation
    assert safe.tags == () and safe.group_id is None
    assert safe.assignee_name == "Ann"


async def test_visitor_socket_and_history_carry_no_agent_only_data(world: World) -> None:
    """Routing details, a transfer reason, tags and notes stay with the agents: live, on resume
    and in the visitor's history, while the agents still see all of them."""
    ann_p = await world.agent("ann", role=Role.SUPERVISOR)
    ann = await world.connect(ann_p)
    v_p = await world.visitor()
    v = await world.connect(v_p)
    ack = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hi"))
    assert isinstance(ack, MessageAck)
    cid = ack.conversation_id

    async def assigned() -> bool:
        conv = await world.storage.get_conversation(world.workspace_id, cid)
        return conv is not None and conv.assignee_id == ann_p.agent_id

    await wait_until(assigned, what="assigned to ann")
    bob_p = await world.agent("bob")
    await world.connect(bob_p)
    req = world.engine.request
    await req(ann.conn, AddNote(conversation_id=cid, client_msg_id="n1", text="note: VIP"))
    await req(ann.conn, Whisper(conversation_id=cid, client_msg_id="w1", text="whisper"))
    await req(ann.conn, Tag(conversation_id=cid, add=("angry",)))
    await req(
        ann.conn,
        Transfer(conversation_id=cid, to_agent_id=bob_p.agent_id, reason="customer is rude"),
    )
    history_a = await req(ann.conn, GetHistory(conversation_id=cid))
    last = history_a.events[-1].seq
    assert {"note", "whisper", "tagged"} <= {e.kind for e in history_a.events}
    assigned_a = next(e for e in history_a.events if e.kind == "assigned")
    assert {"load", "candidates"} <= set(assigned_a.data)
    transferred_a = next(e for e in history_a.events if e.kind == "transferred")
    assert transferred_a.data["reason"] == "customer is rude"

    def assert_clean(events: list[EventView]) -> None:
        assert events, "the visitor saw nothing"
        for e in events:
            assert e.kind not in ("note", "whisper", "tagged", "rating"), e
            assert "customer is rude" not in repr(e), e
            assert not {"reason", "load", "candidates", "by", "from_agent_id"} & set(e.data), e
        kinds = {e.kind for e in events}
        assert {"message", "assigned", "transferred"} <= kinds

    live: list[EventView] = []

    def got_everything() -> bool:
        live.extend(p.event for p in v.drain() if isinstance(p, EventPush))
        return any(e.seq == last or e.kind == "transferred" for e in live)

    await wait_until(got_everything, what="the visitor got the transfer")
    assert_clean(live)
    history_v = await req(v.conn, GetHistory(conversation_id=cid))
    assert_clean(list(history_v.events))
    resumed = await world.connect(v_p, resume={cid: 0})
    replayed: list[EventView] = []

    def replay_done() -> bool:
        replayed.extend(resumed.events())
        return any(e.kind == "transferred" for e in replayed)

    await wait_until(replay_done, what="the resumed visitor got the transfer")
    assert_clean(replayed)
    ended = await req(v.conn, EndChat(conversation_id=cid))
    assert isinstance(ended, ConversationResult)
    assert ended.conversation.tags == ()
