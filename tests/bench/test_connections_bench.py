"""The connections bench in a tiny configuration: every socket opens and stays open."""

from __future__ import annotations

import pytest

from bench.connections import ConnectionsParams, run_connections

TINY = dict(connections=40, hold_s=1.0, heartbeat_s=0.5)
KEYS = {
    "connections",
    "connect_rate_per_s",
    "handshake",
    "rss_kib_per_connection",
    "heartbeats",
    "server_cpu_us_per_heartbeat",
    "still_open",
    "closed_by_server",
}


def _assert_all_held(measured: dict[str, object]) -> None:
    assert measured.keys() >= KEYS
    assert measured["connections"] == measured["still_open"] == 40
    assert measured["connect_errors"] == measured["closed_by_server"] == 0
    assert measured["heartbeat_errors"] == 0
    assert isinstance(measured["heartbeats"], int) and measured["heartbeats"] > 0


async def test_relay_idle_connections_are_counted_and_kept_open() -> None:
    result = await run_connections(ConnectionsParams(targets=("relay",), **TINY))  # type: ignore[arg-type]

    _assert_all_held(result.ceiling)
    assert result.results["targets"]["all_connected"]["met"] is True
    assert result.parameters["nofile_limit"][0] >= 40


async def test_server_idle_visitors_are_authenticated_and_kept_open() -> None:
    pytest.importorskip("bench.livechat_wire", reason="real-server protocol client not built")
    result = await run_connections(ConnectionsParams(**TINY))  # type: ignore[arg-type]

    _assert_all_held(result.results["server"])
    assert result.results["rss_kib_per_connection"] is not None
