"""Fixtures: a real server on loopback (``srv``) and logged-in HTTP clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.web.server import TestServer, run_test_server


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[TestServer]:
    async with run_test_server(tmp_path) as server:
        yield server
