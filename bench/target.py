"""The server under test: start it pinned to its core, watch its CPU and memory, stop it.

``start_server`` runs a command (the bare relay or ``livechat serve``) as a child process on a
free loopback port, pins it with ``os.sched_setaffinity`` where the OS allows, waits for
``GET /healthz`` and yields a ``ServerProcess``. Its CPU time and RSS are read from
``/proc/<pid>/stat`` and ``/proc/<pid>/status`` (Linux); elsewhere they read as ``None`` and the
bench says so. On exit (normal, error, Ctrl-C) the server gets SIGTERM, then SIGKILL after
``STOP_TIMEOUT_S``. (Not ``PR_SET_PDEATHSIG``: Trio forks from a worker thread, and the signal
fires when that *thread* exits, about ten seconds into the run.)

Also here, because every bench needs them: ``plan_cpus`` (which cores go to the server and which to
the load generator) and ``http_json``, a tiny HTTP/1.1 JSON client on h11 (no extra dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
import h11
import trio

from bench.common import BenchResult

T = TypeVar("T")
R = TypeVar("R")

STOP_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0


class TargetError(Exception):
    """The server under test did not start, or answered the bench's set-up with an error."""


@attrs.frozen(kw_only=True)
class CpuPlan:
    server: frozenset[int] | None
    loadgen: frozenset[int] | None
    note: str | None = None


def plan_cpus() -> CpuPlan:
    """First allowed core to the server, the others to the load generator (when there are any)."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is None:
        return CpuPlan(server=None, loadgen=None, note="CPU pinning is not available on this OS")
    allowed = sorted(getter(0))
    if len(allowed) < 2:
        return CpuPlan(
            server=None,
            loadgen=None,
            note=f"only {len(allowed)} core available: server and load generator share it",
        )
    return CpuPlan(server=frozenset(allowed[:1]), loadgen=frozenset(allowed[1:]))


TARGETS = {"both": ("relay", "server"), "relay": ("relay",), "server": ("server",)}
"""``--target`` choices: which of the ceiling (relay) and the real server a bench measures."""


def add_target_options(parser: argparse.ArgumentParser, *, target_help: str) -> None:
    """``--target`` and the options to drive an already running server instead of a new one."""
    parser.add_argument("--target", choices=tuple(TARGETS), default="both", help=target_help)
    parser.add_argument("--url", help="drive an already running server instead of starting one")
    parser.add_argument("--server-pid", type=int, help="with --url: its pid, for CPU and RSS")
    parser.add_argument("--token", help="with --url: an admin API token for the set-up")


def new_result(name: str, params: Any, plan: CpuPlan, *, hidden: Sequence[str]) -> BenchResult:
    """An empty result whose parameters are ``params`` (without ``hidden`` fields such as the
    admin token) and the CPU plan; the plan's note, if any, is its first note."""
    result = BenchResult(
        name=name,
        parameters={
            **attrs.asdict(params, filter=lambda a, _v: a.name not in hidden),
            "server_cpus": sorted(plan.server) if plan.server else None,
            "loadgen_cpus": sorted(plan.loadgen) if plan.loadgen else None,
        },
        results={},
    )
    if plan.note:
        result.notes.append(plan.note)
    return result


