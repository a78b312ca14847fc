"""Routing core under load, in-process (no sockets), on real SQLite storage.

C conversations are opened by C visitors and routed to A agents; then visitors send messages
and we measure, at the agents' outboxes, what matters for the routed path (sender ``ask`` →
conversation mailbox → batch handler → group commit, durable, overlapped with the next batch
by storage's writer → ack to the sender + ``send_nowait`` to the agent's outbox → reader):

* ``cpu_us_per_msg``: the process's CPU time (every thread, the SQLite writer's included) over
  the closed-loop phase, divided by the messages delivered. On a shared machine it moves far
  less than wall time, so it is the figure to compare;
* ``p99_ms_at_half_saturation``: the delivery latency of an open loop paced at half the
  closed-loop rate (``--rate`` to choose another), counted from when each message was due;
* ``throughput_msgs_s`` (closed loop) and, as context only, ``ratio_to_ceiling``: the same hops
  on bare Trio memory channels (closed-loop senders asking, a batch-draining actor, a committer
  task draining its queue and waking its submitters, an outbox, a reader), with no domain logic
  and no database. It compares a durable path with an in-memory one, so it is no target.

``--profile`` adds a closed-loop phase of ``--profile-s`` seconds sampled by py-spy (``pip
install -e .[bench]``), whose top frames go into the JSON and the report.

``--idle-visitors N`` instead measures the resident memory of N idle visitor actors.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from bench.common import BenchResult, Progress, latency_summary_ms, peak_rss_mb

SETUP_RETRIES = 20  # a chat's first message, retried as the widget does while storage refuses
SETUP_RETRY_S = 0.25

TARGET_CPU_US = 80.0  # CPU per routed message (issue 12)
TARGET_P99_MS = 20.0  # delivery p99 in an open loop at half the closed-loop rate
SERVE_GC_GEN0 = 50_000  # web.settings.Settings.gc_gen0_threshold: the server's GC, measured


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per phase")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open-loop msgs/s (0: half the closed-loop throughput)",
    )
    parser.add_argument("--senders", type=int, default=256, help="concurrent visitor senders")
    parser.add_argument("--database", default=None, help="SQLite file (default: a temp dir)")
    parser.add_argument(
        "--profile", action="store_true", help="sample a closed loop with py-spy (top frames)"
    )
    parser.add_argument("--profile-s", type=float, default=5.0, help="profiled phase length")
    parser.add_argument("--idle-visitors", type=int, default=0, help="memory mode: N visitors")
    parser.add_argument(
        "--gc-gen0",
        type=int,
        default=SERVE_GC_GEN0,
        help="after setup, as `livechat serve` does at start-up: gc.collect(), gc.freeze(), "
        f"gc.set_threshold(N, 20, 100) (default {SERVE_GC_GEN0}, serve's gc_gen0_threshold; "
        "0: Python's default GC)",
    )


def run(args: argparse.Namespace) -> BenchResult:
    if args.idle_visitors:
        return trio.run(_idle_visitors, args)
    thresholds = gc.get_threshold()
    try:
        return trio.run(_routing, args)
    finally:  # the GC settings are the process's: give them back (tests run this in-process)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


# ---------------------------------------------------------------- routing


async def _routing(args: argparse.Namespace) -> BenchResult:
    from engine import (
        AgentPrincipal,
        ChatAssigned,
        ChatEngine,
        Connection,
        ConnectionMeta,
        EngineConfig,
        EventPush,
        MessageAck,
        PersistenceUnavailable,
        SendMessage,
        VisitorPrincipal,
    )
    from storage import open_storage

    conversations, agents_n, total = args.conversations, args.agents, args.messages
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{args.database or Path(tmp) / 'bench.db'}"
        async with open_storage(url) as storage:
            ws = (await storage.create_workspace(name="bench")).id
            # Every chat must be assignable: a workspace's default cap (1,000 active chats)
            # would leave the rest queued, their messages undelivered.
            await storage.update_workspace(ws, max_concurrent_chats=conversations)
            config = EngineConfig(
                message_rate_per_s=1e9,
                message_burst=10**9,
                agent_response_timeout_s=3600.0,
                ask_timeout_s=120.0,
                storage_timeout_s=120.0,
                outbox_size=1_000_000,
            )
            engine = ChatEngine(storage, config)
            tally = _Tally()
            assigned = 0
            all_assigned = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)
                max_chats = math.ceil(conversations / agents_n) + 1

                async def read(inbox: trio.MemoryReceiveChannel[Any]) -> None:
                    nonlocal assigned
                    async for push in inbox:
                        if isinstance(push, EventPush) and push.event.kind == "message":
                            tally.delivered(push.event.body or "")
                        elif isinstance(push, ChatAssigned):
                            assigned += 1
                            if assigned >= conversations:
                                all_assigned.set()

                for i in range(agents_n):
                    record = await storage.create_agent(
                        ws,
                        username=f"agent{i}",
                        display_name=f"Agent {i}",
                        password_hash=None,
                        max_chats=max_chats,
                    )
                    send, recv = trio.open_memory_channel[Any](config.outbox_size)
                    nursery.start_soon(read, recv)
                    principal = AgentPrincipal(
                        workspace_id=ws,
                        agent_id=record.id,
                        role=record.role,
                        display_name=record.display_name,
                    )
                    await engine.connect(principal, send, connection_id=f"a{i}")
                # Visitors: handles without a transport (nobody reads their pushes here).
                conns: list[Connection] = []
                chats: list[str] = []
                progress = Progress("open chats", conversations)

                async def open_chat(i: int) -> None:
                    visitor = await storage.create_visitor(ws, token_hash=None)
                    send, _recv = trio.open_memory_channel[Any](0)
                    conn = Connection(
                        id=f"v{i}",
                        principal=VisitorPrincipal(workspace_id=ws, visitor_id=visitor.id),
                        outbox=send,
                        meta=ConnectionMeta(),
                    )
                    hello = SendMessage(client_msg_id="hello", text="hi")
                    for attempt in range(SETUP_RETRIES):
                        try:
                            ack = await engine.request(conn, hello)
                            break
                        except PersistenceUnavailable:
                            # 128 chats opening at once queue that many writes before a
                            # commit: the committer calls it a stall and refuses for a
                            # moment; a widget retries, with the same client_msg_id.
                            await trio.sleep(SETUP_RETRY_S * (attempt + 1))
                    else:
                        raise RuntimeError(f"chat {i} could not be opened: storage refused")
                    assert isinstance(ack, MessageAck)
                    conns.append(conn)
                    chats.append(ack.conversation_id)
                    progress.update(len(chats))

                limiter = trio.CapacityLimiter(128)

                async def limited(i: int) -> None:
                    async with limiter:
                        await open_chat(i)

                setup_started = time.perf_counter()
                async with trio.open_nursery() as openers:
                    for i in range(conversations):
                        openers.start_soon(limited, i)
                with trio.move_on_after(120):
                    await all_assigned.wait()
                if not all_assigned.is_set():
                    notes.append(
                        f"only {assigned} of {conversations} chats were assigned after 120 s: "
                        "messages to the others count as lost"
                    )
                await trio.sleep(0.5)
                setup_s = time.perf_counter() - setup_started

                async def send_one(index: int, sent_at: float) -> None:
                    n = index % conversations
                    await engine.request(
                        conns[n],
                        SendMessage(
                            conversation_id=chats[n],
                            client_msg_id=f"b{index}",
                            text=f"t:{sent_at!r}",
                        ),
                    )

                if args.gc_gen0 > 0:  # web.server.tune_gc, after setup rather than start-up
                    gc.collect()
                    gc.freeze()
                    gc.set_threshold(args.gc_gen0, 20, 100)
                batches = engine.metrics.commit_batch_size
                batches_before = (batches.count, batches.sum)
                closed = await _phase(tally, send_one, args.senders, total, rate=0.0, first=0)
                batch_count = batches.count - batches_before[0]
                batch_sum = batches.sum - batches_before[1]
                half_rate = args.rate or closed["throughput_msgs_s"] / 2
                opened = await _phase(
                    tally, send_one, args.senders, total, half_rate, first=total + args.senders
                )
                profile: dict[str, Any] | None = None
                if args.profile:
                    profile = await _profiled_phase(
                        tally,
                        send_one,
                        args.senders,
                        args.profile_s,
                        2 * (total + args.senders),
                        getattr(args, "report", None),
                        notes,
                    )
                nursery.cancel_scope.cancel()
    # Context only: the same hops on bare memory channels (best of three; a ceiling should not
    # be lowered by a noisy neighbour). What matters is CPU per message and the p99 above.
    throughput = closed["throughput_msgs_s"]
    ceiling = max([await _ceiling(max(total, 100_000), args.senders) for _ in range(3)])
    ratio = round(throughput / ceiling, 4) if ceiling else None
    cpu_us = closed["cpu_us_per_msg"]
    p99_half = opened["p99_ms"]
    lost = closed["lost"] + opened["lost"]
    results: dict[str, Any] = {
        "cpu_us_per_msg": cpu_us,
        "p99_ms_at_half_saturation": p99_half,
        "half_saturation_msgs_s": round(half_rate, 1),
        "throughput_msgs_s": throughput,
        "p50_ms": closed["p50_ms"],
        "p99_ms": closed["p99_ms"],
        "p50_ms_at_half_saturation": opened["p50_ms"],
        "cpu_us_per_msg_at_half_saturation": opened["cpu_us_per_msg"],
        "ceiling_msgs_s": round(ceiling, 1),
        "ratio_to_ceiling": ratio,
        "setup_s": round(setup_s, 2),
        "setup_chats_s": round(conversations / setup_s, 1),
        # messages per conversation-actor commit (append_many) in the closed loop
        "conversation_batch_mean": round(batch_sum / batch_count, 2) if batch_count else None,
        "conversations": conversations,
        "agents": agents_n,
        "sent": 2 * total,
        "delivered": closed["delivered"] + opened["delivered"],
        "lost": lost,
        "assigned_chats": assigned,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "closed_loop": closed,
        "open_loop_half_saturation": opened,
        "targets": {
            "cpu_us_per_msg": {
                "target": f"<= {TARGET_CPU_US}",
                "measured": cpu_us,
                "met": None if cpu_us is None else cpu_us <= TARGET_CPU_US,
            },
            "p99_ms_at_half_saturation": {
                "target": f"<= {TARGET_P99_MS} at {half_rate:.0f} msgs/s",
                "measured": p99_half,
                "met": None if p99_half is None else p99_half <= TARGET_P99_MS,
            },
            "lost": {"target": "0", "measured": lost, "met": lost == 0},
        },
    }
    if profile is not None:
        results["profile"] = profile
    return BenchResult(
        name="routing",
        parameters={
            "conversations": conversations,
            "agents": agents_n,
            "messages": total,
            "rate": args.rate,
            "senders": args.senders,
            "gc": f"serve's: freeze, gen0 {args.gc_gen0}" if args.gc_gen0 > 0 else "Python's",
            "profile_s": args.profile_s if args.profile else None,
        },
        results=results,
        ceiling={
            "msgs_s": round(ceiling, 1),
            "pipeline": "ask -> mailbox -> batch -> commit queue -> wake -> ack + outbox -> reader",
        },
        ratio_to_ceiling=ratio,
        notes=notes,
        series={
            "latency:closed loop": closed.pop("latency_s"),
            "latency:half saturation": opened.pop("latency_s"),
        },
    )


class _Tally:
    """What the agents' readers saw in the current phase: latencies and a count."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, expected: int) -> None:
        self.latencies: list[float] = []
        self.count = 0
        self.expected = expected
        self.done = trio.Event()

    def delivered(self, body: str) -> None:
        if body.startswith("t:"):
            self.latencies.append(time.perf_counter() - float(body[2:]))
            self.count += 1
            if self.count >= self.expected:
                self.done.set()


