"""The embedded backend: one SQLite file, stdlib ``sqlite3``, WAL, driven from Trio by threads.

Shape:

* ONE writer connection, used only from a thread under ``CapacityLimiter(1)`` (and a
  ``trio.Lock`` so a multi-await write session, like an import, is exclusive). Write
  transactions are ``BEGIN IMMEDIATE``: the lock is taken up front, so a batch never fails
  half-way on a lock upgrade, and another process waits up to ``busy_timeout``.
* Writes that queue while the writer is busy share its next transaction (``run_group``): one
  commit, so one fsync, for all of them, each in its own savepoint so that one refused is
  undone alone. Nobody hears a result before that commit returned. A write queued alone runs
  alone, as before; a group costs no waiting, only what the previous commit made wait.
* A pool of reader connections (``CapacityLimiter(n)``); WAL lets them read a consistent
  snapshot while the writer commits.
* ``synchronous=FULL``: a commit returns after the WAL is fsynced; power loss keeps it.
* Threads are never abandoned on cancel (``abandon_on_cancel=False``). Instead every
  transaction has a deadline enforced inside SQLite (a progress handler) and lock waits are
  bounded by ``busy_timeout``, so a cancelled caller waits at most that long.
"""

from __future__ import annotations

import logging
import math
import queue
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import outcome
import trio

from storage._appends import GroupCommitConfig
from storage._base import Clock, SqlStorage, serving_committer
from storage._base import execute as execute_program
from storage._sql import Program, Q, Result, Row, SQLiteDialect
from storage._vault import sqlite_vault_path
from storage.errors import (
    BackupError,
    Conflict,
    MigrationError,
    StorageError,
    StorageUnavailable,
)
from storage.schema import migrate_program, version_program

T = TypeVar("T")
log = logging.getLogger("livechat.storage")

READER_POOL_SIZE: Final = 4
BUSY_TIMEOUT_S: Final = 5.0  # how long a write waits for another process's lock
PROBE_BUSY_TIMEOUT_S: Final = 0.5  # readiness: how long the write probe waits for the lock
STATEMENT_TIMEOUT_S: Final = 30.0  # a transaction running longer is interrupted
_PROGRESS_STEPS: Final = 10_000  # SQLite VM steps between two deadline checks


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def translate(err: sqlite3.Error, *, timeout_s: float) -> StorageError:
    """One SQLite error as ours (translated once, here at the edge)."""
    text = str(err)
    if isinstance(err, sqlite3.IntegrityError) and "UNIQUE" in text:
        return Conflict(text)
    if isinstance(err, sqlite3.OperationalError):
        if "interrupted" in text:
            return StorageUnavailable(f"SQLite transaction exceeded {timeout_s} s")
        if "locked" in text or "busy" in text:
            return StorageUnavailable(f"SQLite database is locked by another writer: {text}")
        return StorageUnavailable(f"SQLite: {text}")
    return StorageError(f"SQLite: {text}")


@attrs.define(eq=False)
class _Write:
    """A write program waiting for the writer, then its outcome (set in the writer thread)."""

    program: Program[Any]
    started: bool = False
    outcome: outcome.Outcome[Any] | None = None


