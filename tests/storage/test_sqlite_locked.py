"""SQLite whose write lock another process holds: appends fail in bounded time, newcomers fail
at once while the commit is stuck, readiness says so, nothing failed is stored, and it all
recovers when the lock goes away."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from storage import AppendResult, CommitFailed, GroupCommitConfig, StorageUnavailable, open_backend
from storage._base import SqlStorage
from tests.storage.helpers import message, new_conversation

BUSY_TIMEOUT_S = 1.5  # how long the committer's attempt waits for the lock
COMMIT = GroupCommitConfig(stalled_after_s=0.3, retry_outage_after_s=0.3)


@contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection (as another process would) holding the database's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        other.execute("CREATE TABLE IF NOT EXISTS outsider (x)")
        yield other
        other.execute("ROLLBACK")
    finally:
        other.close()


async def until_refusing(store: SqlStorage) -> str:
    """Wait (bounded) until the committer refuses newcomers, i.e. its attempt is stuck."""
    with trio.fail_after(BUSY_TIMEOUT_S + 2):
        while (reason := store.committer.unavailable_reason()) is None:
            await trio.sleep(0.01)
    return reason


async def test_locked_sqlite_fails_appends_fast_reports_not_ready_then_recovers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    async with open_backend(
        f"sqlite:///{path}", busy_timeout_s=BUSY_TIMEOUT_S, group_commit=COMMIT
    ) as store:
        ws, conv = await new_conversation(store)
        await store.append(message(conv, "before", client_msg_id="m0"))
        await store.check_ready()

        with write_lock_held(path):
            with trio.fail_after(2), pytest.raises(StorageUnavailable):
                await store.check_ready()  # the probe's short busy timeout, not the committer's

            first_error: list[BaseException] = []

            async def first() -> None:
                started = time.monotonic()
                with pytest.raises(CommitFailed) as caught:
                    with trio.fail_after(BUSY_TIMEOUT_S + 3):
                        await store.append(message(conv, "locked-1", client_msg_id="m1"))
                first_error.append(caught.value)
                assert time.monotonic() - started < BUSY_TIMEOUT_S + 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await until_refusing(store)
                # The attempt is stuck: a newcomer is refused at once, not queued behind it.
                started = time.monotonic()
                with pytest.raises(StorageUnavailable):
                    await store.append(message(conv, "locked-2", client_msg_id="m2"))
                assert time.monotonic() - started < 0.2
                with trio.fail_after(1), pytest.raises(StorageUnavailable):
                    await store.check_ready()
            assert "locked-1" not in str(first_error[0])
            # Just failed by the outage: still refused at once until the retry delay passes.
            with pytest.raises(StorageUnavailable):
                await store.append(message(conv, "locked-3", client_msg_id="m3"))

        # Lock released: the next append (after the retry delay) commits; readiness is back.
        with trio.fail_after(5):
            while True:
                try:
                    result = await store.append(message(conv, "locked-1", client_msg_id="m1"))
                    break
                except StorageUnavailable:
                    await trio.sleep(0.05)
        assert isinstance(result, AppendResult) and not result.duplicate
        await store.check_ready()
        stored = await store.history(ws.id, conv.id)
        assert [(e.seq, e.body) for e in stored] == [(1, "before"), (2, "locked-1")]


async def test_an_append_given_up_while_queued_is_never_committed(tmp_path: Path) -> None:
    path = tmp_path / "withdrawn.db"
    async with open_backend(
        f"sqlite:///{path}",
        busy_timeout_s=3.0,
        group_commit=GroupCommitConfig(stalled_after_s=2.0),
    ) as store:
        ws, conv = await new_conversation(store)
        with write_lock_held(path) as other:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.append, message(conv, "a", client_msg_id="a"))
                with trio.fail_after(2):  # the committer's attempt is waiting for the lock
                    while store.committer._attempt_started is None:
                        await trio.sleep(0.01)
                with trio.move_on_after(0.2) as gave_up:  # queued behind it, then abandoned
                    await store.append(message(conv, "b", client_msg_id="b"))
                assert gave_up.cancelled_caught
                other.execute("ROLLBACK")  # lock gone: the waiting attempt commits "a"
                other.execute("BEGIN")  # (write_lock_held ends with a ROLLBACK)
        events = await store.history(ws.id, conv.id)
        assert [e.client_msg_id for e in events] == ["a"]
        again = await store.append(message(conv, "b", client_msg_id="b"))
        assert not again.duplicate and again.event.seq == 2


async def test_an_append_given_up_while_its_batch_waits_for_the_lock_is_left_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "left-out.db"
    async with open_backend(
        f"sqlite:///{path}",
        busy_timeout_s=3.0,
        group_commit=GroupCommitConfig(stalled_after_s=2.0),
    ) as store:
        ws, conv = await new_conversation(store)
        with write_lock_held(path) as other:
            with trio.move_on_after(0.3) as gave_up:  # its attempt is waiting for the lock
                await store.append(message(conv, "a", client_msg_id="a"))
            assert gave_up.cancelled_caught
            other.execute("ROLLBACK")  # the attempt gets the lock and begins its transaction
            other.execute("BEGIN")
            with trio.fail_after(5):  # bounded: the attempt ends as soon as it has the lock
                while store.committer._attempt_started is not None:
                    await trio.sleep(0.01)
        assert await store.history(ws.id, conv.id) == []  # the sender was not told "stored"
        again = await store.append(message(conv, "a", client_msg_id="a"))
        assert not again.duplicate and again.event.seq == 1
