"""The Redis bus between nodes (web/bus.py) on the real Redis: requests answered under the
caller's deadline, messages in order, a node that is gone named at once."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.redis_server import bus_prefix, redis_url_or_skip
from web.bus import Bus, Message, NodeUnreachable, RemoteError


async def _start(nursery: trio.Nursery, bus: Bus, seen: list[Message]) -> None:
    async def on_request(message: Message) -> Any:
        if message["op"] == "slow":
            await trio.sleep_forever()
        if message["op"] == "fail":
            raise RemoteError("not_found", "no such thing", {"field": "id"})
        return {"echo": message["x"], "by": bus.node_id}

    await nursery.start(bus.serve, on_request, seen.append)


async def test_a_request_is_answered_by_the_other_node_and_messages_arrive_in_order() -> None:
    url, prefix = redis_url_or_skip(), bus_prefix()
    a, b = Bus(url, "a", prefix=prefix), Bus(url, "b", prefix=prefix)
    seen_a: list[Message] = []
    seen_b: list[Message] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await _start(nursery, a, seen_a)
            await _start(nursery, b, seen_b)
            assert await a.request("b", "echo", {"x": 41}) == {"echo": 41, "by": "b"}
            with pytest.raises(RemoteError) as refused:
                await b.request("a", "fail", {})
            assert refused.value.code == "not_found" and refused.value.extra == {"field": "id"}
            for n in range(200):
                await a.send("b", {"k": "push", "n": n})
            await a.request("b", "echo", {"x": 0})  # answered after every push before it
            assert [m["n"] for m in seen_b] == list(range(200))
            assert await a.listening(["a", "b", "gone"]) == {"a", "b"}
            nursery.cancel_scope.cancel()


async def test_the_callers_deadline_bounds_the_remote_work_and_a_gone_node_fails_at_once() -> None:
    url, prefix = redis_url_or_skip(), bus_prefix()
    a, b = Bus(url, "a", prefix=prefix), Bus(url, "b", prefix=prefix)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await _start(nursery, a, [])
            await _start(nursery, b, [])
            started = trio.current_time()
            with pytest.raises(RemoteError) as late:
                with trio.fail_after(5):  # the caller's deadline travels with the request
                    with trio.move_on_after(0.5) as scope:
                        scope.deadline = trio.current_time() + 0.5
                        await a.request("b", "slow", {})
            assert late.value.code == "overloaded"
            assert trio.current_time() - started < 2
            with pytest.raises(NodeUnreachable):
                await a.request("nobody", "echo", {"x": 1})
            nursery.cancel_scope.cancel()


async def test_posts_to_one_node_go_out_together_in_order_and_a_failed_publish_loses_the_rest() -> (
    None
):
    url, prefix = redis_url_or_skip(), bus_prefix()
    a, b = Bus(url, "a", prefix=prefix), Bus(url, "b", prefix=prefix)
    seen_b: list[Message] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await _start(nursery, a, [])
            await _start(nursery, b, seen_b)
            for n in range(300):  # queued in one go: published in a few batches
                await a.post("b", {"k": "push", "n": n})
            assert await a.request("b", "echo", {"x": 1}) == {"echo": 1, "by": "b"}
            assert [m["n"] for m in seen_b] == list(range(300))
            assert b.metrics.received["push"] == 300
            assert a.metrics.sent["push"] == 300
            assert a.metrics.publishes < 10  # 300 pushes and a request, not 301 publishes

            lost: list[tuple[int, str]] = []
            for n in range(5):
                a.post_nowait(
                    "gone", {"k": "push", "n": n}, lambda e, n=n: lost.append((n, type(e).__name__))
                )
            with pytest.raises(NodeUnreachable):  # queued behind them: lost with them
                await a.request("gone", "echo", {"x": 2})
            assert lost == [(n, "NodeUnreachable") for n in range(5)]
            nursery.cancel_scope.cancel()


async def test_a_sockets_command_to_a_node_heard_just_now_is_not_counted_other_requests_are() -> (
    None
):
    """A socket's command (``request``) to a node Redis counted within the last second goes out
    without waiting for the count: once that node stops, it waits for its deadline (the
    liveness check ends such sockets); any other request learns at once that nobody listens."""
    url, prefix = redis_url_or_skip(), bus_prefix()
    a, b = Bus(url, "a", prefix=prefix), Bus(url, "b", prefix=prefix)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await _start(nursery, a, [])
            b_scope = trio.CancelScope()

            async def serve_b(task_status: trio.TaskStatus[None]) -> None:
                with b_scope:
                    await _start(nursery_b, b, [])
                    task_status.started()
                    await trio.sleep_forever()

            async with trio.open_nursery() as nursery_b:
                await nursery_b.start(serve_b)
                assert await a.request("b", "request", {"x": 1}) == {"echo": 1, "by": "b"}
                nursery_b.cancel_scope.cancel()  # b stops listening
            while "b" in await a.listening(["b"]):
                await trio.sleep(0.01)  # Redis drops its subscription as the connection closes
            a._listening_at["b"] = trio.current_time()  # as if counted just before it stopped
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(0.3):
                    await a.request("b", "request", {"x": 2})
            with pytest.raises(NodeUnreachable):
                await a.request("b", "connect", {"x": 3})
            nursery.cancel_scope.cancel()
