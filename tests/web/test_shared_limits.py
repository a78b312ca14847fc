"""The cluster-wide rate limits (``SharedWindow``, synced by ``SharedLimits`` over
``Bus.sync_windows``) on a private redis-server: one budget for two nodes' windows, overshot by
at most what a node admits before its next sync, and each node's own window while Redis is
down. The syncs are called here one by one (``serve`` calls them every ``SYNC_INTERVAL_S``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from engine import EngineMetrics
from tests.redis_server import PrivateRedis, bus_prefix, redis_url_or_skip
from tests.web.server import free_port
from web.bus import Bus, Message
from web.ratelimit import RETRY_S, SYNC_BATCH_KEYS, SharedLimits
from web.supervision import limits_supervisor

# Redis answers these syncs at once when it runs; the production deadline (0.25 s) is for a
# Redis gone silent, and a busy CI machine can take longer than that to run a 1,000-key script.
SYNC_TIMEOUT_S = 5.0


async def _no_requests(message: Message) -> None:
    raise AssertionError(message)


@asynccontextmanager
async def _node(url: str, prefix: str, name: str) -> AsyncIterator[Bus]:
    bus = Bus(url, name, prefix=prefix)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve, _no_requests, lambda message: None)
        yield bus
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _private_redis() -> AsyncIterator[PrivateRedis]:
    redis = PrivateRedis(free_port())
    await redis.start()
    try:
        yield redis
    finally:
        await redis.kill()


async def test_two_nodes_share_one_budget_overshot_by_one_sync_at_most() -> None:
    async with _private_redis() as redis:
        prefix = bus_prefix()
        with trio.fail_after(30):
            async with (
                _node(redis.url, prefix, "a") as bus_a,
                _node(redis.url, prefix, "b") as bus_b,
            ):
                limits_a, limits_b = (
                    SharedLimits(bus_a, sync_timeout_s=SYNC_TIMEOUT_S),
                    SharedLimits(bus_b, sync_timeout_s=SYNC_TIMEOUT_S),
                )
                on_a = limits_a.window("ip", 3, 60.0)
                on_b = limits_b.window("ip", 3, 60.0)
                assert [on_a.hit("1.2.3.4"), on_a.hit("1.2.3.4")] == [0.0, 0.0]
                assert bus_a.metrics.limit_unsynced == 2
                assert await limits_a.sync()  # Redis: 2
                assert bus_a.metrics.limit_unsynced == 0
                assert on_b.hit("1.2.3.4") == 0.0  # the third, on b
                assert await limits_b.sync()  # Redis: 3, and b knows it
                assert on_b.count("1.2.3.4") == 3
                wait_s = on_b.hit("1.2.3.4")  # the fourth, on b: refused
                assert 59.0 < wait_s <= 61.0, wait_s  # a bucket (1 s here) longer at most
                # a last heard 2: it admits one more before its next sync (the overshoot, at
                # most what one node admits in one interval), and refuses after it
                assert on_a.hit("1.2.3.4") == 0.0
                assert await limits_a.sync()
                assert on_a.count("1.2.3.4") == 4
                assert on_a.hit("1.2.3.4") > 59.0
                assert on_a.hit("5.6.7.8") == 0.0  # another IP has its own budget
                assert bus_a.metrics.limit_syncs == {"ok": 2}
                assert bus_b.metrics.limit_syncs == {"ok": 1}


async def test_one_sync_adds_every_window_and_key_and_reads_the_totals_back() -> None:
    async with _private_redis() as redis:
        prefix = bus_prefix()
        with trio.fail_after(30):
            async with (
                _node(redis.url, prefix, "a") as bus_a,
                _node(redis.url, prefix, "b") as bus_b,
            ):
                limits_a, limits_b = (
                    SharedLimits(bus_a, sync_timeout_s=SYNC_TIMEOUT_S),
                    SharedLimits(bus_b, sync_timeout_s=SYNC_TIMEOUT_S),
                )
                messages_a = limits_a.window("messages", 100, 10.0)
                logins_a = limits_a.window("logins", 100, 900.0)
                messages_b = limits_b.window("messages", 100, 10.0)
                logins_b = limits_b.window("logins", 100, 900.0)
                for key, n in (("ip-1", 5), ("ip-2", 2)):
                    for _ in range(n):
                        assert messages_a.hit(key) == 0.0
                assert logins_a.hit("ip-1") == 0.0
                assert await limits_a.sync()
                assert bus_a.metrics.limit_syncs == {"ok": 1}  # one round trip for all
                # b reads what a added: asking for a count re-reads it at b's next sync
                assert [messages_b.count("ip-1"), logins_b.count("ip-1")] == [0, 0]
                messages_b.count("ip-2")
                assert await limits_b.sync()
                assert [messages_b.count(k) for k in ("ip-1", "ip-2")] == [5, 2]
                assert logins_b.count("ip-1") == 1
                assert bus_b.metrics.limit_syncs == {"ok": 1}


async def test_a_node_counts_alone_while_redis_is_down_and_syncs_again_after() -> None:
    now = [1000.0]
    async with _private_redis() as redis:
        prefix = bus_prefix()
        with trio.fail_after(30):
            async with _node(redis.url, prefix, "b") as bus_b:
                limits = SharedLimits(bus_b, clock=lambda: now[0], sync_timeout_s=SYNC_TIMEOUT_S)
                on_b = limits.window("ip", 3, 60.0, clock=lambda: now[0])
                for _ in range(2):
                    assert on_b.hit("1.2.3.4") == 0.0
                assert await limits.sync()
                assert on_b.hit("9.9.9.9") == 0.0

                await redis.kill()
                assert not await limits.sync()  # Redis silent: b counts alone for RETRY_S
                assert bus_b.metrics.limit_syncs == {"ok": 1, "failed": 1}
                assert bus_b.metrics.limit_fallbacks == 1
                assert bus_b.metrics.limit_unsynced == 0
                assert not limits.shared()
                # its own window decides: one more for 1.2.3.4, then refused
                assert on_b.hit("1.2.3.4") == 0.0
                assert on_b.hit("1.2.3.4") == 60.0
                assert [on_b.hit("9.9.9.9") for _ in range(3)] == [0.0, 0.0, 60.0]

                await redis.start()  # empty: a restarted Redis without persistence
                now[0] += RETRY_S
                assert limits.shared()
                assert on_b.hit("5.6.7.8") == 0.0
                assert await limits.sync()
                assert on_b.count("5.6.7.8") == 1
                assert bus_b.metrics.limit_syncs == {"ok": 2, "failed": 1}


async def test_a_flood_of_keys_is_synced_in_round_trips_of_a_bounded_size() -> None:
    async with _private_redis() as redis:
        prefix = bus_prefix()
        with trio.fail_after(30):
            async with (
                _node(redis.url, prefix, "a") as bus_a,
                _node(redis.url, prefix, "b") as bus_b,
            ):
                limits_a, limits_b = (
                    SharedLimits(bus_a, sync_timeout_s=SYNC_TIMEOUT_S),
                    SharedLimits(bus_b, sync_timeout_s=SYNC_TIMEOUT_S),
                )
                on_a = limits_a.window("ip", 5, 10.0)
                on_b = limits_b.window("ip", 5, 10.0)
                keys = [f"10.0.{n // 256}.{n % 256}" for n in range(SYNC_BATCH_KEYS + 500)]
                assert {on_a.hit(key) for key in keys} == {0.0}
                assert await limits_a.sync()
                assert bus_a.metrics.limit_syncs == {"ok": 2}  # not one script for them all
                assert bus_a.metrics.limit_unsynced == 0
                for key in (keys[0], keys[-1]):
                    on_b.count(key)
                assert await limits_b.sync()
                assert [on_b.count(keys[0]), on_b.count(keys[-1])] == [1, 1]


async def test_a_sync_that_raises_unexpectedly_is_restarted_and_the_next_syncs_carry_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url, prefix = redis_url_or_skip(), bus_prefix()
    with trio.fail_after(30):
        async with _node(url, prefix, "a") as bus_a, _node(url, prefix, "b") as bus_b:
            limits_a, limits_b = (
                SharedLimits(bus_a, sync_timeout_s=SYNC_TIMEOUT_S),
                SharedLimits(bus_b, sync_timeout_s=SYNC_TIMEOUT_S),
            )
            on_a = limits_a.window("ip", 10, 60.0)
            on_b = limits_b.window("ip", 10, 60.0)
            real_sync, syncs, synced = limits_a.sync, [0], trio.Event()

            async def sync() -> bool:  # the first sync hits a bug; the others are real
                syncs[0] += 1
                if syncs[0] == 1:
                    raise RuntimeError("a bug in one sync")
                ok = await real_sync()
                if bus_a.metrics.limit_syncs.get("ok"):
                    synced.set()
                return ok

            monkeypatch.setattr(limits_a, "sync", sync)
            sup = limits_supervisor(limits_a, metrics=EngineMetrics())
            async with trio.open_nursery() as nursery:
                await nursery.start(sup.serve)
                await sup.wait_restarts(1)
                assert [on_a.hit("1.2.3.4"), on_a.hit("1.2.3.4")] == [0.0, 0.0]
                await synced.wait()  # a sync after the crash reached Redis
                on_b.count("1.2.3.4")  # b reads the total at its next sync
                assert await limits_b.sync()
                assert on_b.count("1.2.3.4") == 2
                tree = sup.snapshot()
                assert (tree.state, tree.restarts) == ("running", 1)
                assert [(c.name, c.state, c.restarted) for c in tree.children] == [
                    ("sync", "running", 1)
                ]
                nursery.cancel_scope.cancel()
    crashed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in crashed] == ["child 'sync' of supervisor 'limits' crashed"]
