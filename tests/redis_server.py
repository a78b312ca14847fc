"""Redis for tests: the URL, a skip (or, in CI, a failure) when the server is unreachable, and
a channel prefix per test so suites can run side by side on one server."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from urllib.parse import urlsplit

import pytest
import trio

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


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free port, to kill and start again (the
    machine's Redis is shared with other test runs and must not be restarted)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: trio.Process | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            reason = "Redis server binary (redis-server) is not installed"
            if os.environ.get("LIVECHAT_REQUIRE_REDIS") == "1":
                pytest.fail(reason + " and LIVECHAT_REQUIRE_REDIS=1")
            pytest.skip(reason)
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._proc = await trio.lowlevel.open_process(
            [binary, "--port", str(self.port), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(10):
            while True:  # until it listens (a fresh process: nothing to wait on but the port)
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                    await stream.aclose()
                    return
                except OSError:
                    await trio.sleep(0.05)

    async def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
