"""Messages between the nodes of a cluster over Redis pub/sub (``coredis``, on Trio via anyio).

Each node subscribes to its own channel, ``<prefix>:node:<node id>``, and publishes to the
others'; every node also listens on ``<prefix>:all`` for what concerns all of them
(``broadcast``: credential and access changes, ``web/access.py``). A message is one JSON object
with a kind ``k``:

- ``req``: a request (``op``, ``id``, ``from``, ``deadline_s``: what is left of the caller's
  deadline); handled in a task of its own under that deadline, answered with ``rep``;
- ``rep``: the answer to request ``id`` (``ok``: the result, or ``error``: code and message);
- anything else is handed to the node's handler as it arrives, in order (pushes to sockets).

Redis pub/sub is at-most-once: a message published while a subscriber is reconnecting is lost,
so every user of the bus must detect gaps (``web/cluster.py`` numbers each connection's pushes)
and a request has a deadline. Publishing to a node that is not subscribed (stopped, killed)
raises ``NodeUnreachable`` at once: Redis answers with the number of receivers.

Errors::

    BusError                  root (a ``LiveChatError``)
    ├── BusUnavailable        Redis cannot be reached or did not answer in time
    ├── NodeUnreachable       no node listens on the target's channel
    └── RemoteError           the other node answered a request with an error (``code``)

The same Redis keeps the cluster-wide rate limits (``hit``: a sliding window per key in a sorted
set, one Lua script, the window measured on Redis's clock so the nodes' clocks do not matter).

Why coredis: a maintained, fully typed Redis client (Cluster and Sentinel too) whose I/O is
anyio, so it runs natively on Trio; on this machine one node publishes about 5,000 messages/s
one at a time and receives them in order on the same loop.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import coredis
import trio

from engine import LiveChatError
from web import strictjson

log = logging.getLogger("livechat.bus")

REQUEST_SLACK_S = 0.05  # the answer travels back too: the remote side stops this much earlier
CONNECT_TIMEOUT_S = 2.0
RESUBSCRIBE_DELAY_S = 0.5
COMMAND_TIMEOUT_S = 2.0

# KEYS[1]: the window's sorted set; ARGV: window (microseconds), limit, a unique member.
# Returns 0 (the hit counts) or the microseconds until the oldest hit leaves the window.
_SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return 0
"""

# KEYS[1]: a window's sorted set; ARGV[1]: the window (microseconds). Its count now.
_WINDOW_COUNT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return redis.call('ZCARD', KEYS[1])
"""

_REDIS_ERRORS = (
    coredis.exceptions.RedisError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    OSError,
)
# a publish or a rate-limit hit may come while the client is closed (the bus not started yet
# or stopped): coredis then raises RuntimeError, which is the bus being unavailable too
_UNAVAILABLE = (trio.TooSlowError, RuntimeError, *_REDIS_ERRORS)

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[Any]]


class BusError(LiveChatError):
    """Root of the bus errors."""


class BusUnavailable(BusError):
    """Redis cannot be reached or did not answer in time."""


class NodeUnreachable(BusError):
    """No node is subscribed to the target's channel (it stopped or was killed)."""


