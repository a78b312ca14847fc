"""Actor, ActorRef and Reply: tell, ask, backpressure, batching, domain errors, crashes."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing

from engine.actor import Actor, ActorRef, Reply, start_actor
from engine.errors import ActorStopped, EngineError


class AlreadyAssigned(EngineError):
    """A domain error: must reach the asker, not crash the actor."""


@attrs.frozen(kw_only=True)
class Add:
    n: int


@attrs.frozen(kw_only=True)
class Total:
    reply: Reply[int]


@attrs.frozen(kw_only=True)
class Assign:
    agent: str
    reply: Reply[str]


@attrs.frozen(kw_only=True)
class Crash:
    reply: Reply[None] | None = None


@attrs.frozen(kw_only=True)
class Stop:
    pass


@attrs.frozen(kw_only=True)
class Hold:
    """Park the handler until ``release`` is set, to fill the mailbox behind it."""

    release: trio.Event


@attrs.frozen(kw_only=True)
class Defer:
    """Keep the reply unanswered."""

    reply: Reply[int]


Msg = Add | Total | Assign | Crash | Stop | Hold | Defer


class Counter(Actor[Msg]):
    def __init__(self) -> None:
        self.total = 0
        self.seen: list[int] = []
        self.batches: list[int] = []
        self.assigned: str | None = None
        self.deferred: list[Reply[int]] = []

    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        self.batches.append(len(msgs))
        await super().handle_batch(msgs)

    async def handle(self, msg: Msg) -> None:
        match msg:
            case Add(n=n):
                self.total += n
                self.seen.append(n)
            case Total(reply=reply):
                reply.send(self.total)
            case Assign(agent=agent, reply=reply):
                if self.assigned is not None:
                    raise AlreadyAssigned(self.assigned)
                self.assigned = agent
                reply.send(agent)
            case Crash():
                raise RuntimeError("handler bug")
            case Stop():
                self.stop()
            case Hold(release=release):
                await release.wait()
            case Defer(reply=reply):
                self.deferred.append(reply)


async def test_tell_delivers_messages_in_order_and_ask_returns_the_reply(
    nursery: trio.Nursery,
) -> None:
    actor = Counter()
    ref = await start_actor(nursery, actor, name="counter", mailbox_size=8)
    for n in (1, 2, 3):
        await ref.tell(Add(n=n))
    ref.tell_nowait(Add(n=4))

    assert await ref.ask(lambda reply: Total(reply=reply)) == 10
    assert actor.seen == [1, 2, 3, 4]
    assert ref.name == "counter"
    assert ref.alive


async def test_tell_waits_while_mailbox_full_and_tell_nowait_raises_would_block(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    actor = Counter()
    ref = await start_actor(nursery, actor, name="counter", mailbox_size=2)
    release = trio.Event()
    await ref.tell(Hold(release=release))
    await trio.testing.wait_all_tasks_blocked()  # the actor is parked in Hold
    await ref.tell(Add(n=1))
    await ref.tell(Add(n=2))
    assert ref.mailbox_depth == 2

    with pytest.raises(trio.WouldBlock):
        ref.tell_nowait(Add(n=3))
    with trio.move_on_after(10) as blocked:
        await ref.tell(Add(n=3))
    assert blocked.cancelled_caught

    release.set()
    await ref.tell(Add(n=3))
    assert await ref.ask(lambda reply: Total(reply=reply)) == 6


async def test_messages_queued_while_busy_are_handled_as_one_batch(
    nursery: trio.Nursery,
) -> None:
    actor = Counter()
    ref = await start_actor(nursery, actor, name="counter", mailbox_size=8)
    release = trio.Event()
    await ref.tell(Hold(release=release))
    await trio.testing.wait_all_tasks_blocked()
    for n in range(5):
        await ref.tell(Add(n=n))
    release.set()

    assert await ref.ask(lambda reply: Total(reply=reply)) == 10
    assert actor.batches[0] == 1
    assert actor.batches[1] == 6  # five Adds and the Total, drained with receive_nowait


async def test_domain_error_reaches_asker_and_actor_keeps_running(
    nursery: trio.Nursery,
) -> None:
    ref = await start_actor(nursery, Counter(), name="conversation", mailbox_size=8)
    assert await ref.ask(lambda reply: Assign(agent="ann", reply=reply)) == "ann"

    with pytest.raises(AlreadyAssigned):
        await ref.ask(lambda reply: Assign(agent="bob", reply=reply))

    await ref.tell(Add(n=5))
    assert await ref.ask(lambda reply: Total(reply=reply)) == 5
    assert ref.alive


async def test_ask_to_stopped_actor_raises_actor_stopped(nursery: trio.Nursery) -> None:
    ref = await start_actor(nursery, Counter(), name="counter", mailbox_size=8)
    await ref.tell(Stop())
    await trio.testing.wait_all_tasks_blocked()

    assert not ref.alive
    with pytest.raises(ActorStopped):
        await ref.ask(lambda reply: Total(reply=reply))
    with pytest.raises(ActorStopped):
        await ref.tell(Add(n=1))
    with pytest.raises(ActorStopped):
        ref.tell_nowait(Add(n=1))


async def test_unanswered_ask_fails_with_actor_stopped_when_actor_stops(
    nursery: trio.Nursery,
) -> None:
    ref = await start_actor(nursery, Counter(), name="counter", mailbox_size=8)

    async def stop_soon() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(Stop())

    nursery.start_soon(stop_soon)
    with pytest.raises(ActorStopped):
        await ref.ask(lambda reply: Defer(reply=reply))


async def test_crash_fails_the_pending_ask_and_propagates_to_the_nursery(
    nursery: trio.Nursery,
) -> None:
    crashes: list[BaseException] = []

    async def host(*, task_status: trio.TaskStatus[ActorRef[Msg]]) -> None:
        try:
            async with trio.open_nursery() as actor_nursery:
                task_status.started(
                    await start_actor(actor_nursery, Counter(), name="counter", mailbox_size=8)
                )
        except* RuntimeError as group:
            crashes.extend(group.exceptions)

    ref: ActorRef[Msg] = await nursery.start(host)
    with pytest.raises(ActorStopped):
        await ref.ask(lambda reply: Crash(reply=reply))
    await trio.testing.wait_all_tasks_blocked()

    assert [str(exc) for exc in crashes] == ["handler bug"]
    assert not ref.alive


async def test_engine_error_from_a_tell_crashes_the_actor() -> None:
    """Nobody waits for a tell, so a domain error there is a bug: the actor crashes."""

    class Strict(Counter):
        async def handle(self, msg: Msg) -> None:
            raise AlreadyAssigned("no asker to tell")

    with pytest.RaisesGroup(AlreadyAssigned):
        async with trio.open_nursery() as nursery:
            ref = await start_actor(nursery, Strict(), name="strict", mailbox_size=8)
            await ref.tell(Add(n=1))


async def test_caller_deadline_abandons_ask_and_late_reply_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    actor = Counter()
    ref = await start_actor(nursery, actor, name="counter", mailbox_size=8)
    with pytest.raises(trio.TooSlowError), trio.fail_after(1):
        await ref.ask(lambda reply: Defer(reply=reply))

    actor.deferred[0].send(42)  # nobody is waiting any more: ignored
    assert await ref.ask(lambda reply: Total(reply=reply)) == 0


async def test_reply_takes_only_the_first_answer() -> None:
    reply: Reply[int] = Reply()
    reply.send(1)
    reply.send(2)
    reply.fail(AlreadyAssigned("late"))
    assert reply.done
    assert await reply.wait() == 1
