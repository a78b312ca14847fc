"""Supervisors, after Erlang/OTP: restart crashed children, and give up loudly when that fails.

* Strategies: `RestartStrategy.ONE_FOR_ONE` restarts only the child that exited;
  ``ONE_FOR_ALL`` terminates the others (reverse start order) and restarts all in order;
  ``REST_FOR_ONE`` does that for the child and those started after it.
* Restart types: ``PERMANENT`` children are always restarted, ``TRANSIENT`` only after a crash,
  ``TEMPORARY`` never (not even when a sibling's restart terminated them).
* Intensity: more than ``max_restarts`` restarts within ``period_s`` seconds and the supervisor
  terminates all children and raises `RestartIntensityExceeded` to its parent. Nested
  intensities multiply, so keep the upper levels low.
* Children start in order (each after the previous one's ``on_start``) and stop in reverse.

Each actor child has a `Mailbox` owned by the supervisor, so its `ActorRef` stays valid across
restarts and the messages still queued when it crashed go to the next instance; the messages it
was handling are lost and their asks fail with `ActorStopped`. A `Service` (a nested
supervisor, a registry) can be a child too, through a `ServiceSpec`.

A child's exception stops at the supervision boundary (``except Exception``) and is logged;
cancellation is never swallowed. Every restart is logged and counted (``EngineMetrics``), and
`Supervisor.snapshot` describes the live tree (children, restarts, mailbox depths) as
`TreeNode` values, which is what ``GET /api/v1/ops/supervision`` shows.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar, overload

import attrs
import trio

from engine.actor import Actor, ActorRef, Mailbox
from engine.errors import InjectedFault, RestartIntensityExceeded, ShuttingDown
from engine.metrics import EngineMetrics

logger = logging.getLogger(__name__)

M = TypeVar("M")

DEFAULT_MAILBOX_SIZE = 64


class RestartStrategy(enum.Enum):
    """Which children a supervisor restarts when one exits and must be restarted."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class RestartType(enum.Enum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after a crash, not after a normal exit
    TEMPORARY = "temporary"  # never


@attrs.frozen(kw_only=True)
class TreeNode:
    """One node of the live supervision tree, as the operators' endpoint shows it.

    ``kind`` is "supervisor", "registry" (virtual actors, one_for_one per key), "service" (a
    task) or "actor". ``restarted`` counts how often its parent restarted this node;
    ``restarts`` the restarts of its children (a registry's: of its keys) since the server
    started; ``failures`` the keys a registry stopped after they crashed past the intensity.
    """

    name: str
    kind: str
    state: str = "running"
    strategy: str | None = None
    restart: str | None = None  # how this node is restarted by its parent
    max_restarts: int | None = None
    period_s: float | None = None
    restarted: int = 0
    restarts: int = 0
    failures: int = 0
    live: int | None = None  # a registry's live activations
    mailbox_depth: int | None = None  # an actor's queued messages
    mailbox_depth_max: int | None = None  # deepest mailbox below this node
    children: tuple[TreeNode, ...] = ()


class Service(Protocol):
    """A long-running child that is not an actor: a nested `Supervisor`, a ``Registry``."""

    async def serve(self, *, task_status: trio.TaskStatus[Any] = ...) -> None:
        """Run until drained or cancelled; raise to report a crash."""

    async def drain(self) -> None:
        """Stop intake, let queued work finish, return once `serve` has returned."""


@attrs.frozen
class ChildSpec(Generic[M]):
    """An actor child; ``factory`` builds a fresh instance on every (re)start."""

    name: str
    factory: Callable[[], Actor[M]]
    restart: RestartType = RestartType.PERMANENT
    mailbox_size: int = DEFAULT_MAILBOX_SIZE


@attrs.frozen
class ServiceSpec:
    """A service child; a restart runs ``service.serve()`` again on the same instance."""

    name: str
    service: Service
    restart: RestartType = RestartType.PERMANENT


