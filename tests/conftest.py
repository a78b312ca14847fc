"""Suite-wide rules.

PostgreSQL and Redis tests skip with a reason on a machine without a reachable server (the
summary ends with a NOT RUN line saying how many and why), and fail instead when
LIVECHAT_REQUIRE_POSTGRES=1 / LIVECHAT_REQUIRE_REDIS=1 (CI; see tests/pg.py,
tests/redis_server.py). Browser tests fail when Chromium is missing unless skipped on purpose
with LIVECHAT_SKIP_BROWSER=1 (see tests/browser/conftest.py). Every test has a timeout
(pytest-timeout, set in pyproject.toml).

Browser tests run in a pytest process of their own (``make test`` runs two): trio-asyncio,
which the PostgreSQL backend uses, replaces asyncio's global event-loop policy when imported,
and Playwright's sync API then cannot start its own loop. A session that collects both kinds
runs the others and says, in the summary, how to run the browser tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

BROWSER_DIR = Path(__file__).parent / "browser"
_deferred: list[str] = []


def _is_browser_test(item: pytest.Item) -> bool:
    return BROWSER_DIR in Path(str(item.fspath)).parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    browser = [item for item in items if _is_browser_test(item)]
    if not browser or len(browser) == len(items):
        return
    items[:] = [item for item in items if not _is_browser_test(item)]
    config.hook.pytest_deselected(items=browser)
    _deferred.append(f"{len(browser)} browser tests deferred: run them with `pytest tests/browser`")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep the reason of a ``pytest.skip(reason)`` raised in a trio test: pytest-trio re-raises
    it as a bare ``pytest.skip()``, and the summary would only say "Skipped"."""
    report = yield
    if report.skipped and call.excinfo is not None and isinstance(report.longrepr, tuple):
        original = _inner_skip(call.excinfo.value.__context__)
        if original is not None:
            path, line, _ = item.location
            report.longrepr = (path, (line or 0) + 1, f"Skipped: {original.msg}")
    return report


def _inner_skip(error: BaseException | None) -> pytest.skip.Exception | None:
    if isinstance(error, pytest.skip.Exception):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _inner_skip(inner)) is not None:
                return found
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _deferred:
        terminalreporter.write_line(line, yellow=True)
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else ""
        reason = reason.removeprefix("Skipped: ")
        if reason.startswith(("PostgreSQL", "Redis")):
            reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in reasons.items():
        service = reason.split(" ", 1)[0]
        terminalreporter.write_line(
            f"NOT RUN: {count} {service} tests skipped: {reason}"
            f" (LIVECHAT_REQUIRE_{service.upper()}=1 makes this a failure)",
            yellow=True,
            bold=True,
        )
