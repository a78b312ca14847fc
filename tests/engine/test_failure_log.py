"""A storage outage is a few warnings, not one per failed call: the first failure at once, a
summary at most every ``SUMMARY_INTERVAL_S`` (how many more, of which types), one line when
calls succeed again. Before, a 30 s PostgreSQL outage logged about 1,750 warnings per node."""

from __future__ import annotations

import logging
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


def test_a_30_s_outage_of_1750_failures_is_seven_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    now = [0.0]
    failures = FailureLog(log, "storage call", clock=lambda: now[0])
    for i in range(1750):  # one failure every 17 ms for 30 s
        now[0] = i * 30.0 / 1750
        err = CommitFailed("commit failed") if i % 10 == 0 else StorageUnavailable("refused")
        failures.failed(err)
    assert failures.failing
    now[0] = 30.0
    failures.succeeded()
    failures.succeeded()  # nothing more to say

    lines = _messages(caplog, log.name)
    # the first failure, a summary at 5, 10, 15, 20 and 25 s, the recovery
    assert len(lines) == 7, lines
    assert lines[0] == "storage call failed: CommitFailed: commit failed"
    assert all(
        f" more times in {SUMMARY_INTERVAL_S:.1f} s (StorageUnavailable " in line
        for line in lines[1:-1]
    )
    assert lines[-1].startswith("storage calls succeed again after 1750 failures (")
    # every failure is counted once: the first, the summaries, what the recovery line adds
    counted = 1 + sum(int(line.split(" failed ")[1].split()[0]) for line in lines[1:-1])
    counted += int(lines[-1].split("(the last ")[1].split()[0])
    assert counted == 1750
    assert not failures.failing


def test_a_new_outage_after_a_recovery_logs_its_first_failure_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=log.name)
    failures = FailureLog(log, "storage call", clock=lambda: 0.0)
    failures.failed(StorageUnavailable("down"))
    failures.succeeded()
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
    async with open_storage(f"sqlite:///{tmp_path / 'engine.db'}") as storage:
        ctx = EngineContext(
            storage=storage,
            config=EngineConfig(),
            hub=Hub(),
            metrics=EngineMetrics(),
            clock=trio.current_time,
            decisions=DecisionLog(storage, timeout_s=1.0),
        )

        async def down() -> None:
            raise StorageUnavailable("connection refused")

        for _ in range(500):
            with pytest.raises(PersistenceUnavailable):
                await ctx.call(down())
        assert _messages(caplog, "engine.context") == [
            "storage call failed: StorageUnavailable: connection refused"
        ]
        assert await ctx.call(storage.get_workspace("nope")) is None
        assert await ctx.call(storage.get_workspace("nope")) is None
    assert _messages(caplog, "engine.context")[1:] == [
        "storage calls succeed again after 500 failures"
        " (the last 499 not logged: StorageUnavailable 499)"
    ]