async def _phase(
    tally: _Tally,
    send: Callable[[int, float], Awaitable[None]],
    senders: int,
    total: int,
    rate: float,
    *,
    first: int,
) -> dict[str, Any]:
    """``total`` messages from ``senders`` workers: closed loop (``rate`` 0) or paced at
    ``rate`` msgs/s in all. Paced, a message's latency counts from when it was due, not from
    when a late worker got to it (no coordinated omission)."""
    tally.reset(total)
    sent = 0
    interval = senders / rate if rate > 0 else 0.0

    async def worker(w: int) -> None:
        nonlocal sent
        index = w
        # Paced, the workers take turns (worker w's messages are due at start + (w + k *
        # senders) / rate): one message every 1/rate seconds, not a burst of ``senders`` each
        # interval, which would measure the closed loop's queueing again.
        due = start + w / rate if interval else 0.0
        if interval:
            await trio.sleep(max(0.0, due - time.perf_counter()))
        while sent < total:
            sent += 1
            await send(first + index, due if interval else time.perf_counter())
            index += senders
            if interval:
                due += interval
                await trio.sleep(max(0.0, due - time.perf_counter()))

    pauses = _GcPauses()
    gc.callbacks.append(pauses.callback)
    cpu_started = time.process_time()
    start = time.perf_counter()
    try:
        async with trio.open_nursery() as workers:
            for w in range(senders):
                workers.start_soon(worker, w)
        with trio.move_on_after(max(60.0, 2 * total / rate if rate else 0.0)):
            await tally.done.wait()
    finally:
        gc.callbacks.remove(pauses.callback)
    elapsed = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_started
    delivered = tally.count
    return {
        "offered_msgs_s": round(rate, 1) if rate else None,
        "throughput_msgs_s": round(delivered / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_us_per_msg": round(cpu_s / delivered * 1e6, 1) if delivered else None,
        "elapsed_s": round(elapsed, 2),
        **latency_summary_ms(tally.latencies),
        "sent": total,
        "delivered": delivered,
        "lost": total - delivered,
        # the cyclic GC's stop-the-world pauses: what a latency tail may be made of
        "gc_collections": pauses.count,
        "gc_pause_total_ms": round(pauses.total_s * 1e3, 1),
        "gc_pause_max_ms": round(pauses.max_s * 1e3, 1),
        "latency_s": tally.latencies[:: max(1, len(tally.latencies) // 2000)],
    }


class _GcPauses:
    """Collections and their pauses, from ``gc.callbacks`` (all generations)."""

    def __init__(self) -> None:
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self._started = 0.0

    def callback(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.count += 1
        self.total_s += pause
        self.max_s = max(self.max_s, pause)


async def _profiled_phase(
    tally: _Tally,
    send: Callable[[int, float], Awaitable[None]],
    senders: int,
    duration_s: float,
    first: int,
    report_dir: str | None,
    notes: list[str],
) -> dict[str, Any] | None:
    """A closed loop of ``duration_s`` sampled by py-spy (from outside, on this process), kept
    apart from the measured phases so that sampling does not disturb their CPU figures. The
    raw stacks are kept in the report directory (``routing.pyspy.raw``) for a flame graph."""
    from bench import profile as profiling

    tally.reset(10**12)
    index = first
    stop = False

    async def worker() -> None:
        nonlocal index
        while not stop:
            index += 1
            await send(index, time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(report_dir or tmp) / "routing.pyspy.raw"
        raw.parent.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as workers:
            for _ in range(senders):
                workers.start_soon(worker)
            failed = await profiling.record(os.getpid(), duration_s, raw)
            stop = True
        if failed:
            notes.append(f"routing profile: {failed}")
            return None
        return profiling.summarize(raw)


async def _ceiling(total: int, senders: int) -> float:
    """A routed message's hops on bare memory channels, nothing else (see the module docstring).

    ``senders`` closed-loop senders each ask (``send_nowait`` into the mailbox, wait for the
    reply); the actor drains a batch, submits it to the committer queue and waits; the committer
    drains its queue and wakes each submitter (no database); the actor then answers each ask and
    ``send_nowait``s each message into the outbox; a reader counts.
    """
    mailbox_send, mailbox_recv = trio.open_memory_channel[tuple[float, trio.Event]](1024)
    commit_send, commit_recv = trio.open_memory_channel[trio.Event](4096)
    outbox_send, outbox_recv = trio.open_memory_channel[float](math.inf)
    received = 0
    done = trio.Event()

    async def actor() -> None:
        async for first in mailbox_recv:
            batch = [first]
            while True:
                try:
                    batch.append(mailbox_recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            committed = trio.Event()
            commit_send.send_nowait(committed)
            await committed.wait()
            for item, reply in batch:
                reply.set()
                outbox_send.send_nowait(item)

    async def committer() -> None:
        async for first in commit_recv:
            batch = [first]
            while True:
                try:
                    batch.append(commit_recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await trio.lowlevel.checkpoint()  # the hop to the writer and back
            for committed in batch:
                committed.set()

    async def reader() -> None:
        nonlocal received
        async for _ in outbox_recv:
            received += 1
            if received >= total:
                done.set()

    sent = 0

    async def sender() -> None:
        nonlocal sent
        while sent < total:
            sent += 1
            reply = trio.Event()
            try:
                mailbox_send.send_nowait((time.perf_counter(), reply))
            except trio.WouldBlock:
                await mailbox_send.send((time.perf_counter(), reply))
            await reply.wait()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        nursery.start_soon(committer)
        nursery.start_soon(reader)
        async with trio.open_nursery() as inner:
            for _ in range(senders):
                inner.start_soon(sender)
        await done.wait()
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return total / elapsed


# ---------------------------------------------------------------- idle visitor memory


async def _idle_visitors(args: argparse.Namespace) -> BenchResult:
    from engine import ChatEngine, EngineConfig
    from engine.visitor import VisitorLeft
    from storage import open_storage

    n = args.idle_visitors
    with tempfile.TemporaryDirectory() as tmp:
        async with open_storage(f"sqlite:///{args.database or Path(tmp) / 'idle.db'}") as storage:
            ws = (await storage.create_workspace(name="idle")).id
            engine = ChatEngine(storage, EngineConfig(idle_timeout_s=10**6, ask_timeout_s=600.0))
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)
                registry = engine._ctx.visitors
                assert registry is not None
                # Warm up allocators and code paths before the baseline.
                for i in range(1000):
                    await (await registry.get((ws, f"warm{i}"))).tell(VisitorLeft())
                await trio.sleep(0.5)
                gc.collect()
                before_kb = _rss_kb()
                progress = Progress("idle visitors", n)
                for i in range(n):
                    ref = await registry.get((ws, f"v{i}"))
                    ref.tell_nowait(VisitorLeft())
                    if i % 1000 == 0:
                        await trio.lowlevel.checkpoint()
                        progress.update(i)
                await trio.sleep(2.0)  # every actor has started and handled its message
                gc.collect()
                after_kb = _rss_kb()
                live = registry.count
                nursery.cancel_scope.cancel()
    per_visitor = (after_kb - before_kb) * 1024 / n
    return BenchResult(
        name="routing_idle_visitors",
        parameters={"idle_visitors": n},
        results={
            "idle_visitors": n,
            "live_visitor_actors": live,
            "bytes_per_idle_visitor": round(per_visitor),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        },
        notes=["RSS delta after spawning N visitor actors that then sit idle."],
    )


def _rss_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
