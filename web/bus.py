"""Messages between the nodes of a cluster over Redis pub/sub (``coredis``, on Trio via anyio).

Each node subscribes to its own channel, ``<prefix>:node:<node id>``, and publishes to the
others'; every node also listens on ``<prefix>:all`` for what concerns all of them
(``broadcast``: credential and access changes, ``web/access.py``). A message is one JSON object
with a kind ``k``:

- ``req``: a request (``op``, ``id``, ``from``, ``deadline_s``: what is left of the caller's
  deadline); handled in a task of its own under that deadline, answered with ``rep``;
- ``rep``: the answer to request ``id`` (``ok``: the result, or ``error``: code and message);
- ``batch``: several of these, ``m``, in order (see below);
- anything else is handed to the node's handler as it arrives, in order (pushes to sockets).

What a node sends to another (``post``: requests, answers, pushes) waits in that node's *link*
and goes out with whatever else is queued for it: one PUBLISH (and one message to parse there)
for a burst, instead of one per message. A link publishes one batch at a time, in order; while
it does, the next batch gathers. A publish that fails (Redis down, nobody listens) reports every
message it carried as lost, and every message queued behind it too, so nothing posted after a
lost message can arrive without it (an acknowledgement must never overtake a lost push).

Redis pub/sub is at-most-once: a message published while a subscriber is reconnecting is lost,
so every user of the bus must detect gaps (``web/cluster.py`` numbers each connection's pushes)
and a request has a deadline. Publishing to a node that is not subscribed (stopped, killed)
raises ``NodeUnreachable`` at once: Redis answers with the number of receivers.

Errors::

    BusError                  root (a ``LiveChatError``)
    ├── BusUnavailable        Redis cannot be reached or did not answer in time
    ├── NodeUnreachable       no node listens on the target's channel
    └── RemoteError           the other node answered a request with an error (``code``)

The same Redis keeps the cluster-wide rate limits (``sync_windows``: every node adds the hits it
counted since its last sync, for all its keys in one Lua script, and reads the totals back; a
window per key is a hash of time buckets on Redis's clock, so the nodes' clocks do not matter;
web/ratelimit.py) and each account's failed logins (``login_failures``, one round trip per
login). ``metrics`` counts what the bus does (web/metrics.py, ``BusMetrics``).

Why coredis: a maintained, fully typed Redis client (Cluster and Sentinel too) whose I/O is
anyio, so it runs natively on Trio; on this machine one node publishes about 5,000 messages/s
one at a time and receives them in order on the same loop.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
import attrs
import coredis
import trio

from engine import LiveChatError
from web import strictjson
from web.metrics import BusMetrics

log = logging.getLogger("livechat.bus")

REQUEST_SLACK_S = 0.05  # the answer travels back too: the remote side stops this much earlier
LINK_BACKLOG = 2000  # messages queued for one node before ``post`` waits for room
LINK_IDLE_S = 60.0  # a link with nothing to send this long ends (node ids come and go)
# A socket's commands (op ``request``) to a node Redis counted as listening this recently are
# published without waiting for the count: the liveness check (every second) ends the
# sockets of a node that stopped, and their clients resend after resuming.
LISTENING_FRESH_S = 1.0
UNCOUNTED_OPS = frozenset({"request"})
CONNECT_TIMEOUT_S = 2.0
RESUBSCRIBE_DELAY_S = 0.5
COMMAND_TIMEOUT_S = 2.0

# The cluster-wide rate limits (web/ratelimit.py), one round trip for a whole batch.
# KEYS: one hash per window and key, a field per time bucket (its number on Redis's clock) with
# the hits counted in it; ARGV: for each key its window and bucket (microseconds) and the hits to
# add now. A bucket counts until its end leaves the window (a hit may count one bucket longer
# than its window, never shorter). Returns for each key the hits in its window and the
# microseconds until its oldest counted bucket leaves it.
_SYNC_WINDOWS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[3 * i - 2])
  local bucket = tonumber(ARGV[3 * i - 1])
  local add = tonumber(ARGV[3 * i])
  local current = math.floor(now / bucket)
  local first = math.floor((now - window) / bucket)
  if add > 0 then
    redis.call('HINCRBY', key, string.format('%d', current), add)
    redis.call('PEXPIRE', key, math.ceil((window + bucket) / 1000))
  end
  local total, oldest = 0, current
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    local b = tonumber(fields[j])
    if b < first then
      redis.call('HDEL', key, fields[j])
    else
      total = total + tonumber(fields[j + 1])
      if b < oldest then oldest = b end
    end
  end
  out[2 * i - 1] = total
  out[2 * i] = (oldest + 1) * bucket + window - now
end
return out
"""

