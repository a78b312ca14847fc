"""The per-account login backoff across a cluster (``LoginThrottle`` over
``Bus.login_failures``): two nodes' throttles on one Redis count one account's failures
together, a success on either resets it for both, and a node whose Redis is gone or silent goes
on counting alone without failing a login."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import coredis
import pytest
import trio

from tests.redis_server import PrivateRedis, bus_prefix, redis_url_or_skip
from tests.web.server import free_port
from web.bus import Bus, Message
from web.ratelimit import ACCOUNT_FORGET_S, RETRY_S, LoginThrottle, SharedLimits

FREE = 2  # failures before the account backs off: the third attempt waits 1 s
MAX_BACKOFF_S = 60.0
SECRET = "the cluster's secret key"


async def _no_requests(message: Message) -> None:
    raise AssertionError(message)


@asynccontextmanager
async def _node(
    url: str, prefix: str, name: str, *, wait_subscribed: bool = True
) -> AsyncIterator[Bus]:
    bus = Bus(url, name, prefix=prefix)
    async with trio.open_nursery() as nursery:
        if wait_subscribed:
            await nursery.start(bus.serve, _no_requests, lambda message: None)
        else:  # Redis unreachable: serve keeps trying to subscribe
            nursery.start_soon(bus.serve, _no_requests, lambda message: None)
        yield bus
        nursery.cancel_scope.cancel()


def _throttle(bus: Bus, now: list[float] | None = None) -> LoginThrottle:
    """A node's throttle; on a clock of the test's own when ``now`` is given."""
    clock = (lambda: now[0]) if now is not None else time.monotonic
    return LoginThrottle(
        free_failures=FREE,
        max_backoff_s=MAX_BACKOFF_S,
        ip_failures=1000,
        limits=SharedLimits(bus, clock=clock),
        secret_key=SECRET,
        clock=clock,
    )


async def test_failures_on_one_node_make_the_account_wait_on_another_until_a_success() -> None:
    url, prefix = redis_url_or_skip(), bus_prefix()
    with trio.fail_after(30):
        async with _node(url, prefix, "a") as bus_a, _node(url, prefix, "b") as bus_b:
            on_a, on_b = _throttle(bus_a), _throttle(bus_b)
            await on_a.failed(account="alice", ip="10.0.0.1")
            await on_a.failed(account="alice", ip="10.0.0.2")
            # b never saw alice fail: the cluster's count (on Redis's clock) decides
            wait_s = await on_b.check(account="alice", ip="10.0.0.3")
            assert 0.5 < wait_s <= 1.0, wait_s
            assert await on_b.check(account="bob", ip="10.0.0.3") == 0.0
            await on_b.failed(account="alice", ip="10.0.0.3")  # the third: 2 s now
            wait_s = await on_a.check(account="alice", ip="10.0.0.1")
            assert 1.5 < wait_s <= 2.0, wait_s

            await on_b.succeeded(account="alice")  # a success on b resets a too
            assert await on_a.check(account="alice", ip="10.0.0.1") == 0.0
            await on_a.failed(account="alice", ip="10.0.0.1")
            assert await on_b.check(account="alice", ip="10.0.0.3") == 0.0  # one failure
            assert bus_a.metrics.unavailable == {} and bus_b.metrics.unavailable == {}

            # the key hides the username, and Redis forgets it in time
            client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
            async with client:
                [key] = await client.keys(f"{prefix}:limit:*")
                assert b"alice" not in key, key
                ttl_ms = await client.pttl(key)
                assert 0 < ttl_ms <= (MAX_BACKOFF_S + ACCOUNT_FORGET_S) * 1000


async def test_a_node_goes_on_from_the_last_count_it_heard_while_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    redis = PrivateRedis(free_port())
    await redis.start()
    try:
        prefix = bus_prefix()
        with trio.fail_after(30):
            async with (
                _node(redis.url, prefix, "a") as bus_a,
                _node(redis.url, prefix, "b") as bus_b,
            ):
                on_a, on_b = _throttle(bus_a, now), _throttle(bus_b)
                for _ in range(FREE):
                    await on_b.failed(account="alice", ip="10.0.0.3")
                assert await on_a.check(account="alice", ip="10.0.0.1") > 0.5  # heard: 2

                await redis.kill()
                with caplog.at_level(logging.WARNING, logger="livechat.ratelimit"):
                    # a remembers alice's count and adds its own failures to it
                    wait_s = await on_a.check(account="alice", ip="10.0.0.1")
                    assert 0.5 < wait_s <= 1.0, wait_s
                    now[0] += 1.0
                    assert await on_a.check(account="alice", ip="10.0.0.1") == 0.0
                    await on_a.failed(account="alice", ip="10.0.0.1")
                    assert await on_a.check(account="alice", ip="10.0.0.1") == 2.0
                    await on_a.succeeded(account="alice")
                    assert await on_a.check(account="alice", ip="10.0.0.1") == 0.0
                # one round trip failed, then a counts alone (RETRY_S); a reset is always tried
                assert bus_a.metrics.unavailable == {"login_throttle": 2}
                lines = [r.getMessage() for r in caplog.records]
                assert len(lines) == 1 and "login throttle" in lines[0], lines

                await redis.start()  # empty: a restarted Redis without persistence
                now[0] += RETRY_S
                await on_a.failed(account="carol", ip="10.0.0.1")
                await on_a.failed(account="carol", ip="10.0.0.1")
                assert await on_b.check(account="carol", ip="10.0.0.3") > 0.5
    finally:
        await redis.kill()


async def test_an_unreachable_redis_never_fails_a_login_and_each_node_counts_alone() -> None:
    wrong = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with trio.fail_after(30):
        async with _node(wrong, bus_prefix(), "a", wait_subscribed=False) as bus:
            on_a = _throttle(bus)
            assert await on_a.check(account="alice", ip="10.0.0.1") == 0.0
            for _ in range(FREE):
                await on_a.failed(account="alice", ip="10.0.0.1")
            assert 0.5 < await on_a.check(account="alice", ip="10.0.0.1") <= 1.0
            await on_a.succeeded(account="alice")
            assert await on_a.check(account="alice", ip="10.0.0.1") == 0.0
            assert bus.metrics.unavailable["login_throttle"] >= 1