class RestartIntensity:
    """Sliding window of restart times: at most ``max_restarts`` within ``period_s``."""

    __slots__ = ("_max_restarts", "_period_s", "_times")

    def __init__(self, max_restarts: int, period_s: float) -> None:
        if max_restarts < 0 or period_s <= 0:
            raise ValueError("max_restarts must be >= 0 and period_s > 0")
        self._max_restarts = max_restarts
        self._period_s = period_s
        self._times: deque[float] = deque()

    def allow(self) -> bool:
        """Record a restart now; False if that makes too many within the period."""
        now = trio.current_time()
        times = self._times
        while times and times[0] <= now - self._period_s:
            times.popleft()
        times.append(now)
        return len(times) <= self._max_restarts

    def reset(self) -> None:
        """Forget past restarts (a fresh start of the supervisor)."""
        self._times.clear()

    @property
    def count(self) -> int:
        """Restarts within the current window (as of the last `allow`)."""
        return len(self._times)

    @property
    def max_restarts(self) -> int:
        return self._max_restarts

    @property
    def period_s(self) -> float:
        return self._period_s


class _State(enum.Enum):
    IDLE = "idle"  # never served
    STARTING = "starting"  # starting the initial children
    RUNNING = "running"
    DRAINING = "draining"  # no intake; children stopping in reverse order
    STOPPED = "stopped"  # serve returned; may serve again (a parent's restart)


class _Child:
    """Runtime state of one child; the mailbox outlives the instances it feeds."""

    __slots__ = ("done", "mailbox", "restarts", "run_id", "scope", "spec")

    def __init__(self, spec: ChildSpec[Any] | ServiceSpec) -> None:
        self.spec = spec
        self.mailbox: Mailbox[Any] | None = (
            Mailbox(spec.name, spec.mailbox_size) if isinstance(spec, ChildSpec) else None
        )
        self.run_id = 0
        self.restarts = 0
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.done.set()  # not running


@attrs.frozen
class _Exit:
    child: _Child
    run_id: int
    error: Exception | None


class _StartedFlag:
    """Forwards ``started()`` and remembers it, so a child that crashed before reporting
    started can still release the supervisor waiting in ``nursery.start``."""

    __slots__ = ("_status", "called")

    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self._status = status
        self.called = False

    def started(self, value: object = None) -> None:
        self.called = True
        self._status.started()


