"""The connections bench in a tiny configuration: every socket opens and stays open."""

from __future__ import annotations

import pytest

from bench import profile as profiling
from bench.connections import ConnectionsParams, run_connections

TINY = dict(connections=40, hold_s=1.0, heartbeat_s=0.5)
KEYS = {
    "connections",
    "connect_rate_per_s",
    "handshake",
    "rss_kib_per_connection",
    "heartbeats",
    "server_cpu_us_per_heartbeat",
    "idle_cpu_percent",
    "still_open",
    "closed_by_server",
}


def _assert_all_held(measured: dict[str, object]) -> None:
    assert measured.keys() >= KEYS
    assert measured["connections"] == measured["still_open"] == 40
    assert measured["connect_errors"] == measured["closed_by_server"] == 0
    assert measured["heartbeat_errors"] == 0
    assert isinstance(measured["heartbeats"], int) and measured["heartbeats"] > 0


async def test_idle_visitors_are_authenticated_counted_and_kept_open() -> None:
    """One run, both targets: idle visitors on the real server and on the bare relay."""
    result = await run_connections(ConnectionsParams(**TINY))  # type: ignore[arg-type]

    _assert_all_held(result.results["server"])
    _assert_all_held(result.ceiling)
    assert result.results["targets"]["all_connected"]["met"] is True
    assert result.results["rss_kib_per_connection"] is not None
    assert result.parameters["nofile_limit"][0] >= 40
    assert result.results["idle_cpu_percent"] is not None
    assert result.results["targets"]["connect_rate_per_s"]["measured"] > 0


async def test_profile_puts_the_top_frames_of_both_phases_in_the_results() -> None:
    """py-spy samples the server while the sockets open and while they are held."""
    if profiling.find_py_spy() is None:
        pytest.skip("py-spy is not installed (the bench extra)")
    params = ConnectionsParams(**TINY, targets=("server",), profile=True)  # type: ignore[arg-type]
    result = await run_connections(params)

    server = result.results["server"]
    for phase in ("connect", "hold"):
        assert server[phase]["profile"]["samples"] > 0, result.notes
        assert server[phase]["profile"]["inclusive"]
