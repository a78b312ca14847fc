"""Redis for tests: the URL, a skip (or, in CI, a failure) when the server is unreachable, and
a channel prefix per test so suites can run side by side on one server."""

from __future__ import annotations

import os
import secrets
import socket
from urllib.parse import urlsplit

import pytest

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url_or_skip() -> str:
    """The test server's URL; skip with the reason (fail when LIVECHAT_REQUIRE_REDIS=1)."""
    url = os.environ.get("LIVECHAT_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2):
            pass
    except OSError as err:
        reason = f"Redis unreachable at {parts.hostname}:{parts.port} ({err})"
        if os.environ.get("LIVECHAT_REQUIRE_REDIS") == "1":
            pytest.fail(reason + " and LIVECHAT_REQUIRE_REDIS=1")
        pytest.skip(reason + "; set LIVECHAT_TEST_REDIS_URL")
    return url


def bus_prefix() -> str:
    """A channel prefix no other test run uses."""
    return "lct-" + secrets.token_hex(6)