# One account's consecutive failed logins (web/ratelimit.py, ``LoginThrottle``), on Redis's
# clock. KEYS[1]: a hash of ``n`` (failures) and ``at`` (the last one, microseconds); ARGV: the
# operation (read, add, reset) and the hash's lifetime after a failure (milliseconds). Returns
# the failures and the microseconds since the last one.
_LOGIN_FAILURES_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
if op == 'reset' then
  redis.call('DEL', KEYS[1])
  return {0, 0}
end
if op == 'add' then
  local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
  redis.call('HSET', KEYS[1], 'at', string.format('%d', now))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {n, 0}
end
local found = redis.call('HMGET', KEYS[1], 'n', 'at')
if not found[1] then
  return {0, 0}
end
return {tonumber(found[1]), now - tonumber(found[2] or now)}
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
# the kinds counted in the metrics by name (anything else is "other": no unbounded labels)
_KINDS = frozenset({"req", "rep", "push", "end", "ev"})


@attrs.frozen
class WindowSync:
    """One rate-limit window's entry in ``Bus.sync_windows``: ``add`` hits to count now."""

    key: str  # the window's name and the counted key (an IP, a visitor id)
    window_s: float
    bucket_s: float
    add: int


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
    lost: BusError | None = None  # the request could not be published


OnLost = Callable[[BusError], None]


@attrs.define(eq=False)
class _Link:
    """The messages waiting to be published to one node, with who to tell if they are lost."""

    queue: list[tuple[Message, OnLost | None]] = attrs.field(factory=list)
    wake: trio.Event = attrs.field(factory=trio.Event)  # something was queued
    room: trio.Event = attrs.field(factory=trio.Event)  # the queue was taken: room again


