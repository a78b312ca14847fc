"""Load-generator processes: the clients that drive a server under test, kept off its core.

The parent (``livechat bench ...``) starts one or more children with ``open_loadgens``; each
child runs ``python -m bench.loadgen``, is pinned to the cores the server does not use, opens its
share of the sockets and then obeys commands. Parent and child talk JSON lines over the child's
stdin/stdout:

- parent → child: one config line, then commands ``open_loop``, ``closed_loop``, ``hold``,
  ``close``;
- child → parent: ``progress`` lines, ``ready`` once the sockets are open, one ``result`` per
  command, ``error`` when the child cannot go on.

A child's traffic, what it counts and how it behaves as a client, is ``bench.loadgen_generator``;
the JSON-lines pipe and what both sides share, ``bench.loadgen_io``.

Cancellation: a child exits when its stdin closes (the parent died or gave up); the parent stops
its children with ``close``, then SIGTERM, then SIGKILL, each step bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from bench.livechat_wire import make_wire
from bench.loadgen_generator import Generator
from bench.loadgen_io import (
    BIN_S,
    STOP_TIMEOUT_S,
    LineReader,
    LoadGenError,
    emit,
    raise_nofile_limit,
)

SATURATED_CPU_FRACTION = 0.9  # a child this busy may be the bottleneck, not the server
CLOSE_WAIT_S = 2.0


# --------------------------------------------------------------------------------------------
# Child side
# --------------------------------------------------------------------------------------------


async def _child_main() -> None:
    stdin = LineReader(trio.lowlevel.FdStream(os.dup(0)))
    line = await stdin.readline()
    if line is None:
        return
    config = json.loads(line)
    soft, hard, note = raise_nofile_limit(int(config.get("nofile_wanted", 0)))
    wire = make_wire(config["protocol"], config["base_url"], config.get("setup", {}))
    gen = Generator(wire, config)
    async with trio.open_nursery() as sockets:
        async with trio.open_nursery() as readers:
            ready = await gen.open_all(sockets, readers)
            ready["nofile"] = [soft, hard]
            ready["nofile_note"] = note
            emit(ready)
            for ws, role, routes in gen.socket_routes():
                if role == "agent":  # visitor sockets are read since they opened
                    readers.start_soon(gen.read_socket, ws, role, routes)
            while True:
                line = await stdin.readline()
                if line is None:
                    break
                cmd = json.loads(line)
                name = cmd.get("cmd")
                if name == "open_loop":
                    emit(await gen.open_loop(cmd))
                elif name == "closed_loop":
                    emit(await gen.closed_loop(cmd))
                elif name == "hold":
                    emit(await gen.hold(cmd))
                elif name == "close":
                    break
                else:
                    emit({"event": "error", "message": f"unknown command {name!r}"})
            gen.closing = True
            with trio.move_on_after(STOP_TIMEOUT_S):
                async with trio.open_nursery() as closers:
                    for ws, _role, _routes in gen.socket_routes():
                        closers.start_soon(ws.aclose)
                    for ws in gen.idle:
                        closers.start_soon(ws.aclose)
            readers.cancel_scope.cancel()
        sockets.cancel_scope.cancel()
    emit({"event": "closed"})


def child_main() -> int:
    # The parent owns the lifecycle: Ctrl-C reaches it, and it closes us through our stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        trio.run(_child_main)
    except BrokenPipeError:
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------


@attrs.define
class _Child:
    process: trio.Process
    events: trio.MemoryReceiveChannel[dict[str, Any]]
    size: int
    last_progress: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class LoadGenerators:
    """Handle on the running children: send a command to all, get their merged result."""

    children: list[_Child]
    ready: dict[str, Any]
    notes: list[str]

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self.children]

    @property
    def sizes(self) -> list[int]:
        """How many pairs (or idle sockets) each child holds, in child order."""
        return [c.size for c in self.children]

    async def _next_event(self, child: _Child, on_progress: Callable[[], None]) -> dict[str, Any]:
        while True:
            try:
                event = await child.events.receive()
            except trio.EndOfChannel:
                raise LoadGenError(
                    f"load generator {child.process.pid} exited (status {child.process.poll()})"
                ) from None
            if event.get("event") == "progress":
                child.last_progress = event
                on_progress()
                continue
            if event.get("event") == "error":
                raise LoadGenError(str(event.get("message")))
            return event

    def progress_total(self, key: str) -> int:
        return sum(int(c.last_progress.get(key, 0)) for c in self.children)

    async def command(
        self,
        cmd: dict[str, Any],
        *,
        per_child: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
        on_progress: Callable[[], None] = lambda: None,
        timeout_s: float,
    ) -> list[dict[str, Any]]:
        """Send ``cmd`` to every child and return each child's result, in order."""
        results: list[dict[str, Any]] = [{} for _ in self.children]

        async def one(i: int, child: _Child) -> None:
            line = per_child(i, cmd) if per_child else cmd
            assert child.process.stdin is not None
            await child.process.stdin.send_all(json.dumps(line).encode() + b"\n")
            results[i] = await self._next_event(child, on_progress)

        with trio.fail_after(timeout_s):
            async with trio.open_nursery() as nursery:
                for i, child in enumerate(self.children):
                    nursery.start_soon(one, i, child)
        return results


