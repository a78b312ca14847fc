"""The routing bench runs tiny and reports the right shape, with nothing lost (never speed)."""

from __future__ import annotations

import argparse

from bench import routing_bench


def _args(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    routing_bench.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_routing_bench_tiny_run_has_the_keys_and_loses_nothing(tmp_path) -> None:
    result = routing_bench.run(
        _args(conversations=6, agents=2, messages=60, senders=4, database=str(tmp_path / "b.db"))
    )
    data = result.to_json()
    for key in (
        "throughput_msgs_s",
        "ceiling_msgs_s",
        "ratio_to_ceiling",
        "p50_ms",
        "p99_ms",
        "conversations",
        "agents",
        "peak_rss_mb",
    ):
        assert key in data, key
    assert data["lost"] == 0 and data["delivered"] == 60


def test_idle_visitor_mode_reports_bytes_per_visitor(tmp_path) -> None:
    result = routing_bench.run(_args(idle_visitors=200, database=str(tmp_path / "i.db")))
    assert result.results["live_visitor_actors"] >= 200
    assert "bytes_per_idle_visitor" in result.results
