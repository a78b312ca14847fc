"""One test per chat rule, on a real SQLite storage."""

from __future__ import annotations

import pytest
import trio

from engine.errors import AlreadyAssigned, Forbidden, NotFound, RateLimited
from engine.messages import (
    Accept,
    AddNote,
    ChatAssigned,
    Close,
    ConversationResult,
    GetHistory,
    GetRoutingLog,
    Join,
    LeaveOfflineMessage,
    MessageAck,
    QueuePosition,
    ResyncRequired,
    SendMessage,
    SetStatus,
    SettableStatus,
    Transfer,
    Watch,
    Whisper,
)
from storage.api import Role
from tests.engine.conftest import Client, World, wait_until


async def _chat(world: World, visitor, text: str = "hi", mid: str = "m1") -> str:
    ack = await world.engine.request(visitor.conn, SendMessage(client_msg_id=mid, text=text))
    assert isinstance(ack, MessageAck)
    return ack.conversation_id


async def _assigned(world: World, cid: str, agent_id: str) -> None:
    """Wait (generously, on the wall clock) until the conversation is assigned to the agent."""

    async def check() -> bool:
        conv = await world.storage.get_conversation(world.workspace_id, cid)
        return conv is not None and conv.assignee_id == agent_id

    await wait_until(check, what=f"{cid} assigned to {agent_id}")


