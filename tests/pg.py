"""PostgreSQL for tests: the URL, a skip (or, in CI, a failure) when the server is unreachable,
and a throwaway schema per test so suites can run repeatedly and side by side."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_url_or_skip() -> str:
    """The test server's URL; skip with the reason (fail when LIVECHAT_REQUIRE_POSTGRES=1)."""
    url = os.environ.get("LIVECHAT_TEST_PG_URL", DEFAULT_PG_URL)
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            pass
    except OSError as err:
        reason = f"PostgreSQL unreachable at {parts.hostname}:{parts.port} ({err})"
        if os.environ.get("LIVECHAT_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " and LIVECHAT_REQUIRE_POSTGRES=1")
        pytest.skip(reason + "; set LIVECHAT_TEST_PG_URL")
    return url


def psql(url: str, sql: str) -> str:
    """Run SQL with the psql client (no driver needed); returns its unaligned output."""
    done = subprocess.run(
        ["psql", url.split("?", 1)[0], "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema (``search_path``), dropped afterwards."""
    url = pg_url_or_skip()
    schema = "t_" + secrets.token_hex(6)
    psql(url, f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}search_path={schema}"
    finally:
        psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
