"""Group-commit batches at the statement level: one INSERT per batch, chunked on SQLite."""

from __future__ import annotations

import attrs

from storage import Event, EventKind, Visibility
from storage._appends import _event_args
from storage._base import SqlStorage
from storage._records import codec
from storage._sql import SQLITE_MAX_PARAMS
from tests.storage.helpers import message, new_conversation


def test_hot_path_event_args_match_the_record_codec() -> None:
    event = Event(
        workspace_id="w",
        conversation_id="c",
        seq=7,
        kind=EventKind.NOTE,
        visibility=Visibility.AGENTS,
        author_type="agent",  # type: ignore[arg-type]
        author_id="a",
        body="hi",
        data={"é": [1, 2]},
        client_msg_id="m",
        created_at=1,
    )
    event_codec = codec(Event)
    # The record's columns, then the blind-index column (a note is searchable: its words).
    assert _event_args(event) == [*event_codec.to_args(event), "hi"]
    empty = attrs.evolve(event, data={})
    assert _event_args(empty) == [*event_codec.to_args(empty), "hi"]


async def test_a_batch_larger_than_one_statement_is_gapless_and_idempotent(
    storage: SqlStorage,
) -> None:
    ws, conv = await new_conversation(storage)
    _, other = await new_conversation(storage, "other")
    # More rows than one SQLite statement can bind: the INSERT and the key lookup are chunked.
    count = SQLITE_MAX_PARAMS // 11 + 50
    requests = [
        message(conv if n % 3 else other, f"m{n}", client_msg_id=f"k{n}") for n in range(count)
    ]
    first = await storage.append_many(requests)
    assert not any(r.duplicate for r in first)
    for conversation in (conv, other):
        seqs = [r.event.seq for r in first if r.event.conversation_id == conversation.id]
        assert seqs == list(range(1, len(seqs) + 1))
    # Retrying everything, plus two new ones, in one batch: originals come back, no new seq.
    again = await storage.append_many(
        [*requests, message(conv, "new", client_msg_id="new"), message(other, "n2")]
    )
    assert [r.event for r in again[:count]] == [r.event for r in first]
    assert all(r.duplicate for r in again[:count])
    assert not again[-1].duplicate and not again[-2].duplicate
    stored = await storage.get_conversation(ws.id, conv.id)
    assert stored is not None
    assert stored.last_seq == sum(1 for n in range(count) if n % 3) + 1
    hits = await storage.search(ws.id, "m4")
    assert [h.seq for h in hits] == [r.event.seq for r in first if r.event.body == "m4"]


async def test_an_empty_client_msg_id_is_still_an_idempotency_key(storage: SqlStorage) -> None:
    _, conv = await new_conversation(storage)
    first = await storage.append(message(conv, "a", client_msg_id=""))
    again = await storage.append(message(conv, "a", client_msg_id=""))
    assert again.duplicate and again.event == first.event
