"""Actors: a task that owns its state and handles messages from one bounded mailbox, in order.

Callers never hold an actor, only an `ActorRef` (or anything shaped like `Ref`): ``tell``
waits while the mailbox is full (backpressure), ``ask`` sends a message carrying a one-shot
`Reply` and waits for the answer under the caller's deadline (``trio.fail_after``).

The `Mailbox` belongs to whoever started the actor (a supervisor, a registry, `start_actor`),
not to the actor instance, so it survives a crash: a restarted instance reads the messages
that were still queued, and refs stay valid. Closing the mailbox is the stop signal: the actor
handles what is queued, runs ``on_stop`` and returns.

Asks and failures:

* a handler answers with ``reply.send(value)`` or ``reply.fail(exc)``;
* an `EngineError` raised by ``handle`` for a message whose ask is unanswered goes to the
  asker, and the actor carries on (domain rules are enforced by raising);
* any other exception crashes the actor; the asks of the messages it had taken fail with
  `ActorStopped`, queued messages stay for the next instance;
* when the actor is gone for good (`Mailbox.finish`), every unanswered ask fails with
  `ActorStopped`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from engine.errors import ActorStopped, EngineError

M = TypeVar("M")
R = TypeVar("R")
M_contra = TypeVar("M_contra", contravariant=True)


class Reply(Generic[R]):
    """One-shot answer to an ask: exactly one of `send` or `fail` takes effect.

    A handler may keep the reply and answer later (e.g. after a storage commit). Answering a
    reply that is already done is ignored on purpose: the runtime fails replies with
    `ActorStopped` when the actor crashes or stops, and a late answer has nobody to go to.

    One task waits (the asker), so the reply parks that task itself rather than through a
    ``trio.Event`` (whose parking lot is built for many waiters): every routed message makes
    one, and the event's construction, parking and wake-up were a visible share of its CPU.
    """

    __slots__ = ("_done", "_error", "_value", "_waiter")

    _value: R

    def __init__(self) -> None:
        self._done = False
        self._error: Exception | None = None
        self._waiter: trio.lowlevel.Task | None = None

    @property
    def done(self) -> bool:
        """Whether the reply has been answered (or failed by the runtime)."""
        return self._done

    def send(self, value: R) -> None:
        """Answer the asker with ``value``."""
        if not self._done:
            self._value = value
            self._finish()

    def fail(self, exc: Exception) -> None:
        """Make the asker's ``ask`` raise ``exc``."""
        if not self._done:
            self._error = exc
            self._finish()

    def _finish(self) -> None:
        self._done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._waiter = None  # cancelled: a later answer wakes nobody
        return trio.lowlevel.Abort.SUCCEEDED

    async def wait(self) -> R:
        """Wait for the answer; raises what `fail` was given. Cancellable at any point."""
        if self._done:
            await trio.lowlevel.checkpoint()
        else:
            if self._waiter is not None:
                raise RuntimeError("a reply has one waiter: the asker")
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        if self._error is not None:
            raise self._error
        return self._value


# The name the ``ask`` signature uses in the design brief; it is the same class.
ReplyChannel = Reply


class _PendingAsk:
    """An unanswered ask, known to its mailbox so the runtime can fail it on crash or stop."""

    __slots__ = ("msg", "reply", "taken")

    def __init__(self, msg: object, reply: Reply[Any]) -> None:
        self.msg = msg  # kept alive so that its id() stays unique while pending
        self.reply = reply
        self.taken = False  # handed to an actor instance (lost if that instance crashes)


