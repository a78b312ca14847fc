"""The cluster-wide rate limits (``SharedWindow`` over ``Bus.hit``) on a private redis-server:
one budget for two nodes' windows, and each node's own window while Redis is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.redis_server import PrivateRedis, bus_prefix
from tests.web.server import free_port
from web.bus import Bus, Message
from web.ratelimit import SharedWindow, SlidingWindow


async def _no_requests(message: Message) -> None:
    raise AssertionError(message)


@asynccontextmanager
async def _node(url: str, prefix: str, name: str) -> AsyncIterator[Bus]:
    bus = Bus(url, name, prefix=prefix)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve, _no_requests, lambda message: None)
        yield bus
        nursery.cancel_scope.cancel()


async def test_two_nodes_share_one_budget_and_fall_back_to_their_own_while_redis_is_down() -> None:
    redis = PrivateRedis(free_port())
    await redis.start()
    prefix = bus_prefix()
    try:
        with trio.fail_after(30):
            async with (
                _node(redis.url, prefix, "a") as bus_a,
                _node(redis.url, prefix, "b") as bus_b,
            ):
                on_a = SharedWindow("ip", SlidingWindow(3, 60.0), bus_a)
                on_b = SharedWindow("ip", SlidingWindow(3, 60.0), bus_b)
                assert [await on_a.hit("1.2.3.4"), await on_b.hit("1.2.3.4")] == [0.0, 0.0]
                assert await on_a.hit("1.2.3.4") == 0.0
                wait_s = await on_b.hit("1.2.3.4")  # the fourth, on either node: refused
                assert 59.0 < wait_s <= 60.0, wait_s
                assert await on_a.hit("5.6.7.8") == 0.0  # another IP has its own budget

                await redis.kill()
                started = trio.current_time()
                # each node counts alone now (its own window is empty: three each)
                assert [await on_b.hit("9.9.9.9") for _ in range(3)] == [0.0] * 3
                assert await on_b.hit("9.9.9.9") > 0
                assert await on_a.hit("9.9.9.9") == 0.0
                assert trio.current_time() - started < 2.0  # Redis is not waited for per hit
    finally:
        await redis.kill()
