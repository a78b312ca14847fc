"""``livechat bench e2e``: the whole server under chat load, next to its stack's ceiling.

One run measures two targets with the identical load generator and load:

1. the ceiling, ``bench/relay.py`` (bare Quart-Trio relay on Hypercorn: no auth, storage or
   routing);
2. the real server, ``livechat serve`` with SQLite in a temporary directory (or ``--url``).

Each target is pinned to one core; the load generator (``bench/loadgen.py``) runs in its own
process(es) on the other cores. For each target, P visitor-agent pairs are opened, then:

- **open loop**: messages at a fixed offered rate (half visitor→agent, half agent→visitor), sent
  on schedule whatever the server's answers: the latency a user sees at that load;
- **closed loop**: every pair ping-pongs (``--window`` messages in flight per pair), so the server
  runs flat out: the saturation throughput.

Reported per phase: delivered messages/s, p50/p99/p999 latency per direction, what was not
delivered by the end of the phase (acknowledged or not), duplicated, errors, 1013 cuts, resyncs,
resends, server CPU and RSS, load-generator CPU (and whether it was saturated). The closing
``ratio_to_ceiling`` is server closed-loop throughput / relay closed-loop throughput; ``lost``
and ``acked_undelivered`` are what was never delivered by the end of the run (``late`` arrived
after its phase had counted it missing), ``given_up`` what the client dropped after a refusal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from bench import profile as profiling
from bench.common import BenchResult, Progress, cdf_points, latency_summary_ms, rate_points
from bench.loadgen import (
    LoadGenerators,
    loadgen_saturated,
    merge_traffic,
    open_loadgens,
)
from bench.loadgen_generator import DRAIN_CAP_FACTOR
from bench.target import (
    TARGETS,
    CpuPlan,
    ServerProcess,
    TargetError,
    add_target_options,
    free_port,
    new_result,
    plan_cpus,
    read_system_busy_seconds,
    save_logs,
    start_server,
    until_signalled,
)

TARGET_RATIO = 0.6
TARGET_P99_MS = 10.0
OTHER_CPU_NOTE_PERCENT = 15.0  # more than this from other programs makes a run suspect
CHART_BIN_S = 1.0
PHASE_SLACK_S = 60.0  # on top of duration + drain before a phase counts as hung
SETTLE_MAX_S = 120.0  # before a phase, wait at most this long for the server to go idle
SETTLE_WINDOW_S = 0.5
SETTLE_BUSY = 0.3  # below this fraction of a core, the server counts as idle


@attrs.frozen(kw_only=True)
class E2EParams:
    pairs: int = 1000
    rate_msgs_s: float = 2000.0
    open_duration_s: float = 10.0
    closed_duration_s: float = 10.0
    window: int = 1
    chats_per_agent: int = 10
    body_bytes: int = 64
    drain_s: float = 5.0
    loadgen_procs: int = 1
    connect_concurrency: int = 16
    targets: tuple[str, ...] = ("relay", "server")
    url: str | None = None
    server_pid: int | None = None
    token: str | None = None
    log_dir: str | None = None  # keep the servers' output here (the --report directory)
    quiet: bool = False
    profile: bool = False  # sample the server with py-spy during the closed loop


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = E2EParams()
    parser.add_argument("--pairs", type=int, default=d.pairs, help="visitor-agent pairs (P)")
    parser.add_argument(
        "--rate", type=float, default=d.rate_msgs_s, help="open-loop offered msgs/s, all pairs"
    )
    parser.add_argument("--duration", type=float, default=d.open_duration_s, help="open loop, s")
    parser.add_argument(
        "--closed-duration", type=float, default=d.closed_duration_s, help="closed loop, s"
    )
    parser.add_argument("--window", type=int, default=d.window, help="closed loop: in flight/pair")
    parser.add_argument(
        "--chats-per-agent",
        type=int,
        default=d.chats_per_agent,
        help="server: pairs sharing one agent (and its socket); the relay uses one per pair",
    )
    parser.add_argument("--body-bytes", type=int, default=d.body_bytes)
    parser.add_argument("--drain", type=float, default=d.drain_s, help="wait for stragglers, s")
    parser.add_argument("--loadgen-procs", type=int, default=d.loadgen_procs)
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=d.connect_concurrency,
        help="pairs being opened at once",
    )
    add_target_options(parser, target_help="measure the ceiling, the server, or both (default)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy (if installed) during the closed loop",
    )


def params_from_args(args: argparse.Namespace) -> E2EParams:
    return E2EParams(
        pairs=args.pairs,
        rate_msgs_s=args.rate,
        open_duration_s=args.duration,
        closed_duration_s=args.closed_duration,
        window=args.window,
        chats_per_agent=args.chats_per_agent,
        body_bytes=args.body_bytes,
        drain_s=args.drain,
        loadgen_procs=args.loadgen_procs,
        connect_concurrency=args.connect_concurrency,
        targets=TARGETS[args.target],
        url=args.url,
        server_pid=args.server_pid,
        token=args.token,
        profile=args.profile,
        log_dir=getattr(args, "report", None),
    )


def run(args: argparse.Namespace) -> BenchResult:
    return trio.run(until_signalled, run_e2e, params_from_args(args))


async def run_e2e(params: E2EParams) -> BenchResult:
    plan = plan_cpus()
    result = new_result("e2e", params, plan, hidden=("token", "quiet"))
    with tempfile.TemporaryDirectory(prefix="livechat-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for target in params.targets:
                measured = await _measure_target(target, params, plan, workdir, result)
                if target == "relay":
                    result.ceiling = measured
                else:
                    result.results["server"] = measured
        finally:
            for log in save_logs(workdir, Path(params.log_dir) if params.log_dir else None):
                result.notes.append(f"server output kept in {log}")
    _conclude(result, params)
    return result


async def _measure_target(
    target: str, params: E2EParams, plan: CpuPlan, workdir: Path, result: BenchResult
) -> dict[str, Any]:
    label = "relay" if target == "relay" else "server"
    async with _open_target(target, params, plan, workdir) as (server, protocol, setup):
        result.notes.extend(server.notes)
        rss_idle = server.rss_kib()
        connect = Progress(f"{label}: connect", params.pairs)
        async with open_loadgens(
            protocol=protocol,
            base_url=server.ws_url,
            setup=setup,
            mode="pairs",
            count=params.pairs,
            processes=params.loadgen_procs,
            cpus=set(plan.loadgen) if plan.loadgen else None,
            body_bytes=params.body_bytes,
            connect_concurrency=params.connect_concurrency,
            on_progress=lambda n: connect.update(n, f"{n} pairs"),
        ) as loadgens:
            connect.update(params.pairs, f"{loadgens.ready['connected']} pairs")
            result.notes.extend(loadgens.notes)
            measured: dict[str, Any] = {
                "setup_s": setup.get("setup_s"),
                "agents": len(setup.get("agent_tokens", [])) or params.pairs,
                "connect": {
                    "pairs": loadgens.ready["connected"],
                    "errors": loadgens.ready["connect_errors"],
                    "error_samples": loadgens.ready["connect_error_samples"],
                    "seconds": round(loadgens.ready["connect_s"], 3),
                    **latency_summary_ms(loadgens.ready["handshake_s"]),
                },
                "server_rss_mb_idle": None if rss_idle is None else round(rss_idle / 1024, 1),
            }
            if loadgens.ready["connected"] == 0:
                raise TargetError(
                    f"{label}: no pair could connect: {loadgens.ready['connect_error_samples']}"
                )
            # Closed loop first: it cannot build a backlog, so it finds the saturation point
            # cleanly; then the open loop at the offered rate, and, when that rate is above
            # what the target sustains, another at half its saturation throughput.
            phases: list[tuple[str, float]] = [
                ("closed_loop", 0.0),
                ("open_loop", params.rate_msgs_s),
            ]
            while phases:
                phase, rate = phases.pop(0)
                settle_s = await _settle(server)
                profile_to = None
                if params.profile and phase == "closed_loop" and server.pid is not None:
                    profile_to = workdir / f"{label}.pyspy.raw"
                summary, merged = await _run_phase(
                    phase, label, params, server, loadgens, profile_to, result.notes, rate
                )
                summary["settle_s"] = settle_s
                measured[phase] = summary
                saturation = float(summary["delivered_msgs_s"])
                if phase == "closed_loop" and 0 < saturation * 0.8 < params.rate_msgs_s:
                    phases.append(("open_loop_half_saturation", round(saturation / 2, 1)))
                name = phase.replace("_", " ")
                per = max(1, round(CHART_BIN_S / merged["bin_s"]))  # smoother: 1 s bins
                bins = merged["bins"]
                result.series[f"throughput {label}:{name}"] = rate_points(
                    [sum(bins[i : i + per]) for i in range(0, len(bins), per)],
                    merged["bin_s"] * per,
                )
                for direction in ("v2a", "a2v"):
                    result.series[f"latency {label}:{name} {direction}"] = cdf_points(
                        [s * 1000 for s in merged["latency_s"][direction]]
                    )
                if (summary["other_cpu_percent"] or 0) > OTHER_CPU_NOTE_PERCENT:
                    result.notes.append(
                        f"{label} {phase}: other programs used {summary['other_cpu_percent']}% "
                        "of a core during the measurement: numbers are pessimistic"
                    )
                if summary["errors"] or summary["lost"]:
                    result.notes.append(
                        f"{label} {phase}: {summary['errors']} errors, {summary['lost']} not "
                        f"delivered by the end of the phase ({summary['acked_undelivered']} "
                        f"acknowledged; rejected: {summary['rejected']}, closed: "
                        f"{summary['close_reasons']}, {summary['resent_after_resume']} resent "
                        f"after resume, {summary['resyncs']} resyncs)"
                    )
                if summary["paced_sends"]:
                    result.notes.append(
                        f"{label} {phase}: {summary['paced_sends']} sends waited for the server's "
                        "per-connection frame budget (200 frames / 10 s): use more pairs"
                    )
                if summary["rate_limited_retries"]:
                    result.notes.append(
                        f"{label} {phase}: {summary['rate_limited_retries']} sends were "
                        "rate-limited by the engine (5 messages/s per visitor) and resent after "
                        "retry_after_s, as the protocol says: use more pairs for throughput"
                    )
                if summary["loadgen_saturated"]:
                    result.notes.append(
                        f"{label} {phase}: the load generator was saturated "
                        f"(CPU {summary['loadgen_cpu_percent']}%): the server may do better"
                    )
        return measured


def _open_target(
    target: str, params: E2EParams, plan: CpuPlan, workdir: Path
) -> Any:  # an async context manager of (ServerProcess, protocol, setup)
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def relay() -> Any:
        port = free_port()
        argv = [sys.executable, "-m", "bench.relay", "--port", str(port)]
        async with start_server("relay", argv, port=port, workdir=workdir, cpus=plan.server) as s:
            yield s, "relay", {}

    @asynccontextmanager
    async def livechat() -> Any:
        try:
            from bench import livechat_wire
        except ImportError as err:  # the protocol adapter is not there yet
            raise TargetError(f"the real-server protocol client is not available: {err}") from err
        async with livechat_wire.open_server(
            workdir=workdir,
            cpus=plan.server,
            url=params.url,
            server_pid=params.server_pid,
            token=params.token,
        ) as server:
            bar = Progress("server: set-up", 1.0)
            started = trio.current_time()
            setup = await livechat_wire.prepare(
                server,
                pairs=params.pairs,
                idle=0,
                chats_per_agent=params.chats_per_agent,
                processes=params.loadgen_procs,
                on_progress=lambda done, total: bar.update(done / total, f"{done}/{total} agents"),
            )
            setup["setup_s"] = round(trio.current_time() - started, 1)
            yield server, "livechat", setup

    return relay() if target == "relay" else livechat()


async def _run_phase(
    phase: str,
    label: str,
    params: E2EParams,
    server: ServerProcess,
    loadgens: LoadGenerators,
    profile_to: Path | None = None,
    notes: list[str] | None = None,
    rate_msgs_s: float = 0.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    is_open = phase.startswith("open_loop")
    duration = params.open_duration_s if is_open else params.closed_duration_s
    cmd: dict[str, Any] = {
        "cmd": "open_loop" if is_open else "closed_loop",
        "duration_s": duration,
        "drain_s": params.drain_s,
        "window": params.window,
    }
    total = max(1, sum(loadgens.sizes))

    def per_child(i: int, base: dict[str, Any]) -> dict[str, Any]:
        return {**base, "rate_msgs_s": rate_msgs_s * loadgens.sizes[i] / total}

    bar = Progress(f"{label}: {phase.replace('_', ' ')}", duration)
    started = trio.current_time()

    def progress() -> None:
        elapsed = min(duration, trio.current_time() - started)
        bar.update(elapsed, f"{loadgens.progress_total('delivered')} delivered")

    cpu0 = server.cpu_seconds()
    busy0 = read_system_busy_seconds()
    raw: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None

    async def drive() -> None:
        raw.extend(
            await loadgens.command(
                cmd,
                per_child=per_child,
                on_progress=progress,
                timeout_s=duration + params.drain_s * DRAIN_CAP_FACTOR + PHASE_SLACK_S,
            )
        )

    async def sample() -> None:
        nonlocal profile
        assert profile_to is not None and server.pid is not None
        await trio.sleep(min(1.0, duration / 4))  # past the start-up transient
        failed = await profiling.record(server.pid, max(1.0, duration * 0.75), profile_to)
        if failed:
            (notes if notes is not None else []).append(f"{label} profile: {failed}")
        else:
            profile = profiling.summarize(profile_to)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive)
        if profile_to is not None:
            nursery.start_soon(sample)
    wall = trio.current_time() - started
    cpu1 = server.cpu_seconds()
    busy1 = read_system_busy_seconds()
    bar.update(duration, f"{loadgens.progress_total('delivered')} delivered")
    merged = merge_traffic(raw)
    elapsed = merged["elapsed_s"] or duration
    delivered = sum(merged["delivered"].values())
    cpu_fraction = merged["loadgen_cpu_fraction"]
    rss = server.rss_kib()
    server_cpu_s = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    other_cpu_percent = None
    if busy0 is not None and busy1 is not None and server_cpu_s is not None:
        ours = server_cpu_s + sum(float(r["cpu_s"]) for r in raw)
        other_cpu_percent = max(0.0, round(100 * (busy1 - busy0 - ours) / wall, 1))
    summary: dict[str, Any] = {
        "offered_msgs_s": rate_msgs_s if is_open else None,
        "in_flight": None if is_open else params.pairs * params.window,
        "duration_s": round(elapsed, 3),
        "sent": sum(merged["sent"].values()),
        "delivered": delivered,
        "delivered_msgs_s": round(delivered / elapsed, 1),
        "lost": merged["lost"],
        "acked_undelivered": merged["acked_undelivered"],
        "unacked": merged["unacked"],
        "outstanding_acked": merged["outstanding_acked"],
        "outstanding_unacked": merged["outstanding_unacked"],
        "given_up": merged["given_up"],
        "given_up_total": merged["given_up_total"],
        "resent_after_resume": merged["resent"],
        "resent_after_timeout": merged["timed_out"],
        "resyncs": merged["resyncs"],
        "via_history": merged["via_history"],
        "cuts_1013": sum(n for k, n in merged["close_reasons"].items() if k.startswith("1013")),
        "duplicates": merged["duplicates"],
        "errors": merged["send_errors"]
        + merged["closed_sockets"]
        - merged["reconnects"]
        + merged["unexpected"]
        + sum(merged["rejected"].values()),
        "rejected": merged["rejected"],
        "close_reasons": merged["close_reasons"],
        "paced_sends": merged["paced"],
        "rate_limited_retries": merged["retried"],
        "retried_by_code": merged["retried_codes"],
        "late_so_far": merged["late_total"],  # counted lost by a phase, delivered later
        "reconnects": merged["reconnects"],
        "reconnect_failures": merged["reconnect_failures"],
        "seq_violations": merged["seq_violations"],
        "latency_v2a": latency_summary_ms(merged["latency_s"]["v2a"]),
        "latency_a2v": latency_summary_ms(merged["latency_s"]["a2v"]),
        "server_cpu_percent": None if server_cpu_s is None else round(100 * server_cpu_s / wall, 1),
        "other_cpu_percent": other_cpu_percent,
        "server_rss_mb": None if rss is None else round(rss / 1024, 1),
        "loadgen_cpu_percent": [round(100 * f, 1) for f in cpu_fraction],
        "loadgen_saturated": loadgen_saturated(cpu_fraction),
        "send_lag_p99_ms": merged["send_lag_p99_ms"],
    }
    if profile is not None:
        summary["profile"] = profile
    return summary, merged


async def _settle(server: ServerProcess) -> float | None:
    """Wait until the server is nearly idle (a backlog from the last phase is worked off)."""
    if server.pid is None:
        return None
    started = trio.current_time()
    with trio.move_on_after(SETTLE_MAX_S):
        while True:
            cpu0 = server.cpu_seconds()
            await trio.sleep(SETTLE_WINDOW_S)
            cpu1 = server.cpu_seconds()
            if cpu0 is None or cpu1 is None or (cpu1 - cpu0) < SETTLE_BUSY * SETTLE_WINDOW_S:
                break
    return round(trio.current_time() - started, 1)


def _conclude(result: BenchResult, params: E2EParams) -> None:
    server = result.results.get("server")
    relay = result.ceiling or None
    if server and relay:
        top = relay["closed_loop"]["delivered_msgs_s"]
        mine = server["closed_loop"]["delivered_msgs_s"]
        result.ratio_to_ceiling = round(mine / top, 3) if top else None
    measured = server or relay
    if not measured:
        return
    p99 = measured["open_loop"]["latency_v2a"]["p99_ms"]
    phases = [
        p for t in (server, relay) if t for k, p in t.items() if k.startswith(("open", "closed"))
    ]
    # Per target, what was still undelivered after its last phase (every phase's leftovers that
    # never turned up): acknowledged (a server bug) or not (lost after resend). A message a phase
    # gave up on but that arrived later (``late_so_far``) is late, not lost.
    targets = [t for t in (server, relay) if t]
    lasts = [
        [p for k, p in t.items() if k.startswith(("open", "closed"))][-1]
        for t in targets
        if any(k.startswith(("open", "closed")) for k in t)
    ]
    acked_undelivered = sum(p["outstanding_acked"] for p in lasts)
    lost = sum(p["outstanding_unacked"] for p in lasts)
    late = sum(p["late_so_far"] for p in lasts)
    duplicates = sum(p["duplicates"] for p in phases)
    losses = [acked_undelivered, lost, duplicates]
    result.results["targets"] = {
        "ratio_to_ceiling": {
            "target": f">= {TARGET_RATIO}",
            "measured": result.ratio_to_ceiling,
            "met": None if result.ratio_to_ceiling is None else result.ratio_to_ceiling >= 0.6,
        },
        "p99_v2a_ms": {
            "target": f"<= {TARGET_P99_MS} at {params.rate_msgs_s:g} msgs/s, {params.pairs} pairs",
            "measured": p99,
            "met": None if p99 is None else p99 <= TARGET_P99_MS,
            "of": "server" if server else "relay",
        },
        "lost_or_duplicated": {"target": "0", "measured": sum(losses), "met": sum(losses) == 0},
        "acked_undelivered": {
            "target": "0",
            "measured": acked_undelivered,
            "met": acked_undelivered == 0,
        },
    }
    result.results["delivered_msgs_s"] = measured["closed_loop"]["delivered_msgs_s"]
    result.results["p99_v2a_ms"] = p99
    half = measured.get("open_loop_half_saturation")
    if half:
        result.results["half_saturation_msgs_s"] = half["offered_msgs_s"]
        result.results["p99_v2a_ms_at_half_saturation"] = half["latency_v2a"]["p99_ms"]
    result.results["acked_undelivered"] = acked_undelivered
    result.results["lost"] = lost
    result.results["late"] = late
    result.results["given_up"] = sum(p["given_up_total"] for p in lasts)
    result.results["cuts_1013"] = sum(p["cuts_1013"] for p in phases)
    result.results["duplicates"] = duplicates