class _Connection:
    """A sqlite3 connection plus the deadline its progress handler enforces."""

    def __init__(self, path: str, *, busy_timeout_s: float, statement_timeout_s: float) -> None:
        self.timeout_s = statement_timeout_s
        self.deadline = math.inf
        self.raw = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self.raw.row_factory = _dict_row
        # The key vault (storage._vault): its own file, never in a data backup.
        self.raw.execute("ATTACH DATABASE ? AS vault", (sqlite_vault_path(path),))
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            # Deleted and overwritten content is zeroed, not left in free space (erasure,
            # and plaintext replaced by ciphertext: docs/security.md).
            "secure_delete=ON",
            f"busy_timeout={int(busy_timeout_s * 1000)}",
        ):
            self.raw.execute(f"PRAGMA {pragma}")
        self.raw.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self.deadline else 0

    def execute(self, q: Q) -> Result:
        if q.script:
            for statement in _split_script(q.sql):
                self.raw.execute(statement)
            return Result([], -1)
        if q.many is not None:
            cursor = self.raw.executemany(q.sql, q.many)
            return Result([], cursor.rowcount)
        cursor = self.raw.execute(q.sql, tuple(q.args))
        rows = cursor.fetchall()
        return Result(rows, cursor.rowcount)

    def run(self, program: Program[T], write: bool) -> T:
        """Drive a program in one transaction (in a worker thread)."""
        self.deadline = time.monotonic() + self.timeout_s
        try:
            self.raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                value = self._drive(program)
                self.raw.execute("COMMIT")
                return value
            finally:
                program.close()
                if self.raw.in_transaction:
                    self.raw.execute("ROLLBACK")
        except sqlite3.Error as err:
            raise translate(err, timeout_s=self.timeout_s) from err
        finally:
            self.deadline = math.inf

    def run_group(self, writes: list[_Write]) -> None:
        """Drive several write programs in ONE transaction, one commit for all; each gets
        its ``outcome`` (in a worker thread). A program that fails is rolled back to its own
        savepoint and fails alone; a failure that ends the transaction itself (the deadline's
        interrupt, a full disk, the commit) fails every program that had not failed already,
        since none of their writes is kept."""
        self.deadline = time.monotonic() + self.timeout_s
        succeeded: list[tuple[_Write, Any]] = []
        try:
            self.raw.execute("BEGIN IMMEDIATE")
            try:
                for write in writes:
                    self.raw.execute("SAVEPOINT one_write")
                    try:
                        value = self._drive(write.program)
                    except Exception as err:
                        if not self.raw.in_transaction:
                            raise  # the whole transaction is gone, not just this program
                        self.raw.execute("ROLLBACK TO one_write")
                        self.raw.execute("RELEASE one_write")
                        write.outcome = outcome.Error(self._ours(err))
                    else:
                        self.raw.execute("RELEASE one_write")
                        succeeded.append((write, value))
                self.raw.execute("COMMIT")
            finally:
                if self.raw.in_transaction:
                    self.raw.execute("ROLLBACK")
        except Exception as err:
            for write in writes:  # a success gets its outcome only after the commit
                if write.outcome is None:
                    write.outcome = outcome.Error(self._ours(err))
            return
        finally:
            self.deadline = math.inf
            for write in writes:
                write.program.close()
        for write, value in succeeded:
            write.outcome = outcome.Value(value)

    def _drive(self, program: Program[T]) -> T:
        try:
            q = next(program)
            while True:
                q = program.send(self.execute(q))
        except StopIteration as stop:
            value: T = stop.value
            return value

    def _ours(self, err: Exception) -> Exception:
        return translate(err, timeout_s=self.timeout_s) if isinstance(err, sqlite3.Error) else err

    def call(self, fn: Callable[[], T]) -> T:
        """Run one step of a multi-await session under the deadline."""
        try:
            return fn()
        except sqlite3.Error as err:
            raise translate(err, timeout_s=self.timeout_s) from err

    def close(self) -> None:
        self.raw.close()


def _split_script(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit our transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current)
            current = ""
    if current.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in current.splitlines()
    ):
        raise MigrationError(f"incomplete SQL statement at the end of a migration: {current!r}")
    return statements


