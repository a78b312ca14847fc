"""The storage bench runs tiny and reports the right shape with zero loss (never speeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.report import write_outputs
from bench.storage_bench import add_arguments, run_storage_bench
from tests.pg import pg_url_or_skip

KEYS = (
    "appends_per_s_group",
    "appends_per_s_single",
    "cpu_us_per_append_group",
    "cpu_us_per_append_single",
    "group_commit_ratio",
    "history_p50_ms",
    "history_p99_ms",
    "search_p50_ms",
    "search_p99_ms",
)


async def test_storage_bench_tiny_sqlite_has_every_key_and_loses_nothing(tmp_path: Path) -> None:
    result = await run_storage_bench(
        backend_url=f"sqlite:///{tmp_path}/b.db",
        messages=500,
        quick=True,
        appends=300,
        callers=16,
        queries=20,
        progress=False,
    )
    for key in KEYS:
        assert isinstance(result.results["sqlite"][key], float | int)
        assert result.results[f"sqlite_{key}"] == result.results["sqlite"][key]
    assert result.results["sqlite"]["appends_lost"] == 0
    out = tmp_path / "storage.json"
    write_outputs([result], json_path=str(out), report_dir=None)
    assert json.loads(out.read_text())["bench"] == "storage"


async def test_profile_samples_the_group_appends(tmp_path: Path) -> None:
    result = await run_storage_bench(
        backend_url=f"sqlite:///{tmp_path}/p.db",
        messages=200,
        quick=True,
        appends=200,
        callers=8,
        queries=10,
        progress=False,
        profile_s=1.0,
    )
    profile = result.results["sqlite"]["profile"]
    assert profile.get("samples", 0) > 0, profile
    # py-spy samples the whole pytest process: its own deep stack can fill the inclusive top
    # frames, so the writer's frames are looked for among the on-CPU (self) ones too.
    frames = [name for _, name in profile["self"] + profile["inclusive"]]
    assert any("sqlite.py" in name or "_appends.py" in name for name in frames), frames


async def test_storage_bench_tiny_postgresql() -> None:
    url = pg_url_or_skip()
    result = await run_storage_bench(
        backend_url=url,
        messages=300,
        quick=True,
        appends=200,
        callers=8,
        queries=10,
        progress=False,
    )
    assert set(KEYS) <= set(result.results["postgresql"])
    assert result.results["postgresql"]["appends_lost"] == 0


def test_bench_arguments_parse() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--quick", "--postgres-url", "none"])
    assert args.quick and args.postgres_url == "none"
