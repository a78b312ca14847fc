"""The cluster bench in its quick configuration, on the real PostgreSQL and Redis: one process
versus ``--workers 2``, then a node SIGKILL under load.

Never asserts a speed: only that nothing acknowledged was lost or duplicated, that the killed
owner's workspace was taken over, and that the output has its keys.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import attrs
import pytest

from bench import commands
from bench.cluster_bench import QUICK, ClusterParams, run_cluster, server_config, throughput
from bench.common import BenchResult
from bench.report import write_outputs
from tests.pg import pg_url_or_skip
from tests.redis_server import redis_url_or_skip

KEYS = {
    "delivered_msgs_s",
    "p50_ms",
    "p99_ms",
    "lost",
    "duplicates",
    "cpu_ms_per_1000_msgs",
    "cpu_ratio_cluster_to_single",
    "takeover_s",
}


@pytest.mark.timeout(600)
async def test_quick_run_loses_nothing_and_the_survivor_takes_over(tmp_path: Path) -> None:
    params = attrs.evolve(
        ClusterParams(pg_url=pg_url_or_skip(), redis_url=redis_url_or_skip()),
        **QUICK,  # type: ignore[arg-type]
    )
    result = await run_cluster(params)

    for mode in ("single", "cluster"):
        measured = result.results[mode]
        assert measured["delivered"] > 0, measured
        assert measured["lost"] == measured["duplicates"] == measured["errors"] == 0, measured
        assert measured["cpu_s"]["server"] > 0 and measured["cpu_s"]["postgres"] > 0, measured
    assert result.results["single"]["server_processes"] == 1
    assert result.results["cluster"]["server_processes"] == 3  # the parent and two workers
    takeover = result.results["takeover"]
    assert takeover["acked"] > 0 and takeover["owners_after"] == ["node-b"], takeover
    assert takeover["lost"] == takeover["duplicates"] == 0, takeover
    assert result.results["takeover_s"] > 0

    write_outputs([result], json_path=str(tmp_path / "cluster.json"), report_dir=None)
    data = json.loads((tmp_path / "cluster.json").read_text())
    assert set(data) >= KEYS
    assert data["lost"] == data["duplicates"] == 0


@pytest.mark.timeout(120)
async def test_two_workspaces_are_both_used_and_their_owners_listed(tmp_path: Path) -> None:
    params = ClusterParams(
        pg_url=pg_url_or_skip(),
        redis_url=redis_url_or_skip(),
        pairs=4,
        rate_msgs_s=20.0,
        duration_s=1.0,
        closed_duration_s=1.0,
        drain_s=5.0,
        workspaces=2,
    )
    result = BenchResult(name="cluster", parameters={}, results={})

    measured = await throughput("cluster", params, tmp_path, server_config(tmp_path), result)

    assert measured["delivered"] > 0, measured
    assert measured["lost"] == measured["duplicates"] == measured["errors"] == 0, measured
    # pair i chats in workspace i % 2: two conversations in each
    assert measured["conversations_per_workspace"] == [2, 2], measured
    # the two workers (--node-id bench: bench-w0, bench-w1) and who owns both workspaces
    assert set(measured["owners"]) == {"bench-w0", "bench-w1"}, measured
    assert sum(measured["owners"].values()) == 2, measured


def test_without_redis_the_bench_is_unavailable_not_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(
        ["bench", "cluster", "--quick", "--redis-url", "redis://127.0.0.1:1/0"]
    )

    assert args.handler(args) == commands.EXIT_UNAVAILABLE
    assert "needs Redis at 127.0.0.1:1" in capsys.readouterr().err