async def _read_events(process: trio.Process, send: trio.MemorySendChannel[dict[str, Any]]) -> None:
    assert process.stdout is not None
    reader = LineReader(process.stdout)
    async with send:
        while True:
            line = await reader.readline()
            if line is None:
                return
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            await send.send(event)


def split_evenly(items: Sequence[int], parts: int) -> list[list[int]]:
    return [list(items[i::parts]) for i in range(parts)]


@asynccontextmanager
async def open_loadgens(
    *,
    protocol: str,
    base_url: str,
    setup: dict[str, Any],
    mode: str,
    count: int,
    processes: int = 1,
    cpus: set[int] | None = None,
    body_bytes: int = 64,
    connect_concurrency: int = 64,
    connect_timeout_s: float = 30.0,
    heartbeat_s: float = 0.0,
    on_progress: Callable[[int], None] = lambda connected: None,
) -> AsyncIterator[LoadGenerators]:
    """Start ``processes`` children that open ``count`` pairs (or idle sockets) between them.

    Yields once every child is ready. On exit (normal, error or cancel) the children are told to
    close, then terminated, then killed, each step bounded.
    """
    indices = list(range(count))
    shares = [s for s in split_evenly(indices, max(1, processes)) if s]
    notes: list[str] = []
    sockets_per_item = 2 if mode == "pairs" else 1
    async with trio.open_nursery() as nursery:
        children: list[_Child] = []
        try:
            for share in shares:
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "bench.loadgen"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    start_new_session=True,
                )
                if cpus:
                    try:
                        os.sched_setaffinity(process.pid, cpus)
                    except (AttributeError, OSError) as err:
                        notes.append(f"could not pin load generator {process.pid}: {err}")
                send, receive = trio.open_memory_channel[dict[str, Any]](256)
                nursery.start_soon(_read_events, process, send)
                child = _Child(process=process, events=receive, size=len(share))
                children.append(child)
                config = {
                    "protocol": protocol,
                    "base_url": base_url,
                    "setup": setup,
                    "mode": mode,
                    "indices": share,
                    "body_bytes": body_bytes,
                    "connect_concurrency": max(1, connect_concurrency // len(shares)),
                    "connect_timeout_s": connect_timeout_s,
                    "heartbeat_s": heartbeat_s,
                    "nofile_wanted": len(share) * sockets_per_item + 256,
                }
                assert process.stdin is not None
                await process.stdin.send_all(json.dumps(config).encode() + b"\n")
            handle = LoadGenerators(children=children, ready={}, notes=notes)

            def progress() -> None:
                on_progress(handle.progress_total("connected"))

            readies = []
            for child in children:
                readies.append(await handle._next_event(child, progress))
            handle.ready = _merge_ready(readies)
            for r in readies:
                if r.get("nofile_note"):
                    notes.append(f"load generator: {r['nofile_note']}")
            yield handle
        finally:
            with trio.CancelScope(shield=True):
                await _stop_children(children)
            nursery.cancel_scope.cancel()


async def _stop_children(children: list[_Child]) -> None:
    for child in children:
        stdin = child.process.stdin
        if stdin is not None:
            with trio.move_on_after(1.0):
                try:
                    await stdin.send_all(b'{"cmd":"close"}\n')
                    await stdin.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
    with trio.move_on_after(CLOSE_WAIT_S):  # a child in mid-phase reads "close" only after it
        for child in children:
            await child.process.wait()
    for child in children:
        if child.process.returncode is None:
            child.process.terminate()
    with trio.move_on_after(STOP_TIMEOUT_S):
        for child in children:
            await child.process.wait()
    for child in children:
        if child.process.returncode is None:
            child.process.kill()
            await child.process.wait()


def _merge_ready(readies: list[dict[str, Any]]) -> dict[str, Any]:
    handshakes = [h for r in readies for h in r.get("handshake_us", [])]
    return {
        "connected": sum(int(r.get("connected", 0)) for r in readies),
        "connect_errors": sum(int(r.get("connect_errors", 0)) for r in readies),
        "connect_error_samples": [e for r in readies for e in r.get("connect_error_samples", [])],
        "connect_s": max((float(r.get("connect_s", 0.0)) for r in readies), default=0.0),
        "handshake_s": [h / 1e6 for h in handshakes],
    }


def merge_traffic(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the children's ``result`` of one traffic phase into totals, samples and bins."""
    merged: dict[str, Any] = {
        "sent": {"v2a": 0, "a2v": 0},
        "delivered": {"v2a": 0, "a2v": 0},
        "latency_s": {"v2a": [], "a2v": []},
    }
    for key in (
        "lost",
        "acked_undelivered",
        "unacked",
        "outstanding_acked",
        "outstanding_unacked",
        "given_up",
        "given_up_total",
        "resent",
        "timed_out",
        "resyncs",
        "via_history",
        "duplicates",
        "unexpected",
        "seq_violations",
        "send_errors",
        "closed_sockets",
        "echoes",
        "other_frames",
    ):
        merged[key] = sum(int(r.get(key, 0)) for r in results)
    width = max((len(r.get("bins", [])) for r in results), default=0)
    bins = [0] * width
    for r in results:
        for d in ("v2a", "a2v"):
            merged["sent"][d] += int(r["sent"][d])
            merged["delivered"][d] += int(r["delivered"][d])
            merged["latency_s"][d].extend(v / 1e6 for v in r["latency_us"][d])
        for i, n in enumerate(r.get("bins", [])):
            bins[i] += n
    merged["bins"] = bins
    merged["paced"] = sum(int(r.get("paced", 0)) for r in results)
    merged["retried"] = sum(int(r.get("retried", 0)) for r in results)
    merged["late_total"] = sum(int(r.get("late_total", 0)) for r in results)
    merged["reconnects"] = sum(int(r.get("reconnects", 0)) for r in results)
    merged["reconnect_failures"] = sum(int(r.get("reconnect_failures", 0)) for r in results)
    merged["rejected"] = _sum_counts(r.get("rejected", {}) for r in results)
    merged["retried_codes"] = _sum_counts(r.get("retried_codes", {}) for r in results)
    merged["close_reasons"] = _sum_counts(r.get("close_reasons", {}) for r in results)
    merged["bin_s"] = results[0].get("bin_s", BIN_S) if results else BIN_S
    merged["elapsed_s"] = max((float(r["elapsed_s"]) for r in results), default=0.0)
    merged["drain_s"] = max((float(r.get("drain_s", 0.0)) for r in results), default=0.0)
    merged["loadgen_cpu_fraction"] = [
        round(float(r["cpu_s"]) / max(1e-9, float(r["elapsed_s"])), 3) for r in results
    ]
    lags = [r["send_lag_p99_ms"] for r in results if r.get("send_lag_p99_ms") is not None]
    merged["send_lag_p99_ms"] = max(lags) if lags else None
    return merged


def _sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + int(n)
    return total


def loadgen_saturated(cpu_fractions: Sequence[float]) -> bool:
    return any(f >= SATURATED_CPU_FRACTION for f in cpu_fractions)


if __name__ == "__main__":
    raise SystemExit(child_main())
