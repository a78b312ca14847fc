"""Supervisor: OTP strategies, restart types, intensity and escalation, order, shutdown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from engine.actor import Actor, ActorRef, Reply
from engine.errors import ActorStopped, RestartIntensityExceeded, ShuttingDown
from engine.metrics import EngineMetrics
from engine.supervisor import (
    ChildSpec,
    RestartStrategy,
    RestartType,
    ServiceSpec,
    Supervisor,
    TaskService,
)


@attrs.frozen(kw_only=True)
class Add:
    n: int


@attrs.frozen(kw_only=True)
class Total:
    reply: Reply[int]


@attrs.frozen(kw_only=True)
class Crash:
    pass


@attrs.frozen(kw_only=True)
class Stop:
    pass


@attrs.frozen(kw_only=True)
class Slow:
    """Takes ``seconds`` to handle, to test drain deadlines."""

    seconds: float


Msg = Add | Total | Crash | Stop | Slow


class Worker(Actor[Msg]):
    """Counts what it was told; logs its lifecycle into a list shared with the test."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name = name
        self.log = log
        self.total = 0

    async def on_start(self) -> None:
        self.log.append(("start", self.name))

    async def on_stop(self) -> None:
        self.log.append(("stop", self.name))

    async def handle(self, msg: Msg) -> None:
        match msg:
            case Add(n=n):
                self.total += n
                self.log.append(("add", self.name))
            case Total(reply=reply):
                reply.send(self.total)
            case Crash():
                raise RuntimeError(f"{self.name} crashed")
            case Stop():
                self.stop()
            case Slow(seconds=seconds):
                await trio.sleep(seconds)
                self.log.append(("slow done", self.name))


def spec(
    name: str, log: list[tuple[str, str]], restart: RestartType = RestartType.PERMANENT
) -> ChildSpec[Msg]:
    return ChildSpec(name, lambda: Worker(name, log), restart=restart, mailbox_size=8)


async def total(ref: ActorRef[Msg]) -> int:
    # A generous bound: a hung ask still fails the test, a slow shared CI machine does not.
    with trio.fail_after(30):
        return await ref.ask(lambda reply: Total(reply=reply))


def starts(log: list[tuple[str, str]]) -> list[str]:
    return [name for event, name in log if event == "start"]


async def start_supervisor(nursery: trio.Nursery, supervisor: Supervisor) -> Supervisor:
    started: Supervisor = await nursery.start(supervisor.serve)
    return started


async def test_children_start_in_order_and_stop_in_reverse_order(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("db", log), spec("router", log), spec("web", log)])
    await start_supervisor(nursery, sup)
    assert log == [("start", "db"), ("start", "router"), ("start", "web")]

    log.clear()
    await sup.shutdown(deadline_s=5)
    assert log == [("stop", "web"), ("stop", "router"), ("stop", "db")]
    with pytest.raises(ActorStopped):
        await sup.ref("db").tell(Add(n=1))


async def test_one_for_one_crash_leaves_siblings_delivering(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(RestartStrategy.ONE_FOR_ONE, children=[spec("a", log), spec("b", log)])
    await start_supervisor(nursery, sup)
    a, b = sup.ref("a"), sup.ref("b")
    await b.tell(Add(n=7))

    await a.tell(Crash())
    await b.tell(Add(n=1))

    assert await total(b) == 8  # b kept its state: it was not restarted
    assert await total(a) == 0  # a was rebuilt from scratch
    assert starts(log) == ["a", "b", "a"]


async def test_ref_stays_valid_across_restart_and_queued_messages_survive(
    nursery: trio.Nursery,
) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("a", log)])
    await start_supervisor(nursery, sup)
    ref = sup.ref("a")

    # Queued behind the crash, in the same mailbox: handled by the restarted instance.
    ref.tell_nowait(Crash())
    ref.tell_nowait(Add(n=2))
    ref.tell_nowait(Add(n=3))

    assert await total(ref) == 5
    assert starts(log) == ["a", "a"]


