"""``StorageHandle``: callers keep one handle while the backend behind it is closed and
reopened (what the supervision tree's storage child does after a crash), on both backends."""

from __future__ import annotations

import pytest
import trio

from storage import StorageHandle, StorageUnavailable
from tests.storage.conftest import Opener


async def test_calls_follow_the_backend_attached_now(open_store: Opener) -> None:
    handle = StorageHandle("any")
    storage = handle.storage
    async with open_store() as first:
        handle.attach(first)
        ws = await storage.create_workspace(name="Acme")
        lookup = storage.get_workspace  # cached on the handle while this backend serves
        assert lookup is storage.get_workspace
        handle.detach()
    with pytest.raises(StorageUnavailable):
        await storage.get_workspace(ws.id)  # between a close and a reopen: an outage
    async with open_store() as second:
        handle.attach(second)
        assert handle.generation == 2
        found = await storage.get_workspace(ws.id)  # the reopened database, same handle
        assert found is not None and found.name == "Acme"
        with trio.fail_after(10):
            await storage.check_ready()
        handle.detach()
    assert not handle.attached and handle.backend_name == "any"