class _Session:
    """A multi-await transaction on one connection; see ``SQLiteStorage.transaction``."""

    def __init__(self, conn: _Connection, limiter: trio.CapacityLimiter) -> None:
        self._conn = conn
        self._limiter = limiter

    async def run(self, q: Q) -> Result:
        return await self._thread(lambda: self._conn.execute(q))

    async def _thread(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(
            self._conn.call, fn, limiter=self._limiter, abandon_on_cancel=False
        )


class SQLiteStorage(SqlStorage):
    """``Storage`` on one SQLite file; open it with ``open_sqlite`` (or ``open_storage``)."""

    backend_name = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        readers: int,
        busy_timeout_s: float,
        statement_timeout_s: float,
        group_commit: GroupCommitConfig,
        clock: Clock,
    ) -> None:
        super().__init__(SQLiteDialect(), clock=clock, group_commit=group_commit)
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._statement_timeout_s = statement_timeout_s
        self._reader_count = readers
        self._writer: _Connection | None = None
        self._readers: queue.SimpleQueue[_Connection] = queue.SimpleQueue()
        self._all_readers: list[_Connection] = []
        self._write_lock = trio.Lock()
        self._write_limiter = trio.CapacityLimiter(1)
        self._queued_writes: list[_Write] = []  # waiting for the writer (see ``_write``)
        # Writes run and the transactions (commits, fsyncs) they took: the bench's
        # writes-per-commit figure, and what the tests of grouping watch.
        self.writes_run = 0
        self.write_transactions = 0
        self._read_limiter = trio.CapacityLimiter(readers)

    def _connect(self) -> _Connection:
        return _Connection(
            self.path,
            busy_timeout_s=self._busy_timeout_s,
            statement_timeout_s=self._statement_timeout_s,
        )

    async def open(self) -> int:
        """Connect, apply pending migrations; returns the schema version."""

        def connect() -> None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            for _ in range(self._reader_count):
                reader = self._connect()
                self._all_readers.append(reader)
                self._readers.put(reader)

        try:
            await trio.to_thread.run_sync(connect, abandon_on_cancel=False)
        except (sqlite3.Error, OSError) as err:
            raise StorageUnavailable(f"cannot open SQLite database {self.path}: {err}") from err
        try:
            return await self._write(migrate_program("sqlite"))
        except MigrationError:
            raise
        except StorageError as err:
            raise MigrationError(f"migrating {self.path} failed: {err}") from err

    async def aclose(self) -> None:
        def close() -> None:
            if self._writer is not None:
                self._writer.close()
            for reader in self._all_readers:
                reader.close()

        with trio.CancelScope(shield=True):
            async with self._write_lock:
                await trio.to_thread.run_sync(close, abandon_on_cancel=False)

    async def _write(self, program: Program[T]) -> T:
        """Queue the program for the writer. Whoever holds the writer's lock runs everything
        queued by then, in one transaction (``_Connection.run_group``); a caller whose write
        someone else ran only collects its outcome. A caller cancelled while its write is
        still queued withdraws it (it never runs); once its transaction began, the caller
        waits for the outcome, as a write alone cannot be cancelled mid-transaction either."""
        if self._writer is None:
            raise StorageUnavailable("storage is not open")
        write = _Write(program)
        self._queued_writes.append(write)
        try:
            async with self._write_lock:
                if not write.started:
                    await self._run_queued_writes()
        except trio.Cancelled:
            if not write.started:
                self._queued_writes.remove(write)
                program.close()
                raise
            with trio.CancelScope(shield=True):
                while write.outcome is None:
                    async with self._write_lock:
                        pass
        assert write.outcome is not None
        result: T = write.outcome.unwrap()
        return result

    async def _run_queued_writes(self) -> None:
        """Run every queued write (the caller holds the writer's lock). Shielded: the thread
        cannot be stopped mid-transaction anyway, and the writes of callers waiting for it
        are in it."""
        writer = self._writer
        writes, self._queued_writes = self._queued_writes, []
        for write in writes:
            write.started = True
        self.writes_run += len(writes)
        self.write_transactions += 1
        try:
            with trio.CancelScope(shield=True):
                if writer is None:
                    raise StorageUnavailable("storage is not open")
                if len(writes) == 1:
                    value = await trio.to_thread.run_sync(
                        writer.run,
                        writes[0].program,
                        True,
                        limiter=self._write_limiter,
                        abandon_on_cancel=False,
                    )
                    writes[0].outcome = outcome.Value(value)
                else:
                    await trio.to_thread.run_sync(
                        writer.run_group,
                        writes,
                        limiter=self._write_limiter,
                        abandon_on_cancel=False,
                    )
        except Exception as err:
            for write in writes:
                if write.outcome is None:
                    write.outcome = outcome.Error(err)
        finally:
            for write in writes:  # nobody waits for ever on a write that got no outcome
                if write.outcome is None:
                    write.program.close()
                    write.outcome = outcome.Error(StorageUnavailable("the write was interrupted"))

    async def _scrub(self) -> None:
        """After an erasure: merge the search index into one segment (FTS5 keeps a deleted
        row's terms until its segments merge), then checkpoint the WAL and truncate it, so the
        erased text is neither in the index nor in old WAL frames. ``secure_delete`` zeroes
        the freed pages. Costs one pass over the index: erasures are rare."""
        await self._write(
            execute_program(Q("INSERT INTO events_fts (events_fts) VALUES ('optimize')"))
        )
        writer = self._writer
        if writer is None:
            raise StorageUnavailable("storage is not open")

        def checkpoint() -> None:
            writer.deadline = time.monotonic() + writer.timeout_s
            try:
                busy, _, _ = writer.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as err:
                raise translate(err, timeout_s=writer.timeout_s) from err
            finally:
                writer.deadline = math.inf
            if busy:
                log.warning("after an erasure the WAL could not be truncated (readers busy)")

        async with self._write_lock:
            await trio.to_thread.run_sync(
                checkpoint, limiter=self._write_limiter, abandon_on_cancel=False
            )

    async def _read(self, program: Program[T]) -> T:
        def run() -> T:
            # The limiter admits at most as many threads as there are readers: never empty.
            conn = self._readers.get_nowait()
            try:
                return conn.run(program, False)
            finally:
                self._readers.put(conn)

        return await trio.to_thread.run_sync(
            run, limiter=self._read_limiter, abandon_on_cancel=False
        )

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[_Session]:
        """A write session holds the writer for its whole duration; a read session uses its
        own connection (a WAL snapshot that writers do not block)."""
        if write:
            writer = self._writer
            if writer is None:
                raise StorageUnavailable("storage is not open")
            async with self._write_lock:
                session = _Session(writer, self._write_limiter)
                await self._begin(session, writer, "BEGIN IMMEDIATE")
                try:
                    yield session
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await session._thread(lambda: writer.raw.execute("ROLLBACK"))
                    raise
                finally:
                    writer.deadline = math.inf
                await session._thread(lambda: writer.raw.execute("COMMIT"))
            return
        conn = await trio.to_thread.run_sync(self._connect, abandon_on_cancel=False)
        try:
            session = _Session(conn, self._read_limiter)
            await self._begin(session, conn, "BEGIN")
            yield session
            await session._thread(lambda: conn.raw.execute("COMMIT"))
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close, abandon_on_cancel=False)

    async def _begin(self, session: _Session, conn: _Connection, begin: str) -> None:
        # Long sessions (a large export or import) get a generous deadline: ten statements' worth.
        conn.deadline = time.monotonic() + 10 * self._statement_timeout_s
        await session._thread(lambda: conn.raw.execute(begin))

    async def schema_version(self) -> int:
        return await self._read(version_program())

    async def ping(self) -> None:
        await self._read(version_program())

    async def _probe_write(self) -> None:
        """``BEGIN IMMEDIATE`` then ``ROLLBACK`` on a fresh connection: the write lock can be
        taken within ``PROBE_BUSY_TIMEOUT_S`` (reads keep working while another process holds
        it, so ``ping`` alone would say ready while no append can commit)."""

        def probe() -> None:
            conn = sqlite3.connect(self.path, timeout=PROBE_BUSY_TIMEOUT_S, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()

        try:
            await trio.to_thread.run_sync(probe, abandon_on_cancel=False)
        except sqlite3.Error as err:
            raise translate(err, timeout_s=PROBE_BUSY_TIMEOUT_S) from err

    async def backup_to(self, target: str) -> None:
        """A consistent online copy via SQLite's backup API, while writers keep committing.

        The copy runs on its own connection; in WAL mode the writer is not blocked. Raises
        ``BackupError``; never a file copy (which could tear a page mid-write).
        """

        def backup() -> None:
            source = sqlite3.connect(self.path, timeout=self._busy_timeout_s)
            try:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                dest = sqlite3.connect(target)
                try:
                    source.backup(dest)
                    (check,) = dest.execute("PRAGMA integrity_check").fetchone()
                    if check != "ok":
                        raise BackupError(f"the backup failed its integrity check: {check}")
                finally:
                    dest.close()
            finally:
                source.close()

        try:
            await trio.to_thread.run_sync(backup, abandon_on_cancel=False)
        except (sqlite3.Error, OSError) as err:
            raise BackupError(f"backup of {self.path} to {target} failed: {err}") from err

    async def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" or the problems found."""
        rows = await self._read(_integrity_program())
        return "; ".join(str(r["integrity_check"]) for r in rows)


def _integrity_program() -> Program[list[Row]]:
    result = yield Q("PRAGMA integrity_check")
    return result.rows


@asynccontextmanager
async def open_sqlite(
    path: str,
    *,
    readers: int = READER_POOL_SIZE,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    group_commit: GroupCommitConfig | None = None,
    clock: Clock = time.time,
) -> AsyncIterator[SQLiteStorage]:
    """Open (creating and migrating) a SQLite database; the committer runs until exit.

    On exit, appends already queued are committed before the connections close.
    """
    storage = SQLiteStorage(
        path,
        readers=readers,
        busy_timeout_s=busy_timeout_s,
        statement_timeout_s=statement_timeout_s,
        group_commit=group_commit or GroupCommitConfig(),
        clock=clock,
    )
    try:
        await storage.open()
        async with serving_committer(storage):
            yield storage
    finally:
        await storage.aclose()