class Supervisor:
    """Runs children, restarts them per strategy and restart type, escalates past intensity.

    Use: build with ``children``, then ``ref = await nursery.start(sup.serve)`` (``started``
    reports the supervisor once every initial child has run ``on_start``); get refs with
    `ref`, add dynamic children with `add_child`, stop with `shutdown` or `drain`.
    """

    def __init__(
        self,
        strategy: RestartStrategy = RestartStrategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period_s: float = 5.0,
        *,
        children: Sequence[ChildSpec[Any] | ServiceSpec] = (),
        name: str = "supervisor",
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.name = name
        self._strategy = strategy
        self._intensity = RestartIntensity(max_restarts, period_s)
        self._metrics = metrics
        self._children: dict[str, _Child] = {}
        for spec in children:
            self._register(spec)
        self._state = _State.IDLE
        self._restarts = 0
        self._restarts_done = 0  # restarts whose children have all started again
        self._restart_done = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._exits: trio.MemorySendChannel[_Exit] | None = None
        self._stopped = trio.Event()
        if metrics is not None:
            metrics.track_mailboxes(name, self._depths)

    # --- public API -------------------------------------------------------------------------

    def ref(self, name: str) -> ActorRef[Any]:
        """The stable ref of actor child ``name`` (KeyError if there is none)."""
        mailbox = self._children[name].mailbox
        if mailbox is None:
            raise KeyError(f"{name!r} is a service, not an actor")
        return ActorRef(name, mailbox)

    @property
    def child_names(self) -> list[str]:
        """Children in start order."""
        return list(self._children)

    def service(self, name: str) -> Service:
        """The service of child ``name`` (KeyError if there is none, or it is an actor)."""
        spec = self._children[name].spec
        if not isinstance(spec, ServiceSpec):
            raise KeyError(f"{name!r} is an actor, not a service")
        return spec.service

    def snapshot(self, restart: str | None = None) -> TreeNode:
        """The live tree below this supervisor, now (no checkpoint, nothing awaited)."""
        children = []
        for child in self._children.values():
            spec = child.spec
            running = not child.done.is_set()
            if isinstance(spec, ServiceSpec):
                describe = getattr(spec.service, "snapshot", None)
                node = (
                    describe(spec.restart.value)
                    if callable(describe)
                    else TreeNode(name=spec.name, kind="service", restart=spec.restart.value)
                )
            else:
                assert child.mailbox is not None
                node = TreeNode(
                    name=spec.name,
                    kind="actor",
                    restart=spec.restart.value,
                    mailbox_depth=child.mailbox.depth,
                    mailbox_depth_max=child.mailbox.depth,
                )
            node = attrs.evolve(
                node,
                name=spec.name,
                state=node.state if running else "stopped",
                restarted=child.restarts,
            )
            children.append(node)
        depths = [c.mailbox_depth_max for c in children if c.mailbox_depth_max is not None]
        return TreeNode(
            name=self.name,
            kind="supervisor",
            state=self._state.value,
            strategy=self._strategy.value,
            restart=restart,
            max_restarts=self._intensity.max_restarts,
            period_s=self._intensity.period_s,
            restarts=self._restarts,
            mailbox_depth_max=max(depths, default=0),
            children=tuple(children),
        )

    async def wait_restarts(self, count: int) -> None:
        """Return once ``count`` restarts since the supervisor was built have finished: the
        children they stopped have all started again (an operator's check, a test's cue)."""
        while self._restarts_done < count:
            await self._restart_done.wait()

    @overload
    async def add_child(self, spec: ChildSpec[M]) -> ActorRef[M]: ...

    @overload
    async def add_child(self, spec: ServiceSpec) -> None: ...

    async def add_child(self, spec: ChildSpec[M] | ServiceSpec) -> ActorRef[M] | None:
        """Add a child after the others and start it now if serving (after its ``on_start``).

        Raises `ShuttingDown` while draining, ValueError if the name is taken. If the caller
        is cancelled during the start, the child is removed again.
        """
        if self._state is _State.DRAINING:
            raise ShuttingDown(self.name)
        child = self._register(spec)
        if self._state in (_State.STARTING, _State.RUNNING):
            try:
                await self._start(child)
            except BaseException:
                self._remove(child)
                raise
        else:
            await trio.lowlevel.checkpoint()
        return None if child.mailbox is None else ActorRef(spec.name, child.mailbox)

    async def stop_child(self, name: str) -> None:
        """Stop child ``name`` gracefully (drain its mailbox, ``on_stop``) and forget it.

        Its ref then raises `ActorStopped`. If the caller is cancelled (e.g. its
        ``fail_after``), the child is cancelled rather than left draining unsupervised.
        """
        child = self._children.pop(name)
        try:
            await self._stop_gracefully(child)
        finally:
            child.scope.cancel()
            if child.mailbox is not None:
                child.mailbox.finish()

    async def serve(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children in order, then supervise until drained or cancelled.

        Raises `RestartIntensityExceeded` (not wrapped in a group) when it gives up. On any
        exit every mailbox is closed and unanswered asks fail with `ActorStopped`; serving
        again (a parent's restart) reopens them, so refs stay valid.
        """
        if self._state not in (_State.IDLE, _State.STOPPED):
            raise RuntimeError(f"supervisor {self.name!r} is already serving")
        self._state = _State.STARTING
        self._stopped = trio.Event()
        self._intensity.reset()
        escalation: RestartIntensityExceeded | None = None
        exits_send, exits_recv = trio.open_memory_channel[_Exit](math.inf)  # one per child run
        try:
            # Channels outermost: children report into them until the nursery has joined them.
            async with exits_send, exits_recv, trio.open_nursery() as nursery:
                self._nursery = nursery
                self._exits = exits_send
                for child in list(self._children.values()):
                    if child.mailbox is not None and child.mailbox.closed:
                        child.mailbox.open()
                    await self._start(child)
                if self._state is _State.STARTING:
                    self._state = _State.RUNNING
                task_status.started(self)
                escalation = await self._supervise(exits_recv)
                nursery.cancel_scope.cancel()
        finally:
            self._state = _State.STOPPED
            self._nursery = None
            self._exits = None
            for child in reversed(self._children.values()):
                if child.mailbox is not None:
                    child.mailbox.finish()
            self._stopped.set()
        if escalation is not None:
            raise escalation

    async def drain(self) -> None:
        """Stop intake; close the children's mailboxes in reverse start order, letting each
        drain and run ``on_stop`` before the next; then end `serve`. No deadline of its own:
        use `shutdown`, or put one around it."""
        if self._state is _State.DRAINING:
            await self._stopped.wait()
            return
        if self._state not in (_State.STARTING, _State.RUNNING):
            return
        self._state = _State.DRAINING
        for child in reversed(list(self._children.values())):
            await self._stop_gracefully(child)
        self._cancel()
        await self._stopped.wait()

    async def shutdown(self, deadline_s: float) -> None:
        """`drain` for at most ``deadline_s`` seconds, then cancel whatever remains.

        Children cancelled at the deadline lose their queued messages; their asks fail with
        `ActorStopped`. Returns once `serve` has returned.
        """
        if self._state in (_State.IDLE, _State.STOPPED):
            return
        with trio.move_on_after(deadline_s):
            await self.drain()
        self._cancel()
        await self._stopped.wait()

    # --- supervision ------------------------------------------------------------------------

    def _register(self, spec: ChildSpec[Any] | ServiceSpec) -> _Child:
        if spec.name in self._children:
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.name!r}")
        child = _Child(spec)
        self._children[spec.name] = child
        return child

    def _remove(self, child: _Child) -> None:
        if self._children.get(child.spec.name) is child:
            del self._children[child.spec.name]
        if child.mailbox is not None:
            child.mailbox.finish()

    def _cancel(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _depths(self) -> Iterator[int]:
        for child in self._children.values():
            if child.mailbox is not None:
                yield child.mailbox.depth

    async def _start(self, child: _Child) -> None:
        """Start one run of ``child``; returns after its ``on_start`` (or its crash)."""
        assert self._nursery is not None
        child.run_id += 1
        child.scope = trio.CancelScope()
        child.done = trio.Event()
        await self._nursery.start(self._run_child, child, child.run_id)

    async def _run_child(
        self, child: _Child, run_id: int, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """One run of a child, inside its own cancel scope (a restart of a sibling cancels it
        there). Its exit, crash or not, goes to `_supervise` unless the supervisor ended it."""
        started = _StartedFlag(task_status)
        error: Exception | None = None
        metrics = self._metrics if child.mailbox is not None else None
        if metrics is not None:
            metrics.actor_started(self.name)
        try:
            with child.scope:
                try:
                    if child.mailbox is not None:
                        assert isinstance(child.spec, ChildSpec)
                        actor = child.spec.factory()
                        await actor.run(child.mailbox, task_status=started)
                    else:
                        assert isinstance(child.spec, ServiceSpec)
                        await child.spec.service.serve(task_status=started)
                except Exception as exc:  # supervision boundary
                    error = exc
                    logger.error(
                        "child %r of supervisor %r crashed",
                        child.spec.name,
                        self.name,
                        exc_info=exc,
                    )
            if not started.called:
                task_status.started()
            if not child.scope.cancelled_caught and self._exits is not None:
                self._exits.send_nowait(_Exit(child, run_id, error))
        finally:
            if metrics is not None:
                metrics.actor_stopped(self.name)
            child.done.set()

    async def _supervise(
        self, exits: trio.MemoryReceiveChannel[_Exit]
    ) -> RestartIntensityExceeded | None:
        """React to child exits one at a time; returns the error to escalate, if any."""
        async for event in exits:
            child = event.child
            if (
                self._state is not _State.RUNNING
                or self._children.get(child.spec.name) is not child
                or child.run_id != event.run_id
            ):
                continue  # stale: the child was stopped, restarted or we are draining
            if not _should_restart(child.spec.restart, event.error):
                self._remove(child)
                continue
            if not self._intensity.allow():
                logger.error("supervisor %r: restart intensity exceeded, giving up", self.name)
                await self._terminate(reversed(list(self._children.values())))
                escalation = RestartIntensityExceeded(
                    f"supervisor {self.name!r}: child {child.spec.name!r} exited too often"
                )
                escalation.__cause__ = event.error
                return escalation
            if self._metrics is not None:
                self._metrics.actor_restarted(self.name)
                if isinstance(child.spec, ServiceSpec):
                    self._metrics.service_restarted(f"{self.name}/{child.spec.name}")
            child.restarts += 1
            self._restarts += 1
            logger.warning(
                "supervisor %r restarts %s after %s (restart %d of at most %d in %gs)",
                self.name,
                child.spec.name,
                "a crash" if event.error is not None else "a normal exit",
                self._intensity.count,
                self._intensity.max_restarts,
                self._intensity.period_s,
            )
            affected = self._affected_by(child)
            await self._terminate(reversed(affected))
            for sibling in affected:
                if sibling is not child and sibling.spec.restart is RestartType.TEMPORARY:
                    self._remove(sibling)  # terminated by the restart: never restarted
            for sibling in affected:
                if self._children.get(sibling.spec.name) is sibling:
                    if sibling is not child:
                        sibling.restarts += 1  # restarted with it (one_for_all, rest_for_one)
                    await self._start(sibling)
            self._restarts_done += 1
            done, self._restart_done = self._restart_done, trio.Event()
            done.set()
        return None

    def _affected_by(self, child: _Child) -> list[_Child]:
        """Children to restart, in start order, when ``child`` must be restarted."""
        order = list(self._children.values())
        if self._strategy is RestartStrategy.ONE_FOR_ALL:
            return order
        if self._strategy is RestartStrategy.REST_FOR_ONE:
            return order[order.index(child) :]
        return [child]

    async def _terminate(self, children: Iterator[_Child]) -> None:
        """Cancel running children one by one (callers pass reverse start order)."""
        for child in children:
            child.scope.cancel()
            await child.done.wait()

    async def _stop_gracefully(self, child: _Child) -> None:
        if child.mailbox is not None:
            child.mailbox.close()
        else:
            assert isinstance(child.spec, ServiceSpec)
            await child.spec.service.drain()
        await child.done.wait()


def _should_restart(restart: RestartType, error: Exception | None) -> bool:
    if restart is RestartType.PERMANENT:
        return True
    if restart is RestartType.TRANSIENT:
        return error is not None
    return False


class TaskService:
    """A plain long-running task as a supervised `Service` (a ticker, a housekeeping loop).

    ``run`` is awaited until it returns (a normal exit) or raises (a crash); `drain` cancels
    it and waits for `serve` to return. Serving again (a restart) calls ``run`` afresh.
    `inject_fault` crashes it as a bug would (the operators' fault injection).
    """

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self._scope: trio.CancelScope | None = None
        self._fault = False
        self._done = trio.Event()
        self._done.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._done = trio.Event()
        self._fault = False
        try:
            with trio.CancelScope() as self._scope:
                task_status.started()
                await self._run()
            if self._fault:
                raise InjectedFault(f"fault injected into {self.name}")
        finally:
            self._scope = None
            self._done.set()

    def inject_fault(self) -> bool:
        """Crash the running task now: it is cancelled and `serve` raises `InjectedFault` at
        the supervision boundary, where a bug's exception lands. False if it is not running."""
        if self._scope is None or self._fault:
            return False
        self._fault = True
        self._scope.cancel()
        return True

    async def drain(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        await self._done.wait()
