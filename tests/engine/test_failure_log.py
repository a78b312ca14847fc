"""A storage outage is a few warnings, not one per failed call: at most one line per
``SUMMARY_INTERVAL_S``: the first failure at once, then how many more failed (of which types),
then that calls succeed again. Before, a 30 s PostgreSQL outage logged about 1,750 warnings per
node."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio

from engine.config import EngineConfig
from engine.context import EngineContext
from engine.decisions import DecisionLog
from engine.errors import PersistenceUnavailable
from engine.failure_log import SUMMARY_INTERVAL_S, FailureLog
from engine.metrics import EngineMetrics
from engine.presence import Hub
from storage import CommitFailed, StorageUnavailable, open_storage

log = logging.getLogger("tests.failure_log")


def _messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def _counted(lines: list[str]) -> int:
    """The failures the lines account for: a first failure, summaries, the recovery's tail."""
    counted = 0
    for line in lines:
        if " failed: " in line:
            counted += 1
        elif summary := re.search(r" failed (\d+) times in ", line):
            counted += int(summary.group(1))
        elif tail := re.search(r"\(the last (\d+) not logged", line):
            counted += int(tail.group(1))
    return counted


def test_a_30_s_outage_of_1750_failures_is_seven_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    now = [0.0]
    failures = FailureLog(log, "storage call", clock=lambda: now[0])
    for i in range(1750):  # one failure every 17 ms for 30 s
        now[0] = i * 30.0 / 1750
        err = CommitFailed("commit failed") if i % 10 == 0 else StorageUnavailable("refused")
        failures.failed(err)
    now[0] = 31.0
    failures.succeeded()
    failures.succeeded()  # nothing more to say

    lines = _messages(caplog, log.name)
    # the first failure, a summary at 5, 10, 15, 20 and 25 s, the recovery
    assert len(lines) == 7, lines
    assert lines[0] == "storage call failed: CommitFailed: commit failed"
    assert all(
        re.fullmatch(r"storage call failed \d+ times in the last 5\.0 s \(StorageUnavailable .*", s)
        for s in lines[1:-1]
    ), lines
    assert lines[-1].startswith("storage calls succeed again after 1750 failures (the last ")
    assert _counted(lines) == 1750


def test_calls_failing_and_succeeding_by_turns_log_one_line_per_interval_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    now = [0.0]
    failures = FailureLog(log, "storage call", clock=lambda: now[0])
    for i in range(1000):  # a flapping database (or reads a cache answers): 30 s of it
        now[0] = i * 0.03
        failures.failed(StorageUnavailable("refused"))
        failures.succeeded()
    now[0] = 40.0
    failures.succeeded()
    lines = _messages(caplog, log.name)
    assert len(lines) <= 30.0 / SUMMARY_INTERVAL_S + 2, lines
    assert lines[0] == "storage call failed: StorageUnavailable: refused"
    assert lines[-1].startswith("storage calls succeed again after ")
    assert _counted(lines) == 1000


def test_a_failure_after_a_quiet_interval_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    now = [0.0]
    failures = FailureLog(log, "storage call", clock=lambda: now[0])
    failures.failed(StorageUnavailable("down"))
    now[0] = 10.0
    failures.succeeded()
    now[0] = 20.0
    failures.failed(StorageUnavailable("down again"))
    assert _messages(caplog, log.name) == [
        "storage call failed: StorageUnavailable: down",
        "storage calls succeed again after 1 failures",
        "storage call failed: StorageUnavailable: down again",
    ]


async def test_a_burst_of_failed_storage_calls_is_one_warning_and_the_recovery_one_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="engine.context")
    now = [0.0]
    async with open_storage(f"sqlite:///{tmp_path / 'engine.db'}") as storage:
        ctx = EngineContext(
            storage=storage,
            config=EngineConfig(),
            hub=Hub(),
            metrics=EngineMetrics(),
            clock=trio.current_time,
            decisions=DecisionLog(storage, timeout_s=1.0),
            storage_failures=FailureLog(
                logging.getLogger("engine.context"), "storage call", clock=lambda: now[0]
            ),
        )

        async def down() -> None:
            raise StorageUnavailable("connection refused")

        for _ in range(500):
            with pytest.raises(PersistenceUnavailable):
                await ctx.call(down())
        assert await ctx.call(storage.get_workspace("nope")) is None  # within the interval
        assert _messages(caplog, "engine.context") == [
            "storage call failed: StorageUnavailable: connection refused"
        ]
        now[0] = SUMMARY_INTERVAL_S
        assert await ctx.call(storage.get_workspace("nope")) is None
        assert await ctx.call(storage.get_workspace("nope")) is None
    assert _messages(caplog, "engine.context")[1:] == [
        "storage calls succeed again after 500 failures"
        " (the last 499 not logged: StorageUnavailable 499)"
    ]
