"""PostgreSQL connections cut mid-load: clear errors in bounded time, then clean recovery."""

from __future__ import annotations

import secrets
import time

import pytest
import trio

from storage import CommitFailed, GroupCommitConfig, StorageUnavailable, open_backend
from storage._sql import Q
from tests.pg import OutageProxy, pg_schema_url, psql
from tests.storage.helpers import message, new_conversation

WRITERS = 16
APPENDS_PER_WRITER = 60
MAX_FAILURE_S = 10.0  # a caller learns of the outage within this
CUT_AFTER_ACKS = 100
CUT_ROUNDS = 5  # kill rounds at least; more until some caller failed (at most MAX_CUT_ROUNDS)
MAX_CUT_ROUNDS = 100


async def test_cut_connections_fail_fast_and_retries_succeed_without_duplicates() -> None:
    app = "livechat-outage-" + secrets.token_hex(4)
    with pg_schema_url() as url:
        async with open_backend(url, application_name=app, pool_size=4) as store:
            ws, conv = await new_conversation(store)
            acked: dict[str, int] = {}
            failures: list[tuple[str, float]] = []
            enough_acked = trio.Event()
            cut_over = trio.Event()
            sent = 0

            async def writer(w: int) -> None:
                nonlocal sent
                n = 0
                # Until the cut is over too: a kill that only meets idle connections fails
                # nobody (the committer takes a new one), so the cut goes on until one did.
                while n < APPENDS_PER_WRITER or not cut_over.is_set():
                    cmid = f"{w}-{n}"
                    n += 1
                    sent += 1
                    for _attempt in range(200):
                        started = time.monotonic()
                        try:
                            with trio.fail_after(30):
                                result = await store.append(message(conv, cmid, client_msg_id=cmid))
                        except (StorageUnavailable, CommitFailed) as err:
                            failures.append((type(err).__name__, time.monotonic() - started))
                            await trio.sleep(0.05)  # deliberate: a client's retry back-off
                            continue
                        acked[cmid] = result.event.seq
                        if len(acked) >= CUT_AFTER_ACKS:
                            enough_acked.set()
                        break
                    await trio.sleep(0.002)  # deliberate: pacing, so the cut lands mid-load

            async def cut() -> None:
                # Mid-load, whatever the machine's speed: after some appends, well before all.
                await enough_acked.wait()
                kill = (
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    f" WHERE application_name = '{app}' AND pid <> pg_backend_pid()"
                )
                for rounds in range(1, MAX_CUT_ROUNDS + 1):  # connections die as they come back
                    await trio.to_thread.run_sync(psql, url, kill)
                    await trio.sleep(0.05)  # deliberate: the outage's shape, not a wait
                    if rounds >= CUT_ROUNDS and failures:
                        break
                cut_over.set()

            async with trio.open_nursery() as nursery:
                for w in range(WRITERS):
                    nursery.start_soon(writer, w)
                nursery.start_soon(cut)

            assert len(acked) == sent  # every retry got through
            assert failures, "the cut should have failed some callers"
            assert max(duration for _, duration in failures) < MAX_FAILURE_S
            await store.ping()  # the pool recovered
            events = []
            after = 0
            while batch := await store.history(ws.id, conv.id, after_seq=after, limit=500):
                events += batch
                after = batch[-1].seq
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len(events) == len(acked)  # no duplicates
            assert {e.client_msg_id: e.seq for e in events} == acked


STALLED_AFTER_S = 0.5


async def test_unreachable_postgres_refuses_newcomers_at_once_and_readiness_says_so() -> None:
    with pg_schema_url() as direct_url:
        proxy = OutageProxy(direct_url)
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            async with open_backend(
                proxy.url,
                pool_size=2,
                connect_timeout_s=1.0,
                group_commit=GroupCommitConfig(
                    stalled_after_s=STALLED_AFTER_S, retry_outage_after_s=0.2
                ),
            ) as store:
                ws, conv = await new_conversation(store)
                await store.append(message(conv, "before", client_msg_id="m0"))
                await store.check_ready()

                proxy.cut()
                # The engine's deadline around a storage call: the database stays silent.
                with pytest.raises(trio.TooSlowError), trio.fail_after(STALLED_AFTER_S + 0.5):
                    await store.append(message(conv, "cut", client_msg_id="m1"))
                started = time.monotonic()
                with pytest.raises(StorageUnavailable):  # stuck attempt: refused at once
                    await store.append(message(conv, "cut-2", client_msg_id="m2"))
                with pytest.raises(StorageUnavailable), trio.fail_after(2):
                    await store.check_ready()
                assert time.monotonic() - started < 1.0

                proxy.restore()
                with trio.fail_after(15):  # bounded: reconnect after the refusal window
                    while True:
                        try:
                            result = await store.append(message(conv, "cut", client_msg_id="m1"))
                            break
                        except (StorageUnavailable, CommitFailed):
                            await trio.sleep(0.05)
                await store.check_ready()
                events = await store.history(ws.id, conv.id)
                # Exactly once, whether the abandoned attempt or the retry stored it; never m2.
                assert [e.client_msg_id for e in events] == ["m0", "m1"]
                assert result.event.seq == 2
            nursery.cancel_scope.cancel()