async def until_signalled(fn: Callable[[T], Awaitable[R]], arg: T) -> R:
    """Run ``fn(arg)``; on SIGINT or SIGTERM cancel it (its cleanup runs) and raise
    ``KeyboardInterrupt``. Works even where SIGINT was ignored at start (background jobs)."""
    interrupted = False
    results: list[R] = []
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            nonlocal interrupted
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)
        results.append(await fn(arg))
        nursery.cancel_scope.cancel()
    if interrupted or not results:
        raise KeyboardInterrupt
    return results[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (all its threads) from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def read_system_busy_seconds() -> float | None:
    """CPU time all cores spent busy (not idle or iowait) since boot, from /proc/stat, or None.

    The bench subtracts its own processes' share to see how much other programs competed with
    the measurement: a busy machine makes every number worse, and the report says so.
    """
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / os.sysconf("SC_CLK_TCK")


def read_rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB from /proc, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@attrs.define(kw_only=True)
class ServerProcess:
    """A running server: where it listens, and its process when we started it."""

    name: str
    base_url: str  # http://127.0.0.1:port
    pid: int | None
    log_path: Path | None = None
    notes: list[str] = attrs.field(factory=list)
    credentials: dict[str, str] = attrs.field(factory=dict)  # what the set-up needs (tokens)

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[len("http") :]

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else read_cpu_seconds(self.pid)

    def rss_kib(self) -> int | None:
        return None if self.pid is None else read_rss_kib(self.pid)

    def log_tail(self, lines: int = 20, *, secrets: bool = False) -> str:
        """The end of the server's output; lines naming a password are left out unless asked."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        if not secrets:
            text = [line for line in text if "password" not in line.lower()]
        return "\n".join(text[-lines:])


@asynccontextmanager
async def start_server(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    workdir: Path,
    cpus: frozenset[int] | None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[ServerProcess]:
    """Run ``argv`` (which must listen on ``port``), pinned to ``cpus``; stop it on exit."""
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    server = ServerProcess(
        name=name, base_url=f"http://127.0.0.1:{port}", pid=None, log_path=log_path
    )
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the bench, which stops the server itself
        env={**os.environ, **(env or {})},
        cwd=str(workdir),
    )
    server.pid = process.pid
    try:
        if cpus:
            try:
                os.sched_setaffinity(process.pid, cpus)
            except (AttributeError, OSError) as err:
                server.notes.append(f"could not pin {name} to cores {sorted(cpus)}: {err}")
        await _wait_healthy(server, process)
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)
            log.close()


def save_logs(workdir: Path, dest: Path | None) -> list[Path]:
    """Copy the servers' output from the temporary ``workdir`` to ``dest`` (passwords left out)."""
    if dest is None:
        return []
    dest.mkdir(parents=True, exist_ok=True)
    saved = []
    for log in sorted(workdir.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        target = dest / log.name
        target.write_text("\n".join(ln for ln in lines if "password" not in ln.lower()) + "\n")
        saved.append(target)
    return saved


async def _wait_healthy(server: ServerProcess, process: trio.Process) -> None:
    with trio.move_on_after(START_TIMEOUT_S):
        while True:
            if process.poll() is not None:
                raise TargetError(
                    f"{server.name} exited with status {process.returncode} before it was "
                    f"ready:\n{server.log_tail()}"
                )
            try:
                status = (
                    await http_json("GET", server.base_url + "/healthz", timeout_s=2.0)
                ).status
            except (OSError, TargetError, trio.TooSlowError):
                status = 0
            if status == 200:
                return
            await trio.sleep(0.1)
    raise TargetError(f"{server.name} not healthy after {START_TIMEOUT_S}s:\n{server.log_tail()}")


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT_S):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


@attrs.frozen(kw_only=True)
class HttpReply:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with "\n"
    json: Any  # the decoded body, the text when it is not JSON, None when empty


async def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> HttpReply:
    """One HTTP/1.1 request on a fresh connection, JSON in and out."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise TargetError(f"only plain http:// loopback URLs are supported, not {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    payload = b"" if body is None else json.dumps(body).encode()
    request_headers = [
        ("Host", parts.netloc),
        ("Connection", "close"),
        ("Accept", "application/json"),
        ("Content-Length", str(len(payload))),
    ]
    if body is not None:
        request_headers.append(("Content-Type", "application/json"))
    request_headers.extend((headers or {}).items())
    conn = h11.Connection(our_role=h11.CLIENT)
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port or 80)
        async with stream:
            data = conn.send(h11.Request(method=method, target=target, headers=request_headers))
            data += conn.send(h11.Data(data=payload)) if payload else b""
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            status = 0
            reply_headers: dict[str, str] = {}
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(1 << 16))
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    for name, value in event.headers:
                        key = name.decode("latin-1").lower()
                        text = value.decode("latin-1")
                        old = reply_headers.get(key)
                        reply_headers[key] = text if old is None else f"{old}\n{text}"
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    raw = b"".join(chunks)
    decoded: Any = None
    if raw:
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError:
            decoded = raw.decode(errors="replace")
    return HttpReply(status=status, headers=reply_headers, json=decoded)
