"""Suite-wide rules.

PostgreSQL and browser tests skip with a reason on a user's machine, and fail instead when CI
sets LIVECHAT_REQUIRE_POSTGRES / LIVECHAT_REQUIRE_BROWSER (see tests/pg.py, tests/browser).

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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _deferred:
        terminalreporter.write_line(line, yellow=True)