LOCK_TIMEOUT_S = 1.0  # the statement timeout the blocked commit runs into


async def test_a_commit_that_timed_out_fails_and_the_retry_commits_on_a_new_connection() -> None:
    """The committer keeps its connection between batches; one whose statement timed out is
    in doubt, so it is dropped and the retry takes another from the pool (gapless, once)."""
    app = "livechat-timeout-" + secrets.token_hex(4)
    with pg_schema_url() as url:
        async with open_backend(
            url,
            application_name=app,
            pool_size=2,
            statement_timeout_s=LOCK_TIMEOUT_S,
            group_commit=GroupCommitConfig(retry_outage_after_s=0.0),
        ) as store:
            ws, conv = await new_conversation(store)
            with trio.fail_after(30):
                await store.append(message(conv, "before", client_msg_id="m0"))
                committer_pid = _committer_pid(url, app)
                # Another transaction holds the conversation's row: the commit waits for it
                # until its statement timeout.
                async with store.transaction(write=True) as tx:
                    await tx.run(Q("SELECT id FROM conversations WHERE id=? FOR UPDATE", [conv.id]))
                    with pytest.raises(CommitFailed):
                        await store.append(message(conv, "blocked", client_msg_id="m1"))
                result = await store.append(message(conv, "blocked", client_msg_id="m1"))
                again = await store.append(message(conv, "blocked", client_msg_id="m1"))
            assert (result.event.seq, result.duplicate) == (2, False)
            assert (again.event.seq, again.duplicate) == (2, True)
            assert _committer_pid(url, app) != committer_pid
            events = await store.history(ws.id, conv.id)
            assert [(e.seq, e.client_msg_id) for e in events] == [(1, "m0"), (2, "m1")]


async def test_the_committers_connection_killed_while_idle_is_replaced() -> None:
    """asyncpg gives a lost connection back to the pool by itself; the committer must notice
    and take another, not keep failing on the one it held."""
    app = "livechat-idle-kill-" + secrets.token_hex(4)
    with pg_schema_url() as url:
        async with open_backend(url, application_name=app, pool_size=2) as store:
            ws, conv = await new_conversation(store)
            with trio.fail_after(30):
                await store.append(message(conv, "before", client_msg_id="m0"))
                pid = _committer_pid(url, app)
                await trio.to_thread.run_sync(
                    psql,
                    url,
                    f"SELECT pg_terminate_backend({pid}, 5000)",  # waits until gone
                )
                failures = 0
                while True:  # a client's retries; the first may meet the dead connection
                    try:
                        result = await store.append(message(conv, "after", client_msg_id="m1"))
                        break
                    except (StorageUnavailable, CommitFailed):
                        failures += 1
                        await trio.sleep(0.05)  # deliberate: a client's retry back-off
            assert failures <= 1
            assert (result.event.seq, result.duplicate) == (2, False)
            assert _committer_pid(url, app) != pid
            events = await store.history(ws.id, conv.id)
            assert [(e.seq, e.client_msg_id) for e in events] == [(1, "m0"), (2, "m1")]


async def test_a_committer_connection_idle_too_long_is_closed_and_replaced() -> None:
    """As the pool closes its idle connections, the committer closes its own once idle longer
    than ``committer_max_idle_s`` (0 here: after every batch), freeing its pool slot."""
    app = "livechat-idle-close-" + secrets.token_hex(4)
    with pg_schema_url() as url:
        async with open_backend(
            url, application_name=app, pool_size=2, committer_max_idle_s=0.0
        ) as store:
            ws, conv = await new_conversation(store)
            pids = []
            with trio.fail_after(30):  # a leaked pool slot would block the third acquire
                for n in range(3):
                    await store.append(message(conv, f"m{n}", client_msg_id=f"m{n}"))
                    pids.append(_committer_pid(url, app))
            assert len(set(pids)) == 3
            events = await store.history(ws.id, conv.id)
            assert [e.seq for e in events] == [1, 2, 3]


def _committer_pid(url: str, app: str) -> int:
    """The committer's backend: the only one of the app whose last statement is a COMMIT
    (the pool's connections end with the reset query asyncpg runs when they are released)."""
    out = psql(
        url,
        "SELECT pid FROM pg_stat_activity"
        f" WHERE application_name = '{app}' AND query LIKE 'COMMIT%'",
    )
    (pid,) = out.split()
    return int(pid)
