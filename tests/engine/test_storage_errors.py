"""A storage failure reaches the sender as ``storage_unavailable`` with a fixed sentence: the
database's own text (which may quote other senders' messages) goes to the log only."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.codec import error_result
from engine.errors import STORAGE_FAILED_MESSAGE, Overloaded, PersistenceUnavailable
from engine.messages import MessageAck, SendMessage
from tests.engine.conftest import World


async def test_a_refused_append_answers_a_fixed_message_and_the_chat_goes_on(
    world: World,
) -> None:
    v = await world.connect(await world.visitor())
    first = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hello"))
    assert isinstance(first, MessageAck)
    # The engine alone does not run the edge check (web does): storage refuses the surrogate.
    with pytest.raises(PersistenceUnavailable) as caught:
        await world.engine.request(v.conn, SendMessage(client_msg_id="m2", text="x \ud800 y"))
    frame = error_result(caught.value)
    assert (frame.code, frame.message) == ("storage_unavailable", STORAGE_FAILED_MESSAGE)
    again = await world.engine.request(v.conn, SendMessage(client_msg_id="m3", text="still here"))
    assert isinstance(again, MessageAck) and again.seq == first.seq + 1


async def test_a_refused_command_fails_alone_among_commands_batched_with_it(
    world: World,
) -> None:
    from storage._base import SqlStorage

    v = await world.connect(await world.visitor())
    first = await world.engine.request(v.conn, SendMessage(client_msg_id="m0", text="hello"))
    assert isinstance(first, MessageAck)
    store = world.storage
    assert isinstance(store, SqlStorage)
    submitted: list[int] = []  # requests per submission the committer received
    real = store.committer._commit

    async def recording(batch: Any, admit: Any) -> Any:
        submitted.extend(len(requests) for requests in batch)
        return await real(batch, admit)

    store.committer._commit = recording
    texts = {"a": "ok a", "bad": "x \ud800 y", "b": "ok b"}
    outcomes: dict[str, object] = {}

    async def send(cmid: str) -> None:
        try:
            outcomes[cmid] = await world.engine.request(
                v.conn, SendMessage(client_msg_id=cmid, text=texts[cmid])
            )
        except PersistenceUnavailable as exc:
            outcomes[cmid] = exc

    async with trio.open_nursery() as nursery:
        for cmid in texts:
            nursery.start_soon(send, cmid)

    assert submitted[0] == 3, submitted  # one actor batch: all three in one append_many
    assert isinstance(outcomes["bad"], PersistenceUnavailable)
    assert isinstance(outcomes["a"], MessageAck) and isinstance(outcomes["b"], MessageAck)
    assert sorted([outcomes["a"].seq, outcomes["b"].seq]) == [first.seq + 1, first.seq + 2]


def test_runtime_errors_answer_fixed_sentences_without_internal_names() -> None:
    from engine.errors import ActorStopped, RestartIntensityExceeded, ShuttingDown

    for exc in (
        ActorStopped("conversation:c-secret-id"),
        RestartIntensityExceeded("supervisor conversations: 6 restarts in 5 s"),
        ShuttingDown("registry 'conversation' is not accepting work"),
    ):
        frame = error_result(exc)
        assert "secret" not in frame.message and "registry" not in frame.message
        assert "restarts" not in frame.message, frame


async def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection (as another process would) takes the write lock and keeps it."""

    def take() -> sqlite3.Connection:
        other = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")
        return other

    return await trio.to_thread.run_sync(take)


async def _release(other: sqlite3.Connection) -> None:
    def release() -> None:
        other.execute("ROLLBACK")
        other.close()

    await trio.to_thread.run_sync(release)


@pytest.mark.parametrize(
    ("engine_config", "error", "text"),
    [
        # the conversation's storage deadline fires first: storage_unavailable
        (
            {"storage_timeout_s": 2.0, "ask_timeout_s": 60.0},
            PersistenceUnavailable,
            "storage did not answer in time",
        ),
        # the request's own deadline fires first: overloaded
        (
            {"storage_timeout_s": 60.0, "ask_timeout_s": 2.0},
            Overloaded,
            "the engine did not answer in time",
        ),
    ],
)
async def test_a_stuck_commit_answers_at_the_first_deadline_and_acknowledges_nothing(
    world: World,
    tmp_path: Path,
    fast_clock: trio.testing.MockClock,
    error: type[Exception],
    text: str,
) -> None:
    v = await world.connect(await world.visitor())
    first = await world.engine.request(v.conn, SendMessage(client_msg_id="m1", text="hello"))
    assert isinstance(first, MessageAck)
    other = await _hold_write_lock(tmp_path / "engine.db")
    try:
        with pytest.raises(error, match=text):
            await world.engine.request(v.conn, SendMessage(client_msg_id="m2", text="stuck"))
    finally:
        await _release(other)
    # Once the lock is gone, the chat goes on; the answered message, if it was committed
    # after all, is found by its client_msg_id, never stored twice.
    again = await world.engine.request(v.conn, SendMessage(client_msg_id="m2", text="stuck"))
    assert isinstance(again, MessageAck) and again.seq == first.seq + 1
