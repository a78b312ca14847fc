"""The scheduled retention task applies each workspace's policy and the termination grace."""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from storage import WorkspaceStatus
from storage.retention import TERMINATED_GRACE_S, apply_retention, run_retention
from tests.storage.conftest import Opener
from tests.storage.helpers import message, new_conversation

DAY = 86400.0
WAIT_S = 30.0  # generous bound on the first scheduled pass (PostgreSQL on a loaded machine)


async def test_retention_pass_applies_retention_days_and_purges_after_grace(
    open_store: Opener,
) -> None:
    now = [1_000_000_000.0]
    async with open_store(clock=lambda: now[0]) as store:
        kept, kept_conv = await new_conversation(store, "forever")
        limited, old_conv = await new_conversation(store, "limited")
        gone, _ = await new_conversation(store, "terminated")
        await store.append(message(kept_conv, "keep me"))
        await store.append(message(old_conv, "expire me"))
        await store.update_workspace(limited.id, retention_days=7)
        await store.update_workspace(
            gone.id, status=WorkspaceStatus.TERMINATED, terminated_at=now[0]
        )
        now[0] += 8 * DAY
        first = await apply_retention(store, clock=lambda: now[0])
        assert first.conversations_deleted == 1 and first.workspaces_purged == ()
        assert await store.get_conversation(limited.id, old_conv.id) is None
        assert await store.get_conversation(kept.id, kept_conv.id) is not None
        assert await store.get_workspace(gone.id) is not None  # still in its grace period

        now[0] += TERMINATED_GRACE_S
        # The scheduled task: first pass at start, then every interval, until cancelled.
        counted = _CountingPasses(store)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_retention, counted, interval_s=0.1, clock=lambda: now[0])
            )
            with trio.fail_after(WAIT_S):
                while await store.get_workspace(gone.id) is not None:
                    await counted.next_pass()
                await counted.passes_beyond(3)  # a few more passes: they find nothing left to do
            nursery.cancel_scope.cancel()
        assert {w.id for w in await store.list_workspaces()} == {kept.id, limited.id}
        audit = (await store.list_audit(limited.id)).items
        assert [e.action for e in audit] == ["retention.purge"]


class _CountingPasses:
    """The store, with an event per retention pass (each pass starts by listing workspaces)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.passes = 0
        self._next = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def list_workspaces(self) -> Any:
        self.passes += 1
        self._next.set()
        self._next = trio.Event()
        return await self._store.list_workspaces()

    async def next_pass(self) -> None:
        await self._next.wait()

    async def passes_beyond(self, more: int) -> None:
        target = self.passes + more
        while self.passes < target:
            await self.next_pass()