async def test_one_for_all_restarts_all_children(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(
        RestartStrategy.ONE_FOR_ALL, children=[spec("a", log), spec("b", log), spec("c", log)]
    )
    await start_supervisor(nursery, sup)
    for name in ("a", "c"):
        await sup.ref(name).tell(Add(n=1))
        assert await total(sup.ref(name)) == 1  # handled, so the restart is what resets it

    await sup.ref("b").tell(Crash())
    await trio.testing.wait_all_tasks_blocked()

    assert [await total(sup.ref(name)) for name in ("a", "b", "c")] == [0, 0, 0]
    assert starts(log) == ["a", "b", "c", "a", "b", "c"]


async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it(
    nursery: trio.Nursery,
) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(
        RestartStrategy.REST_FOR_ONE, children=[spec("a", log), spec("b", log), spec("c", log)]
    )
    await start_supervisor(nursery, sup)
    for name in ("a", "b", "c"):
        await sup.ref(name).tell(Add(n=1))
        assert await total(sup.ref(name)) == 1

    await sup.ref("b").tell(Crash())
    await trio.testing.wait_all_tasks_blocked()

    assert [await total(sup.ref(name)) for name in ("a", "b", "c")] == [1, 0, 0]
    assert starts(log) == ["a", "b", "c", "b", "c"]


async def test_transient_child_is_not_restarted_after_normal_exit(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("t", log, RestartType.TRANSIENT)])
    await start_supervisor(nursery, sup)
    ref = sup.ref("t")

    await ref.tell(Crash())
    assert await total(ref) == 0  # restarted after the crash

    await ref.tell(Stop())
    await trio.testing.wait_all_tasks_blocked()
    assert starts(log) == ["t", "t"]
    assert sup.child_names == []
    with pytest.raises(ActorStopped):
        await ref.tell(Add(n=1))


async def test_permanent_child_is_restarted_after_normal_exit(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("p", log)])
    await start_supervisor(nursery, sup)

    await sup.ref("p").tell(Stop())
    await trio.testing.wait_all_tasks_blocked()
    await sup.ref("p").tell(Add(n=4))

    assert await total(sup.ref("p")) == 4
    assert log[:3] == [("start", "p"), ("stop", "p"), ("start", "p")]


