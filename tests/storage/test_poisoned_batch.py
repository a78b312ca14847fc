"""One append the database refuses fails alone: its batch-mates commit, and no error quotes them.

The poisoned requests bypass the edge validation (``engine.codec.unstorable``) on purpose: the
committer must hold even when something slips past it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import pytest
import trio

from storage import AppendRequest, AppendResult, CommitFailed, StorageError
from storage._appends import GroupCommitConfig
from storage._base import SqlStorage
from tests.storage.conftest import Opener
from tests.storage.helpers import message, new_conversation

INNOCENTS = 6
SECRET = "secret-of-the-other-workspace"

# Each refused by at least one backend: SQLite and PostgreSQL both refuse a lone surrogate
# (not UTF-8), PostgreSQL refuses NUL in text and NaN in jsonb; neither can encode a set.
POISONS: dict[str, dict[str, Any]] = {
    "lone_surrogate_body": {"body": "before \ud800 after"},
    "nul_body": {"body": "before \x00 after"},
    "surrogate_in_data_key": {"data": {"k\udfff": 1}},
    "nan_in_data": {"data": {"x": math.nan}},
    "unserializable_data": {"data": {"x": {1, 2}}},
}


async def _submit_together(
    store: SqlStorage, requests: Sequence[AppendRequest]
) -> list[AppendResult | StorageError]:
    """Each request from its own task, all queued before the committer runs (one batch)."""
    outcomes: list[AppendResult | StorageError | None] = [None] * len(requests)

    async def one(i: int) -> None:
        try:
            with trio.fail_after(30):
                outcomes[i] = await store.append(requests[i])
        except StorageError as err:
            outcomes[i] = err

    async with trio.open_nursery() as nursery:
        for i in range(len(requests)):
            nursery.start_soon(one, i)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _spy_batches(store: SqlStorage) -> list[int]:
    """Record how many submissions each commit attempt held (the real commit still runs)."""
    sizes: list[int] = []
    committer = store.committer
    real: Callable[..., Awaitable[Any]] = committer._commit

    async def recording(batch: list[Sequence[AppendRequest]], admit: Any) -> Any:
        sizes.append(len(batch))
        return await real(batch, admit)

    committer._commit = recording
    return sizes


@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_refused_append_fails_alone_and_its_batch_mates_commit(
    open_store: Opener, poison: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_store(group_commit=GroupCommitConfig(max_delay_s=0.05)) as store:
        innocent_ws, innocent = await new_conversation(store, "innocent")
        _, attacker = await new_conversation(store, "attacker")
        sizes = _spy_batches(store)
        requests = [
            message(innocent, f"{SECRET} {i}", client_msg_id=f"m{i}") for i in range(INNOCENTS)
        ]
        bad = attrs.evolve(message(attacker, "x", client_msg_id="bad"), **POISONS[poison])
        requests.insert(INNOCENTS // 2, bad)

        outcomes = await _submit_together(store, requests)

        assert sizes[0] == len(requests), "the poisoned request shared the innocents' batch"
        innocent_outcomes = [o for o, r in zip(outcomes, requests, strict=True) if r is not bad]
        assert all(isinstance(o, AppendResult) for o in innocent_outcomes), innocent_outcomes
        stored = await store.history(innocent_ws.id, innocent.id, limit=100)
        # (tasks queue in trio's scheduling order, so the seqs follow that, not the list)
        assert sorted(e.body or "" for e in stored) == [f"{SECRET} {i}" for i in range(INNOCENTS)]
        assert [e.seq for e in stored] == list(range(1, INNOCENTS + 1))
        bad_outcome = outcomes[INNOCENTS // 2]
        if isinstance(bad_outcome, CommitFailed):
            assert SECRET not in str(bad_outcome)
            assert "ud800" not in str(bad_outcome) and "\x00" not in str(bad_outcome)
        else:  # this backend could store it (e.g. NUL in SQLite text): stored whole
            assert isinstance(bad_outcome, AppendResult)
        # Logs carry no message bodies either (asyncpg's DataError quotes the refused value).
        assert SECRET not in caplog.text and "before" not in caplog.text

        # Retries stay idempotent after the isolation: the same keys resolve to the originals.
        again = await _submit_together(store, requests[:1] + requests[-1:])
        assert all(isinstance(o, AppendResult) and o.duplicate for o in again)
        assert len(await store.history(innocent_ws.id, innocent.id, limit=100)) == INNOCENTS

