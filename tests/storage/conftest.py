"""The ``storage`` fixture: one opened Storage per backend, so one suite tests both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from storage import open_backend
from storage._base import SqlStorage
from tests.pg import pg_schema_url

Opener = Callable[..., AbstractAsyncContextManager[Any]]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of each backend (a fresh PostgreSQL schema per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/test.db"
        return
    with pg_schema_url() as url:
        yield url


@pytest.fixture
def open_store(database_url: str) -> Opener:
    """Open (and reopen) the test database with optional backend options."""

    def opener(**options: Any) -> AbstractAsyncContextManager[SqlStorage]:
        return open_backend(database_url, **options)

    return opener


@pytest.fixture
async def storage(open_store: Opener) -> AsyncIterator[SqlStorage]:
    async with open_store() as store:
        yield store
