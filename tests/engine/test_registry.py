"""Registry: activation on demand, one actor per key, passivation, crashes per key, shutdown."""

from __future__ import annotations

import gc
import tracemalloc

import attrs
import pytest
import trio
import trio.testing

from engine.actor import Actor, Reply
from engine.errors import ActorStopped, ShuttingDown
from engine.metrics import EngineMetrics
from engine.registry import Registry, RegistryRef
from engine.supervisor import ServiceSpec, Supervisor

IDLE_TIMEOUT_S = 60.0


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
class Slow:
    seconds: float


Msg = Add | Total | Crash | Slow


@attrs.define
class World:
    """Stands in for storage: what survives an actor instance, plus a lifecycle log."""

    store: dict[str, int] = attrs.Factory(dict)
    log: list[tuple[str, str]] = attrs.Factory(list)
    flush_s: float = 1.0  # how long on_stop takes

    def starts(self, key: str) -> int:
        return self.log.count(("start", key))


class Conversation(Actor[Msg]):
    __slots__ = ("key", "total", "world")

    def __init__(self, key: str, world: World) -> None:
        self.key = key
        self.world = world
        self.total = 0

    async def on_start(self) -> None:
        await trio.sleep(0)  # a storage read
        self.total = self.world.store.get(self.key, 0)
        self.world.log.append(("start", self.key))

    async def on_stop(self) -> None:
        await trio.sleep(self.world.flush_s)  # a final flush
        self.world.log.append(("stop", self.key))

    async def handle(self, msg: Msg) -> None:
        match msg:
            case Add(n=n):
                self.total += n
                self.world.store[self.key] = self.total
            case Total(reply=reply):
                reply.send(self.total)
            case Crash():
                raise RuntimeError(f"{self.key} crashed")
            case Slow(seconds=seconds):
                await trio.sleep(seconds)


async def start_registry(
    nursery: trio.Nursery,
    world: World,
    *,
    max_restarts: int = 3,
    metrics: EngineMetrics | None = None,
) -> Registry[str, Msg]:
    registry: Registry[str, Msg] = Registry(
        "conversation",
        lambda key: Conversation(key, world),
        mailbox_size=8,
        idle_timeout_s=IDLE_TIMEOUT_S,
        max_restarts=max_restarts,
        metrics=metrics,
    )
    started: Registry[str, Msg] = await nursery.start(registry.serve)
    return started


async def total(ref: RegistryRef[str, Msg]) -> int:
    with trio.fail_after(5):
        return await ref.ask(lambda reply: Total(reply=reply))


async def test_concurrent_gets_for_one_key_spawn_one_actor(nursery: trio.Nursery) -> None:
    world = World()
    registry = await start_registry(nursery, world)
    refs: list[RegistryRef[str, Msg]] = []

    async def get() -> None:
        refs.append(await registry.get("c1"))

    async with trio.open_nursery() as getters:
        for _ in range(10):
            getters.start_soon(get)
    for ref in refs:
        await ref.tell(Add(n=1))

    assert await total(refs[0]) == 10
    assert registry.count == 1
    assert registry.keys() == ["c1"]
    assert world.starts("c1") == 1