class RemoteError(BusError):
    """The other node answered with an error; ``code`` and ``message`` are its own."""

    def __init__(self, code: str, message: str, extra: Message | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra or {}


@attrs.define(eq=False)
class _Waiter:
    done: trio.Event = attrs.field(factory=trio.Event)
    answer: Message | None = None


class Bus:
    """One node's end of the bus; run ``serve`` (``nursery.start``) before sending."""

    def __init__(self, url: str, node_id: str, *, prefix: str = "livechat") -> None:
        self.node_id = node_id
        self._prefix = prefix
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            connect_timeout=CONNECT_TIMEOUT_S,
            stream_timeout=COMMAND_TIMEOUT_S,
        )
        self._waiting: dict[str, _Waiter] = {}
        self._window = self._client.register_script(_SLIDING_WINDOW_LUA)
        self._window_count = self._client.register_script(_WINDOW_COUNT_LUA)
        # each hit's member in a window: unique across nodes and restarts of one node
        self._member = f"{node_id}:{secrets.token_hex(4)}:"
        self._hits = itertools.count()

    def channel(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}"

    @property
    def all_channel(self) -> str:
        return broadcast_channel(self._prefix)

    async def serve(
        self,
        on_request: Handler,
        on_message: Callable[[Message], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on this node's channel until cancelled: requests go to ``on_request`` (each
        in a task of its own, under the caller's deadline), other messages to ``on_message``
        (synchronously, in arrival order: it must not block). A lost Redis connection is
        subscribed again after ``RESUBSCRIBE_DELAY_S``; what was published meanwhile is lost
        (the users of the bus detect the gap)."""
        started = False
        async with self._client, trio.open_nursery() as nursery:
            while True:
                try:
                    pubsub = self._client.pubsub(
                        channels=[self.channel(self.node_id), self.all_channel],
                        ignore_subscribe_messages=True,
                    )
                    async with pubsub:
                        if not started:
                            started = True
                            task_status.started()
                        async for item in pubsub:
                            self._dispatch(nursery, item, on_request, on_message)
                except* _REDIS_ERRORS as group:
                    # also coredis unsubscribing on a connection our cancellation closed:
                    # then this raises Cancelled, and nothing is logged
                    await trio.lowlevel.checkpoint_if_cancelled()
                    log.warning("bus: Redis connection lost (%r), subscribing again", group)
                await trio.sleep(RESUBSCRIBE_DELAY_S)  # a cancelled serve stops here

    def _dispatch(
        self,
        nursery: trio.Nursery,
        item: Any,
        on_request: Handler,
        on_message: Callable[[Message], None],
    ) -> None:
        data = item.get("data")
        if not isinstance(data, bytes):
            return
        try:
            message = json.loads(data)
            kind = message["k"]
        except (ValueError, KeyError, TypeError):
            log.warning("bus: dropped a malformed message")
            return
        if kind == "rep":
            waiter = self._waiting.get(str(message.get("id")))
            if waiter is not None:
                waiter.answer = message
                waiter.done.set()
        elif kind == "req":
            nursery.start_soon(self._answer, on_request, message)
        else:
            on_message(message)

    async def _answer(self, on_request: Handler, message: Message) -> None:
        reply: Message = {"k": "rep", "id": message.get("id")}
        deadline_s = float(message.get("deadline_s") or COMMAND_TIMEOUT_S) - REQUEST_SLACK_S
        try:
            with trio.fail_after(max(deadline_s, 0.0)):
                reply["ok"] = await on_request(message)
        except trio.TooSlowError:
            reply["error"] = {"code": "overloaded", "message": "the owner did not answer in time"}
        except RemoteError as err:
            reply["error"] = {"code": err.code, "message": str(err), **err.extra}
        except Exception:  # the edge of a request from another node: answer, log, go on
            log.exception("bus: request %r failed", message.get("op"))
            reply["error"] = {"code": "internal_error", "message": "internal error"}
        try:
            await self.send(str(message.get("from")), reply)
        except BusError as err:
            log.warning("bus: could not answer %s: %s", message.get("from"), err)

    async def send(self, node_id: str, message: Message) -> None:
        """Publish one message to ``node_id``; ``NodeUnreachable`` if nobody listens there."""
        payload = strictjson.dumps(message)
        try:
            with trio.fail_after(COMMAND_TIMEOUT_S):
                receivers = await self._client.publish(self.channel(node_id), payload)
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as err:
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        if receivers == 0:
            raise NodeUnreachable(f"node {node_id} does not listen on the bus")

    async def broadcast(self, message: Message) -> None:
        """Publish one message to every node (this one too: receivers skip their own)."""
        await _publish(self._client, self.all_channel, {**message, "from": self.node_id})

    async def hit(self, key: str, limit: int, window_s: float, *, timeout_s: float) -> float:
        """One event in the cluster-wide sliding window ``key``: 0 when it counts, else the
        seconds until the next is allowed. ``BusUnavailable`` when Redis does not answer
        within ``timeout_s`` (the caller falls back to its own window)."""
        args = (int(window_s * 1_000_000), limit, f"{self._member}{next(self._hits)}")
        try:
            with trio.fail_after(timeout_s):
                wait_us: Any = await self._window(keys=[f"{self._prefix}:rate:{key}"], args=args)
        except _UNAVAILABLE as err:
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        return int(wait_us) / 1_000_000

    async def count(self, key: str, window_s: float, *, timeout_s: float) -> int:
        """How many events the window ``key`` (of ``hit``) holds now; ``BusUnavailable`` as
        for ``hit``."""
        try:
            with trio.fail_after(timeout_s):
                count: Any = await self._window_count(
                    keys=[f"{self._prefix}:rate:{key}"], args=(int(window_s * 1_000_000),)
                )
        except _UNAVAILABLE as err:
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        return int(count)

    async def request(self, node_id: str, op: str, body: Message) -> Any:
        """Ask ``node_id`` to run ``op`` within the caller's deadline (the current effective
        deadline, else ``COMMAND_TIMEOUT_S``); returns its ``ok`` or raises ``RemoteError``."""
        deadline = trio.current_effective_deadline()
        left_s = COMMAND_TIMEOUT_S if deadline == float("inf") else deadline - trio.current_time()
        request_id = secrets.token_hex(8)
        waiter = self._waiting[request_id] = _Waiter()
        try:
            await self.send(
                node_id,
                {
                    **body,
                    "k": "req",
                    "op": op,
                    "id": request_id,
                    "from": self.node_id,
                    "deadline_s": left_s,
                },
            )
            with trio.fail_after(max(left_s, 0.0)):
                await waiter.done.wait()
        finally:
            del self._waiting[request_id]
        answer = waiter.answer
        assert answer is not None
        if "error" in answer:
            error = dict(answer["error"])
            code, text = str(error.pop("code")), str(error.pop("message"))
            raise RemoteError(code, text, error)
        return answer.get("ok")

    async def listening(self, node_ids: list[str]) -> set[str]:
        """Which of these nodes listen on the bus now (PUBSUB NUMSUB)."""
        if not node_ids:
            return set()
        channels = {self.channel(n): n for n in node_ids}
        try:
            with trio.fail_after(COMMAND_TIMEOUT_S):
                counts = await self._client.pubsub_numsub(*channels)
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as err:
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        return {
            channels[name.decode() if isinstance(name, bytes) else str(name)]
            for name, count in counts.items()
            if count > 0
        }


def broadcast_channel(prefix: str) -> str:
    return f"{prefix}:all"


async def _publish(client: coredis.Redis[bytes], channel: str, message: Message) -> int:
    try:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            return await client.publish(channel, strictjson.dumps(message))
    except _UNAVAILABLE as err:
        raise BusUnavailable(f"Redis: {type(err).__name__}") from err


async def publish_once(url: str, prefix: str, message: Message, *, sender: str) -> int:
    """Broadcast ``message`` from a process that is not a node (``livechat admin``): connect,
    publish, disconnect. Returns how many nodes heard it."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(
        url, decode_responses=False, connect_timeout=CONNECT_TIMEOUT_S
    )
    try:
        async with client:
            return await _publish(client, broadcast_channel(prefix), {**message, "from": sender})
    except _REDIS_ERRORS as err:
        raise BusUnavailable(f"Redis: {type(err).__name__}") from err
