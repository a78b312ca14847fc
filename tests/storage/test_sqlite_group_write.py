"""SQLite writes that queue behind a busy writer share its next transaction: one commit (one
fsync) for all of them, each still its own all-or-nothing write, and one refused, or
withdrawn by its cancelled caller, never costs the others theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from storage import NotFound, open_backend
from storage.api import Visitor
from storage.sqlite import SQLiteStorage

WAITERS = 20


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    async with open_backend(f"sqlite:///{tmp_path}/group.db") as opened:
        assert isinstance(opened, SQLiteStorage)
        yield opened


async def test_writes_queued_behind_a_busy_writer_share_one_commit(store: SQLiteStorage) -> None:
    workspace = await store.create_workspace(name="acme")
    created: dict[int, Visitor] = {}

    async def create(i: int) -> None:
        created[i] = await store.create_visitor(workspace.id, token_hash=f"t{i}", ip="10.0.0.1")

    # The writer is busy (an open write transaction): everyone queues behind it.
    async with trio.open_nursery() as nursery, store.transaction(write=True):
        for i in range(WAITERS):
            nursery.start_soon(create, i)
        await trio.testing.wait_all_tasks_blocked()
        transactions_before = store.write_transactions
    assert store.write_transactions == transactions_before + 1  # one commit for all twenty
    assert sorted(created) == list(range(WAITERS))
    for i, visitor in created.items():
        stored = await store.get_visitor(workspace.id, visitor.id)
        assert stored is not None and stored.token_hash == f"t{i}"


async def test_a_refused_write_fails_alone_and_its_group_commits(store: SQLiteStorage) -> None:
    workspace = await store.create_workspace(name="acme")
    outcomes: dict[str, object] = {}

    async def create(name: str, workspace_id: str) -> None:
        try:
            outcomes[name] = await store.create_visitor(workspace_id, token_hash=name)
        except NotFound as err:
            outcomes[name] = err

    async with trio.open_nursery() as nursery, store.transaction(write=True):
        nursery.start_soon(create, "before", workspace.id)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(create, "refused", "no-such-workspace")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(create, "after", workspace.id)
        await trio.testing.wait_all_tasks_blocked()
        transactions_before = store.write_transactions
    assert store.write_transactions == transactions_before + 1
    assert isinstance(outcomes["refused"], NotFound)
    for name in ("before", "after"):
        visitor = outcomes[name]
        assert isinstance(visitor, Visitor)
        assert await store.get_visitor(workspace.id, visitor.id) is not None


async def test_a_write_withdrawn_while_queued_is_never_stored(store: SQLiteStorage) -> None:
    workspace = await store.create_workspace(name="acme")
    kept: list[Visitor] = []

    async def create(token_hash: str) -> None:
        kept.append(await store.create_visitor(workspace.id, token_hash=token_hash))

    async def give_up_later(*, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await store.create_visitor(workspace.id, token_hash="withdrawn")
        assert scope.cancelled_caught

    async with trio.open_nursery() as nursery, store.transaction(write=True):
        nursery.start_soon(create, "kept")
        withdrawn = await nursery.start(give_up_later)
        await trio.testing.wait_all_tasks_blocked()  # both queued behind the busy writer
        withdrawn.cancel()  # that caller gives up before the writer is free
        await trio.testing.wait_all_tasks_blocked()
    assert [v.token_hash for v in kept] == ["kept"]
    found = await store.find_visitor_by_token_hash(workspace.id, "withdrawn")
    assert found is None
    assert await store.find_visitor_by_token_hash(workspace.id, "kept") is not None
