"""``livechat bench connections``: what an idle visitor connection costs the server.

For each target (the bare relay as the ceiling, then ``livechat serve``), pinned to one core:

1. read the server's RSS once it is up (the baseline);
2. open C visitor connections from the load generator (authenticated and subscribed: for the
   real server, a ``hello`` answered by the server), recording the connect rate and handshake
   latency;
3. read the RSS again: ``(after - baseline) / C`` is the memory of one idle connection;
4. hold them for ``--hold`` seconds and measure the server's CPU while each sends a heartbeat
   every ``--heartbeat`` seconds (from the moment it opened; the protocol's ``ping``, a
   WebSocket ping for the relay) and answers the server's:
   ``cpu / heartbeats`` is the cost of one heartbeat, including the idle connections' timers.

With ``--profile``, py-spy samples the server while the connections open and while they are
held (``connect.profile``, ``hold.profile``: the top frames, on the CPU and inclusive).

C sockets need C file descriptors in the server and in the load generator: the bench raises
RLIMIT_NOFILE itself up to the hard limit, and says so (and opens fewer) when it cannot.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import trio

from bench import profile as profiling
from bench.common import BenchResult, Progress, cdf_points, latency_summary_ms
from bench.loadgen import open_loadgens
from bench.loadgen_io import raise_nofile_limit
from bench.target import (
    TARGETS,
    CpuPlan,
    ServerProcess,
    add_target_options,
    free_port,
    new_result,
    plan_cpus,
    read_system_busy_seconds,
    save_logs,
    start_server,
    until_signalled,
)

# Issue 12's targets, at TARGET_AT_CONNECTIONS idle sockets held for 60 s.
TARGET_KIB_PER_CONNECTION = 45.0
TARGET_IDLE_CPU_PERCENT = 5.0
TARGET_CONNECT_RATE_PER_S = 500.0
TARGET_AT_CONNECTIONS = 10_000
FD_MARGIN = 512  # descriptors a process needs besides its sockets
SETTLE_S = 1.0
OTHER_CPU_NOTE_PERCENT = 15.0  # let the server finish its start-up allocations before the baseline


@attrs.frozen(kw_only=True)
class ConnectionsParams:
    connections: int = 10_000
    hold_s: float = 20.0
    heartbeat_s: float = 20.0  # the protocol's default interval
    connect_concurrency: int = 100
    loadgen_procs: int = 1
    targets: tuple[str, ...] = ("relay", "server")
    url: str | None = None
    server_pid: int | None = None
    token: str | None = None
    log_dir: str | None = None  # keep the servers' output here (the --report directory)
    profile: bool = False  # sample the server with py-spy while connecting and holding


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ConnectionsParams()
    parser.add_argument("--connections", type=int, default=d.connections, help="idle sockets (C)")
    parser.add_argument("--hold", type=float, default=d.hold_s, help="hold them open, seconds")
    parser.add_argument(
        "--heartbeat", type=float, default=d.heartbeat_s, help="seconds between heartbeats"
    )
    parser.add_argument("--connect-concurrency", type=int, default=d.connect_concurrency)
    parser.add_argument("--loadgen-procs", type=int, default=d.loadgen_procs)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy while connecting and while holding (top frames)",
    )
    add_target_options(parser, target_help="measure the ceiling, the server, or both (default)")


def params_from_args(args: argparse.Namespace) -> ConnectionsParams:
    return ConnectionsParams(
        connections=args.connections,
        hold_s=args.hold,
        heartbeat_s=args.heartbeat,
        connect_concurrency=args.connect_concurrency,
        loadgen_procs=args.loadgen_procs,
        targets=TARGETS[args.target],
        url=args.url,
        server_pid=args.server_pid,
        token=args.token,
        log_dir=getattr(args, "report", None),
        profile=args.profile,
    )


def run(args: argparse.Namespace) -> BenchResult:
    return trio.run(until_signalled, run_connections, params_from_args(args))


async def run_connections(params: ConnectionsParams) -> BenchResult:
    plan = plan_cpus()
    result = new_result("connections", params, plan, hidden=("token",))
    count = params.connections
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    soft, hard, note = raise_nofile_limit(count + FD_MARGIN)
    result.parameters["nofile_limit"] = [soft, hard]
    if note:
        result.notes.append(note)
    if soft < count + FD_MARGIN:
        count = max(1, soft - FD_MARGIN)
        result.notes.append(
            f"opening {count} connections instead of {params.connections}: "
            f"the server's open-file limit is {soft}"
        )
    elif soft > before:
        result.notes.append(f"raised the open-file limit from {before} to {soft} (hard {hard})")
    result.parameters["connections_opened"] = count
    with tempfile.TemporaryDirectory(prefix="livechat-bench-") as tmp:
        try:
            for target in params.targets:
                measured = await _measure(target, count, params, plan, Path(tmp), result)
                if target == "relay":
                    result.ceiling = measured
                else:
                    result.results["server"] = measured
        finally:
            for log in save_logs(Path(tmp), Path(params.log_dir) if params.log_dir else None):
                result.notes.append(f"server output kept in {log}")
    _conclude(result, count)
    return result


async def _measure(
    target: str,
    count: int,
    params: ConnectionsParams,
    plan: CpuPlan,
    workdir: Path,
    result: BenchResult,
) -> dict[str, Any]:
    label = "relay" if target == "relay" else "server"
    if target == "relay":
        port = free_port()
        argv = [sys.executable, "-m", "bench.relay", "--port", str(port)]
        async with start_server("relay", argv, port=port, workdir=workdir, cpus=plan.server) as s:
            return await _drive(label, s, "relay", {}, count, params, plan, workdir, result)
    from bench import livechat_wire

    async with livechat_wire.open_server(
        workdir=workdir,
        cpus=plan.server,
        url=params.url,
        server_pid=params.server_pid,
        token=params.token,
    ) as server:
        setup = await livechat_wire.prepare(server, pairs=0, idle=count)
        return await _drive(label, server, "livechat", setup, count, params, plan, workdir, result)


async def _drive(
    label: str,
    server: ServerProcess,
    protocol: str,
    setup: dict[str, Any],
    count: int,
    params: ConnectionsParams,
    plan: CpuPlan,
    workdir: Path,
    result: BenchResult,
) -> dict[str, Any]:
    result.notes.extend(server.notes)
    await trio.sleep(SETTLE_S)
    rss_before = server.rss_kib()
    bar = Progress(f"{label}: connect", count)
    profiles: dict[str, dict[str, Any]] = {}
    sampling = await _start_sampling(params, server, workdir / f"{label}-connect.pyspy.raw")
    async with open_loadgens(
        protocol=protocol,
        base_url=server.ws_url,
        setup=setup,
        mode="idle",
        count=count,
        processes=max(params.loadgen_procs, math.ceil(count / 30_000)),
        cpus=set(plan.loadgen) if plan.loadgen else None,
        connect_concurrency=params.connect_concurrency,
        connect_timeout_s=60.0,
        heartbeat_s=params.heartbeat_s,
        on_progress=lambda n: bar.update(n, f"{n} open"),
    ) as loadgens:
        ready = loadgens.ready
        bar.update(count, f"{ready['connected']} open")
        result.notes.extend(loadgens.notes)
        await _stop_sampling(sampling, "connect", profiles, result)
        await trio.sleep(SETTLE_S)
        rss_after = server.rss_kib()
        sampling = await _start_sampling(params, server, workdir / f"{label}-hold.pyspy.raw")
        hold = Progress(f"{label}: hold", params.hold_s)
        started = trio.current_time()
        cpu0 = server.cpu_seconds()
        busy0 = read_system_busy_seconds()
        raw = await loadgens.command(
            {"cmd": "hold", "duration_s": params.hold_s},
            on_progress=lambda: hold.update(
                min(params.hold_s, trio.current_time() - started),
                f"{loadgens.progress_total('heartbeats')} heartbeats",
            ),
            timeout_s=params.hold_s + 120,
        )
        wall = trio.current_time() - started
        cpu1 = server.cpu_seconds()
        busy1 = read_system_busy_seconds()
        hold.update(params.hold_s, f"{sum(r['heartbeats'] for r in raw)} heartbeats")
        rss_end = server.rss_kib()
        await _stop_sampling(sampling, "hold", profiles, result)
    connected = int(ready["connected"])
    heartbeats = sum(int(r["heartbeats"]) for r in raw)
    cpu_s = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    other = None
    if cpu_s is not None and busy0 is not None and busy1 is not None:
        ours = cpu_s + sum(float(r["cpu_s"]) for r in raw)
        other = max(0.0, round(100 * (busy1 - busy0 - ours) / wall, 1))
        if other > OTHER_CPU_NOTE_PERCENT:
            result.notes.append(
                f"{label} hold: other programs used {other}% of a core: CPU numbers are pessimistic"
            )
    per_conn = (
        None
        if rss_before is None or rss_after is None or connected == 0
        else round((rss_after - rss_before) / connected, 2)
    )
    result.series[f"latency connect:{label} handshake"] = cdf_points(
        [s * 1000 for s in ready["handshake_s"]]
    )
    return {
        **{phase: {"profile": profile} for phase, profile in profiles.items()},
        "connections": connected,
        "connect_errors": ready["connect_errors"],
        "connect_error_samples": ready["connect_error_samples"],
        "connect_s": round(ready["connect_s"], 3),
        "connect_rate_per_s": round(connected / ready["connect_s"], 1) if ready["connect_s"] else 0,
        "handshake": latency_summary_ms(ready["handshake_s"]),
        "server_rss_mb_before": None if rss_before is None else round(rss_before / 1024, 1),
        "server_rss_mb_after": None if rss_after is None else round(rss_after / 1024, 1),
        "server_rss_mb_end": None if rss_end is None else round(rss_end / 1024, 1),
        "rss_kib_per_connection": per_conn,
        "hold_s": round(wall, 2),
        "still_open": sum(int(r["open"]) for r in raw),
        "closed_by_server": sum(int(r["closed_sockets"]) + int(r["closed_before"]) for r in raw),
        "heartbeats": heartbeats,
        "heartbeat_errors": sum(int(r["send_errors"]) for r in raw),  # on sockets closed before
        "idle_cpu_percent": None if cpu_s is None else round(100 * cpu_s / wall, 2),
        "other_cpu_percent": other,
        "close_reasons": _merge_counts(r.get("close_reasons", {}) for r in raw),
        "server_cpu_us_per_heartbeat": (
            None if cpu_s is None or heartbeats == 0 else round(cpu_s * 1e6 / heartbeats, 1)
        ),
    }


async def _start_sampling(
    params: ConnectionsParams, server: ServerProcess, out_path: Path
) -> profiling.Sampling | None:
    if not params.profile or server.pid is None:
        return None
    sampling = profiling.Sampling(server.pid, out_path)
    await sampling.start()
    return sampling


async def _stop_sampling(
    sampling: profiling.Sampling | None,
    phase: str,
    profiles: dict[str, dict[str, Any]],
    result: BenchResult,
) -> None:
    if sampling is None:
        return
    summary = await sampling.stop()
    if summary is not None:
        profiles[phase] = summary
    if sampling.note:
        result.notes.append(f"{phase} profile: {sampling.note}")


def _merge_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + int(n)
    return total


def _conclude(result: BenchResult, count: int) -> None:
    measured = result.results.get("server") or result.ceiling
    if not measured:
        return
    per_conn = measured["rss_kib_per_connection"]
    result.results["rss_kib_per_connection"] = per_conn
    result.results["connect_rate_per_s"] = measured["connect_rate_per_s"]
    result.results["server_cpu_us_per_heartbeat"] = measured["server_cpu_us_per_heartbeat"]
    result.results["idle_cpu_percent"] = measured["idle_cpu_percent"]
    if result.ceiling and result.results.get("server"):
        top = result.ceiling["rss_kib_per_connection"]
        if top and per_conn:
            result.ratio_to_ceiling = round(per_conn / top, 3)
            result.notes.append("ratio_to_ceiling here is server KiB per connection / relay's")
    result.results["targets"] = {
        "rss_kib_per_connection": {
            "target": f"<= {TARGET_KIB_PER_CONNECTION:g} KiB at {TARGET_AT_CONNECTIONS} sockets",
            "measured": per_conn,
            "met": _at_most(per_conn, TARGET_KIB_PER_CONNECTION, count),
            "of": "server" if result.results.get("server") else "relay",
        },
        "idle_cpu_percent": {
            "target": f"<= {TARGET_IDLE_CPU_PERCENT:g} % of a core at {TARGET_AT_CONNECTIONS}",
            "measured": measured["idle_cpu_percent"],
            "met": _at_most(measured["idle_cpu_percent"], TARGET_IDLE_CPU_PERCENT, count),
        },
        "connect_rate_per_s": {
            "target": f">= {TARGET_CONNECT_RATE_PER_S:g}/s",
            "measured": measured["connect_rate_per_s"],
            "met": measured["connect_rate_per_s"] >= TARGET_CONNECT_RATE_PER_S,
        },
        "all_connected": {
            "target": f"{count} open",
            "measured": measured["connections"],
            "met": measured["connections"] == count and measured["closed_by_server"] == 0,
        },
    }


def _at_most(measured: float | None, target: float, count: int) -> bool | None:
    """Met or not; None when not measured or at fewer sockets than the target's."""
    if measured is None or count < TARGET_AT_CONNECTIONS:
        return None
    return measured <= target