async def test_temporary_child_is_never_restarted(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(
        RestartStrategy.ONE_FOR_ALL,
        children=[spec("perm", log), spec("temp", log, RestartType.TEMPORARY)],
    )
    await start_supervisor(nursery, sup)
    temp = sup.ref("temp")

    # A sibling's crash terminates the temporary child, which is then dropped, not restarted.
    await sup.ref("perm").tell(Crash())
    assert await total(sup.ref("perm")) == 0
    assert sup.child_names == ["perm"]
    assert starts(log) == ["perm", "temp", "perm"]
    with pytest.raises(ActorStopped):
        await temp.tell(Add(n=1))


async def test_temporary_child_crash_removes_it_without_touching_siblings(
    nursery: trio.Nursery,
) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(
        RestartStrategy.ONE_FOR_ALL,
        children=[spec("perm", log), spec("temp", log, RestartType.TEMPORARY)],
    )
    await start_supervisor(nursery, sup)
    await sup.ref("perm").tell(Add(n=1))

    await sup.ref("temp").tell(Crash())
    await trio.testing.wait_all_tasks_blocked()

    assert sup.child_names == ["perm"]
    assert await total(sup.ref("perm")) == 1
    assert starts(log) == ["perm", "temp"]


async def test_restart_intensity_exceeded_stops_children_and_raises() -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(max_restarts=2, period_s=5.0, children=[spec("a", log), spec("b", log)])
    with pytest.RaisesGroup(RestartIntensityExceeded):
        async with trio.open_nursery() as nursery:
            await start_supervisor(nursery, sup)
            ref = sup.ref("a")
            for _ in range(3):
                await ref.tell(Crash())
                await trio.testing.wait_all_tasks_blocked()
    assert starts(log) == ["a", "b", "a", "a"]
    assert not sup.ref("b").alive


async def test_restarts_spread_beyond_the_period_do_not_escalate(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(max_restarts=1, period_s=5.0, children=[spec("a", log)])
    await start_supervisor(nursery, sup)
    for _ in range(4):
        await sup.ref("a").tell(Crash())
        await trio.sleep(6)

    assert await total(sup.ref("a")) == 0
    assert starts(log) == ["a"] * 5


async def test_nested_supervisor_escalates_to_parent_which_restarts_it(
    nursery: trio.Nursery,
) -> None:
    log: list[tuple[str, str]] = []
    metrics = EngineMetrics()
    inner = Supervisor(max_restarts=0, children=[spec("leaf", log)], name="inner")
    outer = Supervisor(
        max_restarts=3,
        children=[spec("peer", log), ServiceSpec("inner", inner)],
        name="outer",
        metrics=metrics,
    )
    await start_supervisor(nursery, outer)
    leaf = inner.ref("leaf")
    await leaf.tell(Add(n=1))
    await outer.ref("peer").tell(Add(n=1))

    await leaf.tell(Crash())  # inner allows no restart: it escalates; outer restarts it
    await trio.testing.wait_all_tasks_blocked()  # (meanwhile the leaf's ref is not alive)

    assert await total(leaf) == 0  # the same ref reaches the new leaf
    assert await total(outer.ref("peer")) == 1  # one_for_one: the peer was left alone
    assert starts(log) == ["peer", "leaf", "leaf"]
    assert metrics.restarts("outer") == 1


async def test_add_child_starts_it_now_and_stop_child_drains_it(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("a", log)])
    await start_supervisor(nursery, sup)

    ref = await sup.add_child(spec("agent-7", log))
    await ref.tell(Add(n=2))
    assert await total(ref) == 2
    assert sup.child_names == ["a", "agent-7"]

    await ref.tell(Add(n=1))
    await sup.stop_child("agent-7")
    assert log[-2:] == [("add", "agent-7"), ("stop", "agent-7")]  # drained before on_stop
    assert sup.child_names == ["a"]
    with pytest.raises(ActorStopped):
        await ref.tell(Add(n=1))
    with pytest.raises(ValueError, match="already has"):
        await sup.add_child(spec("a", log))


async def test_shutdown_drains_mailboxes_within_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("a", log), spec("b", log)])
    await start_supervisor(nursery, sup)
    for name in ("a", "b"):
        await sup.ref(name).tell(Slow(seconds=1))
        await sup.ref(name).tell(Add(n=1))

    start = trio.current_time()

    await sup.shutdown(deadline_s=10)

    assert trio.current_time() - start < 10
    for name in ("a", "b"):
        mine = [event for event, who in log if who == name]
        assert mine == ["start", "slow done", "add", "stop"]  # drained, then on_stop
    assert log.index(("stop", "b")) < log.index(("stop", "a"))


async def test_shutdown_cancels_what_remains_after_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("a", log), spec("b", log)])
    await start_supervisor(nursery, sup)
    await sup.ref("a").tell(Slow(seconds=100))
    await sup.ref("b").tell(Add(n=1))
    start = trio.current_time()

    await sup.shutdown(deadline_s=5)

    assert trio.current_time() - start == pytest.approx(5)
    assert ("stop", "b") in log
    assert ("slow done", "a") not in log
    assert ("stop", "a") not in log  # cancelled: no on_stop
    assert not sup.ref("a").alive