class Bus:
    """One node's end of the bus; run ``serve`` (``nursery.start``) before sending."""

    def __init__(self, url: str, node_id: str, *, prefix: str = "livechat") -> None:
        self.node_id = node_id
        self._prefix = prefix
        self.client_name = client_name(prefix, node_id)  # CLIENT LIST names the node
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            connect_timeout=CONNECT_TIMEOUT_S,
            stream_timeout=COMMAND_TIMEOUT_S,
            client_name=self.client_name,
        )
        self._waiting: dict[str, _Waiter] = {}
        self._links: dict[str, _Link] = {}
        self._listening_at: dict[str, float] = {}  # node -> when Redis last counted it
        self._nursery: trio.Nursery | None = None  # serve's: the links' publishers run there
        self._sync_windows = self._client.register_script(_SYNC_WINDOWS_LUA)
        self._login_failures = self._client.register_script(_LOGIN_FAILURES_LUA)
        self.metrics = BusMetrics()

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
        on_resubscribed: Callable[[], None] = lambda: None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on this node's channel until cancelled: requests go to ``on_request`` (each
        in a task of its own, under the caller's deadline), other messages to ``on_message``
        (synchronously, in arrival order: it must not block). A lost Redis connection is
        subscribed again after ``RESUBSCRIBE_DELAY_S``; what was published meanwhile (or was
        on its way when the connection dropped) is lost: ``on_resubscribed`` is called once
        this node listens again, before anything published since is handled."""
        started = False
        async with self._client, trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while True:
                    try:
                        pubsub = self._client.pubsub(
                            channels=[self.channel(self.node_id), self.all_channel],
                            ignore_subscribe_messages=True,
                        )
                        async with pubsub:
                            self.metrics.subscribed = 1
                            if not started:
                                started = True
                                task_status.started()
                            else:
                                on_resubscribed()
                            async for item in pubsub:
                                self._dispatch(nursery, item, on_request, on_message)
                        # the subscription ended without an error (its connection closed)
                        self.metrics.subscribed = 0
                        self.metrics.reconnects += 1
                        log.warning("bus: subscription ended, subscribing again")
                    except* _REDIS_ERRORS as group:
                        self.metrics.subscribed = 0
                        # also coredis unsubscribing on a connection our cancellation closed:
                        # then this raises Cancelled, and nothing is logged
                        await trio.lowlevel.checkpoint_if_cancelled()
                        self.metrics.reconnects += 1
                        log.warning("bus: Redis connection lost (%r), subscribing again", group)
                    await trio.sleep(RESUBSCRIBE_DELAY_S)  # a cancelled serve stops here
            finally:
                self._nursery = None  # what is posted from now on is lost at once

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
        if kind == "batch":
            for one in message.get("m") or ():
                if isinstance(one, dict) and one.get("k") != "batch":
                    self._handle(nursery, one, on_request, on_message)
            return
        self._handle(nursery, message, on_request, on_message)

    def _handle(
        self,
        nursery: trio.Nursery,
        message: Message,
        on_request: Handler,
        on_message: Callable[[Message], None],
    ) -> None:
        kind = message.get("k")
        self.metrics.received[kind if kind in _KINDS else "other"] += 1
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
        to = str(message.get("from"))

        def lost(err: BusError) -> None:
            log.warning("bus: could not answer %s: %s", to, err)

        try:
            # No wait for room: nothing may come between the handler's last check and this
            # answer taking its place behind the pushes already queued (web/cluster.py).
            self.post_nowait(to, reply, lost)
        except BusError as err:
            lost(err)

    async def post(self, node_id: str, message: Message, on_lost: OnLost | None = None) -> None:
        """Queue ``message`` for ``node_id``, waiting while ``LINK_BACKLOG`` messages are
        queued there already; see the module docstring. ``on_lost`` hears the error if it
        cannot be published (or a message queued before it could not)."""
        link = self._link(node_id)
        while len(link.queue) >= LINK_BACKLOG:
            await link.room.wait()
        self.post_nowait(node_id, message, on_lost)

    def post_nowait(self, node_id: str, message: Message, on_lost: OnLost | None = None) -> None:
        """``post`` without waiting for room (an answer: bounded by the requests in flight)."""
        link = self._link(node_id)
        link.queue.append((message, on_lost))
        link.wake.set()

    def _link(self, node_id: str) -> _Link:
        link = self._links.get(node_id)
        if link is None:
            if self._nursery is None:
                raise BusUnavailable("the bus is not running")
            link = self._links[node_id] = _Link()
            self._nursery.start_soon(self._publish_link, node_id, link)
        return link

    async def _publish_link(self, node_id: str, link: _Link) -> None:
        """Publish what is queued for ``node_id``, a batch at a time, until idle."""
        try:
            while True:
                with trio.move_on_after(LINK_IDLE_S):
                    await link.wake.wait()
                if not link.queue:
                    return  # idle: a later post starts a new link
                link.wake = trio.Event()
                batch, link.queue = link.queue, []
                link.room.set()
                link.room = trio.Event()
                try:
                    await self._publish_batch(node_id, [message for message, _ in batch])
                except BusError as err:
                    # Everything queued behind the lost ones is given up too, in order.
                    batch, link.queue = batch + link.queue, []
                    link.room.set()
                    link.room = trio.Event()
                    for _, on_lost in batch:
                        if on_lost is not None:
                            on_lost(err)
        finally:
            if self._links.get(node_id) is link:
                del self._links[node_id]
            link.room.set()  # a poster waiting for room finds the bus stopped, not a hang
            for _, on_lost in link.queue:  # the bus stopped
                if on_lost is not None:
                    on_lost(BusUnavailable("the bus stopped"))

    async def _publish_batch(self, node_id: str, messages: list[Message]) -> None:
        """One PUBLISH. Redis's answer (how many nodes heard it) is waited for only when
        ``_needs_count`` (it costs a third of the CPU): a node that is gone is found by the
        liveness checks, and one that was not listening ends its proxied sockets when it
        listens again (``on_resubscribed``), so nothing lost here goes unnoticed."""
        payload = messages[0] if len(messages) == 1 else {"k": "batch", "m": messages}
        if self._needs_count(node_id, messages):
            await self.send(node_id, payload)
            self._listening_at[node_id] = trio.current_time()
        else:
            with self._client.ignore_replies():
                await self.send(node_id, payload, counted=False)
        if len(messages) > 1:
            for message in messages:
                kind = message.get("k")
                self.metrics.sent[kind if kind in _KINDS else "other"] += 1

    def _needs_count(self, node_id: str, messages: list[Message]) -> bool:
        """Whether this batch must learn at once that nobody listens (``NodeUnreachable``): it
        holds a request, unless all its requests are a socket's commands to a node counted
        as listening within ``LISTENING_FRESH_S``."""
        ops = [message.get("op") for message in messages if message.get("k") == "req"]
        if not ops:
            return False
        fresh = trio.current_time() - self._listening_at.get(node_id, -math.inf)
        return fresh >= LISTENING_FRESH_S or not all(op in UNCOUNTED_OPS for op in ops)

    async def send(self, node_id: str, message: Message, *, counted: bool = True) -> None:
        """Publish one message to ``node_id``; ``NodeUnreachable`` if nobody listens there
        (unless not ``counted``: Redis's answer ignored, see ``_publish_batch``)."""
        payload = strictjson.dumps(message)
        try:
            with trio.fail_after(COMMAND_TIMEOUT_S):
                receivers = await self._client.publish(self.channel(node_id), payload)
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as err:
            self.metrics.unavailable["send"] += 1
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        if counted and receivers == 0:
            self._listening_at.pop(node_id, None)
            raise NodeUnreachable(f"node {node_id} does not listen on the bus")
        self.metrics.publishes += 1
        kind = message.get("k")
        if kind != "batch":  # a batch's messages are counted by kind by ``_publish_batch``
            self.metrics.sent[kind if kind in _KINDS else "other"] += 1

    async def broadcast(self, message: Message) -> None:
        """Publish one message to every node (this one too: receivers skip their own)."""
        try:
            await _publish(self._client, self.all_channel, {**message, "from": self.node_id})
        except BusUnavailable:
            self.metrics.unavailable["broadcast"] += 1
            raise
        kind = message.get("k")
        self.metrics.sent[kind if kind in _KINDS else "other"] += 1

    async def sync_windows(
        self, batch: list[WindowSync], *, timeout_s: float
    ) -> list[tuple[int, float]]:
        """Add each window's hits in Redis and read its total back, in one round trip: for
        each entry the hits in its window now, across the cluster, and the seconds until its
        oldest counted hits leave it. ``BusUnavailable`` when Redis does not answer within
        ``timeout_s`` (the caller counts on its own windows meanwhile)."""
        keys = [f"{self._prefix}:limit:{entry.key}" for entry in batch]
        args: list[int] = []
        for entry in batch:
            args += [int(entry.window_s * 1e6), int(entry.bucket_s * 1e6), entry.add]
        started = trio.current_time()
        try:
            with trio.fail_after(timeout_s):
                answer: Any = await self._sync_windows(keys=keys, args=args)
        except _UNAVAILABLE as err:
            self.metrics.unavailable["rate_limits"] += 1
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        self.metrics.observe_round_trip(trio.current_time() - started, request=False)
        return [(int(answer[i]), int(answer[i + 1]) / 1_000_000) for i in range(0, len(answer), 2)]

    async def login_failures(
        self,
        key: str,
        op: Literal["read", "add", "reset"],
        *,
        forget_after_s: float,
        timeout_s: float,
    ) -> tuple[int, float]:
        """One account's consecutive failed logins, shared by every node: ``op`` is "read",
        "add" (one more failure, now, kept ``forget_after_s``) or "reset" (a success). Returns
        the failures and the seconds since the last one, on Redis's clock. ``BusUnavailable``
        when Redis does not answer within ``timeout_s`` (the caller counts alone meanwhile)."""
        args = [op, int(forget_after_s * 1000)]
        started = trio.current_time()
        try:
            with trio.fail_after(timeout_s):
                answer: Any = await self._login_failures(
                    keys=[f"{self._prefix}:limit:{key}"], args=args
                )
        except _UNAVAILABLE as err:
            self.metrics.unavailable["login_throttle"] += 1
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        self.metrics.observe_round_trip(trio.current_time() - started, request=False)
        return int(answer[0]), int(answer[1]) / 1_000_000

    async def request(self, node_id: str, op: str, body: Message) -> Any:
        """Ask ``node_id`` to run ``op`` within the caller's deadline (the current effective
        deadline, else ``COMMAND_TIMEOUT_S``); returns its ``ok`` or raises ``RemoteError``."""
        deadline = trio.current_effective_deadline()
        left_s = COMMAND_TIMEOUT_S if deadline == float("inf") else deadline - trio.current_time()
        request_id = secrets.token_hex(8)
        waiter = self._waiting[request_id] = _Waiter()
        started = trio.current_time()
        outcome = "cancelled"
        def lost(err: BusError) -> None:
            waiter.lost = err
            waiter.done.set()

        try:
            await self.post(
                node_id,
                {
                    **body,
                    "k": "req",
                    "op": op,
                    "id": request_id,
                    "from": self.node_id,
                    "deadline_s": left_s,
                },
                lost,
            )
            with trio.fail_after(max(left_s, 0.0)):
                await waiter.done.wait()
            if waiter.lost is not None:
                raise waiter.lost
            outcome = "error" if waiter.answer and "error" in waiter.answer else "ok"
            self.metrics.observe_round_trip(trio.current_time() - started, request=True)
        except NodeUnreachable:
            outcome = "unreachable"
            raise
        except BusUnavailable:
            outcome = "unavailable"
            raise
        except trio.TooSlowError:
            outcome = "timeout"
            raise
        finally:
            del self._waiting[request_id]
            self.metrics.requests[(op, outcome)] += 1
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
            self.metrics.unavailable["listening"] += 1
            raise BusUnavailable(f"Redis: {type(err).__name__}") from err
        alive = {
            channels[name.decode() if isinstance(name, bytes) else str(name)]
            for name, count in counts.items()
            if count > 0
        }
        now = trio.current_time()
        for node_id in node_ids:
            if node_id in alive:
                self._listening_at[node_id] = now
            else:
                self._listening_at.pop(node_id, None)
        return alive


def client_name(prefix: str, node_id: str) -> str:
    """The name a node's Redis connections carry (``CLIENT LIST``): no spaces allowed."""
    return f"{prefix}:{node_id}".replace(" ", "_")


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
