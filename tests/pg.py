"""PostgreSQL for tests: the URL, a skip (or, in CI, a failure) when the server is unreachable,
and a throwaway schema per test so suites can run repeatedly and side by side."""

from __future__ import annotations

import functools
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

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
        # and its key vault (storage._vault: ``<search_path schema>_vault``)
        psql(
            url,
            f"DROP SCHEMA IF EXISTS {schema} CASCADE; DROP SCHEMA IF EXISTS {schema}_vault CASCADE",
        )


class OutageProxy:
    """A TCP proxy in front of PostgreSQL that can make it unreachable and bring it back.

    ``cut()``: bytes stop flowing both ways on open connections and new ones are accepted but
    never answered (a network that drops packets, the hardest outage: no error, only silence).
    ``cut(refuse=True)``: a server that is down: open connections are closed at once and new
    ones closed as soon as they are accepted (the driver sees errors, not silence).
    ``restore()``: the connections open during the cut are closed (as a real network outage
    ends them) and traffic flows again. Run it with ``nursery.start(proxy.serve)``.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._url = url
        self.port = 0
        self._flowing = trio.Event()
        self._flowing.set()
        self._scopes: set[trio.CancelScope] = set()
        self._refusing = False

    @property
    def url(self) -> str:
        """The target URL with the proxy's address in place of the server's."""
        return self.route(self._url)

    def route(self, url: str) -> str:
        """``url`` (same server, any database or options) through the proxy."""
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def cut(self, *, refuse: bool = False) -> None:
        if refuse:
            self._refusing = True
            self._close_all()
        else:
            self._flowing = trio.Event()

    def restore(self) -> None:
        self._refusing = False
        self._close_all()
        self._flowing.set()

    def _close_all(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            )
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started()

    async def _handle(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client:
                    if self._refusing:
                        return  # closed as soon as accepted
                    await self._flowing.wait()  # accepted during a cut: silence until restored
                    with trio.fail_after(5):
                        upstream = await trio.open_tcp_stream(*self._target)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                self._scopes.discard(scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope
    ) -> None:
        # A reset on either side ends the pair, as end of stream does: caught here, since
        # the nursery around the two pumps would wrap it in an ExceptionGroup.
        try:
            while data := await source.receive_some(65536):
                await self._flowing.wait()  # during a cut: held until restore closes us
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        both.cancel()
