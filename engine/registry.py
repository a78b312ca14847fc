"""Virtual actors, like Orleans grains: one actor per key, activated on demand, passivated idle.

``await registry.get(key)`` returns a `RegistryRef`; the actor for ``key`` is spawned if it is
not running (concurrent gets of one key yield one actor). An actor that received nothing for
``idle_timeout_s`` is passivated: its mailbox is closed, it drains and runs ``on_stop``. A
`RegistryRef` outlives that: its next ``tell``/``ask`` transparently activates a fresh
instance, whose ``on_start`` rebuilds the state (after the old ``on_stop`` has finished).

Each activation is supervised one_for_one on its own: a crash restarts a fresh instance on the
same mailbox (queued messages survive). More than ``max_restarts`` crashes in ``period_s`` and
the activation is removed: unanswered asks and every later use of the refs bound to it raise
`ActorStopped`; the registry and the other keys carry on, and a new ``get`` starts afresh.
Each restart is logged and counted (``livechat_actor_restarts_total``), each key given up on
too (``livechat_actor_failures_total``). `Registry.inject_fault` crashes one key's actor on
purpose, for the operators' fault injection (off by default).

Per idle actor the cost is one task, one memory channel pair and three small slotted objects:
about 5.2 KB traced by ``tracemalloc`` for a slotted actor, 100,000 of them included (see
``tests/engine/test_registry.py``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

import trio

from engine.actor import Actor, Mailbox, Reply
from engine.errors import ActorStopped, InjectedFault, ShuttingDown
from engine.metrics import EngineMetrics
from engine.supervisor import RestartIntensity, TreeNode

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")
R = TypeVar("R")

DEFAULT_MAILBOX_SIZE = 64
DEFAULT_IDLE_TIMEOUT_S = 300.0
# The idle sweep runs this many times per idle_timeout_s: an idle actor is passivated between
# idle_timeout_s and idle_timeout_s * (1 + 1/SWEEPS_PER_IDLE_TIMEOUT) after its last message.
SWEEPS_PER_IDLE_TIMEOUT = 4


class _Phase(enum.Enum):
    ACTIVE = "active"
    PASSIVATING = "passivating"  # mailbox closed; draining and running on_stop
    GONE = "gone"  # stopped normally; a ref re-activates the key
    FAILED = "failed"  # gave up after too many crashes; refs bound to it raise ActorStopped


class _Activation(Generic[K, M]):
    """One activation of a key: from spawn until its task ends."""

    __slots__ = ("_done", "fault", "key", "mailbox", "phase", "scope", "seed", "task")

    def __init__(self, key: K, mailbox: Mailbox[M]) -> None:
        self.key = key
        self.mailbox = mailbox
        self.phase = _Phase.ACTIVE
        self._done: trio.Event | None = None  # created only when someone waits
        self.scope: trio.CancelScope | None = None  # the running instance's
        self.fault = False  # an injected crash is pending
        self.task: trio.lowlevel.Task | None = None  # the task running its actor
        self.seed: object = None  # state read by whoever activated it (``activate_seeded``)

    def passivate(self) -> None:
        self.phase = _Phase.PASSIVATING
        self.mailbox.close()

    def retire(self, phase: _Phase) -> None:
        self.phase = phase
        self.mailbox.finish()
        if self._done is not None:
            self._done.set()

    async def wait_done(self) -> None:
        if self.phase in (_Phase.GONE, _Phase.FAILED):
            await trio.lowlevel.checkpoint()
            return
        if self._done is None:
            self._done = trio.Event()
        await self._done.wait()


class _State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class Registry(Generic[K, M]):
    """Actors of one ``kind``, one per key, spawned on demand and passivated when idle.

    Use: ``registry = await nursery.start(Registry(...).serve)``, then ``await
    registry.get(key)``. ``factory(key)`` builds a fresh actor for every (re)activation.
    """

    def __init__(
        self,
        kind: str,
        factory: Callable[[K], Actor[M]],
        *,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        max_restarts: int = 3,
        period_s: float = 5.0,
        metrics: EngineMetrics | None = None,
    ) -> None:
        if idle_timeout_s <= 0:
            raise ValueError("idle_timeout_s must be > 0")
        RestartIntensity(max_restarts, period_s)  # validates the pair before any activation
        self.kind = kind
        self._factory = factory
        self._mailbox_size = mailbox_size
        self._idle_timeout_s = idle_timeout_s
        self._max_restarts = max_restarts
        self._period_s = period_s
        self._metrics = metrics
        self._live: dict[K, _Activation[K, M]] = {}
        self._generation = 0  # +1 whenever an activation starts or ends
        self.restarts = 0  # crashed instances restarted, since the registry was built
        self.failures = 0  # keys given up on (crashed past the restart intensity)
        self._state = _State.IDLE
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        if metrics is not None:
            metrics.track_mailboxes(kind, self._depths)

    # --- public API -------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Live activations (including those running ``on_stop``)."""
        return len(self._live)

    def keys(self) -> list[K]:
        """Keys with a live activation."""
        return list(self._live)

    @property
    def generation(self) -> int:
        """Changes whenever an activation of any key starts or ends (see `activate_seeded`)."""
        return self._generation

    def activate_seeded(self, key: K, seed: object, *, generation: int) -> RegistryRef[K, M] | None:
        """Activate ``key`` with ``seed``, state its actor takes (`take_seed`) instead of
        reading it again, if ``key`` has no activation and none started or ended since
        ``generation`` was read: whatever the caller read meanwhile is then as fresh as the
        actor's own read would be. None otherwise (then use `get`); `ShuttingDown` like `get`.
        """
        if self._state is not _State.RUNNING:
            raise ShuttingDown(f"registry {self.kind!r} is not accepting work")
        if generation != self._generation or key in self._live:
            return None
        activation = self._spawn(key)
        activation.seed = seed
        return RegistryRef(self, key, activation)

    def take_seed(self, key: K) -> object:
        """The seed the live activation of ``key`` was started with, once; else None."""
        activation = self._live.get(key)
        if activation is None:
            return None
        seed, activation.seed = activation.seed, None
        return seed

    def is_active(self, key: K) -> bool:
        """Whether ``key`` has an activation taking messages now (no spawn, no checkpoint)."""
        activation = self._live.get(key)
        return activation is not None and activation.phase is _Phase.ACTIVE

    def passivate(self, key: K) -> None:
        """Passivate ``key`` now, as the idle sweep would: its actor handles what is queued,
        runs ``on_stop`` and ends; the next message starts a fresh activation. For an actor
        that knows it has nothing left to do (an agent gone offline)."""
        activation = self._live.get(key)
        if activation is not None and activation.phase is _Phase.ACTIVE:
            activation.passivate()

    def inject_fault(self, key: K) -> bool:
        """Crash the running actor of ``key`` now, as an unexpected exception would (the
        registry then restarts it, or gives up past the intensity). False if ``key`` has no
        running actor. The messages it was handling fail their asks with `ActorStopped`."""
        activation = self._live.get(key)
        if activation is None or activation.phase is not _Phase.ACTIVE:
            return False
        activation.fault = True
        if activation.scope is not None:
            activation.scope.cancel()
        return True

    def snapshot(self, restart: str | None = None, *, busiest: int = 10) -> TreeNode:
        """This registry as a tree node; its children are the ``busiest`` actors with queued
        messages (one node per key would be far too many)."""
        busy = sorted(
            (a for a in self._live.values() if a.mailbox.depth > 0),
            key=lambda a: -a.mailbox.depth,
        )[:busiest]
        deepest = max((a.mailbox.depth for a in self._live.values()), default=0)
        return TreeNode(
            name=self.kind,
            kind="registry",
            state=self._state.value,
            strategy="one_for_one",
            restart=restart,
            max_restarts=self._max_restarts,
            period_s=self._period_s,
            restarts=self.restarts,
            failures=self.failures,
            live=len(self._live),
            mailbox_depth_max=deepest,
            children=tuple(
                TreeNode(
                    name=a.mailbox.name,
                    kind="actor",
                    restart="transient",
                    mailbox_depth=a.mailbox.depth,
                    mailbox_depth_max=a.mailbox.depth,
                )
                for a in busy
            ),
        )

    async def get(self, key: K) -> RegistryRef[K, M]:
        """The ref for ``key``, activating its actor if needed.

        Waits only if a previous activation of ``key`` is still running ``on_stop``. Raises
        `ShuttingDown` once the registry is draining or not serving.
        """
        return RegistryRef(self, key, await self._resolve(key))

    def get_nowait(self, key: K) -> RegistryRef[K, M]:
        """`get` without a checkpoint, for hot paths whose next step (``tell``/``ask``) awaits
        anyway. Raises `trio.WouldBlock` if a previous activation of ``key`` is still running
        ``on_stop`` (then use `get`), and `ShuttingDown` like `get`."""
        return RegistryRef(self, key, self._resolve_nowait(key))

    async def serve(
        self, *, task_status: trio.TaskStatus[Registry[K, M]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the activations and passivate idle ones until drained or cancelled."""
        if self._state not in (_State.IDLE, _State.STOPPED):
            raise RuntimeError(f"registry {self.kind!r} is already serving")
        self._state = _State.RUNNING
        self._stopped = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started(self)
                await self._passivate_idle_forever()
        finally:
            self._state = _State.STOPPED
            self._nursery = None
            self._stopped.set()

    async def drain(self) -> None:
        """Stop intake, close every mailbox, wait until each actor has drained and run
        ``on_stop``, then end `serve`. No deadline of its own: see `shutdown`."""
        if self._state is _State.DRAINING:
            await self._stopped.wait()
            return
        if self._state is not _State.RUNNING:
            return
        self._state = _State.DRAINING
        for activation in list(self._live.values()):
            if activation.phase is _Phase.ACTIVE:
                activation.passivate()
        while self._live:
            await next(iter(self._live.values())).wait_done()
        self._cancel()
        await self._stopped.wait()

    async def shutdown(self, deadline_s: float) -> None:
        """`drain` for at most ``deadline_s`` seconds, then cancel the actors still running."""
        if self._state in (_State.IDLE, _State.STOPPED):
            return
        with trio.move_on_after(deadline_s):
            await self.drain()
        self._cancel()
        await self._stopped.wait()

    # --- activations ------------------------------------------------------------------------

    def _cancel(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _depths(self) -> Iterator[int]:
        for activation in self._live.values():
            yield activation.mailbox.depth

    def _resolve_nowait(self, key: K) -> _Activation[K, M]:
        """The active activation of ``key``, spawning one; WouldBlock if the previous one is
        still passivating."""
        if self._state is not _State.RUNNING:
            raise ShuttingDown(f"registry {self.kind!r} is not accepting work")
        activation = self._live.get(key)
        if activation is None:
            return self._spawn(key)
        if activation.phase is not _Phase.ACTIVE:
            if activation.task is trio.lowlevel.current_task():
                # The actor itself, draining after ``passivate``, asks for its own ref (to
                # hand it on): waiting for its own end would never return.
                return activation
            raise trio.WouldBlock
        return activation

    async def _resolve(self, key: K) -> _Activation[K, M]:
        while True:
            try:
                activation = self._resolve_nowait(key)
            except trio.WouldBlock:
                await self._live[key].wait_done()
                continue
            await trio.lowlevel.checkpoint()
            return activation

    def _spawn(self, key: K) -> _Activation[K, M]:
        assert self._nursery is not None
        mailbox: Mailbox[M] = Mailbox(f"{self.kind}/{key}", self._mailbox_size)
        mailbox.last_receive_s = trio.current_time()
        activation = _Activation(key, mailbox)
        self._live[key] = activation
        self._generation += 1
        self._nursery.start_soon(self._run_activation, activation, name=self.kind)
        return activation

    async def _run_activation(self, activation: _Activation[K, M]) -> None:
        """Run the key's actor, restarting it after crashes within the restart intensity."""
        intensity: RestartIntensity | None = None  # allocated on the first crash only
        activation.task = trio.lowlevel.current_task()
        final = _Phase.GONE
        metrics = self._metrics
        try:
            while True:
                if metrics is not None:
                    metrics.actor_started(self.kind)
                try:
                    with trio.CancelScope() as activation.scope:
                        await self._factory(activation.key).run(activation.mailbox)
                    activation.scope = None
                    if activation.fault:  # cancelled above by inject_fault
                        activation.fault = False
                        raise InjectedFault(f"fault injected into {activation.mailbox.name}")
                    break
                except Exception as exc:  # supervision boundary
                    activation.scope = None
                    logger.error("actor %s crashed", activation.mailbox.name, exc_info=exc)
                    if intensity is None:
                        intensity = RestartIntensity(self._max_restarts, self._period_s)
                    if not intensity.allow():
                        logger.error(
                            "actor %s crashed %d times in %gs, stopped (other keys unaffected)",
                            activation.mailbox.name,
                            intensity.count,
                            self._period_s,
                        )
                        self.failures += 1
                        if metrics is not None:
                            metrics.actor_failed(self.kind)
                        final = _Phase.FAILED
                        break
                    self.restarts += 1
                    logger.warning(
                        "actor %s restarted (%d of at most %d restarts in %gs)",
                        activation.mailbox.name,
                        intensity.count,
                        self._max_restarts,
                        self._period_s,
                    )
                    if metrics is not None:
                        metrics.actor_restarted(self.kind)
                finally:
                    if metrics is not None:
                        metrics.actor_stopped(self.kind)
        finally:
            if self._live.get(activation.key) is activation:
                del self._live[activation.key]
            self._generation += 1
            activation.retire(final)

    async def _passivate_idle_forever(self) -> None:
        interval_s = self._idle_timeout_s / SWEEPS_PER_IDLE_TIMEOUT
        while True:
            await trio.sleep(interval_s)
            idle_since = trio.current_time() - self._idle_timeout_s
            for activation in self._live.values():
                mailbox = activation.mailbox
                if (
                    activation.phase is _Phase.ACTIVE
                    and mailbox.last_receive_s <= idle_since
                    and mailbox.depth == 0
                ):
                    activation.passivate()


class RegistryRef(Generic[K, M]):
    """Ref to the actor of one key, valid across passivation (it re-activates the key).

    It raises `ActorStopped` once the activation it is bound to gave up after too many crashes,
    and `ShuttingDown` when it would need a new activation while the registry drains.
    """

    __slots__ = ("_activation", "_registry", "key")

    def __init__(self, registry: Registry[K, M], key: K, activation: _Activation[K, M]) -> None:
        self._registry = registry
        self.key = key
        self._activation = activation

    @property
    def name(self) -> str:
        """``kind/key``."""
        return self._activation.mailbox.name

    @property
    def alive(self) -> bool:
        """False once the bound activation failed; a passivated key counts as alive."""
        return self._activation.phase is not _Phase.FAILED

    @property
    def mailbox_depth(self) -> int:
        """Messages queued for the current activation (0 when passivated)."""
        activation = self._activation
        return activation.mailbox.depth if activation.phase is _Phase.ACTIVE else 0

    async def tell(self, msg: M) -> None:
        """Queue ``msg``, activating the key if it was passivated; waits while full."""
        while True:
            activation = await self._current()
            try:
                await activation.mailbox.send(msg)
                return
            except ActorStopped:
                if activation.phase is _Phase.FAILED:
                    raise
                # Passivated between resolving and sending: nothing was queued, try again.

    def tell_nowait(self, msg: M) -> None:
        """Queue ``msg`` or raise `trio.WouldBlock` (mailbox full, or the key is passivating)."""
        while True:
            activation = self._current_nowait()
            try:
                activation.mailbox.send_nowait(msg)
                return
            except ActorStopped:
                if activation.phase is _Phase.FAILED:
                    raise

    async def ask(self, make_msg: Callable[[Reply[R]], M]) -> R:
        """Like `ActorRef.ask`; if the key was passivated before the message was queued, the
        message is rebuilt with a fresh reply and sent to the new activation."""
        while True:
            activation = self._activation
            if activation.phase is not _Phase.ACTIVE:  # the hot path skips the coroutine
                activation = await self._current()
            mailbox = activation.mailbox
            reply: Reply[R] = Reply()
            msg = make_msg(reply)
            mailbox.register_ask(msg, reply)
            try:
                try:
                    await mailbox.send_for_reply(msg)
                except ActorStopped:
                    if activation.phase is _Phase.FAILED:
                        raise
                    continue  # not queued: safe to send again
                return await reply.wait()
            finally:
                mailbox.forget_ask(msg, reply)

    def _current_nowait(self) -> _Activation[K, M]:
        activation = self._activation
        if activation.phase is _Phase.FAILED:
            raise ActorStopped(activation.mailbox.name)
        if activation.phase is not _Phase.ACTIVE:
            activation = self._activation = self._registry._resolve_nowait(self.key)
        return activation

    async def _current(self) -> _Activation[K, M]:
        activation = self._activation
        if activation.phase is _Phase.FAILED:
            raise ActorStopped(activation.mailbox.name)
        if activation.phase is not _Phase.ACTIVE:
            activation = self._activation = await self._registry._resolve(self.key)
        return activation
