"""PostgreSQL connections cut mid-load: clear errors in bounded time, then clean recovery."""

from __future__ import annotations

import secrets
import time

import trio

from storage import CommitFailed, StorageUnavailable, open_backend
from tests.pg import pg_schema_url, psql
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
