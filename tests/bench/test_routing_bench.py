"""The routing bench runs tiny and reports the right shape, with nothing lost (never speed)."""

from __future__ import annotations

import argparse
import gc

import pytest

from bench import profile as profiling
from bench import routing_bench
from bench.report import render_page


def _args(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    routing_bench.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_routing_bench_tiny_run_has_the_keys_and_loses_nothing(tmp_path) -> None:
    thresholds = gc.get_threshold()
    result = routing_bench.run(
        _args(conversations=6, agents=2, messages=60, senders=4, database=str(tmp_path / "b.db"))
    )
    data = result.to_json()
    for key in (
        "cpu_us_per_msg",
        "p99_ms_at_half_saturation",
        "half_saturation_msgs_s",
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
    # a closed loop, then an open loop at half its rate: 60 messages each, all delivered
    assert data["lost"] == 0 and data["delivered"] == 120
    half = result.results["open_loop_half_saturation"]
    assert half["delivered"] == 60
    assert abs(half["offered_msgs_s"] - result.results["throughput_msgs_s"] / 2) <= 0.1
    assert set(result.results["targets"]) == {"cpu_us_per_msg", "p99_ms_at_half_saturation", "lost"}
    # the bench tunes the GC as `livechat serve` does, and gives the process its GC back
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0


@pytest.mark.skipif(profiling.find_py_spy() is None, reason="py-spy (the bench extra)")
def test_profile_puts_the_top_frames_in_the_results_and_the_report(tmp_path) -> None:
    result = routing_bench.run(
        _args(
            conversations=6,
            agents=2,
            messages=60,
            senders=4,
            database=str(tmp_path / "b.db"),
            profile=True,
            profile_s=1.0,
            report=str(tmp_path / "report"),
        )
    )
    profile = result.results["profile"]
    assert profile["samples"] > 0, result.notes
    assert any("routing_bench.py" in name for _, name in profile["inclusive"])
    assert (tmp_path / "report" / "routing.pyspy.raw").exists()
    page = render_page([result])
    assert "Profile: in-process closed loop" in page


def test_idle_visitor_mode_reports_bytes_per_visitor(tmp_path) -> None:
    result = routing_bench.run(_args(idle_visitors=200, database=str(tmp_path / "i.db")))
    assert result.results["live_visitor_actors"] >= 200
    assert "bytes_per_idle_visitor" in result.results