async def test_add_child_while_shutting_down_raises_shutting_down(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[tuple[str, str]] = []
    sup = Supervisor(children=[spec("a", log)])
    await start_supervisor(nursery, sup)
    await sup.ref("a").tell(Slow(seconds=10))
    nursery.start_soon(sup.shutdown, 60)
    await trio.testing.wait_all_tasks_blocked()

    with pytest.raises(ShuttingDown):
        await sup.add_child(spec("late", log))


async def test_crash_during_on_start_is_restarted_like_any_crash(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    attempts: list[int] = []

    class Flaky(Worker):
        async def on_start(self) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise RuntimeError("storage not ready")
            await super().on_start()

    make: Callable[[], Actor[Msg]] = lambda: Flaky("flaky", log)  # noqa: E731
    sup = Supervisor(children=[ChildSpec("flaky", make)])
    await start_supervisor(nursery, sup)

    assert await total(sup.ref("flaky")) == 0
    assert len(attempts) == 2


async def test_metrics_count_alive_children_and_restarts(nursery: trio.Nursery) -> None:
    log: list[tuple[str, str]] = []
    metrics = EngineMetrics()
    sup = Supervisor(children=[spec("a", log), spec("b", log)], name="agents", metrics=metrics)
    await start_supervisor(nursery, sup)
    await sup.ref("a").tell(Crash())
    assert await total(sup.ref("a")) == 0

    assert metrics.alive("agents") == 2
    assert metrics.restarts("agents") == 1
    text = metrics.render_prometheus()
    assert 'livechat_actors_alive{kind="agents"} 2' in text
    assert 'livechat_actor_restarts_total{kind="agents"} 1' in text
    assert 'livechat_mailbox_depth_max{kind="agents"} 0' in text


async def test_snapshot_shows_children_restarts_and_depths_and_restarts_are_logged(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.supervisor import TaskService

    log: list[tuple[str, str]] = []
    runs: list[int] = []

    async def flaky_task() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("the task crashed")
        await trio.sleep_forever()

    sup = await start_supervisor(
        nursery,
        Supervisor(
            RestartStrategy.ONE_FOR_ONE,
            max_restarts=5,
            children=[
                spec("a", log),
                ServiceSpec("task", TaskService("task", flaky_task)),
            ],
            name="top",
        ),
    )
    ref = sup.ref("a")
    await ref.tell(Crash())
    assert await total(ref) == 0  # restarted
    await trio.testing.wait_all_tasks_blocked()
    tree = sup.snapshot()
    assert (tree.name, tree.kind, tree.strategy, tree.restarts) == (
        "top",
        "supervisor",
        "one_for_one",
        2,
    )
    a, task = tree.children
    assert (a.name, a.kind, a.restarted, a.mailbox_depth, a.state) == (
        "a",
        "actor",
        1,
        0,
        "running",
    )
    assert (task.name, task.kind, task.restarted, task.state) == ("task", "service", 1, "running")
    assert len(runs) == 2
    logged = [r.getMessage() for r in caplog.records if "restarts" in r.getMessage()]
    assert sorted(m.split(" (")[0] for m in logged) == [
        "supervisor 'top' restarts a after a crash",
        "supervisor 'top' restarts task after a crash",
    ]
    assert all(m.endswith("of at most 5 in 5s)") for m in logged)
    await sup.shutdown(5)


async def test_a_crashed_service_restarts_its_rest_for_one_siblings_and_each_counts_it(
    nursery: trio.Nursery,
) -> None:
    """What the root does when storage crashes: the crashed service and every child after it
    are restarted; the tree shows ``restarted`` on each, ``/metrics`` names the service, and
    ``wait_restarts`` returns once they all run again."""
    log: list[tuple[str, str]] = []
    metrics = EngineMetrics()
    ticks = {"store": 0, "tail": 0}

    def forever(name: str) -> Callable[[], Any]:
        async def run() -> None:
            ticks[name] += 1
            await trio.sleep_forever()

        return run

    store = TaskService("store", forever("store"))
    sup = await start_supervisor(
        nursery,
        Supervisor(
            RestartStrategy.REST_FOR_ONE,
            max_restarts=1,
            children=[
                spec("head", log),
                ServiceSpec("store", store),
                ServiceSpec("tail", TaskService("tail", forever("tail"))),
            ],
            name="root",
            metrics=metrics,
        ),
    )
    assert store.inject_fault() is True
    assert store.inject_fault() is False  # already crashing
    with trio.fail_after(30):
        await sup.wait_restarts(1)
    assert ticks == {"store": 2, "tail": 2}
    assert starts(log) == ["head"]  # started before the crashed child: left alone
    restarted = {c.name: c.restarted for c in sup.snapshot().children}
    assert restarted == {"head": 0, "store": 1, "tail": 1}
    assert metrics.service_restarts("root/store") == 1
    assert metrics.service_restarts("root/tail") == 0  # restarted with it, not crashed
    assert 'livechat_service_restarts_total{kind="root/store"} 1' in metrics.render_prometheus()