async def test_idle_actor_is_passivated_and_reactivated_with_state_rebuilt_in_on_start(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    registry = await start_registry(nursery, world)
    ref = await registry.get("c1")
    await ref.tell(Add(n=3))
    assert await total(ref) == 3

    await trio.sleep(IDLE_TIMEOUT_S * 2)
    assert registry.count == 0
    assert world.log == [("start", "c1"), ("stop", "c1")]

    # The ref from before passivation re-activates the key; on_start reloads the state.
    assert await total(ref) == 3
    await ref.tell(Add(n=1))
    assert await total(await registry.get("c1")) == 4
    assert world.starts("c1") == 2


async def test_busy_actor_is_not_passivated(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    registry = await start_registry(nursery, world)
    ref = await registry.get("c1")
    for _ in range(10):
        await trio.sleep(IDLE_TIMEOUT_S / 2)
        await ref.tell(Add(n=1))

    assert await total(ref) == 10
    assert world.starts("c1") == 1


async def test_message_during_passivation_waits_for_on_stop_then_reactivates(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    world = World(flush_s=IDLE_TIMEOUT_S)
    registry = await start_registry(nursery, world)
    ref = await registry.get("c1")
    await ref.tell(Add(n=2))
    # The sweep closes the mailbox within 1.25 idle timeouts; on_stop then takes one more.
    await trio.sleep(IDLE_TIMEOUT_S * 1.5)
    assert world.log == [("start", "c1")]

    await ref.tell(Add(n=1))  # waits for the old on_stop, then goes to a new activation

    assert await total(ref) == 3
    assert world.log == [("start", "c1"), ("stop", "c1"), ("start", "c1")]


async def test_crashing_key_restarts_with_state_rebuilt_and_others_are_untouched(
    nursery: trio.Nursery,
) -> None:
    world = World()
    registry = await start_registry(nursery, world)
    stable, flaky = await registry.get("stable"), await registry.get("flaky")
    await stable.tell(Add(n=5))
    await flaky.tell(Add(n=2))

    await flaky.tell(Crash())
    await flaky.tell(Add(n=1))  # queued behind the crash: handled by the restarted instance

    assert await total(flaky) == 3
    assert await total(stable) == 5
    assert world.starts("flaky") == 2
    assert world.starts("stable") == 1


async def test_key_exceeding_restart_intensity_is_removed_and_its_refs_raise_actor_stopped(
    nursery: trio.Nursery,
) -> None:
    world = World()
    metrics = EngineMetrics()
    registry = await start_registry(nursery, world, max_restarts=2, metrics=metrics)
    stable, doomed = await registry.get("stable"), await registry.get("doomed")
    await stable.tell(Add(n=1))

    for _ in range(3):
        await doomed.tell(Crash())
        await trio.testing.wait_all_tasks_blocked()

    assert registry.keys() == ["stable"]
    assert not doomed.alive
    with pytest.raises(ActorStopped):
        await doomed.tell(Add(n=1))
    with pytest.raises(ActorStopped):
        await total(doomed)
    assert await total(stable) == 1
    assert metrics.restarts("conversation") == 2
    # A fresh get starts the key afresh.
    assert await total(await registry.get("doomed")) == 0


async def test_pending_ask_fails_with_actor_stopped_when_key_gives_up(
    nursery: trio.Nursery,
) -> None:
    world = World()
    registry = await start_registry(nursery, world, max_restarts=0)
    ref = await registry.get("doomed")
    await ref.tell(Slow(seconds=0))
    await ref.tell(Crash())

    with pytest.raises(ActorStopped):
        await total(ref)


async def test_shutdown_drains_mailboxes_within_the_deadline_and_refuses_intake(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    registry = await start_registry(nursery, world)
    for key in ("a", "b"):
        ref = await registry.get(key)
        await ref.tell(Slow(seconds=2))
        await ref.tell(Add(n=1))
    start = trio.current_time()

    await registry.shutdown(deadline_s=10)

    assert trio.current_time() - start < 10
    assert world.store == {"a": 1, "b": 1}
    assert sorted(world.log) == [("start", "a"), ("start", "b"), ("stop", "a"), ("stop", "b")]
    assert registry.count == 0
    with pytest.raises(ShuttingDown):
        await registry.get("c")
    with pytest.raises(ShuttingDown):
        await ref.tell(Add(n=1))


async def test_shutdown_cancels_actors_still_busy_at_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    registry = await start_registry(nursery, world)
    ref = await registry.get("a")
    await ref.tell(Slow(seconds=100))
    start = trio.current_time()

    await registry.shutdown(deadline_s=5)

    assert trio.current_time() - start == pytest.approx(5)
    assert ("stop", "a") not in world.log
    assert registry.count == 0


async def test_metrics_report_alive_actors_and_mailbox_depth(nursery: trio.Nursery) -> None:
    world = World()
    metrics = EngineMetrics()
    registry = await start_registry(nursery, world, metrics=metrics)
    refs = [await registry.get(key) for key in ("a", "b", "c")]
    await refs[0].tell(Slow(seconds=1))
    await trio.testing.wait_all_tasks_blocked()
    for n in range(3):
        refs[0].tell_nowait(Add(n=n))

    assert metrics.alive("conversation") == 3
    assert metrics.mailbox_depth("conversation") == (3, 3)
    text = metrics.render_prometheus()
    assert 'livechat_actors_alive{kind="conversation"} 3' in text
    assert 'livechat_mailbox_depth_max{kind="conversation"} 3' in text


async def test_registry_runs_as_a_supervised_service_and_drains_on_shutdown(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    world = World()
    registry: Registry[str, Msg] = Registry(
        "conversation", lambda key: Conversation(key, world), idle_timeout_s=IDLE_TIMEOUT_S
    )
    supervisor = Supervisor(children=[ServiceSpec("conversations", registry)])
    await nursery.start(supervisor.serve)
    ref = await registry.get("a")
    await ref.tell(Slow(seconds=1))
    await ref.tell(Add(n=1))

    await supervisor.shutdown(deadline_s=10)

    assert world.store == {"a": 1}
    assert world.log == [("start", "a"), ("stop", "a")]
    with pytest.raises(ShuttingDown):
        await registry.get("a")


def test_metrics_render_histograms_in_prometheus_text_format() -> None:
    metrics = EngineMetrics(latency_buckets_s=(0.001, 0.01), batch_size_buckets=(1, 8))
    metrics.routing_latency.observe(0.0005)
    metrics.routing_latency.observe(0.005)
    metrics.routing_latency.observe(2.0)
    metrics.commit_batch_size.observe(8)

    text = metrics.render_prometheus()

    assert "# TYPE livechat_routing_latency_seconds histogram" in text
    assert 'livechat_routing_latency_seconds_bucket{le="0.001"} 1' in text
    assert 'livechat_routing_latency_seconds_bucket{le="0.01"} 2' in text
    assert 'livechat_routing_latency_seconds_bucket{le="+Inf"} 3' in text
    assert "livechat_routing_latency_seconds_count 3" in text
    assert 'livechat_commit_batch_size_bucket{le="8"} 1' in text
    assert text.endswith("\n")


class Idle(Actor[Msg]):
    """The smallest useful actor: slotted, one int of state."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0

    async def handle(self, msg: Msg) -> None:
        if isinstance(msg, Add):
            self.total += msg.n


async def idle_actor_bytes(count: int) -> float:
    """Traced bytes per idle activation: task, coroutine frames, channels, bookkeeping."""
    registry: Registry[int, Msg] = Registry("idle", lambda key: Idle(), mailbox_size=64)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.serve)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for key in range(count):
                await (await registry.get(key)).tell(Add(n=1))
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        await registry.shutdown(deadline_s=10)
    return (after - before) / count


async def test_idle_registry_actor_costs_under_6_kb() -> None:
    """A memory budget check, not a benchmark: 100,000 idle actors must fit in ~600 MB."""
    assert await idle_actor_bytes(2_000) < 6 * 1024


async def test_a_seed_is_taken_once_and_refused_when_an_activation_ran_meanwhile(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    world = World(flush_s=0.0)
    registry = await start_registry(nursery, world)
    read_at = registry.generation  # a caller starts reading "c1"'s state here
    ref = await registry.get("c1")  # meanwhile the key is activated, written and passivated
    await ref.tell(Add(n=5))
    registry.passivate("c1")
    while "c1" in registry.keys():  # noqa: SIM118 (a Registry); virtual time (autojump)
        await trio.sleep(0.01)
    # What the caller read may predate that write: the actor must read for itself.
    assert registry.activate_seeded("c1", 0, generation=read_at) is None
    assert registry.count == 0

    fresh_at = registry.generation
    seeded = registry.activate_seeded("c1", 5, generation=fresh_at)
    assert seeded is not None
    assert registry.activate_seeded("c1", 5, generation=registry.generation) is None  # live
    assert registry.take_seed("c1") == 5
    assert registry.take_seed("c1") is None  # once: a restart reads for itself
    assert await total(seeded) == 5