class Seen:
    """Everything pushed to a client so far (``Client.drain`` consumes the inbox)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.pushes: list[object] = []

    def update(self) -> Seen:
        self.pushes.extend(self.client.drain())
        return self

    def events(self) -> list[object]:
        return self.update().client.events(self.pushes)


async def test_idempotent_retry_returns_the_original_ack(world: World) -> None:
    v = await world.connect(await world.visitor())
    first = await world.engine.request(v.conn, SendMessage(client_msg_id="x", text="hello"))
    again = await world.engine.request(
        v.conn, SendMessage(conversation_id=first.conversation_id, client_msg_id="x", text="hello")
    )
    assert isinstance(first, MessageAck) and isinstance(again, MessageAck)
    assert (again.seq, again.duplicate, first.duplicate) == (first.seq, True, False)


@pytest.mark.parametrize("workspace_settings", [{"routing": {"mode": "manual"}}])
async def test_two_agents_accept_at_once_one_wins(world: World) -> None:
    a1 = await world.connect(await world.agent("ann"))
    a2 = await world.connect(await world.agent("bob"))
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    outcomes: list[object] = []

    async def take(client) -> None:
        try:
            outcomes.append(await world.engine.request(client.conn, Accept(conversation_id=cid)))
        except AlreadyAssigned as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as n:
        n.start_soon(take, a1)
        n.start_soon(take, a2)
    assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyAssigned", "ConversationResult"]
    assert next(o for o in outcomes if isinstance(o, AlreadyAssigned)).code == "already_assigned"


async def test_concurrent_sends_produce_one_gapless_order_every_observer_sees(world: World) -> None:
    ann_p = await world.agent("ann")
    bob_p = await world.agent("bob", role=Role.SUPERVISOR)
    ann = await world.connect(ann_p, outbox_size=5000)
    v = await world.connect(await world.visitor(), outbox_size=5000)
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    bob = await world.connect(bob_p, outbox_size=5000)
    await world.engine.request(bob.conn, Watch(conversation_id=cid, after_seq=0))
    for c in (ann, bob, v):
        c.drain()
    world.engine._messages._rate = 1e9  # this test is about ordering, not the visitor rate limit
    world.engine._messages._burst = 1e9
    world.engine._messages._buckets.clear()

    async def send(client, prefix: str, n: int) -> None:
        async with trio.open_nursery() as inner:
            for i in range(n):
                inner.start_soon(
                    world.engine.request,
                    client.conn,
                    SendMessage(
                        conversation_id=cid, client_msg_id=f"{prefix}{i}", text=f"{prefix}{i}"
                    ),
                )

    async with trio.open_nursery() as n:
        n.start_soon(send, v, "v", 334)
        n.start_soon(send, ann, "a", 333)
        n.start_soon(send, bob, "b", 333)
    observers = [Seen(c) for c in (ann, bob, v)]

    def messages() -> list[list[int]]:
        return [[e.seq for e in o.events() if e.kind == "message"] for o in observers]

    # One last message, sent after every other was acknowledged, comes after all of them in
    # the conversation's order: once each observer has it, nothing else is still on its way.
    last = await world.engine.request(
        v.conn, SendMessage(conversation_id=cid, client_msg_id="last", text="last")
    )
    await wait_until(
        lambda: all(last.seq in m for m in messages()), what="every observer got the last one"
    )
    seen = messages()
    assert len(seen[0]) == 1001
    assert seen[0] == seen[1] == seen[2]
    assert seen[0] == list(range(seen[0][0], seen[0][0] + 1001))
    assert seen[0][-1] == last.seq


async def test_notes_and_whispers_never_reach_the_visitor(world: World) -> None:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    sup = await world.connect(await world.agent("sue", role=Role.SUPERVISOR))
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    await world.engine.request(sup.conn, Join(conversation_id=cid, silent=True))
    await world.engine.request(
        ann.conn, AddNote(conversation_id=cid, client_msg_id="n", text="vip")
    )
    await world.engine.request(
        sup.conn, Whisper(conversation_id=cid, client_msg_id="w", text="psst")
    )
    await world.engine.request(
        ann.conn, SendMessage(conversation_id=cid, client_msg_id="r", text="hey")
    )
    v_seen, ann_seen = Seen(v), Seen(ann)
    # "hey" is ordered after the note and the whisper: once it arrived, they would have too.
    await wait_until(
        lambda: any(e.kind == "message" and e.body == "hey" for e in v_seen.events()),
        what="the visitor got the agent's reply",
    )
    await wait_until(
        lambda: {"note", "whisper"} <= {e.kind for e in ann_seen.events()},
        what="the agent got the note and the whisper",
    )
    kinds = {e.kind for e in v_seen.events()}
    assert "message" in kinds and not kinds & {"note", "whisper", "joined"}
    assert {"note", "whisper"} <= {e.kind for e in ann_seen.events()}
    history = await world.engine.request(v.conn, GetHistory(conversation_id=cid))
    assert all(e.visibility == "all" for e in history.events)
    with pytest.raises(Forbidden):
        await world.engine.request(
            ann.conn, Whisper(conversation_id=cid, client_msg_id="w2", text="x")
        )


async def test_visitor_cannot_touch_a_foreign_conversation(world: World) -> None:
    v1 = await world.connect(await world.visitor())
    v2 = await world.connect(await world.visitor())
    cid = await _chat(world, v1)
    with pytest.raises(NotFound):
        await world.engine.request(
            v2.conn, SendMessage(conversation_id=cid, client_msg_id="z", text="x")
        )
    with pytest.raises(NotFound):
        await world.engine.request(v2.conn, GetHistory(conversation_id=cid))


async def test_transfer_keeps_history_and_notifies_both_agents(world: World) -> None:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    bob_p = await world.agent("bob")
    bob = await world.connect(bob_p)
    ann.drain()
    result = await world.engine.request(
        ann.conn, Transfer(conversation_id=cid, to_agent_id=bob_p.agent_id, reason="billing")
    )
    assert isinstance(result, ConversationResult)
    assert result.conversation.assignee_id == bob_p.agent_id
    ann_seen, bob_seen = Seen(ann), Seen(bob)
    await wait_until(
        lambda: any(e.kind == "transferred" for e in ann_seen.events()),
        what="ann notified of the transfer",
    )
    await wait_until(
        lambda: any(
            isinstance(p, ChatAssigned) and p.conversation.conversation_id == cid
            for p in bob_seen.update().pushes
        ),
        what="bob notified of the assignment",
    )
    history = await world.engine.request(bob.conn, GetHistory(conversation_id=cid))
    assert [e.body for e in history.events if e.kind == "message"] == ["hi"]


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"agent_response_timeout_s": 30.0}])
async def test_reroute_when_agent_does_not_respond(world: World) -> None:
    assert world.time is not None
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    bob_p = await world.agent("bob")
    await world.connect(bob_p)
    world.time.advance(29.9)  # just short of the response timeout: still Ann's
    await world.tick()
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.assignee_id == ann_p.agent_id
    world.time.advance(0.2)
    await world.tick()
    await _assigned(world, cid, bob_p.agent_id)
    log = await world.engine.request(ann.conn, GetRoutingLog(conversation_id=cid))
    reasons = [d.reason for d in log.decisions]
    assert "no_response" in reasons


@pytest.mark.parametrize("engine_clock", ["manual"])
@pytest.mark.parametrize("engine_config", [{"disconnect_grace_s": 50.0}])
async def test_reroute_when_agent_disconnects_past_grace(world: World) -> None:
    assert world.time is not None
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    await world.engine.request(
        ann.conn, SendMessage(conversation_id=cid, client_msg_id="a", text="hi")
    )
    bob_p = await world.agent("bob")
    await world.connect(bob_p)
    await world.engine.disconnect(ann.conn)
    await world.tick()  # the router has seen the disconnect: the grace period starts now
    world.time.advance(49.9)  # within grace: the router looked, and it is still Ann's
    await world.tick()
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.assignee_id == ann_p.agent_id
    world.time.advance(0.2)
    await world.tick()
    await _assigned(world, cid, bob_p.agent_id)


async def test_sticky_return_to_previous_agent_on_reopen(world: World) -> None:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    await world.engine.request(ann.conn, Close(conversation_id=cid))
    await world.connect(await world.agent("bob"))  # less busy, longer idle: still not chosen
    await world.engine.request(
        v.conn, SendMessage(conversation_id=cid, client_msg_id="m2", text="again")
    )
    await _assigned(world, cid, ann_p.agent_id)

    async def routed_sticky() -> bool:
        log = await world.engine.request(ann.conn, GetRoutingLog(conversation_id=cid))
        return any(d.reason == "sticky" and d.agent_id == ann_p.agent_id for d in log.decisions)

    await wait_until(routed_sticky, what="a sticky routing decision for ann")


async def test_queue_positions_move_as_chats_are_taken(world: World) -> None:
    ann_p = await world.agent("ann", max_chats=1)
    ann = await world.connect(ann_p)
    visitors = [await world.connect(await world.visitor()) for _ in range(3)]
    cids = [await _chat(world, v) for v in visitors]
    seen = [Seen(v) for v in visitors]

    def positions(i: int) -> list[int]:
        return [p.position for p in seen[i].update().pushes if isinstance(p, QueuePosition)]

    # Positions are pushed once per tick: wait for them rather than for a tick or two.
    await wait_until(
        lambda: positions(1)[-1:] == [1] and positions(2)[-1:] == [2], what="positions 1 and 2"
    )
    await world.engine.request(ann.conn, Close(conversation_id=cids[0]))
    await _assigned(world, cids[1], ann_p.agent_id)
    await wait_until(lambda: positions(2)[-1:] == [1], what="the last visitor moved up to 1")


async def test_offline_message_when_no_agent(world: World) -> None:
    v = await world.connect(await world.visitor())
    assert v.conn.welcome.agents_available is False
    ack = await world.engine.request(
        v.conn,
        LeaveOfflineMessage(name="Al", email="al@example.com", text="call me", client_msg_id="o"),
    )
    conv = await world.storage.get_conversation(world.workspace_id, ack.conversation_id)
    assert conv is not None and conv.state == "closed" and conv.close_reason == "offline"


async def test_crash_in_one_conversation_leaves_others_delivering_and_resumes_seq(
    world: World,
) -> None:
    ann_p = await world.agent("ann")
    await world.connect(ann_p)
    v1 = await world.connect(await world.visitor())
    v2 = await world.connect(await world.visitor())
    c1 = await _chat(world, v1)
    c2 = await _chat(world, v2)
    await _assigned(world, c1, ann_p.agent_id)
    await _assigned(world, c2, ann_p.agent_id)
    await world.engine.crash_conversation_for_test(world.workspace_id, c1)
    ack2 = await world.engine.request(
        v2.conn, SendMessage(conversation_id=c2, client_msg_id="b", text="x")
    )
    ack1 = await world.engine.request(
        v1.conn, SendMessage(conversation_id=c1, client_msg_id="b", text="y")
    )
    history = await world.storage.history(world.workspace_id, c1)
    assert [e.seq for e in history] == list(range(1, ack1.seq + 1))
    assert ack2.seq > 1


@pytest.mark.parametrize(
    "engine_config", [{"idle_timeout_s": 5.0, "ask_timeout_s": 250.0, "storage_timeout_s": 250.0}]
)
async def test_passivated_conversation_comes_back_with_its_state(
    world: World, fast_clock: object
) -> None:
    ann_p = await world.agent("ann")
    ann = await world.connect(ann_p)
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    await _assigned(world, cid, ann_p.agent_id)
    await wait_until(
        lambda: (world.workspace_id, cid) not in list(world.engine._ctx.conversations.keys()),
        what="the idle conversation was passivated",
    )
    bob = await world.connect(await world.agent("bob"))
    with pytest.raises(AlreadyAssigned):
        await world.engine.request(bob.conn, Accept(conversation_id=cid))
    ack = await world.engine.request(
        ann.conn, SendMessage(conversation_id=cid, client_msg_id="q", text="back")
    )
    assert ack.seq == 3


async def test_resume_replays_missed_events_or_asks_for_resync(world: World) -> None:
    v_p = await world.visitor()
    v = await world.connect(v_p)
    cid = await _chat(world, v)
    for i in range(3):
        await world.engine.request(
            v.conn, SendMessage(conversation_id=cid, client_msg_id=f"r{i}", text="x")
        )
    again = await world.connect(v_p, resume={cid: 1})
    assert [e.seq for e in again.events()] == [2, 3, 4]
    small = await world.connect(v_p, resume={cid: 0}, outbox_size=2)
    assert any(isinstance(p, ResyncRequired) for p in small.drain())


async def test_visitor_message_rate_limit(world: World) -> None:
    v = await world.connect(await world.visitor())
    with pytest.raises(RateLimited) as info:
        for i in range(100):
            await world.engine.request(v.conn, SendMessage(client_msg_id=f"s{i}", text="spam"))
    assert info.value.code == "rate_limited" and info.value.retry_after_s


async def test_agent_not_accepting_gets_no_chats(world: World) -> None:
    ann = await world.connect(await world.agent("ann"))
    await world.engine.request(ann.conn, SetStatus(status=SettableStatus.NOT_ACCEPTING))
    v = await world.connect(await world.visitor())
    cid = await _chat(world, v)
    v_seen = Seen(v)
    # Routing has run once the visitor is told its queue position (pushed once per tick).
    await wait_until(
        lambda: any(isinstance(p, QueuePosition) for p in v_seen.update().pushes),
        what="a queue position for the visitor",
    )
    conv = await world.storage.get_conversation(world.workspace_id, cid)
    assert conv is not None and conv.state == "queued"