class Mailbox(Generic[M]):
    """Bounded queue of one actor, owned by whoever runs the actor, stable across restarts.

    Runtime object: callers use refs, the owner uses `close` and `finish`, and `Actor.run`
    reads it. Unanswered asks are tracked here (lazily: an idle mailbox carries no dict), keyed
    by the id of their message, which stays alive while the ask is pending. So are the
    messages a crashed instance had taken but not reached (the "leftover"), which the next
    instance handles first.
    """

    __slots__ = ("_asks", "_leftover", "_receive", "_send", "last_receive_s", "name", "size")

    def __init__(self, name: str, size: int) -> None:
        if size < 0:
            raise ValueError(f"mailbox size must be >= 0, got {size}")
        self.name = name
        self.size = size
        self._asks: dict[int, _PendingAsk] | None = None
        self._leftover: list[M] | None = None
        self.open()

    def open(self) -> None:
        """(Re)open with fresh channels: a supervisor reopens its mailboxes when it restarts."""
        self._send, self._receive = trio.open_memory_channel[M](self.size)
        # When the actor last took a batch (trio clock); the registry's idle sweep reads it.
        self.last_receive_s = -math.inf

    @property
    def receive_channel(self) -> trio.MemoryReceiveChannel[M]:
        """The end `Actor.run` reads; replaced by `open`, so read it once per run."""
        return self._receive

    @property
    def depth(self) -> int:
        """Messages queued and not yet taken by the actor."""
        leftover = len(self._leftover) if self._leftover else 0
        return self._send.statistics().current_buffer_used + leftover

    @property
    def closed(self) -> bool:
        """Whether the mailbox refuses new messages."""
        return self._send.statistics().open_send_channels == 0

    async def send(self, msg: M) -> None:
        """Queue ``msg``, waiting while full; `ActorStopped` if the mailbox is closed."""
        try:
            await self._send.send(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise ActorStopped(self.name) from exc

    def send_nowait(self, msg: M) -> None:
        """Queue ``msg`` or raise `trio.WouldBlock` if full; `ActorStopped` if closed."""
        try:
            self._send.send_nowait(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise ActorStopped(self.name) from exc

    def close(self) -> None:
        """Stop signal: refuse new messages; the actor drains the queue, then stops."""
        self._send.close()

    def finish(self) -> None:
        """The actor is gone for good: drop the queue and fail every unanswered ask."""
        self._send.close()
        self._receive.close()
        self._leftover = None
        asks, self._asks = self._asks, None
        if asks:
            for pending in asks.values():
                pending.reply.fail(ActorStopped(self.name))

    def register_ask(self, msg: M, reply: Reply[R]) -> None:
        """Track ``reply`` until `forget_ask`, so a crash or stop can fail it."""
        if self._asks is None:
            self._asks = {}
        self._asks[id(msg)] = _PendingAsk(msg, reply)

    def forget_ask(self, msg: M, reply: Reply[R]) -> None:
        """Stop tracking ``reply`` (the asker has its answer or gave up)."""
        asks = self._asks
        if asks is not None:
            pending = asks.get(id(msg))
            if pending is not None and pending.reply is reply:
                del asks[id(msg)]

    def mark_taken(self, batch: Sequence[M]) -> None:
        """Record that ``batch`` was handed to the running instance."""
        asks = self._asks
        if asks:
            for msg in batch:
                pending = asks.get(id(msg))
                if pending is not None and pending.msg is msg:
                    pending.taken = True

    def take_leftover(self) -> list[M]:
        """What a crashed instance had taken but not reached; empty if none."""
        leftover, self._leftover = self._leftover, None
        return leftover or []

    def crashed(self, batch: list[M], reached: M | None) -> None:
        """The running instance crashed (or was cancelled) while handling ``batch``.

        The messages after ``reached`` (the one being handled) are kept for the next instance,
        with their asks still pending; ``reached`` and those before it are lost, so a message
        that crashes the actor is not redelivered. ``reached`` None means it is unknown (an
        overridden `Actor.handle_batch` that does not call ``super()``): all of them are lost.
        The asks of every message taken and not kept fail with `ActorStopped`.
        """
        index = next((i for i, msg in enumerate(batch) if msg is reached), len(batch))
        leftover = batch[index + 1 :]
        asks = self._asks
        if asks:
            for msg in leftover:
                pending = asks.get(id(msg))
                if pending is not None and pending.msg is msg:
                    pending.taken = False
            for pending in asks.values():
                if pending.taken:
                    pending.reply.fail(ActorStopped(self.name))
        if leftover:
            self._leftover = leftover

    def fail_ask(self, msg: M, exc: Exception) -> bool:
        """Send ``exc`` to the asker of ``msg``; False if nobody is waiting for it."""
        asks = self._asks
        pending = asks.get(id(msg)) if asks else None
        if pending is None or pending.msg is not msg or pending.reply.done:
            return False
        pending.reply.fail(exc)
        return True

    async def send_for_reply(self, msg: M) -> None:
        """Queue ``msg`` whose asker is about to wait for the reply: ``send_nowait`` when there
        is room (the hot path: no scheduling round of its own, since waiting for the reply is
        the checkpoint), else wait like `send`. `ActorStopped` if the mailbox is closed."""
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            await self.send(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise ActorStopped(self.name) from exc

    async def ask(self, msg: M, reply: Reply[R]) -> R:
        """Send ``msg`` (which carries ``reply``) and wait for the answer."""
        self.register_ask(msg, reply)
        try:
            await self.send_for_reply(msg)
            return await reply.wait()
        finally:
            self.forget_ask(msg, reply)


class Actor(Generic[M]):
    """Base class: override `handle` (or `handle_batch`), optionally `on_start`/`on_stop`.

    A fresh instance is built for every (re)start, so all state is rebuilt in `on_start`
    (e.g. from storage). Subclasses with many live instances should declare ``__slots__``.
    """

    __slots__ = ("_mailbox", "_reached", "_stop_requested")

    _mailbox: Mailbox[M]
    _reached: M | None  # the message being handled, to know what a crash did not reach

    async def on_start(self) -> None:
        """Rebuild state before the first message; runs on every (re)start."""

    async def on_stop(self) -> None:
        """Runs after a graceful stop only (mailbox closed and drained, or `stop`), not on a
        crash or a cancel, where the state may be half-updated."""

    async def handle(self, msg: M) -> None:
        """Handle one message. Raise an `EngineError` to fail its ask; anything else crashes."""
        raise NotImplementedError(f"{type(self).__name__} must override handle or handle_batch")

    async def handle_batch(self, msgs: Sequence[M]) -> None:
        """Handle messages that were queued together, in order.

        Override to coalesce work (one storage commit, one fan-out pass per batch); calling
        ``super().handle_batch(msgs)`` first keeps the per-message routing of domain errors
        to askers. An exception escaping this method crashes the actor.
        """
        for msg in msgs:
            self._reached = msg
            try:
                await self.handle(msg)
            except EngineError as exc:
                if not self._mailbox.fail_ask(msg, exc):
                    raise

    def stop(self) -> None:
        """Exit normally after the current batch (a transient child is then not restarted).

        Messages still queued stay in the mailbox for a restarted instance; if there is none,
        they are dropped and their asks fail with `ActorStopped`.
        """
        self._stop_requested = True

    async def run(
        self, mailbox: Mailbox[M], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The actor's loop, called by the runtime (not overridden): ``on_start``, report
        started, then take one message with ``await receive()``, drain what is already queued
        with ``receive_nowait()`` and hand the batch to `handle_batch`, until the mailbox is
        closed and empty (then ``on_stop``) or `stop` is called.

        On a crash or cancel, the messages of the batch not reached yet stay in the mailbox
        for the next instance, the asks of the others fail with `ActorStopped`, and the
        exception propagates to the supervisor.
        """
        self._mailbox = mailbox
        self._stop_requested = False
        receive = mailbox.receive_channel
        batch_limit = max(1, mailbox.size)
        batch: list[M] = []
        clock = trio.lowlevel.current_clock()  # trio.current_time() without two call layers
        try:
            await self.on_start()
            task_status.started()
            while not self._stop_requested:
                batch = mailbox.take_leftover()
                if not batch:
                    try:
                        batch = [await receive.receive()]
                    except trio.EndOfChannel:
                        break
                    while len(batch) < batch_limit:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                mailbox.last_receive_s = clock.current_time()
                mailbox.mark_taken(batch)
                self._reached = None
                await self.handle_batch(batch)
                batch = []
        except BaseException:
            mailbox.crashed(batch, self._reached if batch else None)
            raise
        await self.on_stop()


class Ref(Protocol[M_contra]):
    """What callers need from an actor's address: `ActorRef` and ``RegistryRef`` fit it."""

    @property
    def name(self) -> str: ...

    @property
    def alive(self) -> bool: ...

    @property
    def mailbox_depth(self) -> int: ...

    async def tell(self, msg: M_contra) -> None: ...

    def tell_nowait(self, msg: M_contra) -> None: ...

    async def ask(self, make_msg: Callable[[Reply[R]], M_contra]) -> R: ...


@attrs.frozen
class ActorRef(Generic[M]):
    """Address of an actor: cheap to share, the only way to reach it, valid across restarts."""

    name: str
    _mailbox: Mailbox[M] = attrs.field(repr=False)

    @property
    def alive(self) -> bool:
        """Whether the mailbox still accepts messages."""
        return not self._mailbox.closed

    @property
    def mailbox_depth(self) -> int:
        """Messages queued and not yet taken by the actor."""
        return self._mailbox.depth

    async def tell(self, msg: M) -> None:
        """Queue ``msg``, waiting while the mailbox is full; `ActorStopped` if it is closed."""
        await self._mailbox.send(msg)

    def tell_nowait(self, msg: M) -> None:
        """Queue ``msg`` or raise `trio.WouldBlock` when full; `ActorStopped` if closed."""
        self._mailbox.send_nowait(msg)

    async def ask(self, make_msg: Callable[[Reply[R]], M]) -> R:
        """Send ``make_msg(reply)`` and wait for the handler's answer.

        The caller sets the deadline (``with trio.fail_after(...)``); on cancel the message
        may still be handled, and its late answer is dropped. Raises what the handler passed
        to ``reply.fail`` or raised as an `EngineError`, or `ActorStopped` if the actor
        stopped or crashed before answering.
        """
        reply: Reply[R] = Reply()
        return await self._mailbox.ask(make_msg(reply), reply)


async def start_actor(
    nursery: trio.Nursery, actor: Actor[M], *, name: str, mailbox_size: int
) -> ActorRef[M]:
    """Run ``actor`` unsupervised in ``nursery``; returns once its ``on_start`` has finished.

    The actor lives until it calls `Actor.stop` or the nursery is cancelled; a crash
    propagates into the nursery. For restarts and graceful shutdown use a ``Supervisor``.
    """
    mailbox: Mailbox[M] = Mailbox(name, mailbox_size)
    await nursery.start(_run_unsupervised, actor, mailbox)
    return ActorRef(name, mailbox)


async def _run_unsupervised(
    actor: Actor[M], mailbox: Mailbox[M], *, task_status: trio.TaskStatus[None]
) -> None:
    try:
        await actor.run(mailbox, task_status=task_status)
    finally:
        mailbox.finish()
