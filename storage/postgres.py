"""The production backend: PostgreSQL through asyncpg, driven from Trio by trio-asyncio.

The adapter is deliberately thin (after python-trio's triopg): ``open_postgres`` opens a
trio-asyncio loop for the storage's lifetime, creates an asyncpg pool in it, and every driver
call crosses with ``trio_asyncio.aio_as_trio``. A whole transaction program (``storage._sql``)
runs inside ONE asyncio task on one pooled connection, so one crossing serves a transaction.

The group committer (``storage._appends``) keeps one pooled connection of its own between
batches: no acquire, and no release with its reset query (a round trip), per batch; asyncpg's
statement cache stays warm on it. So the pool needs at least two connections. A committer
connection that failed other than by a refusal of the data (dead, cancelled, timed out) is
terminated and the next batch takes a new one from the pool: that is its reconnect. One left
idle for ``committer_max_idle_s`` is closed before the next batch, as the pool closes its own
idle connections (a connection idle that long may have been cut silently by the network).

Bounded waits: each connection sets ``statement_timeout`` server-side; asyncpg's
``command_timeout`` and the pool's connect/acquire timeout bound the client side. When the server
restarts or kills our backends, the pool drops the dead connections and reconnects on the next
acquire; calls in flight fail with ``StorageUnavailable`` (appends with ``CommitFailed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import asyncpg
import trio
import trio_asyncio

from storage._appends import GroupCommitConfig
from storage._base import Clock, SqlStorage, raise_single, serving_committer
from storage._sql import PostgresDialect, Program, Q, Result
from storage.errors import (
    Conflict,
    MigrationError,
    StorageError,
    StorageUnavailable,
)
from storage.schema import migrate_program, version_program

T = TypeVar("T")

POOL_SIZE: Final = 10
MIN_POOL_SIZE: Final = 2  # the group committer's own connection, and one for everything else
COMMITTER_MAX_IDLE_S: Final = 300.0  # asyncpg's default lifetime of an idle pooled connection
STATEMENT_TIMEOUT_S: Final = 30.0  # server-side statement_timeout of every connection
CONNECT_TIMEOUT_S: Final = 5.0  # connecting, and waiting for a pooled connection
APPLICATION_NAME: Final = "livechat"  # shown in pg_stat_activity
_COMMAND_SLACK_S: Final = 5.0  # client-side timeout = statement timeout + this
_PLACEHOLDER = re.compile(r"\?")
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
    asyncpg.exceptions.CannotConnectNowError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
)


def to_pg(sql: str) -> str:
    """``?`` placeholders to ``$1, $2, ...``."""
    counter = iter(range(1, 1 << 16))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def translate(err: BaseException) -> StorageError:
    """One driver error as ours (translated once, here at the edge)."""
    if isinstance(err, asyncpg.UniqueViolationError):
        return Conflict(str(err))
    if isinstance(err, asyncpg.QueryCanceledError):
        return StorageUnavailable(f"PostgreSQL statement timed out or was cancelled: {err}")
    if isinstance(err, _CONNECTION_ERRORS):
        kind = type(err).__name__
        return StorageUnavailable(f"PostgreSQL is unreachable ({kind}: {err})")
    return StorageError(f"PostgreSQL: {type(err).__name__}: {err}")


def _idle(conn: Any) -> bool:
    """A pooled connection fit for the next transaction: open and outside one. False too once
    asyncpg gave it back to the pool itself (its connection was lost: the proxy is detached and
    its slot may already serve another caller)."""
    try:
        return not conn.is_closed() and not conn.is_in_transaction()
    except asyncpg.InterfaceError:
        return False


class _Session:
    """A multi-await transaction on one pooled connection; see ``PostgresStorage.transaction``."""

    def __init__(self, storage: PostgresStorage, conn: Any) -> None:
        self._storage = storage
        self._conn = conn

    async def run(self, q: Q) -> Result:
        return await self._storage._call(self._storage._execute, self._conn, q)


class PostgresStorage(SqlStorage):
    """``Storage`` on PostgreSQL; open it with ``open_postgres`` (or ``open_storage``)."""

    backend_name = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int,
        statement_timeout_s: float,
        connect_timeout_s: float,
        application_name: str,
        group_commit: GroupCommitConfig,
        clock: Clock,
        committer_max_idle_s: float = COMMITTER_MAX_IDLE_S,
    ) -> None:
        if pool_size < MIN_POOL_SIZE:
            raise ValueError(
                f"pool_size must be at least {MIN_POOL_SIZE}: the group committer keeps one"
                " connection of its own"
            )
        super().__init__(PostgresDialect(), clock=clock, group_commit=group_commit)
        self._application_name = application_name
        self.dsn = dsn
        self._pool_size = pool_size
        self._statement_timeout_s = statement_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pool: Any = None
        self._committer_conn: Any = None  # the group committer's own pooled connection
        self._committer_max_idle_s = committer_max_idle_s
        self._committer_idle_since = 0.0  # time.monotonic() when its last batch ended
        self._sql_cache: dict[str, str] = {}
        # The trio-asyncio loop the pool lives in, named on every call: the backend may be
        # opened in one task (the supervision tree's storage child) and used from any other.
        self._loop: trio_asyncio.TrioEventLoop | None = None

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run an asyncio coroutine function in the loop; driver errors become ours."""
        try:
            result: T = await trio_asyncio.aio_as_trio(fn, loop=self._loop)(*args)
        except StorageError:
            raise
        except Exception as err:
            raise translate(err) from err
        return result

    async def open(self) -> int:
        """Create the pool and apply pending migrations; returns the schema version."""
        statement_ms = int(self._statement_timeout_s * 1000)
        try:
            self._pool = await self._call(self._create_pool, statement_ms)
        except StorageUnavailable as err:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {err}") from err
        try:
            return await self._write(migrate_program("postgresql"))
        except MigrationError:
            raise
        except StorageError as err:
            raise MigrationError(f"migrating PostgreSQL failed: {err}") from err

    async def _create_pool(self, statement_ms: int) -> Any:
        return await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self._pool_size,
            timeout=self._connect_timeout_s,
            command_timeout=self._statement_timeout_s + _COMMAND_SLACK_S,
            server_settings={
                "statement_timeout": str(statement_ms),
                "idle_in_transaction_session_timeout": str(statement_ms * 2),
                "application_name": self._application_name,
            },
        )

    async def _acquire(self, pool: Any) -> Any:
        return await pool.acquire(timeout=self._connect_timeout_s)

    async def aclose(self) -> None:
        """Close the pool; the committer has stopped (``open_postgres`` closes it first)."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        conn, self._committer_conn = self._committer_conn, None
        with trio.CancelScope(shield=True), trio.move_on_after(self._connect_timeout_s):
            try:
                if conn is not None and _idle(conn):
                    await self._call(pool.release, conn)
                await self._call(pool.close)
            except StorageError:
                pool.terminate()

    def _pg_sql(self, sql: str) -> str:
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = self._sql_cache[sql] = to_pg(sql)
        return cached

    async def _execute(self, conn: Any, q: Q) -> Result:
        """One statement (asyncio side)."""
        if q.script:
            await conn.execute(q.sql)
            return Result([], -1)
        sql = self._pg_sql(q.sql)
        if q.many is not None:
            await conn.executemany(sql, q.many)
            return Result([], -1)
        if sql.lstrip().upper().startswith(("SELECT", "WITH", "PRAGMA")) or " RETURNING " in sql:
            rows = [dict(r) for r in await conn.fetch(sql, *q.args)]
            return Result(rows, len(rows))
        status: str = await conn.execute(sql, *q.args)
        count = status.rsplit(" ", 1)[-1]
        return Result([], int(count) if count.isdigit() else -1)

    async def _run_program(self, program: Program[T], write: bool) -> T:
        """Drive a program in one transaction (asyncio side)."""
        if self._pool is None:
            raise StorageUnavailable("storage is not open")
        try:
            async with self._pool.acquire(timeout=self._connect_timeout_s) as conn:
                if not write:
                    # Read programs are single statements: autocommit saves two round trips.
                    # (A multi-statement snapshot is ``transaction(write=False)``.)
                    return await self._drive(conn, program)
                async with conn.transaction(isolation="read_committed"):
                    return await self._drive(conn, program)
        finally:
            program.close()

    async def _drive(self, conn: Any, program: Program[T]) -> T:
        try:
            q = next(program)
            while True:
                q = program.send(await self._execute(conn, q))
        except StopIteration as stop:
            value: T = stop.value
            return value

    async def _write(self, program: Program[T]) -> T:
        return await self._call(self._run_program, program, True)

    async def _write_appends(self, program: Program[T]) -> T:
        return await self._call(self._run_appends, program)

    async def _run_appends(self, program: Program[T]) -> T:
        """The committer's transaction on its own connection (asyncio side; module docstring).

        Kept after success, and after the database refused the data (the transaction was rolled
        back, the connection is sound). Any other failure, cancellation included, terminates it
        (the pool's slot is freed at once), so no batch inherits a connection in doubt.
        """
        try:
            if self._pool is None:
                raise StorageUnavailable("storage is not open")
            conn = self._committer_conn
            idle_s = time.monotonic() - self._committer_idle_since
            if conn is not None and idle_s > self._committer_max_idle_s:
                await self._close_committer_conn()
                conn = None
            if conn is None or not _idle(conn):  # e.g. its backend was killed while idle
                self._drop_committer_conn()
                conn = self._committer_conn = await self._acquire(self._pool)
            try:
                async with conn.transaction(isolation="read_committed"):
                    return await self._drive(conn, program)
            except BaseException as err:
                refused = isinstance(err, StorageError) or (
                    isinstance(err, asyncpg.PostgresError)
                    and not isinstance(err, (*_CONNECTION_ERRORS, asyncpg.QueryCanceledError))
                )
                if not (refused and _idle(conn)):
                    self._drop_committer_conn()
                raise
            finally:
                self._committer_idle_since = time.monotonic()
        finally:
            program.close()

    async def _close_committer_conn(self) -> None:
        """Close it politely (bounded); one that fails to close has aborted itself."""
        if self._committer_conn is None or not _idle(self._committer_conn):
            self._drop_committer_conn()
            return
        conn, self._committer_conn = self._committer_conn, None
        with contextlib.suppress(*_CONNECTION_ERRORS, asyncpg.PostgresError):
            await conn.close(timeout=self._connect_timeout_s)

    def _drop_committer_conn(self) -> None:
        conn, self._committer_conn = self._committer_conn, None
        if conn is not None:
            with contextlib.suppress(asyncpg.InterfaceError):  # asyncpg already released it
                conn.terminate()

    async def _read(self, program: Program[T]) -> T:
        return await self._call(self._run_program, program, False)

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_Session]:
        """One transaction on one connection across awaits; a read session is a REPEATABLE
        READ snapshot, so a streamed export is consistent while writers commit."""
        if self._pool is None:
            raise StorageUnavailable("storage is not open")
        pool = self._pool
        conn = await self._call(self._acquire, pool)
        try:
            isolation = "read_committed" if write else "repeatable_read"
            tx = conn.transaction(isolation=isolation, readonly=not write)
            await self._call(tx.start)
            try:
                yield _Session(self, conn)
            except BaseException:
                # A dead connection took its transaction with it: nothing to roll back.
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(self._connect_timeout_s),
                    contextlib.suppress(StorageError),
                ):
                    await self._call(tx.rollback)
                raise
            await self._call(tx.commit)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self._connect_timeout_s):
                try:
                    await self._call(pool.release, conn)
                except StorageError:
                    conn.terminate()

    async def schema_version(self) -> int:
        return await self._read(version_program())

    async def ping(self) -> None:
        await self._read(version_program())

    async def _probe_write(self) -> None:
        """A round trip on a pooled connection (bounded by the acquire and command timeouts;
        ``/readyz`` adds its own deadline)."""
        await self._read(version_program())


@asynccontextmanager
async def open_postgres(
    dsn: str,
    *,
    pool_size: int = POOL_SIZE,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    application_name: str = APPLICATION_NAME,
    group_commit: GroupCommitConfig | None = None,
    clock: Clock = time.time,
    committer_max_idle_s: float = COMMITTER_MAX_IDLE_S,
) -> AsyncIterator[PostgresStorage]:
    """Open the pool (inside its own trio-asyncio loop) and migrate; close everything on exit.

    On exit, appends already queued are committed before the pool closes.
    """
    storage = PostgresStorage(
        dsn,
        pool_size=pool_size,
        statement_timeout_s=statement_timeout_s,
        connect_timeout_s=connect_timeout_s,
        application_name=application_name,
        group_commit=group_commit or GroupCommitConfig(),
        clock=clock,
        committer_max_idle_s=committer_max_idle_s,
    )
    try:
        async with trio_asyncio.open_loop() as loop:
            storage._loop = loop
            try:
                await storage.open()
                async with serving_committer(storage):
                    yield storage
            finally:
                await storage.aclose()
    except BaseExceptionGroup as group:  # the loop's nursery wraps the block's own error
        raise_single(group)
