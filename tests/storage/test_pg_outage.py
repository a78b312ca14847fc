"""PostgreSQL connections cut mid-load: clear errors in bounded time, then clean recovery."""

from __future__ import annotations

import secrets
import time

import pytest
import trio

from storage import CommitFailed, GroupCommitConfig, StorageUnavailable, open_backend
from tests.pg import OutageProxy, pg_schema_url, psql
from tests.storage.helpers import message, new_conversation

WRITERS = 16
APPENDS_PER_WRITER = 60
MAX_FAILURE_S = 10.0  # a caller learns of the outage within this
CUT_AFTER_ACKS = 100


async def test_cut_connections_fail_fast_and_retries_succeed_without_duplicates() -> None:
    app = "livechat-outage-" + secrets.token_hex(4)
    with pg_schema_url() as url:
        async with open_backend(url, application_name=app, pool_size=4) as store:
            ws, conv = await new_conversation(store)
            acked: dict[str, int] = {}
            failures: list[tuple[str, float]] = []
            enough_acked = trio.Event()

            async def writer(w: int) -> None:
                for n in range(APPENDS_PER_WRITER):
                    cmid = f"{w}-{n}"
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
                for _ in range(5):  # a short outage: connections die as they come back
                    await trio.to_thread.run_sync(psql, url, kill)
                    await trio.sleep(0.05)  # deliberate: the outage's shape, not a wait

            async with trio.open_nursery() as nursery:
                for w in range(WRITERS):
                    nursery.start_soon(writer, w)
                nursery.start_soon(cut)

            assert len(acked) == WRITERS * APPENDS_PER_WRITER  # every retry got through
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
